//! What the worker answers, what it records, and the reply record that carries it.
//!
//! The record kept per idempotency key is what makes a repeat safe:
//! - `Pending` is written *before* the PG is called. Finding it later means an attempt
//!   started and has not finished: it may still be calling the PG, or its worker died or
//!   the PG never answered, so the charge may have happened. The PG is not called again:
//!   the repeat waits (bounded) for that attempt's final record, and is answered
//!   `pg-unknown` if none comes. Its `attempt` id tells two overlapping attempts apart
//!   (see [`race`](super::race)).
//! - `Final` holds the answer to give every time (approved or declined).
//! - `Retryable` means the PG said no without charging (5xx, unreachable): a new attempt
//!   may call it again.

use crate::wire::header_names::HeaderNames;
use crate::wire::record::{OutgoingRecord, now_ms};
use crate::wire::reply_error::ReplyError;
use crate::wire::traceparent;
use crate::worker::request::WorkItem;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The state of one payment, as kept in the results topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Recorded {
    Pending {
        /// Which attempt wrote it (a uuid; empty in records of older versions).
        #[serde(default)]
        attempt: String,
        /// When the attempt started (ms since the epoch; 0 in older records).
        #[serde(default)]
        started_ms: i64,
        /// The request's fingerprint ([`fingerprint`](super::fingerprint); empty in
        /// older records).
        #[serde(default, skip_serializing_if = "String::is_empty")]
        fingerprint: String,
    },
    Final {
        error: Option<String>,
        reply: Value,
        /// The fingerprint of the request it answered (empty in older records).
        #[serde(default, skip_serializing_if = "String::is_empty")]
        fingerprint: String,
    },
    /// No fingerprint: nothing was charged, so the key is free for any request.
    Retryable,
}

impl Recorded {
    /// The record, bound to the request whose fingerprint is `fingerprint`.
    pub fn bound_to(mut self, request: &str) -> Recorded {
        match &mut self {
            Recorded::Pending { fingerprint, .. } | Recorded::Final { fingerprint, .. } => {
                *fingerprint = request.to_string();
            }
            Recorded::Retryable => {}
        }
        self
    }

    /// Whether the record was written for another request than the one whose fingerprint
    /// is `request`: its key was reused. Records of older versions bind nothing.
    pub fn bound_elsewhere(&self, request: &str) -> bool {
        match self {
            Recorded::Pending { fingerprint, .. } | Recorded::Final { fingerprint, .. } => {
                !fingerprint.is_empty() && fingerprint != request
            }
            Recorded::Retryable => false,
        }
    }
}

/// The reply to send: a body, and an error code when it is not a success.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub error: Option<ReplyError>,
    pub body: Value,
}

impl Answer {
    pub fn invalid(detail: &str) -> Answer {
        Answer::failure(ReplyError::InvalidRequest, "INVALID", detail)
    }

    /// The idempotency key was first used for another request: this one is refused.
    pub fn key_reused() -> Answer {
        Answer::failure(
            ReplyError::KeyReused,
            "REJECTED",
            "this Idempotency-Key was first used for another request (another operation or body); this one was not charged; a new payment needs a new key",
        )
    }

    /// An attempt is in doubt: it may have charged.
    pub fn in_doubt(detail: &str) -> Answer {
        Answer::failure(ReplyError::PgUnknown, "UNKNOWN", detail)
    }

    pub fn failure(error: ReplyError, status: &str, detail: &str) -> Answer {
        Answer {
            error: Some(error),
            body: json!({ "status": status, "detail": detail }),
        }
    }

    /// The answer a final record gives.
    pub fn from_final(error: Option<&str>, reply: &Value) -> Answer {
        Answer {
            error: error.map(|code| ReplyError::from_code(code.as_bytes())),
            body: reply.clone(),
        }
    }

    /// The record that makes this answer the answer for every repeat.
    pub fn to_final(&self) -> Recorded {
        Recorded::Final {
            error: self.error.map(|e| e.code().to_string()),
            reply: self.body.clone(),
            fingerprint: String::new(),
        }
    }

    /// The reply record to `item`: correlation id echoed (under the name in use), request
    /// key copied, partition honoured, trace echoed, and the error (if any) in the
    /// request's dialect.
    pub fn to_reply(&self, item: &WorkItem, names: &HeaderNames) -> OutgoingRecord {
        let to = &item.reply_to;
        let mut reply_headers = vec![
            (names.correlation_id.clone(), to.correlation_id.clone()),
            (
                traceparent::HEADER.to_string(),
                item.trace.to_bytes().to_vec(),
            ),
        ];
        let detail = self.body.get("detail").and_then(Value::as_str);
        reply_headers.extend(
            to.dialect
                .reply_headers(self.error, detail.unwrap_or_default()),
        );
        OutgoingRecord {
            topic: to.topic.clone(),
            key: item.key.clone(),
            value: self.body.to_string().into_bytes(),
            headers: reply_headers,
            partition: to.partition,
            timestamp_ms: now_ms(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::dialect::{Dialect, NEST_ERR, NEST_IS_DISPOSED};
    use crate::wire::traceparent::TraceParent;
    use crate::worker::request::ReplyTo;

    const TRACE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn item() -> WorkItem {
        WorkItem {
            reply_to: ReplyTo {
                topic: "payment_response_a".into(),
                partition: Some(1),
                correlation_id: vec![5; 16],
                dialect: Dialect::Spring,
            },
            key: b"A-1".to_vec(),
            trace: TraceParent::parse(TRACE.as_bytes()).unwrap(),
            payment: Err("not needed here".into()),
            lookup: None,
        }
    }

    #[test]
    fn a_success_reply_echoes_id_and_trace_and_carries_no_error_header() {
        let answer = Answer {
            error: None,
            body: json!({"status": "APPROVED"}),
        };
        let reply = answer.to_reply(&item(), &HeaderNames::default());
        assert_eq!(
            (reply.topic.as_str(), reply.partition, reply.key.as_slice()),
            ("payment_response_a", Some(1), &b"A-1"[..])
        );
        assert_eq!(reply.header("kafka_correlationId"), Some(&[5u8; 16][..]));
        assert_eq!(reply.header("traceparent"), Some(TRACE.as_bytes()));
        assert_eq!(reply.header("kreply_error"), None);
    }

    #[test]
    fn a_renamed_correlation_id_header_is_echoed_under_its_name() {
        let names = HeaderNames {
            correlation_id: "corr".into(),
            ..HeaderNames::default()
        };
        let reply = Answer::invalid("x").to_reply(&item(), &names);
        assert_eq!(reply.header("corr"), Some(&[5u8; 16][..]));
        assert_eq!(reply.header("kafka_correlationId"), None);
    }

    #[test]
    fn a_decline_survives_the_round_trip_through_the_results_record() {
        let answer = Answer::failure(ReplyError::Declined, "DECLINED", "limit");
        let Recorded::Final { error, reply, .. } = answer.to_final() else {
            panic!("not final")
        };
        assert_eq!(Answer::from_final(error.as_deref(), &reply), answer);
        assert_eq!(
            answer
                .to_reply(&item(), &HeaderNames::default())
                .header("kreply_error"),
            Some(&b"declined"[..])
        );
    }

    #[test]
    fn a_nestjs_request_gets_a_disposed_reply_with_its_error_in_nest_err() {
        let mut nest = item();
        nest.reply_to.dialect = Dialect::Nestjs;
        let answer = Answer::failure(ReplyError::Declined, "DECLINED", "limit");
        let reply = answer.to_reply(&nest, &HeaderNames::default());
        assert_eq!(reply.header(NEST_IS_DISPOSED), Some(&[0u8][..]));
        let err: Value = serde_json::from_slice(reply.header(NEST_ERR).unwrap()).unwrap();
        assert_eq!(
            err,
            json!({"status": "error", "code": "declined", "message": "limit"})
        );
        assert_eq!(reply.header("kreply_error"), None);
        assert_eq!(reply.header("kafka_correlationId"), Some(&[5u8; 16][..]));
    }

    #[test]
    fn records_serialize_with_a_state_tag() {
        let pending = Recorded::Pending {
            attempt: "a-1".into(),
            started_ms: 5,
            fingerprint: String::new(),
        };
        assert_eq!(
            serde_json::to_string(&pending).unwrap(),
            r#"{"state":"pending","attempt":"a-1","started_ms":5}"#
        );
        let back: Recorded = serde_json::from_str(r#"{"state":"retryable"}"#).unwrap();
        assert_eq!(back, Recorded::Retryable);
    }

    #[test]
    fn a_pending_record_of_an_older_version_still_reads() {
        let old: Recorded = serde_json::from_str(r#"{"state":"pending"}"#).unwrap();
        assert_eq!(
            old,
            Recorded::Pending {
                attempt: String::new(),
                started_ms: 0,
                fingerprint: String::new(),
            }
        );
    }
}
