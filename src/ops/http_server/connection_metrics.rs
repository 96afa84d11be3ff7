//! What every HTTP server of the binary counts about its connections: how many are open,
//! refused at the cap, and cut on a slow, idle or malformed client.

use crate::ops::metrics::{Counter, CounterVec, Exposition, Gauge};

/// What the accept loop counts. Its own type, so that every HTTP server of the binary
/// (the gateway, the worker's and the PG simulator's) can share the loop.
#[derive(Default)]
pub struct ConnectionMetrics {
    /// HTTP connections open now.
    pub open: Gauge,
    /// Connections answered `503` (or closed at once) because `http.max_connections` were open.
    pub refused: Counter,
    /// Connections closed on a client, by reason (see [`ConnectionCut`]).
    cut: CounterVec,
}

impl ConnectionMetrics {
    pub fn cut(&self, why: ConnectionCut) {
        self.cut.inc(&[why.label()]);
    }

    pub(crate) fn render(&self, out: &mut Exposition) {
        out.gauge(
            "kreply_http_connections",
            "HTTP connections open now.",
            self.open.get() as f64,
        );
        out.counter(
            "kreply_http_connections_refused_total",
            "Connections refused because http.max_connections were open.",
            self.refused.get(),
        );
        out.counter_vec(
            "kreply_http_connections_cut_total",
            "Connections closed on a slow, idle or malformed client, by reason.",
            &["reason"],
            &self.cut,
        );
    }
}

/// Why the gateway closed a connection on its client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionCut {
    /// No request began: within `http.head_timeout_ms` of opening, or within
    /// `http.idle_timeout_ms` of the last answer (closed silently).
    IdleTimeout,
    /// The head did not arrive within `http.head_timeout_ms` (`408`).
    HeadTimeout,
    /// The body did not arrive within `http.body_timeout_ms` (`408`).
    BodyTimeout,
    /// The head was not HTTP/1.1 the gateway can read (`400`).
    MalformedHead,
}

impl ConnectionCut {
    pub fn label(self) -> &'static str {
        match self {
            ConnectionCut::IdleTimeout => "idle-timeout",
            ConnectionCut::HeadTimeout => "head-timeout",
            ConnectionCut::BodyTimeout => "body-timeout",
            ConnectionCut::MalformedHead => "malformed-head",
        }
    }
}
