//! Comparing two tiers: chain heads per origin, then each origin's Merkle tree,
//! descending only into nodes whose sums differ, so the work grows with the number
//! of differences, not with the size of the stores.

use std::collections::BTreeSet;

use heed::RoTxn;

use super::merkle::DEPTH;
use super::Store;
use crate::error::Result;
use crate::record::Record;
use crate::wire;

/// One record that differs, and which side holds the higher version: "a", "b", or
/// "neither" (same version, different bytes: one side was altered outside `apply`).
#[derive(Debug, Clone)]
pub struct CodeDiff {
    pub code: String,
    pub newer: &'static str,
    pub a: Option<Vec<u8>>,
    pub b: Option<Vec<u8>>,
}

#[derive(Debug, Clone)]
pub struct OriginDiff {
    pub origin: String,
    pub a_head: Option<(u64, [u8; 32])>,
    pub b_head: Option<(u64, [u8; 32])>,
    pub codes: Vec<CodeDiff>,
}

#[derive(Debug, Clone, Default)]
pub struct Reconciliation {
    pub origins: Vec<OriginDiff>,
    /// Merkle nodes whose sums were compared, and records read at differing leaves:
    /// the cost of the comparison.
    pub nodes_compared: u64,
    pub records_read: u64,
}

impl Reconciliation {
    pub fn equal(&self) -> bool {
        self.origins.is_empty()
    }
}

fn head_of(store: &Store, txn: &RoTxn, origin: &str) -> Result<Option<(u64, [u8; 32])>> {
    let (seq, hash) = store.head(txn, origin)?;
    Ok((seq > 0).then_some((seq, hash)))
}

fn newer(a: Option<&[u8]>, b: Option<&[u8]>) -> Result<&'static str> {
    let decode = |raw: Option<&[u8]>| raw.map(|r| wire::decode::<Record>(r, "record")).transpose();
    let (ra, rb) = (decode(a)?, decode(b)?);
    Ok(match (ra, rb) {
        (Some(_), None) => "a",
        (None, Some(_)) => "b",
        (Some(x), Some(y)) if x.version() > y.version() => "a",
        (Some(x), Some(y)) if x.version() < y.version() => "b",
        _ => "neither",
    })
}

impl Store {
    /// Compare this store (a) with `other` (b).
    pub fn reconcile(&self, other: &Store) -> Result<Reconciliation> {
        let (ta, tb) = (self.env.read_txn()?, other.env.read_txn()?);
        let mut origins: BTreeSet<String> = BTreeSet::new();
        for (store, txn) in [(self, &ta), (other, &tb)] {
            for item in store.dbs.heads.iter(txn)? {
                origins.insert(String::from_utf8_lossy(item?.0).into_owned());
            }
        }
        let mut out = Reconciliation::default();
        for origin in origins {
            let (a_head, b_head) = (head_of(self, &ta, &origin)?, head_of(other, &tb, &origin)?);
            let codes = self.differing_codes(other, &ta, &tb, &origin, &mut out)?;
            if a_head != b_head || !codes.is_empty() {
                out.origins.push(OriginDiff { origin, a_head, b_head, codes });
            }
        }
        Ok(out)
    }

    fn differing_codes(
        &self,
        other: &Store,
        ta: &RoTxn,
        tb: &RoTxn,
        origin: &str,
        cost: &mut Reconciliation,
    ) -> Result<Vec<CodeDiff>> {
        let mut codes = Vec::new();
        let mut stack: Vec<Vec<u8>> = vec![Vec::new()];
        while let Some(prefix) = stack.pop() {
            cost.nodes_compared += 1;
            if self.merkle_node(ta, origin, &prefix)? == other.merkle_node(tb, origin, &prefix)? {
                continue;
            }
            if prefix.len() < DEPTH {
                for digit in (b'0'..=b'9').rev() {
                    let mut child = prefix.clone();
                    child.push(digit);
                    stack.push(child);
                }
                continue;
            }
            let (la, lb) = (self.merkle_leaf(ta, origin, &prefix)?, other.merkle_leaf(tb, origin, &prefix)?);
            cost.records_read += (la.len() + lb.len()) as u64;
            let all: BTreeSet<&String> = la.keys().chain(lb.keys()).collect();
            for code in all {
                if la.get(code) == lb.get(code) {
                    continue;
                }
                // The record as each side holds it now (it may sit under another
                // origin's tree on one side: a move whose two halves differ).
                let ra = self.dbs.records.get(ta, code.as_bytes())?.map(<[u8]>::to_vec);
                let rb = other.dbs.records.get(tb, code.as_bytes())?.map(<[u8]>::to_vec);
                let newer = newer(ra.as_deref(), rb.as_deref())?;
                codes.push(CodeDiff { code: code.clone(), newer, a: ra, b: rb });
            }
        }
        Ok(codes)
    }
}
