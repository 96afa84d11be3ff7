//! Running kreply as an operator does: metrics, graceful stop, check-config.

mod common;

use common::answers::sample;
use common::system::System;
use common::*;
use serde_json::json;
use std::net::TcpStream;
use std::time::Duration;

/// How many payments wait for a reply, from `/metrics`.
fn waiting_replies(gateway: &Gateway) -> usize {
    let text = String::from_utf8(get(gateway.addr, "/metrics").unwrap().body).unwrap();
    sample(&text, "kreply_waiting_replies") as usize
}

#[test]
fn gateway_metrics_count_known_traffic() {
    let broker = Broker::start();
    broker.create_standard_topics();
    let _responder = broker.responder();
    let gateway = Gateway::start(&broker.addr, "127.0.0.2");

    assert_eq!(
        gateway.pay("approve", &json!({"order_id": "M-1"})).status,
        200
    );
    assert_eq!(
        gateway.pay("approve", &json!({"order_id": "M-2"})).status,
        200
    );
    assert_eq!(gateway.pay("refund", &json!({"amount": 1})).status, 400);
    assert_eq!(
        gateway.pay("teleport", &json!({"order_id": "M-3"})).status,
        404
    );
    drop(_responder);
    let timed_out = gateway.pay_with(
        "cancel",
        &[("request-timeout", "300")],
        &json!({"order_id": "M-4"}),
    );
    assert_eq!(timed_out.status, 504);

    let response = get(gateway.addr, "/metrics").unwrap();
    assert_eq!(response.status, 200);
    assert!(
        response
            .header("content-type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = String::from_utf8(response.body).unwrap();
    let expected = [
        (
            r#"kreply_requests_total{operation="approve",outcome="approved"}"#,
            2.0,
        ),
        (
            r#"kreply_requests_total{operation="refund",outcome="refused"}"#,
            1.0,
        ),
        (
            r#"kreply_requests_total{operation="unknown",outcome="refused"}"#,
            1.0,
        ),
        (
            r#"kreply_requests_total{operation="cancel",outcome="timeout"}"#,
            1.0,
        ),
        (
            r#"kreply_request_duration_seconds_count{operation="approve",outcome="approved"}"#,
            2.0,
        ),
        (
            r#"kreply_request_duration_seconds_bucket{operation="approve",outcome="approved",le="+Inf"}"#,
            2.0,
        ),
        (r#"kreply_dlq_writes_total{cause="reply-timeout"}"#, 1.0),
        (r#"kreply_dlq_writes_total{cause="send-failed"}"#, 0.0),
        // The timeout's 300 ms stay out of the approved payments' latency.
        (
            r#"kreply_request_duration_seconds_count{operation="cancel",outcome="timeout"}"#,
            1.0,
        ),
        (
            r#"kreply_request_duration_seconds_count{operation="cancel",outcome="approved"}"#,
            0.0,
        ),
        ("kreply_in_flight_requests", 0.0),
        ("kreply_ready", 1.0),
        ("kreply_produce_errors_total", 0.0),
    ];
    for (series, value) in expected {
        assert_eq!(sample(&text, series), value, "{series}");
    }
    for partition in 0..3 {
        assert_eq!(
            sample(
                &text,
                &format!(r#"kreply_reply_consumer_lag{{partition="{partition}"}}"#)
            ),
            0.0
        );
    }
    assert!(
        !text.contains("teleport"),
        "an unknown operation became a label"
    );
}

#[test]
fn losing_the_brokers_turns_readyz_503_and_refuses_payments_unsent() {
    let mut broker = Broker::start();
    broker.create_standard_topics();
    let gateway = Gateway::start(&broker.addr, "127.0.0.2");
    broker.stop();

    // reply_stale_after_ms is 3 s in the shipped config.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while get(gateway.addr, "/readyz").unwrap().status == 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "still ready 10 s after the broker died"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let refused = gateway.pay("approve", &json!({"order_id": "L-1"}));
    refused.assert_status(503);
    let problem = refused.json();
    assert_eq!(
        (problem["code"].as_str(), problem["outcome"].as_str()),
        (Some("not-ready"), Some("not_sent"))
    );
    gateway.daemon.wait_for_log(
        "not ready: the reply consumer has heard nothing",
        Duration::from_secs(1),
    );
}

#[test]
fn sigterm_lets_in_flight_payments_finish_refuses_new_ones_and_exits_0() {
    let broker = Broker::start();
    broker.create_standard_topics();
    let _responder = broker.slow_responder(Duration::from_millis(1500));
    let mut gateway = Gateway::start(&broker.addr, "127.0.0.2");

    let statuses: Vec<u16> = std::thread::scope(|s| {
        let callers: Vec<_> = (0..5)
            .map(|i| {
                let gateway = &gateway;
                s.spawn(move || {
                    gateway
                        .pay("approve", &json!({"order_id": format!("G-{i}")}))
                        .status
                })
            })
            .collect();
        while waiting_replies(&gateway) < 5 {
            std::thread::sleep(Duration::from_millis(10));
        }
        gateway.daemon.signal("TERM");
        gateway
            .daemon
            .wait_for_log("stopping: /readyz is 503", Duration::from_secs(5));
        std::thread::sleep(Duration::from_millis(200));
        assert!(
            TcpStream::connect(gateway.addr).is_err(),
            "a new connection was accepted while stopping"
        );
        callers.into_iter().map(|c| c.join().unwrap()).collect()
    });

    assert_eq!(
        statuses,
        vec![200; 5],
        "in-flight callers did not get their replies"
    );
    assert_eq!(gateway.daemon.wait_exit(Duration::from_secs(15)), Some(0));
    assert!(gateway.log_text().contains("stopped"));
}

#[test]
fn a_second_signal_exits_at_once() {
    let broker = Broker::start();
    broker.create_standard_topics();
    let mut gateway = Gateway::start(&broker.addr, "127.0.0.2");
    // A payment nobody answers keeps the first stop waiting for up to 30 s.
    let started = std::time::Instant::now();
    std::thread::scope(|s| {
        let addr = gateway.addr;
        let body = json!({"order_id": "W-1"}).to_string();
        // Ends with an error when the process exits under it.
        s.spawn(move || {
            let headers = [
                ("content-type", "application/json"),
                ("request-timeout", "30000"),
            ];
            let _ = request(
                addr,
                "POST",
                "/v1/payments/approve",
                &headers,
                body.as_bytes(),
            );
        });
        while waiting_replies(&gateway) < 1 {
            std::thread::sleep(Duration::from_millis(10));
        }
        gateway.daemon.signal("TERM");
        gateway
            .daemon
            .wait_for_log("stopping:", Duration::from_secs(5));
        gateway.daemon.signal("INT");
    });
    assert_eq!(gateway.daemon.wait_exit(Duration::from_secs(5)), Some(1));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the second signal did not cut the wait short"
    );
    assert!(gateway.log_text().contains("again: exiting now"));
}

#[test]
fn check_config_reports_a_good_setup() {
    let broker = Broker::start();
    broker.create_standard_topics();
    broker.create_topics(&["payment_results"], 3);
    let config = shipped_config();
    let (ok, out) = run_kreply(
        &["check-config", "--config", config.to_str().unwrap()],
        &[
            ("KREPLY_BROKERS", &broker.addr),
            ("KREPLY_HOST_IP", "127.0.0.2"),
        ],
    );
    assert!(ok, "{out}");
    for line in [
        "ok  host table",
        "-> reply topic payment_response_local2",
        &format!("ok  brokers {}", broker.addr),
        "ok  request topic payment_request: 3 partition(s)",
        "ok  reply topic payment_response_local2: 3 partition(s)",
        "ok  dead-letter topic payment_request-dlt: 3 partition(s)",
        "ok  results (worker) topic payment_results: 3 partition(s)",
        "all checks passed",
    ] {
        assert!(out.contains(line), "missing {line:?} in:\n{out}");
    }
}

#[test]
fn check_config_fails_with_one_sentence_on_each_broken_case() {
    let broker = Broker::start();
    broker.create_topics(&[REQUEST_TOPIC, REPLY_LOCAL2], 3); // no DLQ topic
    let bad_json = config_with(|_| {});
    std::fs::write(&bad_json, "{\"brokers\": [").unwrap();
    let nobody = format!("127.0.0.1:{}", free_port());
    let shipped = shipped_config();
    let cases: [(&std::path::Path, &str, &str, &str); 4] = [
        (
            &bad_json,
            &broker.addr,
            "127.0.0.2",
            "is not a valid kreply config",
        ),
        (
            &shipped,
            &broker.addr,
            "10.9.9.9",
            "none of this host's IPs (10.9.9.9) is in the host table",
        ),
        (
            &shipped,
            &nobody,
            "127.0.0.2",
            "cannot reach the Kafka brokers",
        ),
        (
            &shipped,
            &broker.addr,
            "127.0.0.2",
            "the dead-letter topic \"payment_request-dlt\" does not exist",
        ),
    ];
    for (config, brokers, host, expected) in cases {
        let (ok, out) = run_kreply(
            &["check-config", "--config", config.to_str().unwrap()],
            &[("KREPLY_BROKERS", brokers), ("KREPLY_HOST_IP", host)],
        );
        assert!(!ok, "check-config passed: {out}");
        let errors: Vec<&str> = out.lines().filter(|l| l.starts_with("kreply: ")).collect();
        assert_eq!(errors.len(), 1, "{out}");
        assert!(
            errors[0].contains(expected),
            "expected {expected:?}, got:\n{out}"
        );
    }
}

/// A worker left on Kafka's rules (the default) against a broker without KIP-848 groups
/// (tansu 0.6) stops with one sentence naming the setting, instead of polling forever.
#[test]
fn a_worker_on_kafka_rules_against_tansu_stops_with_one_sentence() {
    let broker = Broker::start();
    let config = config_with(|c| c["topics"]["auto_create"] = json!(true));
    let metrics = format!("127.0.0.1:{}", free_port());
    let (ok, stderr) = run_kreply(
        &["worker", "--config", config.to_str().unwrap()],
        &[
            ("KREPLY_BROKERS", &broker.addr),
            ("KREPLY_BROKER_COMPAT", "kafka"),
            ("KREPLY_METRICS_LISTEN", &metrics),
        ],
    );
    assert!(!ok, "the worker did not stop: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert_holds(&stderr, &["KIP-848", "\"broker_compat\": \"tansu-0.6\""]);
}

/// One start reads as one: a process logs a single `startup: connected to` line naming
/// every client it opened, not one per client (the worker opens three, the gateway two).
#[test]
fn each_process_logs_one_connected_line_naming_its_clients() {
    let system = System::start(1, &[], 3000);
    for (who, log, clients) in [
        (
            "gateway",
            system.gateway.log_text(),
            "clients kreply-gateway, kreply-gateway-replies",
        ),
        (
            "worker",
            system.workers[0].daemon.log_text(),
            "clients kreply-worker, kreply-worker-producer, kreply-worker-results",
        ),
    ] {
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("startup: connected to"))
            .collect();
        assert_eq!(lines.len(), 1, "the {who} logged {lines:#?}");
        assert_holds(
            lines[0],
            &[
                &format!(
                    "startup: connected to {} (plaintext, no SASL)",
                    system.brokers
                ),
                "following tansu-0.6 rules",
                clients,
            ],
        );
    }
}

/// The lines a gateway log or a check-config report has about ignored config keys.
fn ignored_lines(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| l.contains("is ignored by"))
        .collect()
}

/// With `"flows"` set, a top-level `"operations"` is ignored by the gateway: startup and
/// check-config each name it in one line (which key, why, what to set instead); a config
/// without the key gets no such line.
#[test]
fn a_key_the_gateway_ignores_is_named_once_at_startup_and_by_check_config() {
    let broker = Broker::start();
    broker.create_standard_topics();
    broker.create_topics(&["payment_results"], 3);
    let flows = json!([{"operations": ["approve", "refund"], "request_topic": REQUEST_TOPIC}]);
    // The shipped config sets every key, and is a worker's too (its "request_topic" is
    // the worker's); of the keys "flows" replaces for the gateway, keep "operations".
    let with_key = config_with(|c| {
        c["flows"] = flows.clone();
        c.as_object_mut().unwrap().remove("dlq_topic");
    });
    let without_key = config_with(|c| {
        c["flows"] = flows.clone();
        let top = c.as_object_mut().unwrap();
        top.remove("dlq_topic");
        top.remove("operations");
    });
    let check = |config: &std::path::Path| {
        let (ok, out) = run_kreply(
            &["check-config", "--config", config.to_str().unwrap()],
            &[
                ("KREPLY_BROKERS", &broker.addr),
                ("KREPLY_HOST_IP", "127.0.0.2"),
            ],
        );
        assert!(ok, "{out}");
        assert!(out.contains("all checks passed"), "{out}");
        out
    };
    let expected = [
        "\"operations\" is ignored by the gateway",
        "\"flows\" is set",
        "list them in \"flows\"",
    ];

    let gateway = Gateway::spawn(&broker.addr, "127.0.0.2", &with_key);
    gateway.wait_ready();
    let log = gateway.log_text();
    let lines = ignored_lines(&log);
    assert_eq!(lines.len(), 1, "{log}");
    assert_holds(lines[0], &expected);
    let report = check(&with_key);
    let lines = ignored_lines(&report);
    assert_eq!(lines.len(), 1, "{report}");
    assert_holds(lines[0], &expected);

    let gateway = Gateway::spawn(&broker.addr, "127.0.0.2", &without_key);
    gateway.wait_ready();
    let log = gateway.log_text();
    assert_eq!(ignored_lines(&log), Vec::<&str>::new(), "{log}");
    let report = check(&without_key);
    assert_eq!(ignored_lines(&report), Vec::<&str>::new(), "{report}");
}

/// A worker ignores `"flows"` and consumes the top-level `"request_topic"`: given a flows
/// config that leaves that key to its default, it says so in one line at startup.
#[test]
fn a_worker_given_flows_but_no_request_topic_names_the_topic_it_consumes() {
    let config = config_with(|c| {
        c["flows"] = json!([{"operations": ["refund"], "request_topic": "refund_request"}]);
        c.as_object_mut().unwrap().remove("request_topic");
    });
    let nobody = format!("127.0.0.1:{}", free_port());
    let out = std::process::Command::new(kreply_binary())
        .args(["worker", "--config", config.to_str().unwrap()])
        .env("KREPLY_BROKERS", &nobody)
        .env("RUST_LOG", "warn,krafka=off")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    let lines = ignored_lines(&stderr);
    assert_eq!(lines.len(), 1, "{stderr}");
    assert_holds(
        lines[0],
        &[
            "\"flows\" is ignored by the worker",
            "\"payment_request\"",
            "set \"request_topic\"",
        ],
    );
}
