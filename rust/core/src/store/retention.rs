//! Retention of the change log (issue 12): after a signed checkpoint (written by the
//! caller beside an archive of the entries), the oldest entries of each origin's log
//! are deleted, and the store remembers, per origin, where its log now begins and
//! which archive holds each pruned range.
//!
//! The `retention` database maps `origin ‖ last pruned seq` (big-endian, so a range
//! lookup finds the archive covering a seq) to `hash of that bundle ‖ archive name`.
//! The newest entry of an origin is its floor: the log begins right after it, chained
//! on its hash (what `check` verifies the retained log against, instead of seq 0).
//!
//! Never pruned: an origin's head entry (duplicates and forks at the head are told
//! apart by it; `check` compares heads with it) and any entry the aggregator's forward
//! backlog still names (not yet at national).

use std::collections::HashSet;
use std::ops::Bound;

use heed::RoTxn;

use super::{seq_key, u64_at, Store};
use crate::error::{CoreError, Result};
use crate::wire::{self, BodyHead, Envelope};

/// Where an origin's retained change log begins: `first_kept` follows the last pruned
/// bundle, whose body hash is `prev_hash`; `archive` names the archive holding it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Floor {
    pub origin: String,
    pub first_kept: u64,
    pub prev_hash: [u8; 32],
    pub archive: String,
}

/// What a retention policy would prune of one origin: the entries with last seq up
/// to `upto` (`bundles` of them, from `from_seq`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cut {
    pub origin: String,
    pub from_seq: u64,
    pub upto: u64,
    pub bundles: u64,
}

fn floor_from(origin: &str, key: &[u8], value: &[u8]) -> Result<Floor> {
    if value.len() < 32 || key.len() < 8 {
        return Err(CoreError::Store(format!("retention entry of {origin} is malformed")));
    }
    Ok(Floor {
        origin: origin.to_string(),
        first_kept: u64_at(key, key.len() - 8) + 1,
        prev_hash: wire::hash32(&value[..32], "retention")?,
        archive: String::from_utf8_lossy(&value[32..]).into_owned(),
    })
}

impl Store {
    /// The floor of `origin`'s change log, None when nothing of it was pruned.
    pub(crate) fn floor_in(&self, txn: &RoTxn, origin: &str) -> Result<Option<Floor>> {
        let start = seq_key(origin, 0);
        let end = seq_key(origin, u64::MAX);
        let range = (Bound::Included(start.as_slice()), Bound::Included(end.as_slice()));
        match self.dbs.retention.rev_range(txn, &range)?.next() {
            Some(item) => {
                let (k, v) = item?;
                Ok(Some(floor_from(origin, k, v)?))
            }
            None => Ok(None),
        }
    }

    /// Every origin's floor (origins never pruned are absent).
    pub fn retention_floors(&self) -> Result<Vec<Floor>> {
        let txn = self.env.read_txn()?;
        let mut origins: Vec<String> = Vec::new();
        for item in self.dbs.retention.iter(&txn)? {
            let (k, _) = item?;
            let origin = String::from_utf8_lossy(&k[..k.len().saturating_sub(8)]).into_owned();
            if origins.last() != Some(&origin) {
                origins.push(origin);
            }
        }
        origins.iter().filter_map(|o| self.floor_in(&txn, o).transpose()).collect()
    }

    /// The archive holding `origin`'s bundle with sequence number `seq`, if it was
    /// pruned (None: never pruned, or still in the log).
    pub fn archive_for(&self, origin: &str, seq: u64) -> Result<Option<String>> {
        let txn = self.env.read_txn()?;
        self.archive_for_in(&txn, origin, seq)
    }

    /// The typed refusal of a read below the retained range, naming the archive.
    pub(crate) fn check_retained(&self, txn: &RoTxn, origin: &str, from_seq: u64) -> Result<()> {
        if let Some(floor) = self.floor_in(txn, origin)? {
            if from_seq < floor.first_kept {
                let archive = self.archive_for_in(txn, origin, from_seq)?.unwrap_or(floor.archive);
                return Err(CoreError::Pruned(format!(
                    "{origin} seq {from_seq} is before this store's retained change log (it begins at seq {}); \
                     the bundle is in the archive {archive}",
                    floor.first_kept
                )));
            }
        }
        Ok(())
    }

    fn archive_for_in(&self, txn: &RoTxn, origin: &str, seq: u64) -> Result<Option<String>> {
        let start = seq_key(origin, seq);
        let end = seq_key(origin, u64::MAX);
        let range = (Bound::Included(start.as_slice()), Bound::Included(end.as_slice()));
        Ok(match self.dbs.retention.range(txn, &range)?.next() {
            Some(item) => Some(String::from_utf8_lossy(&item?.1[32..]).into_owned()),
            None => None,
        })
    }

    /// Per origin, the oldest change-log entries a policy lets go: all but the newest
    /// `keep_bundles`, and only those created at or before `created_before` (µs), stopping
    /// at the head entry and at the first entry the forward backlog still names.
    pub fn retention_plan(&self, keep_bundles: u64, created_before: u64) -> Result<Vec<Cut>> {
        let txn = self.env.read_txn()?;
        let backlog = self.forward_backlog_keys(&txn)?;
        let mut cuts = Vec::new();
        for item in self.dbs.heads.iter(&txn)? {
            let (k, _) = item?;
            let origin = String::from_utf8_lossy(k).into_owned();
            let (head_seq, _) = self.head(&txn, &origin)?;
            let start = seq_key(&origin, 0);
            let end = seq_key(&origin, u64::MAX);
            let range = (Bound::Included(start.as_slice()), Bound::Included(end.as_slice()));
            let total = self.dbs.changelog.range(&txn, &range)?.count() as u64;
            let mut cut: Option<Cut> = None;
            for item in self.dbs.changelog.range(&txn, &range)?.take(total.saturating_sub(keep_bundles) as usize) {
                let (key, entry) = item?;
                let last_seq = u64_at(key, key.len() - 8);
                if last_seq >= head_seq || backlog.contains(key) {
                    break;
                }
                let envelope: Envelope = wire::decode(&entry[40..], "envelope")?;
                let head: BodyHead = wire::decode(&envelope.body, "body")?;
                if head.created_at > created_before {
                    break;
                }
                let c = cut.get_or_insert(Cut {
                    origin: origin.clone(),
                    from_seq: u64_at(entry, 0),
                    upto: last_seq,
                    bundles: 0,
                });
                c.upto = last_seq;
                c.bundles += 1;
            }
            cuts.extend(cut);
        }
        Ok(cuts)
    }

    fn forward_backlog_keys(&self, txn: &RoTxn) -> Result<HashSet<Vec<u8>>> {
        let mut out = HashSet::new();
        for item in self.dbs.forward.iter(txn)? {
            out.insert(item?.1.to_vec());
        }
        Ok(out)
    }

    /// Delete the change-log entries of each `(origin, upto)` with last seq ≤ `upto`,
    /// recording `archive` as where they went, in one write transaction (a crash leaves
    /// all or nothing). The head entry and entries the forward backlog names are kept
    /// (the cut stops before the first of them). Returns the entries deleted per origin.
    pub fn prune_changelog(&self, cuts: &[(String, u64)], archive: &str) -> Result<Vec<(String, u64)>> {
        let mut txn = self.env.write_txn()?;
        let backlog = self.forward_backlog_keys(&txn)?;
        let mut done = Vec::new();
        for (origin, upto) in cuts {
            let (head_seq, _) = self.head(&txn, origin)?;
            let start = seq_key(origin, 0);
            let end = seq_key(origin, (*upto).min(head_seq.saturating_sub(1)));
            let range = (Bound::Included(start.as_slice()), Bound::Included(end.as_slice()));
            let mut doomed: Vec<(Vec<u8>, [u8; 32])> = Vec::new();
            for item in self.dbs.changelog.range(&txn, &range)? {
                let (key, entry) = item?;
                if backlog.contains(key) {
                    break;
                }
                doomed.push((key.to_vec(), wire::hash32(&entry[8..40], "log")?));
            }
            let Some((last_key, last_hash)) = doomed.last().cloned() else { continue };
            for (key, _) in &doomed {
                self.dbs.changelog.delete(&mut txn, key)?;
            }
            let mut value = last_hash.to_vec();
            value.extend_from_slice(archive.as_bytes());
            self.dbs.retention.put(&mut txn, &last_key, &value)?;
            done.push((origin.clone(), doomed.len() as u64));
        }
        txn.commit()?;
        Ok(done)
    }

    /// Change-log entries held (all origins): what retention makes smaller.
    pub fn changelog_entries(&self) -> Result<u64> {
        let txn = self.env.read_txn()?;
        Ok(self.dbs.changelog.len(&txn)?)
    }
}

#[cfg(test)]
mod tests {
    use crate::error::CoreError;
    use crate::store::{Role, Status};
    use crate::tests::{update, Net, A, NOW};

    #[test]
    fn prune_keeps_the_head_names_the_archive_and_checks_clean() {
        let dir = tempfile::tempdir().unwrap();
        let mut net = Net::new();
        let store = net.store(dir.path(), Role::National);
        let bundles: Vec<Vec<u8>> = (0..6)
            .map(|i| net.bundle(A, vec![update(0, &format!("{:011}", 10_000 + i), A, "birth", "2026-04-01")]))
            .collect();
        // national requires attestations: a centre attests, national takes its log
        let centre_dir = tempfile::tempdir().unwrap();
        let centre = net.store(centre_dir.path(), Role::Aggregator);
        let refs: Vec<&[u8]> = bundles.iter().map(Vec::as_slice).collect();
        assert!(centre.apply(&refs, NOW).unwrap().iter().all(|o| o.status == Status::Applied));
        let logged = centre.changes(A, 1, 10).unwrap();
        let refs: Vec<&[u8]> = logged.iter().map(Vec::as_slice).collect();
        assert!(store.apply(&refs, NOW).unwrap().iter().all(|o| o.status == Status::Applied));

        let plan = store.retention_plan(2, u64::MAX).unwrap();
        assert_eq!(plan.len(), 1);
        assert_eq!((plan[0].from_seq, plan[0].upto, plan[0].bundles), (1, 4, 4));
        let done = store.prune_changelog(&[(A.to_string(), u64::MAX)], "a1.tar").unwrap();
        assert_eq!(done, vec![(A.to_string(), 5)]); // the head entry stays
        assert_eq!(store.changelog_entries().unwrap(), 1);
        let err = store.changes(A, 3, 10).expect_err("pruned");
        assert!(matches!(err, CoreError::Pruned(ref m) if m.contains("a1.tar")), "{err}");
        assert_eq!(store.changes(A, 6, 10).unwrap().len(), 1);
        assert_eq!(store.archive_for(A, 2).unwrap(), Some("a1.tar".into()));
        assert_eq!(store.archive_for(A, 6).unwrap(), None);
        assert!(store.check().unwrap().is_empty(), "{:?}", store.check().unwrap());
        // an old bundle arriving again is a duplicate, not a fork
        assert_eq!(store.apply(&refs[1..2], NOW).unwrap()[0].status, Status::Duplicate);
        // the forward backlog is never pruned: the centre has not forwarded anything
        assert!(centre.retention_plan(0, u64::MAX).unwrap().is_empty());
        assert!(centre.prune_changelog(&[(A.to_string(), 5)], "x").unwrap().is_empty());
    }
}
