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
use crate::worker::pg_connections::{PgConnections, PgStream};
use async_std::io::{ReadExt, WriteExt};
use serde_json::{Value, json};
use std::time::Duration;
use tide::http::{self as http_types, Method, Request, Response, Url};

/// Room for one encoded charge: its head (with a traceparent) and its JSON body.
const REQUEST_ROOM: usize = 1024;

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

/// Where charges go (`{pg_url}/charge`) and the `host:port` to connect to. Also what
/// `check-config worker` checks, so a URL the worker cannot call fails there, not at start.
pub(crate) fn charge_target(pg_url: &str) -> Result<(Url, String), StartupError> {
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
    Ok((charge_url, address))
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
        let (charge_url, address) = charge_target(pg_url)?;
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
        let mut response = exchange(stream.clone(), request)
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

/// Sends `request` with one write and reads the answer's head. async-h1's `connect` copies
/// its encoder into the stream a piece at a time (a send for the head, another for the
/// body), and those sends were the worker's largest CPU cost: 11% of it at 200
/// connections, in `perf`.
async fn exchange(stream: PgStream, request: Request) -> http_types::Result<Response> {
    let mut encoded = Vec::with_capacity(REQUEST_ROOM);
    async_h1::client::Encoder::new(request)
        .read_to_end(&mut encoded)
        .await?;
    let mut out = stream.clone();
    out.write_all(&encoded).await?;
    async_h1::client::decode(stream).await
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
