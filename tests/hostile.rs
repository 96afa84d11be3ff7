//! Hostile input in both directions, against a real gateway and a real tansu: raw bytes
//! no HTTP client would send get 4xx problems and produce nothing, and garbage on the
//! reply topic is counted and dropped while real payments get their real replies.

mod common;

use common::answers::{assert_problem, counter};
use common::raw::{exchange, payment_request};
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
