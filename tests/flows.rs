//! Several request flows on one gateway: operations routed to different request topics
//! (each with its own worker group and dialect), all replies of a host on that host's one
//! reply topic. Against a real tansu broker with real gateways and workers.

mod common;

use common::system::system_config_with;
use common::*;
use serde_json::json;
use std::collections::BTreeSet;
use std::time::Duration;

/// A reply's correlation id as the caller saw it in `x-correlation-id`: a Spring id's 16
/// bytes as a UUID, a NestJS id as its text.
fn id_text(bytes: &[u8]) -> String {
    match uuid::Uuid::from_slice(bytes) {
        Ok(uuid) => uuid.hyphenated().to_string(),
        Err(_) => String::from_utf8(bytes.to_vec()).unwrap(),
    }
}

#[test]
fn two_flows_through_two_hosts_reach_their_workers_and_share_each_hosts_reply_topic() {
    let broker = Broker::start();
    let pg = MockPg::start(&[]);
    let flows = json!([
        {"operations": ["approve", "cancel"], "request_topic": "payment_request"},
        {"operations": ["refund"], "request_topic": "refund_request", "dialect": "nestjs"}
    ]);
    let config = system_config_with(2_000, |c| c["flows"] = flows);
    let refund_worker_config = system_config_with(2_000, |c| {
        c["request_topic"] = json!("refund_request");
        c["worker"]["group_id"] = json!("kreply-refund-workers");
        c["worker"]["results_topic"] = json!("refund_results");
    });
    let hosts = ["127.0.0.2", "127.0.0.3"].map(|ip| {
        let gateway = Gateway::spawn(&broker.addr, ip, &config);
        gateway.wait_ready();
        gateway
    });
    let payments = Worker::spawn("worker-payments", &broker.addr, &pg, &config);
    let refunds = Worker::spawn("worker-refunds", &broker.addr, &pg, &refund_worker_config);
    wait_assigned(&[&payments], 3);
    wait_assigned(&[&refunds], 3);

    let mut sent: [BTreeSet<String>; 2] = Default::default();
    for i in 0..12 {
        let operation = ["approve", "cancel", "refund"][i % 3];
        let order_id = format!("F-{i}");
        let response = hosts[i % 2].pay(operation, &json!({"order_id": order_id, "amount": 100}));
        response.assert_status(200);
        assert_eq!(response.json()["operation"], operation);
        sent[i % 2].insert(response.header("x-correlation-id").unwrap().to_string());
        // Each operation reached its own flow's worker, and only that one.
        let (own, other) = match operation {
            "refund" => (&refunds, &payments),
            _ => (&payments, &refunds),
        };
        let line = format!("order_id={order_id} operation={operation}");
        assert!(
            own.daemon.log_text().contains(&line),
            "{line} not in its worker's log"
        );
        assert!(
            !other
                .daemon
                .log_text()
                .contains(&format!("order_id={order_id} "))
        );
    }

    // Two request topics, one reply topic per host: each carries exactly its host's replies.
    for (host, topic) in [REPLY_LOCAL2, REPLY_LOCAL3].iter().enumerate() {
        let replies = broker.read_topic(topic, sent[host].len());
        let ids: BTreeSet<String> = replies
            .iter()
            .map(|r| id_text(&r.header("kafka_correlationId").flatten().unwrap()[..]))
            .collect();
        assert_eq!(ids, sent[host], "replies on {topic}");
        assert_eq!(replies.len(), sent[host].len());
        hosts[host].assert_every_reply_had_a_waiter();
    }
}

#[test]
fn a_missing_topic_of_any_flow_stops_startup_with_one_sentence() {
    let broker = Broker::start();
    broker.create_standard_topics();
    let config = config_with(|c| {
        c["flows"] = json!([
            {"operations": ["approve", "cancel"], "request_topic": "payment_request"},
            {"operations": ["refund"], "request_topic": "refund_request"}
        ])
    });
    let stderr = startup_refusal("gateway", &config, &broker.addr);
    assert!(
        stderr.starts_with("kreply: the request topic \"refund_request\" does not exist"),
        "{stderr}"
    );
    let (ok, report) = run_against("check-config", &config, &broker.addr);
    assert!(!ok);
    assert!(report.contains("refund_request"), "{report}");
}

/// Two flows, each dead-lettering to its request topic's `-dlt` (Spring's suffix).
fn two_flows() -> serde_json::Value {
    json!([
        {"operations": ["approve", "cancel"], "request_topic": "payment_request"},
        {"operations": ["refund"], "request_topic": "refund_request"}
    ])
}

/// Issue 20, item 4: with no worker, a payment of each flow times out, and its dead
/// letter lands in its own flow's dead-letter topic, never in the other's.
#[test]
fn a_timed_out_payment_of_each_flow_is_dead_lettered_to_its_own_flows_topic() {
    let broker = Broker::start();
    broker.create_standard_topics();
    broker.create_topics(&["refund_request", "refund_request-dlt"], 3);
    let config = config_with(|c| c["flows"] = two_flows());
    let gateway = Gateway::spawn(&broker.addr, "127.0.0.2", &config);
    gateway.wait_ready();

    for (operation, order_id) in [("approve", "DL-A"), ("refund", "DL-R")] {
        let body = json!({"order_id": order_id, "amount": 100});
        let response = gateway.pay_with(operation, &[("request-timeout", "300")], &body);
        response.assert_status(504);
    }

    for (dlq_topic, order_id, request_topic) in [
        ("payment_request-dlt", "DL-A", "payment_request"),
        ("refund_request-dlt", "DL-R", "refund_request"),
    ] {
        let letters = broker.read_topic(dlq_topic, 1);
        let keys: Vec<&[u8]> = letters.iter().filter_map(|l| l.key.as_deref()).collect();
        assert_eq!(keys, [order_id.as_bytes()], "dead letters on {dlq_topic}");
        let letter = &letters[0];
        assert_eq!(
            letter.header_str("kafka_dlt-original-topic"),
            Some(request_topic)
        );
        // Acknowledged, then no reply: it is in the request topic.
        assert_eq!(letter.header_str("kreply_dlt-written"), Some("yes"));
    }
}

/// Issue 20, item 4: each flow's dead-letter topic is checked at startup like its
/// request topic; a missing one stops the gateway with one sentence naming the topic and
/// the flow.
#[test]
fn a_missing_dead_letter_topic_of_a_flow_stops_startup_naming_the_topic_and_the_flow() {
    let broker = Broker::start();
    broker.create_standard_topics();
    broker.create_topics(&["refund_request"], 3); // no refund_request-dlt
    let config = config_with(|c| c["flows"] = two_flows());
    // Stops at all (a gateway that does not check the topic would serve instead).
    let mut gateway = Gateway::spawn(&broker.addr, "127.0.0.2", &config);
    assert_eq!(gateway.daemon.wait_exit(Duration::from_secs(30)), Some(1));
    let stderr = startup_refusal("gateway", &config, &broker.addr);
    assert!(
        stderr.starts_with(
            "kreply: the \"flows\"[1] (refund) dead-letter topic \"refund_request-dlt\" does not exist"
        ),
        "{stderr}"
    );
}
