//! The outcome lookup on the wire: a read-only request that asks a worker what became of
//! the payment with an idempotency key, answered from the results store, never the PG.
//!
//! It travels like a payment (the same request topic, return address, correlation id and
//! trace), so any gateway host can ask and the answer needs no host affinity. Its value is
//! `{"lookup": {"operation": "<operation>"}}`; its record key and `kreply_idempotencyKey`
//! header are the idempotency key asked about. A worker of an older version reads no
//! `"operation"` in it and answers `invalid-request` (422), so it is never taken for a
//! payment.
//!
//! The worker answers with the payment's own first answer (its reply, or its error code and
//! body) when one is on record, or with one of the two codes below.

use crate::wire::payment::{Destination, default_idempotency_key};
use crate::wire::record::{OutgoingRecord, headers};

/// The envelope field that makes a request a lookup.
pub const FIELD: &str = "lookup";

/// Where the outcome of the payment `operation` with `key` is answered, by any host.
/// Characters outside RFC 3986's unreserved set are percent-encoded.
pub fn url(operation: &str, key: &str) -> String {
    let mut path = format!("/v1/payments/{operation}/");
    for byte in key.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            path.push(byte as char);
        } else {
            path.push_str(&format!("%{byte:02X}"));
        }
    }
    path
}

/// Where the outcome of the payment in request `record` is answered: its
/// `kreply_idempotencyKey`, else its order id (the record key) and operation.
pub fn url_of_payment(record: &OutgoingRecord) -> Option<String> {
    let envelope: serde_json::Value = serde_json::from_slice(&record.value).ok()?;
    let operation = envelope.get("operation")?.as_str()?;
    let key = match record.header(headers::IDEMPOTENCY_KEY) {
        Some(key) => String::from_utf8_lossy(key).into_owned(),
        None => default_idempotency_key(&String::from_utf8_lossy(&record.key), operation),
    };
    Some(url(operation, &key))
}

/// The key of a lookup URL's last segment, percent-decoded; `None` when it is not valid
/// percent-encoding of UTF-8.
pub fn decode_key(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The lookup request for the payment `operation` with `key`, sent to `to`.
pub fn record(to: &Destination<'_>, operation: &str, key: &str) -> OutgoingRecord {
    let envelope = serde_json::json!({ FIELD: { "operation": operation } });
    to.record(key.as_bytes(), Some(key), &envelope)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_round_trips_through_its_url() {
        for key in ["pay-1", "a/b?c#d%e", "k:approve", "~._-"] {
            let url = url("approve", key);
            let segment = url.rsplit('/').next().unwrap();
            assert!(!segment.contains(['/', '?', '#']), "{url}");
            assert_eq!(decode_key(segment).as_deref(), Some(key), "{url}");
        }
        assert_eq!(
            url("approve", "A-1:approve"),
            "/v1/payments/approve/A-1%3Aapprove"
        );
        assert_eq!(decode_key("%zz"), None);
        assert_eq!(decode_key("%4"), None);
    }
}
