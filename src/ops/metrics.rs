//! Prometheus metrics: a few atomic primitives and the text exposition format, by hand.
//!
//! kreply needs counters, gauges and one kind of histogram, labelled by a handful of known
//! values. That is less code than the dependency it would replace, and it stays free of any
//! runtime. The format rules kept here: one `# HELP` and `# TYPE` per family, label values
//! escaped (`\\`, `\"`, `\n`), histogram buckets cumulative and ending in `le="+Inf"`
//! equal to `_count`, plus `_sum`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// Latency buckets in seconds, dense where payments are answered: p50 40-60 ms with a PG
/// that answers at once, about 250 ms behind a 200 ms PG. A p99 read from these is off by
/// at most a bucket's width there (10-50 ms), where 2.5x-wide buckets put it anywhere from
/// 100 to 250 ms. The tail runs to the longest timeout (30 s).
pub const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0,
    2.5, 5.0, 10.0, 30.0,
];

/// Buckets for a broker's produce acknowledgement: well under a millisecond on a quiet
/// local broker, tens of ms under acks=all across hosts, seconds only when a broker is in
/// trouble (a leader election, a full disk).
pub const ACK_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// A counter per combination of label values.
#[derive(Default)]
pub struct CounterVec(Mutex<BTreeMap<Vec<String>, u64>>);

impl CounterVec {
    pub fn inc(&self, labels: &[&str]) {
        *lock(&self.0).entry(owned(labels)).or_insert(0) += 1;
    }

    /// Shows the series at 0 until it counts: `rate()` and `increase()` need a sample
    /// before the first event, or an alert on them stays silent through that event.
    pub fn register(&self, labels: &[&str]) {
        lock(&self.0).entry(owned(labels)).or_insert(0);
    }

    fn samples(&self) -> Vec<(Vec<String>, u64)> {
        lock(&self.0).iter().map(|(k, v)| (k.clone(), *v)).collect()
    }
}

/// A plain counter.
#[derive(Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down, such as work in progress.
#[derive(Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }

    pub fn set(&self, value: i64) {
        self.0.store(value, Ordering::Relaxed);
    }

    /// Adds `delta` (negative to subtract), for counts whose guard must outlive a borrow.
    pub fn add(&self, delta: i64) {
        self.0.fetch_add(delta, Ordering::Relaxed);
    }

    /// Counts one unit of work until the returned guard is dropped, however the work ends.
    pub fn track(&self) -> Tracked<'_> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Tracked(self)
    }
}

/// A gauge per partition, such as a consumer's lag, exposed with a `partition` label.
#[derive(Default)]
pub struct PartitionGauge(Mutex<BTreeMap<i32, i64>>);

impl PartitionGauge {
    /// The values of exactly `values`' partitions: the others drop out.
    pub fn replace(&self, values: BTreeMap<i32, i64>) {
        *lock(&self.0) = values;
    }

    /// New values for `values`' partitions; the others keep theirs.
    pub fn update(&self, values: impl IntoIterator<Item = (i32, i64)>) {
        lock(&self.0).extend(values);
    }

    fn samples(&self) -> Vec<(String, f64)> {
        lock(&self.0)
            .iter()
            .map(|(partition, value)| (partition.to_string(), *value as f64))
            .collect()
    }
}

/// Decrements its gauge when dropped.
pub struct Tracked<'a>(&'a Gauge);

impl Drop for Tracked<'_> {
    fn drop(&mut self) {
        self.0.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Observations of durations, per combination of label values.
pub struct HistogramVec {
    buckets: &'static [f64],
    series: Mutex<BTreeMap<Vec<String>, Series>>,
}

#[derive(Clone)]
struct Series {
    /// Observations at or below each bucket's bound (not yet cumulative).
    in_bucket: Vec<u64>,
    sum: f64,
    count: u64,
}

impl HistogramVec {
    pub fn new(buckets: &'static [f64]) -> HistogramVec {
        HistogramVec {
            buckets,
            series: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn observe(&self, labels: &[&str], duration: Duration) {
        let seconds = duration.as_secs_f64();
        let mut series = lock(&self.series);
        let entry = series
            .entry(owned(labels))
            .or_insert_with(|| Series::empty(self.buckets));
        if let Some(i) = self.buckets.iter().position(|bound| seconds <= *bound) {
            entry.in_bucket[i] += 1;
        }
        entry.sum += seconds;
        entry.count += 1;
    }

    /// Shows the series (every bucket at 0) before its first observation, as
    /// [`CounterVec::register`] does for a counter.
    pub fn register(&self, labels: &[&str]) {
        lock(&self.series)
            .entry(owned(labels))
            .or_insert_with(|| Series::empty(self.buckets));
    }
}

impl Series {
    fn empty(buckets: &[f64]) -> Series {
        Series {
            in_bucket: vec![0; buckets.len()],
            sum: 0.0,
            count: 0,
        }
    }
}

/// A text exposition being written, one metric family at a time.
#[derive(Default)]
pub struct Exposition(String);

impl Exposition {
    pub fn counter_vec(
        &mut self,
        name: &str,
        help: &str,
        label_names: &[&str],
        counters: &CounterVec,
    ) {
        self.family(name, help, "counter");
        for (values, count) in counters.samples() {
            self.sample(name, &pairs(label_names, &values), count as f64);
        }
    }

    pub fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.counter_f64(name, help, value as f64);
    }

    /// A counter that is not a count, such as CPU seconds.
    pub fn counter_f64(&mut self, name: &str, help: &str, value: f64) {
        self.family(name, help, "counter");
        self.sample(name, &[], value);
    }

    /// An info metric: a gauge at 1 whose labels carry the facts (`kreply_build_info`).
    pub fn info(&mut self, name: &str, help: &str, labels: &[(&str, &str)]) {
        self.family(name, help, "gauge");
        let labels: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.sample(name, &labels, 1.0);
    }

    pub fn gauge(&mut self, name: &str, help: &str, value: f64) {
        self.family(name, help, "gauge");
        self.sample(name, &[], value);
    }

    /// One gauge sample per label value.
    pub fn gauge_vec(
        &mut self,
        name: &str,
        help: &str,
        label_name: &str,
        samples: &[(String, f64)],
    ) {
        self.family(name, help, "gauge");
        for (label, value) in samples {
            self.sample(name, &[(label_name.to_string(), label.clone())], *value);
        }
    }

    /// One gauge per partition, labelled `partition`.
    pub fn partition_gauge(&mut self, name: &str, help: &str, gauge: &PartitionGauge) {
        self.gauge_vec(name, help, "partition", &gauge.samples());
    }

    /// One histogram per combination of label values (`label_names` may be empty: one
    /// histogram, no labels).
    pub fn histogram_vec(
        &mut self,
        name: &str,
        help: &str,
        label_names: &[&str],
        histograms: &HistogramVec,
    ) {
        self.family(name, help, "histogram");
        let series: Vec<(Vec<String>, Series)> = lock(&histograms.series)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (values, series) in series {
            let own = pairs(label_names, &values);
            let with_le = |le: String| {
                let mut labels = own.clone();
                labels.push(("le".to_string(), le));
                labels
            };
            let mut cumulative = 0;
            for (bound, count) in histograms.buckets.iter().zip(&series.in_bucket) {
                cumulative += count;
                let labels = with_le(bound.to_string());
                self.sample(&format!("{name}_bucket"), &labels, cumulative as f64);
            }
            let inf = with_le("+Inf".to_string());
            self.sample(&format!("{name}_bucket"), &inf, series.count as f64);
            self.sample(&format!("{name}_sum"), &own, series.sum);
            self.sample(&format!("{name}_count"), &own, series.count as f64);
        }
    }

    pub fn finish(self) -> String {
        self.0
    }

    fn family(&mut self, name: &str, help: &str, kind: &str) {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(String, String)], value: f64) {
        self.0.push_str(name);
        if !labels.is_empty() {
            let rendered: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
                .collect();
            let _ = write!(self.0, "{{{}}}", rendered.join(","));
        }
        let _ = writeln!(self.0, " {value}");
    }
}

fn owned(labels: &[&str]) -> Vec<String> {
    labels.iter().map(|l| l.to_string()).collect()
}

fn pairs(names: &[&str], values: &[String]) -> Vec<(String, String)> {
    names
        .iter()
        .map(|n| n.to_string())
        .zip(values.iter().cloned())
        .collect()
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_render_with_help_type_and_escaped_labels() {
        let requests = CounterVec::default();
        requests.inc(&["approve", "ok"]);
        requests.inc(&["approve", "ok"]);
        requests.inc(&["a\"b\\c\nd", "rejected"]);
        let mut out = Exposition::default();
        out.counter_vec(
            "kreply_requests_total",
            "Payment requests.",
            &["operation", "outcome"],
            &requests,
        );
        let text = out.finish();
        assert!(text.starts_with(
            "# HELP kreply_requests_total Payment requests.\n# TYPE kreply_requests_total counter\n"
        ));
        assert!(
            text.contains("kreply_requests_total{operation=\"approve\",outcome=\"ok\"} 2\n"),
            "{text}"
        );
        assert!(text.contains(r#"operation="a\"b\\c\nd""#), "{text}");
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_end_in_inf_equal_to_count() {
        let latency = HistogramVec::new(&[0.01, 0.1]);
        latency.observe(&["refund"], Duration::from_millis(5));
        latency.observe(&["refund"], Duration::from_millis(50));
        latency.observe(&["refund"], Duration::from_secs(3));
        let mut out = Exposition::default();
        out.histogram_vec(
            "kreply_request_duration_seconds",
            "Latency.",
            &["operation"],
            &latency,
        );
        let text = out.finish();
        let line = |suffix: &str| {
            text.lines()
                .find(|l| l.contains(suffix))
                .unwrap_or_else(|| panic!("{suffix} in {text}"))
                .to_string()
        };
        assert!(line("le=\"0.01\"").ends_with(" 1"));
        assert!(line("le=\"0.1\"").ends_with(" 2"));
        assert!(line("le=\"+Inf\"").ends_with(" 3"));
        assert!(line("_count{").ends_with(" 3"));
        assert!(
            line("_sum{")
                .starts_with("kreply_request_duration_seconds_sum{operation=\"refund\"} 3.05")
        );
        assert_eq!(
            text.matches("# TYPE kreply_request_duration_seconds histogram")
                .count(),
            1
        );
    }

    #[test]
    fn a_histogram_with_two_labels_keeps_their_series_apart_and_puts_le_last() {
        let latency = HistogramVec::new(&[0.05]);
        latency.observe(&["approve", "approved"], Duration::from_millis(40));
        latency.observe(&["approve", "timeout"], Duration::from_secs(5));
        let mut out = Exposition::default();
        out.histogram_vec("d", "D.", &["operation", "outcome"], &latency);
        let text = out.finish();
        for line in [
            "d_bucket{operation=\"approve\",outcome=\"approved\",le=\"0.05\"} 1\n",
            "d_bucket{operation=\"approve\",outcome=\"timeout\",le=\"0.05\"} 0\n",
            "d_bucket{operation=\"approve\",outcome=\"timeout\",le=\"+Inf\"} 1\n",
            "d_count{operation=\"approve\",outcome=\"approved\"} 1\n",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
    }

    #[test]
    fn registered_series_show_at_zero_before_their_first_event() {
        let counters = CounterVec::default();
        counters.register(&["reply-timeout"]);
        counters.register(&["reply-timeout"]);
        let histograms = HistogramVec::new(&[0.1]);
        histograms.register(&[]);
        let mut out = Exposition::default();
        out.counter_vec("c_total", "C.", &["cause"], &counters);
        out.histogram_vec("h", "H.", &[], &histograms);
        let text = out.finish();
        assert!(
            text.contains("c_total{cause=\"reply-timeout\"} 0\n"),
            "{text}"
        );
        assert!(text.contains("h_bucket{le=\"+Inf\"} 0\n"), "{text}");
        assert!(text.contains("h_count 0\n"), "{text}");
        counters.inc(&["reply-timeout"]);
        let mut out = Exposition::default();
        out.counter_vec("c_total", "C.", &["cause"], &counters);
        assert!(
            out.finish()
                .contains("c_total{cause=\"reply-timeout\"} 1\n")
        );
    }

    #[test]
    fn every_sample_line_is_name_labels_value() {
        let mut out = Exposition::default();
        out.counter("kreply_dlq_writes_total", "Dead letters.", 4);
        out.gauge("kreply_ready", "1 when ready.", 1.0);
        out.gauge_vec(
            "kreply_reply_lag",
            "Lag.",
            "partition",
            &[("0".into(), 3.0)],
        );
        for line in out.finish().lines().filter(|l| !l.starts_with('#')) {
            let (series, value) = line.rsplit_once(' ').unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
            let name = series.split('{').next().unwrap();
            assert!(
                name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "{line}"
            );
        }
    }
}
