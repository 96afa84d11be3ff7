//! The agreed error convention on replies: a `kreply_error` header with a code.
//!
//! A Spring listener that throws sends no reply at all, so the caller would wait for a
//! timeout. Instead a worker that cannot complete a payment *replies* with this header,
//! and the gateway maps the code to an HTTP status here, in one place. The reply value
//! (JSON) travels to the caller inside the problem body. Any worker, in any language, only
//! needs to set one UTF-8 header.
//!
//! | code | HTTP | outcome | meaning |
//! |---|---|---|---|
//! | `declined` | 402 | `declined` | the PG declined; nothing was charged |
//! | `invalid-request` | 422 | `failed` | the worker could not read the request; nothing was charged |
//! | `idempotency-key-reused` | 422 | `failed` | the key was first used for another request; this one was not charged |
//! | `pg-error` | 502 | `failed` | the PG refused or failed (5xx, unreachable); nothing was charged |
//! | `pg-unknown` | 504 | `unknown` | the PG did not answer in time, or an earlier attempt died mid-call |
//! | `payment-in-progress` | 409 | `in_progress` | an outcome lookup: an attempt is on record and has not finished |
//! | `no-such-payment` | 404 | `never_seen` | an outcome lookup: no payment with this key within the idempotency window |
//! | anything else | 502 | `unknown` | a code this gateway does not know |

use crate::wire::problem::Outcome;

/// The error codes a reply may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyError {
    Declined,
    InvalidRequest,
    /// The idempotency key was first used for another request.
    KeyReused,
    PgError,
    PgUnknown,
    /// An outcome lookup found an unfinished attempt.
    InProgress,
    /// An outcome lookup found nothing.
    NeverSeen,
    /// A code from a newer or foreign worker.
    Unrecognised,
}

impl ReplyError {
    /// Reads the header value.
    pub fn from_code(code: &[u8]) -> ReplyError {
        match code {
            b"declined" => ReplyError::Declined,
            b"invalid-request" => ReplyError::InvalidRequest,
            b"idempotency-key-reused" => ReplyError::KeyReused,
            b"pg-error" => ReplyError::PgError,
            b"pg-unknown" => ReplyError::PgUnknown,
            b"payment-in-progress" => ReplyError::InProgress,
            b"no-such-payment" => ReplyError::NeverSeen,
            _ => ReplyError::Unrecognised,
        }
    }

    /// The header value, and the problem `code` the caller sees.
    pub fn code(self) -> &'static str {
        match self {
            ReplyError::Declined => "declined",
            ReplyError::InvalidRequest => "invalid-request",
            ReplyError::KeyReused => "idempotency-key-reused",
            ReplyError::PgError => "pg-error",
            ReplyError::PgUnknown => "pg-unknown",
            ReplyError::InProgress => "payment-in-progress",
            ReplyError::NeverSeen => "no-such-payment",
            ReplyError::Unrecognised => "worker-error",
        }
    }

    pub fn status(self) -> u16 {
        match self {
            ReplyError::Declined => 402,
            ReplyError::InvalidRequest | ReplyError::KeyReused => 422,
            ReplyError::PgError | ReplyError::Unrecognised => 502,
            ReplyError::PgUnknown => 504,
            ReplyError::InProgress => 409,
            ReplyError::NeverSeen => 404,
        }
    }

    pub fn outcome(self) -> Outcome {
        match self {
            ReplyError::Declined => Outcome::Declined,
            ReplyError::InvalidRequest | ReplyError::KeyReused | ReplyError::PgError => {
                Outcome::Failed
            }
            ReplyError::PgUnknown | ReplyError::Unrecognised => Outcome::Unknown,
            ReplyError::InProgress => Outcome::InProgress,
            ReplyError::NeverSeen => Outcome::NeverSeen,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_known_code_round_trips_and_maps_to_its_status() {
        for (error, status) in [
            (ReplyError::Declined, 402),
            (ReplyError::InvalidRequest, 422),
            (ReplyError::KeyReused, 422),
            (ReplyError::PgError, 502),
            (ReplyError::PgUnknown, 504),
            (ReplyError::InProgress, 409),
            (ReplyError::NeverSeen, 404),
        ] {
            assert_eq!(ReplyError::from_code(error.code().as_bytes()), error);
            assert_eq!(error.status(), status);
        }
    }

    #[test]
    fn an_unknown_code_is_a_502_with_unknown_outcome() {
        let error = ReplyError::from_code(b"out-of-cheese");
        assert_eq!((error.status(), error.outcome()), (502, Outcome::Unknown));
    }
}
