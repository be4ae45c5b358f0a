//! Checks and normalisation of Japanese text in records.

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
    if !is_nfc(s) {
        return Some("not in Unicode NFC");
    }
    None
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
    }
}
