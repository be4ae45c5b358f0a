//! Hot copies of a tier store for snapshots and backups (`jukisync snapshot`,
//! `backup`): LMDB's own copy with compaction, taken in one read transaction, so the
//! copy is consistent while the daemon keeps writing, and holds no free pages.

use std::path::Path;

use heed::{CompactionOption, PutFlags};

use super::{Role, Store};
use crate::error::{CoreError, Result};

/// The file name LMDB gives an environment's data (the copy is a whole environment).
pub const DATA_FILE: &str = "data.mdb";

impl Store {
    /// Write a compacted copy of the whole environment to `dest_dir/data.mdb`.
    /// `dest_dir` is created; an existing `data.mdb` there is refused, never replaced.
    pub fn copy_compacted(&self, dest_dir: &Path) -> Result<u64> {
        let err = |e: std::io::Error| CoreError::Store(format!("{}: {e}", dest_dir.display()));
        std::fs::create_dir_all(dest_dir).map_err(err)?;
        let dest = dest_dir.join(DATA_FILE);
        if dest.exists() {
            return Err(CoreError::Store(format!("{} exists; a copy never replaces a store", dest.display())));
        }
        let file = self.env.copy_to_path(&dest, CompactionOption::Enabled)?;
        file.sync_all().map_err(err)?;
        Ok(file.metadata().map_err(err)?.len())
    }
}

/// The audit trail's keys in the shared meta database (see `audit.rs`).
const AUDIT_META_KEYS: [&[u8]; 2] = [b"audit:head", b"audit:anchor"];

impl Store {
    /// Carry the query audit trail of `source` (a snapshot being bootstrapped from)
    /// into this store, whose trail must be empty: entries, index and chain head, in
    /// one write transaction, appended in key order (LMDB's append mode: no page
    /// splits). The trail is hash-chained, not signed: the caller verifies the chain
    /// in this store afterwards (`audit_verify`). Returns the entries copied.
    pub fn copy_audit_from(&self, source: &Store) -> Result<u64> {
        let from = source.env.read_txn()?;
        let mut txn = self.env.write_txn()?;
        if !self.dbs.audit.entries.is_empty(&txn)? || !self.dbs.audit.index.is_empty(&txn)? {
            return Err(CoreError::Store("this store already has an audit trail; not merging two".into()));
        }
        let mut copied = 0;
        for (src, dst, counted) in [
            (source.dbs.audit.entries, self.dbs.audit.entries, true),
            (source.dbs.audit.index, self.dbs.audit.index, false),
        ] {
            for item in src.iter(&from)? {
                let (k, v) = item?;
                dst.put_with_flags(&mut txn, PutFlags::APPEND, k, v)?;
                copied += u64::from(counted);
            }
        }
        for key in AUDIT_META_KEYS {
            if let Some(v) = source.dbs.audit.meta.get(&from, key)? {
                self.dbs.audit.meta.put(&mut txn, key, v)?;
            }
        }
        txn.commit()?;
        Ok(copied)
    }
}

impl Store {
    /// Carry `source`'s forward backlog (bundles an aggregation centre applied but had
    /// not forwarded to national yet) into this store, rebuilt from `source`'s change
    /// log: each entry names a change-log entry, which this store must hold too (it
    /// then forwards the same signed, attested envelope). Returns the entries queued.
    pub fn copy_forward_backlog_from(&self, source: &Store) -> Result<u64> {
        let from = source.env.read_txn()?;
        let mut txn = self.env.write_txn()?;
        let mut queued = 0;
        for item in source.dbs.forward.iter(&from)? {
            let (_, log_key) = item?;
            if self.dbs.changelog.get(&txn, log_key)?.is_none() {
                return Err(CoreError::Store(format!(
                    "the forward backlog names change-log entry {} this store does not hold",
                    hex::encode(log_key)
                )));
            }
            let id = self.next_id(&mut txn, "next_forward_id")?;
            self.dbs.forward.put(&mut txn, &id.to_be_bytes(), log_key)?;
            queued += 1;
        }
        txn.commit()?;
        Ok(queued)
    }
}

impl Store {
    /// Record `role` as the role of this store, rebuilt by `bootstrap` for a node of
    /// that role: the rebuild applies without attesting (national semantics: the
    /// change log keeps the envelopes as the old node logged them, its attestations
    /// included), and the node then opens the store as what it is.
    pub fn record_role_after_rebuild(&self, role: Role) -> Result<()> {
        let mut txn = self.env.write_txn()?;
        self.dbs.meta.put(&mut txn, b"role", role.as_str().as_bytes())?;
        txn.commit()?;
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::crypto;
    use crate::registry::{sign_registry, Registry, RegistryBody};
    use crate::store::{Role, StoreOptions};

    /// An empty national store with an empty registry (also bulk.rs's tests).
    pub(crate) fn open(path: &Path) -> Store {
        let root = [9u8; 32];
        let signed = sign_registry(&RegistryBody { version: 1, issued_at: 0, entries: vec![] }, &root).expect("sign");
        let registry = Registry::load(&signed, &crypto::public_key(&root).expect("public")).expect("load");
        let opts = StoreOptions {
            role: Role::National,
            centre: None,
            map_size: 1 << 24,
            max_bundle_bytes: 1 << 20,
            pending_limit: 10,
            require_attestation: false,
            max_skew_us: crate::validate::DEFAULT_SKEW_US,
            prefectures: None,
        };
        Store::open(path, registry, opts).expect("open")
    }

    #[test]
    fn copy_is_a_store_with_the_same_content_and_refuses_to_overwrite() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(&dir.path().join("live"));
        let mut txn = store.env.write_txn().expect("txn");
        for i in 0u32..500 {
            store.dbs.meta.put(&mut txn, format!("k{i}").as_bytes(), &[7u8; 100]).expect("put");
        }
        for i in 0u32..400 {
            store.dbs.meta.delete(&mut txn, format!("k{i}").as_bytes()).expect("delete");
        }
        txn.commit().expect("commit");
        let dest = dir.path().join("copy");
        let size = store.copy_compacted(&dest).expect("copy");
        assert!(size > 0);
        assert!(store.copy_compacted(&dest).is_err());
        drop(store);
        let copy = open(&dest);
        let txn = copy.env.read_txn().expect("txn");
        assert_eq!(copy.dbs.meta.get(&txn, b"k450").expect("get"), Some(&[7u8; 100][..]));
        assert_eq!(copy.dbs.meta.get(&txn, b"k1").expect("get"), None);
    }

    #[test]
    fn audit_trail_is_carried_over_once_and_verifies() {
        use crate::store::Access;
        let dir = tempfile::tempdir().expect("tempdir");
        let source = open(&dir.path().join("old"));
        for i in 0..50u64 {
            let access =
                Access { time: 1_000 + i, requester: "agency".into(), task: "T1".into(), detail: String::new() };
            source.lookup(&format!("{i:011}"), &access).expect("lookup");
        }
        let target = open(&dir.path().join("new"));
        assert_eq!(target.copy_audit_from(&source).expect("copy"), 50);
        let verified = target.audit_verify(&[]).expect("verify");
        assert!(verified.problems.is_empty());
        assert_eq!(verified.entries, 50);
        assert!(target.copy_audit_from(&source).is_err()); // never merges two trails
        let access = Access { time: 2_000, requester: "agency".into(), task: "T1".into(), detail: String::new() };
        target.lookup("00000000001", &access).expect("the chain goes on");
        assert!(target.audit_verify(&[]).expect("verify").problems.is_empty());
    }
}
