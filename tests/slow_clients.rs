//! Slow, idle and too many clients against a real gateway and a real tansu: each is cut
//! off within its deadline (with a 408 where an answer can be written), payments from
//! well-behaved clients still flow, and nothing a cut-off client sent reaches Kafka.

mod common;

use common::answers::{assert_problem, counter, sample};
use common::keep_alive::KeepAlive;
use common::raw::{RawClient, payment_head, payment_request};
use common::*;
use serde_json::json;
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Small deadlines, so the test waits little; the margins below are generous.
const HEAD_MS: u64 = 500;
const BODY_MS: u64 = 500;
const IDLE_MS: u64 = 1_000;
/// How long past its deadline a connection may stay open on a busy machine.
const MARGIN: Duration = Duration::from_secs(10);

fn gateway_with_limits(broker: &Broker, max_connections: usize, head_ms: u64) -> Gateway {
    let config = config_with(|c| {
        c["http"] = json!({
            "head_timeout_ms": head_ms,
            "body_timeout_ms": BODY_MS,
            "idle_timeout_ms": IDLE_MS,
            "max_connections": max_connections,
        });
    });
    let gateway = Gateway::spawn(&broker.addr, "127.0.0.2", &config);
    gateway.wait_ready();
    gateway
}

fn cut(gateway: &Gateway, reason: &str) -> f64 {
    counter(
        gateway.addr,
        &format!("kreply_http_connections_cut_total{{reason=\"{reason}\"}}"),
    )
}

#[test]
fn slow_and_idle_clients_are_cut_off_while_payments_flow() {
    let broker = Broker::start();
    broker.create_standard_topics();
    let _responder = broker.responder();
    let gateway = gateway_with_limits(&broker, 500, HEAD_MS);
    let body = json!({"order_id": "SLOW-1", "amount": 100}).to_string();

    // 40 heads that stop half-way, 40 bodies that stop half-way, 20 silent connections.
    let half_heads: Vec<RawClient> = (0..40)
        .map(|_| {
            RawClient::send(
                gateway.addr,
                b"POST /v1/payments/approve HTTP/1.1\r\nhost: gw\r\ncontent-le",
            )
        })
        .collect();
    let half_bodies: Vec<RawClient> = (0..40)
        .map(|_| {
            let mut bytes = payment_head("approve", body.len(), b"");
            bytes.extend_from_slice(&body.as_bytes()[..body.len() / 2]);
            RawClient::send(gateway.addr, &bytes)
        })
        .collect();
    let silent: Vec<RawClient> = (0..20)
        .map(|_| RawClient::send(gateway.addr, b""))
        .collect();

    // A well-behaved caller is served meanwhile.
    let paid = gateway.pay("approve", &json!({"order_id": "OK-1", "amount": 5}));
    paid.assert_status(200);
    assert_eq!(paid.json()["order_id"], "OK-1");

    for client in half_heads {
        let seen = client.wait_closed(Duration::from_millis(HEAD_MS) + MARGIN);
        let response = seen.response.expect("a 408 for a half-sent head");
        assert_problem(&response, 408, "head-timeout");
        assert_eq!(response.header("connection"), Some("close"));
    }
    for client in half_bodies {
        let seen = client.wait_closed(Duration::from_millis(BODY_MS) + MARGIN);
        let response = seen.response.expect("a 408 for a half-sent body");
        assert_problem(&response, 408, "body-timeout");
    }
    for client in silent {
        // A connection that never sent a byte gets the head's deadline, not the idle one.
        let seen = client.wait_closed(Duration::from_millis(HEAD_MS) + MARGIN);
        assert!(
            seen.response.is_none(),
            "no request began, so nothing is answered"
        );
    }

    assert_eq!(cut(&gateway, "head-timeout"), 40.0);
    assert_eq!(cut(&gateway, "body-timeout"), 40.0);
    assert!(cut(&gateway, "idle-timeout") >= 20.0);
    let requests = broker.read_topic(REQUEST_TOPIC, 1);
    let keys: Vec<_> = requests.iter().map(|r| r.key.clone().unwrap()).collect();
    assert_eq!(
        keys,
        [&b"OK-1"[..]],
        "only the well-behaved payment was produced"
    );
}

#[test]
fn an_idle_keep_alive_connection_is_closed_after_its_answer() {
    let broker = Broker::start();
    broker.create_standard_topics();
    let gateway = gateway_with_limits(&broker, 500, HEAD_MS);

    let client = RawClient::send(gateway.addr, b"GET /healthz HTTP/1.1\r\nhost: gw\r\n\r\n");
    let seen = client.wait_closed(Duration::from_millis(IDLE_MS) + MARGIN);
    seen.response.expect("the health answer").assert_status(200);
    assert!(
        seen.closed_after >= Duration::from_millis(IDLE_MS),
        "closed after {:?}, before the idle timeout",
        seen.closed_after
    );
    assert!(cut(&gateway, "idle-timeout") >= 1.0);
}

/// A connection to `gateway` once the gateway counts it as its only one open. Connections
/// the test made before (`wait_ready`'s) are closed by the client as soon as it has the
/// answer, but the gateway counts each until its task ends a moment later; one still
/// counted would take a slot meant for a holder, and free it during the refusals.
fn only_connection(gateway: &Gateway) -> TcpStream {
    let deadline = Instant::now() + MARGIN;
    let mut client = KeepAlive::new(gateway.addr);
    loop {
        let metrics = client.send("GET", "/metrics", &[], b"").unwrap();
        let open = sample(
            std::str::from_utf8(&metrics.body).unwrap(),
            "kreply_http_connections",
        );
        if open == 1.0 {
            return client
                .into_stream()
                .expect("the metrics connection stays open");
        }
        assert!(Instant::now() < deadline, "{open} connections still open");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn connections_beyond_the_cap_get_503_with_retry_after_and_produce_nothing() {
    let broker = Broker::start();
    broker.create_standard_topics();
    let _responder = broker.responder();
    let cap = 50;
    // A head timeout long enough that the slots stay held while the test is refused.
    let held_ms = 5_000;
    let gateway = gateway_with_limits(&broker, cap, held_ms);
    // Hold every slot with half a head.
    let half_head = b"GET /healthz HTTP/1.1\r\n";
    let mut holders = vec![RawClient::send_on(only_connection(&gateway), half_head)];
    holders.extend((1..cap).map(|_| RawClient::send(gateway.addr, half_head)));

    let refused: Vec<HttpResponse> = (0..10)
        .map(|i| {
            let body = json!({"order_id": format!("OVER-{i}")}).to_string();
            common::raw::exchange(gateway.addr, &payment_request(body.as_bytes(), b""))
        })
        .collect();
    for response in &refused {
        let problem = assert_problem(response, 503, "too-many-connections");
        assert_eq!(problem["outcome"], "not_sent");
        assert_eq!(response.header("retry-after"), Some("1"));
    }

    // As the held connections are cut off (head timeout), the gateway serves again.
    for holder in holders {
        holder.wait_closed(Duration::from_millis(held_ms) + MARGIN);
    }
    let deadline = Instant::now() + MARGIN;
    let paid = loop {
        let response = gateway.pay("approve", &json!({"order_id": "AFTER-1"}));
        if response.status != 503 || Instant::now() > deadline {
            break response;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    paid.assert_status(200);
    assert!(counter(gateway.addr, "kreply_http_connections_refused_total") >= 10.0);
    let requests = broker.read_topic(REQUEST_TOPIC, 1);
    let keys: Vec<_> = requests.iter().map(|r| r.key.clone().unwrap()).collect();
    assert_eq!(keys, [&b"AFTER-1"[..]], "a refused connection produced");
}
