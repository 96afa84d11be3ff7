//! The outcome lookup on the wire: a read-only request that asks a worker what became of
//! the payment of an order with an idempotency key, answered from the results store, never
//! the PG.
//!
//! It travels like a payment (the same request topic, return address, correlation id and
//! trace), so any gateway host can ask and the answer needs no host affinity. Its value is
//! `{"lookup": {"operation": "<operation>"}}`; its record key is the order id, so it is
//! partitioned like the payment and reaches the worker that owns the payment's state
//! (docs/worker-design.md, "State per partition"); its `kreply_idempotencyKey` header is
//! the idempotency key asked about, always, even when it is the default
//! `{order_id}:{operation}` (the record key no longer names it). A worker of an older
//! version reads no `"operation"` in it and answers `invalid-request` (422), so it is never
//! taken for a payment.
//!
//! The worker answers with the payment's own first answer (its reply, or its error code and
//! body) when one is on record, or with one of the two codes below.

use crate::wire::payment::{Destination, default_idempotency_key};
use crate::wire::record::{OutgoingRecord, headers};

/// The envelope field that makes a request a lookup.
pub const FIELD: &str = "lookup";

/// The query parameter of the lookup URL that names the payment's order.
pub const ORDER_QUERY: &str = "order_id";

/// `text` with every byte outside RFC 3986's unreserved set percent-encoded: safe as a
/// path segment and as a query value alike (`+` is encoded too, so a form decoder does
/// not read it as a space).
pub fn percent_encoded(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Where the outcome of the payment `operation` of order `order_id` with `key` is answered,
/// by any host: `/v1/payments/{operation}/{key}?order_id={order_id}`, both encoded.
pub fn url(operation: &str, key: &str, order_id: &str) -> String {
    format!(
        "/v1/payments/{operation}/{}?{ORDER_QUERY}={}",
        percent_encoded(key),
        percent_encoded(order_id)
    )
}

/// Where the outcome of the payment in request `record` is answered: its order id (the
/// record key), and its `kreply_idempotencyKey`, else `{order_id}:{operation}`.
pub fn url_of_payment(record: &OutgoingRecord) -> Option<String> {
    let envelope: serde_json::Value = serde_json::from_slice(&record.value).ok()?;
    let operation = envelope.get("operation")?.as_str()?;
    let order_id = String::from_utf8_lossy(&record.key);
    let key = match record.header(headers::IDEMPOTENCY_KEY) {
        Some(key) => String::from_utf8_lossy(key).into_owned(),
        None => default_idempotency_key(&order_id, operation),
    };
    Some(url(operation, &key, &order_id))
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

/// The lookup request for the payment `operation` of order `order_id` with `key`, sent to
/// `to`: keyed by the order, so it lands on the partition that holds the payment's state.
pub fn record(to: &Destination<'_>, operation: &str, key: &str, order_id: &str) -> OutgoingRecord {
    let envelope = serde_json::json!({ FIELD: { "operation": operation } });
    to.record(order_id.as_bytes(), Some(key), &envelope)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::correlation_id::CorrelationId;
    use crate::wire::return_address::ReturnAddress;
    use crate::wire::traceparent::TraceParent;
    use tide::http::Url;

    /// Reserved and awkward characters: a form decoder reads `+` as a space, `&` and `=`
    /// split query pairs, `/`, `?` and `#` end a path segment.
    const AWKWARD: [&str; 7] = [
        "pay-1",
        "a/b?c#d%e",
        "k:approve",
        "~._-",
        "x+y z",
        "a&b=c",
        "주문-7",
    ];

    #[test]
    fn a_key_and_an_order_id_round_trip_through_the_url() {
        for key in AWKWARD {
            for order_id in AWKWARD {
                let url = url("approve", key, order_id);
                let parsed = Url::parse(&format!("http://gw{url}")).unwrap();
                let segments: Vec<_> = parsed.path_segments().unwrap().collect();
                assert_eq!(segments.len(), 4, "{url}");
                assert_eq!(decode_key(segments[3]).as_deref(), Some(key), "{url}");
                // As the gateway reads it: the first `order_id` pair, form-decoded.
                let pairs: Vec<_> = parsed.query_pairs().collect();
                assert_eq!(pairs.len(), 1, "{url}");
                assert_eq!(
                    (&*pairs[0].0, &*pairs[0].1),
                    (ORDER_QUERY, order_id),
                    "{url}"
                );
            }
        }
        assert_eq!(
            url("approve", "A-1:approve", "A-1"),
            "/v1/payments/approve/A-1%3Aapprove?order_id=A-1"
        );
        assert_eq!(decode_key("%zz"), None);
        assert_eq!(decode_key("%4"), None);
    }

    fn to_record(operation: &str, key: &str, order_id: &str) -> OutgoingRecord {
        let reply = ReturnAddress::new(Default::default(), Default::default(), "r", None);
        let id = CorrelationId::new_spring();
        let trace = TraceParent::start();
        let to = Destination {
            topic: "payment_request",
            id: &id,
            reply: &reply,
            trace: &trace,
        };
        record(&to, operation, key, order_id)
    }

    #[test]
    fn the_lookup_is_keyed_by_the_order_and_always_names_the_key_in_a_header() {
        for (key, order_id) in [("A-1:approve", "A-1"), ("k/1 2", "O+1&x")] {
            let lookup = to_record("approve", key, order_id);
            assert_eq!(lookup.key, order_id.as_bytes());
            assert_eq!(
                lookup.header(headers::IDEMPOTENCY_KEY),
                Some(key.as_bytes())
            );
            let value: serde_json::Value = serde_json::from_slice(&lookup.value).unwrap();
            assert_eq!(
                value,
                serde_json::json!({ FIELD: { "operation": "approve" } })
            );
        }
    }

    #[test]
    fn a_payment_s_outcome_url_names_its_order_and_its_key() {
        let payment = |key: Option<&str>| {
            let mut record = to_record("refund", "ignored", "O 1/2");
            record.value = br#"{"operation":"refund","body":{"order_id":"O 1/2"}}"#.to_vec();
            record
                .headers
                .retain(|(name, _)| name != headers::IDEMPOTENCY_KEY);
            if let Some(key) = key {
                let header = (
                    headers::IDEMPOTENCY_KEY.to_string(),
                    key.as_bytes().to_vec(),
                );
                record.headers.push(header);
            }
            record
        };
        assert_eq!(
            url_of_payment(&payment(None)).as_deref(),
            Some("/v1/payments/refund/O%201%2F2%3Arefund?order_id=O%201%2F2")
        );
        assert_eq!(
            url_of_payment(&payment(Some("k+1"))).as_deref(),
            Some("/v1/payments/refund/k%2B1?order_id=O%201%2F2")
        );
    }
}
