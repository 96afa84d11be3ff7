//! What the caller sent, checked before anything else happens: content type, requested
//! wait, `Idempotency-Key`, and a body read within its size limit. Each check answers
//! with a problem of its own, and none of them touches Kafka.

use super::State;
use crate::ops::http_server::BodyDeadline;
use crate::ops::http_server::ConnectionCut;
use crate::wire::problem::Problem;
use async_std::future::timeout;
use async_std::io::ReadExt;
use std::time::{Duration, Instant};
use tide::Request;

/// The header a caller may use to ask for a shorter or longer wait, in milliseconds.
const TIMEOUT_HEADER: &str = "request-timeout";
/// The same as a query parameter.
const TIMEOUT_QUERY: &str = "timeout_ms";
/// The caller's key for "the same payment again"; forwarded to the worker.
const IDEMPOTENCY_HEADER: &str = "idempotency-key";
/// Longest idempotency key accepted.
const MAX_IDEMPOTENCY_KEY: usize = 255;

/// The optional `Idempotency-Key`: visible ASCII, at most 255 characters.
pub fn idempotency_key(req: &Request<State>) -> Result<Option<String>, Problem> {
    let Some(values) = req.header(IDEMPOTENCY_HEADER) else {
        return Ok(None);
    };
    valid_idempotency_key(values.last().as_str().trim()).map(Some)
}

/// `key` when it is a valid idempotency key: visible ASCII, 1 to 255 characters.
pub fn valid_idempotency_key(key: &str) -> Result<String, Problem> {
    if key.is_empty()
        || key.len() > MAX_IDEMPOTENCY_KEY
        || !key.chars().all(|c| c.is_ascii_graphic())
    {
        return Err(Problem::new(
            400,
            "invalid-idempotency-key",
            format!("Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters"),
        ));
    }
    Ok(key.to_string())
}

/// JSON bodies only; a missing content type is taken as JSON, as curl users often omit it.
pub fn check_content_type(req: &Request<State>) -> Result<(), Problem> {
    let Some(mime) = req.content_type() else {
        return Ok(());
    };
    // A body sent without a type reaches the handler typed `application/octet-stream`
    // (http-types fills it in), so that type counts as none: untyped, read as JSON.
    let json = mime.essence() == "application/json" || mime.subtype().ends_with("+json");
    if json || mime.essence() == "application/octet-stream" {
        return Ok(());
    }
    Err(Problem::new(
        415,
        "unsupported-media-type",
        format!(
            "the body must be JSON (content-type: application/json), not {}",
            mime.essence()
        ),
    ))
}

/// The caller's requested wait: `request-timeout` header or `?timeout_ms=`, capped.
pub fn requested_timeout(
    req: &Request<State>,
    default: Duration,
    max: Duration,
) -> Result<Duration, Problem> {
    let header = req
        .header(TIMEOUT_HEADER)
        .map(|v| v.last().as_str().to_string());
    let query = req
        .url()
        .query_pairs()
        .find(|(k, _)| k == TIMEOUT_QUERY)
        .map(|(_, v)| v.into_owned());
    let Some(text) = header.or(query) else {
        return Ok(default);
    };
    match text.trim().parse::<u64>() {
        Ok(ms) if ms > 0 => Ok(Duration::from_millis(ms).min(max)),
        _ => Err(Problem::new(
            400,
            "invalid-timeout",
            format!(
                "the timeout \"{text}\" must be a whole number of milliseconds above 0 (at most {} is used)",
                max.as_millis()
            ),
        )),
    }
}

/// Reads at most `limit` bytes; a larger body is refused without reading it all, and one
/// that has not arrived by the connection's [`BodyDeadline`] gets `408 body-timeout`.
pub async fn read_body(req: &mut Request<State>, limit: usize) -> Result<Vec<u8>, Problem> {
    let too_large = || {
        Problem::new(
            413,
            "body-too-large",
            format!("the body is larger than the {limit}-byte limit"),
        )
    };
    if req.len().is_some_and(|len| len > limit) {
        return Err(too_large());
    }
    let deadline = req.ext::<BodyDeadline>().map(|d| d.0);
    let mut body = Vec::new();
    let mut reader = req.take_body().take(limit as u64 + 1);
    let read = reader.read_to_end(&mut body);
    let read = match deadline {
        None => read.await,
        Some(deadline) => {
            let left = deadline.saturating_duration_since(Instant::now());
            timeout(left, read).await.map_err(|_| body_timeout(req))?
        }
    };
    read.map_err(unreadable)?;
    if body.len() > limit {
        return Err(too_large());
    }
    Ok(body)
}

/// A body read that failed: a chunked body whose framing is broken (a chunk size that is
/// no number, or beyond 64 bits) is `malformed-request` (RFC 9112 section 6.3: its end
/// cannot be known, so the connection closes after the answer); a connection that broke
/// mid-body is `unreadable-body`.
fn unreadable(e: std::io::Error) -> Problem {
    if e.kind() == std::io::ErrorKind::InvalidData {
        return Problem::new(
            400,
            "malformed-request",
            format!("the chunked body is not valid chunked encoding ({e}); nothing was sent"),
        );
    }
    Problem::new(
        400,
        "unreadable-body",
        format!("the body could not be read: {e}"),
    )
}

fn body_timeout(req: &Request<State>) -> Problem {
    let metrics = &req.state().metrics.connections;
    metrics.cut(ConnectionCut::BodyTimeout);
    let limit = req.state().config.http.body_timeout_ms;
    Problem::new(
        408,
        "body-timeout",
        format!("the body did not arrive within {limit} ms of the head; nothing was sent"),
    )
}
