//! Checks and normalisation of Japanese text in records.

use unicode_general_category::{get_general_category, GeneralCategory};
use unicode_normalization::{is_nfc, UnicodeNormalization};

pub const MAX_TEXT_CHARS: usize = 256;

/// Why a text field is not acceptable, or None. Garbled input from a faulty
/// communication server (the 2013 incident) shows up as replacement characters,
/// control characters or text that is not in NFC.
pub fn text_problem(s: &str, required: bool) -> Option<&'static str> {
    if required && s.trim().is_empty() {
        return Some("empty");
    }
    if s.chars().count() > MAX_TEXT_CHARS {
        return Some("too long");
    }
    if s.chars().any(|c| c == '\u{FFFD}') {
        return Some("contains U+FFFD (garbled text)");
    }
    // Cc controls, and the line and paragraph separators (Zl, Zp): line breaks are
    // never part of a name or an address (the publisher's `codes.validate_update`
    // refuses the same set).
    if s.chars().any(|c| c.is_control() || c == '\u{2028}' || c == '\u{2029}') {
        return Some("contains control characters");
    }
    // Format characters (Cf: U+202E right-to-left override, U+200B zero width space,
    // U+FEFF...) are invisible: a name holding one looks like another name and is
    // searched as a different one. No 住基ネット統一文字 is a format character, so a
    // name holding one is garbled.
    if s.chars().any(is_format_char) {
        return Some("contains an invisible format character (Unicode Cf)");
    }
    if !is_nfc(s) {
        return Some("not in Unicode NFC");
    }
    None
}

pub fn is_format_char(c: char) -> bool {
    get_general_category(c) == GeneralCategory::Format
}

/// How many characters of a value a reason quotes: a halt reason goes to the log and
/// the quarantine entry, and a 100 kB field must not go with it.
pub const QUOTE_CHARS: usize = 80;

/// `s` quoted for a message (as `{:?}` would), cut after `QUOTE_CHARS` characters with
/// the full size named: `"山口…"…(1234 bytes)`.
pub fn quoted(s: &str) -> String {
    match s.char_indices().nth(QUOTE_CHARS) {
        None => format!("{s:?}"),
        Some((cut, _)) => format!("{:?}…({} bytes)", &s[..cut], s.len()),
    }
}

/// `s` itself when short, else cut as `quoted` cuts (for error texts, unquoted).
pub fn capped(s: &str) -> String {
    match s.char_indices().nth(4 * QUOTE_CHARS) {
        None => s.to_string(),
        Some((cut, _)) => format!("{}…({} bytes)", &s[..cut], s.len()),
    }
}

/// Readings (振り仮名) are katakana, with the long-vowel mark, middle dot and spaces.
pub fn is_katakana_reading(s: &str) -> bool {
    s.chars().all(|c| matches!(c, '\u{30A1}'..='\u{30FA}' | 'ー' | '・' | ' ' | '\u{3000}'))
}

/// Search key of a name or reading: NFKC (width folding, 旧字 compatibility forms),
/// hiragana folded to katakana, spaces removed.
pub fn normalize_reading(s: &str) -> String {
    s.nfkc()
        .filter(|c| !c.is_whitespace())
        .map(|c| match c {
            '\u{3041}'..='\u{3096}' => char::from_u32(c as u32 + 0x60).unwrap_or(c),
            _ => c,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_width_kana_and_spaces() {
        assert_eq!(normalize_reading("ﾔﾏｸﾞﾁ ﾀﾛｳ"), "ヤマグチタロウ");
        assert_eq!(normalize_reading("やまぐち　たろう"), "ヤマグチタロウ");
        assert_eq!(normalize_reading("ヤマグチ タロウ"), "ヤマグチタロウ");
    }

    #[test]
    fn detects_garbled_text() {
        assert_eq!(text_problem("山口\u{FFFD}", true), Some("contains U+FFFD (garbled text)"));
        assert_eq!(text_problem("山口\u{7}", true), Some("contains control characters"));
        assert_eq!(text_problem("山口\u{2028}市", true), Some("contains control characters"));
        assert_eq!(text_problem("", true), Some("empty"));
        assert_eq!(text_problem("", false), None);
        assert_eq!(text_problem("カ\u{3099}", true), Some("not in Unicode NFC"));
        assert!(is_katakana_reading("ヤマグチ タロウ"));
        assert!(!is_katakana_reading("やまぐち"));
        for c in ['\u{202E}', '\u{200B}', '\u{FEFF}', '\u{2066}', '\u{00AD}', '\u{E0001}'] {
            assert!(text_problem(&format!("山口{c}太郎"), true).is_some(), "{c:?}");
        }
    }

    #[test]
    fn quoting_caps_long_values() {
        assert_eq!(quoted("山口"), "\"山口\"");
        let long = "あ".repeat(100_000);
        let q = quoted(&long);
        assert!(q.chars().count() < QUOTE_CHARS + 30, "{q}");
        assert!(q.ends_with("…(300000 bytes)"), "{q}");
        assert!(capped(&long).len() < 2000);
    }
}
