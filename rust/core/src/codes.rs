//! Check digits of domain.md: 個人番号 (My Number) and local government codes.
//! The 住民票コード check digit is not public: only its format is checked.

fn digits(s: &str, len: usize) -> Option<Vec<u32>> {
    if s.len() != len || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(s.bytes().map(|b| u32::from(b - b'0')).collect())
}

/// 総務省令第85号 第5条: P_n is the n-th digit from the right of the first 11,
/// Q_n = n+1 (n ≤ 6) or n−5 (n ≥ 7); r = Σ P_n·Q_n mod 11; check = 0 if r ≤ 1 else 11 − r.
pub fn kojin_bango_check_digit(first11: &[u32]) -> u32 {
    let sum: u32 = (1..=11u32)
        .map(|n| {
            let p = first11[11 - n as usize];
            let q = if n <= 6 { n + 1 } else { n - 5 };
            p * q
        })
        .sum();
    let r = sum % 11;
    if r <= 1 {
        0
    } else {
        11 - r
    }
}

pub fn is_valid_kojin_bango(s: &str) -> bool {
    digits(s, 12).is_some_and(|d| kojin_bango_check_digit(&d[..11]) == d[11])
}

/// JIS X 0402: weights 6,5,4,3,2 on the first five digits; check = (11 − S mod 11) mod 10.
pub fn local_government_check_digit(first5: &[u32]) -> u32 {
    let s: u32 = first5.iter().zip([6, 5, 4, 3, 2]).map(|(d, w)| d * w).sum();
    (11 - s % 11) % 10
}

/// 6 ASCII digits, a prefecture 01-47 and a correct check digit (codes route messages
/// by prefecture, and e.g. 000001 passes the check digit alone).
pub fn is_valid_local_government_code(s: &str) -> bool {
    digits(s, 6)
        .is_some_and(|d| (1..=47).contains(&(d[0] * 10 + d[1])) && local_government_check_digit(&d[..5]) == d[5])
}

/// Format of a 住民票コード: 11 ASCII digits (10 random + 1 check digit whose formula
/// is not published; see `Store` for where a real check would plug in).
pub fn is_valid_juminhyo_code_format(s: &str) -> bool {
    digits(s, 11).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kojin_bango_examples_from_domain() {
        for ok in ["123456789018", "983205673214", "111111111118", "000111111111"] {
            assert!(is_valid_kojin_bango(ok), "{ok}");
        }
        for bad in ["983205673210", "12345678901", "12345678901a", "1234567890180"] {
            assert!(!is_valid_kojin_bango(bad), "{bad}");
        }
    }

    #[test]
    fn local_government_examples_from_domain() {
        for ok in ["350001", "352012", "352039", "355020", "010006", "130001", "131016"] {
            assert!(is_valid_local_government_code(ok), "{ok}");
        }
        assert!(!is_valid_local_government_code("352013"));
        assert!(!is_valid_local_government_code("35201"));
        assert!(!is_valid_local_government_code("000001"), "prefecture 00");
        assert!(!is_valid_local_government_code("480002"), "prefecture 48");
    }
}
