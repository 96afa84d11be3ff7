//! Several request flows on one gateway: operations routed to different request topics
//! (each with its own worker group and dialect), all replies of a host on that host's one
//! reply topic. Against a real tansu broker with real gateways and workers.

mod common;

use common::system::system_config_with;
use common::*;
use serde_json::json;
use std::collections::BTreeSet;

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
