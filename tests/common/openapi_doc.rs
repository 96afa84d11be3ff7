//! `docs/openapi.json` as the tests read it: which problem codes and headers the document
//! gives each route and status, and whether an answer the gateway really gave is one of
//! them. Shared by `tests/openapi.rs` (answers of the real binary) and, through `#[path]`,
//! by `src/gateway/http/answer_tests.rs` (answers only a broken broker gives, in process),
//! so that both read the document one way.

use serde_json::Value;
use std::collections::BTreeSet;

/// The routes, as `METHOD path` with the document's path templates.
pub const PAY: &str = "POST /v1/payments/{operation}";
pub const OUTCOME: &str = "GET /v1/payments/{operation}/{idempotency_key}";
pub const LATE_REPLY: &str = "GET /v1/requests/{correlation_id}";
pub const HEALTHZ: &str = "GET /healthz";
pub const READYZ: &str = "GET /readyz";
pub const METRICS: &str = "GET /metrics";
/// A request to no route: the document's `x-unmatched-path`.
pub const UNMATCHED: &str = "ANY (no route)";

/// The (route, status) pairs whose answers only the in-process tests provoke (a broker
/// that fails a send, a reply consumer that stops reading, a full in-flight table):
/// `answer_tests.rs` provokes each, and `tests/openapi.rs` counts them as covered.
pub const IN_PROCESS: [(&str, u16); 3] = [(PAY, 503), (OUTCOME, 503), (READYZ, 503)];

/// The headers of kreply's own that the document must describe wherever they are sent.
pub const KREPLY_HEADERS: [&str; 7] = [
    "x-correlation-id",
    "traceparent",
    "link",
    "retry-after",
    "location",
    "allow",
    "cache-control",
];

pub struct OpenApi(Value);

impl OpenApi {
    pub fn parse(text: &str) -> OpenApi {
        let doc: Value = serde_json::from_str(text)
            .unwrap_or_else(|e| panic!("docs/openapi.json is not JSON: {e}"));
        assert_eq!(
            doc["openapi"], "3.1.0",
            "docs/openapi.json: not OpenAPI 3.1.0"
        );
        OpenApi(doc)
    }

    /// Every route the document describes, [`UNMATCHED`] included.
    pub fn routes(&self) -> Vec<String> {
        let paths = self.0["paths"].as_object().expect("paths");
        let mut routes: Vec<String> = paths
            .iter()
            .flat_map(|(path, item)| {
                let methods = item.as_object().expect("a path item").keys();
                methods.map(move |method| format!("{} {path}", method.to_uppercase()))
            })
            .collect();
        routes.push(UNMATCHED.to_string());
        routes
    }

    fn responses(&self, route: &str) -> &Value {
        if route == UNMATCHED {
            return &self.0["x-unmatched-path"]["responses"];
        }
        let (method, path) = route.split_once(' ').expect("METHOD path");
        &self.0["paths"][path][method.to_lowercase()]["responses"]
    }

    /// The statuses documented for `route`.
    pub fn statuses(&self, route: &str) -> Vec<u16> {
        let responses = self.responses(route).as_object();
        let statuses = responses.unwrap_or_else(|| panic!("{route} is not documented"));
        statuses
            .keys()
            .map(|s| s.parse().expect("a status"))
            .collect()
    }

    /// `value`, or what its `$ref` points at.
    fn resolved<'a>(&'a self, value: &'a Value) -> &'a Value {
        match value["$ref"].as_str() {
            Some(pointer) => self
                .0
                .pointer(pointer.trim_start_matches('#'))
                .unwrap_or_else(|| {
                    panic!("docs/openapi.json: {pointer} is referred to but not there")
                }),
            None => value,
        }
    }

    fn response(&self, route: &str, status: u16) -> Option<&Value> {
        let response = self.responses(route).get(status.to_string())?;
        Some(self.resolved(response))
    }

    /// The problem codes documented for `route` and `status`.
    pub fn codes(&self, route: &str, status: u16) -> Vec<String> {
        let Some(response) = self.response(route, status) else {
            return Vec::new();
        };
        let codes = response["x-problem-codes"].as_array();
        let codes = codes.map_or(&[][..], Vec::as_slice);
        codes
            .iter()
            .map(|c| c.as_str().expect("a code").to_string())
            .collect()
    }

    /// Every (status, code) documented anywhere.
    pub fn all_codes(&self) -> BTreeSet<(u16, String)> {
        let routes = self.routes();
        let statuses = routes.iter().flat_map(|route| {
            let statuses = self.statuses(route);
            statuses.into_iter().map(move |status| (route, status))
        });
        statuses
            .flat_map(|(route, status)| {
                let codes = self.codes(route, status);
                codes.into_iter().map(move |code| (status, code))
            })
            .collect()
    }

    /// The response headers documented for `route` and `status`, lowercased, each with
    /// whether it is `required` (sent with every such answer).
    fn headers(&self, route: &str, status: u16) -> Vec<(String, bool)> {
        let response = self.response(route, status);
        let headers = response.and_then(|r| r["headers"].as_object());
        headers
            .into_iter()
            .flatten()
            .map(|(name, header)| {
                let required = self.resolved(header)["required"] == true;
                (name.to_lowercase(), required)
            })
            .collect()
    }

    /// What is wrong with documenting an answer of `route` with `status`, problem `code`
    /// (if it is a problem) and `headers` (lowercase names), if anything.
    pub fn mismatch(
        &self,
        route: &str,
        status: u16,
        code: Option<&str>,
        headers: &[String],
    ) -> Option<String> {
        let said = format!(
            "{route} answered {status} {}",
            code.unwrap_or("(no problem)")
        );
        if self.response(route, status).is_none() {
            return Some(format!("{said}: status {status} is not documented there"));
        }
        let codes = self.codes(route, status);
        match code {
            Some(code) if !codes.iter().any(|c| c == code) => {
                return Some(format!("{said}: its x-problem-codes are {codes:?}"));
            }
            None if !codes.is_empty() => {
                return Some(format!("{said}: the document says a problem, {codes:?}"));
            }
            _ => {}
        }
        let documented = self.headers(route, status);
        let sent = |name: &str| headers.iter().any(|h| h == name);
        let undocumented = KREPLY_HEADERS
            .iter()
            .find(|name| sent(name) && !documented.iter().any(|(d, _)| d == *name));
        if let Some(name) = undocumented {
            return Some(format!("{said} with header {name}, not documented there"));
        }
        let missing = documented
            .iter()
            .find(|(name, required)| *required && !sent(name));
        missing.map(|(name, _)| format!("{said} without header {name}, documented as required"))
    }
}
