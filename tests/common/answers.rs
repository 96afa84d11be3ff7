//! Reading what a gateway answered: problem bodies and `/metrics` samples, so every test
//! checks them the same way.

use super::{Gateway, HttpResponse, get};

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

/// The value of one sample line, e.g. `kreply_ready` or `x{a="b"}`.
pub fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {series} in:\n{metrics}"))
        .parse()
        .unwrap()
}

/// One sample of the gateway's `/metrics`, read now.
pub fn metric(gateway: &Gateway, series: &str) -> f64 {
    let text = String::from_utf8(get(gateway.addr, "/metrics").unwrap().body).unwrap();
    sample(&text, series)
}
