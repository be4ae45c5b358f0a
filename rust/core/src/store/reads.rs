//! Read-only views of the store: records, indexes, chain heads, the change log, stats.

use std::ops::Bound;

use heed::types::Bytes;
use heed::RoTxn;

use super::{name_key, seq_key, u64_at, Store, COUNTERS};
use crate::error::{CoreError, Result};
use crate::record::{self, FieldValue, Record};
use crate::wire::{self, BodyHead, Envelope};

/// Cursor steps tried before a seek. A step reads the next node of a leaf page (a
/// cache miss, records being ~200 bytes), a seek descends the B-tree (its upper levels
/// stay cached when the codes are sorted): measured on a 1 M-record store, 100k codes
/// (a record in ten) cost the same with 0, 3 or 8 steps, 14% more with 16; denser
/// batches gain from stepping.
const STEPS: usize = 4;

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

    /// Visit the stored bytes of each code's record (the index into `codes` and the
    /// bytes, borrowed from the map) under one read transaction, in key order. Codes of
    /// 11 digits are sorted as numbers and found by walking one cursor along the
    /// records: it steps to the next record while the wanted one should be a few
    /// records ahead (given how densely the codes fill their range), and seeks (one
    /// B-tree descent) past longer gaps, so a batch asking for a good share of the
    /// store costs a cursor step a record, not a descent. Codes not held, and strings
    /// that are not 11 digits (no record has one), are not visited.
    pub fn visit_many(&self, codes: &Codes, mut each: impl FnMut(usize, &[u8]) -> Result<()>) -> Result<()> {
        let txn = self.env.read_txn()?;
        // Only 11-digit codes can be held (`apply` validates every code it stores).
        let mut order: Vec<(u64, u32)> = (0..codes.len())
            .filter_map(|i| crate::query::code_number(codes.get(i)).map(|num| (num, i as u32)))
            .collect();
        order.sort_unstable();
        let records = self.dbs.records;
        // Records a code's number span holds, per unit: how far apart two codes lie.
        let density = match (records.first(&txn)?, records.last(&txn)?) {
            (Some((lo, _)), Some((hi, _))) => match (crate::query::code_number(lo), crate::query::code_number(hi)) {
                (Some(lo), Some(hi)) if hi > lo => records.len(&txn)? as f64 / (hi - lo) as f64,
                _ => 0.0,
            },
            _ => 0.0,
        };
        let mut cursor: Option<heed::RoRange<'_, Bytes, Bytes>> = None;
        let mut at: Option<(&[u8], &[u8])> = None;
        let mut at_num = 0u64;
        for (num, i) in order {
            let i = i as usize;
            let code = codes.get(i);
            let behind = match at {
                Some((key, _)) => key < code,
                None => true,
            };
            if behind {
                let near = cursor.is_some() && ((num - at_num.min(num)) as f64) * density <= STEPS as f64;
                let mut stepped = 0;
                if near {
                    let it = cursor.as_mut().expect("near means a cursor");
                    while stepped < STEPS && at.is_some_and(|(key, _)| key < code) {
                        at = it.next().transpose()?;
                        stepped += 1;
                    }
                }
                if !near || at.is_some_and(|(key, _)| key < code) {
                    // Stepped far enough: seek instead. The range holds `codes`' bytes
                    // only for the seek; afterwards the cursor walks on by itself.
                    let mut it = records.range(&txn, &(Bound::Included(code), Bound::Unbounded))?;
                    at = it.next().transpose()?;
                    cursor = Some(it);
                }
                at_num = at.and_then(|(key, _)| crate::query::code_number(key)).unwrap_or(u64::MAX);
            }
            if let Some((key, raw)) = at {
                if key == code {
                    each(i, raw)?;
                }
            }
        }
        Ok(())
    }

    /// The stored bytes of many records, in the callers' order (decode them with
    /// `RecordView` or `Record`).
    pub fn get_many_raw(&self, codes: &[String]) -> Result<Vec<Option<Vec<u8>>>> {
        let mut out: Vec<Option<Vec<u8>>> = vec![None; codes.len()];
        self.visit_many(&Codes::from_strs(codes), |i, raw| {
            out[i] = Some(raw.to_vec());
            Ok(())
        })?;
        Ok(out)
    }

    /// One field of many records (`record::FIELD_NAMES`), in the callers' order, each
    /// read in place: only that field is copied out, into one buffer for all of them.
    pub fn get_many_field(&self, codes: &Codes, name: &str) -> Result<Column> {
        if !record::FIELD_NAMES.contains(&name) {
            return Err(CoreError::Malformed(format!("no record field {name:?}")));
        }
        let mut column = Column { cells: vec![Cell::Missing; codes.len()], text: Vec::new() };
        self.visit_many(codes, |i, raw| {
            column.cells[i] = match record::field(raw, name)? {
                FieldValue::Nil => Cell::Nil,
                FieldValue::UInt(n) => Cell::UInt(n),
                FieldValue::Str(s) => {
                    let start = column.text.len();
                    column.text.extend_from_slice(s.as_bytes());
                    Cell::Str(start, s.len())
                }
            };
            Ok(())
        })?;
        Ok(column)
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

/// Many codes in one buffer: a caller passing 100,000 codes costs one allocation, not
/// 100,000 `String`s.
#[derive(Debug, Default, Clone)]
pub struct Codes {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl Codes {
    pub fn with_capacity(codes: usize) -> Self {
        Codes { bytes: Vec::with_capacity(codes * crate::audit::CODE_LEN), ends: Vec::with_capacity(codes) }
    }

    pub fn from_strs(codes: &[impl AsRef<str>]) -> Self {
        let mut out = Codes::with_capacity(codes.len());
        for c in codes {
            out.push(c.as_ref().as_bytes());
        }
        out
    }

    pub fn push(&mut self, code: &[u8]) {
        self.bytes.extend_from_slice(code);
        self.ends.push(self.bytes.len());
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    pub fn get(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.bytes[start..self.ends[i]]
    }
}

/// One field of many records, in the callers' order: `Str` cells are (start, length)
/// in `text`, so the column is two allocations however many records it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub cells: Vec<Cell>,
    pub text: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cell {
    /// The store holds no record under the code.
    Missing,
    Nil,
    UInt(u64),
    Str(usize, usize),
}

impl Column {
    /// A cell's value (None when the record is missing); text is valid UTF-8 (checked
    /// by `record::field` when it was read).
    pub fn value(&self, i: usize) -> Option<FieldValue<'_>> {
        Some(match self.cells[i] {
            Cell::Missing => return None,
            Cell::Nil => FieldValue::Nil,
            Cell::UInt(n) => FieldValue::UInt(n),
            Cell::Str(start, len) => {
                FieldValue::Str(std::str::from_utf8(&self.text[start..start + len]).expect("copied from a checked str"))
            }
        })
    }
}
