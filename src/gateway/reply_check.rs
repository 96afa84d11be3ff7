//! What a reply record must carry, and what is wrong with one that does not.
//!
//! Anyone who can write to a reply topic can write garbage to it: a foreign producer, a
//! buggy worker, an operator's test. A record that cannot name a waiter of this gateway is
//! dropped; one that names a waiter but breaks the conventions still answers that waiter
//! (with a `502`, never as a success), so no caller waits for a reply that came. Either
//! way the record is counted by reason, and no other waiter notices. Runtime-free.

use crate::wire::dialect::{Dialect, WorkerError};
use crate::wire::reply_error::ReplyError;

/// What is wrong with a reply record, as `kreply_bad_replies_total{reason}` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadReply {
    /// No `kafka_correlationId` header (or a null one): dropped.
    NoCorrelationId,
    /// A `kafka_correlationId` not shaped like the dialect's ids (16 bytes in Spring, a
    /// UUID's 36 characters in NestJS): no request of this gateway has such an id, so it
    /// is dropped.
    BadCorrelationId,
    /// The value is missing or not JSON: its waiter gets `502 invalid-reply`.
    NotJson,
    /// An error code this gateway does not know (`kreply_error`, or the code inside
    /// `kafka_nest-err`): its waiter gets `502 worker-error`.
    UnknownErrorCode,
}

impl BadReply {
    pub fn label(self) -> &'static str {
        match self {
            BadReply::NoCorrelationId => "no-correlation-id",
            BadReply::BadCorrelationId => "bad-correlation-id",
            BadReply::NotJson => "not-json",
            BadReply::UnknownErrorCode => "unknown-error-code",
        }
    }
}

/// Why a reply cannot belong to any request of this gateway, if it cannot.
/// Otherwise the dialect (among those the flows speak, `in_use`) it was written in.
pub fn route(correlation_id: Option<&[u8]>, in_use: &[Dialect]) -> Result<Dialect, BadReply> {
    let id = correlation_id.ok_or(BadReply::NoCorrelationId)?;
    Dialect::of_own_id(id, in_use).ok_or(BadReply::BadCorrelationId)
}

/// What is wrong with a routable reply's content, if anything; `error` is the worker's
/// error, when it sent one. A NestJS error says why in its header, so its value may be
/// empty; every other reply's value must be JSON.
pub fn content_defect(value: Option<&[u8]>, error: Option<&WorkerError>) -> Option<BadReply> {
    let said_in_header = error.is_some_and(|e| e.said.is_some());
    if !said_in_header && !value.is_some_and(is_json) {
        return Some(BadReply::NotJson);
    }
    match error.map(|e| e.code) {
        Some(ReplyError::Unrecognised) => Some(BadReply::UnknownErrorCode),
        _ => None,
    }
}

/// Whether `value` is one JSON document, checked without building it.
pub fn is_json(value: &[u8]) -> bool {
    serde_json::from_slice::<serde::de::IgnoredAny>(value).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_id_of_the_dialects_shape_can_name_a_waiter() {
        let spring = |id| route(id, &[Dialect::Spring]);
        assert_eq!(spring(None), Err(BadReply::NoCorrelationId));
        assert_eq!(spring(Some(b"short")), Err(BadReply::BadCorrelationId));
        assert_eq!(spring(Some(&[0; 17])), Err(BadReply::BadCorrelationId));
        assert_eq!(spring(Some(&[0; 16])), Ok(Dialect::Spring));
        let nest = Dialect::Nestjs.new_correlation_id();
        let both = [Dialect::Nestjs, Dialect::Spring];
        assert_eq!(route(Some(nest.as_bytes()), &both), Ok(Dialect::Nestjs));
        assert_eq!(route(Some(&[0; 16]), &both), Ok(Dialect::Spring));
        assert_eq!(
            route(Some(&[0; 16]), &[Dialect::Nestjs]),
            Err(BadReply::BadCorrelationId)
        );
    }

    fn spring_error(code: &[u8]) -> WorkerError {
        WorkerError {
            code: ReplyError::from_code(code),
            said: None,
        }
    }

    #[test]
    fn a_value_must_be_json_and_an_error_code_known() {
        assert_eq!(content_defect(Some(br#"{"a":1}"#), None), None);
        assert_eq!(
            content_defect(Some(b"{}"), Some(&spring_error(b"declined"))),
            None
        );
        assert_eq!(content_defect(None, None), Some(BadReply::NotJson));
        assert_eq!(content_defect(Some(b""), None), Some(BadReply::NotJson));
        assert_eq!(
            content_defect(Some(b"{\"a\":1} x"), None),
            Some(BadReply::NotJson)
        );
        assert_eq!(
            content_defect(Some(b"\xff\xfe"), None),
            Some(BadReply::NotJson)
        );
        assert_eq!(
            content_defect(Some(b"{}"), Some(&spring_error(b"out-of-cheese"))),
            Some(BadReply::UnknownErrorCode)
        );
    }

    #[test]
    fn a_nestjs_error_needs_no_value() {
        let declined = WorkerError {
            code: ReplyError::Declined,
            said: Some(serde_json::json!({"code": "declined"})),
        };
        assert_eq!(content_defect(None, Some(&declined)), None);
        assert_eq!(
            content_defect(None, Some(&spring_error(b"declined"))),
            Some(BadReply::NotJson)
        );
    }
}
