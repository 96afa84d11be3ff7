//! The whole seed system: gateways, workers and the PG simulator on a real tansu broker;
//! the core tests also on the Kafka-rules cluster (`on_both_brokers!`).

mod common;

use common::cluster::BrokerKind;
use common::hosts::pay_round_robin;
use common::system::{System, system_config, system_config_with};
use common::*;
use krafka::Record;
use serde_json::json;
use std::time::Duration;

on_both_brokers!(
    a_payment_goes_through_gateway_worker_and_pg_and_back,
    the_same_idempotency_key_through_both_hosts_charges_once,
    a_killed_worker_leaves_no_caller_hanging_and_nothing_charged_twice,
    a_stopped_workers_partitions_move_to_the_other_worker,
);

fn a_payment_goes_through_gateway_worker_and_pg_and_back(kind: BrokerKind) {
    let system = System::start_kind(kind, 1, &["--latency-ms", "20"], system_config(3000));

    let response = system.gateway.pay(
        "approve",
        &json!({"order_id": "S-1", "amount": 1200, "currency": "KRW"}),
    );

    response.assert_status(200);
    let reply = response.json();
    assert_eq!(reply["status"], "APPROVED");
    assert_eq!(reply["order_id"], "S-1");
    assert_eq!(reply["amount"], 1200);
    assert!(
        reply["approval_id"].as_str().unwrap().starts_with("pg-"),
        "{reply}"
    );
    assert_eq!(system.pg.charges()["charges"], json!({"S-1:approve": 1}));
    let metrics = String::from_utf8(
        get(system.workers[0].metrics_addr, "/metrics")
            .unwrap()
            .body,
    )
    .unwrap();
    assert!(
        metrics.contains("kreply_worker_requests_total{result=\"approved\"} 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("kreply_worker_pg_call_duration_seconds_count{result=\"approved\"} 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("kreply_worker_partitions_assigned 3\n"),
        "{metrics}"
    );
}

fn the_same_idempotency_key_through_both_hosts_charges_once(kind: BrokerKind) {
    let system = System::start_kind(kind, 2, &["--latency-ms", "50"], system_config(3000));
    let other_host = system.second_gateway();
    let hosts = [&system.gateway, &other_host, &system.gateway];

    let bodies: Vec<serde_json::Value> = std::thread::scope(|s| {
        let calls: Vec<_> = hosts
            .iter()
            .map(|host| {
                s.spawn(move || {
                    let response = host.pay_with(
                        "approve",
                        &[("idempotency-key", "pay-777")],
                        &json!({"order_id": "E-1", "amount": 5000}),
                    );
                    response.assert_status(200);
                    response.json()
                })
            })
            .collect();
        calls.into_iter().map(|c| c.join().unwrap()).collect()
    });

    assert!(
        bodies.iter().all(|b| *b == bodies[0]),
        "answers differ: {bodies:?}"
    );
    let charges = system.pg.charges();
    assert_eq!(charges["charges"], json!({"pay-777": 1}), "{charges}");
    assert_eq!(
        charges["calls"], 1,
        "the PG was called again for a repeat: {charges}"
    );
}

/// A worker killed mid-flight: no caller hangs, nothing is charged twice, and the other
/// worker takes the partitions over (timing and settlement on tansu: `tests/worker_crash.rs`;
/// on Kafka's rules the coordinator moves them when the dead member's session ends, 45 s
/// on the Kafka-rules cluster as on Kafka by default).
fn a_killed_worker_leaves_no_caller_hanging_and_nothing_charged_twice(kind: BrokerKind) {
    let system = System::start_kind(kind, 2, &["--latency-ms", "300"], system_config(3000));
    let victim = &system.workers[0];

    let statuses: Vec<u16> = std::thread::scope(|s| {
        let callers: Vec<_> = (0..10)
            .map(|caller| {
                let gateway = &system.gateway;
                s.spawn(move || {
                    (0..3)
                        .map(|i| {
                            let body = json!({"order_id": format!("C-{caller}-{i}"), "amount": 10});
                            gateway
                                .pay_with("approve", &[("request-timeout", "10000")], &body)
                                .status
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        // Kill one worker while its PG calls are in flight.
        victim
            .daemon
            .wait_for_log("result=approved", Duration::from_secs(20));
        victim.daemon.signal("KILL");
        callers
            .into_iter()
            .flat_map(|c| c.join().unwrap())
            .collect()
    });

    assert_eq!(statuses.len(), 30);
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 504),
        "a caller got neither a reply nor a timeout: {statuses:?}"
    );
    let charges = system.pg.charges();
    let charged = charges["charges"].as_object().unwrap();
    for (key, times) in charged {
        assert_eq!(times, 1, "{key} was charged {times} times");
    }
    let ok = statuses.iter().filter(|s| **s == 200).count();
    assert!(
        ok > 0,
        "the surviving worker answered nothing: {statuses:?}"
    );
    assert!(charged.len() >= ok, "a 200 without a charge: {charges}");
    wait_assigned(&[&system.workers[1]], 3);
}

/// A worker stopped with SIGTERM finishes, leaves the group, and the other takes over.
fn a_stopped_workers_partitions_move_to_the_other_worker(kind: BrokerKind) {
    let mut system = System::start_kind(kind, 2, &[], system_config(3000));
    let leaving = &mut system.workers[0];
    leaving.daemon.signal("TERM");
    assert_eq!(leaving.daemon.wait_exit(Duration::from_secs(30)), Some(0));
    assert!(
        leaving
            .daemon
            .log_text()
            .contains("stopping: leaving the group")
    );
    wait_assigned(&[&system.workers[1]], 3);

    // Enough orders to land on every partition.
    for i in 0..9 {
        let response = system.gateway.pay(
            "approve",
            &json!({"order_id": format!("M-{i}"), "amount": 1}),
        );
        response.assert_status(200);
    }
    assert_eq!(system.pg.charges()["charges"].as_object().unwrap().len(), 9);
    let partitions: std::collections::HashSet<i32> = system
        .broker
        .read_topic(REQUEST_TOPIC, 9)
        .iter()
        .map(|r| r.partition)
        .collect();
    assert_eq!(
        partitions.len(),
        3,
        "the orders did not reach every partition"
    );
}

#[test]
fn pg_failures_and_declines_map_to_statuses_and_poison_does_not_block() {
    let system = System::start(1, &["--slow-ms", "2000"], 500);
    let gateway = &system.gateway;

    // Each order id prefix steers the PG simulator down one path.
    let answer = |order: &str, status: u16, code: &str, outcome: &str| {
        let response = gateway.pay("approve", &json!({"order_id": order, "amount": 10}));
        assert_eq!(
            response.status,
            status,
            "{order}: {}",
            String::from_utf8_lossy(&response.body)
        );
        let problem = response.json();
        assert_eq!(
            (problem["code"].as_str(), problem["outcome"].as_str()),
            (Some(code), Some(outcome)),
            "{problem}"
        );
        problem
    };
    let declined = answer("DECLINE-1", 402, "declined", "declined");
    assert_eq!(declined["reply"]["status"], "DECLINED");
    answer("FAIL-1", 502, "pg-error", "failed");
    answer("SLOW-1", 504, "pg-unknown", "unknown");

    // Poison on every partition: not JSON, and with or without a reply route.
    let kafka = system.broker.kafka();
    system.broker.runtime.block_on(async {
        let producer = kafka.producer().build().await.unwrap();
        for partition in 0..3 {
            let bare = Record::new(REQUEST_TOPIC, "{not json").partition(partition);
            let _ack = producer.send(bare).await.unwrap();
            let routed = Record::new(REQUEST_TOPIC, "\u{0}garbage")
                .partition(partition)
                .header("kafka_replyTopic", REPLY_LOCAL2)
                .header("kafka_correlationId", vec![1u8; 16]);
            let _ack = producer.send(routed).await.unwrap();
        }
    });
    for i in 0..3 {
        let after = gateway.pay(
            "approve",
            &json!({"order_id": format!("AFTER-{i}"), "amount": 10}),
        );
        after.assert_status(200);
    }
    let worker_log = system.workers[0].daemon.log_text();
    assert_eq!(
        worker_log
            .matches("cannot be answered (no kafka_replyTopic header); skipped")
            .count(),
        3
    );
    // The routed poison got an invalid-request reply, which no caller waited for.
    system
        .gateway
        .daemon
        .wait_for_log("reply with no waiter", Duration::from_secs(5));
    assert_eq!(system.pg.charges()["calls"], 6, "poison reached the PG");
}

/// Partition-per-host routing: both hosts share one reply topic, each reads only the
/// partition the host table gives it, and the worker writes every reply to the partition
/// its request names in `kafka_replyPartition`; so no reply reaches the other host.
#[test]
fn partition_per_host_replies_land_on_each_hosts_own_partition_of_one_topic() {
    let table =
        hosts::partitioned_host_table(&[("127.0.0.2", "local2", 0), ("127.0.0.3", "local3", 2)]);
    let config = system_config_with(3000, |c| {
        c["reply_routing"] = json!("partition-per-host");
        c["host_table"] = json!(table);
    });
    let system = System::start_with(2, &[], config);
    let other_host = system.second_gateway();
    let gateways = [&system.gateway, &other_host];
    let partition_of = [0, 2];
    for (gateway, partition) in gateways.iter().zip(partition_of) {
        let ready = get(gateway.addr, "/readyz").unwrap().json();
        assert_eq!(
            (&ready["reply_topic"], &ready["reply_partition"]),
            (&json!("payment_response"), &json!(partition))
        );
    }

    // 4 callers, 10 payments each, alternating hosts.
    let sent = pay_round_robin(&gateways, 4, 10);

    let replies = system.broker.read_topic("payment_response", sent.len());
    assert_eq!(replies.len(), sent.len(), "one reply per payment");
    for reply in &replies {
        let id = answers::record_id(reply, "kafka_correlationId");
        let (host, _) = sent.iter().find(|(_, sent_id)| *sent_id == id).unwrap();
        assert_eq!(
            reply.partition, partition_of[*host],
            "a reply landed on another host's partition"
        );
    }
    for gateway in gateways {
        gateway.assert_every_reply_had_a_waiter();
    }
}

/// `header_names` renames the routing headers (as Spring applications may): the gateway
/// writes and reads only the configured names, and the worker reads and echoes them.
#[test]
fn renamed_routing_headers_carry_a_payment_there_and_back() {
    let table = hosts::partitioned_host_table(&[("127.0.0.2", "local2", 1)]);
    let config = system_config_with(3000, |c| {
        c["reply_routing"] = json!("partition-per-host");
        c["host_table"] = json!(table);
        c["header_names"] = json!({
            "correlation_id": "x_correlation",
            "reply_topic": "x_reply_to",
            "reply_partition": "x_reply_partition",
        });
    });
    let system = System::start_with(1, &[], config);

    let response = system.gateway.pay("approve", &json!({"order_id": "H-1"}));

    response.assert_status(200);
    assert_eq!(response.json()["order_id"], "H-1");
    let id = answers::correlation_bytes(&response);
    let request = &system.broker.read_topic(REQUEST_TOPIC, 1)[0];
    assert_eq!(answers::record_id(request, "x_correlation"), id);
    assert_eq!(request.header_str("x_reply_to"), Some("payment_response"));
    let partition = request.header("x_reply_partition").flatten().unwrap();
    assert_eq!(partition[..], 1i32.to_be_bytes());
    for spring in [
        "kafka_correlationId",
        "kafka_replyTopic",
        "kafka_replyPartition",
    ] {
        assert!(request.header(spring).is_none(), "{spring} was sent");
    }
    let reply = &system.broker.read_topic("payment_response", 1)[0];
    assert_eq!(reply.partition, 1);
    assert_eq!(answers::record_id(reply, "x_correlation"), id);
    assert!(reply.header("kafka_correlationId").is_none());
}

/// The caller's `traceparent` goes with the payment to the worker and the PG (as a child:
/// same trace id, new parent id), comes back on the reply and in the answer, and is in
/// the gateway's and the worker's log lines. Without a valid one the gateway starts a trace.
#[test]
fn a_callers_traceparent_reaches_the_pg_and_comes_back() {
    let system = System::start(1, &[], 3000);
    let sent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    let response = system.gateway.pay_with(
        "approve",
        &[("traceparent", sent)],
        &json!({"order_id": "TR-1"}),
    );

    response.assert_status(200);
    assert_eq!(response.header("traceparent"), Some(sent));
    let at_pg = system.pg.charges()["traces"]["TR-1:approve"].clone();
    let at_pg = at_pg.as_str().unwrap();
    assert_eq!(trace_id(at_pg), trace_id(sent), "{at_pg}");
    assert_ne!(at_pg, sent, "the PG call is a span of its own");
    let reply = &system.broker.read_topic(REPLY_LOCAL2, 1)[0];
    assert_eq!(reply.header_str("traceparent"), Some(sent));
    let logged = format!("traceparent={sent}");
    assert!(system.gateway.log_text().contains(&logged));
    let worker_log = system.workers[0].daemon.log_text();
    assert!(
        worker_log
            .lines()
            .any(|l| l.contains("payment TR-1:approve") && l.contains(&logged)),
        "{worker_log}"
    );

    for (header, order) in [(None, "TR-2"), (Some("00-broken"), "TR-3")] {
        let headers: Vec<(&str, &str)> = header.map(|h| ("traceparent", h)).into_iter().collect();
        let response = system
            .gateway
            .pay_with("approve", &headers, &json!({"order_id": order}));
        response.assert_status(200);
        let fresh = response.header("traceparent").unwrap();
        assert_eq!(fresh.len(), sent.len(), "{fresh}");
        assert!(
            fresh.starts_with("00-") && fresh.ends_with("-01"),
            "{fresh}"
        );
        assert_ne!(trace_id(fresh), trace_id(sent));
        let at_pg = system.pg.charges()["traces"][format!("{order}:approve")].clone();
        assert_eq!(trace_id(at_pg.as_str().unwrap()), trace_id(fresh));
    }
}

/// The 32 hex digits of a `traceparent` that every hop of a trace shares.
fn trace_id(traceparent: &str) -> &str {
    &traceparent[3..35]
}
