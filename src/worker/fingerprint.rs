//! A request's fingerprint: what binds an idempotency key to the request it was first used
//! for (IETF draft "The Idempotency-Key HTTP Header Field": a key reused with another
//! payload is refused with 422).
//!
//! It is a UUID v5 (SHA-1, 128 bits, in the OID namespace, as `results_index` digests
//! keys) of the operation, a newline, and the body as JSON with every object's keys sorted
//! and numbers as the caller wrote them. So the same payment sent again, with its fields in
//! any order, has the same fingerprint; another operation or another amount does not. It
//! tells honest mistakes apart (a key reused for another payment), which 128 bits of SHA-1
//! do with room to spare; nothing here relies on it against a forger, who could only
//! reuse his own key.

use crate::wire::payment::PaymentRequest;
use serde_json::Value;

/// The fingerprint of `payment`, as written on its results records.
pub fn of(payment: &PaymentRequest) -> String {
    let mut text = payment.operation.clone();
    text.push('\n');
    for (key, value) in sorted(&payment.body) {
        canonical(&mut text, key, value);
    }
    uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, text.as_bytes()).to_string()
}

fn sorted(map: &serde_json::Map<String, Value>) -> Vec<(&String, &Value)> {
    let mut fields: Vec<_> = map.iter().collect();
    fields.sort_unstable_by(|a, b| a.0.cmp(b.0));
    fields
}

/// Appends `"key":value,` with `value` canonical.
fn canonical(out: &mut String, key: &str, value: &Value) {
    out.push_str(&Value::String(key.to_string()).to_string());
    out.push(':');
    value_text(out, value);
    out.push(',');
}

fn value_text(out: &mut String, value: &Value) {
    match value {
        Value::Object(map) => {
            out.push('{');
            for (key, inner) in sorted(map) {
                canonical(out, key, inner);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for item in items {
                value_text(out, item);
                out.push(',');
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payment(operation: &str, body: &str) -> PaymentRequest {
        PaymentRequest::parse(operation, body.as_bytes()).unwrap()
    }

    #[test]
    fn the_same_payment_in_any_field_order_has_one_fingerprint() {
        let a = payment(
            "approve",
            r#"{"order_id":"A","amount":5,"meta":{"x":1,"y":[2,3]}}"#,
        );
        let b = payment(
            "approve",
            r#"{"meta":{"y":[2,3],"x":1},"amount":5,"order_id":"A"}"#,
        );
        assert_eq!(of(&a), of(&b));
    }

    #[test]
    fn another_amount_operation_or_nested_value_changes_it() {
        let base = of(&payment("approve", r#"{"order_id":"A","amount":5}"#));
        for (operation, body) in [
            ("approve", r#"{"order_id":"A","amount":6}"#),
            ("cancel", r#"{"order_id":"A","amount":5}"#),
            ("approve", r#"{"order_id":"A","amount":5,"note":"x"}"#),
            ("approve", r#"{"order_id":"B","amount":5}"#),
        ] {
            assert_ne!(of(&payment(operation, body)), base, "{operation} {body}");
        }
        let nested = |y: &str| {
            of(&payment(
                "approve",
                &format!(r#"{{"order_id":"A","m":{{"y":{y}}}}}"#),
            ))
        };
        assert_ne!(nested("[1,2]"), nested("[2,1]"));
    }
}
