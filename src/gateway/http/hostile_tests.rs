//! Hostile requests against the real tide application, in process.
//!
//! The send queue stands in for the broker: whatever the handler hands over is inspected
//! here, so "nothing was produced" is checked directly, not inferred from a status. The
//! gateway is ready, so a request that passes every check does reach the queue (and,
//! with a 1 ms wait and no acknowledgement, ends in a 504): the tests can tell the two apart.

use super::test_gateway::gateway;
use crate::ops::http_server::answer;
use crate::testing::{deeply_nested_body, hostile_ascii, number_text, payment_body};
use proptest::prelude::*;
use tide::http::{Method, Request, Response, Url};

/// One POST to `/v1/payments/approve` with a 1 ms wait and `headers` (ASCII values).
fn post(headers: &[(&str, &str)], body: Vec<u8>) -> (u16, Option<serde_json::Value>, usize) {
    let (app, mut queue) = gateway();
    let mut req = Request::new(
        Method::Post,
        Url::parse("http://gw/v1/payments/approve").unwrap(),
    );
    req.insert_header("content-type", "application/json");
    req.insert_header("request-timeout", "1");
    for (name, value) in headers {
        req.insert_header(*name, *value);
    }
    req.set_body(body);
    let mut response: Response = async_std::task::block_on(answer(app.clone(), req));
    let problem = response
        .content_type()
        .filter(|mime| mime.essence() == crate::wire::problem::CONTENT_TYPE)
        .map(|_| {
            let text = async_std::task::block_on(response.body_string()).unwrap();
            serde_json::from_str(&text).unwrap()
        });
    let requests = queue
        .take_records()
        .iter()
        .filter(|r| r.topic == "payment_request")
        .count();
    (response.status() as u16, problem, requests)
}

/// A refusal is a 4xx problem with nothing produced; anything else produced one request
/// (and, with no acknowledgement in 1 ms, is a 504).
fn assert_refused_or_sent(answer: (u16, Option<serde_json::Value>, usize)) {
    let (status, problem, requests) = answer;
    let problem = problem.expect("every answer here is a problem");
    if (400..500).contains(&status) {
        assert_eq!(requests, 0, "refused with {problem} yet produced");
        assert_eq!(problem["status"], status);
        assert!(problem["code"].as_str().is_some_and(|c| !c.is_empty()));
    } else {
        assert_eq!((status, requests), (504, 1), "{problem}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn arbitrary_body_bytes_are_refused_and_produce_nothing(
        body in prop::collection::vec(any::<u8>(), 0..1024)
    ) {
        assert_refused_or_sent(post(&[], body));
    }

    #[test]
    fn any_json_payment_is_refused_or_sent_once(body in payment_body()) {
        assert_refused_or_sent(post(&[], body.to_string().into_bytes()));
    }

    #[test]
    fn huge_numbers_and_deep_nesting_are_refused_or_sent_once(
        number in number_text(),
        depth in 0usize..400,
    ) {
        let body = format!(r#"{{"order_id":"A-1","amount":{number}}}"#).into_bytes();
        assert_refused_or_sent(post(&[], body));
        assert_refused_or_sent(post(&[], deeply_nested_body(depth)));
    }

    #[test]
    fn a_hostile_idempotency_key_is_refused_and_produces_nothing(key in hostile_ascii()) {
        let body = br#"{"order_id":"A-1","amount":1}"#.to_vec();
        let (status, problem, requests) = post(&[("idempotency-key", &key)], body);
        let key = key.trim();
        let fit = (1..=255).contains(&key.len()) && key.chars().all(|c| c.is_ascii_graphic());
        if fit {
            prop_assert_eq!((status, requests), (504, 1));
        } else {
            prop_assert_eq!((status, requests), (400, 0));
            prop_assert_eq!(&problem.unwrap()["code"], "invalid-idempotency-key");
        }
    }

    #[test]
    fn hostile_timeout_and_content_type_headers_are_refused_or_sent_once(
        timeout in hostile_ascii(),
        content_type in hostile_ascii(),
    ) {
        let body = br#"{"order_id":"A-1"}"#.to_vec();
        assert_refused_or_sent(post(&[("request-timeout", &timeout)], body.clone()));
        assert_refused_or_sent(post(&[("content-type", &content_type)], body));
    }
}

#[test]
fn a_ten_megabyte_body_is_413_and_produces_nothing() {
    let mut body = br#"{"order_id":"A-1","pad":""#.to_vec();
    body.resize(10 << 20, b'x');
    let (status, problem, requests) = post(&[], body);
    assert_eq!((status, requests), (413, 0));
    assert_eq!(problem.unwrap()["code"], "body-too-large");
}

#[test]
fn a_valid_payment_does_reach_the_queue() {
    let body = br#"{"order_id":"A-1","amount":100}"#.to_vec();
    assert_eq!(post(&[], body).2, 1);
}
