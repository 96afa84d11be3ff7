//! The gateway's metrics, filled by the HTTP side and the Kafka side, read by `/metrics`.
//!
//! Operation labels are limited to the configured operations (anything else counts as
//! `unknown`), so a client cannot grow the series without bound by inventing operations.

use crate::gateway::late_replies::LateStats;
use crate::gateway::registry::Registry;
use crate::gateway::reply_check::BadReply;
use crate::kafka::offset_gaps::Checked;
use crate::ops::http_server::ConnectionMetrics;
use crate::ops::metrics::{
    ACK_BUCKETS, Counter, CounterVec, Exposition, Gauge, HistogramVec, LATENCY_BUCKETS,
    PartitionGauge,
};
use crate::ops::process;
use crate::wire::dead_letter::Cause;
use std::sync::Arc;
use std::time::Duration;

/// How a payment request ended, for `kreply_requests_total{outcome}` and the latency
/// histogram. Bounded on purpose: an SLO divides the bad outcomes by all of them, and
/// each is a series per operation. A decline is the system working (the PG said no), a
/// refusal is the caller's input, an unavailable answer is the gateway's own capacity or
/// health: an error ratio that mixed them would page for a card limit or a client's bug.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestOutcome {
    /// 200 with the worker's reply.
    Approved,
    /// 402: the worker answered `declined`; nothing was charged.
    Declined,
    /// 4xx for the caller's input: refused before anything was produced (unknown
    /// operation, bad body or headers), or by the worker (`invalid-request`,
    /// `idempotency-key-reused`).
    Refused,
    /// 503 `not-ready` or `overloaded`: turned away before the body was read, nothing
    /// produced; safe to retry.
    Unavailable,
    /// 504 `reply-timeout`: no reply (or acknowledgement) in time; the outcome is unknown.
    Timeout,
    /// Everything else: the send failed, the worker answered with an error of its own
    /// (`pg-error`, `pg-unknown`, a code the gateway does not know) or with no JSON, or
    /// the gateway failed itself (a correlation id already in use).
    Error,
}

impl RequestOutcome {
    /// Every outcome, in the order the docs list them.
    pub const ALL: [RequestOutcome; 6] = [
        RequestOutcome::Approved,
        RequestOutcome::Declined,
        RequestOutcome::Refused,
        RequestOutcome::Unavailable,
        RequestOutcome::Timeout,
        RequestOutcome::Error,
    ];

    fn label(self) -> &'static str {
        match self {
            RequestOutcome::Approved => "approved",
            RequestOutcome::Declined => "declined",
            RequestOutcome::Refused => "refused",
            RequestOutcome::Unavailable => "unavailable",
            RequestOutcome::Timeout => "timeout",
            RequestOutcome::Error => "error",
        }
    }

    /// The outcome of a worker's error answer, by the status its code maps to
    /// (`wire::reply_error`): 402 is a decline, another 4xx the caller's input, the rest
    /// (502, 504 `pg-unknown`) the system's.
    pub fn of_worker_error(status: u16) -> RequestOutcome {
        match status {
            402 => RequestOutcome::Declined,
            400..=499 => RequestOutcome::Refused,
            _ => RequestOutcome::Error,
        }
    }
}

/// Which record a produce acknowledgement was for, for `kreply_produce_ack_duration_seconds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Produced {
    Request,
    DeadLetter,
}

impl Produced {
    fn label(self) -> &'static str {
        match self {
            Produced::Request => "request",
            Produced::DeadLetter => "dead-letter",
        }
    }
}

/// The operation label of a payment that named no configured operation: a client cannot
/// grow the series by inventing operations.
pub const UNKNOWN_OPERATION: &str = "unknown";

pub struct GatewayMetrics {
    requests: CounterVec,
    latency: HistogramVec,
    /// Payment requests being answered now.
    pub in_flight: Gauge,
    /// Dead letters handed to the producer, by cause.
    dlq_writes: CounterVec,
    /// Dead letters the brokers did not acknowledge: a payment of unknown outcome that
    /// left no record for reconciliation.
    pub dlq_write_failures: Counter,
    pub produce_errors: Counter,
    /// From handing a record to the producer to the brokers' acknowledgement, by record.
    produce_ack: HistogramVec,
    /// Payments refused with 503 `overloaded` (`max_in_flight` reached).
    pub overload_refusals: Counter,
    /// Times the reply consumer was opened again (its log started over, or it heard
    /// nothing from the brokers for `reply_stale_after_ms`).
    pub reply_consumer_reopens: Counter,
    /// Times the producer started a new session after the brokers stopped honouring one.
    pub producer_sessions_renewed: Counter,
    reply_lag: PartitionGauge,
    /// The HTTP connections: open, refused, cut off.
    pub connections: Arc<ConnectionMetrics>,
    /// Reply records that break the wire conventions, by reason (see [`BadReply`]).
    bad_replies: CounterVec,
    /// Holes in the reply partitions' offsets, by outcome (see `kafka::offset_gaps`).
    reply_offset_holes: CounterVec,
}

impl Default for GatewayMetrics {
    fn default() -> Self {
        GatewayMetrics {
            requests: CounterVec::default(),
            latency: HistogramVec::new(LATENCY_BUCKETS),
            in_flight: Gauge::default(),
            dlq_writes: CounterVec::default(),
            dlq_write_failures: Counter::default(),
            produce_errors: Counter::default(),
            produce_ack: HistogramVec::new(ACK_BUCKETS),
            overload_refusals: Counter::default(),
            reply_consumer_reopens: Counter::default(),
            producer_sessions_renewed: Counter::default(),
            reply_lag: PartitionGauge::default(),
            connections: Arc::default(),
            bad_replies: CounterVec::default(),
            reply_offset_holes: CounterVec::default(),
        }
    }
}

impl GatewayMetrics {
    /// The metrics of a gateway taking `operations`: every labelled series an alert or a
    /// dashboard reads exists from the start, at 0.
    pub fn new(operations: &[String]) -> GatewayMetrics {
        let metrics = GatewayMetrics::default();
        for operation in operations {
            for outcome in RequestOutcome::ALL {
                metrics.requests.register(&[operation, outcome.label()]);
                metrics.latency.register(&[operation, outcome.label()]);
            }
        }
        // An operation nobody configured is refused before anything else happens.
        let unknown = [UNKNOWN_OPERATION, RequestOutcome::Refused.label()];
        metrics.requests.register(&unknown);
        metrics.latency.register(&unknown);
        for cause in [Cause::ReplyTimeout, Cause::SendFailed] {
            metrics.dlq_writes.register(&[cause.label()]);
        }
        for produced in [Produced::Request, Produced::DeadLetter] {
            metrics.produce_ack.register(&[produced.label()]);
        }
        metrics
    }

    /// Counts one dead letter handed to the producer.
    pub fn dlq_write(&self, cause: Cause) {
        self.dlq_writes.inc(&[cause.label()]);
    }

    /// Times one acknowledged produce.
    pub fn produce_acked(&self, produced: Produced, elapsed: Duration) {
        self.produce_ack.observe(&[produced.label()], elapsed);
    }

    /// Counts the holes one poll of the reply topic found.
    pub fn reply_offset_holes(&self, checked: &Checked) {
        for outcome in checked.outcomes() {
            self.reply_offset_holes.inc(&[outcome]);
        }
    }

    /// Counts one finished request; `operation` must already be a known label.
    pub fn record(&self, operation: &str, outcome: RequestOutcome, elapsed: Duration) {
        let labels = [operation, outcome.label()];
        self.requests.inc(&labels);
        self.latency.observe(&labels, elapsed);
    }

    pub fn bad_reply(&self, what: BadReply) {
        self.bad_replies.inc(&[what.label()]);
    }

    /// The reply consumer's lag per partition, as of its last poll.
    pub fn set_reply_lag(&self, lag: impl IntoIterator<Item = (i32, u64)>) {
        let lag = lag
            .into_iter()
            .map(|(p, l)| (p, l.min(i64::MAX as u64) as i64));
        self.reply_lag.update(lag);
    }

    /// The whole exposition.
    pub fn render(&self, registry: &Registry, ready: bool) -> String {
        let mut out = Exposition::default();
        out.counter_vec(
            "kreply_requests_total",
            "Payment requests by operation and outcome (approved, declined, refused, unavailable, timeout, error).",
            &["operation", "outcome"],
            &self.requests,
        );
        out.histogram_vec(
            "kreply_request_duration_seconds",
            "Time from request to answer, by operation and outcome.",
            &["operation", "outcome"],
            &self.latency,
        );
        out.gauge(
            "kreply_in_flight_requests",
            "Payment requests being answered now.",
            self.in_flight.get() as f64,
        );
        out.gauge(
            "kreply_waiting_replies",
            "Correlation ids waiting for a reply now.",
            registry.in_flight() as f64,
        );
        out.counter(
            "kreply_replies_without_waiter_total",
            "Replies that found no waiting request.",
            registry.unmatched(),
        );
        out.counter(
            "kreply_overload_refusals_total",
            "Payments refused with 503 overloaded because max_in_flight were waiting.",
            self.overload_refusals.get(),
        );
        render_late_replies(&mut out, registry.late_stats());
        out.counter_vec(
            "kreply_dlq_writes_total",
            "Dead-letter records handed to the producer, by cause (reply-timeout, send-failed).",
            &["cause"],
            &self.dlq_writes,
        );
        out.counter(
            "kreply_dlq_write_failures_total",
            "Dead-letter records the brokers did not acknowledge: payments of unknown outcome with no record to reconcile.",
            self.dlq_write_failures.get(),
        );
        out.counter(
            "kreply_produce_errors_total",
            "Records the brokers did not acknowledge (requests and dead letters).",
            self.produce_errors.get(),
        );
        out.histogram_vec(
            "kreply_produce_ack_duration_seconds",
            "Time from handing a record to the producer to the brokers' acknowledgement, by record (request, dead-letter).",
            &["record"],
            &self.produce_ack,
        );
        out.counter(
            "kreply_reply_consumer_reopens_total",
            "Times the reply consumer was opened again: its log started over (topic re-created, broker restarted empty, log truncated), or it heard nothing from the brokers for reply_stale_after_ms.",
            self.reply_consumer_reopens.get(),
        );
        out.counter_vec(
            "kreply_reply_offset_holes_total",
            "Holes in the reply offsets a poll returned, by outcome: read-again (a reply the broker stored after a later one, read again), read-past (still missing after 3 reads: a reply may be unread), old (before old records: the log's own).",
            &["outcome"],
            &self.reply_offset_holes,
        );
        out.counter(
            "kreply_producer_sessions_renewed_total",
            "Times the producer started a new session (new producer id) after the brokers stopped honouring its old one.",
            self.producer_sessions_renewed.get(),
        );
        out.partition_gauge(
            "kreply_reply_consumer_lag",
            "Replies not yet read, per reply-topic partition.",
            &self.reply_lag,
        );
        self.connections.render(&mut out);
        out.counter_vec(
            "kreply_bad_replies_total",
            "Reply records that break the wire conventions, by reason.",
            &["reason"],
            &self.bad_replies,
        );
        out.gauge(
            "kreply_ready",
            "1 while the gateway takes payments.",
            if ready { 1.0 } else { 0.0 },
        );
        process::render(&mut out);
        out.finish()
    }
}

/// The late-reply store: what it holds now, and what went in and out since startup.
fn render_late_replies(out: &mut Exposition, late: LateStats) {
    out.gauge(
        "kreply_late_replies_stored",
        "Late replies held for GET /v1/requests/{id} now.",
        late.stored as f64,
    );
    out.gauge(
        "kreply_late_replies_awaited",
        "Requests given up on (504) whose reply has not come yet.",
        late.awaited as f64,
    );
    for (name, help, value) in [
        (
            "kreply_late_replies_kept_total",
            "Replies kept because they came after their caller was given up on.",
            late.kept,
        ),
        (
            "kreply_late_replies_served_total",
            "Kept replies answered to GET /v1/requests/{id}.",
            late.served,
        ),
        (
            "kreply_late_replies_expired_total",
            "Kept replies forgotten after late_replies.max_age_ms.",
            late.expired,
        ),
        (
            "kreply_late_replies_evicted_total",
            "Kept replies forgotten early to stay within late_replies.max_count.",
            late.evicted,
        ),
    ] {
        out.counter(name, help, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::offset_gaps::ReadAgain;
    use crate::ops::http_server::ConnectionCut;
    use std::time::Duration;

    #[test]
    fn known_traffic_shows_up_in_the_text() {
        let metrics = GatewayMetrics::default();
        let guard = metrics.in_flight.track();
        metrics.record(
            "approve",
            RequestOutcome::Approved,
            Duration::from_millis(3),
        );
        metrics.record("approve", RequestOutcome::Timeout, Duration::from_secs(5));
        metrics.dlq_write(Cause::ReplyTimeout);
        metrics.overload_refusals.inc();
        metrics.set_reply_lag([(0, 2), (1, 0)]);
        metrics.connections.cut(ConnectionCut::BodyTimeout);
        metrics.bad_reply(BadReply::NotJson);
        metrics.reply_offset_holes(&Checked {
            read_again: vec![ReadAgain {
                partition: 1,
                from: 9,
            }],
            skipped: vec![],
        });
        let text = metrics.render(&Registry::default(), true);
        assert!(
            text.contains("kreply_requests_total{operation=\"approve\",outcome=\"approved\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("kreply_requests_total{operation=\"approve\",outcome=\"timeout\"} 1\n")
        );
        // A 5 s timeout stays out of the approved payments' latency.
        assert!(text.contains(
            "kreply_request_duration_seconds_count{operation=\"approve\",outcome=\"approved\"} 1\n"
        ));
        assert!(text.contains(
            "kreply_request_duration_seconds_sum{operation=\"approve\",outcome=\"approved\"} 0.003\n"
        ));
        assert!(text.contains("kreply_in_flight_requests 1\n"));
        assert!(text.contains("kreply_dlq_writes_total{cause=\"reply-timeout\"} 1\n"));
        assert!(text.contains("kreply_overload_refusals_total 1\n"));
        assert!(text.contains("kreply_late_replies_kept_total 0\n"));
        assert!(text.contains("kreply_late_replies_stored 0\n"));
        assert!(text.contains("kreply_reply_consumer_lag{partition=\"0\"} 2\n"));
        assert!(text.contains("kreply_ready 1\n"));
        assert!(text.contains("kreply_http_connections_cut_total{reason=\"body-timeout\"} 1\n"));
        assert!(text.contains("kreply_bad_replies_total{reason=\"not-json\"} 1\n"));
        assert!(text.contains("kreply_reply_offset_holes_total{outcome=\"read-again\"} 1\n"));
        drop(guard);
        assert_eq!(metrics.in_flight.get(), 0);
    }

    #[test]
    fn every_configured_series_is_there_at_zero_before_the_first_payment() {
        let metrics = GatewayMetrics::new(&["approve".to_string(), "refund".to_string()]);
        let text = metrics.render(&Registry::default(), true);
        for operation in ["approve", "refund"] {
            for outcome in RequestOutcome::ALL {
                let labels = format!("operation=\"{operation}\",outcome=\"{}\"", outcome.label());
                assert!(
                    text.contains(&format!("kreply_requests_total{{{labels}}} 0\n")),
                    "{labels} in {text}"
                );
                assert!(text.contains(&format!(
                    "kreply_request_duration_seconds_count{{{labels}}} 0\n"
                )));
            }
        }
        for cause in ["reply-timeout", "send-failed"] {
            assert!(text.contains(&format!("kreply_dlq_writes_total{{cause=\"{cause}\"}} 0\n")));
        }
        assert!(text.contains("kreply_dlq_write_failures_total 0\n"));
        assert!(text.contains("kreply_produce_ack_duration_seconds_count{record=\"request\"} 0\n"));
        assert!(text.contains("kreply_build_info{version="), "{text}");
        assert!(text.contains("process_open_fds "), "{text}");
    }

    #[test]
    fn a_decline_is_not_an_error_and_a_refused_input_is_not_the_systems() {
        use crate::wire::reply_error::ReplyError;
        let outcome = |error: ReplyError| RequestOutcome::of_worker_error(error.status());
        assert_eq!(outcome(ReplyError::Declined), RequestOutcome::Declined);
        assert_eq!(outcome(ReplyError::InvalidRequest), RequestOutcome::Refused);
        assert_eq!(outcome(ReplyError::KeyReused), RequestOutcome::Refused);
        assert_eq!(outcome(ReplyError::PgError), RequestOutcome::Error);
        assert_eq!(outcome(ReplyError::PgUnknown), RequestOutcome::Error);
        assert_eq!(outcome(ReplyError::Unrecognised), RequestOutcome::Error);
    }
}
