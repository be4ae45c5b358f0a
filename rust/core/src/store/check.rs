//! `check`: the internal consistency of one store (fsck), as a list of named
//! inconsistencies. Read-only, in one read transaction: indexes ↔ records, the Merkle
//! sums ↔ records, chain heads ↔ the change log, the log's hash chain and signatures,
//! pending and the forward outbox ↔ real entries, halts ↔ quarantine, the audit chain.

use std::collections::{BTreeMap, BTreeSet};

use heed::RoTxn;

use super::merkle::Delta;
use super::{name_key, u64_at, Halt, Store};
use crate::crypto;
use crate::error::Result;
use crate::query;
use crate::record::Record;
use crate::wire::{self, BodyHead, Envelope, ZERO_HASH};

/// One thing wrong with a store: a stable kind (for scripts and tests) and what,
/// where, in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inconsistency {
    pub kind: &'static str,
    pub detail: String,
}

/// Stop listing after this many per kind (a rebuilt index would otherwise list every
/// record); the count of the rest is reported.
const MAX_PER_KIND: usize = 50;

#[derive(Default)]
struct Found {
    list: Vec<Inconsistency>,
    per_kind: BTreeMap<&'static str, usize>,
}

impl Found {
    fn add(&mut self, kind: &'static str, detail: String) {
        let n = self.per_kind.entry(kind).or_default();
        *n += 1;
        if *n <= MAX_PER_KIND {
            self.list.push(Inconsistency { kind, detail });
        }
    }

    fn finish(mut self) -> Vec<Inconsistency> {
        for (kind, n) in &self.per_kind {
            if *n > MAX_PER_KIND {
                self.list.push(Inconsistency { kind, detail: format!("... and {} more", n - MAX_PER_KIND) });
            }
        }
        self.list
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

impl Store {
    /// Pending bundles the head has passed can never apply (a range re-issued in other
    /// bundles after a drop, or a fork's other branch): remove them, so pending holds
    /// only what waits (`check` names any left as `pending_stale`).
    pub(super) fn forget_passed_pending(&self, txn: &mut heed::RwTxn, origin: &str, head_seq: u64) -> Result<()> {
        if head_seq == 0 {
            return Ok(());
        }
        let (start, end) = (super::seq_key(origin, 0), super::seq_key(origin, head_seq));
        let range = (std::ops::Bound::Included(start.as_slice()), std::ops::Bound::Included(end.as_slice()));
        self.dbs.pending.delete_range(txn, &range)?;
        Ok(())
    }

    /// Every inconsistency found; empty when the store is consistent.
    pub fn check(&self) -> Result<Vec<Inconsistency>> {
        let txn = self.env.read_txn()?;
        let mut found = Found::default();
        self.check_records_and_indexes(&txn, &mut found)?;
        self.check_chains(&txn, &mut found)?;
        self.check_queues(&txn, &mut found)?;
        if self.dbs.meta.get(&txn, b"role")?.is_none() {
            found.add("role_missing", "the store records no role".into());
        }
        let audit = self.dbs.audit.verify(&txn, &[])?;
        for (id, problem) in audit.problems {
            found.add("audit_chain", format!("audit entry {id}: {problem}"));
        }
        Ok(found.finish())
    }

    /// Indexes and Merkle sums are functions of the records: rebuild them in memory
    /// from the records and compare both ways.
    fn check_records_and_indexes(&self, txn: &RoTxn, found: &mut Found) -> Result<()> {
        let mut numbers: BTreeSet<(Vec<u8>, Vec<u8>)> = BTreeSet::new();
        let mut readings: BTreeSet<(Vec<u8>, Vec<u8>)> = BTreeSet::new();
        let mut names: BTreeSet<(Vec<u8>, Vec<u8>)> = BTreeSet::new();
        let mut merkle = Delta::default();
        let mut redirects: Vec<(String, String)> = Vec::new();
        for item in self.dbs.records.iter(txn)? {
            let (code, raw) = item?;
            let r: Record = match wire::decode(raw, "record") {
                Ok(r) => r,
                Err(e) => {
                    found.add("record_undecodable", format!("record {}: {e}", text(code)));
                    continue;
                }
            };
            if r.juminhyo_code.as_bytes() != code {
                found.add("record_misfiled", format!("record under {} says it is {}", text(code), r.juminhyo_code));
            }
            merkle.record(code, raw, true)?;
            if let Some(to) = &r.redirect_to {
                redirects.push((text(code), to.clone()));
            }
            if r.is_indexed() {
                numbers.insert((r.kojin_bango.as_bytes().to_vec(), code.to_vec()));
                readings.insert((name_key(&r), code.to_vec()));
                for k in query::name_keys(&r) {
                    names.insert((k, code.to_vec()));
                }
            }
        }
        for (code, to) in redirects {
            if self.dbs.records.get(txn, to.as_bytes())?.is_none() {
                found.add("redirect_dangling", format!("record {code} redirects to {to}, which does not exist"));
            }
        }
        for (db, want, what) in [
            (self.dbs.by_number, numbers, "number_index"),
            (self.dbs.by_name, readings, "reading_index"),
            (self.dbs.by_name_text, names, "name_index"),
        ] {
            let mut have: BTreeSet<(Vec<u8>, Vec<u8>)> = BTreeSet::new();
            for item in db.iter(txn)? {
                let (k, v) = item?;
                have.insert((k.to_vec(), v.to_vec()));
            }
            let (dangling, missing) = match what {
                "number_index" => ("number_index_dangling", "number_index_missing"),
                "reading_index" => ("reading_index_dangling", "reading_index_missing"),
                _ => ("name_index_dangling", "name_index_missing"),
            };
            for (k, code) in have.difference(&want) {
                found.add(
                    dangling,
                    format!("{what} entry {:?} → {} names no record holding that key", text(k), text(code)),
                );
            }
            for (k, code) in want.difference(&have) {
                found.add(missing, format!("record {} is not reachable through {what} key {:?}", text(code), text(k)));
            }
        }
        let want = merkle.into_nodes();
        let have = self.merkle_nodes(txn)?;
        let keys: BTreeSet<&Vec<u8>> = want.keys().chain(have.keys()).collect();
        for key in keys {
            let (w, h) = (want.get(key).copied().unwrap_or_default(), have.get(key).copied().unwrap_or_default());
            if w != h {
                found.add(
                    "merkle_mismatch",
                    format!(
                        "Merkle node {:?}: {} record(s) stored, {} counted from the records",
                        text(key),
                        h.count,
                        w.count
                    ),
                );
            }
        }
        Ok(())
    }

    /// Chain heads equal the change log's last entries; the log chains by hash from
    /// seq 1, each entry is what its key says, and its origin signature verifies.
    fn check_chains(&self, txn: &RoTxn, found: &mut Found) -> Result<()> {
        let registry = self.registry();
        let mut heads: BTreeMap<String, (u64, [u8; 32])> = BTreeMap::new();
        for item in self.dbs.heads.iter(txn)? {
            let (k, v) = item?;
            if v.len() != 40 {
                found.add("head_malformed", format!("head of {} has {} bytes", text(k), v.len()));
                continue;
            }
            heads.insert(text(k), (u64_at(v, 0), wire::hash32(&v[8..40], "head")?));
        }
        // (origin, last seq, last hash) of the log walked so far
        let mut walked: BTreeMap<String, (u64, [u8; 32])> = BTreeMap::new();
        // A pruned log begins after its floor, chained on the last pruned bundle.
        let mut floors: BTreeMap<String, (u64, [u8; 32])> = BTreeMap::new();
        for origin in heads.keys() {
            if let Some(f) = self.floor_in(txn, origin)? {
                floors.insert(origin.clone(), (f.first_kept - 1, f.prev_hash));
            }
        }
        for item in self.dbs.changelog.iter(txn)? {
            let (k, entry) = item?;
            if k.len() < 8 || entry.len() < 40 {
                found.add("log_malformed", format!("change-log entry {:?} is too short", text(k)));
                continue;
            }
            let origin = text(&k[..k.len() - 8]);
            let key_seq = u64_at(k, k.len() - 8);
            let (first_seq, stored_hash) = (u64_at(entry, 0), wire::hash32(&entry[8..40], "log")?);
            let at = format!("change log of {origin} at seq {key_seq}");
            let envelope: Envelope = match wire::decode(&entry[40..], "envelope") {
                Ok(e) => e,
                Err(e) => {
                    found.add("log_undecodable", format!("{at}: {e}"));
                    continue;
                }
            };
            let body_hash = crypto::sha256(&envelope.body);
            let head: BodyHead = match wire::decode(&envelope.body, "body") {
                Ok(h) => h,
                Err(e) => {
                    found.add("log_undecodable", format!("{at}: {e}"));
                    continue;
                }
            };
            if body_hash != stored_hash {
                found.add("log_hash_mismatch", format!("{at}: the envelope's body does not hash to the stored hash"));
            }
            if head.origin != origin || head.last_seq != key_seq || head.first_seq != first_seq {
                found.add(
                    "log_misfiled",
                    format!("{at}: holds {} seqs {}..{}", head.origin, head.first_seq, head.last_seq),
                );
            }
            match registry.key(&envelope.key_id) {
                Some(key) if key.owner == head.origin => {
                    let valid = crypto::verify(&key.key, &envelope.body, &envelope.sig);
                    if !valid {
                        found.add("log_signature_invalid", format!("{at}: the origin's signature does not verify"));
                    }
                }
                Some(key) => found.add(
                    "log_signature_invalid",
                    format!("{at}: signed with key {:?} of {}, not of the origin", envelope.key_id, key.owner),
                ),
                None => {} // a key since dropped from the registry: nothing to verify with
            }
            let (prev_seq, prev_hash) =
                walked.get(&origin).or_else(|| floors.get(&origin)).copied().unwrap_or((0, ZERO_HASH));
            if first_seq != prev_seq + 1 || head.prev_hash.as_slice() != prev_hash {
                found.add(
                    "log_chain_broken",
                    format!("{at}: does not follow seq {prev_seq} (seqs {first_seq}..{key_seq}, prev_hash differs or seqs skip)"),
                );
            }
            walked.insert(origin, (key_seq, body_hash));
        }
        for (origin, head) in &heads {
            match walked.get(origin) {
                None => found.add("head_without_log", format!("{origin}: head at seq {} but no change log", head.0)),
                Some(last) if last.0 > head.0 => found.add(
                    "log_beyond_head",
                    format!("{origin}: change log reaches seq {}, head says {}", last.0, head.0),
                ),
                Some(last) if last != head => found.add(
                    "head_mismatch",
                    format!(
                        "{origin}: head at seq {} differs from the change log's last entry (seq {})",
                        head.0, last.0
                    ),
                ),
                Some(_) => {}
            }
        }
        for (origin, last) in &walked {
            if !heads.contains_key(origin) {
                found.add("log_without_head", format!("{origin}: change log up to seq {} but no head", last.0));
            }
        }
        Ok(())
    }

    /// Pending bundles wait beyond their origin's head under their own key; forward
    /// entries name change-log entries; halts name quarantine entries.
    fn check_queues(&self, txn: &RoTxn, found: &mut Found) -> Result<()> {
        for item in self.dbs.pending.iter(txn)? {
            let (k, raw) = item?;
            let at = if k.len() >= 8 {
                format!("pending {} seq {}", text(&k[..k.len() - 8]), u64_at(k, k.len() - 8))
            } else {
                format!("pending {:?}", text(k))
            };
            let head =
                wire::decode::<Envelope>(raw, "envelope").and_then(|e| wire::decode::<BodyHead>(&e.body, "body"));
            match head {
                Err(e) => found.add("pending_undecodable", format!("{at}: {e}")),
                Ok(h) => {
                    if super::seq_key(&h.origin, h.first_seq) != k {
                        found.add("pending_misfiled", format!("{at}: holds {} seqs {}..", h.origin, h.first_seq));
                    }
                    let (head_seq, _) = self.head(txn, &h.origin)?;
                    if h.first_seq <= head_seq {
                        found.add(
                            "pending_stale",
                            format!("{at}: seqs {}..{} are at or below the head {head_seq}", h.first_seq, h.last_seq),
                        );
                    }
                }
            }
        }
        for item in self.dbs.forward.iter(txn)? {
            let (k, log_key) = item?;
            if self.dbs.changelog.get(txn, log_key)?.is_none() {
                let id = if k.len() == 8 { u64_at(k, 0).to_string() } else { text(k) };
                found.add("forward_dangling", format!("forward entry {id} names a missing change-log entry"));
            }
        }
        for item in self.dbs.halts.iter(txn)? {
            let (k, v) = item?;
            match wire::decode::<Halt>(v, "halt") {
                Err(e) => found.add("halt_undecodable", format!("halt of {}: {e}", text(k))),
                Ok(h) => {
                    if self.dbs.quarantine.get(txn, &h.quarantine_id.to_be_bytes())?.is_none() {
                        found.add(
                            "halt_dangling",
                            format!("halt of {} names quarantine entry {}, which is missing", text(k), h.quarantine_id),
                        );
                    }
                }
            }
        }
        Ok(())
    }
}
