//! The NestJS dialect end to end on tansu: kreply's worker answers a NestJS requester in
//! NestJS's spelling, and kreply's gateway in `"dialect": "nestjs"` reads a NestJS
//! server's answers and errors.

mod common;

use common::answers::assert_problem;
use common::system::{System, system_config_with};
use common::*;
use serde_json::json;
use std::collections::BTreeMap;

const NEST_REPLY_TOPIC: &str = "payment_request.reply";

/// The reply partition each request names, by correlation id: decimal digits, as NestJS's
/// `ClientKafka` always sends, naming a partition of the host's reply topic (3 here).
fn named_partitions(requests: &[krafka::ConsumerRecord]) -> BTreeMap<Vec<u8>, i32> {
    requests
        .iter()
        .map(|request| {
            let id = request.header("kafka_correlationId").flatten().unwrap();
            let digits = request
                .header_str("kafka_replyPartition")
                .unwrap_or_else(|| panic!("no kafka_replyPartition on {request:?}"));
            let partition: i32 = digits
                .parse()
                .unwrap_or_else(|_| panic!("reply partition {digits:?} is not decimal digits"));
            assert!(
                (0..3).contains(&partition),
                "partition {partition} is not one of {REPLY_LOCAL2}'s"
            );
            (id.to_vec(), partition)
        })
        .collect()
}

/// Every reply on this host's reply topic came on the partition its request named.
fn assert_replies_on_named_partitions(broker: &Broker, named: &BTreeMap<Vec<u8>, i32>) {
    let replies = broker.read_topic(REPLY_LOCAL2, named.len());
    assert_eq!(replies.len(), named.len());
    for reply in &replies {
        let id = reply.header("kafka_correlationId").flatten().unwrap();
        assert_eq!(
            Some(&reply.partition),
            named.get(&id[..]),
            "the reply to {} is on partition {}",
            String::from_utf8_lossy(id),
            reply.partition
        );
    }
}

#[test]
fn a_nestjs_requester_gets_a_nestjs_reply_from_the_worker() {
    // The gateway speaks Spring: one worker answers both dialects, each in its own.
    let system = System::start(1, &[], 2_000);
    system.broker.create_topics(&[NEST_REPLY_TOPIC], 3);
    let spring = system
        .gateway
        .pay("approve", &json!({"order_id": "S-1", "amount": 10}));
    spring.assert_status(200);

    let id = "0f8b5e4a-3c1d-4f6e-9a7b-2d5c8e1f4a90";
    let approve = json!({"operation": "approve", "body": {"order_id": "N-1", "amount": 100}});
    let reply = nest::ask(
        &system.broker,
        REQUEST_TOPIC,
        NEST_REPLY_TOPIC,
        2,
        id,
        &approve,
    );
    assert_eq!(
        reply.partition, 2,
        "the decimal reply partition is honoured"
    );
    assert_eq!(
        reply.header("kafka_correlationId").flatten().unwrap(),
        id.as_bytes()
    );
    assert_eq!(
        reply
            .header("kafka_nest-is-disposed")
            .flatten()
            .map(|v| &v[..]),
        Some(&[0u8][..])
    );
    assert!(reply.header("kafka_nest-err").is_none());
    assert!(reply.header("kreply_error").is_none());
    let value: serde_json::Value = serde_json::from_slice(reply.value.as_deref().unwrap()).unwrap();
    assert_eq!(value["status"], "APPROVED");

    let id = "6a1c2b3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";
    let no_order = json!({"operation": "approve", "body": {"amount": 100}});
    let reply = nest::ask(
        &system.broker,
        REQUEST_TOPIC,
        NEST_REPLY_TOPIC,
        0,
        id,
        &no_order,
    );
    assert_eq!(reply.partition, 0);
    let err = reply
        .header("kafka_nest-err")
        .flatten()
        .expect("an error reply");
    let err: serde_json::Value = serde_json::from_slice(err).unwrap();
    assert_eq!(
        (&err["status"], &err["code"]),
        (&json!("error"), &json!("invalid-request"))
    );
    assert!(reply.header("kafka_nest-is-disposed").is_some());
}

/// A broker, a NestJS-style server on its request topic, and a NestJS-dialect gateway
/// (host 127.0.0.2, topic-per-host routing), ready.
fn nest_gateway_and_server() -> (Broker, Responder, Gateway) {
    let broker = Broker::start();
    broker.create_standard_topics();
    let server = broker.nest_server();
    let config = system_config_with(1_000, |c| c["dialect"] = json!("nestjs"));
    let gateway = Gateway::spawn(&broker.addr, "127.0.0.2", &config);
    gateway.wait_ready();
    (broker, server, gateway)
}

#[test]
fn a_nestjs_gateway_answers_a_nestjs_servers_replies_and_maps_its_errors() {
    let (_broker, server, gateway) = nest_gateway_and_server();

    let ok = gateway.pay("approve", &json!({"order_id": "N-7", "amount": 5}));
    ok.assert_status(200);
    assert_eq!(ok.json(), json!({"status": "APPROVED", "order_id": "N-7"}));
    let id = ok.header("x-correlation-id").unwrap().to_string();
    {
        let seen = server.seen.lock().unwrap();
        let sent = seen[0].header("kafka_correlationId").flatten().unwrap();
        assert_eq!(&sent[..], id.as_bytes(), "the id goes out as its UUID text");
    }

    let declined = gateway.pay("approve", &json!({"order_id": "DECLINE-1", "amount": 5}));
    let problem = assert_problem(&declined, 402, "declined");
    assert_eq!(problem["detail"], "card limit reached");
    assert_eq!(problem["outcome"], "declined");

    let boom = gateway.pay("approve", &json!({"order_id": "BOOM-1", "amount": 5}));
    let problem = assert_problem(&boom, 502, "worker-error");
    assert_eq!(problem["outcome"], "unknown");
    assert_eq!(problem["reply"]["message"], "Internal server error");
    gateway.assert_every_reply_had_a_waiter();
}

/// NestJS's `ClientKafka` always sends `kafka_replyPartition`, so a NestJS gateway does too,
/// in topic-per-host routing as well: a partition of its own reply topic, which a NestJS
/// server answers on.
#[test]
fn a_nestjs_gateway_in_topic_per_host_routing_names_its_reply_partition_and_is_answered_there() {
    let (broker, server, gateway) = nest_gateway_and_server();
    for i in 0..6 {
        let order_id = format!("NP-{i}");
        let ok = gateway.pay("approve", &json!({"order_id": order_id, "amount": 5}));
        ok.assert_status(200);
        assert_eq!(
            ok.json(),
            json!({"status": "APPROVED", "order_id": order_id})
        );
    }
    let named = named_partitions(&server.seen.lock().unwrap());
    assert_eq!(named.len(), 6);
    assert_replies_on_named_partitions(&broker, &named);
    gateway.assert_every_reply_had_a_waiter();
}

/// `kreply worker` answers a NestJS gateway in topic-per-host routing on the partition
/// its requests name, in NestJS's spelling.
#[test]
fn the_worker_answers_a_nestjs_gateway_on_the_partition_it_names() {
    let config = system_config_with(2_000, |c| c["dialect"] = json!("nestjs"));
    let system = System::start_with(1, &[], config);
    for i in 0..6 {
        let order_id = format!("NW-{i}");
        let ok = system
            .gateway
            .pay("approve", &json!({"order_id": order_id, "amount": 5}));
        ok.assert_status(200);
        assert_eq!(ok.json()["status"], "APPROVED");
    }
    let named = named_partitions(&system.broker.read_topic(REQUEST_TOPIC, 6));
    assert_eq!(named.len(), 6);
    assert_replies_on_named_partitions(&system.broker, &named);
    system.gateway.assert_every_reply_had_a_waiter();
}
