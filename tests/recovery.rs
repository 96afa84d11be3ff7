//! Broker restarts: the gateway and the worker recover without being restarted, readiness
//! does not flap, and a restart with the log kept loses and repeats nothing.

mod common;

use common::answers::counter;
use common::*;
use serde_json::json;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The recovery bound: payments succeed again within this long after the broker answers.
const RECOVERY: Duration = Duration::from_secs(10);
const RESULTS_TOPIC: &str = "payment_results";

/// The shipped config with topics created on demand. The worker keeps the shipped 10 s
/// session: the 4 s outage below must not outlast it, or tansu evicts the worker and its
/// rejoin can loop for many seconds (a tansu group-forming fault, see
/// docs/known-limits.md), which is not what these tests are about.
fn test_config() -> PathBuf {
    config_with(|c| {
        c["topics"]["auto_create"] = json!(true);
    })
}

/// The four topics a restarted, empty broker needs again, as an operator would create them.
fn recreate_topics(broker: &Broker) {
    broker.create_topics(&[REQUEST_TOPIC, REPLY_LOCAL2, DLQ_TOPIC, RESULTS_TOPIC], 3);
}

/// One payment's answer, as the caller saw it.
#[derive(Debug, Clone)]
struct Answer {
    status: u16,
    code: String,
    outcome: String,
    correlation_id: Option<String>,
    elapsed: Duration,
    at: Instant,
    /// When it was sent, in ms since the epoch, to compare with record timestamps.
    sent_ms: i64,
    timeout_ms: u64,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn pay(gateway: &Gateway, order_id: &str, timeout_ms: u64) -> Answer {
    let started = Instant::now();
    let sent_ms = now_ms();
    let timeout = timeout_ms.to_string();
    let response = gateway.pay_with(
        "approve",
        &[("request-timeout", &timeout), ("idempotency-key", order_id)],
        &json!({"order_id": order_id, "amount": 100}),
    );
    let problem = if response.status == 200 {
        json!({})
    } else {
        response.json()
    };
    let text = |key: &str| problem[key].as_str().unwrap_or_default().to_string();
    Answer {
        status: response.status,
        code: text("code"),
        outcome: text("outcome"),
        correlation_id: response.header("x-correlation-id").map(str::to_string),
        elapsed: started.elapsed(),
        at: Instant::now(),
        sent_ms,
        timeout_ms,
    }
}

/// A caller always gets a definite answer: the reply, a refusal before anything was sent,
/// or a failure that says whether the payment may have happened.
fn assert_definite(answer: &Answer) {
    let definite = match (answer.status, answer.code.as_str()) {
        (200, _) => true,
        (503, "not-ready") => answer.outcome == "not_sent",
        (503, "send-failed") => ["not_sent", "unknown"].contains(&answer.outcome.as_str()),
        (504, "reply-timeout") => answer.outcome == "unknown",
        _ => false,
    };
    assert!(definite, "not a definite answer: {answer:?}");
}

/// Pays until a payment succeeds (every answer on the way definite), then asserts the
/// next `then` payments succeed too. Returns every answer on the way.
fn pay_until_recovered(gateway: &Gateway, prefix: &str, then: usize) -> Vec<Answer> {
    let deadline = Instant::now() + RECOVERY;
    let mut answers = Vec::new();
    for i in 0.. {
        let answer = pay(gateway, &format!("{prefix}-{i}"), 2000);
        assert_definite(&answer);
        answers.push(answer.clone());
        if answer.status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no payment succeeded within {RECOVERY:?} of the broker answering again; answers: {answers:#?}\ngateway log:\n{}",
            gateway.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    for i in 0..then {
        let answer = pay(gateway, &format!("{prefix}-after-{i}"), 5000);
        assert_eq!(answer.status, 200, "{answer:?}\n{}", gateway.log_text());
    }
    answers
}

fn still_running(daemon: &mut Daemon) {
    assert!(
        daemon.running(),
        "the process exited; log:\n{}",
        daemon.log_text()
    );
}

#[test]
fn a_broker_restarted_empty_is_recovered_from_without_restarting_the_gateway() {
    let mut broker = Broker::start();
    broker.create_standard_topics();
    let responder = broker.responder();
    let mut gateway = Gateway::start(&broker.addr, "127.0.0.2");
    for i in 0..6 {
        assert_eq!(pay(&gateway, &format!("before-{i}"), 5000).status, 200);
    }

    drop(responder);
    broker.kill_and_restart(Duration::from_millis(500));
    broker.create_standard_topics();
    let _responder = broker.responder();
    pay_until_recovered(&gateway, "after", 5);

    still_running(&mut gateway.daemon);
    let log = gateway.log_text();
    assert!(
        log.contains("opening the reply consumer again")
            || log.contains("opening it again on a new connection"),
        "no log line for the reopened reply consumer:\n{log}"
    );
    assert!(counter(gateway.addr, "kreply_reply_consumer_reopens_total") >= 1.0);
}

#[test]
fn a_broker_restarted_empty_is_recovered_from_without_restarting_the_worker() {
    let mut broker = Broker::start();
    let pg = MockPg::start(&["--latency-ms", "5"]);
    let config = test_config();
    let mut gateway = Gateway::spawn(&broker.addr, "127.0.0.2", &config);
    gateway.wait_ready();
    let mut worker = Worker::spawn("recovery-worker", &broker.addr, &pg, &config);
    wait_assigned(&[&worker], 3);
    for i in 0..6 {
        assert_eq!(pay(&gateway, &format!("w-before-{i}"), 5000).status, 200);
    }

    broker.kill_and_restart(Duration::from_millis(500));
    recreate_topics(&broker);
    pay_until_recovered(&gateway, "w-after", 5);

    still_running(&mut gateway.daemon);
    still_running(&mut worker.daemon);
    let charges = pg.charges();
    for (key, times) in charges["charges"].as_object().unwrap() {
        assert_eq!(times, 1, "{key} charged {times} times: {charges}");
    }
}

/// `/readyz` through an outage and a recovery, sampled every 50 ms, and the payments made
/// in between: readiness goes down once and up once, and payments are refused as
/// not-ready exactly while it is down.
#[test]
fn readiness_does_not_flap_through_an_outage_and_agrees_with_payments() {
    let mut broker = Broker::start();
    broker.create_standard_topics();
    let responder = broker.responder();
    let gateway = Gateway::start(&broker.addr, "127.0.0.2");
    assert_eq!(pay(&gateway, "r-before", 5000).status, 200);

    drop(responder);
    broker.stop();
    let started = Instant::now();
    let mut probes: Vec<(Instant, u16)> = Vec::new();
    let mut answers: Vec<Answer> = Vec::new();
    let mut restarted = false;
    let mut recovered_at: Option<Instant> = None;
    let mut _responder = None;
    let mut i = 0;
    while recovered_at.is_none_or(|at| at.elapsed() < Duration::from_secs(3)) {
        assert!(
            started.elapsed() < Duration::from_secs(40),
            "no recovery; probes: {:?}\n{}",
            statuses(&probes),
            gateway.log_text()
        );
        let status = get(gateway.addr, "/readyz").unwrap().status;
        probes.push((Instant::now(), status));
        let down = probes.iter().any(|(_, s)| *s == 503);
        if down && !restarted {
            // Down for a while (3 s stale + hysteresis), then back and empty.
            std::thread::sleep(Duration::from_secs(1));
            broker.restart();
            broker.create_standard_topics();
            _responder = Some(broker.responder());
            restarted = true;
        }
        if i % 4 == 0 {
            let answer = pay(&gateway, &format!("r-{i}"), 1000);
            assert_definite(&answer);
            answers.push(answer);
        }
        if restarted && status == 200 && recovered_at.is_none() {
            recovered_at = Some(Instant::now());
        }
        i += 1;
        std::thread::sleep(Duration::from_millis(50));
    }

    let runs = statuses(&probes);
    assert_eq!(
        runs.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        [200, 503, 200],
        "readiness flapped: {runs:?}"
    );
    let down_from = probes.iter().find(|(_, s)| *s == 503).unwrap().0;
    let up_again = recovered_at.unwrap();
    for answer in &answers {
        let sent = answer.at - answer.elapsed;
        if answer.code == "not-ready" {
            assert!(
                answer.at >= down_from && sent <= up_again,
                "refused as not-ready while /readyz said ready: {answer:?}"
            );
        }
        if answer.status == 200 {
            assert!(
                answer.at < down_from || sent >= up_again - Duration::from_millis(100),
                "a payment succeeded while /readyz said not ready: {answer:?}"
            );
        }
    }
}

/// Consecutive equal statuses folded into (status, count) runs.
fn statuses(probes: &[(Instant, u16)]) -> Vec<(u16, usize)> {
    let mut runs: Vec<(u16, usize)> = Vec::new();
    for (_, status) in probes {
        match runs.last_mut() {
            Some((last, count)) if last == status => *count += 1,
            _ => runs.push((*status, 1)),
        }
    }
    runs
}

/// A broker with its log kept on disk is SIGKILLed and restarted under load. Callers
/// during the outage get a definite answer within their timeout + 1 s; afterwards every
/// reply written reaches its waiter (or comes after its caller gave up), and the worker
/// resumes from its committed offsets: nothing is charged twice.
#[test]
fn a_broker_restarted_with_its_log_loses_no_reply_and_charges_nothing_twice() {
    let mut broker = Broker::start_persistent();
    let pg = MockPg::start(&["--latency-ms", "5"]);
    let config = test_config();
    let gateway = Gateway::spawn(&broker.addr, "127.0.0.2", &config);
    gateway.wait_ready();
    let worker = Worker::spawn("recovery-sqlite-worker", &broker.addr, &pg, &config);
    wait_assigned(&[&worker], 3);
    assert_eq!(pay(&gateway, "s-warm", 5000).status, 200);

    const TIMEOUT_MS: u64 = 2000;
    let stop = AtomicBool::new(false);
    let (answers, restarted_at) = std::thread::scope(|s| {
        let callers: Vec<_> = (0..6)
            .map(|c| {
                let (gateway, stop) = (&gateway, &stop);
                s.spawn(move || {
                    let mut answers = Vec::new();
                    for i in 0.. {
                        if stop.load(Ordering::Acquire) {
                            break;
                        }
                        answers.push(pay(gateway, &format!("s-{c}-{i}"), TIMEOUT_MS));
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    answers
                })
            })
            .collect();
        std::thread::sleep(Duration::from_secs(2));
        // Down longer than reply_stale_after_ms (3 s), so the reply consumer is reopened.
        broker.kill_and_restart(Duration::from_secs(4));
        let restarted_at = (Instant::now(), now_ms());
        std::thread::sleep(RECOVERY + Duration::from_secs(3));
        stop.store(true, Ordering::Release);
        let answers: Vec<Answer> = callers
            .into_iter()
            .flat_map(|c| c.join().unwrap())
            .collect();
        (answers, restarted_at)
    });

    let limit = Duration::from_millis(TIMEOUT_MS) + Duration::from_secs(1);
    for answer in &answers {
        assert_definite(answer);
        assert!(answer.elapsed <= limit, "answered too late: {answer:?}");
    }
    let (restarted_at, restarted_ms) = restarted_at;
    let recovered = restarted_at + RECOVERY;
    let late_failures: Vec<&Answer> = answers
        .iter()
        .filter(|a| a.at - a.elapsed > recovered && a.status != 200)
        .collect();
    assert!(
        late_failures.is_empty(),
        "payments still failing {RECOVERY:?} after the restart: {late_failures:#?}\n{}",
        gateway.log_text()
    );

    // Every reply on the topic for a caller of this run reached it, or came after it gave up.
    let by_id: HashMap<&str, &Answer> = answers
        .iter()
        .filter_map(|a| Some((a.correlation_id.as_deref()?, a)))
        .collect();
    let replies = broker.read_topic(REPLY_LOCAL2, 1);
    let mut checked = 0;
    for reply in &replies {
        let id = uuid_of(reply.header("kafka_correlationId").flatten().unwrap());
        let Some(answer) = by_id.get(id.as_str()) else {
            continue; // the warm-up payment
        };
        checked += 1;
        // A reply written after the restart, well before its caller's deadline, must have
        // reached it. (One written just before the kill may only be read after the
        // caller's deadline, as a late reply.)
        let deadline_ms = answer.sent_ms + answer.timeout_ms as i64;
        let late = reply.timestamp < restarted_ms || reply.timestamp >= deadline_ms - 1000;
        assert!(
            answer.status == 200 || (answer.status == 504 && late),
            "a reply was written for {id} at {} ms, {} ms before its caller's deadline, but the caller got {answer:?}",
            reply.timestamp,
            deadline_ms - reply.timestamp
        );
    }
    assert!(checked > 0, "no reply of the run was found on the topic");
    // Each reply was read once: the ones no caller took (kept as late replies, or with no
    // waiter at all) are exactly the surplus.
    let taken = answers.iter().filter(|a| a.status == 200).count() + 1; // + the warm-up
    let untaken = counter(gateway.addr, "kreply_replies_without_waiter_total")
        + counter(gateway.addr, "kreply_late_replies_kept_total");
    assert_eq!(
        untaken as usize,
        replies.len() - taken,
        "replies read twice or not at all"
    );
    let charges = pg.charges();
    for (key, times) in charges["charges"].as_object().unwrap() {
        assert_eq!(times, 1, "{key} charged {times} times: {charges}");
    }
}

/// The text form of a Spring correlation id (16 raw bytes, two big-endian halves).
fn uuid_of(bytes: &[u8]) -> String {
    uuid::Uuid::from_slice(bytes).unwrap().to_string()
}
