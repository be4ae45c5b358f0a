//! Content checks of a validly signed bundle. A failure here means the origin itself
//! sent something wrong: the store halts that origin (DESIGN.md §3).

use crate::codes;
use crate::record::ReasonFamily;
use crate::text;
use crate::wire::{BundleBody, Update};

/// The receiving tier's clock and how far a sender's clock may run ahead of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeBounds {
    /// Now at the receiving tier, µs since the epoch.
    pub now: u64,
    /// The largest tolerated clock difference, µs.
    pub skew: u64,
}

/// Ten minutes: clocks of municipal systems are NTP-synchronised; a bundle from
/// further in the future than this is wrong, not early.
pub const DEFAULT_SKEW_US: u64 = 10 * 60 * 1_000_000;

const DAY_US: u64 = 86_400 * 1_000_000;
const JST_OFFSET_US: u64 = 9 * 3_600 * 1_000_000;

impl TimeBounds {
    /// The latest acceptable µs time.
    pub fn latest(&self) -> u64 {
        self.now.saturating_add(self.skew)
    }

    /// The latest acceptable date: today in Japan (at `now` + skew) plus one day, as
    /// YYYY-MM-DD (dates compare as strings).
    pub fn latest_date(&self) -> String {
        let days = self.latest().saturating_add(JST_OFFSET_US) / DAY_US + 1;
        // past year 9999 a date would not compare as a string; every date is earlier
        if days >= 2_932_897 {
            return "9999-12-31".into();
        }
        civil_date(days as i64)
    }
}

/// YYYY-MM-DD of a day number (days since 1970-01-01), proleptic Gregorian
/// (H. Hinnant's `civil_from_days`).
pub fn civil_date(days: i64) -> String {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

fn is_iso_date(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return false;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> { s.get(r)?.parse().ok() };
    let (Some(y), Some(m), Some(d)) = (num(0..4), num(5..7), num(8..10)) else {
        return false;
    };
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    (1..=days).contains(&d) && y >= 1800
}

/// The first problem found in a body, naming the update, field and value.
pub fn body_problem(body: &BundleBody, bounds: &TimeBounds) -> Option<String> {
    if !codes::is_valid_local_government_code(&body.origin) {
        return Some(format!("origin: invalid local government code {:?}", body.origin));
    }
    if body.first_seq == 0 || body.last_seq < body.first_seq {
        return Some(format!("sequence range {}..{} is invalid", body.first_seq, body.last_seq));
    }
    if body.created_at > bounds.latest() {
        return Some(format!(
            "created_at {} is later than this tier's clock {} allows (skew {} µs)",
            body.created_at, bounds.now, bounds.skew
        ));
    }
    let expected = body.last_seq - body.first_seq + 1;
    if body.updates.len() as u64 != expected {
        return Some(format!(
            "range {}..{} holds {} updates, not {expected}",
            body.first_seq,
            body.last_seq,
            body.updates.len()
        ));
    }
    for (i, update) in body.updates.iter().enumerate() {
        let seq = body.first_seq + i as u64;
        if update.seq != seq {
            return Some(format!("update {i}: seq {} where {seq} was expected", update.seq));
        }
        if let Some(p) = update_problem(update, &body.origin, bounds) {
            return Some(format!("update seq {seq}: {p}"));
        }
        // An update is recorded before the bundle holding it is made.
        if update.recorded_at > body.created_at.saturating_add(bounds.skew) {
            return Some(format!(
                "update seq {seq}: recorded_at {} is after the bundle's created_at {}",
                update.recorded_at, body.created_at
            ));
        }
    }
    None
}

/// The first problem of one update sent by `origin`, judged at the receiving tier's
/// clock (`bounds`): the rules every tier applies and the publisher checks before it
/// signs (`jukisync._core.validate_update`).
pub fn update_problem(u: &Update, origin: &str, bounds: &TimeBounds) -> Option<String> {
    let q = text::quoted;
    if !codes::is_valid_juminhyo_code_format(&u.juminhyo_code) {
        return Some(format!("juminhyo_code: invalid {}", q(&u.juminhyo_code)));
    }
    if ReasonFamily::of(&u.reason).is_none() {
        return Some(format!("reason: unknown {}", q(&u.reason)));
    }
    let is_code_change = u.reason == "juminhyo_code_change";
    match (&u.previous_juminhyo_code, is_code_change) {
        (None, true) => return Some("previous_juminhyo_code: missing for a code change".into()),
        (Some(p), false) => return Some(format!("previous_juminhyo_code: {} set without a code change", q(p))),
        (Some(p), true) if !codes::is_valid_juminhyo_code_format(p) || *p == u.juminhyo_code => {
            return Some(format!("previous_juminhyo_code: invalid {}", q(p)));
        }
        _ => {}
    }
    if !codes::is_valid_kojin_bango(&u.kojin_bango) {
        return Some(format!("kojin_bango: invalid check digit or format {}", q(&u.kojin_bango)));
    }
    if u.municipality != origin {
        return Some(format!("municipality: {} is not the origin {}", q(&u.municipality), q(origin)));
    }
    if !(u.sex == 1 || u.sex == 2) {
        return Some(format!("sex: {} is neither 1 nor 2", u.sex));
    }
    // An absent 旧氏 or 通称 is None; a present one must not be blank (it would show
    // as a recorded-but-empty item at every tier), like the required texts.
    for (field, value) in [
        ("name", Some(&u.name)),
        ("name_kana", Some(&u.name_kana)),
        ("address", Some(&u.address)),
        ("former_surname", u.former_surname.as_ref()),
        ("alias", u.alias.as_ref()),
    ] {
        if let Some(v) = value {
            if let Some(p) = text::text_problem(v, true) {
                return Some(format!("{field}: {p} in {}", q(v)));
            }
        }
    }
    if !text::is_katakana_reading(&u.name_kana) {
        return Some(format!("name_kana: not katakana {}", q(&u.name_kana)));
    }
    if !is_iso_date(&u.birth_date) {
        return Some(format!("birth_date: invalid {}", q(&u.birth_date)));
    }
    if !is_iso_date(&u.changed_on) {
        return Some(format!("changed_on: invalid {}", q(&u.changed_on)));
    }
    if u.birth_date > u.changed_on {
        return Some(format!("birth_date {} is after changed_on {}", q(&u.birth_date), q(&u.changed_on)));
    }
    // A change dated in the future would outrank every genuine correction for ever
    // (the conflict rule orders by changed_on first): it is wrong, not early.
    let latest_date = bounds.latest_date();
    if u.changed_on > latest_date {
        return Some(format!("changed_on {} is after {latest_date} (tomorrow in Japan)", u.changed_on));
    }
    if u.recorded_at > bounds.latest() {
        return Some(format!(
            "recorded_at {} is later than this tier's clock {} allows (skew {} µs)",
            u.recorded_at, bounds.now, bounds.skew
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANY: TimeBounds = TimeBounds { now: u64::MAX, skew: 0 };

    fn update() -> Update {
        Update {
            seq: 1,
            juminhyo_code: "35203900017".into(),
            previous_juminhyo_code: None,
            kojin_bango: "123456789018".into(),
            name: "山口 太郎".into(),
            name_kana: "ヤマグチ タロウ".into(),
            former_surname: None,
            alias: None,
            birth_date: "1980-04-01".into(),
            sex: 1,
            address: "山口県山口市亀山町1番1号".into(),
            municipality: "352039".into(),
            reason: "move_in".into(),
            changed_on: "2026-04-01".into(),
            recorded_at: 0,
        }
    }

    #[test]
    fn optional_texts_are_absent_or_not_blank() {
        assert_eq!(update_problem(&update(), "352039", &ANY), None);
        let recorded = Update { alias: Some("須美寿 譲".into()), ..update() };
        assert_eq!(update_problem(&recorded, "352039", &ANY), None);
        for blank in ["", " ", "\u{3000}"] {
            let u = Update { former_surname: Some(blank.into()), ..update() };
            let problem = update_problem(&u, "352039", &ANY).unwrap_or_default();
            assert!(problem.starts_with("former_surname: empty"), "{problem}");
        }
        let u = Update { address: "山口市\u{2029}亀山町".into(), ..update() };
        assert!(update_problem(&u, "352039", &ANY).is_some_and(|p| p.starts_with("address:")));
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_date(0), "1970-01-01");
        assert_eq!(civil_date(19_782), "2024-02-29");
        assert_eq!(civil_date(-1), "1969-12-31");
        // 2026-03-31T15:00Z is 2026-04-01 00:00 in Japan: the latest date is 04-02
        let b = TimeBounds { now: 1_774_969_200_000_000, skew: 0 };
        assert_eq!(b.latest_date(), "2026-04-02");
        assert_eq!(TimeBounds { now: 1_774_969_199_999_999, skew: 0 }.latest_date(), "2026-04-01");
    }

    #[test]
    fn dates() {
        assert!(is_iso_date("2024-02-29"));
        assert!(!is_iso_date("2023-02-29"));
        assert!(!is_iso_date("2023-13-01"));
        assert!(!is_iso_date("2023-1-01"));
        assert!(!is_iso_date("１９９０-01-01"));
    }
}
