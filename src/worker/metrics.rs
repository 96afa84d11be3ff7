//! The worker's metrics and its small HTTP listener for `/metrics` and `/healthz`.

use crate::kafka::offset_gaps::Checked;
use crate::ops::metrics::{
    ACK_BUCKETS, Counter, CounterVec, Exposition, Gauge, HistogramVec, LATENCY_BUCKETS,
    PartitionGauge,
};
use crate::ops::process;
use crate::ops::signals::Shutdown;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Every `result` of `kreply_worker_requests_total`, shown at 0 from the start so that an
/// alert on the rate of one (`pg-unknown`) works before its first event.
pub const RESULTS: [&str; 10] = [
    "approved",
    "declined",
    "pg-error",
    "pg-unknown",
    "invalid-request",
    "idempotency-key-reused",
    "expired",
    "repeat",
    "skipped",
    "lookup",
];

/// The results a PG call can have, for `kreply_worker_pg_call_duration_seconds`.
const PG_RESULTS: [&str; 4] = ["approved", "declined", "pg-error", "pg-unknown"];

/// Which record a produce acknowledgement was for, for
/// `kreply_worker_produce_ack_duration_seconds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Produced {
    Reply,
    Result,
}

impl Produced {
    fn label(self) -> &'static str {
        match self {
            Produced::Reply => "reply",
            Produced::Result => "result",
        }
    }
}
use tide::{Request, Response, StatusCode};

pub struct WorkerMetrics {
    /// By result: [`RESULTS`].
    requests: CounterVec,
    pg_calls: HistogramVec,
    /// From the poll that brought a request to its reply's acknowledgement (or its skip),
    /// the wait behind its order's earlier requests and any retries included.
    settle: HistogramVec,
    /// From handing a reply or results record to the producer to its acknowledgement.
    produce_ack: HistogramVec,
    /// Per owned request partition: its high watermark (as the last fetch said) minus
    /// where its settled prefix ends, the offset committed or about to be.
    lag: PartitionGauge,
    pub pg_calls_in_flight: Gauge,
    /// `worker.concurrency`, so an alert can tell calls in flight at the cap.
    pub pg_concurrency: Gauge,
    pub partitions: Gauge,
    /// Payments in the owned partitions' files (those within the idempotency window).
    pub results_keys: Gauge,
    /// Results records read to fill the files of partitions this worker was given: a
    /// restore after a lost state directory, or what came since a file's checkpoint.
    pub results_restored: Counter,
    /// Requests polled and not settled yet: queued behind their order, or being settled.
    pub held: Gauge,
    pub commit_errors: Counter,
    /// Times the worker left and rejoined its group over a stale assignment.
    pub group_rejoins: Counter,
    /// New producer sessions started after the brokers stopped honouring one.
    pub producer_sessions_renewed: Counter,
    /// Attempts that found an earlier attempt of the same payment before their own
    /// `pending` in the log, and so did not call the PG.
    pub lost_races: Counter,
    /// Payments left in doubt by an earlier attempt that were settled by asking the PG
    /// again with the same idempotency key (`worker.pg_idempotent`).
    pub asked_pg_again: Counter,
    /// Holes in a log's offsets, by log (`requests`, `results`) and outcome.
    offset_holes: CounterVec,
}

impl Default for WorkerMetrics {
    fn default() -> Self {
        let metrics = WorkerMetrics {
            requests: CounterVec::default(),
            pg_calls: HistogramVec::new(LATENCY_BUCKETS),
            settle: HistogramVec::new(LATENCY_BUCKETS),
            produce_ack: HistogramVec::new(ACK_BUCKETS),
            lag: PartitionGauge::default(),
            pg_calls_in_flight: Gauge::default(),
            pg_concurrency: Gauge::default(),
            partitions: Gauge::default(),
            results_keys: Gauge::default(),
            results_restored: Counter::default(),
            held: Gauge::default(),
            commit_errors: Counter::default(),
            group_rejoins: Counter::default(),
            producer_sessions_renewed: Counter::default(),
            lost_races: Counter::default(),
            asked_pg_again: Counter::default(),
            offset_holes: CounterVec::default(),
        };
        metrics.register();
        metrics
    }
}

impl WorkerMetrics {
    /// Every labelled series an alert or a dashboard reads, at 0 until it counts.
    fn register(&self) {
        for result in RESULTS {
            self.requests.register(&[result]);
        }
        for result in PG_RESULTS {
            self.pg_calls.register(&[result]);
        }
        self.settle.register(&[]);
        for produced in [Produced::Reply, Produced::Result] {
            self.produce_ack.register(&[produced.label()]);
        }
    }

    pub fn request(&self, result: &str) {
        self.requests.inc(&[result]);
    }

    pub fn pg_call(&self, result: &str, elapsed: Duration) {
        self.pg_calls.observe(&[result], elapsed);
    }

    /// A request settled (its reply acknowledged) `elapsed` after the poll that brought it.
    pub fn settled(&self, elapsed: Duration) {
        self.settle.observe(&[], elapsed);
    }

    pub fn produce_acked(&self, produced: Produced, elapsed: Duration) {
        self.produce_ack.observe(&[produced.label()], elapsed);
    }

    /// The lag of every partition owned now; partitions no longer owned drop out.
    pub fn set_lag(&self, lag: BTreeMap<i32, i64>) {
        self.lag.replace(lag);
    }

    /// Counts the holes one poll of `log` found.
    pub fn offset_holes(&self, log: &str, checked: &Checked) {
        for outcome in checked.outcomes() {
            self.offset_holes.inc(&[log, outcome]);
        }
    }

    pub fn render(&self) -> String {
        let mut out = Exposition::default();
        out.counter_vec(
            "kreply_worker_requests_total",
            "Requests settled, by result (approved, declined, pg-error, pg-unknown, invalid-request, idempotency-key-reused, expired, repeat, skipped, lookup).",
            &["result"],
            &self.requests,
        );
        out.histogram_vec(
            "kreply_worker_pg_call_duration_seconds",
            "PG call time, by result.",
            &["result"],
            &self.pg_calls,
        );
        out.histogram_vec(
            "kreply_worker_settle_duration_seconds",
            "Time from the poll that brought a request to its reply's acknowledgement (the wait behind its order's earlier requests included).",
            &[],
            &self.settle,
        );
        out.histogram_vec(
            "kreply_worker_produce_ack_duration_seconds",
            "Time from handing a record to the producer to the brokers' acknowledgement, by record (reply, result).",
            &["record"],
            &self.produce_ack,
        );
        out.partition_gauge(
            "kreply_worker_lag",
            "Requests not settled yet, per owned request partition: the high watermark of the last fetch minus the end of the settled prefix (what is committed).",
            &self.lag,
        );
        out.gauge(
            "kreply_worker_pg_calls_in_flight",
            "PG calls under way.",
            self.pg_calls_in_flight.get() as f64,
        );
        out.gauge(
            "kreply_worker_pg_concurrency",
            "PG calls this worker makes at once at most (worker.concurrency).",
            self.pg_concurrency.get() as f64,
        );
        out.gauge(
            "kreply_worker_partitions_assigned",
            "Request partitions this worker owns.",
            self.partitions.get() as f64,
        );
        out.gauge(
            "kreply_worker_requests_held",
            "Requests polled and not settled yet (queued behind an earlier request of their order, or being settled); under 2 x worker.max_held_requests on Kafka (a poll brings at most that many), max_held_requests plus one 128 KiB fetch on tansu.",
            self.held.get() as f64,
        );
        out.gauge(
            "kreply_worker_results_keys",
            "Payments this worker holds in its state directory, for the results partitions it owns: those written within the idempotency window.",
            self.results_keys.get() as f64,
        );
        out.counter(
            "kreply_worker_results_restored_records_total",
            "Results records read to bring the files of partitions this worker was given up to date (from a file's checkpoint, or from the start after a lost state directory).",
            self.results_restored.get(),
        );
        out.counter(
            "kreply_worker_commit_errors_total",
            "Offset commits that failed.",
            self.commit_errors.get(),
        );
        out.counter(
            "kreply_worker_group_rejoins_total",
            "Times the worker left and rejoined its group because its assignment was stale (a crashed worker's partitions owned by nobody).",
            self.group_rejoins.get(),
        );
        out.counter(
            "kreply_worker_producer_sessions_renewed_total",
            "New producer sessions (new producer id) started after the brokers stopped honouring one.",
            self.producer_sessions_renewed.get(),
        );
        out.counter(
            "kreply_worker_lost_races_total",
            "Attempts that found another attempt of the same payment first in the results log (two workers settling one request), so did not call the PG.",
            self.lost_races.get(),
        );
        out.counter(
            "kreply_worker_asked_pg_again_total",
            "Payments an earlier attempt left in doubt (worker died mid-call, PG timeout, final record not written) settled by calling the PG again with the same idempotency key (worker.pg_idempotent).",
            self.asked_pg_again.get(),
        );
        out.counter_vec(
            "kreply_worker_offset_holes_total",
            "Holes in the offsets a poll returned, by log (requests, results) and outcome: read-again (a batch the broker stored after a later one, read again), read-past (still missing after 3 reads: an acknowledged record may be unread), old (before old records: the log's own, e.g. compaction).",
            &["log", "outcome"],
            &self.offset_holes,
        );
        process::render(&mut out);
        out.finish()
    }
}

/// Serves `/metrics` and `/healthz` on `listen`, on async-std threads of their own.
pub async fn serve(metrics: Arc<WorkerMetrics>, listen: SocketAddr) -> std::io::Result<()> {
    let listener = async_std::net::TcpListener::bind(listen).await?;
    let mut app = tide::with_state(metrics);
    app.at("/metrics")
        .get(|req: Request<Arc<WorkerMetrics>>| async move {
            let mut response = Response::new(StatusCode::Ok);
            response.set_body(req.state().render());
            response.insert_header("content-type", "text/plain; version=0.0.4; charset=utf-8");
            Ok(response)
        });
    app.at("/healthz")
        .get(|_| async { Ok(serde_json::json!({"status": "alive"})) });
    async_std::task::spawn(crate::ops::http_server::serve(
        app,
        listener,
        Shutdown::never(),
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::offset_gaps::Skipped;

    #[test]
    fn holes_are_counted_by_log_and_outcome() {
        let metrics = WorkerMetrics::default();
        let hole = |reread| Skipped {
            partition: 0,
            from: 4,
            to: 6,
            reread,
        };
        let checked = Checked {
            read_again: vec![],
            skipped: vec![hole(true), hole(false)],
        };
        metrics.offset_holes("results", &checked);
        metrics.offset_holes("results", &checked);
        let text = metrics.render();
        let line = |outcome| {
            format!("kreply_worker_offset_holes_total{{log=\"results\",outcome=\"{outcome}\"}} 2\n")
        };
        assert!(text.contains(&line("read-past")), "{text}");
        assert!(text.contains(&line("old")), "{text}");
    }

    #[test]
    fn every_result_is_there_at_zero_before_the_first_request() {
        let text = WorkerMetrics::default().render();
        for result in RESULTS {
            let line = format!("kreply_worker_requests_total{{result=\"{result}\"}} 0\n");
            assert!(text.contains(&line), "{line} in {text}");
        }
        assert!(text.contains("kreply_worker_settle_duration_seconds_count 0\n"));
        assert!(
            text.contains(
                "kreply_worker_produce_ack_duration_seconds_count{record=\"result\"} 0\n"
            )
        );
        assert!(text.contains("kreply_build_info{"), "{text}");
    }

    #[test]
    fn lag_shows_the_partitions_owned_now() {
        let metrics = WorkerMetrics::default();
        metrics.set_lag(BTreeMap::from([(0, 5), (2, 0)]));
        metrics.set_lag(BTreeMap::from([(2, 7)]));
        let text = metrics.render();
        assert!(
            text.contains("kreply_worker_lag{partition=\"2\"} 7\n"),
            "{text}"
        );
        assert!(
            !text.contains("kreply_worker_lag{partition=\"0\"}"),
            "{text}"
        );
    }
}
