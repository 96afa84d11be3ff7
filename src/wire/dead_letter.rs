//! Dead-letter records: what the gateway leaves behind when a payment's outcome is unknown.
//!
//! A timed-out request, or one whose send failed, may still have been (or may still be)
//! processed, so the gateway cannot say "failed". It writes the original request to the
//! DLQ topic with Spring's `kafka_dlt-*` headers, so that Spring tooling and operators can
//! find and reconcile it. Replaying it blindly could charge twice; docs/guarantees.md says so.
//!
//! Every failed send is dead-lettered, also one the brokers definitely refused: the DLQ
//! is the operator's record of every request that did not get its answer. So that a
//! replay tool can tell the two apart, every dead letter says whether its request reached
//! the request topic in [`WRITTEN`]: `yes` (acknowledged, at the original partition and
//! offset), `possibly` (no answer from the brokers, or one that leaves it open) or `no`
//! (refused before it was appended: no worker can read it, and its caller was told
//! `not_sent`, safe to try again, so it must never be replayed).

use crate::wire::record::{OutgoingRecord, WrittenAt, headers, now_ms};

/// The dead-letter header that says whether the original may be in the request topic:
/// `yes`, `possibly` or `no` (UTF-8). kreply's own, beside Spring's `kafka_dlt-*`.
pub const WRITTEN: &str = "kreply_dlt-written";

/// Whether the original request reached the request topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// Acknowledged by the brokers, there.
    At(WrittenAt),
    /// Perhaps: no acknowledgement came, or the failure leaves it open.
    Possibly,
    /// Definitely not: the brokers refused it before appending it.
    No,
}

impl Written {
    fn header_value(self) -> &'static [u8] {
        match self {
            Written::At(_) => b"yes",
            Written::Possibly => b"possibly",
            Written::No => b"no",
        }
    }
}

/// Why the request is dead-lettered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// Produced (or possibly produced) but no reply came in time.
    ReplyTimeout,
    /// The produce did not succeed.
    SendFailed,
}

impl Cause {
    /// Its `cause` label in `kreply_dlq_writes_total`.
    pub fn label(self) -> &'static str {
        match self {
            Cause::ReplyTimeout => "reply-timeout",
            Cause::SendFailed => "send-failed",
        }
    }

    /// A Java-style class name, since Spring tooling shows `kafka_dlt-exception-fqcn`.
    fn fqcn(self) -> &'static str {
        match self {
            Cause::ReplyTimeout => "kreply.ReplyTimeoutException",
            Cause::SendFailed => "kreply.SendFailedException",
        }
    }
}

/// The dead-letter record for `original`: its key, value and headers, then the DLT headers
/// and [`WRITTEN`]. The original partition and offset are where it landed, when the broker
/// said so; -1 otherwise.
pub fn record(
    dlq_topic: &str,
    original: &OutgoingRecord,
    written: Written,
    cause: Cause,
    message: &str,
) -> OutgoingRecord {
    let (partition, offset) = match written {
        Written::At(at) => (at.partition, at.offset),
        Written::Possibly | Written::No => (-1, -1),
    };
    let mut dlt_headers = original.headers.clone();
    dlt_headers.extend(
        [
            (
                headers::DLT_ORIGINAL_TOPIC,
                original.topic.as_bytes().to_vec(),
            ),
            (
                headers::DLT_ORIGINAL_PARTITION,
                partition.to_be_bytes().to_vec(),
            ),
            (headers::DLT_ORIGINAL_OFFSET, offset.to_be_bytes().to_vec()),
            (
                headers::DLT_ORIGINAL_TIMESTAMP,
                original.timestamp_ms.to_be_bytes().to_vec(),
            ),
            (headers::DLT_ORIGINAL_TIMESTAMP_TYPE, b"CreateTime".to_vec()),
            (
                headers::DLT_EXCEPTION_FQCN,
                cause.fqcn().as_bytes().to_vec(),
            ),
            (headers::DLT_EXCEPTION_MESSAGE, message.as_bytes().to_vec()),
            (WRITTEN, written.header_value().to_vec()),
        ]
        .map(|(name, value)| (name.to_string(), value)),
    );
    OutgoingRecord {
        topic: dlq_topic.to_string(),
        key: original.key.clone(),
        value: original.value.clone(),
        headers: dlt_headers,
        partition: None,
        timestamp_ms: now_ms(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn original() -> OutgoingRecord {
        OutgoingRecord {
            topic: "payment_request".into(),
            key: b"A-1".to_vec(),
            value: b"{\"operation\":\"approve\"}".to_vec(),
            headers: vec![("kafka_correlationId".into(), vec![7; 16])],
            partition: Some(1),
            timestamp_ms: 1_700_000_000_123,
        }
    }

    #[test]
    fn keeps_the_original_and_adds_spring_dlt_headers_in_their_binary_forms() {
        let written = Written::At(WrittenAt {
            partition: 2,
            offset: 41,
        });
        let dlq = record(
            "payment_request-dlt",
            &original(),
            written,
            Cause::ReplyTimeout,
            "no reply in 500 ms",
        );
        assert_eq!(dlq.topic, "payment_request-dlt");
        assert_eq!(
            (dlq.key.as_slice(), dlq.value.as_slice()),
            (original().key.as_slice(), original().value.as_slice())
        );
        assert_eq!(dlq.header("kafka_correlationId"), Some(&[7u8; 16][..]));
        assert_eq!(
            dlq.header("kafka_dlt-original-topic"),
            Some(&b"payment_request"[..])
        );
        assert_eq!(
            dlq.header("kafka_dlt-original-partition"),
            Some(&2i32.to_be_bytes()[..])
        );
        assert_eq!(
            dlq.header("kafka_dlt-original-offset"),
            Some(&41i64.to_be_bytes()[..])
        );
        assert_eq!(
            dlq.header("kafka_dlt-original-timestamp"),
            Some(&1_700_000_000_123i64.to_be_bytes()[..])
        );
        assert_eq!(
            dlq.header("kafka_dlt-exception-fqcn"),
            Some(&b"kreply.ReplyTimeoutException"[..])
        );
        assert_eq!(
            dlq.header("kafka_dlt-exception-message"),
            Some(&b"no reply in 500 ms"[..])
        );
        assert_eq!(dlq.header("kreply_dlt-written"), Some(&b"yes"[..]));
    }

    #[test]
    fn an_unplaced_original_gets_minus_one_and_says_whether_it_may_be_there() {
        for (written, said) in [(Written::Possibly, "possibly"), (Written::No, "no")] {
            let dlq = record("d", &original(), written, Cause::SendFailed, "broker down");
            assert_eq!(
                dlq.header("kafka_dlt-original-partition"),
                Some(&(-1i32).to_be_bytes()[..])
            );
            assert_eq!(
                dlq.header("kafka_dlt-original-offset"),
                Some(&(-1i64).to_be_bytes()[..])
            );
            assert_eq!(
                dlq.header("kafka_dlt-exception-fqcn"),
                Some(&b"kreply.SendFailedException"[..])
            );
            assert_eq!(dlq.header(WRITTEN), Some(said.as_bytes()));
        }
    }
}
