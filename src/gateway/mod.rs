//! `kreply gateway`: resolve this host's route, start the Kafka side, serve HTTP, and stop
//! gracefully.
//!
//! Each startup step either succeeds or ends startup with one sentence. The HTTP port opens
//! only after the reply consumer is positioned, and only then is systemd told `READY=1`, so
//! the first request ever accepted can already receive its reply.
//!
//! On SIGTERM or SIGINT: `/readyz` turns 503 and systemd hears `STOPPING=1`; the listener
//! closes (new connections are refused); payments in flight are answered, up to their
//! timeouts; queued records (dead letters) are flushed; exit 0. A second signal exits at once.

pub(crate) mod flows;
pub(crate) mod host_ips;
pub(crate) mod host_table;
pub(crate) mod http;
pub(crate) mod kafka;
pub(crate) mod late_replies;
pub(crate) mod metrics;
pub(crate) mod readiness;
pub(crate) mod registry;
pub(crate) mod reply_check;
pub(crate) mod reply_route;
pub(crate) mod reply_routing;

use crate::config::Config;
use crate::config::ignored::{self, Role};
use crate::error::StartupError;
use crate::ops::notify::{self, notify};
use crate::ops::signals::{self, SignalName};
use async_std::task;
use flows::Flows;
use host_table::HostTable;
use http::GatewayState;
use kafka::KafkaSetup;
use metrics::GatewayMetrics;
use readiness::Readiness;
use registry::Registry;
use reply_route::ReplyRoute;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The longest a stop waits for queued records to be acknowledged.
const FLUSH_LIMIT: Duration = Duration::from_secs(10);

/// The host-table lookup: `host_ip` (or `KREPLY_HOST_IP`) if set, else the detected IPs.
pub fn resolve_route(config: &Config) -> Result<ReplyRoute, StartupError> {
    route_in(&HostTable::load(&config.host_table)?, config)
}

/// [`resolve_route`] in a table already loaded.
pub(crate) fn route_in(table: &HostTable, config: &Config) -> Result<ReplyRoute, StartupError> {
    let candidates = match config.host_ip {
        Some(ip) => vec![ip],
        None => host_ips::detect(),
    };
    let (routing, base) = (config.reply_routing, &config.reply_topic_base);
    reply_route::resolve(table, routing, base, &candidates)
}

/// Runs the gateway until it is stopped by a signal.
pub fn run(config_path: &Path) -> Result<(), StartupError> {
    crate::ops::process::mark_start();
    let config = Config::load(config_path)?;
    let hosts = HostTable::load(&config.host_table)?;
    let route = route_in(&hosts, &config)?;
    log::info!("startup: config {}; {route}", config_path.display());
    ignored::log(&config, Role::Gateway, config_path);
    let shutdown = signals::listen("gateway")?;
    let registry = Registry::with_limits(config.max_in_flight, config.late_replies.limits());
    let readiness = Readiness::new(config.readiness_hysteresis());
    let flow_configs = config.flows();
    let operations: Vec<String> = flow_configs
        .iter()
        .flat_map(|flow| flow.operations.iter().cloned())
        .collect();
    let metrics = Arc::new(GatewayMetrics::new(&operations));
    let flows = Flows::new(&flow_configs, &route, &config.header_names);
    let sender = kafka::start(KafkaSetup {
        config: config.clone(),
        config_path: config_path.display().to_string(),
        route: route.clone(),
        dialects: flows.dialects(),
        hosts: hosts.clone(),
        registry: registry.clone(),
        readiness: readiness.clone(),
        metrics: Arc::clone(&metrics),
    })?;
    let listen = config.listen;
    let gateway = Arc::new(GatewayState {
        flows,
        config,
        metrics,
        route,
        hosts,
        registry,
        sender,
        readiness,
    });
    task::block_on(async move {
        let listener = async_std::net::TcpListener::bind(listen).await.map_err(|e| {
            StartupError::new(format!(
                "cannot listen on {listen} (set \"listen\" in {} or KREPLY_LISTEN to a free address): {e}",
                config_path.display()
            ))
        })?;
        if let Some(at) = gateway.config.metrics_listen {
            let metrics = async_std::net::TcpListener::bind(at).await.map_err(|e| {
                StartupError::new(format!(
                    "cannot serve /metrics on {at} (set \"metrics_listen\" in {} to a free address, or remove it to serve /metrics on \"listen\"): {e}",
                    config_path.display()
                ))
            })?;
            task::spawn(http::serve_metrics(Arc::clone(&gateway), metrics));
            log::info!("startup: gateway metrics on http://{at}/metrics");
        }
        let server = task::spawn(http::serve_gateway(
            http::app(Arc::clone(&gateway)),
            listener,
            shutdown.clone(),
        ));
        log::info!(
            "ready: listening on http://{listen}, replies on {}",
            gateway.route.topic
        );
        notify("READY=1");
        if let Some(every) = notify::watchdog_interval() {
            task::spawn(watchdog(every));
        }
        let signal = shutdown.requested().await;
        stop(&gateway, signal).await;
        server.await;
        Ok(())
    })
}

/// Tells systemd the process is alive; from an async-std task, so a stuck executor stops it.
async fn watchdog(every: Duration) {
    loop {
        notify("WATCHDOG=1");
        task::sleep(every).await;
    }
}

/// The graceful stop, step by step, once `signal` asked for it (the HTTP server stops
/// accepting on its own; a second signal ends the process, see [`signals`]).
async fn stop(gateway: &GatewayState, signal: SignalName) {
    log::info!(
        "{signal}: stopping: /readyz is 503, new connections are refused, in-flight payments finish"
    );
    notify("STOPPING=1");
    gateway.readiness.stop();
    let deadline = Instant::now() + gateway.config.max_timeout() + Duration::from_secs(1);
    while gateway.metrics.in_flight.get() > 0 && Instant::now() < deadline {
        task::sleep(Duration::from_millis(10)).await;
    }
    let left = gateway.metrics.in_flight.get();
    if left > 0 {
        log::warn!("stopping with {left} payment(s) still in flight past the longest timeout");
    }
    if async_std::future::timeout(FLUSH_LIMIT, gateway.sender.flush())
        .await
        .is_err()
    {
        log::warn!(
            "stopping before every queued record was acknowledged ({} s limit)",
            FLUSH_LIMIT.as_secs()
        );
    }
    log::info!("stopped");
}
