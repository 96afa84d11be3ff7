//! The HTTP side: tide on async-std.
//!
//! Routes: `POST /v1/payments/{operation}`, `GET /v1/requests/{correlation_id}`, `GET /healthz`,
//! `GET /readyz`, `GET /metrics`. Everything the handlers need is in one shared
//! [`GatewayState`]; the Kafka side is reached only through its [`SendHandle`] and the
//! correlation registry.

mod connection;
#[cfg(test)]
mod hostile_tests;
mod listener;
mod payment_input;
mod payments;
mod probes;
mod problem_response;
mod requests;

pub use connection::BodyDeadline;
pub use listener::{serve, serve_gateway};

use crate::config::Config;
use crate::gateway_metrics::GatewayMetrics;
use crate::host_table::HostTable;
use crate::kafka::SendHandle;
use crate::readiness::Readiness;
use crate::registry::Registry;
use crate::reply_route::ReplyRoute;
use std::sync::Arc;

/// What every request handler shares: the gateway's running state (the `gateway` module
/// builds it at startup and drains it on stop).
pub struct GatewayState {
    pub config: Config,
    pub metrics: Arc<GatewayMetrics>,
    pub route: ReplyRoute,
    /// Where each host's late replies are asked for (`GET /v1/requests/{id}?host=`).
    pub hosts: HostTable,
    pub registry: Registry,
    pub sender: SendHandle,
    pub readiness: Readiness,
}

pub type State = Arc<GatewayState>;

/// The tide application with every route and the problem+json fallback.
pub fn app(gateway: State) -> tide::Server<State> {
    let mut app = tide::with_state(gateway);
    app.with(tide::utils::After(problem_response::fallback));
    app.at("/v1/payments/:operation").post(payments::handle);
    app.at("/v1/requests/:correlation_id").get(requests::handle);
    app.at("/healthz").get(probes::healthz);
    app.at("/readyz").get(probes::readyz);
    app.at("/metrics").get(probes::metrics);
    app
}
