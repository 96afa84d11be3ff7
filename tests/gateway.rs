//! The gateway end to end, against a real tansu broker and real gateway processes.

mod common;

use common::answers::{assert_problem, correlation_bytes, record_id};
use common::cluster::BrokerKind;
use common::hosts::pay_round_robin;
use common::*;
use serde_json::json;
use std::collections::HashSet;
use std::time::{Duration, Instant};

#[test]
fn a_payment_is_answered_with_the_workers_reply() {
    let broker = Broker::start();
    broker.create_standard_topics();
    let responder = broker.responder();
    let gateway = Gateway::start(&broker.addr, "127.0.0.2");

    let response = gateway.pay(
        "refund",
        &json!({"order_id": "A-1001", "amount": 15000, "currency": "KRW", "reason": "customer"}),
    );

    response.assert_status(200);
    assert_eq!(response.header("content-type"), Some("application/json"));
    assert_eq!(
        response.json(),
        json!({"status": "APPROVED", "operation": "refund", "order_id": "A-1001", "amount": 15000})
    );
    // What the worker saw is what the wire conventions promise.
    let seen = responder.seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    let request = &seen[0];
    assert_eq!(request.key.as_deref(), Some(&b"A-1001"[..]));
    assert_eq!(request.headers_by_key("kafka_correlationId").len(), 1);
    assert_eq!(request.headers_by_key("kafka_replyTopic").len(), 1);
    assert_eq!(
        request
            .header("kafka_correlationId")
            .flatten()
            .unwrap()
            .to_vec(),
        correlation_bytes(&response)
    );
    assert_eq!(request.header_str("kafka_replyTopic"), Some(REPLY_LOCAL2));
    assert!(request.header("spring_json_header_types").is_none());
    let envelope: serde_json::Value =
        serde_json::from_slice(request.value.as_deref().unwrap()).unwrap();
    assert_eq!(envelope["operation"], "refund");
    assert_eq!(envelope["body"]["reason"], "customer");
}

on_both_brokers!(two_hosts_each_get_their_own_replies_on_their_own_topic);

fn two_hosts_each_get_their_own_replies_on_their_own_topic(kind: BrokerKind) {
    let broker = kind.start();
    broker.create_standard_topics();
    let _responder = broker.responder();
    let hosts = [
        Gateway::start(&broker.addr, "127.0.0.2"),
        Gateway::start(&broker.addr, "127.0.0.3"),
    ];

    // 8 callers, 25 requests each, alternating hosts: 200 interleaved requests.
    let sent = pay_round_robin(&[&hosts[0], &hosts[1]], 8, 25);
    assert_eq!(sent.len(), 200);

    for (host, topic) in [(0, REPLY_LOCAL2), (1, REPLY_LOCAL3)] {
        let own: HashSet<&Vec<u8>> = sent
            .iter()
            .filter(|(h, _)| *h == host)
            .map(|(_, id)| id)
            .collect();
        let records = broker.read_topic(topic, own.len());
        assert_eq!(
            records.len(),
            own.len(),
            "{topic} holds {} replies, expected {}",
            records.len(),
            own.len()
        );
        for record in &records {
            let id = record_id(record, "kafka_correlationId");
            assert!(
                own.contains(&id),
                "{topic} carries a reply for the other host"
            );
        }
    }
    for gateway in &hosts {
        gateway.assert_every_reply_had_a_waiter();
    }
}

#[test]
fn no_reply_gives_504_with_unknown_outcome_and_one_dead_letter() {
    let broker = Broker::start();
    broker.create_standard_topics();
    let gateway = Gateway::start(&broker.addr, "127.0.0.2");

    let started = Instant::now();
    let response = gateway.post(
        "/v1/payments/approve",
        &[
            ("content-type", "application/json"),
            ("request-timeout", "500"),
        ],
        json!({"order_id": "T-1", "amount": 100})
            .to_string()
            .as_bytes(),
    );
    let elapsed = started.elapsed();

    let problem = assert_problem(&response, 504, "reply-timeout");
    assert!(
        elapsed >= Duration::from_millis(500),
        "answered before the timeout: {elapsed:?}"
    );
    assert!(
        elapsed <= Duration::from_millis(700),
        "answered {elapsed:?} after a 500 ms timeout"
    );
    assert_eq!(problem["outcome"], "unknown");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("may still complete"),
        "{problem}"
    );
    let id = correlation_bytes(&response);
    assert_eq!(
        problem["correlation_id"],
        response.header("x-correlation-id").unwrap()
    );

    let letters = broker.read_topic(DLQ_TOPIC, 1);
    assert_eq!(letters.len(), 1, "expected exactly one dead letter");
    let letter = &letters[0];
    assert_eq!(letter.key.as_deref(), Some(&b"T-1"[..]));
    assert_eq!(
        letter
            .header("kafka_correlationId")
            .flatten()
            .unwrap()
            .to_vec(),
        id
    );
    assert_eq!(
        letter.header_str("kafka_dlt-original-topic"),
        Some(REQUEST_TOPIC)
    );
    assert_eq!(
        letter.header_str("kafka_dlt-exception-fqcn"),
        Some("kreply.ReplyTimeoutException")
    );
    assert_eq!(
        letter
            .header("kafka_dlt-original-partition")
            .flatten()
            .unwrap()
            .len(),
        4
    );
    assert_eq!(
        letter
            .header("kafka_dlt-original-offset")
            .flatten()
            .unwrap()
            .len(),
        8
    );
    let original: serde_json::Value =
        serde_json::from_slice(letter.value.as_deref().unwrap()).unwrap();
    assert_eq!(original["body"]["order_id"], "T-1");
}

/// A payment with no `content-type` at all is taken as JSON, as the docs promise (curl
/// users often leave it out): it is produced, and with no worker its caller hears 504.
/// (The HTTP library fills in `application/octet-stream` for a body without a type, which
/// the gateway once refused with 415.)
#[test]
fn a_payment_without_a_content_type_is_taken_as_json() {
    let broker = Broker::start();
    broker.create_standard_topics();
    let gateway = Gateway::start(&broker.addr, "127.0.0.2");
    let before = broker.end_offset(REQUEST_TOPIC);
    let response = gateway.post(
        "/v1/payments/approve",
        &[("request-timeout", "300")],
        br#"{"order_id":"NO-TYPE-1","amount":1}"#,
    );
    assert_problem(&response, 504, "reply-timeout");
    assert_eq!(broker.end_offset(REQUEST_TOPIC), before + 1);
}

#[test]
fn bad_input_gets_a_problem_and_produces_nothing() {
    let broker = Broker::start();
    broker.create_standard_topics();
    let gateway = Gateway::start(&broker.addr, "127.0.0.2");
    let before = broker.end_offset(REQUEST_TOPIC);
    let json_type = [("content-type", "application/json")];

    assert_problem(
        &gateway.post("/v1/payments/approve", &json_type, b"{\"order_id\":"),
        400,
        "invalid-json",
    );
    assert_problem(
        &gateway.post("/v1/payments/approve", &json_type, br#"{"amount":1}"#),
        400,
        "missing-order-id",
    );
    let oversized = json!({"order_id": "X", "pad": "x".repeat(70_000)}).to_string();
    assert_problem(
        &gateway.post("/v1/payments/approve", &json_type, oversized.as_bytes()),
        413,
        "body-too-large",
    );
    assert_problem(
        &gateway.post("/v1/payments/teleport", &json_type, br#"{"order_id":"X"}"#),
        404,
        "unknown-operation",
    );
    assert_problem(
        &gateway.post("/v2/elsewhere", &json_type, b"{}"),
        404,
        "unknown-route",
    );
    let form = [("content-type", "application/x-www-form-urlencoded")];
    assert_problem(
        &gateway.post("/v1/payments/approve", &form, b"order_id=X"),
        415,
        "unsupported-media-type",
    );
    let bad_timeout = [
        ("content-type", "application/json"),
        ("request-timeout", "soon"),
    ];
    assert_problem(
        &gateway.post("/v1/payments/approve", &bad_timeout, br#"{"order_id":"X"}"#),
        400,
        "invalid-timeout",
    );

    assert_eq!(
        broker.end_offset(REQUEST_TOPIC),
        before,
        "a bad request reached the request topic"
    );
    assert!(broker.read_topic(REQUEST_TOPIC, 0).is_empty());
}

#[test]
fn probes_report_alive_and_ready_with_the_reply_topic() {
    let broker = Broker::start();
    broker.create_standard_topics();
    let gateway = Gateway::start(&broker.addr, "127.0.0.3");
    assert_eq!(
        get(gateway.addr, "/healthz").unwrap().json()["status"],
        "alive"
    );
    let ready = get(gateway.addr, "/readyz").unwrap();
    assert_eq!(ready.status, 200);
    assert_eq!(ready.json()["reply_topic"], REPLY_LOCAL3);
}

#[test]
fn a_host_missing_from_the_table_stops_startup_with_one_sentence() {
    let (ok, stderr) = run_kreply(
        &["gateway", "--config", shipped_config().to_str().unwrap()],
        &[("KREPLY_HOST_IP", "10.9.9.9")],
    );
    assert!(!ok);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("kreply: none of this host's IPs (10.9.9.9) is in the host table "),
        "{stderr}"
    );
    assert!(stderr.contains("etc/reply-hosts.txt"), "{stderr}");
}

#[test]
fn a_missing_request_topic_stops_startup_with_one_sentence() {
    let broker = Broker::start();
    let (ok, stderr) = run_kreply(
        &["gateway", "--config", shipped_config().to_str().unwrap()],
        &[
            ("KREPLY_HOST_IP", "127.0.0.2"),
            ("KREPLY_BROKERS", &broker.addr),
        ],
    );
    assert!(!ok);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr
            .starts_with("kreply: the request topic \"payment_request\" does not exist on brokers"),
        "{stderr}"
    );
    assert!(stderr.contains("auto_create"), "{stderr}");
}

#[test]
fn unreachable_brokers_stop_startup_with_one_sentence() {
    let nobody = format!("127.0.0.1:{}", free_port());
    let (ok, stderr) = run_kreply(
        &["gateway", "--config", shipped_config().to_str().unwrap()],
        &[("KREPLY_HOST_IP", "127.0.0.2"), ("KREPLY_BROKERS", &nobody)],
    );
    assert!(!ok);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with(&format!("kreply: cannot reach the Kafka brokers {nobody}")),
        "{stderr}"
    );
    // Our fix comes before krafka's cause, whose own "; " would otherwise swallow it.
    assert!(
        stderr.contains(&format!("{nobody} (check \"brokers\" in ")),
        "{stderr}"
    );
}

#[test]
fn auto_create_makes_the_missing_topics_and_payments_work() {
    let broker = Broker::start();
    let config = config_with(|c| c["topics"]["auto_create"] = json!(true));
    let gateway = Gateway::spawn(&broker.addr, "127.0.0.2", &config);
    gateway.wait_ready();
    let _responder = broker.responder();
    let response = gateway.pay("approve", &json!({"order_id": "AC-1"}));
    response.assert_status(200);
    assert_eq!(response.json()["order_id"], "AC-1");
    assert!(
        gateway
            .log_text()
            .contains("created topic payment_response_local2")
    );
}

#[test]
fn print_route_shows_the_reply_topic_and_help_shows_usage() {
    let config = shipped_config();
    let (ok, out) = run_kreply(
        &[
            "gateway",
            "--config",
            config.to_str().unwrap(),
            "--print-route",
        ],
        &[("KREPLY_HOST_IP", "127.0.0.3")],
    );
    assert!(ok, "{out}");
    assert_eq!(
        out.trim(),
        "host_ip=127.0.0.3 suffix=local3 reply_topic=payment_response_local3"
    );
    let (ok, out) = run_kreply(
        &["gateway", "--print-route"],
        &[
            ("KREPLY_CONFIG", config.to_str().unwrap()),
            ("KREPLY_HOST_IP", "127.0.0.2"),
        ],
    );
    assert!(
        ok && out.contains("reply_topic=payment_response_local2"),
        "{out}"
    );
    let (ok, out) = run_kreply(&["--help"], &[]);
    assert!(
        ok && out.contains("kreply gateway [--config PATH]"),
        "{out}"
    );
    let (ok, out) = run_kreply(&["gatewy"], &[]);
    assert!(!ok && out.contains("unknown command"), "{out}");
    assert!(out.contains("(did you mean \"gateway\"?)"), "{out}");
}

/// Partition-per-host routing: `--print-route` and `check-config` show this host's
/// partition; a shared reply topic without every host's partition, or a host line without
/// a partition, stops startup (and check-config) with one sentence.
#[test]
fn partition_per_host_shows_the_partition_and_refuses_what_would_misroute() {
    let broker = Broker::start();
    broker.create_topics(&[REQUEST_TOPIC, DLQ_TOPIC, "payment_results"], 3);
    broker.create_topics(&["payment_response"], 2);
    let partitioned = |table: &std::path::Path| {
        config_with(|c| {
            c["reply_routing"] = json!("partition-per-host");
            c["host_table"] = json!(table);
        })
    };
    let env = [
        ("KREPLY_HOST_IP", "127.0.0.2"),
        ("KREPLY_BROKERS", broker.addr.as_str()),
    ];
    let one_sentence = |command: &str, config: &std::path::Path| {
        let (ok, out) = run_kreply(&[command, "--config", config.to_str().unwrap()], &env);
        assert!(!ok, "{command} passed: {out}");
        let errors: Vec<&str> = out.lines().filter(|l| l.starts_with("kreply: ")).collect();
        assert_eq!(errors.len(), 1, "{out}");
        errors[0].to_string()
    };

    let fits = partitioned(&hosts::partitioned_host_table(&[
        ("127.0.0.2", "local2", 0),
        ("127.0.0.3", "local3", 1),
    ]));
    let (ok, out) = run_kreply(
        &[
            "gateway",
            "--config",
            fits.to_str().unwrap(),
            "--print-route",
        ],
        &env,
    );
    assert!(ok, "{out}");
    assert_eq!(
        out.trim(),
        "host_ip=127.0.0.2 suffix=local2 reply_topic=payment_response reply_partition=0"
    );
    let (ok, out) = run_kreply(&["check-config", "--config", fits.to_str().unwrap()], &env);
    assert!(ok, "{out}");
    for line in [
        "-> reply topic payment_response, partition 0",
        "ok  reply topic payment_response: 2 partition(s)",
        "this host reads partition 0",
    ] {
        assert!(out.contains(line), "missing {line:?} in:\n{out}");
    }

    let beyond = partitioned(&hosts::partitioned_host_table(&[
        ("127.0.0.2", "local2", 0),
        ("127.0.0.3", "local3", 2),
    ]));
    for command in ["gateway", "check-config"] {
        let error = one_sentence(command, &beyond);
        assert!(
            error.starts_with(
                "kreply: the reply topic \"payment_response\" has 2 partition(s), but the host table "
            ),
            "{error}"
        );
        assert!(
            error.contains("gives host 127.0.0.3 partition 2 (line 2)"),
            "{error}"
        );
    }

    let unpartitioned = partitioned(&hosts::host_table(&[("127.0.0.2", "local2")]));
    let error = one_sentence("gateway", &unpartitioned);
    assert!(
        error.contains(":1: host 127.0.0.2 has no partition"),
        "{error}"
    );
}
