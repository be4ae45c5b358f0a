//! Read-only views of the store: records, indexes, chain heads, the change log, stats.

use std::ops::Bound;

use heed::RoTxn;

use super::{name_key, seq_key, u64_at, Store, COUNTERS};
use crate::error::{CoreError, Result};
use crate::record::{self, Record};
use crate::wire::{self, BodyHead, Envelope};

impl Store {
    pub fn get(&self, code: &str) -> Result<Option<Record>> {
        let txn = self.env.read_txn()?;
        self.record(&txn, code)
    }

    /// Every 住民票コード one resident has had, `code` first: its current code (the
    /// redirects after a code change followed forward) and every former code (the
    /// changes recorded followed back), oldest-first after `code`. At most
    /// `MAX_REDIRECTS` steps each way per code, so a cycle cannot loop.
    pub fn codes_of(&self, code: &str) -> Result<Vec<String>> {
        let txn = self.env.read_txn()?;
        let mut current = code.to_string();
        for _ in 0..crate::query::MAX_REDIRECTS {
            match self.record(&txn, &current)?.and_then(|r| r.redirect_to) {
                Some(next) if next != current => current = next,
                _ => break,
            }
        }
        let mut seen = vec![current.clone()];
        let mut frontier = vec![current];
        for _ in 0..crate::query::MAX_REDIRECTS {
            let mut next = Vec::new();
            for newer in &frontier {
                for item in self.dbs.former_codes.prefix_iter(&txn, newer.as_bytes())? {
                    let (key, _) = item?;
                    let old = String::from_utf8_lossy(&key[newer.len()..]).into_owned();
                    if !seen.contains(&old) {
                        seen.push(old.clone());
                        next.push(old);
                    }
                }
            }
            if next.is_empty() {
                break;
            }
            frontier = next;
        }
        seen.retain(|c| c != code);
        seen.insert(0, code.to_string());
        Ok(seen)
    }

    /// The stored bytes of many records in one read transaction, looked up in key order
    /// for locality (decode them with `RecordView` or `Record`).
    pub fn get_many_raw(&self, codes: &[String]) -> Result<Vec<Option<Vec<u8>>>> {
        let txn = self.env.read_txn()?;
        let mut order: Vec<usize> = (0..codes.len()).collect();
        order.sort_unstable_by(|a, b| codes[*a].cmp(&codes[*b]));
        let mut out: Vec<Option<Vec<u8>>> = vec![None; codes.len()];
        for i in order {
            out[i] = self.dbs.records.get(&txn, codes[i].as_bytes())?.map(<[u8]>::to_vec);
        }
        Ok(out)
    }

    /// One field of many records (`record::FIELD_NAMES`), in the callers' order, read in
    /// key order under one read transaction and in place: only that field is copied out
    /// of each record. None for a code the store does not hold.
    pub fn get_many_field(&self, codes: &[String], name: &str) -> Result<Vec<Option<record::OwnedField>>> {
        if !record::FIELD_NAMES.contains(&name) {
            return Err(CoreError::Malformed(format!("no record field {name:?}")));
        }
        let txn = self.env.read_txn()?;
        let mut order: Vec<usize> = (0..codes.len()).collect();
        order.sort_unstable_by(|a, b| codes[*a].cmp(&codes[*b]));
        let mut out: Vec<Option<record::OwnedField>> = vec![None; codes.len()];
        for i in order {
            if let Some(raw) = self.dbs.records.get(&txn, codes[i].as_bytes())? {
                out[i] = Some(record::field(raw, name)?.into());
            }
        }
        Ok(out)
    }

    pub fn get_many(&self, codes: &[String]) -> Result<Vec<Option<Record>>> {
        self.get_many_raw(codes)?.into_iter().map(|raw| raw.map(|r| wire::decode(&r, "record")).transpose()).collect()
    }

    /// The stored bytes of the record holding a 個人番号.
    pub fn by_number_raw(&self, kojin_bango: &str) -> Result<Option<Vec<u8>>> {
        let txn = self.env.read_txn()?;
        Ok(self.number_holder(&txn, kojin_bango)?.map(|(_, raw)| raw))
    }

    /// The record a 個人番号 designates, when several hold it (an old code's 除票
    /// beside the current record, before or after a code change reaches every tier):
    /// an active one first, then the highest version, then the lowest code. A function
    /// of the records alone, so every tier that holds them answers the same.
    pub(crate) fn number_holder(&self, txn: &RoTxn, kojin_bango: &str) -> Result<Option<(String, Vec<u8>)>> {
        let Some(codes) = self.dbs.by_number.get_duplicates(txn, kojin_bango.as_bytes())? else {
            return Ok(None);
        };
        let mut best: Option<(bool, Record, Vec<u8>)> = None;
        for item in codes {
            let code = item?.1;
            let Some(raw) = self.dbs.records.get(txn, code)? else { continue };
            let r: Record = wire::decode(raw, "record")?;
            let active = r.status == record::ACTIVE;
            let better = match &best {
                None => true,
                Some((b_active, b, _)) => (active, r.version()) > (*b_active, b.version()),
            };
            if better {
                best = Some((active, r, raw.to_vec()));
            }
        }
        Ok(best.map(|(_, r, raw)| (r.juminhyo_code, raw)))
    }

    pub fn by_number(&self, kojin_bango: &str) -> Result<Option<Record>> {
        self.by_number_raw(kojin_bango)?.map(|r| wire::decode(&r, "record")).transpose()
    }

    /// Codes of the records whose normalised reading, birth date and sex match.
    pub fn by_reading(&self, reading: &str, birth_date: &str, sex: u8) -> Result<Vec<String>> {
        let txn = self.env.read_txn()?;
        let probe =
            Record { name_kana: reading.into(), birth_date: birth_date.into(), sex, ..Record::default_for_key() };
        let mut out = Vec::new();
        if let Some(iter) = self.dbs.by_name.get_duplicates(&txn, &name_key(&probe))? {
            for item in iter {
                out.push(String::from_utf8_lossy(item?.1).into_owned());
            }
        }
        Ok(out)
    }

    pub fn chain_head(&self, origin: &str) -> Result<Option<(u64, [u8; 32])>> {
        let txn = self.env.read_txn()?;
        let (seq, hash) = self.head(&txn, origin)?;
        Ok((seq > 0).then_some((seq, hash)))
    }

    pub fn chain_heads(&self) -> Result<Vec<(String, u64, [u8; 32])>> {
        let txn = self.env.read_txn()?;
        let mut out = Vec::new();
        for item in self.dbs.heads.iter(&txn)? {
            let (k, v) = item?;
            out.push((String::from_utf8_lossy(k).into_owned(), u64_at(v, 0), wire::hash32(&v[8..40], "head")?));
        }
        Ok(out)
    }

    /// Envelopes of `origin` holding sequence numbers from `from_seq` on, in order.
    /// A range starting before the retained log (pruned) is refused with
    /// `CoreError::Pruned` naming the archive, never answered with a silent gap.
    pub fn changes(&self, origin: &str, from_seq: u64, limit: usize) -> Result<Vec<Vec<u8>>> {
        let txn = self.env.read_txn()?;
        self.check_retained(&txn, origin, from_seq)?;
        let start = seq_key(origin, from_seq);
        let end = seq_key(origin, u64::MAX);
        let mut out = Vec::new();
        for item in self
            .dbs
            .changelog
            .range(&txn, &(Bound::Included(start.as_slice()), Bound::Included(end.as_slice())))?
            .take(limit)
        {
            out.push(item?.1[40..].to_vec());
        }
        Ok(out)
    }

    /// SHA-256 over (code, record) of the active records whose holding municipality
    /// starts with `prefix`, in code order: equal on two stores with the same records.
    pub fn digest(&self, prefix: &str) -> Result<String> {
        use sha2::{Digest, Sha256};
        let txn = self.env.read_txn()?;
        let mut hasher = Sha256::new();
        for item in self.dbs.records.iter(&txn)? {
            let (k, v) = item?;
            let r: Record = wire::decode(v, "record")?;
            if r.status == record::ACTIVE && r.municipality.starts_with(prefix) {
                hasher.update((k.len() as u32).to_be_bytes());
                hasher.update(k);
                hasher.update((v.len() as u32).to_be_bytes());
                hasher.update(v);
            }
        }
        Ok(hex::encode(hasher.finalize()))
    }

    pub fn stats(&self) -> Result<Vec<(String, u64)>> {
        let txn = self.env.read_txn()?;
        let mut out = vec![
            ("records".to_string(), self.dbs.records.len(&txn)?),
            ("origins".to_string(), self.dbs.heads.len(&txn)?),
            ("pending".to_string(), self.dbs.pending.len(&txn)?),
            ("forward_backlog".to_string(), self.dbs.forward.len(&txn)?),
            ("halted".to_string(), self.dbs.halts.len(&txn)?),
        ];
        for c in COUNTERS {
            let v = self.dbs.meta.get(&txn, format!("c:{c}").as_bytes())?.map_or(0, |v| u64_at(v, 0));
            out.push((c.to_string(), v));
        }
        let open = self.quarantine_in(&txn, false)?.len() as u64;
        out.push(("quarantine_open".to_string(), open));
        Ok(out)
    }

    pub fn pending(&self, origin: &str) -> Result<Vec<(u64, u64)>> {
        let txn = self.env.read_txn()?;
        let mut out = Vec::new();
        for item in self.dbs.pending.prefix_iter(&txn, origin.as_bytes())? {
            let (_, raw) = item?;
            let env: Envelope = wire::decode(raw, "envelope")?;
            let head: BodyHead = wire::decode(&env.body, "body")?;
            out.push((head.first_seq, head.last_seq));
        }
        Ok(out)
    }
}

impl Record {
    /// A blank record, for building index probe keys.
    fn default_for_key() -> Self {
        Record {
            juminhyo_code: String::new(),
            status: String::new(),
            redirect_to: None,
            kojin_bango: String::new(),
            name: String::new(),
            name_kana: String::new(),
            former_surname: None,
            alias: None,
            birth_date: String::new(),
            sex: 0,
            address: String::new(),
            municipality: String::new(),
            reason: String::new(),
            changed_on: String::new(),
            recorded_at: 0,
            origin: String::new(),
            seq: 0,
        }
    }
}
