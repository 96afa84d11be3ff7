//! A request record as the worker reads it: where to reply, and the payment (or why not).
//!
//! Where to reply comes first: without `kafka_replyTopic` and `kafka_correlationId` (or
//! the names `header_names` gives them) no answer can reach anyone, so such a record is
//! skipped (and logged). With them, even a malformed payment gets an `invalid-request`
//! reply, so its caller is not left to time out.
//!
//! The request also tells the dialect to answer in ([`Dialect::of_request`]): a NestJS
//! requester gets a NestJS reply, a Spring one a Spring reply, from the same worker.

use crate::wire::dialect::Dialect;
use crate::wire::header_names::HeaderNames;
use crate::wire::outcome_lookup;
use crate::wire::payment::{PaymentRequest, default_idempotency_key};
use crate::wire::record::headers;
use crate::wire::traceparent::{self, TraceParent};
use serde::de::IgnoredAny;
use serde_json::Value;

/// Where and how the reply must go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyTo {
    pub topic: String,
    /// From `kafka_replyPartition` (4-byte big-endian, or digits in NestJS), when the
    /// requester asked for one.
    pub partition: Option<i32>,
    pub correlation_id: Vec<u8>,
    /// The dialect the request was asked in, and the reply must be spelled in.
    pub dialect: Dialect,
}

/// One request to work on.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkItem {
    pub reply_to: ReplyTo,
    /// The request key (the order id), copied onto the reply as Spring does.
    pub key: Vec<u8>,
    /// The request's `traceparent`, or a new trace when it carried none that is valid:
    /// echoed on the reply, shown in every log line, passed on to the PG as a child.
    pub trace: TraceParent,
    /// The payment, or why it cannot be processed.
    pub payment: Result<PaymentRequest, String>,
    /// For an outcome lookup (`wire::outcome_lookup`), the idempotency key it asks about;
    /// `payment` then says why there is none to charge.
    pub lookup: Option<String>,
}

/// Reads a request record, its routing headers named by `names`; `Err` when no reply
/// can be addressed.
pub fn read<'a>(
    header: impl Fn(&str) -> Option<&'a [u8]>,
    key: &[u8],
    value: Option<&[u8]>,
    names: &HeaderNames,
) -> Result<WorkItem, String> {
    let missing = |name: &str| format!("no {name} header");
    let topic = header(&names.reply_topic).ok_or_else(|| missing(&names.reply_topic))?;
    let topic =
        std::str::from_utf8(topic).map_err(|_| format!("{} is not UTF-8", names.reply_topic))?;
    let correlation_id =
        header(&names.correlation_id).ok_or_else(|| missing(&names.correlation_id))?;
    let partition_bytes = header(&names.reply_partition);
    let dialect = Dialect::of_request(correlation_id, partition_bytes);
    let partition = partition_bytes
        .map(|bytes| dialect.read_partition(bytes))
        .transpose()
        .map_err(|why| format!("{} {why}", names.reply_partition))?;
    let idempotency_key =
        header(headers::IDEMPOTENCY_KEY).map(|k| String::from_utf8_lossy(k).into_owned());
    Ok(WorkItem {
        reply_to: ReplyTo {
            topic: topic.to_string(),
            partition,
            correlation_id: correlation_id.to_vec(),
            dialect,
        },
        key: key.to_vec(),
        trace: TraceParent::or_start(header(traceparent::HEADER)),
        lookup: lookup(value.unwrap_or_default(), idempotency_key.as_deref()),
        payment: payment(value.unwrap_or_default(), idempotency_key),
    })
}

/// The idempotency key an outcome lookup asks about: its `kreply_idempotencyKey` header
/// (its record key is the order id, `wire::outcome_lookup`); `None` for a payment. A
/// lookup without the header (a gateway before 0.2) asks about the empty key, which
/// no payment has: it is answered `no-such-payment`.
fn lookup(value: &[u8], idempotency_key: Option<&str>) -> Option<String> {
    is_lookup(value).then(|| idempotency_key.unwrap_or_default().to_string())
}

/// Whether a request's value is an outcome lookup rather than a payment: the poll loop
/// asks before settling it, so only the envelope's field names are read.
pub fn is_lookup(value: &[u8]) -> bool {
    type Fields<'a> = std::collections::HashMap<std::borrow::Cow<'a, str>, IgnoredAny>;
    serde_json::from_slice::<Fields>(value)
        .is_ok_and(|fields| fields.contains_key(outcome_lookup::FIELD))
}

/// The envelope `{"operation": ..., "body": {...}}`, checked like the gateway checks it.
fn payment(value: &[u8], idempotency_key: Option<String>) -> Result<PaymentRequest, String> {
    let envelope: Value =
        serde_json::from_slice(value).map_err(|e| format!("the request is not JSON: {e}"))?;
    let operation = envelope
        .get("operation")
        .and_then(Value::as_str)
        .ok_or("the request has no \"operation\"")?;
    let body = envelope.get("body").cloned().unwrap_or(Value::Null);
    let mut payment =
        PaymentRequest::from_value(operation, body).map_err(|invalid| invalid.detail)?;
    // Without the caller's key, "this operation on this order" is the payment's identity.
    payment.idempotency_key = Some(
        idempotency_key
            .unwrap_or_else(|| default_idempotency_key(&payment.order_id, &payment.operation)),
    );
    Ok(payment)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers_of<'a>(list: &'a [(&'a str, &'a [u8])]) -> impl Fn(&str) -> Option<&'a [u8]> {
        move |name| list.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
    }

    const ID: &[u8] = &[9; 16];

    fn read<'a>(
        header: impl Fn(&str) -> Option<&'a [u8]>,
        key: &[u8],
        value: Option<&[u8]>,
    ) -> Result<WorkItem, String> {
        super::read(header, key, value, &HeaderNames::default())
    }

    #[test]
    fn reads_route_partition_and_payment_with_the_default_idempotency_key() {
        let partition = 2i32.to_be_bytes();
        let list = [
            ("kafka_replyTopic", &b"payment_response_p1"[..]),
            ("kafka_correlationId", ID),
            ("kafka_replyPartition", &partition[..]),
        ];
        let value = br#"{"operation":"approve","body":{"order_id":"A-1","amount":5}}"#;
        let item = read(headers_of(&list), b"A-1", Some(value)).unwrap();
        assert_eq!(
            item.reply_to,
            ReplyTo {
                topic: "payment_response_p1".into(),
                partition: Some(2),
                correlation_id: ID.to_vec(),
                dialect: Dialect::Spring,
            }
        );
        let payment = item.payment.unwrap();
        assert_eq!(payment.idempotency_key.as_deref(), Some("A-1:approve"));
        assert_eq!(payment.body["amount"], 5);
    }

    #[test]
    fn the_callers_idempotency_key_wins() {
        let list = [
            ("kafka_replyTopic", &b"r"[..]),
            ("kafka_correlationId", ID),
            ("kreply_idempotencyKey", &b"k-7"[..]),
        ];
        let item = read(
            headers_of(&list),
            b"",
            Some(br#"{"operation":"refund","body":{"order_id":"B"}}"#),
        )
        .unwrap();
        assert_eq!(
            item.payment.unwrap().idempotency_key.as_deref(),
            Some("k-7")
        );
    }

    #[test]
    fn an_outcome_lookup_names_the_key_it_asks_about() {
        let list = [
            ("kafka_replyTopic", &b"r"[..]),
            ("kafka_correlationId", ID),
            ("kreply_idempotencyKey", &b"k-9"[..]),
        ];
        let value = br#"{"lookup":{"operation":"approve"}}"#;
        let item = read(headers_of(&list), b"order-9", Some(value)).unwrap();
        assert_eq!(item.lookup.as_deref(), Some("k-9"));
        assert_eq!(item.key, b"order-9");
        assert!(item.payment.is_err());
        assert!(is_lookup(value));
        let payment = br#"{"operation":"approve","body":{"order_id":"A","lookup":1}}"#;
        assert!(!is_lookup(payment));
        assert!(!is_lookup(b"not json"));
        assert_eq!(
            read(headers_of(&list), b"A", Some(payment)).unwrap().lookup,
            None
        );
    }

    #[test]
    fn a_malformed_payment_is_still_answerable() {
        let list = [("kafka_replyTopic", &b"r"[..]), ("kafka_correlationId", ID)];
        let item = read(headers_of(&list), b"", Some(b"not json")).unwrap();
        assert!(item.payment.unwrap_err().contains("not JSON"));
        let item = read(
            headers_of(&list),
            b"",
            Some(br#"{"operation":"approve","body":{}}"#),
        )
        .unwrap();
        assert!(item.payment.unwrap_err().contains("order_id"));
    }

    #[test]
    fn no_reply_topic_or_a_bad_partition_is_unanswerable() {
        assert!(read(headers_of(&[("kafka_correlationId", ID)]), b"", None).is_err());
        let list = [
            ("kafka_replyTopic", &b"r"[..]),
            ("kafka_correlationId", ID),
            ("kafka_replyPartition", &[0, 2][..]),
        ];
        assert!(
            read(headers_of(&list), b"", None)
                .unwrap_err()
                .contains("4 bytes")
        );
    }

    #[test]
    fn a_string_id_and_a_decimal_partition_are_read_as_nestjs() {
        let nest_id = b"7b2d0d2e-8d6a-4a43-9a53-7b6c2a0b0b71";
        let list = [
            ("kafka_replyTopic", &b"r"[..]),
            ("kafka_correlationId", &nest_id[..]),
            ("kafka_replyPartition", &b"12"[..]),
        ];
        let item = read(headers_of(&list), b"", None).unwrap();
        assert_eq!(item.reply_to.dialect, Dialect::Nestjs);
        assert_eq!(item.reply_to.partition, Some(12));
        assert_eq!(item.reply_to.correlation_id, nest_id);
    }

    #[test]
    fn renamed_routing_headers_are_read_and_springs_names_then_ignored() {
        let names = HeaderNames {
            correlation_id: "corr".into(),
            reply_topic: "reply_to".into(),
            reply_partition: "reply_part".into(),
        };
        let partition = 1i32.to_be_bytes();
        let list = [
            ("reply_to", &b"r"[..]),
            ("corr", ID),
            ("reply_part", &partition[..]),
            ("kafka_replyPartition", &b"junk"[..]),
        ];
        let item = super::read(headers_of(&list), b"", None, &names).unwrap();
        assert_eq!(
            (item.reply_to.topic.as_str(), item.reply_to.partition),
            ("r", Some(1))
        );
        assert_eq!(item.reply_to.correlation_id, ID);
        let spring = [("kafka_replyTopic", &b"r"[..]), ("kafka_correlationId", ID)];
        let err = super::read(headers_of(&spring), b"", None, &names).unwrap_err();
        assert_eq!(err, "no reply_to header");
    }

    #[test]
    fn the_requests_trace_is_kept_and_a_missing_or_broken_one_replaced() {
        let sent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let mut list = vec![
            ("kafka_replyTopic", &b"r"[..]),
            ("kafka_correlationId", ID),
            ("traceparent", sent.as_bytes()),
        ];
        let item = read(headers_of(&list), b"", None).unwrap();
        assert_eq!(item.trace.to_string(), sent);
        list[2].1 = b"00-broken";
        let item = read(headers_of(&list), b"", None).unwrap();
        assert_ne!(item.trace.to_string(), sent);
        assert_eq!(item.trace.to_string().len(), sent.len());
    }

    use crate::testing::{
        body_with_amount, deeply_nested_body, hostile_string, json_value, number_text, payment_body,
    };
    use crate::wire::correlation_id::CorrelationId;
    use crate::wire::json_number::decimal;
    use crate::wire::return_address::ReturnAddress;
    use proptest::prelude::*;

    /// What the gateway would produce for `bytes`, when it accepts them.
    fn produced(bytes: &[u8]) -> Option<(PaymentRequest, crate::wire::record::OutgoingRecord)> {
        let payment = PaymentRequest::parse("refund", bytes).ok()?;
        let reply = ReturnAddress::new(
            HeaderNames::default(),
            Dialect::Spring,
            "payment_response_local2",
            Some(1),
        );
        let id = CorrelationId::new_spring();
        let record = payment.to_record("payment_request", &id, &reply, &TraceParent::start());
        Some((payment, record))
    }

    /// The worker reads back exactly the payment the gateway accepted.
    fn round_trip(bytes: &[u8]) {
        let Some((sent, record)) = produced(bytes) else {
            return;
        };
        let header = |name: &str| record.header(name);
        let item = read(header, &record.key, Some(&record.value)).expect("answerable");
        assert_eq!(item.reply_to.partition, Some(1));
        assert_eq!(
            item.trace.to_string().as_bytes(),
            record.header("traceparent").unwrap()
        );
        let got = item.payment.expect("readable");
        assert_eq!(
            (&got.operation, &got.order_id, &got.body),
            (&sent.operation, &sent.order_id, &sent.body)
        );
    }

    /// A header list of the names the worker looks at, with any bytes.
    fn hostile_headers() -> impl Strategy<Value = Vec<(String, Vec<u8>)>> {
        let name = prop::sample::select(vec![
            "kafka_replyTopic",
            "kafka_correlationId",
            "kafka_replyPartition",
            "kreply_idempotencyKey",
            "traceparent",
            "other",
        ]);
        let value = prop_oneof![
            prop::collection::vec(any::<u8>(), 0..24),
            hostile_string().prop_map(String::into_bytes),
        ];
        prop::collection::vec((name.prop_map(String::from), value), 0..6)
    }

    proptest! {
        #[test]
        fn what_the_gateway_accepts_the_worker_reads_back(body in payment_body()) {
            round_trip(body.to_string().as_bytes());
        }

        #[test]
        fn numbers_the_gateway_accepts_reach_the_worker_unchanged(number in number_text()) {
            round_trip(&body_with_amount(&number));
            if let Some((_, record)) = produced(&body_with_amount(&number)) {
                let envelope: serde_json::Value = serde_json::from_slice(&record.value).unwrap();
                let amount = envelope["body"]["amount"].to_string();
                prop_assert_eq!(decimal(&amount), decimal(&number));
            }
        }

        #[test]
        fn nesting_the_gateway_accepts_the_worker_reads(depth in 0usize..300) {
            round_trip(&deeply_nested_body(depth));
        }

        #[test]
        fn hostile_request_records_are_skipped_or_answered_never_a_panic(
            list in hostile_headers(),
            key in prop::collection::vec(any::<u8>(), 0..16),
            value in prop_oneof![
                Just(None),
                prop::collection::vec(any::<u8>(), 0..64).prop_map(Some),
                json_value().prop_map(|v| Some(v.to_string().into_bytes())),
            ],
        ) {
            let header = |name: &str| list.iter().find(|(n, _)| n == name).map(|(_, v)| &v[..]);
            match read(header, &key, value.as_deref()) {
                Err(why) => prop_assert!(!why.is_empty()),
                Ok(item) => {
                    prop_assert!(header("kafka_replyTopic").is_some());
                    prop_assert_eq!(Some(&item.reply_to.correlation_id[..]), header("kafka_correlationId"));
                    if let Err(why) = item.payment {
                        prop_assert!(!why.is_empty());
                    }
                }
            }
        }
    }
}
