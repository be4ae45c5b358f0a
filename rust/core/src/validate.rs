//! Content checks of a validly signed bundle. A failure here means the origin itself
//! sent something wrong: the store halts that origin (DESIGN.md §3).

use crate::codes;
use crate::record::ReasonFamily;
use crate::text;
use crate::wire::{BundleBody, Update};

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
pub fn body_problem(body: &BundleBody) -> Option<String> {
    if !codes::is_valid_local_government_code(&body.origin) {
        return Some(format!("origin: invalid local government code {:?}", body.origin));
    }
    if body.first_seq == 0 || body.last_seq < body.first_seq {
        return Some(format!("sequence range {}..{} is invalid", body.first_seq, body.last_seq));
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
        if let Some(p) = update_problem(update, &body.origin) {
            return Some(format!("update seq {seq}: {p}"));
        }
    }
    None
}

fn update_problem(u: &Update, origin: &str) -> Option<String> {
    if !codes::is_valid_juminhyo_code_format(&u.juminhyo_code) {
        return Some(format!("juminhyo_code: invalid {:?}", u.juminhyo_code));
    }
    if ReasonFamily::of(&u.reason).is_none() {
        return Some(format!("reason: unknown {:?}", u.reason));
    }
    let is_code_change = u.reason == "juminhyo_code_change";
    match (&u.previous_juminhyo_code, is_code_change) {
        (None, true) => return Some("previous_juminhyo_code: missing for a code change".into()),
        (Some(p), false) => return Some(format!("previous_juminhyo_code: {p:?} set without a code change")),
        (Some(p), true) if !codes::is_valid_juminhyo_code_format(p) || *p == u.juminhyo_code => {
            return Some(format!("previous_juminhyo_code: invalid {p:?}"));
        }
        _ => {}
    }
    if !codes::is_valid_kojin_bango(&u.kojin_bango) {
        return Some(format!("kojin_bango: invalid check digit or format {:?}", u.kojin_bango));
    }
    if u.municipality != origin {
        return Some(format!("municipality: {:?} is not the origin {origin:?}", u.municipality));
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
                return Some(format!("{field}: {p} in {v:?}"));
            }
        }
    }
    if !text::is_katakana_reading(&u.name_kana) {
        return Some(format!("name_kana: not katakana {:?}", u.name_kana));
    }
    if !is_iso_date(&u.birth_date) {
        return Some(format!("birth_date: invalid {:?}", u.birth_date));
    }
    if !is_iso_date(&u.changed_on) {
        return Some(format!("changed_on: invalid {:?}", u.changed_on));
    }
    if u.birth_date > u.changed_on {
        return Some(format!("birth_date {:?} is after changed_on {:?}", u.birth_date, u.changed_on));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(update_problem(&update(), "352039"), None);
        let recorded = Update { alias: Some("須美寿 譲".into()), ..update() };
        assert_eq!(update_problem(&recorded, "352039"), None);
        for blank in ["", " ", "\u{3000}"] {
            let u = Update { former_surname: Some(blank.into()), ..update() };
            let problem = update_problem(&u, "352039").unwrap_or_default();
            assert!(problem.starts_with("former_surname: empty"), "{problem}");
        }
        let u = Update { address: "山口市\u{2029}亀山町".into(), ..update() };
        assert!(update_problem(&u, "352039").is_some_and(|p| p.starts_with("address:")));
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
