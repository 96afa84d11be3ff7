//! A payment call: the caller's body checked, then wrapped into a request record.
//!
//! Validation happens before anything touches Kafka, so bad input is answered with a 4xx
//! and nothing is produced. The record's value is a small JSON envelope,
//! `{"operation": ..., "body": <caller's JSON>}`, so one request topic can carry every
//! operation and workers need no per-operation topic. The key is the order id, which keeps
//! every message about one order on one partition, in order.

use crate::wire::correlation_id::CorrelationId;
use crate::wire::json_number;
use crate::wire::record::{OutgoingRecord, headers, now_ms};
use crate::wire::return_address::ReturnAddress;
use crate::wire::traceparent::{self, TraceParent};
use serde_json::{Map, Value};

/// Longest order id accepted. It is the record key and appears in every log line.
pub const MAX_ORDER_ID: usize = 255;

/// An order id becomes the Kafka key and is logged, so control characters (CR and LF
/// would forge log lines) and unbounded lengths are refused.
fn is_order_id(id: &str) -> bool {
    !id.trim().is_empty() && id.chars().count() <= MAX_ORDER_ID && !id.chars().any(char::is_control)
}

/// Deepest nesting accepted in a body. The worker reads the body inside an envelope one
/// level deeper, and JSON parsers give up somewhere (serde_json at 128): a body that the
/// gateway takes must never be one the worker cannot read.
pub const MAX_DEPTH: usize = 32;

/// Whether `value` nests more than `levels` arrays or objects. Recursion is safe: a
/// parsed value is at most 128 levels deep.
fn too_deep(value: &Value, levels: usize) -> bool {
    let children: Box<dyn Iterator<Item = &Value>> = match value {
        Value::Array(items) => Box::new(items.iter()),
        Value::Object(fields) => Box::new(fields.values()),
        _ => return false,
    };
    levels == 0
        || children
            .into_iter()
            .any(|child| too_deep(child, levels - 1))
}

/// A body that passed validation.
#[derive(Debug, Clone, PartialEq)]
pub struct PaymentRequest {
    pub operation: String,
    pub order_id: String,
    /// The caller's `Idempotency-Key`, passed to the worker as `kreply_idempotencyKey`.
    pub idempotency_key: Option<String>,
    pub body: Map<String, Value>,
}

/// Why a body was refused; `code` is stable for clients to match on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidBody {
    pub code: &'static str,
    pub detail: String,
}

/// A payment's idempotency key when its caller gave none: "this operation on this order"
/// is its identity. The worker keys its results by it, and the outcome URL names it.
pub fn default_idempotency_key(order_id: &str, operation: &str) -> String {
    format!("{order_id}:{operation}")
}

impl PaymentRequest {
    /// Accepts a JSON object with a non-empty string `order_id`.
    pub fn parse(operation: &str, bytes: &[u8]) -> Result<PaymentRequest, InvalidBody> {
        let value: Value = serde_json::from_slice(bytes).map_err(|e| InvalidBody {
            code: "invalid-json",
            detail: format!("the body is not valid JSON: {e}"),
        })?;
        if let Some(number) = json_number::first_inexact(bytes) {
            return Err(InvalidBody {
                code: "invalid-number",
                detail: format!(
                    "the number {number} cannot be passed on exactly (it is beyond a 64-bit integer or float); send amounts as integers in minor units, or as strings"
                ),
            });
        }
        PaymentRequest::from_value(operation, value)
    }

    /// The same checks on a body already decoded (the worker reads it from the envelope).
    pub fn from_value(operation: &str, value: Value) -> Result<PaymentRequest, InvalidBody> {
        let Value::Object(body) = value else {
            return Err(InvalidBody {
                code: "invalid-body",
                detail: "the body must be a JSON object".to_string(),
            });
        };
        if body.values().any(|v| too_deep(v, MAX_DEPTH - 1)) {
            return Err(InvalidBody {
                code: "invalid-body",
                detail: format!("the body is nested deeper than {MAX_DEPTH} levels"),
            });
        }
        let order_id = match body.get("order_id") {
            Some(Value::String(id)) if is_order_id(id) => id.clone(),
            Some(_) => {
                return Err(InvalidBody {
                    code: "invalid-order-id",
                    detail: format!(
                        "\"order_id\" must be a string of 1 to {MAX_ORDER_ID} characters, not blank, without control characters"
                    ),
                });
            }
            None => {
                return Err(InvalidBody {
                    code: "missing-order-id",
                    detail:
                        "the body has no \"order_id\"; every payment needs the order it belongs to"
                            .to_string(),
                });
            }
        };
        Ok(PaymentRequest {
            operation: operation.to_string(),
            order_id,
            idempotency_key: None,
            body,
        })
    }

    /// The request record: key = order id; the return address for the reply, the trace it
    /// belongs to, and the caller's idempotency key.
    pub fn to_record(
        &self,
        topic: &str,
        id: &CorrelationId,
        reply: &ReturnAddress,
        trace: &TraceParent,
    ) -> OutgoingRecord {
        let envelope = serde_json::json!({
            "operation": self.operation,
            "body": self.body,
        });
        let to = Destination {
            topic,
            id,
            reply,
            trace,
        };
        to.record(
            self.order_id.as_bytes(),
            self.idempotency_key.as_deref(),
            &envelope,
        )
    }
}

/// Where a request record goes and how its reply comes back: what a payment and an
/// outcome lookup share.
pub struct Destination<'a> {
    pub topic: &'a str,
    pub id: &'a CorrelationId,
    pub reply: &'a ReturnAddress,
    pub trace: &'a TraceParent,
}

impl Destination<'_> {
    /// The request record of `envelope` under record key `key`, with the return address,
    /// the trace and the idempotency key (when there is one) as headers.
    pub fn record(
        &self,
        key: &[u8],
        idempotency_key: Option<&str>,
        envelope: &serde_json::Value,
    ) -> OutgoingRecord {
        let mut record_headers = self.reply.headers(self.id);
        record_headers.push((
            traceparent::HEADER.to_string(),
            self.trace.to_string().into_bytes(),
        ));
        if let Some(idempotency_key) = idempotency_key {
            record_headers.push((
                headers::IDEMPOTENCY_KEY.to_string(),
                idempotency_key.as_bytes().to_vec(),
            ));
        }
        OutgoingRecord {
            topic: self.topic.to_string(),
            key: key.to_vec(),
            value: envelope.to_string().into_bytes(),
            headers: record_headers,
            partition: None,
            timestamp_ms: now_ms(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::dialect::Dialect;

    fn reply() -> ReturnAddress {
        ReturnAddress::new(
            Default::default(),
            Default::default(),
            "payment_response_prod1",
            None,
        )
    }

    fn trace() -> TraceParent {
        TraceParent::start()
    }

    #[test]
    fn a_valid_body_becomes_a_keyed_record_with_the_spring_headers_and_the_trace() {
        let body = br#"{"order_id":"A-1001","amount":15000,"currency":"KRW"}"#;
        let request = PaymentRequest::parse("refund", body).unwrap();
        let id = CorrelationId::new_spring();
        let trace = trace();
        let record = request.to_record("payment_request", &id, &reply(), &trace);
        assert_eq!(record.key, b"A-1001");
        let names: Vec<_> = record.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            ["kafka_correlationId", "kafka_replyTopic", "traceparent"]
        );
        assert_eq!(record.header("kafka_correlationId").unwrap().len(), 16);
        assert_eq!(
            record.header("kafka_replyTopic").unwrap(),
            b"payment_response_prod1"
        );
        assert_eq!(
            record.header("traceparent").unwrap(),
            trace.to_string().as_bytes()
        );
        let value: Value = serde_json::from_slice(&record.value).unwrap();
        assert_eq!(value["operation"], "refund");
        assert_eq!(value["body"]["amount"], 15000);
    }

    #[test]
    fn a_nestjs_record_in_topic_per_host_routing_names_its_reply_partition_in_digits() {
        let request = PaymentRequest::parse("approve", br#"{"order_id":"N-1"}"#).unwrap();
        let id = Dialect::Nestjs.new_correlation_id();
        let reply = ReturnAddress::new(
            Default::default(),
            Dialect::Nestjs,
            "payment_response_prod1",
            None,
        );
        let record = request.to_record("payment_request", &id, &reply, &trace());
        let names: Vec<_> = record.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "kafka_correlationId",
                "kafka_replyTopic",
                "kafka_replyPartition",
                "traceparent"
            ]
        );
        assert_eq!(record.header("kafka_replyPartition").unwrap(), b"0");
        assert_eq!(record.header("kafka_correlationId").unwrap().len(), 36);
        assert_eq!(record.partition, None, "the request itself is keyed");
    }

    #[test]
    fn an_idempotency_key_travels_as_a_header_of_its_own() {
        let mut request = PaymentRequest::parse("approve", br#"{"order_id":"A"}"#).unwrap();
        request.idempotency_key = Some("k-1".into());
        let record = request.to_record("t", &CorrelationId::new_spring(), &reply(), &trace());
        assert_eq!(record.header("kreply_idempotencyKey"), Some(&b"k-1"[..]));
    }

    #[test]
    fn bad_bodies_get_distinct_codes() {
        let code = |b: &[u8]| PaymentRequest::parse("approve", b).unwrap_err().code;
        assert_eq!(code(b"{not json"), "invalid-json");
        assert_eq!(code(b"[1,2]"), "invalid-body");
        assert_eq!(code(br#"{"amount":1}"#), "missing-order-id");
        assert_eq!(code(br#"{"order_id":""}"#), "invalid-order-id");
        assert_eq!(code(br#"{"order_id":17}"#), "invalid-order-id");
        assert_eq!(code(br#"{"order_id":"A\r\nB"}"#), "invalid-order-id");
        assert_eq!(code(br#"{"order_id":"A\u0000"}"#), "invalid-order-id");
        let deep = crate::testing::deeply_nested_body(MAX_DEPTH);
        assert_eq!(code(&deep), "invalid-body");
        let deepest = crate::testing::deeply_nested_body(MAX_DEPTH - 1);
        assert!(PaymentRequest::parse("approve", &deepest).is_ok());
        let long = format!(r#"{{"order_id":"{}"}}"#, "x".repeat(MAX_ORDER_ID + 1));
        assert_eq!(code(long.as_bytes()), "invalid-order-id");
    }

    use crate::testing::{body_with_amount, deeply_nested_body, number_text, payment_body};
    use proptest::prelude::*;

    /// Every code `parse` may answer with; anything else would be an undocumented answer.
    const CODES: [&str; 5] = [
        "invalid-json",
        "invalid-number",
        "invalid-body",
        "missing-order-id",
        "invalid-order-id",
    ];

    /// A refusal names a known code; an acceptance carries an order id fit for a key.
    fn check(bytes: &[u8]) {
        match PaymentRequest::parse("approve", bytes) {
            Err(invalid) => assert!(CODES.contains(&invalid.code), "{invalid:?}"),
            Ok(payment) => {
                assert!(is_order_id(&payment.order_id), "{:?}", payment.order_id);
                let record =
                    payment.to_record("t", &CorrelationId::new_spring(), &reply(), &trace());
                assert_eq!(record.key, payment.order_id.as_bytes());
            }
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_are_refused_with_a_known_code(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            check(&bytes);
        }

        #[test]
        fn any_json_shape_is_refused_or_has_a_fit_order_id(body in payment_body()) {
            check(body.to_string().as_bytes());
        }

        #[test]
        fn huge_and_tiny_numbers_never_panic(number in number_text()) {
            check(&body_with_amount(&number));
        }

        #[test]
        fn deep_nesting_is_refused_without_overflowing_the_stack(depth in 0usize..5000) {
            check(&deeply_nested_body(depth));
        }
    }
}
