//! Payments refused before their body is read, through the real connection layer: the
//! tide application served on a loopback socket as the binary serves it, with the send
//! queue standing in for the broker.
//!
//! A gateway that is not ready, or already waits for `max_in_flight` payments, answers
//! `503` at once, without waiting for a body that is large or never finished (the body
//! deadline is set far beyond the tests' patience, so waiting for it shows). A body left
//! unread must never be read as the next request: the answer says `connection: close` and
//! the connection is closed, unless the body had already arrived whole and was skipped.

use super::State;
use super::serve_gateway;
use super::test_gateway::gateway_with;
use crate::config::{Config, HttpConfig};
use crate::gateway::kafka::SendQueue;
use crate::gateway::readiness::Change;
use crate::gateway::registry::ReplyWaiter;
use crate::ops::signals::Shutdown;
use crate::wire::correlation_id::CorrelationId;
use async_std::task;
use serde_json::Value;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// How long a refusal may take to come, and the connection to close after it: far less
/// than the body deadline, far more than a loaded test machine needs.
const PROMPTLY: Duration = Duration::from_secs(3);
/// The body deadline: a gateway that waited for the body would answer only after this.
const BODY_TIMEOUT_MS: u64 = 60_000;

/// A payment body that passes every check.
const ORDER: &[u8] = br#"{"order_id":"A-1","amount":100}"#;

/// What a client sees of one answer.
#[derive(Debug)]
struct Answer {
    status: u16,
    /// Names lowercase.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn code(&self) -> String {
        let problem: Value = serde_json::from_slice(&self.body).unwrap_or_default();
        problem["code"].as_str().unwrap_or_default().to_string()
    }
}

/// A gateway with a body deadline the tests never reach, in the state `refusing` puts it
/// in, served on a loopback port. The waiter keeps the in-flight slot `refusing` took.
fn serving(
    max_in_flight: usize,
    refusing: impl FnOnce(&State) -> Option<ReplyWaiter>,
) -> (SocketAddr, SendQueue, Option<ReplyWaiter>) {
    let (app, queue) = gateway_with(Config {
        max_in_flight,
        http: HttpConfig {
            body_timeout_ms: BODY_TIMEOUT_MS,
            ..HttpConfig::default()
        },
        ..Config::default()
    });
    let slot = refusing(app.state());
    let listener = task::block_on(async_std::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    task::spawn(serve_gateway(app, listener, Shutdown::never()));
    (addr, queue, slot)
}

/// A gateway whose reply consumer has stopped reading.
fn not_ready() -> (SocketAddr, SendQueue, Option<ReplyWaiter>) {
    serving(16, |gateway| {
        let lost = (0..10).find_map(|_| gateway.readiness.observe(false));
        assert_eq!(lost, Some(Change::Lost));
        None
    })
}

/// A gateway whose only in-flight slot is taken.
fn overloaded() -> (SocketAddr, SendQueue, Option<ReplyWaiter>) {
    serving(1, |gateway| {
        Some(
            gateway
                .registry
                .register(CorrelationId::new_spring())
                .unwrap(),
        )
    })
}

/// A payment head, with `framing` (`content-length: n` or `transfer-encoding: chunked`).
fn head(framing: &str) -> Vec<u8> {
    format!(
        "POST /v1/payments/approve HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\nrequest-timeout: 1\r\n{framing}\r\n\r\n"
    )
    .into_bytes()
}

/// Reads one answer: its head, then the body its `content-length` announces.
fn read_answer(stream: &mut TcpStream) -> std::io::Result<Answer> {
    let mut raw = Vec::new();
    let mut byte = [0u8; 1];
    while !raw.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte)? == 0 {
            return Err(ErrorKind::UnexpectedEof.into());
        }
        raw.push(byte[0]);
    }
    let text = String::from_utf8(raw).unwrap();
    let mut lines = text.split("\r\n");
    let status = lines.next().unwrap()[9..12].parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let len = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .map_or(0, |(_, v)| v.parse().unwrap());
    let mut body = vec![0; len];
    stream.read_exact(&mut body)?;
    Ok(Answer {
        status,
        headers,
        body,
    })
}

/// Whether the gateway closes the connection (end of input, or a reset) within `limit`,
/// sending nothing more.
fn closed_within(stream: &mut TcpStream, limit: Duration) -> Result<(), String> {
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut rest = [0u8; 256];
    match stream.read(&mut rest) {
        Ok(0) => Ok(()),
        Err(e) if e.kind() == ErrorKind::ConnectionReset => Ok(()),
        Ok(n) => Err(format!(
            "sent more: {:?}",
            String::from_utf8_lossy(&rest[..n])
        )),
        Err(e) => Err(format!("still open after {limit:?}: {e}")),
    }
}

/// Sends `bytes` (a head and part of a body, the rest never sent) and asserts the refusal
/// `code` comes promptly, says `connection: close`, and the connection then closes.
fn refused_unread(addr: SocketAddr, queue: &mut SendQueue, bytes: &[u8], code: &str) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(PROMPTLY)).unwrap();
    let started = Instant::now();
    stream.write_all(bytes).unwrap();
    let answer = read_answer(&mut stream).unwrap_or_else(|e| {
        panic!("no answer within {PROMPTLY:?} ({e}): the gateway waits for the body ({code})")
    });
    let took = started.elapsed();
    assert_eq!(
        (answer.status, answer.code()),
        (503, code.to_string()),
        "{answer:?}"
    );
    assert!(took < PROMPTLY, "{code} took {took:?}");
    assert_eq!(answer.header("connection"), Some("close"), "{answer:?}");
    assert_eq!(answer.header("x-correlation-id"), None);
    closed_within(&mut stream, PROMPTLY).unwrap_or_else(|e| panic!("{code}: {e}"));
    assert!(queue.take_records().is_empty(), "{code}, yet sent");
}

/// A body that never finishes (announced, chunked, or never begun) and one larger than
/// the gateway takes: either
/// refusal comes at once, not after the body deadline, and closes the connection.
#[test]
fn a_refused_payment_is_answered_before_its_body_arrives_and_its_connection_closed() {
    // Within `max_body_bytes` (64 KiB), a quarter of it sent.
    let mut large = head("content-length: 65536");
    large.extend_from_slice(&[b' '; 16 * 1024]);
    // Beyond it: refused by length even when the gateway is ready.
    let mut too_large = head("content-length: 1048576");
    too_large.extend_from_slice(&[b' '; 1024]);
    let mut unfinished = head("transfer-encoding: chunked");
    unfinished.extend_from_slice(b"400\r\n");
    unfinished.extend_from_slice(&[b' '; 1024]);
    unfinished.extend_from_slice(b"\r\n");
    // The head alone: the body never comes.
    let silent = head(&format!("content-length: {}", ORDER.len()));
    for (gateway, code) in [
        (not_ready as fn() -> _, "not-ready"),
        (overloaded, "overloaded"),
    ] {
        let (addr, mut queue, _slot) = gateway();
        for bytes in [&large, &unfinished, &silent, &too_large] {
            refused_unread(addr, &mut queue, bytes, code);
        }
    }
}

/// A refused payment whose small body arrived whole is skipped, not read as a request:
/// the connection either closes or serves the next request as itself.
#[test]
fn a_connection_after_a_refusal_serves_the_next_request_as_itself_or_closes() {
    for (gateway, code) in [
        (not_ready as fn() -> _, "not-ready"),
        (overloaded, "overloaded"),
    ] {
        let (addr, mut queue, _slot) = gateway();
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(PROMPTLY)).unwrap();
        let mut payment = head(&format!("content-length: {}", ORDER.len()));
        payment.extend_from_slice(ORDER);
        'connection: for _ in 0..3 {
            stream.write_all(&payment).unwrap();
            let answer = read_answer(&mut stream).unwrap();
            assert_eq!((answer.status, answer.code()), (503, code.to_string()));
            if answer.header("connection") == Some("close") {
                closed_within(&mut stream, PROMPTLY).unwrap();
                break 'connection;
            }
            stream
                .write_all(b"GET /healthz HTTP/1.1\r\nhost: gw\r\n\r\n")
                .unwrap();
            let health = read_answer(&mut stream).unwrap();
            assert_eq!(health.status, 200, "{health:?}");
        }
        assert!(queue.take_records().is_empty(), "{code}, yet sent");
    }
}
