//! Bulk loading an empty store from records in code order (a snapshot's store, or a
//! sorted export of a register): LMDB's append mode writes each page once, full, in
//! order, instead of searching the tree and splitting half-full pages for every record.
//! From a sorted stream the indexes and Merkle sums are derived from the loaded records
//! (sorted and appended the same way); from a store they are copied with its records.

use heed::{PutFlags, RwTxn};

use super::merkle::Delta;
use super::{name_key, Db, Store};
use crate::error::{CoreError, Result};
use crate::query;
use crate::record::Record;
use crate::wire;

impl Store {
    /// Load records, given in strictly ascending code order, into this store, which
    /// must hold no records; then build the indexes and Merkle sums from them. One
    /// write transaction: a failure (a record out of order, one that does not decode
    /// or names another code) leaves the store as empty as it was. `append` false
    /// writes the same records with ordinary puts (the benchmark's baseline).
    pub fn load_sorted<'r, I>(&self, records: I, append: bool) -> Result<u64>
    where
        I: IntoIterator<Item = Result<(&'r [u8], &'r [u8])>>,
    {
        let mut txn = self.env.write_txn()?;
        self.load_into(&mut txn, records, append)?;
        let loaded = self.dbs.records.len(&txn)?;
        txn.commit()?;
        Ok(loaded)
    }

    /// Load a snapshot: `source`'s records and the databases derived from them (the
    /// three indexes and the Merkle sums), each read in key order in one read
    /// transaction (consistent while that store keeps writing) and appended. The
    /// derived databases are copied, not rebuilt, as a restore copies the whole file:
    /// `check` compares them with the records. `append` false: ordinary puts.
    pub fn load_records_from(&self, source: &Store, append: bool) -> Result<u64> {
        let from = source.env.read_txn()?;
        let mut txn = self.env.write_txn()?;
        self.require_empty(&txn)?;
        let flags = if append { PutFlags::APPEND } else { PutFlags::empty() };
        for item in source.dbs.records.iter(&from)? {
            let (code, raw) = item?;
            self.dbs.records.put_with_flags(&mut txn, flags, code, raw)?;
        }
        for (src, dst) in [
            (source.dbs.by_number, self.dbs.by_number),
            (source.dbs.by_name, self.dbs.by_name),
            (source.dbs.by_name_text, self.dbs.by_name_text),
            (source.dbs.merkle, self.dbs.merkle),
        ] {
            // LMDB iterates a DUP_SORT database pair by pair, in (key, value) order.
            let pairs = src.iter(&from)?.map(|item| item.map_err(CoreError::from));
            append_pairs(&mut txn, dst, pairs, append)?;
        }
        let loaded = self.dbs.records.len(&txn)?;
        txn.commit()?;
        Ok(loaded)
    }

    fn require_empty(&self, txn: &RwTxn) -> Result<()> {
        for db in [self.dbs.records, self.dbs.by_number, self.dbs.by_name, self.dbs.by_name_text, self.dbs.merkle] {
            if !db.is_empty(txn)? {
                return Err(CoreError::Store("bulk load needs an empty store: this one holds records".into()));
            }
        }
        Ok(())
    }

    fn load_into<'r, I>(&self, txn: &mut RwTxn, records: I, append: bool) -> Result<()>
    where
        I: IntoIterator<Item = Result<(&'r [u8], &'r [u8])>>,
    {
        self.require_empty(txn)?;
        let flags = if append { PutFlags::APPEND } else { PutFlags::empty() };
        let mut previous: Option<&[u8]> = None;
        for item in records {
            let (code, raw) = item?;
            if previous.is_some_and(|p| p >= code) {
                return Err(CoreError::Store(format!(
                    "bulk load: record {} is not after {} (records must come in ascending code order, once each)",
                    String::from_utf8_lossy(code),
                    String::from_utf8_lossy(previous.unwrap_or_default())
                )));
            }
            self.dbs.records.put_with_flags(txn, flags, code, raw)?;
            previous = Some(code);
        }
        self.build_derived(txn, append)
    }

    /// Build every index and the Merkle sums from the records, into empty derived
    /// databases, in one pass over the records (each decoded once): sorted entries,
    /// appended when `append` (the indexes are DUP_SORT: a key's first code is
    /// appended to the tree, its further codes to the key).
    pub(super) fn build_derived(&self, txn: &mut RwTxn, append: bool) -> Result<()> {
        let mut merkle = Delta::default();
        let mut entries: [Vec<(Vec<u8>, Vec<u8>)>; 3] = Default::default(); // number, name, text
        for item in self.dbs.records.iter(txn)? {
            let (code, raw) = item?;
            merkle.record(code, raw, true)?;
            let r: Record = wire::decode(raw, "record")?;
            if r.juminhyo_code.as_bytes() != code {
                return Err(CoreError::Store(format!(
                    "record stored at {} is {}",
                    String::from_utf8_lossy(code),
                    r.juminhyo_code
                )));
            }
            if r.is_indexed() {
                entries[1].push((name_key(&r), code.to_vec()));
                entries[2].extend(query::name_keys(&r).into_iter().map(|k| (k, code.to_vec())));
                entries[0].push((r.kojin_bango.into_bytes(), code.to_vec()));
            }
        }
        merkle.write(self, txn)?;
        for (mut pairs, db) in entries.into_iter().zip([self.dbs.by_number, self.dbs.by_name, self.dbs.by_name_text]) {
            pairs.sort_unstable();
            pairs.dedup();
            let pairs = pairs.iter().map(|(k, c)| Ok((k.as_slice(), c.as_slice())));
            append_pairs(txn, db, pairs, append)?;
        }
        Ok(())
    }
}

/// Write sorted, distinct (key, value) pairs into an empty database (DUP_SORT or not).
fn append_pairs<'p>(
    txn: &mut RwTxn,
    db: Db,
    pairs: impl IntoIterator<Item = Result<(&'p [u8], &'p [u8])>>,
    append: bool,
) -> Result<()> {
    let mut last_key: Vec<u8> = Vec::new();
    let mut first = true;
    for item in pairs {
        let (key, value) = item?;
        let flags = match (append, !first && last_key == key) {
            (false, _) => PutFlags::empty(),
            (true, false) => PutFlags::APPEND,
            (true, true) => PutFlags::APPEND_DUP,
        };
        db.put_with_flags(txn, flags, key, value)?;
        if last_key != key {
            last_key.clear();
            last_key.extend_from_slice(key);
        }
        first = false;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::snapshot::tests::open;

    /// Records with shared numbers and names (so DUP_SORT keys hold several codes), a
    /// removed one (not indexed) and aliases (two text keys).
    fn records(n: u64) -> Vec<(Vec<u8>, Vec<u8>)> {
        (0..n)
            .map(|i| {
                let code = format!("{:011}", 10_000_000_000 + i * 7919 % 1_000_003);
                let record = Record {
                    juminhyo_code: code.clone(),
                    status: if i % 13 == 0 { "removed" } else { "active" }.into(),
                    redirect_to: None,
                    kojin_bango: format!("{:012}", i % 50),
                    name: format!("山口 {}", i % 17),
                    name_kana: format!("ヤマグチ {}", i % 11),
                    former_surname: None,
                    alias: (i % 5 == 0).then(|| format!("Alias {i}")),
                    birth_date: "1980-01-02".into(),
                    sex: (i % 2) as u8 + 1,
                    address: "山口県下関市".into(),
                    municipality: "352012".into(),
                    reason: "職権記載".into(),
                    changed_on: "2024-01-01".into(),
                    recorded_at: 1_700_000_000_000_000 + i,
                    origin: ["352012", "131016"][(i % 2) as usize].into(),
                    seq: i + 1,
                };
                (code.into_bytes(), wire::encode(&record).expect("encode"))
            })
            .collect()
    }

    fn sorted(mut rs: Vec<(Vec<u8>, Vec<u8>)>) -> Vec<(Vec<u8>, Vec<u8>)> {
        rs.sort();
        rs.dedup_by(|a, b| a.0 == b.0);
        rs
    }

    /// Every database a load derives, as bytes, to compare two stores.
    fn derived(store: &Store) -> Vec<Vec<(Vec<u8>, Vec<u8>)>> {
        let txn = store.env.read_txn().expect("txn");
        [store.dbs.records, store.dbs.by_number, store.dbs.by_name, store.dbs.by_name_text, store.dbs.merkle]
            .iter()
            .map(|db| {
                db.iter(&txn).expect("iter").map(|i| i.map(|(k, v)| (k.to_vec(), v.to_vec())).expect("item")).collect()
            })
            .collect()
    }

    #[test]
    fn append_and_ordinary_puts_give_the_same_store_and_check_finds_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rs = sorted(records(3_000));
        let [a, b] = ["a", "b"].map(|n| open(&dir.path().join(n)));
        let items = || rs.iter().map(|(k, v)| Ok((k.as_slice(), v.as_slice())));
        assert_eq!(a.load_sorted(items(), true).expect("append"), rs.len() as u64);
        assert_eq!(b.load_sorted(items(), false).expect("put"), rs.len() as u64);
        assert_eq!(derived(&a), derived(&b));
        assert!(a.check().expect("check").is_empty());
        // The same as indexing them one by one (`rebuild_indexes` from the records).
        a.rebuild_indexes().expect("rebuild");
        assert_eq!(derived(&a), derived(&b));
        let c = open(&dir.path().join("c"));
        assert_eq!(c.load_records_from(&a, true).expect("from a store"), rs.len() as u64);
        assert_eq!(derived(&c), derived(&a));
    }

    #[test]
    fn refuses_unsorted_input_a_non_empty_store_and_a_misplaced_record_leaving_it_empty() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rs = sorted(records(200));
        let store = open(&dir.path().join("s"));
        let mut swapped = rs.clone();
        swapped.swap(50, 51);
        for append in [true, false] {
            let items = swapped.iter().map(|(k, v)| Ok((k.as_slice(), v.as_slice())));
            let err = store.load_sorted(items, append).expect_err("out of order");
            assert!(err.to_string().contains("ascending code order"), "{err}");
            let twice = rs.iter().chain(&rs[199..]).map(|(k, v)| Ok((k.as_slice(), v.as_slice())));
            assert!(store.load_sorted(twice, append).is_err());
            let mut misplaced = rs.clone();
            misplaced[7].1 = misplaced[8].1.clone();
            let items = misplaced.iter().map(|(k, v)| Ok((k.as_slice(), v.as_slice())));
            assert!(store.load_sorted(items, append).expect_err("misplaced").to_string().contains("stored at"));
            assert!(derived(&store).iter().all(Vec::is_empty), "a failed load leaves nothing");
        }
        let items = || rs.iter().map(|(k, v)| Ok((k.as_slice(), v.as_slice())));
        store.load_sorted(items(), true).expect("load");
        let err = store.load_sorted(items(), true).expect_err("not empty");
        assert!(err.to_string().contains("empty store"), "{err}");
    }
}
