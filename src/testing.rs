//! Generators of hostile input for the property tests (test builds only).
//!
//! One place for what "hostile" means, so the gateway's body checks, the HTTP handler and
//! the worker's request parsing are all fed the same things: arbitrary bytes, JSON of any
//! shape, nesting far deeper than any parser should follow, numbers no machine type
//! holds, and strings with control characters, CR/LF and every plane of Unicode.

use proptest::prelude::*;
use serde_json::{Map, Value};

/// Any characters, weighted towards the ones that break logs, headers and keys.
pub fn hostile_string() -> impl Strategy<Value = String> {
    let hostile_char = prop_oneof![
        3 => any::<char>(),
        2 => prop::sample::select(vec!['\r', '\n', '\0', '\t', '\u{7f}', '\u{85}', '\u{2028}', '"', '\\', ' ']),
        2 => proptest::char::range('a', 'z'),
    ];
    prop::collection::vec(hostile_char, 0..40).prop_map(|chars| chars.into_iter().collect())
}

/// Any ASCII, control characters, CR and LF included: what fits in an HTTP header value
/// in process (the socket tests send the bytes that do not).
pub fn hostile_ascii() -> impl Strategy<Value = String> {
    let ascii_char = prop_oneof![
        3 => proptest::char::range('\0', '\u{7f}'),
        1 => prop::sample::select(vec!['\r', '\n', '\t', ' ']),
    ];
    prop::collection::vec(ascii_char, 0..300).prop_map(|chars| chars.into_iter().collect())
}

/// A number as JSON text: ordinary, at the edges of i64/u64/f64, or far beyond them.
pub fn number_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| f.to_string()),
        (1usize..400).prop_map(|digits| "9".repeat(digits)),
        (-400i32..400).prop_map(|exp| format!("1.5e{exp}")),
        (1usize..400).prop_map(|digits| format!("-0.{}1", "0".repeat(digits))),
    ]
}

/// A JSON value of any shape, a few levels deep.
pub fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        hostile_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((hostile_string(), inner), 0..6)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// A payment body that might pass: an object with an `order_id` of any kind and more.
pub fn payment_body() -> impl Strategy<Value = Value> {
    let order_id = prop_oneof![
        3 => hostile_string().prop_map(Value::String),
        1 => json_value(),
    ];
    (
        order_id,
        prop::collection::vec((hostile_string(), json_value()), 0..4),
    )
        .prop_map(|(id, extra)| {
            let mut body: Map<String, Value> = extra.into_iter().collect();
            body.insert("order_id".into(), id);
            Value::Object(body)
        })
}

/// A payment body with `depth` levels of arrays and objects around a value, as text (a
/// `Value` that deep would overflow the stack when dropped).
pub fn deeply_nested_body(depth: usize) -> Vec<u8> {
    let mut text = String::from(r#"{"order_id":"N-1","deep":"#);
    for level in 0..depth {
        text.push_str(if level % 2 == 0 { "[" } else { r#"{"a":"# });
    }
    text.push('1');
    for level in (0..depth).rev() {
        text.push(if level % 2 == 0 { ']' } else { '}' });
    }
    text.push('}');
    text.into_bytes()
}

/// A payment body as text with `number` (JSON number text) as its amount.
pub fn body_with_amount(number: &str) -> Vec<u8> {
    format!(r#"{{"order_id":"A-1","amount":{number}}}"#).into_bytes()
}
