//! The aggregator's outbox: attested bundles waiting to be forwarded.
//!
//! Marking forwards done need not cost a durable commit of its own: the node hands
//! the ids national confirmed to its next `apply_marking_forwarded`, which deletes
//! them in the batch's transaction. Until then they stay queued, and the forwarder
//! reads on after the last id it sent (`after`); a crash in between only forwards
//! them again, which national answers `duplicate`.

use heed::RwTxn;

use super::{u64_at, Store};
use crate::error::{CoreError, Result};

/// One attested bundle waiting in the outbox: its id, the origin it belongs to (the
/// routing key's, from the change-log key: nothing is decoded) and the envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    pub id: u64,
    pub origin: String,
    pub envelope: Vec<u8>,
}

impl Store {
    /// Up to `limit` forwards with ids above `after`, oldest first.
    pub fn forward_batch(&self, limit: usize, after: u64) -> Result<Vec<Forward>> {
        let txn = self.env.read_txn()?;
        let mut out = Vec::new();
        let start = after.saturating_add(1).to_be_bytes();
        let from: (std::ops::Bound<&[u8]>, std::ops::Bound<&[u8]>) =
            (std::ops::Bound::Included(&start), std::ops::Bound::Unbounded);
        for item in self.dbs.forward.range(&txn, &from)?.take(limit) {
            let (k, log_key) = item?;
            let id = u64_at(k, 0);
            let broken = |what: &str| CoreError::Store(format!("forward entry {id} names {what}"));
            let entry = self.dbs.changelog.get(&txn, log_key)?.ok_or_else(|| broken("a missing change-log entry"))?;
            // The change-log key is origin ‖ last_seq (u64 big-endian).
            let origin = log_key
                .len()
                .checked_sub(8)
                .and_then(|end| std::str::from_utf8(&log_key[..end]).ok())
                .ok_or_else(|| broken("a malformed change-log key"))?;
            out.push(Forward { id, origin: origin.to_owned(), envelope: entry[40..].to_vec() });
        }
        Ok(out)
    }

    /// Forget forwards national confirmed, in a transaction of their own.
    pub fn forward_done(&self, ids: &[u64]) -> Result<()> {
        let mut txn = self.env.write_txn()?;
        self.delete_forwarded(&mut txn, ids)?;
        txn.commit()?;
        Ok(())
    }

    pub(super) fn delete_forwarded(&self, txn: &mut RwTxn, ids: &[u64]) -> Result<()> {
        for id in ids {
            self.dbs.forward.delete(txn, &id.to_be_bytes())?;
        }
        Ok(())
    }
}
