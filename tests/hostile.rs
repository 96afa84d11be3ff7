//! Hostile input in both directions, against a real gateway and a real tansu: raw bytes
//! no HTTP client would send get 4xx problems and produce nothing, and garbage on the
//! reply topic is counted and dropped while real payments get their real replies.

mod common;

use common::answers::{assert_problem, counter};
use common::raw::{RawClient, exchange, payment_head, payment_request};
use common::*;
use krafka::Record;
use serde_json::json;
use std::time::Duration;

#[test]
fn raw_hostile_requests_get_4xx_problems_and_produce_nothing() {
    let broker = Broker::start();
    broker.create_standard_topics();
    let _responder = broker.responder();
    let gateway = Gateway::start(&broker.addr, "127.0.0.2");
    let fine = br#"{"order_id":"H-1","amount":1}"#;

    let malformed_heads: [&[u8]; 5] = [
        b"idempotency-key: a\rb\r\n",
        b"idempotency-key: \xff\xfe\r\n",
        b"idempotency-key: a\x01b\r\n",
        b"x-note: \x00\r\n",
        b"bad header line without a colon\r\n",
    ];
    for extra in malformed_heads {
        let response = exchange(gateway.addr, &payment_request(fine, extra));
        assert_problem(&response, 400, "malformed-request");
    }
    // A header line split by a bare CR/LF pair is two headers; the key itself must still
    // be visible ASCII.
    let key_with_space = payment_request(fine, b"idempotency-key: a b\r\n");
    assert_problem(
        &exchange(gateway.addr, &key_with_space),
        400,
        "invalid-idempotency-key",
    );
    let long_key = format!("idempotency-key: {}\r\n", "k".repeat(256));
    assert_problem(
        &exchange(gateway.addr, &payment_request(fine, long_key.as_bytes())),
        400,
        "invalid-idempotency-key",
    );

    let bodies: Vec<(Vec<u8>, u16, &str)> = vec![
        (b"{\"order_id\":\"\xff\xfe\"}".to_vec(), 400, "invalid-json"),
        (
            br#"{"order_id":"A\r\nforged log line"}"#.to_vec(),
            400,
            "invalid-order-id",
        ),
        (
            br#"{"order_id":"A\u0000"}"#.to_vec(),
            400,
            "invalid-order-id",
        ),
        (
            br#"{"order_id":"A","amount":99999999999999999999}"#.to_vec(),
            400,
            "invalid-number",
        ),
        (
            br#"{"order_id":"A","amount":1e400}"#.to_vec(),
            400,
            "invalid-json",
        ),
        (deep(40), 400, "invalid-body"),
        (deep(10_000), 400, "invalid-json"),
        (ten_megabytes(), 413, "body-too-large"),
    ];
    for (body, status, code) in &bodies {
        let response = exchange(gateway.addr, &payment_request(body, b""));
        assert_problem(&response, *status, code);
    }
    // The one well-formed call among them is the only request produced.
    gateway
        .pay("approve", &json!({"order_id": "H-OK"}))
        .assert_status(200);
    let requests = broker.read_topic(REQUEST_TOPIC, 1);
    let keys: Vec<_> = requests.iter().map(|r| r.key.clone().unwrap()).collect();
    assert_eq!(keys, [&b"H-OK"[..]]);
    assert_eq!(
        counter(
            gateway.addr,
            "kreply_http_connections_cut_total{reason=\"malformed-head\"}"
        ),
        5.0
    );
}

// Issue 19, item 7: requests whose end the gateway cannot know for sure (RFC 9112
// section 6.3) are answered 400 at once, and the connection is closed.

/// A payment body that every check passes, so only the framing around it can refuse it.
const FRAMED: &[u8] = br#"{"order_id":"H-FRAMED","amount":1}"#;

/// A header value with a space and a letter outside ASCII: http-types used to panic on it,
/// so the connection was dropped without a word.
#[test]
fn a_non_ascii_idempotency_key_is_400_and_produces_nothing() {
    let request = payment_request(FRAMED, "idempotency-key: ab ü\r\n".as_bytes());
    refused_then_closed(&request, "malformed-request", "0xc3");
}

/// Two lengths: async-h1 took the last, so a front proxy that took the first would see
/// one request where the gateway read another (here: a payment, then garbage).
#[test]
fn two_different_content_lengths_are_400_and_produce_nothing() {
    let smuggled = b"GET /healthz HTTP/1.1\r\n\r\n";
    let second = format!("content-length: {}\r\nconnection: close\r\n", FRAMED.len());
    let mut request = payment_head("approve", FRAMED.len() + smuggled.len(), second.as_bytes());
    request.extend_from_slice(FRAMED);
    request.extend_from_slice(smuggled);
    refused_then_closed(
        &request,
        "malformed-request",
        "Content-Length is given twice",
    );
}

/// A chunk size beyond 64 bits: the body's end is unknowable.
#[test]
fn a_chunk_size_beyond_64_bits_is_400_and_produces_nothing() {
    let mut request = b"POST /v1/payments/approve HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\nffffffffffffffffffff\r\n".to_vec();
    request.extend_from_slice(FRAMED);
    request.extend_from_slice(b"\r\n0\r\n\r\n");
    refused_then_closed(&request, "malformed-request", "overflowed 64 bits");
}

/// Sends `request` to a fresh gateway and asserts its answer: `400 Bad Request` with the
/// problem `code` (its detail naming `cause`), then the connection closed; and that of it
/// and a well-formed payment sent after, only the latter reached the request topic.
fn refused_then_closed(request: &[u8], code: &str, cause: &str) {
    let broker = Broker::start();
    broker.create_standard_topics();
    let _responder = broker.responder();
    let gateway = Gateway::start(&broker.addr, "127.0.0.2");
    let seen = RawClient::send(gateway.addr, request).wait_closed(Duration::from_secs(5));
    assert!(
        seen.raw.starts_with(b"HTTP/1.1 400 Bad Request\r\n"),
        "{:?}",
        String::from_utf8_lossy(&seen.raw)
    );
    let problem = assert_problem(&seen.response.unwrap(), 400, code);
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains(cause), "{detail}");
    gateway
        .pay("approve", &json!({"order_id": "H-AFTER"}))
        .assert_status(200);
    let produced = broker.read_topic(REQUEST_TOPIC, 1);
    let keys: Vec<_> = produced.iter().map(|r| r.key.clone().unwrap()).collect();
    assert_eq!(keys, [&b"H-AFTER"[..]]);
}

/// A payment body nested `depth` levels.
fn deep(depth: usize) -> Vec<u8> {
    format!(
        r#"{{"order_id":"D-1","x":{}1{}}}"#,
        "[".repeat(depth),
        "]".repeat(depth)
    )
    .into_bytes()
}

fn ten_megabytes() -> Vec<u8> {
    let mut body = br#"{"order_id":"BIG-1","pad":""#.to_vec();
    body.resize(10 << 20, b'x');
    body
}

#[test]
fn garbage_replies_are_counted_and_dropped_while_real_payments_get_their_replies() {
    let broker = Broker::start();
    broker.create_standard_topics();
    // The real replies come late, so the garbage is read while every caller waits.
    let responder = broker.slow_responder(Duration::from_secs(3));
    let gateway = Gateway::start(&broker.addr, "127.0.0.2");

    let callers: Vec<_> = (0..8)
        .map(|i| {
            let gateway_addr = gateway.addr;
            std::thread::spawn(move || {
                let body = json!({"order_id": format!("G-{i}"), "amount": i}).to_string();
                request(
                    gateway_addr,
                    "POST",
                    "/v1/payments/approve",
                    &[
                        ("content-type", "application/json"),
                        ("request-timeout", "20000"),
                    ],
                    body.as_bytes(),
                )
                .unwrap()
            })
        })
        .collect();
    let seen = wait_for_requests(&responder, 8);
    let id_of = |order: &str| {
        let request = seen
            .iter()
            .find(|r| r.key.as_deref() == Some(order.as_bytes()))
            .unwrap();
        request
            .header("kafka_correlationId")
            .flatten()
            .unwrap()
            .clone()
    };

    let producer = broker
        .runtime
        .block_on(broker.kafka().producer().build())
        .unwrap();
    let garbage = [
        Record::new(REPLY_LOCAL2, "{}"),
        Record::new(REPLY_LOCAL2, "{}").header("kafka_correlationId", &b"short"[..]),
        Record::new(REPLY_LOCAL2, "{}").header("kafka_correlationId", vec![7u8; 20]),
        Record::new(REPLY_LOCAL2, "APPROVED, honest").header("kafka_correlationId", id_of("G-0")),
        Record::new(REPLY_LOCAL2, "{}")
            .header("kafka_correlationId", id_of("G-1"))
            .header("kreply_error", &b"out-of-cheese"[..]),
    ];
    broker.runtime.block_on(async {
        for record in garbage {
            let _ack = producer.send(record).await.unwrap();
        }
    });

    let answers: Vec<HttpResponse> = callers.into_iter().map(|c| c.join().unwrap()).collect();
    let not_json = assert_problem(&answers[0], 502, "invalid-reply");
    assert_eq!(not_json["outcome"], "unknown");
    let unknown_code = assert_problem(&answers[1], 502, "worker-error");
    assert_eq!(unknown_code["outcome"], "unknown");
    for (i, answer) in answers.iter().enumerate().skip(2) {
        answer.assert_status(200);
        assert_eq!(
            answer.json()["order_id"],
            format!("G-{i}"),
            "a reply reached the wrong caller"
        );
    }
    for (reason, count) in [
        ("no-correlation-id", 1.0),
        ("bad-correlation-id", 2.0),
        ("not-json", 1.0),
        ("unknown-error-code", 1.0),
    ] {
        let series = format!("kreply_bad_replies_total{{reason=\"{reason}\"}}");
        assert_eq!(counter(gateway.addr, &series), count, "{series}");
    }
    gateway
        .daemon
        .wait_for_log("dropped: no-correlation-id", Duration::from_secs(5));
}

/// Waits until the responder has read `count` requests; returns them.
fn wait_for_requests(responder: &Responder, count: usize) -> Vec<krafka::ConsumerRecord> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let seen = responder.seen.lock().unwrap().clone();
        if seen.len() >= count {
            return seen;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "only {} requests seen",
            seen.len()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
