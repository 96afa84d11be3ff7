//! Numbers the gateway can pass on exactly, and the first one in a body it cannot.
//!
//! The gateway parses the caller's body and writes it again into the request envelope.
//! serde_json keeps integers within i64/u64 as they are, and every other number as an
//! f64, so `99999999999999999999` would reach the worker as `1e20` and a tiny amount as
//! `0`. A payment system must not change an amount on the way, so a body with a number an
//! f64 does not hold exactly (as a decimal value) is refused instead. Runtime-free.

/// The first number token in `json` (valid JSON text) that would change on the way.
pub fn first_inexact(json: &[u8]) -> Option<String> {
    let mut i = 0;
    let mut in_string = false;
    while i < json.len() {
        let byte = json[i];
        if in_string {
            match byte {
                b'\\' => i += 1,
                b'"' => in_string = false,
                _ => {}
            }
        } else if byte == b'"' {
            in_string = true;
        } else if byte == b'-' || byte.is_ascii_digit() {
            let len = json[i..]
                .iter()
                .position(|b| !matches!(b, b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9'))
                .unwrap_or(json.len() - i);
            let token = String::from_utf8_lossy(&json[i..i + len]);
            if !is_exact(&token) {
                return Some(token.into_owned());
            }
            i += len;
            continue;
        }
        i += 1;
    }
    None
}

/// Whether serde_json writes `token` back as the same decimal value.
fn is_exact(token: &str) -> bool {
    if !token.contains(['.', 'e', 'E'])
        && (token.parse::<i64>().is_ok() || token.parse::<u64>().is_ok())
    {
        return true;
    }
    match token.parse::<f64>() {
        Ok(float) if float.is_finite() => decimal(token) == decimal(&format!("{float:e}")),
        _ => false,
    }
}

/// A decimal number's value as (negative, significant digits, position of the point
/// relative to the first digit); zero has no digits and no sign. `None` if unreadable.
pub fn decimal(text: &str) -> Option<(bool, String, i64)> {
    let (negative, text) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (mantissa, exponent) = match text.split_once(['e', 'E']) {
        Some((m, e)) => (m, e.parse::<i64>().ok()?),
        None => (text, 0),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = format!("{whole}{fraction}");
    let leading = digits.len() - digits.trim_start_matches('0').len();
    let significant = digits.trim_matches('0');
    if significant.is_empty() {
        return Some((false, String::new(), 0));
    }
    let point = whole.len() as i64 - leading as i64 + exponent;
    Some((negative, significant.to_string(), point))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_an_f64_or_integer_holds_pass() {
        for ok in [
            br#"{"a":1}"#.as_slice(),
            br#"{"a":-9223372036854775808,"b":18446744073709551615}"#,
            br#"{"a":1.50,"b":0.1,"c":-2.5e-3,"d":1e20,"e":-0.0}"#,
            br#"{"s":"99999999999999999999 in a string","t":"\"1e999"}"#,
        ] {
            assert_eq!(first_inexact(ok), None, "{}", String::from_utf8_lossy(ok));
        }
    }

    #[test]
    fn numbers_that_would_change_are_named() {
        let inexact = |text: &str| first_inexact(text.as_bytes());
        assert_eq!(
            inexact(r#"{"a":99999999999999999999}"#).as_deref(),
            Some("99999999999999999999")
        );
        assert_eq!(inexact(r#"[1, 0.1e-400]"#).as_deref(), Some("0.1e-400"));
        assert_eq!(
            inexact(r#"{"a":0.30000000000000000001}"#).as_deref(),
            Some("0.30000000000000000001")
        );
    }

    #[test]
    fn decimals_compare_by_value_not_text() {
        assert_eq!(decimal("1.50"), decimal("1.5e0"));
        assert_eq!(decimal("0.00120"), decimal("1.2e-3"));
        assert_eq!(decimal("-0.0"), decimal("0"));
        assert_ne!(decimal("12"), decimal("1.2"));
    }
}
