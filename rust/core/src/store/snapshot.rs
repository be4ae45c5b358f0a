//! Hot copies of a tier store for snapshots and backups (`jukisync snapshot`,
//! `backup`): LMDB's own copy with compaction, taken in one read transaction, so the
//! copy is consistent while the daemon keeps writing, and holds no free pages.

use std::path::Path;

use heed::CompactionOption;

use super::Store;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto;
    use crate::registry::{sign_registry, Registry, RegistryBody};
    use crate::store::{Role, StoreOptions};

    fn open(path: &Path) -> Store {
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
}
