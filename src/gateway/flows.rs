//! Request flows: which request topic (and dialect) each operation goes to.
//!
//! A deployment may split its operations over worker fleets, e.g. approve and cancel to
//! Spring workers on `payment_request`, refund to a NestJS service on `refund_request`.
//! Every flow of a host shares that host's reply route: a reply names its waiter by
//! correlation id, not by topic, so one reply topic per host serves them all, and the
//! topic count stays hosts + flows rather than hosts x flows.
//!
//! Each flow dead-letters into a topic of its own, `"dlq_topic"` or `<request_topic>-dlt`
//! (Spring's suffix), so that a flow's operators (and replay tools) read only its own.
//!
//! Without `"flows"` the gateway has one flow, from `"request_topic"`, `"operations"`,
//! `"dialect"` and `"dlq_topic"`, as before flows existed.

use crate::gateway::reply_route::ReplyRoute;
use crate::wire::dialect::Dialect;
use crate::wire::header_names::HeaderNames;
use crate::wire::return_address::ReturnAddress;
use crate::wire::topic_name;
use serde::{Deserialize, Serialize};

/// One flow as `"flows"` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FlowConfig {
    /// The `{operation}` values that go to this flow's topic.
    pub operations: Vec<String>,
    /// Where this flow's requests are produced; its worker fleet consumes it in a group of
    /// its own.
    pub request_topic: String,
    /// How this flow's workers spell the exchange.
    #[serde(default)]
    pub dialect: Dialect,
    /// Where this flow's dead letters go; `None`: `<request_topic>-dlt`.
    #[serde(default)]
    pub dlq_topic: Option<String>,
    /// Whether a payment of this flow must carry an `Idempotency-Key`: without one it is
    /// refused with `400 missing-idempotency-key`, nothing produced.
    #[serde(default)]
    pub require_idempotency_key: bool,
}

/// Spring's dead-letter topic suffix.
const DLT_SUFFIX: &str = "-dlt";

impl FlowConfig {
    /// The topic this flow's dead letters go to.
    pub fn dead_letter_topic(&self) -> String {
        self.dlq_topic
            .clone()
            .unwrap_or_else(|| format!("{}{DLT_SUFFIX}", self.request_topic))
    }

    /// How a startup sentence names this flow: its place in `"flows"` and its operations.
    pub fn describe(&self, i: usize) -> String {
        format!("\"flows\"[{i}] ({})", self.operations.join(", "))
    }
}

/// Why `flows` cannot work, if they cannot: a flow without operations or with a bad topic
/// name, an operation listed in two flows (which topic would it go to?), or a dead-letter
/// topic that is a request topic (its workers would take the dead letters for payments).
pub fn check(flows: &[FlowConfig]) -> Result<(), String> {
    for (i, flow) in flows.iter().enumerate() {
        if flow.operations.is_empty() {
            return Err(format!(
                "\"flows\"[{i}] has no \"operations\"; list the operations that go to {}",
                flow.request_topic
            ));
        }
        topic_name::check(&flow.request_topic)
            .map_err(|why| format!("\"flows\"[{i}].request_topic: {why}"))?;
        let dead_letters = flow.dead_letter_topic();
        topic_name::check(&dead_letters).map_err(|why| match flow.dlq_topic {
            Some(_) => format!("\"flows\"[{i}].dlq_topic: {why}"),
            None => format!(
                "\"flows\"[{i}]'s dead-letter topic (<request_topic>-dlt): {why}; set \"dlq_topic\""
            ),
        })?;
        if let Some(j) = flows.iter().position(|f| f.request_topic == dead_letters) {
            return Err(format!(
                "the dead-letter topic of \"flows\"[{i}], \"{dead_letters}\", is the request topic of \"flows\"[{j}], whose workers would take dead letters for payments; give \"flows\"[{i}] a \"dlq_topic\" of its own"
            ));
        }
        for operation in &flow.operations {
            if let Some(j) = flows[..i]
                .iter()
                .position(|f| f.operations.contains(operation))
            {
                return Err(format!(
                    "operation \"{operation}\" is in \"flows\"[{j}] and \"flows\"[{i}]; list each operation in one flow"
                ));
            }
        }
    }
    Ok(())
}

/// A flow as a running gateway uses it: the request topic, the dialect, the headers
/// that bring its replies back to this host, and where its dead letters go.
#[derive(Debug, Clone)]
pub struct Flow {
    pub operations: Vec<String>,
    pub request_topic: String,
    pub dialect: Dialect,
    pub return_address: ReturnAddress,
    pub dlq_topic: String,
}

/// Every flow of this gateway.
#[derive(Debug, Clone)]
pub struct Flows(Vec<Flow>);

impl Flows {
    /// The configured flows, each replying over this host's `route`.
    pub fn new(configured: &[FlowConfig], route: &ReplyRoute, names: &HeaderNames) -> Flows {
        Flows(
            configured
                .iter()
                .map(|flow| Flow {
                    operations: flow.operations.clone(),
                    request_topic: flow.request_topic.clone(),
                    dialect: flow.dialect,
                    return_address: route.return_address(names, flow.dialect),
                    dlq_topic: flow.dead_letter_topic(),
                })
                .collect(),
        )
    }

    /// The flow `operation` goes to; `None` for an operation no flow takes.
    pub fn of(&self, operation: &str) -> Option<&Flow> {
        self.0
            .iter()
            .find(|flow| flow.operations.iter().any(|o| o == operation))
    }

    /// The dialects in use, each once: a reply's id must have one of their shapes.
    pub fn dialects(&self) -> Vec<Dialect> {
        let mut dialects: Vec<Dialect> = self.0.iter().map(|flow| flow.dialect).collect();
        dialects.sort_by_key(|d| d.name());
        dialects.dedup();
        dialects
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flows(json: &str) -> Vec<FlowConfig> {
        serde_json::from_str(json).unwrap()
    }

    /// Host a's reply route (topic per host).
    fn host_a() -> ReplyRoute {
        ReplyRoute {
            host_ip: "127.0.0.2".parse().unwrap(),
            suffix: "a".into(),
            topic: "payment_response_a".into(),
            partition: None,
        }
    }

    #[test]
    fn each_operation_finds_its_flows_topic_and_dialect() {
        let configured = flows(
            r#"[{"operations": ["approve", "cancel"], "request_topic": "payment_request"},
                {"operations": ["refund"], "request_topic": "refund_request", "dialect": "nestjs"}]"#,
        );
        check(&configured).unwrap();
        let flows = Flows::new(&configured, &host_a(), &HeaderNames::default());
        let refund = flows.of("refund").unwrap();
        assert_eq!(
            (refund.request_topic.as_str(), refund.dialect),
            ("refund_request", Dialect::Nestjs)
        );
        assert_eq!(flows.of("cancel").unwrap().request_topic, "payment_request");
        assert!(flows.of("capture").is_none());
        assert_eq!(flows.dialects(), [Dialect::Nestjs, Dialect::Spring]);
    }

    #[test]
    fn each_flow_dead_letters_to_its_own_topic_by_default_request_topic_dlt() {
        let configured = flows(
            r#"[{"operations": ["approve"], "request_topic": "payment_request"},
                {"operations": ["refund"], "request_topic": "refund_request", "dlq_topic": "refund_dead"}]"#,
        );
        check(&configured).unwrap();
        let flows = Flows::new(&configured, &host_a(), &HeaderNames::default());
        assert_eq!(
            flows.of("approve").unwrap().dlq_topic,
            "payment_request-dlt"
        );
        assert_eq!(flows.of("refund").unwrap().dlq_topic, "refund_dead");
        assert_eq!(configured[1].describe(1), "\"flows\"[1] (refund)");
    }

    #[test]
    fn a_dead_letter_topic_that_is_a_request_topic_or_no_topic_name_is_refused() {
        let onto_requests = flows(
            r#"[{"operations": ["approve"], "request_topic": "payment_request"},
                {"operations": ["refund"], "request_topic": "refund_request", "dlq_topic": "payment_request"}]"#,
        );
        let err = check(&onto_requests).unwrap_err();
        assert!(
            err.starts_with("the dead-letter topic of \"flows\"[1], \"payment_request\", is the request topic of \"flows\"[0]"),
            "{err}"
        );
        let bad = flows(r#"[{"operations": ["x"], "request_topic": "a", "dlq_topic": "a dlt"}]"#);
        assert!(
            check(&bad)
                .unwrap_err()
                .starts_with("\"flows\"[0].dlq_topic")
        );
        let long = format!(
            r#"[{{"operations": ["x"], "request_topic": "{}"}}]"#,
            "t".repeat(249)
        );
        let err = check(&flows(&long)).unwrap_err();
        assert!(
            err.starts_with("\"flows\"[0]'s dead-letter topic (<request_topic>-dlt)"),
            "{err}"
        );
    }

    #[test]
    fn an_operation_in_two_flows_or_a_flow_without_operations_is_refused() {
        let twice = flows(
            r#"[{"operations": ["approve"], "request_topic": "a"},
                {"operations": ["refund", "approve"], "request_topic": "b"}]"#,
        );
        let err = check(&twice).unwrap_err();
        assert!(
            err.starts_with("operation \"approve\" is in \"flows\"[0] and \"flows\"[1]"),
            "{err}"
        );
        let empty = flows(r#"[{"operations": [], "request_topic": "a"}]"#);
        assert!(check(&empty).unwrap_err().contains("no \"operations\""));
        let bad = flows(r#"[{"operations": ["x"], "request_topic": "bad topic"}]"#);
        assert!(
            check(&bad)
                .unwrap_err()
                .starts_with("\"flows\"[0].request_topic")
        );
        assert!(
            serde_json::from_str::<Vec<FlowConfig>>(r#"[{"operations": [], "topic": "a"}]"#)
                .is_err()
        );
    }
}
