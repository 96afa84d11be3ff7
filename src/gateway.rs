//! `kreply gateway`: resolve this host's route, start the Kafka side, then serve HTTP.
//!
//! Each step either succeeds or ends startup with one sentence. The HTTP port opens only
//! after the reply consumer is positioned, so the first request ever accepted can already
//! receive its reply.

use crate::config::Config;
use crate::error::StartupError;
use crate::host_ips;
use crate::host_table::HostTable;
use crate::http::{self, Gateway};
use crate::kafka::{self, KafkaSetup};
use crate::readiness::Readiness;
use crate::registry::Registry;
use crate::reply_route::{self, ReplyRoute};
use std::path::Path;
use std::sync::Arc;

/// The host-table lookup: `host_ip` (or `KREPLY_HOST_IP`) if set, else the detected IPs.
pub fn resolve_route(config: &Config) -> Result<ReplyRoute, StartupError> {
    let table = HostTable::load(&config.host_table)?;
    let candidates = match config.host_ip {
        Some(ip) => vec![ip],
        None => host_ips::detect(),
    };
    reply_route::resolve(&table, &config.reply_topic_base, &candidates)
}

/// Runs the gateway until the process is stopped; returns only on a startup failure.
pub fn run(config_path: &Path) -> Result<(), StartupError> {
    let config = Config::load(config_path)?;
    let route = resolve_route(&config)?;
    log::info!("startup: config {}; {route}", config_path.display());
    let registry = Registry::new();
    let readiness = Readiness::default();
    let sender = kafka::start(KafkaSetup {
        config: config.clone(),
        config_path: config_path.display().to_string(),
        route: route.clone(),
        registry: registry.clone(),
        readiness: readiness.clone(),
    })?;
    let listen = config.listen;
    let gateway = Arc::new(Gateway {
        config,
        route,
        registry,
        sender,
        readiness,
    });
    async_std::task::block_on(async move {
        let listener = async_std::net::TcpListener::bind(listen).await.map_err(|e| {
            StartupError::new(format!(
                "cannot listen on {listen}: {e}; set \"listen\" in {} or KREPLY_LISTEN to a free address",
                config_path.display()
            ))
        })?;
        log::info!(
            "ready: listening on http://{listen}, replies on {}",
            gateway.route.topic
        );
        http::serve(http::app(gateway), listener).await;
        Ok(())
    })
}
