//! `docs/openapi.json` against the gateway, both ways (issue 19, item 3):
//! - every problem the source can answer (each `Problem::new(status, "code", ...)`, the
//!   payment body's codes, the reply-error table) is documented under its status, and the
//!   document names no code the source cannot answer;
//! - a real answer of each documented route and status, provoked here against a gateway,
//!   a worker and the PG simulator on tansu, is what the document says of it: the status,
//!   the problem code and kreply's own headers. The few answers only a failing broker
//!   gives are provoked in process by `src/gateway/http/answer_tests.rs` (the pairs in
//!   `IN_PROCESS`), and `500 internal-error` by nothing: it means the gateway is broken.

mod common;

use common::answers::assert_problem;
use common::openapi_doc::{
    HEALTHZ, IN_PROCESS, LATE_REPLY, METRICS, OUTCOME, OpenApi, PAY, READYZ, UNMATCHED,
};
use common::raw::{RawClient, payment_head};
use common::system::{System, system_config_with};
use common::*;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

fn document() -> OpenApi {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/openapi.json");
    OpenApi::parse(&std::fs::read_to_string(path).expect("docs/openapi.json"))
}

fn source(relative: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

// Source to document.

#[test]
fn every_problem_the_source_can_answer_is_documented_under_its_status_and_nothing_else() {
    let in_source = problems_in_source();
    let documented = document().all_codes();
    let missing: Vec<String> = in_source
        .iter()
        .filter(|(problem, _)| !documented.contains(problem))
        .map(|((status, code), at)| format!("{status} {code} (from {at})"))
        .collect();
    let extra: Vec<String> = documented
        .iter()
        .filter(|problem| !in_source.contains_key(problem))
        .map(|(status, code)| format!("{status} {code}"))
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "docs/openapi.json misses {missing:#?}\nand documents what no source answers: {extra:#?}\n(add each missing code to the x-problem-codes of its status on its routes; drop the others)"
    );
}

/// Every (status, code) the gateway's source answers, with where it comes from.
fn problems_in_source() -> BTreeMap<(u16, String), String> {
    let mut found = BTreeMap::new();
    for file in rust_files(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src")) {
        let text = std::fs::read_to_string(&file).unwrap();
        let text = text.split("#[cfg(test)]\nmod tests").next().unwrap();
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let name = file
            .strip_prefix(root)
            .unwrap_or(&file)
            .display()
            .to_string();
        for (line, args) in problem_calls(text) {
            let at = format!("{name}:{line}");
            for problem in problems_of_call(&args, &at) {
                found.entry(problem).or_insert_with(|| at.clone());
            }
        }
    }
    found
}

/// The `.rs` files under `dir`, test-only ones left out.
fn rust_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if name.ends_with(".rs")
            && !name.ends_with("_tests.rs")
            && !["test_gateway.rs", "testing.rs"].contains(&name.as_str())
        {
            files.push(path);
        }
    }
    files
}

/// Each `Problem::new(` in `text`: its line, and its first two arguments as written.
fn problem_calls(text: &str) -> Vec<(usize, [String; 2])> {
    const CALL: &str = "Problem::new(";
    text.match_indices(CALL)
        .map(|(at, _)| {
            let line = text[..at].lines().count();
            let mut args = text[at + CALL.len()..].splitn(3, ',');
            let mut next = || args.next().unwrap_or_default().trim().to_string();
            (line, [next(), next()])
        })
        .collect()
}

/// The problems one `Problem::new(status, code, ...)` call answers.
fn problems_of_call([status, code]: &[String; 2], at: &str) -> Vec<(u16, String)> {
    let literal = code.strip_prefix('"').and_then(|c| c.strip_suffix('"'));
    match (status.parse::<u16>(), literal, code.as_str()) {
        (Ok(status), Some(code), _) => vec![(status, code.to_string())],
        // A payment body refused by `PaymentRequest::parse`: its codes are in payment.rs.
        (Ok(400), None, "invalid.code") => payment_body_codes(),
        (_, None, "error.code()") if status == "error.status()" => reply_error_table(),
        // tide's own empty answers (`problem_response::as_problem`): an empty 5xx is the
        // gateway failing; an empty 4xx other than 404 and 405 is none a route gives.
        (_, Some("internal-error"), _) if status == "s as u16" => {
            vec![(500, "internal-error".into())]
        }
        (_, Some("bad-request"), _) if status == "s as u16" => vec![],
        _ => panic!(
            "{at}: Problem::new({status}, {code}, ...) is a status or code this test cannot read; give it literals, or teach tests/openapi.rs where its codes come from"
        ),
    }
}

/// The codes `PaymentRequest::parse` refuses a body with (all answered 400).
fn payment_body_codes() -> Vec<(u16, String)> {
    let text = source("src/wire/payment.rs");
    let text = text.split("#[cfg(test)]").next().unwrap();
    let codes = text.split("code: \"").skip(1);
    let codes: Vec<_> = codes
        .map(|rest| (400, rest.split('"').next().unwrap().to_string()))
        .collect();
    assert!(
        !codes.is_empty(),
        "src/wire/payment.rs: no `code: \"...\"` found"
    );
    codes
}

/// `(status(), code())` of every `ReplyError` variant, read from src/wire/reply_error.rs.
fn reply_error_table() -> Vec<(u16, String)> {
    let text = source("src/wire/reply_error.rs");
    let between = |from: &str, to: &str| {
        let start = text
            .find(from)
            .unwrap_or_else(|| panic!("reply_error.rs: no {from}"));
        let rest = &text[start..];
        rest[..rest.find(to).unwrap()].to_string()
    };
    let variants: Vec<String> = between("pub enum ReplyError {", "}")
        .lines()
        .skip(1)
        .map(str::trim)
        .filter(|line| !line.starts_with("//") && !line.is_empty())
        .map(|line| line.trim_end_matches(',').to_string())
        .collect();
    let codes = match_arms(&between("pub fn code(self)", "pub fn status"));
    let statuses = match_arms(&between("pub fn status(self)", "pub fn outcome"));
    variants
        .iter()
        .map(|variant| {
            let arm = |arms: &BTreeMap<String, String>, what: &str| {
                arms.get(variant).cloned().unwrap_or_else(|| {
                    panic!(
                        "reply_error.rs: no {what} arm for ReplyError::{variant} this test can read"
                    )
                })
            };
            let status = arm(&statuses, "status()").parse().unwrap();
            (status, arm(&codes, "code()").trim_matches('"').to_string())
        })
        .collect()
}

/// `ReplyError::A | ReplyError::B => value,` arms: each variant's value, as written.
fn match_arms(body: &str) -> BTreeMap<String, String> {
    let arms = body.lines().filter_map(|line| line.split_once("=>"));
    arms.flat_map(|(variants, value)| {
        let value = value.trim().trim_end_matches(',').to_string();
        variants.split('|').map(move |variant| {
            let variant = variant.trim().trim_start_matches("ReplyError::");
            (variant.to_string(), value.clone())
        })
    })
    .collect()
}

// Document to real answers.

/// The codes a gateway answers before it routes a request (whatever its path), so one
/// answer on any route stands for all routes.
const BEFORE_ROUTING: [&str; 3] = ["malformed-request", "head-timeout", "too-many-connections"];
/// Connections the gateway serves at once, so that the test can fill them.
const MAX_CONNECTIONS: usize = 4;
/// The head and body deadlines, short so that their 408s come quickly.
const HEAD_MS: u64 = 1000;
const BODY_MS: u64 = 300;

/// What the test saw, as the document describes it.
struct Answer {
    route: &'static str,
    status: u16,
    code: Option<String>,
    headers: Vec<String>,
}

#[derive(Default)]
struct Answers(Vec<Answer>);

impl Answers {
    /// Records `response` to `route` after asserting it is `status` with `code` (a
    /// problem) or without one, so that each step provokes what it means to.
    fn expect(
        &mut self,
        route: &'static str,
        response: &HttpResponse,
        status: u16,
        code: Option<&str>,
    ) -> serde_json::Value {
        let body = match code {
            Some(code) => assert_problem(response, status, code),
            None => {
                response.assert_status(status);
                serde_json::Value::Null
            }
        };
        self.0.push(Answer {
            route,
            status,
            code: code.map(str::to_string),
            headers: response.headers.iter().map(|(n, _)| n.clone()).collect(),
        });
        body
    }
}

#[test]
fn real_answers_of_each_documented_route_and_status_are_as_documented() {
    let config = system_config_with(2000, |c| {
        c["http"]["head_timeout_ms"] = json!(HEAD_MS);
        c["http"]["body_timeout_ms"] = json!(BODY_MS);
        c["http"]["max_connections"] = json!(MAX_CONNECTIONS);
        // How long a lookup waits for a worker.
        c["default_timeout_ms"] = json!(1500);
    });
    // SLOW orders outlast the worker's 2 s PG timeout: `pg-unknown`.
    let system = System::start_with(1, &["--slow-ms", "4000"], config);
    let mut seen = Answers::default();
    payments(&system.gateway, &mut seen);
    let late = late_replies(&system.gateway, &mut seen);
    in_progress_then_unknown(&system.gateway, &mut seen);
    outcome_lookups(&system.gateway, &mut seen);
    requests(&system.gateway, &late, &mut seen);
    probes(&system.gateway, &mut seen);
    before_routing(&system.gateway, &mut seen);
    lookup_without_workers(&system, &mut seen);

    let doc = document();
    let wrong: Vec<String> = seen
        .0
        .iter()
        .filter_map(|a| doc.mismatch(a.route, a.status, a.code.as_deref(), &a.headers))
        .collect();
    assert!(wrong.is_empty(), "docs/openapi.json: {wrong:#?}");
    let unprovoked = unprovoked(&doc, &seen);
    assert!(
        unprovoked.is_empty(),
        "documented but provoked by no test: {unprovoked:#?}; provoke each here (or in process in answer_tests.rs, listed in IN_PROCESS), or drop it from docs/openapi.json"
    );
}

/// The documented (route, status) pairs no answer stands for.
fn unprovoked(doc: &OpenApi, seen: &Answers) -> Vec<String> {
    let before_routing: BTreeSet<(u16, &str)> = seen
        .0
        .iter()
        .filter_map(|a| Some((a.status, a.code.as_deref()?)))
        .filter(|(_, code)| BEFORE_ROUTING.contains(code))
        .collect();
    let mut left = Vec::new();
    for route in doc.routes() {
        for status in doc.statuses(&route) {
            let codes = doc.codes(&route, status);
            let provoked = seen.0.iter().any(|a| a.route == route && a.status == status)
                || IN_PROCESS.contains(&(route.as_str(), status))
                // It means the gateway is broken; nothing provokes it.
                || codes == ["internal-error"]
                || (!codes.is_empty()
                    && codes
                        .iter()
                        .all(|code| before_routing.contains(&(status, code.as_str()))));
            if !provoked {
                left.push(format!("{route} {status} {codes:?}"));
            }
        }
    }
    left
}

/// A payment with `key`, `body` and a wait of `timeout_ms`.
fn pay(gateway: &Gateway, key: &str, body: serde_json::Value, timeout_ms: u32) -> HttpResponse {
    let timeout = timeout_ms.to_string();
    let headers = [
        ("idempotency-key", key),
        ("request-timeout", timeout.as_str()),
    ];
    gateway.pay_with("approve", &headers, &body)
}

/// `POST /v1/payments/{operation}`, one answer per status the binary can be made to give.
fn payments(gateway: &Gateway, seen: &mut Answers) {
    let approved = pay(gateway, "oa-1", json!({"order_id": "OA-1"}), 15_000);
    seen.expect(PAY, &approved, 200, None);
    let declined = pay(gateway, "oa-2", json!({"order_id": "DECLINE-2"}), 15_000);
    seen.expect(PAY, &declined, 402, Some("declined"));
    let failed = pay(gateway, "oa-3", json!({"order_id": "FAIL-3"}), 15_000);
    seen.expect(PAY, &failed, 502, Some("pg-error"));
    let reused = pay(
        gateway,
        "oa-1",
        json!({"order_id": "OA-1", "amount": 2}),
        15_000,
    );
    seen.expect(PAY, &reused, 422, Some("idempotency-key-reused"));
    let timed_out = pay(gateway, "oa-4", json!({"order_id": "OA-4"}), 1);
    seen.expect(PAY, &timed_out, 504, Some("reply-timeout"));

    let json = [("content-type", "application/json")];
    let not_json = gateway.post("/v1/payments/approve", &json, b"{not json");
    seen.expect(PAY, &not_json, 400, Some("invalid-json"));
    let unknown = gateway.post("/v1/payments/teleport", &json, br#"{"order_id":"X"}"#);
    seen.expect(PAY, &unknown, 404, Some("unknown-operation"));
    let text = [("content-type", "text/plain")];
    let form = gateway.post("/v1/payments/approve", &text, br#"{"order_id":"X"}"#);
    seen.expect(PAY, &form, 415, Some("unsupported-media-type"));
    let mut big = br#"{"order_id":"BIG","pad":""#.to_vec();
    big.resize(70_000, b'x');
    let too_large = gateway.post("/v1/payments/approve", &json, &big);
    seen.expect(PAY, &too_large, 413, Some("body-too-large"));
    let wrong_method = get(gateway.addr, "/v1/payments/approve").unwrap();
    seen.expect(PAY, &wrong_method, 405, Some("method-not-allowed"));
    assert_eq!(wrong_method.header("allow"), Some("POST"));

    let mut half_body = payment_head("approve", 40, b"");
    half_body.extend_from_slice(br#"{"order_id""#);
    let client = RawClient::send(gateway.addr, &half_body);
    let seen_raw = client.wait_closed(Duration::from_millis(BODY_MS + 2000));
    let slow = seen_raw
        .response
        .expect("an answer to a body that never came");
    seen.expect(PAY, &slow, 408, Some("body-timeout"));
}

/// Late replies of each kind: payments that time out at once, whose replies come later.
/// Returns each reply_url with the (status, code) it will answer.
fn late_replies(gateway: &Gateway, seen: &mut Answers) -> Vec<(String, u16, Option<&'static str>)> {
    let payments = [
        ("ol-1", json!({"order_id": "OL-1"}), 200, None),
        (
            "ol-2",
            json!({"order_id": "DECLINE-L2"}),
            402,
            Some("declined"),
        ),
        (
            "ol-3",
            json!({"order_id": "FAIL-L3"}),
            502,
            Some("pg-error"),
        ),
        (
            "oa-1",
            json!({"order_id": "OA-1", "amount": 3}),
            422,
            Some("idempotency-key-reused"),
        ),
        (
            "ol-5",
            json!({"order_id": "SLOW-L5"}),
            504,
            Some("pg-unknown"),
        ),
    ];
    let mut late = Vec::new();
    for (key, body, status, code) in payments {
        let timed_out = pay(gateway, key, body, 1);
        let problem = seen.expect(PAY, &timed_out, 504, Some("reply-timeout"));
        let url = problem["reply_url"]
            .as_str()
            .expect("reply_url")
            .to_string();
        late.push((url, status, code));
    }
    let pending = get(gateway.addr, &late[4].0).unwrap();
    seen.expect(LATE_REPLY, &pending, 404, Some("reply-pending"));
    late
}

/// A payment at the PG is `409 payment-in-progress` to a lookup; it ends `504 pg-unknown`
/// (the worker gives up on the PG, and its key stays in progress).
fn in_progress_then_unknown(gateway: &Gateway, seen: &mut Answers) {
    let look_up = || get(gateway.addr, "/v1/payments/approve/os-1?order_id=SLOW-1").unwrap();
    std::thread::scope(|s| {
        let slow = s.spawn(|| pay(gateway, "os-1", json!({"order_id": "SLOW-1"}), 15_000));
        // `404 no-such-payment` until the worker has taken it, 409 for the 2 s at the PG.
        let deadline = Instant::now() + Duration::from_secs(20);
        let running = loop {
            let response = look_up();
            if response.status != 404 || Instant::now() > deadline {
                break response;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        seen.expect(OUTCOME, &running, 409, Some("payment-in-progress"));
        seen.expect(PAY, &slow.join().unwrap(), 504, Some("pg-unknown"));
    });
}

/// With no worker left to answer, a lookup is `504 lookup-timeout`.
fn lookup_without_workers(system: &System, seen: &mut Answers) {
    for worker in &system.workers {
        worker.daemon.signal("KILL");
    }
    let unanswered = get(
        system.gateway.addr,
        "/v1/payments/approve/oa-1?order_id=OA-1",
    )
    .unwrap();
    seen.expect(OUTCOME, &unanswered, 504, Some("lookup-timeout"));
}

/// `GET /v1/payments/{operation}/{idempotency_key}?order_id=...` of the payments made
/// above, and the refusals.
fn outcome_lookups(gateway: &Gateway, seen: &mut Answers) {
    let look_up = |key: &str, order: &str| {
        let path = format!("/v1/payments/approve/{key}?order_id={order}");
        get(gateway.addr, &path).unwrap()
    };
    seen.expect(OUTCOME, &look_up("oa-1", "OA-1"), 200, None);
    seen.expect(
        OUTCOME,
        &look_up("oa-2", "DECLINE-2"),
        402,
        Some("declined"),
    );
    seen.expect(OUTCOME, &look_up("oa-3", "FAIL-3"), 502, Some("pg-error"));
    seen.expect(
        OUTCOME,
        &look_up("never-used", "OA-1"),
        404,
        Some("no-such-payment"),
    );
    seen.expect(
        OUTCOME,
        &look_up("%zz", "OA-1"),
        400,
        Some("invalid-idempotency-key"),
    );
    let no_order = get(gateway.addr, "/v1/payments/approve/oa-1").unwrap();
    seen.expect(OUTCOME, &no_order, 400, Some("missing-order-id"));
    let wrong_method = gateway.post("/v1/payments/approve/oa-1", &[], b"");
    seen.expect(OUTCOME, &wrong_method, 405, Some("method-not-allowed"));
    assert_eq!(wrong_method.header("allow"), Some("GET, HEAD"));
}

/// `GET /v1/requests/{correlation_id}`: the late replies once they came, and the refusals.
fn requests(gateway: &Gateway, late: &[(String, u16, Option<&'static str>)], seen: &mut Answers) {
    let deadline = Instant::now() + Duration::from_secs(30);
    for (url, status, code) in late {
        let answered = loop {
            let response = get(gateway.addr, url).unwrap();
            if response.status != 404 || Instant::now() > deadline {
                break response;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        seen.expect(LATE_REPLY, &answered, *status, *code);
    }
    let id = "0a6b8e6c-7f47-4a56-9b1e-0d4c1a6a9a01";
    let unknown = get(gateway.addr, &format!("/v1/requests/{id}")).unwrap();
    seen.expect(LATE_REPLY, &unknown, 404, Some("unknown-request"));
    let elsewhere = get(gateway.addr, &format!("/v1/requests/{id}?host=local3")).unwrap();
    seen.expect(LATE_REPLY, &elsewhere, 307, None);
    let not_an_id = get(gateway.addr, "/v1/requests/not-an-id").unwrap();
    seen.expect(LATE_REPLY, &not_an_id, 400, Some("invalid-correlation-id"));
    let wrong_method = gateway.post(&format!("/v1/requests/{id}"), &[], b"");
    seen.expect(LATE_REPLY, &wrong_method, 405, Some("method-not-allowed"));
}

/// The probes, and a path no route takes.
fn probes(gateway: &Gateway, seen: &mut Answers) {
    for (route, path) in [
        (HEALTHZ, "/healthz"),
        (READYZ, "/readyz"),
        (METRICS, "/metrics"),
    ] {
        seen.expect(route, &get(gateway.addr, path).unwrap(), 200, None);
        let deleted = request(gateway.addr, "DELETE", path, &[], b"").unwrap();
        seen.expect(route, &deleted, 405, Some("method-not-allowed"));
    }
    let nothing = get(gateway.addr, "/v1/nothing").unwrap();
    seen.expect(UNMATCHED, &nothing, 404, Some("unknown-route"));
}

/// The answers given before a request is routed: a malformed head, a head that never
/// ends, and a connection beyond `http.max_connections`.
fn before_routing(gateway: &Gateway, seen: &mut Answers) {
    let malformed = b"GET /healthz HTTP/1.1\r\nhost: gw\r\nbad header\r\n\r\n";
    let seen_raw = RawClient::send(gateway.addr, malformed).wait_closed(Duration::from_secs(5));
    let answer = seen_raw.response.expect("an answer to a malformed head");
    seen.expect(HEALTHZ, &answer, 400, Some("malformed-request"));
    let unfinished = RawClient::send(gateway.addr, b"GET /healthz HTTP/1.1\r\nhost: gw\r\n");
    let seen_raw = unfinished.wait_closed(Duration::from_millis(HEAD_MS + 2000));
    let answer = seen_raw
        .response
        .expect("an answer to a head that never ended");
    seen.expect(HEALTHZ, &answer, 408, Some("head-timeout"));

    let held: Vec<_> = (0..MAX_CONNECTIONS)
        .map(|_| std::net::TcpStream::connect(gateway.addr).unwrap())
        .collect();
    wait_until(
        "the gateway to count the held connections",
        Duration::from_secs(5),
        || {
            let probe = b"GET /healthz HTTP/1.1\r\nhost: gw\r\nconnection: close\r\n\r\n";
            let refused = RawClient::send(gateway.addr, probe).wait_closed(Duration::from_secs(5));
            let full = refused.response.as_ref().is_some_and(|r| r.status == 503);
            if full {
                seen.expect(
                    HEALTHZ,
                    &refused.response.unwrap(),
                    503,
                    Some("too-many-connections"),
                );
            }
            full
        },
    );
    drop(held);
}
