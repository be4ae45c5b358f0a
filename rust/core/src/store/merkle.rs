//! A Merkle tree per origin over its records, kept up to date by `write_records`, so
//! that two tiers are compared by descending only where their sums differ.
//!
//! A record belongs to the origin that wrote its current version (`Record::origin`).
//! Its leaf is SHA-256(code ‖ 0 ‖ stored record bytes). A node, keyed origin ‖ 0 ‖ code
//! prefix (prefix lengths 0..=DEPTH, digits of the 住民票コード), holds the count and
//! the sum mod 2^256 of the leaves under it: additive, so a record write adjusts the
//! DEPTH + 1 nodes on its path without reading any other record, and the sums do not
//! depend on the order records were written in.

use std::collections::{BTreeMap, HashMap};

use heed::{RoTxn, RwTxn};

use super::Store;
use crate::crypto;
use crate::error::{CoreError, Result};
use crate::record;

/// Depth of the tree below each origin's root: leaves group codes by their first
/// DEPTH digits (1,000 leaves per origin; a leaf of a 1 M-record store spans 1/1,000
/// of the records database).
pub const DEPTH: usize = 3;

/// A 256-bit sum as four little-endian u64 limbs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sum([u64; 4]);

impl Sum {
    pub fn of(hash: &[u8; 32]) -> Self {
        let mut limbs = [0u64; 4];
        for (i, limb) in limbs.iter_mut().enumerate() {
            *limb = u64::from_le_bytes(hash[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
        }
        Sum(limbs)
    }

    pub fn add(&mut self, other: &Sum) {
        let mut carry = 0u64;
        for i in 0..4 {
            let (s1, c1) = self.0[i].overflowing_add(other.0[i]);
            let (s2, c2) = s1.overflowing_add(carry);
            self.0[i] = s2;
            carry = u64::from(c1) + u64::from(c2);
        }
    }

    pub fn negated(&self) -> Sum {
        let mut inverted = Sum([!self.0[0], !self.0[1], !self.0[2], !self.0[3]]);
        inverted.add(&Sum([1, 0, 0, 0]));
        inverted
    }

    pub fn to_bytes(self) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (i, limb) in self.0.iter().enumerate() {
            out[i * 8..i * 8 + 8].copy_from_slice(&limb.to_le_bytes());
        }
        out
    }
}

/// One node: how many records are under it and the sum of their leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Node {
    pub count: u64,
    pub sum: Sum,
}

impl Node {
    fn decode(raw: &[u8]) -> Result<Self> {
        if raw.len() != 40 {
            return Err(CoreError::Store(format!("merkle node of {} bytes, not 40", raw.len())));
        }
        let count = u64::from_be_bytes(raw[..8].try_into().expect("8 bytes"));
        Ok(Node { count, sum: Sum::of(raw[8..40].try_into().expect("32 bytes")) })
    }

    fn encode(&self) -> [u8; 40] {
        let mut out = [0u8; 40];
        out[..8].copy_from_slice(&self.count.to_be_bytes());
        out[8..].copy_from_slice(&self.sum.to_bytes());
        out
    }
}

pub fn node_key(origin: &str, prefix: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(origin.len() + 1 + prefix.len());
    k.extend_from_slice(origin.as_bytes());
    k.push(0);
    k.extend_from_slice(prefix);
    k
}

pub fn leaf(code: &[u8], raw: &[u8]) -> [u8; 32] {
    crypto::sha256_parts(&[code, &[0], raw])
}

/// Changes to the tree gathered over a batch and written once per node. A hash map
/// (apply records every written record twice, out and in, on DEPTH + 1 nodes each:
/// the profile showed the ordered map's key comparisons); written in key order.
#[derive(Default)]
pub struct Delta(HashMap<Vec<u8>, (i64, Sum)>);

impl Delta {
    /// Count a stored record in (`add`) or out of its origin's tree.
    pub fn record(&mut self, code: &[u8], raw: &[u8], add: bool) -> Result<()> {
        let origin = match record::field(raw, "origin")? {
            record::FieldValue::Str(o) => o,
            _ => return Err(CoreError::Store("stored record without an origin".into())),
        };
        let hash = Sum::of(&leaf(code, raw));
        let (by, hash) = if add { (1, hash) } else { (-1, hash.negated()) };
        let mut key = node_key(origin, &code[..DEPTH.min(code.len())]);
        for len in (0..=DEPTH.min(code.len())).rev() {
            key.truncate(origin.len() + 1 + len);
            // Look up before allocating: after the first records, every node exists.
            let entry = match self.0.get_mut(key.as_slice()) {
                Some(entry) => entry,
                None => self.0.entry(key.clone()).or_default(),
            };
            entry.0 += by;
            entry.1.add(&hash);
        }
        Ok(())
    }

    pub fn write(self, store: &Store, txn: &mut RwTxn) -> Result<()> {
        let mut nodes: Vec<_> = self.0.into_iter().collect();
        nodes.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        for (key, (by, sum)) in nodes {
            let mut node = match store.dbs.merkle.get(txn, &key)? {
                Some(raw) => Node::decode(raw)?,
                None => Node::default(),
            };
            node.count = node.count.checked_add_signed(by).ok_or_else(|| {
                CoreError::Store(format!("merkle node {} would count below zero", String::from_utf8_lossy(&key)))
            })?;
            node.sum.add(&sum);
            if node.count == 0 && node.sum == Sum::default() {
                store.dbs.merkle.delete(txn, &key)?;
            } else {
                store.dbs.merkle.put(txn, &key, &node.encode())?;
            }
        }
        Ok(())
    }

    /// The nodes as they would be on an empty tree (`check` compares them).
    pub fn into_nodes(self) -> BTreeMap<Vec<u8>, Node> {
        self.0
            .into_iter()
            .map(|(k, (count, sum))| (k, Node { count: count.max(0) as u64, sum }))
            .filter(|(_, n)| !(n.count == 0 && n.sum == Sum::default()))
            .collect()
    }
}

impl Store {
    pub(crate) fn merkle_node(&self, txn: &RoTxn, origin: &str, prefix: &[u8]) -> Result<Node> {
        Ok(match self.dbs.merkle.get(txn, &node_key(origin, prefix))? {
            Some(raw) => Node::decode(raw)?,
            None => Node::default(),
        })
    }

    /// Every stored node (for `check`).
    pub(crate) fn merkle_nodes(&self, txn: &RoTxn) -> Result<BTreeMap<Vec<u8>, Node>> {
        let mut out = BTreeMap::new();
        for item in self.dbs.merkle.iter(txn)? {
            let (k, v) = item?;
            out.insert(k.to_vec(), Node::decode(v)?);
        }
        Ok(out)
    }

    /// The records of `origin` under a leaf's code prefix: code → leaf hash.
    pub(crate) fn merkle_leaf(&self, txn: &RoTxn, origin: &str, prefix: &[u8]) -> Result<BTreeMap<String, [u8; 32]>> {
        let mut out = BTreeMap::new();
        for item in self.dbs.records.prefix_iter(txn, prefix)? {
            let (code, raw) = item?;
            if record::field(raw, "origin")? == record::FieldValue::Str(origin) {
                out.insert(String::from_utf8_lossy(code).into_owned(), leaf(code, raw));
            }
        }
        Ok(out)
    }

    /// The root of each origin's tree: (record count, sum).
    pub fn merkle_roots(&self) -> Result<Vec<(String, u64, [u8; 32])>> {
        let txn = self.env.read_txn()?;
        let mut out = Vec::new();
        for item in self.dbs.heads.iter(&txn)? {
            let origin = String::from_utf8_lossy(item?.0).into_owned();
            let node = self.merkle_node(&txn, &origin, b"")?;
            out.push((origin, node.count, node.sum.to_bytes()));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_cancel_and_commute() {
        let a = Sum::of(&crypto::sha256(b"a"));
        let b = Sum::of(&crypto::sha256(b"b"));
        let mut x = Sum::default();
        x.add(&a);
        x.add(&b);
        let mut y = Sum::default();
        y.add(&b);
        y.add(&a);
        assert_eq!(x, y);
        x.add(&a.negated());
        assert_eq!(x, b);
        x.add(&b.negated());
        assert_eq!(x, Sum::default());
        let max = Sum([u64::MAX; 4]);
        let mut wrap = max;
        wrap.add(&Sum([1, 0, 0, 0]));
        assert_eq!(wrap, Sum::default());
    }
}
