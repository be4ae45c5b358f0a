//! Purpose-bound queries (DESIGN.md §6): the pieces that do not touch LMDB — search
//! keys, address ranking and the batch confirmation's per-code status. The store runs
//! them inside the write transaction that also appends the audit entry.

use unicode_normalization::UnicodeNormalization;

use crate::msgpack::MsgReader;
use crate::record::{self, Record};
use crate::text;

/// Key of the search indexes: normalised text \0 birth date \0 sex digit. The reading
/// index (`by_name`) keys `name_kana`, the name index (`by_name_text`) keys `name` and
/// `alias`; both with `text::normalize_reading`, so one query string is looked up in
/// both whether it is kanji, katakana, hiragana or half-width.
pub fn index_key(text: &str, birth_date: &str, sex: u8) -> Vec<u8> {
    let mut k = text::normalize_reading(text).into_bytes();
    k.push(0);
    k.extend_from_slice(birth_date.as_bytes());
    k.push(0);
    k.push(b'0'.wrapping_add(sex));
    k
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
