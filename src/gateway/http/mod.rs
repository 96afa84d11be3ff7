//! The HTTP side: tide on async-std.
//!
//! Routes: `POST /v1/payments/{operation}`, `GET /v1/payments/{operation}/{idempotency_key}`,
//! `GET /v1/requests/{correlation_id}`, `GET /healthz`,
//! `GET /readyz`, `GET /metrics` (or `/metrics` on a listener of its own, `metrics_listen`),
//! described (every status, problem code and header) by the OpenAPI 3.1 document
//! `docs/openapi.json`, which `tests/openapi.rs` checks against the source and the
//! binary's answers. Everything the handlers need is in one shared
//! [`GatewayState`]; the Kafka side is reached only through its [`SendHandle`] and the
//! correlation registry.

#[cfg(test)]
mod answer_tests;
#[cfg(test)]
mod connection_tests;
#[cfg(test)]
mod hostile_tests;
mod outcomes;
mod payment_input;
mod payments;
mod probes;
mod requests;
#[cfg(test)]
mod test_gateway;

use crate::config::Config;
use crate::gateway::flows::Flows;
use crate::gateway::host_table::HostTable;
use crate::gateway::kafka::SendHandle;
use crate::gateway::metrics::GatewayMetrics;
use crate::gateway::readiness::Readiness;
use crate::gateway::registry::Registry;
use crate::gateway::reply_route::ReplyRoute;
use crate::ops::http_server::one_method::route;
use crate::ops::http_server::{self, Limits};
use crate::ops::signals::Shutdown;
use async_std::net::TcpListener;
use std::sync::Arc;
use tide::http::Method::{Get, Post};

/// What every request handler shares: the gateway's running state (the `gateway` module
/// builds it at startup and drains it on stop).
pub struct GatewayState {
    pub config: Config,
    pub metrics: Arc<GatewayMetrics>,
    pub route: ReplyRoute,
    /// Where each operation's requests go, and the headers that bring the replies back
    /// to this host.
    pub flows: Flows,
    /// Where each host's late replies are asked for (`GET /v1/requests/{id}?host=`).
    pub hosts: HostTable,
    pub registry: Registry,
    pub sender: SendHandle,
    pub readiness: Readiness,
}

pub type State = Arc<GatewayState>;

/// The tide application with every route (an error without a body becomes a problem in
/// [`http_server`]). Each route takes one method; any other is answered `405` with `Allow`.
/// `/metrics` only when no `metrics_listen` takes it elsewhere.
pub fn app(gateway: State) -> tide::Server<State> {
    let metrics_here = gateway.config.metrics_listen.is_none();
    let mut app = tide::with_state(gateway);
    route(&mut app, "/v1/payments/:operation", Post, payments::handle);
    let outcome = "/v1/payments/:operation/:idempotency_key";
    route(&mut app, outcome, Get, outcomes::handle);
    route(
        &mut app,
        "/v1/requests/:correlation_id",
        Get,
        requests::handle,
    );
    route(&mut app, "/healthz", Get, probes::healthz);
    route(&mut app, "/readyz", Get, probes::readyz);
    if metrics_here {
        route(&mut app, "/metrics", Get, probes::metrics);
    }
    app
}

/// `/metrics` alone, for its own listener (`metrics_listen`). It stays open through a
/// graceful stop, so the drain itself can be watched.
pub async fn serve_metrics(gateway: State, listener: TcpListener) {
    let mut app = tide::with_state(gateway);
    app.at("/metrics").get(probes::metrics);
    http_server::serve(app, listener, Shutdown::never()).await;
}

/// The gateway: [`http_server::serve`] with the limits of its config, counted in its `/metrics`.
pub async fn serve_gateway(app: tide::Server<State>, listener: TcpListener, shutdown: Shutdown) {
    let gateway = Arc::clone(app.state());
    let limits = Limits {
        http: gateway.config.http.clone(),
        metrics: Arc::clone(&gateway.metrics.connections),
    };
    http_server::serve_limited(app, listener, shutdown, limits).await;
}
