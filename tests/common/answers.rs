//! Reading what a gateway answered: problem bodies and `/metrics` samples, so every test
//! checks them the same way.

use super::{Gateway, HttpResponse, get};
use std::net::SocketAddr;

/// Asserts a problem+json answer with `status` and `code`; returns its body.
pub fn assert_problem(response: &HttpResponse, status: u16, code: &str) -> serde_json::Value {
    response.assert_status(status);
    assert_eq!(
        response.header("content-type"),
        Some("application/problem+json")
    );
    let problem = response.json();
    assert_eq!(problem["code"], code, "{problem}");
    assert_eq!(problem["status"], status);
    assert_eq!(problem["type"], format!("urn:kreply:problem:{code}"));
    problem
}

/// The correlation id a payment answer names, as the 16 bytes on the wire.
pub fn correlation_bytes(response: &HttpResponse) -> Vec<u8> {
    let id = response
        .header("x-correlation-id")
        .expect("x-correlation-id header");
    uuid::Uuid::parse_str(id).unwrap().as_bytes().to_vec()
}

/// The correlation id bytes `record` carries under the header `name`.
pub fn record_id(record: &krafka::ConsumerRecord, name: &str) -> Vec<u8> {
    record.header(name).flatten().expect(name).to_vec()
}

/// The value of one sample line, e.g. `kreply_ready` or `x{a="b"}`.
pub fn sample(metrics: &str, series: &str) -> f64 {
    find_sample(metrics, series).unwrap_or_else(|| panic!("no {series} in:\n{metrics}"))
}

fn find_sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|value| value.parse().unwrap())
}

fn metrics_text(addr: SocketAddr) -> String {
    String::from_utf8(get(addr, "/metrics").unwrap().body).unwrap()
}

/// One sample of the gateway's `/metrics`, read now.
pub fn metric(gateway: &Gateway, series: &str) -> f64 {
    sample(&metrics_text(gateway.addr), series)
}

/// A labelled counter at `addr`, read now; 0 while no sample of it exists yet.
pub fn counter(addr: SocketAddr, series: &str) -> f64 {
    find_sample(&metrics_text(addr), series).unwrap_or(0.0)
}
