//! Purpose-bound queries (DESIGN.md §6): the pieces that do not touch LMDB — search
//! keys, address ranking and the batch confirmation's per-code status. The store runs
//! them inside the write transaction that also appends the audit entry.

use unicode_normalization::UnicodeNormalization;

use std::ops::Bound;

use heed::RoTxn;

use crate::audit;
use crate::error::{CoreError, Result};
use crate::msgpack::MsgReader;
use crate::record::{self, Record};
use crate::store::Store;
use crate::text;
use crate::wire;

/// Key of the search indexes: normalised text \0 birth date \0 sex digit. The reading
/// index (`by_name`) keys `name_kana`, the name index (`by_name_text`) keys `name` and
/// `alias`; both with `text::normalize_reading`, so one query string is looked up in
/// both whether it is kanji, katakana, hiragana or half-width.
///
/// LMDB refuses keys over 511 bytes, and a 256-character name can normalise to far more
/// (167 kanji are 501 bytes; NFKC expands U+FDFA to 18 characters). So the key fits by
/// construction: normalised text longer than `MAX_INDEX_TEXT` bytes is replaced by
/// `HASHED_TEXT` + its SHA-256. 0xFF never occurs in UTF-8, so a hashed key cannot equal
/// a plain one; the search compares the full values of what a hashed key finds.
pub fn index_key(text: &str, birth_date: &str, sex: u8) -> Vec<u8> {
    let normalised = text::normalize_reading(text);
    let mut k = if normalised.len() > MAX_INDEX_TEXT {
        let mut hashed = HASHED_TEXT.to_vec();
        hashed.extend_from_slice(&crate::crypto::sha256(normalised.as_bytes()));
        hashed
    } else {
        normalised.into_bytes()
    };
    k.push(0);
    // A birth date is validated as YYYY-MM-DD before it is indexed; a released bundle
    // is applied unchecked, so the date is bounded here too.
    k.extend_from_slice(&birth_date.as_bytes()[..birth_date.len().min(MAX_INDEX_DATE)]);
    k.push(0);
    k.push(b'0'.wrapping_add(sex));
    k
}

/// Normalised text up to this many bytes is its own index key; longer text is hashed.
pub const MAX_INDEX_TEXT: usize = 400;
const MAX_INDEX_DATE: usize = 32;
/// Marks a hashed index key (0xFF is never part of UTF-8 text).
pub const HASHED_TEXT: &[u8] = b"\xff#";
/// LMDB's largest key (MDB_MAXKEYSIZE in the default build).
pub const LMDB_MAX_KEY: usize = 511;

/// Whether `key` (an `index_key`) stands for its text by a hash, so that what it finds
/// must be compared with the query in full.
pub fn is_hashed_key(key: &[u8]) -> bool {
    key.starts_with(HASHED_TEXT)
}

/// The name-index keys of a record: its name and, when recorded, its 通称 (an alias is
/// the name many foreign residents live under). Deduplicated, so a DUPSORT delete of
/// each removes exactly what was put.
pub fn name_keys(r: &Record) -> Vec<Vec<u8>> {
    let mut keys = vec![index_key(&r.name, &r.birth_date, r.sex)];
    if let Some(alias) = r.alias.as_deref().filter(|a| !a.trim().is_empty()) {
        let k = index_key(alias, &r.birth_date, r.sex);
        if k != keys[0] {
            keys.push(k);
        }
    }
    keys
}

/// Address text for comparison: NFKC (full-width digits and letters to ASCII), spaces
/// removed, the many dash look-alikes written in addresses folded to '-'.
pub fn normalize_address(s: &str) -> Vec<char> {
    s.nfkc()
        .filter(|c| !c.is_whitespace())
        .map(|c| match c {
            '\u{2010}'..='\u{2015}' | '\u{2212}' | '\u{30FC}' | '\u{FF70}' | '\u{FE63}' => '-',
            _ => c,
        })
        .collect()
}

/// Similarity of two normalised addresses in [0, 1]: the Dice coefficient of their
/// character bigrams (robust to a missing prefecture or a different 番地 notation),
/// with the shared prefix as a tie-breaker in the caller.
pub fn address_score(query: &[char], candidate: &[char]) -> f64 {
    if query.is_empty() || candidate.is_empty() {
        return 0.0;
    }
    if query == candidate {
        return 1.0;
    }
    let bigrams = |s: &[char]| -> Vec<(char, char)> {
        let mut v: Vec<(char, char)> =
            if s.len() == 1 { vec![(s[0], '\0')] } else { s.windows(2).map(|w| (w[0], w[1])).collect() };
        v.sort_unstable();
        v
    };
    let (a, b) = (bigrams(query), bigrams(candidate));
    let (mut i, mut j, mut common) = (0, 0, 0usize);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                common += 1;
                i += 1;
                j += 1;
            }
        }
    }
    2.0 * common as f64 / (a.len() + b.len()) as f64
}

pub fn common_prefix(a: &[char], b: &[char]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// Which index found a candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Matched {
    Reading,
    Name,
    Both,
}

impl Matched {
    pub fn as_str(self) -> &'static str {
        match self {
            Matched::Reading => "reading",
            Matched::Name => "name",
            Matched::Both => "both",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Candidate {
    pub record: Record,
    pub score: f64,
    pub matched: Matched,
}

#[derive(Debug, Clone)]
pub struct SearchQuery {
    /// Name (kanji, as on the register) or reading (katakana, hiragana, half-width).
    pub name: String,
    pub birth_date: String,
    pub sex: u8,
    pub address: Option<String>,
    pub limit: usize,
}

/// Rank candidates: best address match first, then the longer shared address prefix,
/// active before removed (除票), the latest change, and the code for a stable order.
pub fn rank(query: &SearchQuery, found: Vec<(Record, Matched)>) -> Vec<Candidate> {
    let q = query.address.as_deref().map(normalize_address).unwrap_or_default();
    let mut scored: Vec<(Candidate, usize)> = found
        .into_iter()
        .map(|(record, matched)| {
            let a = normalize_address(&record.address);
            let score = address_score(&q, &a);
            let prefix = common_prefix(&q, &a);
            (Candidate { record, score, matched }, prefix)
        })
        .collect();
    scored.sort_by(|(x, px), (y, py)| {
        y.score
            .total_cmp(&x.score)
            .then(py.cmp(px))
            .then((x.record.status != record::ACTIVE).cmp(&(y.record.status != record::ACTIVE)))
            .then(y.record.changed_on.cmp(&x.record.changed_on))
            .then(x.record.juminhyo_code.cmp(&y.record.juminhyo_code))
    });
    scored.into_iter().map(|(c, _)| c).collect()
}

// ---- batch confirmation (一括提供) ---------------------------------------------------

/// Per-code status of a batch confirmation.
pub const UNKNOWN: u8 = 0;
pub const CURRENT: u8 = 1;
pub const MOVED_OUT: u8 = 2;
pub const REMOVED: u8 = 3;

/// Reasons as the one-byte codes of `Confirmation::reason` (index + 1; 0 = none).
pub const REASONS: [&str; 14] = [
    "move_in",
    "move_in_from_abroad",
    "birth",
    "entry_by_authority",
    "move_out",
    "move_out_abroad",
    "death",
    "removal_by_authority",
    "address_change",
    "correction_by_authority",
    "error_correction",
    "kojin_bango_change",
    "juminhyo_code_change",
    "former_surname_alias",
];

pub fn reason_code(reason: impl AsRef<[u8]>) -> u8 {
    let reason = reason.as_ref();
    REASONS.iter().position(|r| r.as_bytes() == reason).map_or(0, |i| i as u8 + 1)
}

/// Redirects followed at most this many times (a chain of code changes); a longer
/// chain or a cycle answers unknown rather than loop.
pub const MAX_REDIRECTS: usize = 8;

/// The four fields a confirmation needs, borrowed from the stored map as bytes (they
/// are compared, not shown, so nothing is validated as UTF-8).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatusView<'a> {
    pub status: &'a [u8],
    pub redirect_to: Option<&'a [u8]>,
    pub reason: &'a [u8],
    pub changed_on: &'a [u8],
}

/// Read the four fields of a stored record in one walk over its MessagePack map,
/// skipping the others without decoding them: a batch of a million codes spends most
/// of its time here, and a full serde decode of 17 fields costs several times more.
pub fn status_view(bytes: &[u8]) -> crate::Result<StatusView<'_>> {
    let bad = |what: &str| crate::CoreError::Malformed(format!("record: {what}"));
    let mut r = MsgReader::new(bytes);
    let entries = r.map_len().ok_or_else(|| bad("not a map"))?;
    let mut v = StatusView::default();
    let mut seen = 0u8;
    for _ in 0..entries {
        // Bytes throughout: validating every key and value as UTF-8 would cost more
        // than the rest of the walk.
        let key = r.raw_str().ok_or_else(|| bad("key is not a string"))?;
        let slot = match key {
            b"status" => 1,
            b"redirect_to" => 2,
            b"reason" => 4,
            b"changed_on" => 8,
            _ => 0,
        };
        match slot {
            0 => r.skip().ok_or_else(|| bad("unexpected value"))?,
            2 => v.redirect_to = r.optional_str().ok_or_else(|| bad("redirect_to"))?,
            _ => {
                let s = r.raw_str().ok_or_else(|| bad(&String::from_utf8_lossy(key)))?;
                match slot {
                    1 => v.status = s,
                    4 => v.reason = s,
                    _ => v.changed_on = s,
                }
            }
        }
        seen |= slot;
        if seen == 15 {
            return Ok(v);
        }
    }
    Err(bad("missing status, redirect_to, reason or changed_on"))
}

/// The status byte of a record (`record::ACTIVE` and `record::REMOVED` as bytes).
pub fn classify(v: &StatusView<'_>) -> u8 {
    match v.status {
        b"active" => CURRENT,
        b"removed" if matches!(v.reason, b"move_out" | b"move_out_abroad") => MOVED_OUT,
        b"removed" => REMOVED,
        _ => UNKNOWN,
    }
}

/// "YYYY-MM-DD" as the number YYYYMMDD (0 when it is not such a date).
pub fn date_number(s: impl AsRef<[u8]>) -> u32 {
    let b = s.as_ref();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return 0;
    }
    let mut n = 0u32;
    for (i, c) in b.iter().enumerate() {
        if i == 4 || i == 7 {
            continue;
        }
        if !c.is_ascii_digit() {
            return 0;
        }
        n = n * 10 + u32::from(c - b'0');
    }
    n
}

/// The answer to a batch confirmation, as parallel arrays in request order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Confirmation {
    pub status: Vec<u8>,
    pub reason: Vec<u8>,
    pub changed_on: Vec<u32>,
    /// (request index, code the record lives under now) for codes that were changed.
    pub redirected: Vec<(u32, String)>,
    /// Records whose information the answer gave (sorted, unique, 11 bytes each).
    pub touched: Vec<u8>,
}

// ---- purpose-bound queries and the audit trail (query.rs, audit.rs) -------------------
//
// Every query reads its answer in a read transaction, then appends its audit entry
// through the group commit (audit_commit.rs) and returns only once that entry is
// durable: the answer exists only if its entry was committed (DESIGN.md §6), and
// concurrent queries share one durable commit instead of paying one each.
// Policy (who may use which task, which fields) is the caller's: these methods log the
// requester and task they are given.

/// Who asks, for which task, when (µs): what every audited query logs. `detail` is
/// the caller's context (e.g. an RPC correlation id); the outcome is added to it.
#[derive(Debug, Clone, Default)]
pub struct Access {
    pub time: u64,
    pub requester: String,
    pub task: String,
    pub detail: String,
}

impl Access {
    pub(crate) fn event(&self, kind: &str, items: u64, outcome: String) -> audit::Event {
        let detail = if self.detail.is_empty() { outcome } else { format!("{}; {outcome}", self.detail) };
        audit::Event {
            time: self.time,
            requester: self.requester.clone(),
            task: self.task.clone(),
            kind: kind.into(),
            allowed: true,
            reason: String::new(),
            items,
            detail,
        }
    }
}

/// The answer to a lookup: the record (after following code changes) and, when the
/// code asked for was changed, that code.
#[derive(Debug, Clone)]
pub struct Lookup {
    pub record: Option<Record>,
    pub redirected_from: Option<String>,
    pub audit_id: u64,
}

/// The answer to a four-item search: the best `limit` of `total` candidates.
#[derive(Debug, Clone)]
pub struct Search {
    pub candidates: Vec<Candidate>,
    pub total: usize,
    pub audit_id: u64,
}

/// A batch confirmation asking for at least 1/DENSE_SHARE of the records scans them.
const DENSE_SHARE: u64 = 8;

pub(crate) fn code_array(code: &[u8]) -> Option<[u8; audit::CODE_LEN]> {
    code.try_into().ok()
}

fn code_digits(mut num: u64) -> [u8; audit::CODE_LEN] {
    let mut out = [b'0'; audit::CODE_LEN];
    for d in out.iter_mut().rev() {
        *d = b'0' + (num % 10) as u8;
        num /= 10;
    }
    out
}

const DATE_MASK: u32 = (1 << 25) - 1;

/// status (2 bits) ‖ reason (4 bits) ‖ YYYYMMDD (25 bits, to year 3355).
fn pack_answer(status: u8, reason: u8, date: u32) -> u32 {
    (u32::from(status) << 29) | (u32::from(reason & 0xf) << 25) | (date & DATE_MASK)
}

fn unpack_status(answer: u32) -> u8 {
    (answer >> 29) as u8
}

fn keyed<'a>(item: Option<(&'a [u8], &'a [u8])>) -> Option<(Option<u64>, &'a [u8])> {
    item.map(|(k, v)| (code_number(k), v))
}

/// 11 ASCII digits as a number (ordered like the strings), or None.
pub(crate) fn code_number(code: &[u8]) -> Option<u64> {
    if code.len() != audit::CODE_LEN || !code.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(code.iter().fold(0u64, |n, c| n * 10 + u64::from(c - b'0')))
}

impl Store {
    /// The record under `code`, following code changes (redirects).
    fn resolve(&self, txn: &RoTxn, code: &str) -> Result<(Option<Record>, bool)> {
        let mut record = self.record(txn, code)?;
        let mut redirected = false;
        for _ in 0..MAX_REDIRECTS {
            match record.as_ref().filter(|r| r.status == record::REDIRECT).and_then(|r| r.redirect_to.clone()) {
                Some(next) => {
                    record = self.record(txn, &next)?;
                    redirected = true;
                }
                None => return Ok((record, redirected)),
            }
        }
        Ok((None, redirected))
    }

    fn answer_lookup(&self, kind: &str, asked: &str, code: Option<String>, access: &Access) -> Result<Lookup> {
        let txn = self.env.read_txn()?;
        let (record, redirected) = match &code {
            Some(c) => self.resolve(&txn, c)?,
            None => (None, false),
        };
        let outcome = match (&record, redirected) {
            (None, _) => "not found".to_string(),
            (Some(r), true) => format!("found (code changed to {})", r.juminhyo_code),
            (Some(_), false) => "found".to_string(),
        };
        let touched = record.iter().filter_map(|r| code_array(r.juminhyo_code.as_bytes()));
        let codes = audit::pack_codes(touched);
        drop(txn);
        let audit_id = self.audit_commit(access.event(kind, 1, outcome), codes)?;
        let redirected_from = (redirected && record.is_some()).then(|| asked.to_string());
        Ok(Lookup { record, redirected_from, audit_id })
    }

    /// Look up one record by 住民票コード, audited.
    pub fn lookup(&self, code: &str, access: &Access) -> Result<Lookup> {
        self.answer_lookup("code", code, Some(code.to_string()), access)
    }

    /// Look up one record by 個人番号, audited.
    pub fn lookup_number(&self, kojin_bango: &str, access: &Access) -> Result<Lookup> {
        let record = match self.by_number_raw(kojin_bango)? {
            Some(raw) => Some(wire::decode::<Record>(&raw, "record")?),
            None => None,
        };
        let outcome = if record.is_some() { "found" } else { "not found" }.to_string();
        let touched = record.iter().filter_map(|r| code_array(r.juminhyo_code.as_bytes()));
        let audit_id = self.audit_commit(access.event("kojin_bango", 1, outcome), audit::pack_codes(touched))?;
        Ok(Lookup { record, redirected_from: None, audit_id })
    }

    /// The four-item search: records whose reading or name (or alias), birth date and
    /// sex match, active and removed, ranked by how well the address matches; audited.
    pub fn search(&self, q: &SearchQuery, access: &Access) -> Result<Search> {
        if text::normalize_reading(&q.name).is_empty() {
            return Err(CoreError::Malformed("search: name is empty".into()));
        }
        if !(q.sex == 1 || q.sex == 2) {
            return Err(CoreError::Malformed(format!("search: sex must be 1 or 2, not {}", q.sex)));
        }
        let txn = self.env.read_txn()?;
        let key = index_key(&q.name, &q.birth_date, q.sex);
        let mut codes: Vec<(String, Matched)> = Vec::new();
        for (db, matched) in [(self.dbs.by_name, Matched::Reading), (self.dbs.by_name_text, Matched::Name)] {
            if let Some(iter) = db.get_duplicates(&txn, &key)? {
                for item in iter {
                    codes.push((String::from_utf8_lossy(item?.1).into_owned(), matched));
                }
            }
        }
        codes.sort_by(|a, b| a.0.cmp(&b.0));
        // A hashed key stands for its text: keep only records whose text is the query's.
        let hashed = is_hashed_key(&key);
        let wanted = text::normalize_reading(&q.name);
        let same_text = |r: &Record, matched: Matched| {
            let is = |t: &str| text::normalize_reading(t) == wanted;
            r.birth_date == q.birth_date
                && r.sex == q.sex
                && match matched {
                    Matched::Reading => is(&r.name_kana),
                    _ => is(&r.name) || r.alias.as_deref().is_some_and(is),
                }
        };
        let mut found: Vec<(Record, Matched)> = Vec::new();
        for (code, matched) in codes {
            match found.last_mut() {
                Some((r, m)) if r.juminhyo_code == code => {
                    if *m != matched {
                        *m = Matched::Both;
                    }
                }
                _ => {
                    if let Some(r) = self.record(&txn, &code)? {
                        if !hashed || same_text(&r, matched) {
                            found.push((r, matched));
                        }
                    }
                }
            }
        }
        drop(txn);
        let total = found.len();
        let mut candidates = rank(q, found);
        candidates.truncate(q.limit);
        let touched = candidates.iter().filter_map(|c| code_array(c.record.juminhyo_code.as_bytes()));
        let outcome = format!("{} of {total} candidates", candidates.len());
        let audit_id = self.audit_commit(access.event("search", 1, outcome), audit::pack_codes(touched))?;
        Ok(Search { candidates, total, audit_id })
    }

    /// Batch confirmation (一括提供): the status of every code in `codes` (11-byte
    /// codes, concatenated), in one pass in code order; audited as one entry touching
    /// every record found. Codes that are not 11 digits are unknown.
    pub fn confirm(&self, codes: &[u8], access: &Access) -> Result<(Confirmation, u64)> {
        if codes.len() % audit::CODE_LEN != 0 {
            return Err(CoreError::Malformed(format!(
                "confirm: {} bytes is not a whole number of {}-byte codes",
                codes.len(),
                audit::CODE_LEN
            )));
        }
        let n = codes.len() / audit::CODE_LEN;
        let code_at = |i: usize| &codes[i * audit::CODE_LEN..(i + 1) * audit::CODE_LEN];
        // Sorted by code, the lookups walk the B-tree in order (its pages stay hot) and
        // the touched codes come out sorted for the audit entry.
        let mut order: Vec<(u64, u32)> =
            (0..n).filter_map(|i| code_number(code_at(i)).map(|num| (num, i as u32))).collect();
        order.sort_unstable();
        // One u32 a request (status, reason, date packed; see `pack_answer`): the
        // requests are visited in code order, so each answer lands at a random index,
        // and one random write a code costs a third of three.
        let mut answers: Vec<u32> = vec![0; n];
        let mut redirected: std::collections::HashMap<u32, String> = Default::default();
        let mut touched: Vec<[u8; audit::CODE_LEN]> = Vec::with_capacity(order.len());
        // Codes that are not 11 digits are unknown without a look.
        let mut counts = [(n - order.len()) as u64, 0, 0, 0];
        // A read transaction: apply goes on meanwhile; the entry is logged after the pass.
        let txn = self.env.read_txn()?;
        let mut previous: Option<(u64, usize)> = None;
        // A batch asking for a good share of the store reads it in one cursor pass over
        // the requested range (tens of ns a record) instead of one B-tree descent a
        // code (hundreds of ns once the tree outgrows the caches).
        let dense = order.len() as u64 * DENSE_SHARE >= self.dbs.records.len(&txn)?;
        let mut scan = match (dense, order.first(), order.last()) {
            (true, Some(first), Some(last)) => {
                let (lo, hi) = (code_at(first.1 as usize), code_at(last.1 as usize));
                Some(self.dbs.records.range(&txn, &(Bound::Included(lo), Bound::Included(hi)))?)
            }
            _ => None,
        };
        // The cursor's record as (its code as a number, bytes): numbers compare in one
        // instruction where 11-byte slices call memcmp; a key that is not 11 digits
        // (none should be) is None, passed over and never equal.
        let mut at = match scan.as_mut() {
            Some(it) => keyed(it.next().transpose()?),
            None => None,
        };
        for (num, i) in order {
            let i = i as usize;
            if let Some((_, j)) = previous.filter(|(p, _)| *p == num) {
                // The same code asked twice: same answer.
                answers[i] = answers[j];
                if let Some(new) = redirected.get(&(j as u32)).cloned() {
                    redirected.insert(i as u32, new);
                }
                counts[unpack_status(answers[i]) as usize] += 1;
                continue;
            }
            previous = Some((num, i));
            let found = match scan.as_mut() {
                Some(it) => {
                    while at.is_some_and(|(k, _)| k.is_none_or(|k| k < num)) {
                        at = keyed(it.next().transpose()?);
                    }
                    at.filter(|(k, _)| *k == Some(num)).map(|(_, v)| v)
                }
                None => self.dbs.records.get(&txn, code_at(i))?,
            };
            let Some(mut bytes) = found else {
                counts[0] += 1;
                continue;
            };
            let mut view = status_view(bytes)?;
            let mut final_code: Option<&[u8]> = None;
            let mut hops = 0;
            while view.status == record::REDIRECT.as_bytes() {
                let next = view.redirect_to.unwrap_or_default();
                hops += 1;
                final_code = Some(next);
                match self.dbs.records.get(&txn, next)? {
                    Some(b) if hops <= MAX_REDIRECTS => {
                        bytes = b;
                        view = status_view(bytes)?;
                    }
                    _ => {
                        view = StatusView::default();
                        break;
                    }
                }
            }
            let status = classify(&view);
            counts[status as usize] += 1;
            if let Some(fc) = final_code {
                redirected.insert(i as u32, String::from_utf8_lossy(fc).into_owned());
            }
            if status != UNKNOWN {
                answers[i] = pack_answer(status, reason_code(view.reason), date_number(view.changed_on));
                // From the number, not from `codes`: reading `codes[i]` here would miss
                // the cache every time.
                touched.push(final_code.and_then(code_array).unwrap_or_else(|| code_digits(num)));
            }
        }
        drop(scan);
        drop(txn);
        let mut out = Confirmation {
            status: answers.iter().map(|a| unpack_status(*a)).collect(),
            reason: answers.iter().map(|a| ((a >> 25) & 0xf) as u8).collect(),
            changed_on: answers.iter().map(|a| a & DATE_MASK).collect(),
            redirected: redirected.into_iter().collect(),
            touched: audit::pack_codes(touched),
        };
        out.redirected.sort_unstable();
        let outcome = format!(
            "current {}, moved out {}, removed {}, unknown {}, redirected {}",
            counts[1],
            counts[2],
            counts[3],
            counts[0],
            out.redirected.len()
        );
        let event = access.event("confirm", n as u64, outcome);
        let audit_id = self.audit_commit(event, out.touched.clone())?;
        Ok((out, audit_id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_fold_width_kana_and_spaces() {
        assert_eq!(index_key("やまぐち　たろう", "1980-04-01", 1), index_key("ﾔﾏｸﾞﾁ ﾀﾛｳ", "1980-04-01", 1));
        assert_eq!(index_key("山口 太郎", "1980-04-01", 1), index_key("山口太郎", "1980-04-01", 1));
        assert_ne!(index_key("山口太郎", "1980-04-01", 1), index_key("山口太郎", "1980-04-01", 2));
        // U+FA10 (a CJK compatibility ideograph) folds to 塚 under NFKC.
        assert_eq!(index_key("\u{FA10}本", "1980-04-01", 1), index_key("塚本", "1980-04-01", 1));
    }

    #[test]
    fn address_similarity_orders_sensibly() {
        let q = normalize_address("山口市亀山町１－２");
        let exact = normalize_address("山口県山口市亀山町1-2");
        let near = normalize_address("山口県山口市亀山町3-4");
        let far = normalize_address("東京都千代田区霞が関1-2");
        let (e, n, f) = (address_score(&q, &exact), address_score(&q, &near), address_score(&q, &far));
        assert!(e > n && n > f, "{e} {n} {f}");
        assert_eq!(address_score(&exact, &exact), 1.0);
        assert_eq!(address_score(&[], &exact), 0.0);
    }

    #[test]
    fn status_view_reads_a_stored_record() {
        let r = Record {
            juminhyo_code: "00000000001".into(),
            status: "removed".into(),
            redirect_to: None,
            kojin_bango: "123456789018".into(),
            name: "山口 太郎".into(),
            name_kana: "ヤマグチ タロウ".into(),
            former_surname: Some("x".repeat(40)),
            alias: None,
            birth_date: "1980-04-01".into(),
            sex: 1,
            address: "山".repeat(200),
            municipality: "352039".into(),
            reason: "death".into(),
            changed_on: "2020-01-02".into(),
            recorded_at: u64::MAX,
            origin: "352039".into(),
            seq: 300,
        };
        let bytes = crate::wire::encode(&r).unwrap();
        let v = status_view(&bytes).unwrap();
        assert_eq!(
            v,
            StatusView { status: b"removed", redirect_to: None, reason: b"death", changed_on: b"2020-01-02" }
        );
        assert_eq!(classify(&v), REMOVED);
        let moved =
            crate::wire::encode(&Record { status: "redirect".into(), redirect_to: Some("00000000002".into()), ..r })
                .unwrap();
        assert_eq!(status_view(&moved).unwrap().redirect_to, Some(&b"00000000002"[..]));
        for cut in [0, 1, 10, bytes.len() / 2] {
            assert!(status_view(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn dates_and_reasons() {
        assert_eq!(date_number("2024-04-01"), 20240401);
        assert_eq!(date_number("2024/04/01"), 0);
        assert_eq!(reason_code("move_in"), 1);
        assert_eq!(reason_code("former_surname_alias"), 14);
        assert_eq!(reason_code("nonsense"), 0);
        for r in REASONS {
            assert!(record::ReasonFamily::of(r).is_some(), "{r}");
        }
    }
}
