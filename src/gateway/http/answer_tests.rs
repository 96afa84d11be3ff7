//! Every answer the HTTP side decides, in process, with the send queue standing in for the
//! broker (issue 9, item 6).
//!
//! A refusal is checked where it matters: its status, `application/problem+json`, its
//! `code`, and that nothing reached the send queue. A payment that passes is answered by a
//! test broker that takes its record from the queue and acknowledges it, fails it or drops
//! it, and by replies delivered through the registry as the reply consumer would.
//!
//! Nothing sleeps: where an answer needs a deadline to pass, the payment asks for a short
//! wait with `request-timeout`, and a payment that wrongly passed its checks ends within
//! 1 ms as a 504 with its record queued, which every refusal test would report.
//!
//! The answers of the connection layer (`malformed-request`, `head-timeout`,
//! `too-many-connections`) are given before tide sees a request; `tests/` checks them
//! against the binary.

use super::State;
use super::test_gateway::{OWN_SUFFIX, gateway, gateway_with};
use crate::config::Config;
use crate::gateway::kafka::{SendFailure, SendQueue};
use crate::gateway::readiness::Change;
use crate::gateway::registry::{Delivery, Reply};
use crate::ops::http_server::{BodyDeadline, answer};
use crate::testing::deeply_nested_body;
use crate::wire::correlation_id::CorrelationId;
use crate::wire::dialect::{Dialect, NEST_ERR, NEST_IS_DISPOSED};
use crate::wire::problem::CONTENT_TYPE;
use crate::wire::record::{OutgoingRecord, WrittenAt, headers};
use crate::wire::traceparent::TraceParent;
use async_std::io::{BufReader, Cursor, WriteExt};
use async_std::os::unix::net::UnixStream;
use async_std::task::block_on;
use openapi_doc::{IN_PROCESS, OUTCOME, OpenApi, PAY, READYZ};
use serde_json::{Value, json};
use std::future::{Future, poll_fn};
use std::io;
use std::pin::{Pin, pin};
use std::task::{Context, Poll};
use std::time::Instant;
use tide::Server;
use tide::http::{Body, Method, Request, Response, Url};
use tokio::sync::oneshot;

#[allow(dead_code)] // what only tests/openapi.rs uses
#[path = "../../../tests/common/openapi_doc.rs"]
mod openapi_doc;

/// A payment body that passes every check.
const ORDER: &[u8] = br#"{"order_id":"A-1","amount":100}"#;

/// Where a test broker sends a payment's acknowledgement.
type AckSender = oneshot::Sender<Result<WrittenAt, SendFailure>>;

/// A request for `path` (with its query, if any).
fn request(method: Method, path: &str) -> Request {
    Request::new(method, Url::parse("http://gw").unwrap().join(path).unwrap())
}

/// A JSON payment to `approve` that waits 1 ms at most.
fn payment(body: &[u8]) -> Request {
    let mut req = request(Method::Post, "/v1/payments/approve");
    req.insert_header("content-type", "application/json");
    req.insert_header("request-timeout", "1");
    req.set_body(body.to_vec());
    req
}

/// A payment of [`ORDER`] that waits 5 s: a test broker on the same task answers, fails
/// or drops it long before.
fn patient_payment() -> Request {
    let mut req = payment(ORDER);
    req.insert_header("request-timeout", "5000");
    req
}

/// [`payment`] with a body of unknown length read from `reader`, as a chunked upload.
fn streamed_payment(reader: impl async_std::io::Read + Unpin + Send + Sync + 'static) -> Request {
    let mut req = payment(b"");
    req.set_body(Body::from_reader(BufReader::new(reader), None));
    req
}

/// A body whose every read fails, as when the connection breaks mid-body.
struct BrokenBody;

impl async_std::io::Read for BrokenBody {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        _: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::ConnectionReset,
            "reset by the test",
        )))
    }
}

/// A payment body of exactly `len` bytes (at least 26).
fn padded(len: usize) -> Vec<u8> {
    let mut body = br#"{"order_id":"A-1","pad":""#.to_vec();
    body.resize(len - 2, b'x');
    body.extend_from_slice(b"\"}");
    body
}

/// Asserts that `response` is the problem `status` with `code`, as
/// `application/problem+json`, and returns its body.
async fn expect_problem(response: &mut Response, status: u16, code: &str) -> Value {
    let content_type = response
        .content_type()
        .map(|mime| mime.essence().to_string());
    let body = response.body_string().await.unwrap();
    assert_eq!(
        (response.status() as u16, content_type.as_deref()),
        (status, Some(CONTENT_TYPE)),
        "wanted {status} {code}, got {body}"
    );
    let problem: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(problem["code"], code, "{problem}");
    assert_eq!(problem["status"], status, "{problem}");
    assert_eq!(problem["type"], format!("urn:kreply:problem:{code}"));
    problem
}

/// Sends `req` and asserts a refusal: `status` and `code`, no correlation id given out,
/// none left waiting, and nothing handed to the send queue. Returns the answer's headers
/// (its body read) and its problem body.
async fn refused(
    app: &Server<State>,
    queue: &mut SendQueue,
    req: Request,
    status: u16,
    code: &str,
) -> (Response, Value) {
    let waiting = app.state().registry.in_flight();
    let mut response: Response = answer(app.clone(), req).await;
    let problem = expect_problem(&mut response, status, code).await;
    let queued: Vec<String> = queue.take_records().into_iter().map(|r| r.topic).collect();
    assert!(queued.is_empty(), "{code}, yet sent to {queued:?}");
    assert_eq!(header(&response, "x-correlation-id"), None, "{problem}");
    assert_eq!(app.state().registry.in_flight(), waiting, "{problem}");
    (response, problem)
}

/// [`refused`] by a fresh ready gateway with the default config.
fn refused_fresh(req: Request, status: u16, code: &str) -> Value {
    let (app, mut queue) = gateway();
    block_on(refused(&app, &mut queue, req, status, code)).1
}

/// Sends `req` (a payment that waits 1 ms) and asserts it passed every check: its record
/// reached the queue and, with no acknowledgement, it ended in a 504. Returns the record.
async fn sent(app: &Server<State>, queue: &mut SendQueue, req: Request) -> OutgoingRecord {
    let mut response: Response = answer(app.clone(), req).await;
    expect_problem(&mut response, 504, "reply-timeout").await;
    let record = queue.take_records().into_iter().next().expect("sent");
    assert_eq!(record.topic, "payment_request");
    record
}

/// Sends `req` while `broker` plays the broker, both on this task: the call runs until it
/// waits for an acknowledgement or a reply, and the broker until it waits for a record.
async fn with_broker<B: Future>(
    app: &Server<State>,
    req: Request,
    broker: B,
) -> (Response, B::Output) {
    tokio::join!(async { answer(app.clone(), req).await }, broker)
}

/// A payment whose send fails, `possibly_written` or not, with `message`: the answer (a 503 `send-failed`), its
/// problem body, and the payment's record.
async fn failed_send(
    app: &Server<State>,
    queue: &mut SendQueue,
    possibly_written: bool,
    message: &str,
) -> (Response, Value, OutgoingRecord) {
    let (mut response, record) = with_broker(app, patient_payment(), async {
        let (record, ack) = next_payment(queue).await;
        let message = message.to_string();
        ack.send(Err(SendFailure {
            possibly_written,
            message,
        }))
        .unwrap();
        record
    })
    .await;
    let problem = expect_problem(&mut response, 503, "send-failed").await;
    (response, problem, record)
}

/// The next payment record in `queue`, and the sender its acknowledgement goes back by.
async fn next_payment(queue: &mut SendQueue) -> (OutgoingRecord, AckSender) {
    let (record, ack) = queue.next_send().await.expect("the gateway keeps a handle");
    assert_eq!(record.topic, "payment_request");
    (
        record,
        ack.expect("a payment waits for its acknowledgement"),
    )
}

fn correlation_id(record: &OutgoingRecord) -> CorrelationId {
    CorrelationId::from_wire(record.header("kafka_correlationId").expect("an id header"))
}

/// A reply with `value`, and the `kreply_error` header if `error` is given.
fn reply(value: &Value, error: Option<&str>) -> Reply {
    Reply {
        value: Some(value.to_string().into_bytes()),
        headers: error
            .map(|code| (headers::ERROR.to_string(), Some(code.as_bytes().to_vec())))
            .into_iter()
            .collect(),
        partition: 0,
        offset: 0,
    }
}

/// The one record left in `queue`: the dead letter of `request`, with its exception class
/// and message, where the request was written (`-1` when unknown), and whether it was
/// (`kreply_dlt-written`: `yes`, `possibly` or `no`).
fn dead_letter(
    queue: &mut SendQueue,
    request: &OutgoingRecord,
) -> (String, String, i32, i64, String) {
    let letters = queue.take_records();
    let [letter] = letters.as_slice() else {
        panic!("wanted one dead letter, got {letters:?}");
    };
    assert_eq!(letter.topic, "payment_request-dlt");
    assert_eq!((&letter.key, &letter.value), (&request.key, &request.value));
    assert_eq!(
        letter.header("kafka_correlationId"),
        request.header("kafka_correlationId")
    );
    let text = |name| String::from_utf8(letter.header(name).unwrap().to_vec()).unwrap();
    let number = |name| letter.header(name).unwrap().to_vec();
    (
        text(headers::DLT_EXCEPTION_FQCN),
        text(headers::DLT_EXCEPTION_MESSAGE),
        i32::from_be_bytes(number(headers::DLT_ORIGINAL_PARTITION).try_into().unwrap()),
        i64::from_be_bytes(number(headers::DLT_ORIGINAL_OFFSET).try_into().unwrap()),
        text("kreply_dlt-written"),
    )
}

/// Asserts that `problem` (in `response`) tells the caller the outcome of request `id`
/// is unknown, and where this host will report it.
fn assert_unknown_with_reply_url(response: &Response, problem: &Value, id: &CorrelationId) {
    let url = format!("/v1/requests/{id}?host={OWN_SUFFIX}");
    // A payment of ORDER without an Idempotency-Key: its key is `A-1:approve`.
    let outcome_url = "/v1/payments/approve/A-1%3Aapprove?order_id=A-1";
    assert_eq!(problem["outcome"], "unknown", "{problem}");
    assert_eq!(problem["correlation_id"], id.to_string());
    assert_eq!(
        (&problem["reply_url"], &problem["reply_host"]),
        (&json!(url), &json!(OWN_SUFFIX))
    );
    assert_eq!(problem["outcome_url"], outcome_url, "{problem}");
    assert_eq!(
        header(response, "link"),
        Some(format!("<{url}>; rel=\"monitor\", <{outcome_url}>; rel=\"monitor\"").as_str())
    );
    assert_eq!(
        header(response, "x-correlation-id"),
        Some(id.to_string().as_str())
    );
}

/// The last value of header `name`.
fn header<'a>(response: &'a Response, name: &str) -> Option<&'a str> {
    response.header(name).map(|values| values.last().as_str())
}

async fn json_body(response: &mut Response) -> Value {
    serde_json::from_str(&response.body_string().await.unwrap()).unwrap()
}

async fn get(app: &Server<State>, path: &str) -> Response {
    answer(app.clone(), request(Method::Get, path)).await
}

// Refusals: 4xx, and the 503s decided before anything is sent.

#[test]
fn a_body_that_is_no_payment_is_400_with_a_code_of_its_own_and_sends_nothing() {
    let long_id = format!(r#"{{"order_id":"{}"}}"#, "x".repeat(256));
    for (body, code) in [
        (&b"{not json"[..], "invalid-json"),
        (b"", "invalid-json"),
        (
            br#"{"order_id":"A-1","amount":99999999999999999999}"#,
            "invalid-number",
        ),
        (br#"{"order_id":"A-1","amount":1e-400}"#, "invalid-number"),
        (b"[1,2]", "invalid-body"),
        (&deeply_nested_body(40), "invalid-body"),
        (br#"{"amount":100}"#, "missing-order-id"),
        (br#"{"order_id":""}"#, "invalid-order-id"),
        (br#"{"order_id":17}"#, "invalid-order-id"),
        (br#"{"order_id":"A\r\nB"}"#, "invalid-order-id"),
        (long_id.as_bytes(), "invalid-order-id"),
    ] {
        refused_fresh(payment(body), 400, code);
    }
}

#[test]
fn an_operation_not_configured_is_404_unknown_operation_and_sends_nothing() {
    let mut req = payment(ORDER);
    *req.url_mut() = Url::parse("http://gw/v1/payments/transfer").unwrap();
    let problem = refused_fresh(req, 404, "unknown-operation");
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains("approve, cancel, refund"), "{detail}");
}

#[test]
fn an_unknown_route_is_404_and_a_wrong_method_405_naming_the_methods_in_allow() {
    for path in [
        "/v1/payments",
        "/v1/payments/approve/now/later",
        "/v1/nothing",
        "/",
    ] {
        refused_fresh(request(Method::Post, path), 404, "unknown-route");
    }
    let (app, mut queue) = gateway();
    let id = "0a6b8e6c-7f47-4a56-9b1e-0d4c1a6a9a01";
    for (method, path, allow) in [
        (Method::Get, "/v1/payments/approve".to_string(), "POST"),
        (Method::Put, "/v1/payments/approve".to_string(), "POST"),
        (Method::Head, "/v1/payments/approve".to_string(), "POST"),
        (
            Method::Post,
            "/v1/payments/approve/key-1".to_string(),
            "GET, HEAD",
        ),
        (Method::Post, format!("/v1/requests/{id}"), "GET, HEAD"),
        (Method::Delete, "/healthz".to_string(), "GET, HEAD"),
        (Method::Delete, "/readyz".to_string(), "GET, HEAD"),
        (Method::Put, "/metrics".to_string(), "GET, HEAD"),
    ] {
        let req = request(method, &path);
        let (response, _) = block_on(refused(&app, &mut queue, req, 405, "method-not-allowed"));
        assert_eq!(header(&response, "allow"), Some(allow), "{method} {path}");
    }
}

/// The catch-all that answers 405 must not take `HEAD` from the `GET` routes, which tide
/// answers with the `GET` handler.
#[test]
fn head_is_answered_where_get_is() {
    let (app, _queue) = gateway();
    for path in ["/healthz", "/readyz", "/metrics"] {
        let response: Response = block_on(answer(app.clone(), request(Method::Head, path)));
        assert_eq!(response.status() as u16, 200, "HEAD {path}");
    }
}

#[test]
fn a_body_over_the_limit_is_413_whether_or_not_its_length_is_announced() {
    let (app, mut queue) = gateway_with(Config {
        max_body_bytes: 64,
        ..Config::default()
    });
    block_on(async {
        refused(
            &app,
            &mut queue,
            payment(&padded(65)),
            413,
            "body-too-large",
        )
        .await;
        let unannounced = streamed_payment(Cursor::new(padded(65)));
        refused(&app, &mut queue, unannounced, 413, "body-too-large").await;
        // The limit itself is allowed.
        sent(&app, &mut queue, payment(&padded(64))).await;
        sent(&app, &mut queue, streamed_payment(Cursor::new(padded(64)))).await;
    });
}

#[test]
fn a_body_that_is_not_json_by_its_content_type_is_415_and_sends_nothing() {
    for content_type in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/xml",
    ] {
        let mut req = payment(ORDER);
        req.insert_header("content-type", content_type);
        refused_fresh(req, 415, "unsupported-media-type");
    }
    let (app, mut queue) = gateway();
    for content_type in [
        "application/json; charset=utf-8",
        "application/merge-patch+json",
    ] {
        let mut req = payment(ORDER);
        req.insert_header("content-type", content_type);
        block_on(sent(&app, &mut queue, req));
    }
    let mut bare = payment(ORDER);
    bare.remove_header("content-type");
    block_on(sent(&app, &mut queue, bare));
}

#[test]
fn an_invalid_idempotency_key_is_400_and_sends_nothing() {
    let too_long = "k".repeat(256);
    for key in ["", "   ", "two words", "tab\there", too_long.as_str()] {
        let mut req = payment(ORDER);
        req.insert_header("idempotency-key", key);
        refused_fresh(req, 400, "invalid-idempotency-key");
    }
    let longest = "k".repeat(255);
    let mut req = payment(ORDER);
    req.insert_header("idempotency-key", longest.as_str());
    let (app, mut queue) = gateway();
    let record = block_on(sent(&app, &mut queue, req));
    assert_eq!(
        record.header(headers::IDEMPOTENCY_KEY),
        Some(longest.as_bytes())
    );
}

#[test]
fn an_invalid_request_timeout_is_400_in_the_header_or_the_query() {
    for value in ["0", "-5", "1.5", "soon", "", "18446744073709551616"] {
        let mut req = payment(ORDER);
        req.insert_header("request-timeout", value);
        refused_fresh(req, 400, "invalid-timeout");
    }
    for query in ["timeout_ms=0", "timeout_ms=abc"] {
        let mut req = payment(ORDER);
        req.remove_header("request-timeout");
        req.url_mut().set_query(Some(query));
        refused_fresh(req, 400, "invalid-timeout");
    }
}

#[test]
fn a_body_that_breaks_off_is_400_unreadable_body() {
    refused_fresh(streamed_payment(BrokenBody), 400, "unreadable-body");
}

#[test]
fn a_body_not_there_by_the_connections_deadline_is_408_body_timeout() {
    // The connection layer sets the deadline; the caller never writes its body.
    let (_caller, body) = UnixStream::pair().unwrap();
    let mut req = streamed_payment(body);
    req.ext_mut().insert(BodyDeadline(Instant::now()));
    refused_fresh(req, 408, "body-timeout");
}

#[test]
fn a_lookup_of_a_request_this_host_holds_nothing_for_is_a_4xx() {
    let (app, mut queue) = gateway();
    let id = CorrelationId::new_spring();
    block_on(async {
        for (path, status, code) in [
            (
                "/v1/requests/not-an-id".to_string(),
                400,
                "invalid-correlation-id",
            ),
            (format!("/v1/requests/{id}"), 404, "unknown-request"),
            (
                format!("/v1/requests/{id}?host={OWN_SUFFIX}"),
                404,
                "unknown-request",
            ),
            (
                format!("/v1/requests/{id}?host=local9"),
                404,
                "unknown-host",
            ),
        ] {
            let req = request(Method::Get, &path);
            refused(&app, &mut queue, req, status, code).await;
        }
        // The host that sent it is asked instead, on the same port.
        let elsewhere = get(&app, &format!("/v1/requests/{id}?host=local3")).await;
        assert_eq!(elsewhere.status() as u16, 307);
        assert_eq!(
            header(&elsewhere, "location"),
            Some(format!("http://127.0.0.3:8080/v1/requests/{id}?host=local3").as_str())
        );
        // A host with a public base URL in the table is named by it.
        let public = get(&app, &format!("/v1/requests/{id}?host=local4")).await;
        assert_eq!(
            header(&public, "location"),
            Some(format!("https://gw4.example.com/v1/requests/{id}?host=local4").as_str())
        );
    });
}

/// The test app with its reply consumer reported unhealthy long enough to be not ready.
fn not_ready_gateway() -> (tide::Server<State>, SendQueue) {
    let (app, queue) = gateway();
    let readiness = &app.state().readiness;
    assert_eq!(
        (0..10).find_map(|_| readiness.observe(false)),
        Some(Change::Lost)
    );
    (app, queue)
}

#[test]
fn a_gateway_not_reading_replies_refuses_with_503_not_sent_and_sends_nothing() {
    let (app, mut queue) = not_ready_gateway();
    block_on(async {
        let (response, problem) = refused(&app, &mut queue, payment(ORDER), 503, "not-ready").await;
        assert_eq!(problem["outcome"], "not_sent");
        assert_eq!(header(&response, "retry-after"), None);
        refused(
            &app,
            &mut queue,
            request(Method::Get, "/readyz"),
            503,
            "not-ready",
        )
        .await;
    });
}

/// Like `overloaded`, `not-ready` is decided before the body is read (the connection
/// layer then closes a connection whose body is left unread).
#[test]
fn a_gateway_not_reading_replies_refuses_before_the_body_is_read() {
    let (app, mut queue) = not_ready_gateway();
    block_on(async {
        // A body read would be a 400 unreadable-body.
        let mut req = streamed_payment(BrokenBody);
        req.insert_header("traceparent", TRACE);
        let (response, problem) = refused(&app, &mut queue, req, 503, "not-ready").await;
        assert_eq!(problem["outcome"], "not_sent");
        assert_eq!(header(&response, "traceparent"), Some(TRACE));
    });
}

#[test]
fn at_the_in_flight_cap_a_payment_is_503_overloaded_before_its_body_is_read() {
    let (app, mut queue) = gateway_with(Config {
        max_in_flight: 1,
        ..Config::default()
    });
    let registry = &app.state().registry;
    let last_slot = registry.register(CorrelationId::new_spring()).unwrap();
    block_on(async {
        // A body read would be a 400 unreadable-body.
        let req = streamed_payment(BrokenBody);
        let (response, problem) = refused(&app, &mut queue, req, 503, "overloaded").await;
        assert_eq!(problem["outcome"], "not_sent");
        assert_eq!(header(&response, "retry-after"), Some("1"));
        drop(last_slot);
        sent(&app, &mut queue, payment(ORDER)).await;
    });
}

#[test]
fn a_payment_whose_slot_is_taken_while_its_body_arrives_is_503_overloaded() {
    let (app, mut queue) = gateway_with(Config {
        max_in_flight: 1,
        ..Config::default()
    });
    let registry = &app.state().registry;
    let (mut caller, body) = UnixStream::pair().unwrap();
    block_on(async {
        let mut call = pin!(app.respond::<_, Response>(streamed_payment(body)));
        // The first poll gets as far as the body, which is not there yet.
        assert!(
            poll_fn(|cx| Poll::Ready(call.as_mut().poll(cx)))
                .await
                .is_pending()
        );
        let _last_slot = registry.register(CorrelationId::new_spring()).unwrap();
        caller.write_all(ORDER).await.unwrap();
        drop(caller);
        let mut response = call.await.unwrap();
        let problem = expect_problem(&mut response, 503, "overloaded").await;
        assert_eq!(problem["outcome"], "not_sent");
        assert_eq!(header(&response, "retry-after"), Some("1"));
        assert_eq!(header(&response, "x-correlation-id"), None);
        assert!(queue.take_records().is_empty());
    });
}

/// An outcome lookup at `path`, answered by a test broker on this task with `reply` (the
/// lookup's record acknowledged first): the answer.
async fn looked_up(
    app: &Server<State>,
    queue: &mut SendQueue,
    path: &str,
    reply: Reply,
) -> Response {
    let registry = &app.state().registry;
    let (response, ()) = with_broker(app, request(Method::Get, path), async {
        let (record, ack) = next_payment(queue).await;
        let written = WrittenAt {
            partition: 0,
            offset: 1,
        };
        ack.send(Ok(written)).unwrap();
        registry.deliver(correlation_id(&record).as_bytes(), reply);
    })
    .await;
    response
}

/// A lookup that names no order, or an empty one, has no partition to ask: `400
/// missing-order-id` naming the parameter, and nothing is sent.
#[test]
fn a_lookup_without_an_order_id_is_400_missing_order_id_and_sends_nothing() {
    let (app, mut queue) = gateway();
    block_on(async {
        for query in [
            "",
            "?order_id=",
            "?order_id",
            "?host=local2",
            "?order_id=&order_id=A-1",
        ] {
            let req = request(Method::Get, &format!("/v1/payments/approve/k-1{query}"));
            let (response, problem) = refused(&app, &mut queue, req, 400, "missing-order-id").await;
            let detail = problem["detail"].as_str().unwrap();
            assert!(
                detail.contains("order_id")
                    && detail.contains("/v1/payments/approve/k-1?order_id="),
                "{detail}"
            );
            assert_eq!(header(&response, "cache-control"), Some("no-store"));
            assert!(header(&response, "traceparent").is_some());
        }
    });
}

/// The lookup's record is keyed by the order (decoded from the query), so it lands on the
/// order's partition, and names the key it asks about in its header.
#[test]
fn a_lookup_is_keyed_by_its_order_and_names_its_key_in_a_header() {
    let (app, mut queue) = gateway();
    let approved = json!({ "status": "APPROVED" });
    let registry = &app.state().registry;
    block_on(async {
        for (path, order_id, key) in [
            (
                "/v1/payments/approve/A-1%3Aapprove?order_id=A-1",
                "A-1",
                "A-1:approve",
            ),
            (
                "/v1/payments/approve/k%2F1?order_id=O%2B1%26x%3D%20y",
                "O+1&x= y",
                "k/1",
            ),
            (
                "/v1/payments/approve/k-1?order_id=a+b&order_id=c",
                "a b",
                "k-1",
            ),
        ] {
            let (mut response, ()) = with_broker(&app, request(Method::Get, path), async {
                let (record, ack) = next_payment(&mut queue).await;
                assert_eq!(record.key, order_id.as_bytes(), "{path}");
                assert_eq!(
                    record.header(headers::IDEMPOTENCY_KEY),
                    Some(key.as_bytes()),
                    "{path}"
                );
                let value: Value = serde_json::from_slice(&record.value).unwrap();
                assert_eq!(value, json!({ "lookup": { "operation": "approve" } }));
                let written = WrittenAt {
                    partition: 0,
                    offset: 1,
                };
                ack.send(Ok(written)).unwrap();
                registry.deliver(correlation_id(&record).as_bytes(), reply(&approved, None));
            })
            .await;
            assert_eq!(response.status() as u16, 200, "{path}");
            let body: Value = serde_json::from_str(&response.body_string().await.unwrap()).unwrap();
            assert_eq!(body, approved);
        }
    });
}

/// No payment answer or lookup answer may be kept by a cache, whatever its status:
/// `Cache-Control: no-store` on each (issue 19, item 3).
#[test]
fn payment_and_lookup_answers_are_never_stored() {
    let (app, mut queue) = gateway();
    let registry = &app.state().registry;
    let approved = json!({ "status": "APPROVED" });
    let id = CorrelationId::new_spring();
    block_on(async {
        let mut answers = vec![
            answer(app.clone(), payment(b"{not json")).await,
            answer(app.clone(), payment(ORDER)).await,
        ];
        queue.take_records();
        let (paid, ()) = with_broker(&app, patient_payment(), async {
            let (record, ack) = next_payment(&mut queue).await;
            registry.deliver(correlation_id(&record).as_bytes(), reply(&approved, None));
            ack.send(Ok(WrittenAt {
                partition: 0,
                offset: 2,
            }))
            .unwrap();
        })
        .await;
        answers.push(paid);
        let outcome = "/v1/payments/approve/A-1%3Aapprove?order_id=A-1";
        answers.push(looked_up(&app, &mut queue, outcome, reply(&approved, None)).await);
        let never = reply(&json!({}), Some("no-such-payment"));
        answers.push(looked_up(&app, &mut queue, outcome, never).await);
        for path in [
            "/v1/payments/approve/%zz?order_id=A-1".to_string(),
            "/v1/payments/teleport/k-1?order_id=A-1".to_string(),
            "/v1/payments/approve/k-1".to_string(),
            "/v1/requests/not-an-id".to_string(),
            format!("/v1/requests/{id}"),
            format!("/v1/requests/{id}?host=local3"),
        ] {
            answers.push(get(&app, &path).await);
        }
        let (problem, _, record) = timed_out(&app, &mut queue, None).await;
        let url = problem["reply_url"].as_str().unwrap();
        answers.push(get(&app, url).await);
        registry.deliver(correlation_id(&record).as_bytes(), reply(&approved, None));
        answers.push(get(&app, url).await);
        let statuses: Vec<u16> = answers.iter().map(|r| r.status() as u16).collect();
        assert_eq!(
            statuses,
            [
                400, 504, 200, 200, 404, 400, 404, 400, 400, 404, 307, 404, 200
            ]
        );
        for response in &answers {
            let status = response.status();
            assert_eq!(
                header(response, "cache-control"),
                Some("no-store"),
                "{status}"
            );
        }
    });
}

// Payments that reach the send queue, answered by a test broker.

#[test]
fn the_id_is_registered_before_the_record_is_queued_so_a_reply_faster_than_the_ack_is_the_answer() {
    let (app, mut queue) = gateway();
    let registry = &app.state().registry;
    let value = json!({ "status": "APPROVED", "order_id": "A-1" });
    let mut req = patient_payment();
    req.insert_header("idempotency-key", "approve-A-1");
    block_on(async {
        let (mut response, id) = with_broker(&app, req, async {
            let (record, ack) = next_payment(&mut queue).await;
            assert_eq!(record.key, b"A-1");
            assert_eq!(
                record.header("kafka_replyTopic"),
                Some(&b"payment_response_local2"[..])
            );
            assert_eq!(
                record.header(headers::IDEMPOTENCY_KEY),
                Some(&b"approve-A-1"[..])
            );
            // The record is in the broker's hands and unacknowledged: its id must wait already.
            let id = correlation_id(&record);
            assert_eq!(registry.in_flight(), 1);
            let delivery = registry.deliver(id.as_bytes(), reply(&value, None));
            assert!(matches!(delivery, Delivery::Delivered), "{delivery:?}");
            ack.send(Ok(WrittenAt {
                partition: 0,
                offset: 7,
            }))
            .unwrap();
            id
        })
        .await;
        assert_eq!(response.status() as u16, 200);
        assert_eq!(
            response.content_type().unwrap().essence(),
            "application/json"
        );
        assert_eq!(
            header(&response, "x-correlation-id"),
            Some(id.to_string().as_str())
        );
        assert_eq!(json_body(&mut response).await, value);
        assert_eq!(registry.in_flight(), 0);
        assert!(
            queue.take_records().is_empty(),
            "answered, yet dead-lettered"
        );
    });
}

#[test]
fn a_worker_error_reply_is_its_4xx_with_the_workers_value() {
    let (app, mut queue) = gateway();
    let registry = &app.state().registry;
    let value = json!({ "detail": "the card was declined" });
    for (code, status, outcome) in [
        ("declined", 402, "declined"),
        ("invalid-request", 422, "failed"),
    ] {
        let req = patient_payment();
        block_on(async {
            let (mut response, id) = with_broker(&app, req, async {
                let (record, ack) = next_payment(&mut queue).await;
                ack.send(Ok(WrittenAt {
                    partition: 0,
                    offset: 1,
                }))
                .unwrap();
                let id = correlation_id(&record);
                registry.deliver(id.as_bytes(), reply(&value, Some(code)));
                id
            })
            .await;
            let problem = expect_problem(&mut response, status, code).await;
            assert_eq!(problem["outcome"], outcome);
            assert_eq!(problem["reply"], value);
            assert_eq!(problem["detail"], "the card was declined");
            assert_eq!(problem["correlation_id"], id.to_string());
            assert!(
                queue.take_records().is_empty(),
                "answered, yet dead-lettered"
            );
        });
    }
}

#[test]
fn a_dropped_acknowledgement_is_503_send_failed_outcome_unknown_and_its_reply_url_answers_later() {
    let (app, mut queue) = gateway();
    let registry = &app.state().registry;
    let req = patient_payment();
    block_on(async {
        let (mut response, record) = with_broker(&app, req, async {
            let (record, ack) = next_payment(&mut queue).await;
            drop(ack);
            record
        })
        .await;
        let id = correlation_id(&record);
        let problem = expect_problem(&mut response, 503, "send-failed").await;
        assert_unknown_with_reply_url(&response, &problem, &id);
        let (class, message, partition, offset, written) = dead_letter(&mut queue, &record);
        assert_eq!(class, "kreply.SendFailedException");
        assert_eq!(message, "the Kafka producer has stopped");
        assert_eq!((partition, offset), (-1, -1));
        assert_eq!(written, "possibly");

        // Its reply_url reports "pending" until the reply comes, then the reply.
        let url = problem["reply_url"].as_str().unwrap();
        let mut pending = get(&app, url).await;
        let problem = expect_problem(&mut pending, 404, "reply-pending").await;
        assert_eq!(problem["outcome"], "unknown");
        assert_eq!(header(&pending, "retry-after"), Some("1"));
        let value = json!({ "status": "APPROVED" });
        let delivery = registry.deliver(id.as_bytes(), reply(&value, None));
        assert!(matches!(delivery, Delivery::Kept), "{delivery:?}");
        let mut late = get(&app, url).await;
        assert_eq!(late.status() as u16, 200);
        assert_eq!(json_body(&mut late).await, value);
    });
}

#[test]
fn a_failed_send_that_may_have_been_written_is_503_send_failed_outcome_unknown() {
    let (app, mut queue) = gateway();
    block_on(async {
        let (response, problem, record) =
            failed_send(&app, &mut queue, true, "request timed out").await;
        assert_unknown_with_reply_url(&response, &problem, &correlation_id(&record));
        // Its dead letter says it may be in the request topic: a replay must check first.
        let (class, message, .., written) = dead_letter(&mut queue, &record);
        assert_eq!(class, "kreply.SendFailedException");
        assert_eq!(message, "request timed out");
        assert_eq!(written, "possibly");
    });
}

#[test]
fn a_failed_send_that_wrote_nothing_is_503_send_failed_not_sent() {
    let (app, mut queue) = gateway();
    let registry = &app.state().registry;
    block_on(async {
        let (response, problem, record) =
            failed_send(&app, &mut queue, false, "NOT_ENOUGH_REPLICAS").await;
        let id = correlation_id(&record);
        assert_eq!(problem["outcome"], "not_sent", "{problem}");
        assert_eq!(problem["correlation_id"], id.to_string());
        assert_eq!(problem.get("reply_url"), None);
        assert_eq!(header(&response, "link"), None);
        // Dead-lettered all the same, as every failed send is, marked as never written:
        // a replay tool must not send what its caller was told is safe to try again.
        let (class, message, .., written) = dead_letter(&mut queue, &record);
        assert_eq!(
            (class.as_str(), message.as_str(), written.as_str()),
            ("kreply.SendFailedException", "NOT_ENOUGH_REPLICAS", "no")
        );
        // Nothing waits for it, here or at a reply_url.
        assert_eq!(registry.in_flight(), 0);
        let mut lookup = get(&app, &format!("/v1/requests/{id}?host={OWN_SUFFIX}")).await;
        expect_problem(&mut lookup, 404, "unknown-request").await;
    });
}

#[test]
fn a_reply_that_came_before_a_failed_acknowledgement_is_still_the_answer() {
    let (app, mut queue) = gateway();
    let registry = &app.state().registry;
    let value = json!({ "status": "APPROVED" });
    let req = patient_payment();
    block_on(async {
        let (mut response, ()) = with_broker(&app, req, async {
            let (record, ack) = next_payment(&mut queue).await;
            registry.deliver(correlation_id(&record).as_bytes(), reply(&value, None));
            let failure = SendFailure {
                possibly_written: true,
                message: "connection reset".into(),
            };
            ack.send(Err(failure)).unwrap();
        })
        .await;
        assert_eq!(response.status() as u16, 200);
        assert_eq!(json_body(&mut response).await, value);
        assert!(
            queue.take_records().is_empty(),
            "answered, yet dead-lettered"
        );
    });
}

#[test]
fn no_acknowledgement_in_time_is_504_reply_timeout_outcome_unknown_and_dead_lettered() {
    let (app, mut queue) = gateway();
    block_on(async {
        // The broker keeps the acknowledgement past the caller's 1 ms.
        let (mut response, (record, _ack)) =
            with_broker(&app, payment(ORDER), next_payment(&mut queue)).await;
        let problem = expect_problem(&mut response, 504, "reply-timeout").await;
        assert_unknown_with_reply_url(&response, &problem, &correlation_id(&record));
        let (class, message, partition, offset, written) = dead_letter(&mut queue, &record);
        assert_eq!(class, "kreply.ReplyTimeoutException");
        assert_eq!(message, "no acknowledgement from the brokers within 1 ms");
        assert_eq!((partition, offset, written.as_str()), (-1, -1, "possibly"));
    });
}

#[test]
fn an_acknowledged_payment_with_no_reply_in_time_is_504_and_its_dead_letter_says_where_it_is() {
    let (app, mut queue) = gateway();
    let mut req = payment(ORDER);
    // Long enough for the acknowledgement, sent at once, to count; the reply never comes.
    req.insert_header("request-timeout", "200");
    block_on(async {
        let (mut response, record) = with_broker(&app, req, async {
            let (record, ack) = next_payment(&mut queue).await;
            ack.send(Ok(WrittenAt {
                partition: 3,
                offset: 42,
            }))
            .unwrap();
            record
        })
        .await;
        let problem = expect_problem(&mut response, 504, "reply-timeout").await;
        assert_unknown_with_reply_url(&response, &problem, &correlation_id(&record));
        let (class, message, partition, offset, written) = dead_letter(&mut queue, &record);
        assert_eq!(class, "kreply.ReplyTimeoutException");
        assert_eq!(message, "no reply within 200 ms");
        assert_eq!((partition, offset, written.as_str()), (3, 42, "yes"));
    });
}

/// Issue 20, item 4: a payment's dead letter goes to its own flow's dead-letter topic,
/// `dlq_topic` or `<request_topic>-dlt`.
#[test]
fn each_flows_payments_are_dead_lettered_to_that_flows_topic() {
    let config = Config {
        flows: serde_json::from_value(json!([
            {"operations": ["approve"], "request_topic": "payment_request"},
            {"operations": ["refund"], "request_topic": "refund_request"},
            {"operations": ["cancel"], "request_topic": "cancel_request", "dlq_topic": "cancels_dead"}
        ]))
        .unwrap(),
        ..Config::default()
    };
    let (app, mut queue) = gateway_with(config);
    for (operation, request_topic, dlq_topic) in [
        ("approve", "payment_request", "payment_request-dlt"),
        ("refund", "refund_request", "refund_request-dlt"),
        ("cancel", "cancel_request", "cancels_dead"),
    ] {
        let mut req = payment(ORDER);
        *req.url_mut() = Url::parse(&format!("http://gw/v1/payments/{operation}")).unwrap();
        let mut response: Response = block_on(answer(app.clone(), req));
        block_on(expect_problem(&mut response, 504, "reply-timeout"));
        let records = queue.take_records();
        let topics: Vec<&str> = records.iter().map(|r| r.topic.as_str()).collect();
        assert_eq!(topics, [request_topic, dlq_topic], "{operation}");
    }
}

/// A flow with `require_idempotency_key`: its payments without the header are refused
/// with `400 missing-idempotency-key`, nothing sent; with it they pass, and another flow's
/// payments need none.
#[test]
fn a_flow_that_requires_an_idempotency_key_refuses_a_payment_without_one() {
    let config = Config {
        flows: serde_json::from_value(json!([
            {"operations": ["approve"], "request_topic": "payment_request", "require_idempotency_key": true},
            {"operations": ["refund"], "request_topic": "refund_request"}
        ]))
        .unwrap(),
        ..Config::default()
    };
    let (app, mut queue) = gateway_with(config);
    let problem = block_on(refused(
        &app,
        &mut queue,
        payment(ORDER),
        400,
        "missing-idempotency-key",
    ))
    .1;
    assert_eq!(problem["outcome"], "not_sent", "{problem}");
    let mut keyed = payment(ORDER);
    keyed.insert_header("idempotency-key", "pay-1");
    block_on(sent(&app, &mut queue, keyed));
    queue.take_records();
    let mut refund = payment(ORDER);
    *refund.url_mut() = Url::parse("http://gw/v1/payments/refund").unwrap();
    let mut response: Response = block_on(answer(app.clone(), refund));
    block_on(expect_problem(&mut response, 504, "reply-timeout"));
    assert_eq!(queue.take_records()[0].topic, "refund_request");
}

// docs/openapi.json: the answers tests/openapi.rs cannot provoke in the binary.

/// Status, problem code and header names of `response`, for [`OpenApi::mismatch`].
async fn as_seen(mut response: Response) -> (u16, Option<String>, Vec<String>) {
    let names = response.header_names().map(|n| n.as_str().to_lowercase());
    let headers: Vec<String> = names.collect();
    let status = response.status() as u16;
    let body = response.body_string().await.unwrap();
    let code = serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|problem| {
            let code = problem.get("code")?.as_str()?;
            Some(code.to_string())
        });
    (status, code.filter(|_| status >= 400), headers)
}

/// The answer to `req` (a payment or an outcome lookup) whose send the test broker fails.
async fn send_failing(
    app: &Server<State>,
    queue: &mut SendQueue,
    req: Request,
    possibly_written: bool,
) -> Response {
    let (response, ()) = with_broker(app, req, async {
        let (_, ack) = next_payment(queue).await;
        let failure = SendFailure {
            possibly_written,
            message: "NOT_ENOUGH_REPLICAS".into(),
        };
        ack.send(Err(failure)).unwrap();
    })
    .await;
    queue.take_records();
    response
}

/// The answers of a gateway that is not ready, one at its in-flight cap, one whose broker
/// fails or never acknowledges a send: each is the route's documented status, code and
/// headers, and together they cover [`IN_PROCESS`].
#[test]
fn answers_only_a_broken_broker_gives_are_as_docs_openapi_json_says() {
    let doc = OpenApi::parse(include_str!("../../../docs/openapi.json"));
    let lookup = "/v1/payments/approve/k-1?order_id=K-1";
    let mut answers: Vec<(&str, Response)> = Vec::new();
    block_on(async {
        let (app, _queue) = not_ready_gateway();
        answers.push((PAY, answer(app.clone(), payment(ORDER)).await));
        answers.push((OUTCOME, get(&app, lookup).await));
        answers.push((READYZ, get(&app, "/readyz").await));

        let (app, mut queue) = gateway_with(Config {
            max_in_flight: 1,
            ..Config::default()
        });
        let last_slot = app.state().registry.register(CorrelationId::new_spring());
        answers.push((PAY, answer(app.clone(), payment(ORDER)).await));
        answers.push((OUTCOME, get(&app, lookup).await));
        drop(last_slot);
        for possibly_written in [true, false] {
            let paid = send_failing(&app, &mut queue, patient_payment(), possibly_written);
            answers.push((PAY, paid.await));
        }
        let req = request(Method::Get, lookup);
        answers.push((OUTCOME, send_failing(&app, &mut queue, req, false).await));

        let (app, _queue) = gateway_with(Config {
            default_timeout_ms: 1,
            ..Config::default()
        });
        answers.push((OUTCOME, get(&app, lookup).await));
    });
    let mut seen = Vec::new();
    let mut wrong = Vec::new();
    for (route, response) in answers {
        let (status, code, headers) = block_on(as_seen(response));
        wrong.extend(doc.mismatch(route, status, code.as_deref(), &headers));
        seen.push((route, status, code.unwrap_or_default()));
    }
    assert!(wrong.is_empty(), "docs/openapi.json: {wrong:#?}");
    let codes: Vec<&str> = seen.iter().map(|(.., code)| code.as_str()).collect();
    assert_eq!(
        codes,
        [
            "not-ready",
            "not-ready",
            "not-ready",
            "overloaded",
            "overloaded",
            "send-failed",
            "send-failed",
            "lookup-not-sent",
            "lookup-timeout"
        ]
    );
    for (route, status) in IN_PROCESS {
        let covered = seen.iter().any(|(r, s, _)| (*r, *s) == (route, status));
        assert!(
            covered,
            "{route} {status} is listed in IN_PROCESS but not provoked here"
        );
    }
}

// Traces: the caller's `traceparent`, or a new one, on the request, its dead letter and
// the answer.

/// A valid `traceparent`, as a caller would send it.
const TRACE: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

/// Sends `req` (a payment that waits 1 ms, so it ends in a 504 with a dead letter) and
/// returns the `traceparent` it was answered with, after checking that it is valid and
/// that the request record and its dead letter carry the same one.
fn answered_trace(req: Request) -> String {
    let (app, mut queue) = gateway();
    let response: Response = block_on(answer(app.clone(), req));
    let answered = header(&response, "traceparent").expect("a traceparent");
    assert!(
        TraceParent::parse(answered.as_bytes()).is_some(),
        "{answered}"
    );
    let records = queue.take_records();
    let topics: Vec<&str> = records.iter().map(|r| r.topic.as_str()).collect();
    assert_eq!(topics, ["payment_request", "payment_request-dlt"]);
    for record in &records {
        let carried = record.header("traceparent");
        assert_eq!(carried, Some(answered.as_bytes()), "{}", record.topic);
    }
    answered.to_string()
}

fn trace_id(traceparent: &str) -> &str {
    &traceparent[3..35]
}

#[test]
fn the_callers_traceparent_rides_on_the_request_and_its_dead_letter_and_comes_back() {
    let mut req = payment(ORDER);
    req.insert_header("traceparent", TRACE);
    assert_eq!(answered_trace(req), TRACE);
}

#[test]
fn without_one_valid_traceparent_each_payment_starts_a_trace_of_its_own() {
    let mut uppercase = payment(ORDER);
    uppercase.insert_header("traceparent", TRACE.to_uppercase());
    let mut twice = payment(ORDER);
    twice.append_header("traceparent", TRACE);
    twice.append_header("traceparent", TRACE);
    let fresh = [payment(ORDER), uppercase, twice].map(answered_trace);
    let mut ids: Vec<&str> = fresh.iter().map(|t| trace_id(t)).collect();
    ids.push(trace_id(TRACE));
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 4, "{fresh:?}");
}

#[test]
fn a_refusal_carries_the_callers_traceparent_too() {
    let (app, mut queue) = gateway();
    let mut req = payment(b"{not json");
    req.insert_header("traceparent", TRACE);
    let (response, _) = block_on(refused(&app, &mut queue, req, 400, "invalid-json"));
    assert_eq!(header(&response, "traceparent"), Some(TRACE));
}

/// A payment that waits 1 ms and gets its 504 (the acknowledgement held back), with the
/// caller's `traceparent` if `sent`: the answer's problem and `traceparent`, and the
/// request record (its dead letter taken from the queue).
async fn timed_out(
    app: &Server<State>,
    queue: &mut SendQueue,
    sent: Option<&str>,
) -> (Value, String, OutgoingRecord) {
    let mut req = payment(ORDER);
    if let Some(trace) = sent {
        req.insert_header("traceparent", trace);
    }
    let (mut response, (record, _ack)) = with_broker(app, req, next_payment(queue)).await;
    let problem = expect_problem(&mut response, 504, "reply-timeout").await;
    let called = header(&response, "traceparent").expect("a traceparent");
    dead_letter(queue, &record);
    (problem, called.to_string(), record)
}

/// A late reply fetched at its `reply_url` carries the trace the call's
/// answer named, as the call would have: the reply's `traceparent`, which the worker
/// echoes from the request. Both for a success and an error reply, a trace the caller
/// sent or one the gateway started.
#[test]
fn a_late_reply_is_fetched_with_the_trace_of_the_call_it_answers() {
    let (app, mut queue) = gateway();
    let registry = &app.state().registry;
    let value = json!({ "status": "APPROVED" });
    block_on(async {
        for (sent, error, status) in [(Some(TRACE), None, 200), (None, Some("declined"), 402)] {
            let (problem, called, record) = timed_out(&app, &mut queue, sent).await;
            if let Some(sent) = sent {
                assert_eq!(called, sent);
            }
            let url = problem["reply_url"].as_str().unwrap();
            let mut pending = get(&app, url).await;
            expect_problem(&mut pending, 404, "reply-pending").await;
            // The worker's reply, its trace echoed from the request.
            let mut late = reply(&value, error);
            let echoed = record.header("traceparent").expect("a traceparent");
            assert_eq!(echoed, called.as_bytes());
            late.headers
                .push(("traceparent".to_string(), Some(echoed.to_vec())));
            let id = correlation_id(&record);
            let delivery = registry.deliver(id.as_bytes(), late);
            assert!(matches!(delivery, Delivery::Kept), "{delivery:?}");
            let fetched = get(&app, url).await;
            assert_eq!(fetched.status() as u16, status);
            assert_eq!(header(&fetched, "traceparent"), Some(called.as_str()));
            // Asked again, the same.
            let again = get(&app, url).await;
            assert_eq!(header(&again, "traceparent"), Some(called.as_str()));
        }
    });
}

/// A late reply without a valid `traceparent` (a worker other than kreply's) is answered
/// without one: the gateway does not invent a trace the call never had.
#[test]
fn a_late_reply_without_a_valid_trace_is_fetched_without_one() {
    let (app, mut queue) = gateway();
    let registry = &app.state().registry;
    block_on(async {
        for carried in [None, Some(TRACE.to_uppercase())] {
            let (problem, _, record) = timed_out(&app, &mut queue, Some(TRACE)).await;
            let mut late = reply(&json!({ "status": "APPROVED" }), None);
            if let Some(carried) = carried {
                late.headers
                    .push(("traceparent".to_string(), Some(carried.into_bytes())));
            }
            registry.deliver(correlation_id(&record).as_bytes(), late);
            let fetched = get(&app, problem["reply_url"].as_str().unwrap()).await;
            assert_eq!(fetched.status() as u16, 200);
            assert_eq!(header(&fetched, "traceparent"), None);
        }
    });
}

/// A NestJS worker's error comes in `kafka_nest-err`, its value the worker's JSON body: a
/// late one must still be the error the call would have had, never a 200.
#[test]
fn a_late_nestjs_error_reply_gets_the_status_the_call_would_have_had() {
    let (app, mut queue) = gateway_with(Config {
        dialect: Dialect::Nestjs,
        ..Config::default()
    });
    let registry = &app.state().registry;
    block_on(async {
        let (problem, called, record) = timed_out(&app, &mut queue, None).await;
        let id = correlation_id(&record);
        let late = Reply {
            value: Some(br#"{"status":"DECLINED","detail":"card limit"}"#.to_vec()),
            headers: vec![
                (NEST_IS_DISPOSED.to_string(), Some(vec![0])),
                (
                    NEST_ERR.to_string(),
                    Some(
                        br#"{"status":"error","code":"declined","message":"card limit"}"#.to_vec(),
                    ),
                ),
                ("traceparent".to_string(), Some(called.clone().into_bytes())),
            ],
            partition: 0,
            offset: 0,
        };
        let delivery = registry.deliver(id.as_bytes(), late);
        assert!(matches!(delivery, Delivery::Kept), "{delivery:?}");
        let mut fetched = get(&app, problem["reply_url"].as_str().unwrap()).await;
        let declined = expect_problem(&mut fetched, 402, "declined").await;
        assert_eq!(declined["detail"], "card limit");
        assert_eq!(header(&fetched, "traceparent"), Some(called.as_str()));
    });
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(128))]

    #[test]
    fn any_traceparent_is_answered_with_a_valid_one_kept_when_it_was_valid(
        sent in crate::testing::hostile_ascii()
    ) {
        let mut req = payment(ORDER);
        req.insert_header("traceparent", sent.as_str());
        let answered = answered_trace(req);
        if let Some(valid) = TraceParent::parse(sent.as_bytes()) {
            proptest::prop_assert_eq!(answered, valid.to_string());
        }
    }
}
