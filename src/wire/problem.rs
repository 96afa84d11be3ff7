//! Error answers as RFC 9457 problem details (`application/problem+json`).
//!
//! Every failure a caller can see has a stable `code` (and `type`, derived from it) to match
//! on, a human `detail`, the correlation id when a request got one, and for payments whose
//! fate the gateway cannot know, `"outcome": "unknown"`: the payment may still complete,
//! and the caller must check before trying again instead of charging twice.

use serde::Serialize;

pub const CONTENT_TYPE: &str = "application/problem+json";

/// One problem answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    #[serde(rename = "type")]
    pub type_uri: String,
    pub title: &'static str,
    pub status: u16,
    pub code: &'static str,
    /// Boxed strings (here and below): fixed once made, and 8 bytes smaller than a `String`,
    /// which keeps `Result<_, Problem>` under clippy's large-error limit.
    pub detail: Box<str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<Box<str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    /// The worker's reply value, when a worker answered with an error.
    #[serde(skip_serializing_if = "Option::is_none")]
    /// Boxed: it is rare, and keeps `Result<_, Problem>` small.
    pub reply: Option<Box<serde_json::Value>>,
    /// Where the outcome can be fetched later, when it is unknown now (boxed, as `reply`).
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub later: Option<Box<ReplyLocation>>,
    /// Seconds for the `Retry-After` header: when trying again makes sense.
    #[serde(skip)]
    pub retry_after: Option<u16>,
}

/// Where and on which host a request's outcome can be fetched (`GET /v1/requests/{id}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReplyLocation {
    /// `/v1/requests/{id}?host=<suffix>`, relative to the gateways' common address.
    pub reply_url: String,
    /// The host-table suffix of the host that sent the request and reads its reply.
    pub reply_host: String,
    /// `/v1/payments/{operation}/{idempotency_key}?order_id={order_id}`: the payment's
    /// outcome from any host, for as long as the idempotency window keeps it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome_url: Option<String>,
}

/// What the caller may conclude about the payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Nothing reached Kafka: safe to try again.
    NotSent,
    /// It may have been, or may yet be, processed: check before trying again.
    Unknown,
    /// The payment provider declined it: nothing was charged.
    Declined,
    /// Processed and failed: nothing was charged, a new attempt may succeed.
    Failed,
    /// An outcome lookup: an attempt of the payment is on record and has not finished.
    InProgress,
    /// An outcome lookup: no payment with this key within the idempotency window.
    NeverSeen,
}

impl Problem {
    pub fn new(status: u16, code: &'static str, detail: impl Into<String>) -> Problem {
        Problem {
            type_uri: format!("urn:kreply:problem:{code}"),
            title: title(status),
            status,
            code,
            detail: detail.into().into_boxed_str(),
            correlation_id: None,
            outcome: None,
            reply: None,
            later: None,
            retry_after: None,
        }
    }

    pub fn with_correlation_id(mut self, id: impl ToString) -> Problem {
        self.correlation_id = Some(id.to_string().into_boxed_str());
        self
    }

    pub fn with_outcome(mut self, outcome: Outcome) -> Problem {
        self.outcome = Some(outcome);
        self
    }

    pub fn with_reply(mut self, reply: serde_json::Value) -> Problem {
        self.reply = Some(Box::new(reply));
        self
    }

    /// Names where the caller can learn the outcome later, and which host holds it.
    pub fn with_reply_url(mut self, url: String, host: &str) -> Problem {
        self.later = Some(Box::new(ReplyLocation {
            reply_url: url,
            reply_host: host.to_string(),
            outcome_url: None,
        }));
        self
    }

    /// Adds where the payment's outcome is answered by any host (after
    /// [`Problem::with_reply_url`]).
    pub fn with_outcome_url(mut self, url: Option<String>) -> Problem {
        if let Some(later) = &mut self.later {
            later.outcome_url = url;
        }
        self
    }

    pub fn with_retry_after(mut self, seconds: u16) -> Problem {
        self.retry_after = Some(seconds);
        self
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| String::from("{}"))
    }
}

fn title(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        402 => "Payment Required",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Content",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        s if s >= 500 => "Server Error",
        _ => "Client Error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_type_code_and_optional_fields() {
        let p = Problem::new(504, "reply-timeout", "no reply in 500 ms")
            .with_correlation_id("c-1")
            .with_outcome(Outcome::Unknown);
        let v: serde_json::Value = serde_json::from_str(&p.to_json()).unwrap();
        assert_eq!(v["type"], "urn:kreply:problem:reply-timeout");
        assert_eq!(v["title"], "Gateway Timeout");
        assert_eq!(v["status"], 504);
        assert_eq!(v["correlation_id"], "c-1");
        assert_eq!(v["outcome"], "unknown");
        let bare: serde_json::Value =
            serde_json::from_str(&Problem::new(404, "unknown-route", "x").to_json()).unwrap();
        assert!(bare.get("outcome").is_none() && bare.get("correlation_id").is_none());
        assert!(bare.get("reply_url").is_none() && bare.get("retry_after").is_none());
        let later = Problem::new(504, "reply-timeout", "x").with_reply_url("/u".into(), "h2");
        let v: serde_json::Value = serde_json::from_str(&later.to_json()).unwrap();
        assert_eq!(
            (&v["reply_url"], &v["reply_host"]),
            (&"/u".into(), &"h2".into())
        );
    }
}
