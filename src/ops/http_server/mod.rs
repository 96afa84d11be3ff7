//! The accept loop: `TCP_NODELAY` on every connection, and a cap on how many are open.
//!
//! tide's stock listener leaves Nagle's algorithm on, and async-h1 writes a response's head
//! and body in separate writes, so every response waited ~40 ms for the peer's delayed ACK.
//! Accepting connections here and handing them to [`connection::serve`] removes that stall.
//!
//! Each open connection costs a file descriptor and a task, so at most
//! `http.max_connections` are served. One beyond the cap is accepted, answered `503
//! too-many-connections` with `Retry-After`, and closed: a load balancer then sees a
//! definite answer at once, where a connection left in the backlog would hang. Those
//! refusals are bounded too: past [`REFUSING_AT_ONCE`] of them in progress, a connection
//! is closed without a word. Both count in `kreply_http_connections_refused_total`.

mod connection;
mod connection_metrics;
mod head_rules;
pub(crate) mod one_method;
pub(crate) mod problem_response;

pub(crate) use connection::BodyDeadline;
#[cfg(test)]
pub(crate) use connection::answer;
pub(crate) use connection_metrics::{ConnectionCut, ConnectionMetrics};

use crate::config::HttpConfig;
use crate::ops::signals::Shutdown;
use async_std::net::{TcpListener, TcpStream};
use async_std::task;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Refusals being written at once, at most; each lasts at most about a second.
const REFUSING_AT_ONCE: usize = 64;
/// What a refused client is told to wait before trying again.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Serves `app` with the default limits (the worker's and the PG simulator's endpoints).
pub async fn serve<S>(app: tide::Server<S>, listener: TcpListener, shutdown: Shutdown)
where
    S: Clone + Send + Sync + 'static,
{
    serve_limited(app, listener, shutdown, Limits::default()).await;
}

/// The limits a connection is served under, and where its fate is counted.
#[derive(Clone, Default)]
pub struct Limits {
    pub http: HttpConfig,
    pub metrics: Arc<ConnectionMetrics>,
}

/// Serves `app` on `listener` until `shutdown` is asked for; then drops the listener, so
/// new connections are refused while those already open finish their requests.
pub(crate) async fn serve_limited<S>(
    app: tide::Server<S>,
    listener: TcpListener,
    shutdown: Shutdown,
    limits: Limits,
) where
    S: Clone + Send + Sync + 'static,
{
    let limits = Arc::new(limits);
    let cap = limits.http.max_connections;
    let refusing = Arc::new(AtomicUsize::new(0));
    let mut at_cap = false;
    while let Some(accepted) = shutdown.unless_requested(listener.accept()).await {
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Usually out of file descriptors: back off instead of spinning.
                log::warn!("accept failed: {e}");
                task::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if let Err(e) = stream.set_nodelay(true) {
            log::warn!("cannot set TCP_NODELAY for {peer}: {e}");
        }
        let full = limits.metrics.open.get() >= cap as i64;
        if full != at_cap {
            log_cap_change(full, cap);
            at_cap = full;
        }
        if full {
            refuse(stream, &limits.metrics, &refusing);
            continue;
        }
        let open = Open::count(&limits.metrics);
        let app = app.clone();
        let shutdown = shutdown.clone();
        let limits = Arc::clone(&limits);
        task::spawn(async move {
            connection::serve(stream, app, shutdown, &limits).await;
            drop(open);
        });
    }
}

fn log_cap_change(full: bool, cap: usize) {
    if full {
        log::warn!(
            "connection cap reached: {cap} open (http.max_connections); new connections get 503 too-many-connections"
        );
    } else {
        log::info!("below the connection cap again: new connections are served");
    }
}

/// Answers a connection beyond the cap, or closes it at once if too many refusals are
/// already being written.
fn refuse(stream: TcpStream, metrics: &ConnectionMetrics, refusing: &Arc<AtomicUsize>) {
    metrics.refused.inc();
    if refusing.fetch_add(1, Ordering::AcqRel) >= REFUSING_AT_ONCE {
        refusing.fetch_sub(1, Ordering::AcqRel);
        return;
    }
    let refusing = Arc::clone(refusing);
    task::spawn(async move {
        connection::refuse(stream, RETRY_AFTER).await;
        refusing.fetch_sub(1, Ordering::AcqRel);
    });
}

/// One open connection, counted in `kreply_http_connections` from its accept (so the cap
/// is exact) until the task serving it ends.
struct Open(Arc<ConnectionMetrics>);

impl Open {
    fn count(metrics: &Arc<ConnectionMetrics>) -> Open {
        metrics.open.add(1);
        Open(Arc::clone(metrics))
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.add(-1);
    }
}
