//! What a reply record must carry, and what is wrong with one that does not.
//!
//! Anyone who can write to a reply topic can write garbage to it: a foreign producer, a
//! buggy worker, an operator's test. A record that cannot name a waiter of this gateway is
//! dropped; one that names a waiter but breaks the conventions still answers that waiter
//! (with a `502`, never as a success), so no caller waits for a reply that came. Either
//! way the record is counted by reason, and no other waiter notices. Runtime-free.

use crate::wire::correlation_id::CorrelationId;
use crate::wire::reply_error::ReplyError;

/// What is wrong with a reply record, as `kreply_bad_replies_total{reason}` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadReply {
    /// No `kafka_correlationId` header (or a null one): dropped.
    NoCorrelationId,
    /// A `kafka_correlationId` that is not 16 bytes: no request of this gateway has such an
    /// id, so it is dropped.
    BadCorrelationId,
    /// The value is missing or not JSON: its waiter gets `502 invalid-reply`.
    NotJson,
    /// A `kreply_error` code this gateway does not know: its waiter gets `502 worker-error`.
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
pub fn unroutable(correlation_id: Option<&[u8]>) -> Option<BadReply> {
    match correlation_id {
        None => Some(BadReply::NoCorrelationId),
        Some(id) if id.len() != CorrelationId::SPRING_LEN => Some(BadReply::BadCorrelationId),
        Some(_) => None,
    }
}

/// What is wrong with a routable reply's content, if anything; `error_code` is the
/// `kreply_error` header's value, when there is one.
pub fn content_defect(value: Option<&[u8]>, error_code: Option<&[u8]>) -> Option<BadReply> {
    if !value.is_some_and(is_json) {
        return Some(BadReply::NotJson);
    }
    match error_code.map(ReplyError::from_code) {
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
    fn only_a_sixteen_byte_id_can_name_a_waiter() {
        assert_eq!(unroutable(None), Some(BadReply::NoCorrelationId));
        assert_eq!(unroutable(Some(b"short")), Some(BadReply::BadCorrelationId));
        assert_eq!(unroutable(Some(&[0; 17])), Some(BadReply::BadCorrelationId));
        assert_eq!(unroutable(Some(&[0; 16])), None);
    }

    #[test]
    fn a_value_must_be_json_and_an_error_code_known() {
        assert_eq!(content_defect(Some(br#"{"a":1}"#), None), None);
        assert_eq!(content_defect(Some(b"{}"), Some(b"declined")), None);
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
            content_defect(Some(b"{}"), Some(b"out-of-cheese")),
            Some(BadReply::UnknownErrorCode)
        );
    }
}
