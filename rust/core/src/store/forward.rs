//! The aggregator's outbox: attested bundles waiting to be forwarded.

use super::{u64_at, Store};
use crate::error::{CoreError, Result};

impl Store {
    pub fn forward_batch(&self, limit: usize) -> Result<Vec<(u64, Vec<u8>)>> {
        let txn = self.env.read_txn()?;
        let mut out = Vec::new();
        for item in self.dbs.forward.iter(&txn)?.take(limit) {
            let (k, log_key) = item?;
            let entry = self.dbs.changelog.get(&txn, log_key)?.ok_or_else(|| {
                CoreError::Store(format!("forward entry {} names a missing change-log entry", u64_at(k, 0)))
            })?;
            out.push((u64_at(k, 0), entry[40..].to_vec()));
        }
        Ok(out)
    }

    pub fn forward_done(&self, ids: &[u64]) -> Result<()> {
        let mut txn = self.env.write_txn()?;
        for id in ids {
            self.dbs.forward.delete(&mut txn, &id.to_be_bytes())?;
        }
        txn.commit()?;
        Ok(())
    }
}
