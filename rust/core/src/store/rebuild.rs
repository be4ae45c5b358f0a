//! Rebuilding derived state from what the store itself holds: every index and the
//! Merkle sums from the records (schema migration, repair of an index `check`
//! found wrong), and chosen records from the local change log (repair of records
//! `reconcile` found to differ): never from another store's unsigned state.

use std::collections::BTreeSet;

use heed::RwTxn;

use super::merkle::Delta;
use super::{name_key, Store};
use crate::error::Result;
use crate::query;
use crate::record::Record;
use crate::wire::{self, BundleBody, Envelope};

impl Store {
    /// Schema 1 → 2: the 個人番号 index became a set of (number, code) pairs and the
    /// Merkle sums were added; both are derived from the records.
    pub(super) fn migrate_from_1(&self, txn: &mut RwTxn) -> Result<()> {
        if let Some(old) = self.env.open_database::<heed::types::Bytes, heed::types::Bytes>(txn, Some("by_number"))? {
            old.clear(txn)?;
        }
        self.rebuild_derived(txn)
    }

    fn rebuild_derived(&self, txn: &mut RwTxn) -> Result<()> {
        for db in [self.dbs.by_number, self.dbs.by_name, self.dbs.by_name_text, self.dbs.merkle] {
            db.clear(txn)?;
        }
        let mut merkle = Delta::default();
        let mut entries: Vec<(Vec<u8>, Vec<u8>, u8)> = Vec::new(); // key, code, which index
        for item in self.dbs.records.iter(txn)? {
            let (code, raw) = item?;
            merkle.record(code, raw, true)?;
            let r: Record = wire::decode(raw, "record")?;
            if r.is_indexed() {
                entries.push((r.kojin_bango.as_bytes().to_vec(), code.to_vec(), 0));
                entries.push((name_key(&r), code.to_vec(), 1));
                for k in query::name_keys(&r) {
                    entries.push((k, code.to_vec(), 2));
                }
            }
        }
        entries.sort_unstable();
        for (key, code, which) in entries {
            let db = [self.dbs.by_number, self.dbs.by_name, self.dbs.by_name_text][which as usize];
            db.put(txn, &key, &code)?;
        }
        merkle.write(self, txn)
    }

    /// Rebuild every index and the Merkle sums from the records (what `check` calls
    /// `*_index_*` and `merkle_mismatch` are then gone).
    pub fn rebuild_indexes(&self) -> Result<()> {
        let mut txn = self.env.write_txn()?;
        self.rebuild_derived(&mut txn)?;
        txn.commit()?;
        Ok(())
    }

    /// Recompute the records at `codes` from the local change log (the signed
    /// envelopes this store applied): each becomes the highest version of every logged
    /// update to it (or redirect from it), as applying them again would give. Returns
    /// how many records changed. After retention pruned part of the log, a stored
    /// record written by a pruned update (its seq below its origin's floor) that
    /// outranks every retained candidate is kept: the checkpoint vouched for it, and
    /// the retained log cannot say otherwise.
    pub fn rebuild_codes(&self, codes: &[String]) -> Result<usize> {
        let wanted: BTreeSet<&str> = codes.iter().map(String::as_str).collect();
        let mut txn = self.env.write_txn()?;
        let mut candidates: Vec<Record> = Vec::new();
        for item in self.dbs.changelog.iter(&txn)? {
            let (_, entry) = item?;
            let envelope: Envelope = wire::decode(&entry[40..], "envelope")?;
            let body: BundleBody = wire::decode(&envelope.body, "body")?;
            for update in &body.updates {
                let record = Record::from_update(update, &body.origin);
                if let Some(old) = update.previous_juminhyo_code.as_deref().filter(|c| wanted.contains(c)) {
                    candidates.push(record.redirect_from(old));
                }
                if wanted.contains(update.juminhyo_code.as_str()) {
                    candidates.push(record);
                }
            }
        }
        let mut changed = 0;
        let mut merkle = Delta::default();
        for code in &wanted {
            let best =
                candidates.iter().filter(|r| r.juminhyo_code == *code).max_by(|a, b| a.version().cmp(&b.version()));
            let stored = self.dbs.records.get(&txn, code.as_bytes())?.map(<[u8]>::to_vec);
            if let Some(raw) = &stored {
                let r: Record = wire::decode(raw, "record")?;
                let below_floor = self.floor_in(&txn, &r.origin)?.is_some_and(|f| r.seq < f.first_kept);
                if below_floor && best.is_none_or(|b| r.version() > b.version()) {
                    continue;
                }
            }
            let rebuilt = best.map(wire::encode).transpose()?;
            if stored == rebuilt {
                continue;
            }
            changed += 1;
            if let Some(raw) = &stored {
                merkle.record(code.as_bytes(), raw, false)?;
                if let Ok(old) = wire::decode::<Record>(raw, "record") {
                    self.unindex(&mut txn, &old)?;
                }
                self.dbs.records.delete(&mut txn, code.as_bytes())?;
            }
            if let (Some(r), Some(raw)) = (best, &rebuilt) {
                merkle.record(code.as_bytes(), raw, true)?;
                self.dbs.records.put(&mut txn, code.as_bytes(), raw)?;
                self.index(&mut txn, r)?;
            }
        }
        merkle.write(self, &mut txn)?;
        txn.commit()?;
        Ok(changed)
    }

    fn index(&self, txn: &mut RwTxn, r: &Record) -> Result<()> {
        if r.is_indexed() {
            let code = r.juminhyo_code.as_bytes();
            self.dbs.by_number.put(txn, r.kojin_bango.as_bytes(), code)?;
            self.dbs.by_name.put(txn, &name_key(r), code)?;
            for k in query::name_keys(r) {
                self.dbs.by_name_text.put(txn, &k, code)?;
            }
        }
        Ok(())
    }

    fn unindex(&self, txn: &mut RwTxn, r: &Record) -> Result<()> {
        if r.is_indexed() {
            let code = r.juminhyo_code.as_bytes();
            self.dbs.by_number.delete_one_duplicate(txn, r.kojin_bango.as_bytes(), code)?;
            self.dbs.by_name.delete_one_duplicate(txn, &name_key(r), code)?;
            for k in query::name_keys(r) {
                self.dbs.by_name_text.delete_one_duplicate(txn, &k, code)?;
            }
        }
        Ok(())
    }
}
