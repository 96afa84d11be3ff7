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
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    /// The worker's reply value, when a worker answered with an error.
    #[serde(skip_serializing_if = "Option::is_none")]
    /// Boxed: it is rare, and keeps `Result<_, Problem>` small.
    pub reply: Option<Box<serde_json::Value>>,
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
}

impl Problem {
    pub fn new(status: u16, code: &'static str, detail: impl Into<String>) -> Problem {
        Problem {
            type_uri: format!("urn:kreply:problem:{code}"),
            title: title(status),
            status,
            code,
            detail: detail.into(),
            correlation_id: None,
            outcome: None,
            reply: None,
        }
    }

    pub fn with_correlation_id(mut self, id: impl ToString) -> Problem {
        self.correlation_id = Some(id.to_string());
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
    }
}
