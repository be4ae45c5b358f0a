//! The audit trail (DESIGN.md §6): every query, allowed or denied, is one entry of a
//! hash-chained log kept in the tier store. A query's entry is appended through the
//! group commit (`audit_commit.rs`), and the answer is returned only once the commit
//! holding its entry is durable, so an answer never leaves without its entry.
//!
//! Layout (all in the store's environment; ids and times are u64 big-endian):
//! - `audit`: entry id → the entry, a MessagePack map (`AuditEntry`);
//! - `audit_index`, three kinds of keys (one database, values empty unless said):
//!   `t` time ‖ id, for time ranges whatever the id order;
//!   `c` record code (11 bytes) ‖ id, for the disclosure of one resident's provision
//!   history, for entries touching up to `INDEX_LIMIT` records;
//!   `b` id → record count, the larger entries (batch confirmations), which a
//!   disclosure searches instead (their code lists are sorted: a binary search);
//! - meta `audit:head` (next id ‖ hash of the last entry) and `audit:anchor` (first
//!   kept id ‖ hash the first kept entry chains to, after a purge).
//!
//! Each entry carries the SHA-256 of the previous entry's bytes. An edit breaks the
//! link to the next entry, a deletion breaks the run of ids and the link, a cut tail
//! no longer ends at the head kept in meta. Whoever can rewrite the whole file can
//! rewrite the chain and the head too: `verify` therefore also takes checkpoints
//! (id, hash) recorded elsewhere, e.g. printed in each usage report.

use std::ops::Bound;

use heed::types::Bytes;
use heed::{Database, RoTxn, RwTxn};
use serde::{Deserialize, Serialize};

use crate::crypto;
use crate::error::{CoreError, Result};
use crate::query::{code_array, Access};
use crate::store::Store;
use crate::wire::{self, Bin, ZERO_HASH};

type Db = Database<Bytes, Bytes>;

/// Length of a 住民票コード, the unit of `AuditEntry::codes`.
pub const CODE_LEN: usize = 11;
/// Entries touching more records than this are not indexed code by code (a batch of a
/// million codes would cost a million index writes); a disclosure binary-searches them.
pub const INDEX_LIMIT: usize = 1_000;

const HEAD_KEY: &[u8] = b"audit:head";
const ANCHOR_KEY: &[u8] = b"audit:anchor";

/// The databases of the audit trail; the store opens them with its others.
pub struct AuditDbs {
    pub entries: Db,
    pub index: Db,
    pub meta: Db,
}

/// One entry as stored. `codes` are the records the answer touched (sorted, unique,
/// 11 ASCII digits each, concatenated); `items` is how many subjects were asked about
/// (1 for a lookup or a search, n for a batch of n codes): the count a usage report
/// adds up (件数). `prev` is the SHA-256 of the previous entry's bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditEntry {
    pub id: u64,
    pub time: u64,
    pub requester: String,
    pub task: String,
    pub kind: String,
    pub allowed: bool,
    pub reason: String,
    pub items: u64,
    pub codes: Bin,
    pub detail: String,
    pub prev: Bin,
}

/// What is left of an entry purged out of chain order (logged later than entries that
/// are kept, or kept while older ones are removed): nothing of what it said, only what
/// the chain needs to still verify through it: the hash it chained to and its own.
/// `purged_by` is the id of the purge's own entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tombstone {
    pub id: u64,
    pub prev: Bin,
    pub hash: Bin,
    pub purged_by: u64,
}

/// A stored entry as the chain sees it: (id, the hash it chains to, its own hash).
fn link(bytes: &[u8]) -> std::result::Result<(u64, Vec<u8>, [u8; 32]), String> {
    match wire::decode::<AuditEntry>(bytes, "audit entry") {
        Ok(entry) => Ok((entry.id, entry.prev.to_vec(), crypto::sha256(bytes))),
        Err(e) => match wire::decode::<Tombstone>(bytes, "audit tombstone") {
            Ok(t) => {
                let hash = wire::hash32(&t.hash, "tombstone hash").map_err(|e| e.to_string())?;
                Ok((t.id, t.prev.to_vec(), hash))
            }
            Err(_) => Err(e.to_string()),
        },
    }
}

fn is_tombstone(bytes: &[u8]) -> bool {
    wire::decode::<Tombstone>(bytes, "audit tombstone").is_ok()
}

/// The same entry borrowed from the map: listing a year of entries must not copy the
/// megabytes of code lists that batch confirmations carry.
#[derive(Deserialize)]
struct EntryView<'a> {
    id: u64,
    time: u64,
    #[serde(borrow)]
    requester: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    task: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    kind: std::borrow::Cow<'a, str>,
    allowed: bool,
    #[serde(borrow)]
    reason: std::borrow::Cow<'a, str>,
    items: u64,
    #[serde(with = "serde_bytes", borrow)]
    codes: &'a [u8],
    #[serde(borrow)]
    detail: std::borrow::Cow<'a, str>,
}

/// What a caller asks to log; the chain fields are filled in by `append`.
#[derive(Debug, Clone, Default)]
pub struct Event {
    pub time: u64,
    pub requester: String,
    pub task: String,
    pub kind: String,
    pub allowed: bool,
    pub reason: String,
    pub items: u64,
    pub detail: String,
}

/// An entry as read back: the codes only when asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryInfo {
    pub id: u64,
    pub time: u64,
    pub requester: String,
    pub task: String,
    pub kind: String,
    pub allowed: bool,
    pub reason: String,
    pub items: u64,
    pub touched: u64,
    pub codes: Option<Vec<String>>,
    pub detail: String,
}

impl EntryView<'_> {
    fn info(&self, with_codes: bool) -> EntryInfo {
        EntryInfo {
            id: self.id,
            time: self.time,
            requester: self.requester.to_string(),
            task: self.task.to_string(),
            kind: self.kind.to_string(),
            allowed: self.allowed,
            reason: self.reason.to_string(),
            items: self.items,
            touched: (self.codes.len() / CODE_LEN) as u64,
            codes: with_codes
                .then(|| self.codes.chunks_exact(CODE_LEN).map(|c| String::from_utf8_lossy(c).into_owned()).collect()),
            detail: self.detail.to_string(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    pub ok: bool,
    pub entries: u64,
    pub first_id: u64,
    pub last_id: u64,
    pub head: [u8; 32],
    /// (entry id, what is wrong); at most `MAX_PROBLEMS`.
    pub problems: Vec<(u64, String)>,
}

const MAX_PROBLEMS: usize = 100;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Purge {
    pub purged: u64,
    pub first_kept: u64,
    pub anchor: [u8; 32],
    pub entry_id: u64,
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

fn index_key(kind: u8, first: &[u8], id: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + first.len() + 8);
    k.push(kind);
    k.extend_from_slice(first);
    k.extend_from_slice(&id.to_be_bytes());
    k
}

fn time_key(time: u64, id: u64) -> Vec<u8> {
    index_key(b't', &time.to_be_bytes(), id)
}

fn code_key(code: &[u8], id: u64) -> Vec<u8> {
    index_key(b'c', code, id)
}

fn bulk_key(id: u64) -> Vec<u8> {
    index_key(b'b', &[], id)
}

/// Sort and deduplicate codes given as concatenated 11-byte chunks.
pub fn pack_codes(codes: impl IntoIterator<Item = [u8; CODE_LEN]>) -> Vec<u8> {
    let mut v: Vec<[u8; CODE_LEN]> = codes.into_iter().collect();
    v.sort_unstable();
    v.dedup();
    v.concat()
}

fn view(bytes: &[u8]) -> Result<EntryView<'_>> {
    rmp_serde::from_slice(bytes).map_err(|e| CoreError::Malformed(format!("audit entry: {e}")))
}

impl AuditDbs {
    /// (next id, hash of the last entry); (1, zeros) for an empty log.
    pub fn head(&self, txn: &RoTxn) -> Result<(u64, [u8; 32])> {
        Ok(match self.meta.get(txn, HEAD_KEY)? {
            Some(v) => (u64_at(v, 0), wire::hash32(&v[8..40], "audit head")?),
            None => (1, ZERO_HASH),
        })
    }

    /// (first kept id, the hash it chains to): (1, zeros) until the first purge.
    pub fn anchor(&self, txn: &RoTxn) -> Result<(u64, [u8; 32])> {
        Ok(match self.meta.get(txn, ANCHOR_KEY)? {
            Some(v) => (u64_at(v, 0), wire::hash32(&v[8..40], "audit anchor")?),
            None => (1, ZERO_HASH),
        })
    }

    fn put_pair(&self, txn: &mut RwTxn, key: &[u8], id: u64, hash: &[u8; 32]) -> Result<()> {
        let mut v = Vec::with_capacity(40);
        v.extend_from_slice(&id.to_be_bytes());
        v.extend_from_slice(hash);
        self.meta.put(txn, key, &v)?;
        Ok(())
    }

    /// Append one entry in the caller's write transaction; `codes` as from `pack_codes`.
    pub fn append(&self, txn: &mut RwTxn, event: Event, codes: Vec<u8>) -> Result<u64> {
        debug_assert_eq!(codes.len() % CODE_LEN, 0);
        let (id, prev) = self.head(txn)?;
        let touched = codes.len() / CODE_LEN;
        let entry = AuditEntry {
            id,
            time: event.time,
            requester: event.requester,
            task: event.task,
            kind: event.kind,
            allowed: event.allowed,
            reason: event.reason,
            items: event.items,
            codes: Bin(codes),
            detail: event.detail,
            prev: Bin(prev.to_vec()),
        };
        let bytes = wire::encode(&entry)?;
        let hash = crypto::sha256(&bytes);
        self.entries.put(txn, &id.to_be_bytes(), &bytes)?;
        self.index.put(txn, &time_key(entry.time, id), &[])?;
        if touched > INDEX_LIMIT {
            self.index.put(txn, &bulk_key(id), &(touched as u64).to_be_bytes())?;
        } else {
            for code in entry.codes.chunks_exact(CODE_LEN) {
                self.index.put(txn, &code_key(code, id), &[])?;
            }
        }
        self.put_pair(txn, HEAD_KEY, id + 1, &hash)?;
        Ok(id)
    }

    pub fn entry(&self, txn: &RoTxn, id: u64, with_codes: bool) -> Result<Option<EntryInfo>> {
        match self.entries.get(txn, &id.to_be_bytes())? {
            Some(v) if is_tombstone(v) => Ok(None),
            Some(v) => Ok(Some(view(v)?.info(with_codes))),
            None => Ok(None),
        }
    }

    /// Entries with `start <= time < end`, in time order (then id).
    pub fn range(&self, txn: &RoTxn, start: u64, end: u64, with_codes: bool) -> Result<Vec<EntryInfo>> {
        let lo = time_key(start, 0);
        let hi = time_key(end, 0);
        let mut out = Vec::new();
        for item in self.index.range(txn, &(Bound::Included(lo.as_slice()), Bound::Excluded(hi.as_slice())))? {
            let (k, _) = item?;
            let id = u64_at(k, 9);
            match self.entries.get(txn, &id.to_be_bytes())? {
                Some(v) => out.push(view(v)?.info(with_codes)),
                // An index entry without its entry: `verify` reports the missing id.
                None => continue,
            }
        }
        Ok(out)
    }

    /// Entries whose answer touched `code`, in id order: the indexed small entries and
    /// the bulk entries whose sorted code lists hold it.
    pub fn touching(&self, txn: &RoTxn, code: &str) -> Result<Vec<EntryInfo>> {
        let mut ids: Vec<u64> = Vec::new();
        if code.len() == CODE_LEN {
            for item in self.index.prefix_iter(txn, &index_key(b'c', code.as_bytes(), 0)[..1 + CODE_LEN])? {
                ids.push(u64_at(item?.0, 1 + CODE_LEN));
            }
        }
        let mut out = Vec::new();
        for id in &ids {
            if let Some(v) = self.entries.get(txn, &id.to_be_bytes())? {
                out.push(view(v)?.info(false));
            }
        }
        if code.len() == CODE_LEN {
            for item in self.index.prefix_iter(txn, b"b")? {
                let id = u64_at(item?.0, 1);
                let Some(v) = self.entries.get(txn, &id.to_be_bytes())? else { continue };
                let e = view(v)?;
                if contains_code(e.codes, code.as_bytes()) {
                    out.push(e.info(false));
                }
            }
        }
        out.sort_by_key(|e| e.id);
        Ok(out)
    }

    /// Walk the chain from the anchor to the head. `checkpoints` are (id, entry hash)
    /// pairs recorded outside the store; each must still hold.
    pub fn verify(&self, txn: &RoTxn, checkpoints: &[(u64, [u8; 32])]) -> Result<Verification> {
        let (first, mut expected_prev) = self.anchor(txn)?;
        let (next, head) = self.head(txn)?;
        let mut problems: Vec<(u64, String)> = Vec::new();
        let mut note = |id: u64, what: String| {
            if problems.len() < MAX_PROBLEMS {
                problems.push((id, what));
            }
        };
        let mut expect_id = first;
        let mut count = 0u64;
        let mut hashes: std::collections::HashMap<u64, [u8; 32]> = Default::default();
        let wanted: std::collections::HashSet<u64> = checkpoints.iter().map(|c| c.0).collect();
        for item in self.entries.iter(txn)? {
            let (k, v) = item?;
            let id = u64_at(k, 0);
            count += 1;
            if id < first {
                note(id, format!("entry {id} lies before the anchor (first kept entry {first}): not chained"));
                continue;
            }
            if id != expect_id {
                note(id, format!("entries {expect_id}..{} are missing (deleted)", id - 1));
            }
            let mut hash = crypto::sha256(v);
            match link(v) {
                Err(e) => note(id, format!("entry {id} does not decode ({e}): edited")),
                Ok((said, prev, own)) => {
                    hash = own; // a tombstone's is the purged entry's
                    if said != id {
                        note(id, format!("entry {id} says it is entry {said}: edited or moved"));
                    }
                    if prev.as_slice() != expected_prev {
                        let before = if id == first { "the anchor".to_string() } else { format!("entry {}", id - 1) };
                        note(id, format!("entry {id} does not chain to {before}: {before} was edited or removed"));
                    }
                }
            }
            if wanted.contains(&id) {
                hashes.insert(id, hash);
            }
            expected_prev = hash;
            expect_id = id + 1;
        }
        if expect_id < next {
            note(
                expect_id,
                format!("the log ends at entry {} but its head is entry {}: tail removed", expect_id - 1, next - 1),
            );
        } else if expect_id > next {
            note(next, format!("entries past the head (entry {}) were added outside the chain", next - 1));
        } else if expected_prev != head {
            note(next - 1, format!("entry {} does not hash to the head: edited", next - 1));
        }
        for (id, hash) in checkpoints {
            match hashes.get(id) {
                None => note(*id, format!("checkpoint entry {id} is not in the log")),
                Some(h) if h != hash => note(*id, format!("entry {id} does not match its checkpoint: rewritten")),
                Some(_) => {}
            }
        }
        Ok(Verification { ok: problems.is_empty(), entries: count, first_id: first, last_id: next - 1, head, problems })
    }

    /// Purge by time: every entry logged before `before` (retention) goes, whatever
    /// its place in the chain, then the purge is logged itself. The oldest run of
    /// purged entries is removed and the anchor keeps the hash the first kept entry
    /// chains to; a purged entry after a kept one (logged out of time order) becomes a
    /// `Tombstone` holding only its chain hashes. So the rest still verifies.
    pub fn purge(&self, txn: &mut RwTxn, before: u64, event: Event) -> Result<Purge> {
        let (first, mut anchor) = self.anchor(txn)?;
        let (purge_id, _) = self.head(txn)?;
        // Every entry older than `before`, by the time index (any id order).
        let mut old: Vec<(u64, u64)> = Vec::new(); // id, time
        let hi = time_key(before, 0);
        for item in
            self.index.range(txn, &(Bound::Included(time_key(0, 0).as_slice()), Bound::Excluded(hi.as_slice())))?
        {
            let (k, _) = item?;
            old.push((u64_at(k, 9), u64_at(k, 1)));
        }
        old.sort_unstable();
        let old_ids: std::collections::HashSet<u64> = old.iter().map(|o| o.0).collect();
        // The run from the anchor of entries old or already tombstoned: removed.
        let mut removed: Vec<u64> = Vec::new();
        let mut purged = 0u64;
        for item in self.entries.iter(txn)? {
            let (k, v) = item?;
            let id = u64_at(k, 0);
            let tomb = is_tombstone(v);
            if !tomb && !old_ids.contains(&id) {
                break;
            }
            anchor = link(v).map_err(CoreError::Malformed)?.2;
            removed.push(id);
            if !tomb {
                purged += 1;
            }
        }
        let first_kept = removed.last().map_or(first, |id| id + 1);
        let mut tombstoned = 0u64;
        for (id, time) in &old {
            let Some(v) = self.entries.get(txn, &id.to_be_bytes())?.map(<[u8]>::to_vec) else { continue };
            let e = view(&v)?;
            let codes = e.codes.to_vec();
            let prev = wire::decode::<AuditEntry>(&v, "audit entry")?.prev;
            self.index.delete(txn, &time_key(*time, *id))?;
            if codes.len() / CODE_LEN > INDEX_LIMIT {
                self.index.delete(txn, &bulk_key(*id))?;
            } else {
                for code in codes.chunks_exact(CODE_LEN) {
                    self.index.delete(txn, &code_key(code, *id))?;
                }
            }
            if *id >= first_kept {
                let tomb = Tombstone { id: *id, prev, hash: Bin(crypto::sha256(&v).to_vec()), purged_by: purge_id };
                self.entries.put(txn, &id.to_be_bytes(), &wire::encode(&tomb)?)?;
                tombstoned += 1;
            }
        }
        for id in &removed {
            self.entries.delete(txn, &id.to_be_bytes())?;
        }
        purged += tombstoned;
        if !removed.is_empty() {
            self.put_pair(txn, ANCHOR_KEY, first_kept, &anchor)?;
        }
        let span = match (removed.first(), removed.last()) {
            (Some(a), Some(b)) => format!("entries {a}..{b} removed"),
            _ => "none removed".to_string(),
        };
        let detail = format!(
            "purged {purged} logged before {before} ({span}, {tombstoned} later ones reduced to tombstones); \
             first kept {first_kept}, anchor {}",
            hex::encode(anchor)
        );
        let event = Event { items: purged, detail, allowed: true, ..event };
        let entry_id = self.append(txn, event, Vec::new())?;
        debug_assert_eq!(entry_id, purge_id);
        Ok(Purge { purged, first_kept, anchor, entry_id })
    }
}

/// Binary search of an 11-byte code in a sorted concatenation of codes.
fn contains_code(codes: &[u8], code: &[u8]) -> bool {
    let n = codes.len() / CODE_LEN;
    let (mut lo, mut hi) = (0usize, n);
    while lo < hi {
        let mid = (lo + hi) / 2;
        match codes[mid * CODE_LEN..(mid + 1) * CODE_LEN].cmp(code) {
            std::cmp::Ordering::Less => lo = mid + 1,
            std::cmp::Ordering::Greater => hi = mid,
            std::cmp::Ordering::Equal => return true,
        }
    }
    false
}

// ---- the store's audit trail methods --------------------------------------------------

impl Store {
    /// Append an entry that is not a query answered here: a denial (with its reason),
    /// a disclosure, a report. `codes` are the records it concerns (11 digits each).
    pub fn audit_log(&self, event: Event, codes: &[String]) -> Result<u64> {
        let mut packed = Vec::with_capacity(codes.len());
        for c in codes {
            packed.push(
                code_array(c.as_bytes())
                    .ok_or_else(|| CoreError::Malformed(format!("audit: {c:?} is not an 11-character code")))?,
            );
        }
        self.audit_commit(event, pack_codes(packed))
    }

    /// Audit entries with `start <= time < end`, in time order.
    pub fn audit_entries(&self, start: u64, end: u64, with_codes: bool) -> Result<Vec<EntryInfo>> {
        let txn = self.env.read_txn()?;
        self.dbs.audit.range(&txn, start, end, with_codes)
    }

    pub fn audit_entry(&self, id: u64, with_codes: bool) -> Result<Option<EntryInfo>> {
        let txn = self.env.read_txn()?;
        self.dbs.audit.entry(&txn, id, with_codes)
    }

    /// The entries whose answers touched the record `code` (its provision history).
    pub fn audit_touching(&self, code: &str) -> Result<Vec<EntryInfo>> {
        let txn = self.env.read_txn()?;
        self.dbs.audit.touching(&txn, code)
    }

    pub fn audit_verify(&self, checkpoints: &[(u64, [u8; 32])]) -> Result<Verification> {
        let txn = self.env.read_txn()?;
        self.dbs.audit.verify(&txn, checkpoints)
    }

    /// Remove the entries older than `before` (µs), oldest first; logged itself.
    pub fn audit_purge(&self, before: u64, access: &Access) -> Result<Purge> {
        let mut txn = self.env.write_txn()?;
        let event = access.event("purge", 0, String::new());
        let purge = self.dbs.audit.purge(&mut txn, before, event)?;
        txn.commit()?;
        Ok(purge)
    }

    /// (first kept id, last id, hash of the last entry): a checkpoint to keep elsewhere.
    pub fn audit_head(&self) -> Result<(u64, u64, [u8; 32])> {
        let txn = self.env.read_txn()?;
        let (first, _) = self.dbs.audit.anchor(&txn)?;
        let (next, hash) = self.dbs.audit.head(&txn)?;
        Ok((first, next - 1, hash))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packs_and_finds_codes() {
        let codes = pack_codes([*b"00000000003", *b"00000000001", *b"00000000003", *b"00000000002"]);
        assert_eq!(codes, b"000000000010000000000200000000003".to_vec());
        assert!(contains_code(&codes, b"00000000002"));
        assert!(contains_code(&codes, b"00000000003"));
        assert!(!contains_code(&codes, b"00000000004"));
        assert!(!contains_code(&[], b"00000000004"));
    }
}
