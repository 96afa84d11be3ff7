//! Number formats of the benchmark reports (`bench.rs`, `scale.rs`): one decimal place,
//! thousands separated, kilobytes as megabytes; `-` for a figure that is missing.

/// `value` with `decimals` decimal places, or `-`.
pub fn fixed(value: Option<f64>, decimals: usize) -> String {
    value.map_or("-".into(), |v| format!("{v:.decimals$}"))
}

/// `10000` as `10,000`.
pub fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut text = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            text.push(',');
        }
        text.push(digit);
    }
    text
}

/// Kilobytes as megabytes, one decimal place, or `-`.
pub fn megabytes(kb: Option<u64>) -> String {
    fixed(kb.map(|kb| kb as f64 / 1024.0), 1)
}
