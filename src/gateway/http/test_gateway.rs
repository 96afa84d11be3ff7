//! The real tide application in process, for the HTTP side's tests: ready, with the send
//! queue standing in for the broker. Whatever a handler hands over stays in the returned
//! [`SendQueue`], where a test inspects it or answers it as a broker would.

use super::{GatewayState, State, app};
use crate::config::Config;
use crate::gateway::flows::Flows;
use crate::gateway::host_table::HostTable;
use crate::gateway::kafka::{SendQueue, channel};
use crate::gateway::readiness::Readiness;
use crate::gateway::registry::Registry;
use crate::gateway::reply_route::ReplyRoute;
use std::path::Path;
use std::sync::Arc;

/// This host's suffix in the host table; `local3` (127.0.0.3) is the other host there.
pub(super) const OWN_SUFFIX: &str = "local2";

/// A ready gateway with the default config whose records land in the returned queue.
pub(super) fn gateway() -> (tide::Server<State>, SendQueue) {
    gateway_with(Config::default())
}

/// A ready gateway with `config`, its registry sized by it as at startup.
pub(super) fn gateway_with(config: Config) -> (tide::Server<State>, SendQueue) {
    let (sender, queue) = channel();
    let readiness = Readiness::default();
    readiness.positioned();
    let reply_topic = format!("payment_response_{OWN_SUFFIX}");
    let route = ReplyRoute {
        host_ip: "127.0.0.2".parse().unwrap(),
        suffix: OWN_SUFFIX.into(),
        topic: reply_topic,
        partition: None,
    };
    let flows = Flows::new(&config.flows(), &route, &config.header_names);
    let gateway = GatewayState {
        registry: Registry::with_limits(config.max_in_flight, config.late_replies.limits()),
        config,
        metrics: Arc::default(),
        flows,
        route,
        hosts: HostTable::parse(
            Path::new("hosts"),
            "127.0.0.2 local2\n127.0.0.3 local3\n127.0.0.4 local4 url=https://gw4.example.com\n",
        )
        .unwrap(),
        sender,
        readiness,
    };
    (app(Arc::new(gateway)), queue)
}
