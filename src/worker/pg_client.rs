//! The call to the payment provider (PG): `POST {pg_url}/charge` with a JSON body.
//!
//! Built on async-h1's client (already here for the server), so the worker needs no HTTP
//! client crate, over connections kept alive between charges ([`PgConnections`]). What
//! matters is telling "not charged" from "maybe charged":
//! - the connection could not be made, or the PG answered 5xx or another 4xx: not charged;
//! - 402: declined, not charged;
//! - the request was sent and no answer came in time: the outcome is unknown.
//!
//! The call carries the payment's trace on to the PG as a W3C `traceparent` header: the
//! request's trace id under a new parent id, this call's.

use crate::error::StartupError;
use crate::wire::payment::PaymentRequest;
use crate::wire::traceparent::{self, TraceParent};
use crate::worker::pg_connections::PgConnections;
use serde_json::{Value, json};
use std::time::Duration;
use tide::http::{Method, Request, Response, Url};

/// What the PG said.
#[derive(Debug, Clone, PartialEq)]
pub enum PgAnswer {
    Approved(Value),
    Declined(Value),
    /// Not charged; a new attempt may succeed.
    Failed(String),
    /// Maybe charged.
    Unknown(String),
}

pub struct PgClient {
    charge_url: Url,
    connections: PgConnections,
    timeout: Duration,
}

/// How far a call got before it failed.
enum CallError {
    NotSent(String),
    Broken(String),
}

impl PgClient {
    /// A client of the PG at `pg_url`, keeping up to `connections` connections alive.
    pub fn new(
        pg_url: &str,
        timeout: Duration,
        connections: usize,
    ) -> Result<PgClient, StartupError> {
        let bad = |why: &str| {
            StartupError::new(format!(
                "\"worker.pg_url\" {pg_url:?} {why}; use http://host:port"
            ))
        };
        let base = Url::parse(pg_url).map_err(|_| bad("is not a URL"))?;
        if base.scheme() != "http" {
            return Err(bad("is not an http:// URL"));
        }
        let host = base.host_str().ok_or_else(|| bad("has no host"))?;
        let address = format!("{host}:{}", base.port_or_known_default().unwrap_or(80));
        let charge_url = base
            .join("charge")
            .map_err(|_| bad("cannot take a /charge path"))?;
        Ok(PgClient {
            charge_url,
            connections: PgConnections::new(address, connections),
            timeout,
        })
    }

    /// Charges one payment, as the span `call` of its trace.
    pub async fn charge(&self, payment: &PaymentRequest, call: &TraceParent) -> PgAnswer {
        match tokio::time::timeout(self.timeout, self.call(payment, call)).await {
            Err(_) => PgAnswer::Unknown(format!(
                "the PG did not answer within {} ms",
                self.timeout.as_millis()
            )),
            Ok(Err(CallError::NotSent(why))) => {
                PgAnswer::Failed(format!("the PG could not be reached: {why}"))
            }
            Ok(Err(CallError::Broken(why))) => {
                PgAnswer::Unknown(format!("the PG call broke off: {why}"))
            }
            Ok(Ok((status, body))) => match status {
                200..=299 => PgAnswer::Approved(body),
                402 => PgAnswer::Declined(body),
                _ => PgAnswer::Failed(format!("the PG answered {status}: {body}")),
            },
        }
    }

    async fn call(
        &self,
        payment: &PaymentRequest,
        trace: &TraceParent,
    ) -> Result<(u16, Value), CallError> {
        let stream = self
            .connections
            .take()
            .await
            .map_err(|e| CallError::NotSent(e.to_string()))?;
        let idempotency_key = payment.idempotency_key.clone().unwrap_or_default();
        let mut request = Request::new(Method::Post, self.charge_url.clone());
        request.insert_header("idempotency-key", idempotency_key.as_str());
        request.insert_header(traceparent::HEADER, trace.to_string());
        request.set_body(json!({
            "order_id": payment.order_id,
            "operation": payment.operation,
            "idempotency_key": idempotency_key,
            "amount": payment.body.get("amount"),
            "currency": payment.body.get("currency"),
        }));
        let mut response = async_h1::connect(stream.clone(), request)
            .await
            .map_err(|e| CallError::Broken(e.to_string()))?;
        let bytes = response
            .body_bytes()
            .await
            .map_err(|e| CallError::Broken(e.to_string()))?;
        if keeps_alive(&response) {
            self.connections.give_back(stream);
        }
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Ok((response.status() as u16, body))
    }
}

/// Whether the connection may carry another charge: its answer's length was known, so
/// it was read to its end, and the PG did not ask to close.
fn keeps_alive(response: &Response) -> bool {
    let closing = response
        .header("connection")
        .is_some_and(|v| v.as_str().eq_ignore_ascii_case("close"));
    response.len().is_some() && !closing
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_http_urls_only() {
        let second = Duration::from_secs(1);
        let client = PgClient::new("http://127.0.0.1:9300", second, 1).unwrap();
        assert_eq!(client.connections.address(), "127.0.0.1:9300");
        assert_eq!(client.charge_url.as_str(), "http://127.0.0.1:9300/charge");
        assert!(PgClient::new("https://pg", second, 1).is_err());
        assert!(PgClient::new("nowhere", second, 1).is_err());
    }
}
