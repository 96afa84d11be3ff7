//! Every caller gets a definite answer: callers beyond `max_in_flight` are refused before
//! anything is produced, and a caller told "outcome unknown" can fetch the reply that came
//! later, from any host. Real tansu, real gateway processes.

mod common;

use common::answers::{assert_problem, metric};
use common::hosts::{gateways_on_one_port, partitioned_host_table};
use common::*;
use krafka::Record;
use serde_json::json;
use std::time::{Duration, Instant};

/// The 504 of a payment nobody answers within `timeout_ms`; its body and `Link` header
/// name where the outcome can be fetched later.
fn timed_out_payment(gateway: &Gateway, order_id: &str, timeout_ms: &str) -> serde_json::Value {
    let response = gateway.pay_with(
        "approve",
        &[("request-timeout", timeout_ms)],
        &json!({"order_id": order_id, "amount": 700}),
    );
    let problem = assert_problem(&response, 504, "reply-timeout");
    assert_eq!(problem["outcome"], "unknown");
    let url = problem["reply_url"].as_str().expect("reply_url in the 504");
    let outcome_url = format!("/v1/payments/approve/{order_id}%3Aapprove?order_id={order_id}");
    assert_eq!(problem["outcome_url"], outcome_url.as_str());
    assert_eq!(
        response.header("link"),
        Some(format!("<{url}>; rel=\"monitor\", <{outcome_url}>; rel=\"monitor\"").as_str())
    );
    problem
}

/// GETs `url` until it is no longer 404 `reply-pending`, within a generous deadline.
fn fetch_when_answered(gateway: &Gateway, url: &str) -> HttpResponse {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let response = get(gateway.addr, url).unwrap();
        let pending = response.status == 404 && response.json()["code"] == "reply-pending";
        if !pending {
            return response;
        }
        assert!(Instant::now() < deadline, "still pending after 30 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn callers_beyond_max_in_flight_get_503_overloaded_and_nothing_is_produced() {
    const CALLERS: usize = 40;
    const MAX_IN_FLIGHT: usize = 8;
    let broker = Broker::start();
    broker.create_standard_topics();
    // No responder: every accepted payment waits its whole timeout, holding its slot.
    let config = config_with(|c| c["max_in_flight"] = json!(MAX_IN_FLIGHT));
    let gateway = Gateway::spawn(&broker.addr, "127.0.0.2", &config);
    gateway.wait_ready();

    let responses: Vec<HttpResponse> = std::thread::scope(|s| {
        let callers: Vec<_> = (0..CALLERS)
            .map(|i| {
                let gateway = &gateway;
                s.spawn(move || {
                    gateway.pay_with(
                        "approve",
                        &[("request-timeout", "10000")],
                        &json!({"order_id": format!("O-{i}")}),
                    )
                })
            })
            .collect();
        callers.into_iter().map(|c| c.join().unwrap()).collect()
    });

    let mut accepted = 0;
    let mut refused = 0;
    for response in &responses {
        if response.status == 504 {
            accepted += 1;
            continue;
        }
        let problem = assert_problem(response, 503, "overloaded");
        assert_eq!(problem["outcome"], "not_sent", "{problem}");
        let retry_after: u32 = response
            .header("retry-after")
            .expect("Retry-After on 503 overloaded")
            .parse()
            .unwrap();
        assert!(retry_after >= 1);
        refused += 1;
    }
    assert!(
        (1..=MAX_IN_FLIGHT).contains(&accepted),
        "{accepted} of {CALLERS} callers were let in with max_in_flight {MAX_IN_FLIGHT}"
    );
    assert_eq!(accepted + refused, CALLERS);
    // Exactly the accepted payments were produced, and dead-lettered on their timeout.
    assert_eq!(broker.read_topic(REQUEST_TOPIC, accepted).len(), accepted);
    assert_eq!(broker.read_topic(DLQ_TOPIC, accepted).len(), accepted);
    assert_eq!(
        metric(&gateway, "kreply_overload_refusals_total"),
        refused as f64
    );
    assert_eq!(
        metric(
            &gateway,
            "kreply_requests_total{operation=\"approve\",outcome=\"unavailable\"}"
        ),
        refused as f64
    );
}

/// Times a payment out on `owner` (host local2), then fetches its late reply from the
/// owner, and through `other` by following its 307; returns the correlation id.
fn late_reply_through_either_host(owner: &Gateway, other: &Gateway, order_id: &str) -> String {
    let problem = timed_out_payment(owner, order_id, "300");
    let id = problem["correlation_id"].as_str().unwrap().to_string();
    let url = format!("/v1/requests/{id}?host=local2");
    assert_eq!(problem["reply_url"], url.as_str(), "{problem}");
    assert_eq!(problem["reply_host"], "local2");

    // Before the reply: known, pending, try again later.
    let pending = get(owner.addr, &url).unwrap();
    let body = assert_problem(&pending, 404, "reply-pending");
    assert_eq!(body["outcome"], "unknown");
    assert!(pending.header("retry-after").is_some());

    // After it: the reply the caller would have had.
    let answered = fetch_when_answered(owner, &url);
    answered.assert_status(200);
    let reply =
        json!({"status": "APPROVED", "operation": "approve", "order_id": order_id, "amount": 700});
    assert_eq!(answered.json(), reply);
    assert_eq!(answered.header("x-correlation-id"), Some(id.as_str()));

    // The load balancer sent the lookup to the other host: it points to the owner.
    let redirect = get(other.addr, &url).unwrap();
    redirect.assert_status(307);
    let location = redirect.header("location").unwrap();
    assert_eq!(location, format!("http://{}{url}", owner.addr));
    let path = location
        .strip_prefix(&format!("http://{}", owner.addr))
        .unwrap();
    let followed = get(owner.addr, path).unwrap();
    followed.assert_status(200);
    assert_eq!(followed.json(), reply);
    id
}

#[test]
fn a_late_reply_is_kept_and_fetched_from_the_owner_through_either_host() {
    let broker = Broker::start();
    broker.create_standard_topics();
    // The reply comes seconds after the caller's 300 ms timeout.
    let _responder = broker.slow_responder(Duration::from_secs(5));
    let config = config_with(|_| {});
    let hosts = gateways_on_one_port(&broker.addr, &["127.0.0.2", "127.0.0.3"], &config);
    let (owner, other) = (&hosts[0], &hosts[1]);

    let id = late_reply_through_either_host(owner, other, "L-1");

    // Unknown ids, hosts and malformed ids are told apart.
    let elsewhere = get(other.addr, &format!("/v1/requests/{id}")).unwrap();
    assert_problem(&elsewhere, 404, "unknown-request");
    let never = get(
        owner.addr,
        &format!("/v1/requests/{}", uuid::Uuid::new_v4()),
    )
    .unwrap();
    assert_problem(&never, 404, "unknown-request");
    let no_host = get(owner.addr, &format!("/v1/requests/{id}?host=nowhere")).unwrap();
    assert_problem(&no_host, 404, "unknown-host");
    let malformed = get(owner.addr, "/v1/requests/12345").unwrap();
    assert_problem(&malformed, 400, "invalid-correlation-id");

    assert_eq!(
        owner
            .log_text()
            .matches(&format!("late reply kept: correlation_id={id}"))
            .count(),
        1
    );
    assert_eq!(metric(owner, "kreply_late_replies_kept_total"), 1.0);
    assert_eq!(metric(owner, "kreply_late_replies_served_total"), 2.0);
    assert_eq!(metric(owner, "kreply_late_replies_stored"), 1.0);
    assert_eq!(metric(owner, "kreply_replies_without_waiter_total"), 0.0);
}

/// In partition-per-host routing the hosts share one reply topic, and a late reply is
/// still kept by the host that sent the request and fetched through either host.
#[test]
fn in_partition_per_host_routing_a_late_reply_is_fetched_through_either_host() {
    let broker = Broker::start();
    broker.create_topics(&[REQUEST_TOPIC, "payment_response", DLQ_TOPIC], 3);
    let _responder = broker.slow_responder(Duration::from_secs(2));
    let table = partitioned_host_table(&[("127.0.0.2", "local2", 2), ("127.0.0.3", "local3", 0)]);
    let config = config_with(|c| {
        c["reply_routing"] = json!("partition-per-host");
        c["host_table"] = json!(table);
    });
    let hosts = gateways_on_one_port(&broker.addr, &["127.0.0.2", "127.0.0.3"], &config);
    let (owner, other) = (&hosts[0], &hosts[1]);

    let id = late_reply_through_either_host(owner, other, "LP-1");

    let replies = broker.read_topic("payment_response", 1);
    assert_eq!(replies.len(), 1);
    assert_eq!(
        replies[0].partition, 2,
        "the reply missed the owner's partition"
    );
    assert!(
        owner
            .log_text()
            .contains(&format!("late reply kept: correlation_id={id}"))
    );
    other.assert_every_reply_had_a_waiter();
}

#[test]
fn a_late_error_reply_gets_the_status_the_call_would_have_had() {
    let broker = Broker::start();
    broker.create_standard_topics();
    let declining: fn(Record) -> Record = |reply| reply.header("kreply_error", "declined");
    let _responder = broker.answering(Duration::from_secs(2), declining);
    let gateway = Gateway::start(&broker.addr, "127.0.0.2");

    let problem = timed_out_payment(&gateway, "D-1", "300");
    let url = problem["reply_url"].as_str().unwrap();
    let response = fetch_when_answered(&gateway, url);
    let declined = assert_problem(&response, 402, "declined");
    assert_eq!(declined["outcome"], "declined");
    assert_eq!(declined["reply"]["order_id"], "D-1");
    assert_eq!(declined["correlation_id"], problem["correlation_id"]);
}

/// A late reply is fetched with the trace the call's answer named, as
/// the call would have had it (the worker echoes the request's `traceparent` on its
/// reply), whether the caller sent the trace or the gateway started it.
#[test]
fn a_late_reply_is_fetched_with_the_trace_of_the_call_it_answers() {
    const SENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let broker = Broker::start();
    broker.create_standard_topics();
    let _responder = broker.replying(Duration::from_secs(2), |request| {
        let reply = echo::reply_to(request).unwrap();
        match request.header("traceparent").flatten() {
            Some(trace) => reply.header("traceparent", trace.clone()),
            None => reply,
        }
    });
    let gateway = Gateway::start(&broker.addr, "127.0.0.2");

    for (order_id, sent) in [("T-1", Some(SENT)), ("T-2", None)] {
        let mut headers = vec![("request-timeout", "300")];
        headers.extend(sent.map(|trace| ("traceparent", trace)));
        let response = gateway.pay_with(
            "approve",
            &headers,
            &json!({"order_id": order_id, "amount": 700}),
        );
        let problem = assert_problem(&response, 504, "reply-timeout");
        let called = response.header("traceparent").expect("a traceparent");
        if let Some(sent) = sent {
            assert_eq!(called, sent);
        }
        let url = problem["reply_url"].as_str().unwrap();
        let fetched = fetch_when_answered(&gateway, url);
        fetched.assert_status(200);
        assert_eq!(fetched.json()["order_id"], order_id);
        assert_eq!(
            fetched.header("traceparent"),
            Some(called),
            "{order_id}: the lookup lost the call's trace"
        );
    }
}

#[test]
fn a_reply_to_an_id_this_host_never_issued_is_not_kept() {
    let broker = Broker::start();
    broker.create_standard_topics();
    let gateway = Gateway::start(&broker.addr, "127.0.0.2");
    let id = uuid::Uuid::new_v4();
    let kafka = broker.kafka();
    broker.runtime.block_on(async {
        let producer = kafka.producer().build().await.unwrap();
        let stray = Record::new(REPLY_LOCAL2, r#"{"status":"APPROVED"}"#)
            .header("kafka_correlationId", id.as_bytes().to_vec());
        let _ack = producer.send(stray).await.unwrap();
    });
    gateway.daemon.wait_for_log(
        &format!("reply with no waiter: correlation_id={id}"),
        Duration::from_secs(30),
    );
    assert_eq!(metric(&gateway, "kreply_replies_without_waiter_total"), 1.0);
    assert_eq!(metric(&gateway, "kreply_late_replies_kept_total"), 0.0);
    let lookup = get(gateway.addr, &format!("/v1/requests/{id}")).unwrap();
    assert_problem(&lookup, 404, "unknown-request");
}
