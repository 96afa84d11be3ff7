//! The `process_*` metrics a Prometheus client library would add, and
//! `kreply_build_info`, read at each scrape. The exporter is hand-written, so nothing adds
//! them for it, and the operator kit's alerts and dashboard need them: memory that only
//! grows, file descriptors near `LimitNOFILE`, a restart (the start time moves), which
//! build runs where.
//!
//! Everything comes from `/proc/self`, which the units' `ProcSubset=pid` leaves visible.
//! A file that cannot be read leaves its metric out rather than failing the scrape.

use super::metrics::Exposition;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

/// Clock ticks per second in `/proc/self/stat`: `USER_HZ`, 100 in Linux's user-space ABI
/// on the architectures kreply builds for. Asking `sysconf` would need `unsafe`, which
/// the crate forbids.
const TICKS_PER_SECOND: f64 = 100.0;

/// The commit the binary was built from (`build.rs`), `unknown` outside a git checkout.
const COMMIT: &str = env!("KREPLY_COMMIT");

static STARTED: OnceLock<f64> = OnceLock::new();

/// Remembers when the process started: call it first thing in a daemon. `/proc/self/stat`
/// has the start in ticks since boot, but the boot time that turns it into a date is in
/// `/proc/stat`, which `ProcSubset=pid` hides.
pub fn mark_start() {
    STARTED.get_or_init(unix_now);
}

/// Appends the process and build metrics.
pub fn render(out: &mut Exposition) {
    if let Some(seconds) = read("/proc/self/stat").and_then(|stat| cpu_seconds(&stat)) {
        out.counter_f64(
            "process_cpu_seconds_total",
            "User and system CPU time spent, in seconds.",
            seconds,
        );
    }
    if let Some(bytes) = read("/proc/self/status").and_then(|s| status_bytes(&s, "VmRSS")) {
        out.gauge(
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            bytes as f64,
        );
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        out.gauge(
            "process_open_fds",
            "Open file descriptors.",
            fds.count() as f64,
        );
    }
    if let Some(limit) = read("/proc/self/limits").and_then(|l| max_open_files(&l)) {
        out.gauge(
            "process_max_fds",
            "The limit on open file descriptors (LimitNOFILE).",
            limit as f64,
        );
    }
    out.gauge(
        "process_start_time_seconds",
        "When the process started, in seconds since the Unix epoch.",
        *STARTED.get_or_init(unix_now),
    );
    out.info(
        "kreply_build_info",
        "The running build: 1, labelled by version and commit.",
        &[("version", env!("CARGO_PKG_VERSION")), ("commit", COMMIT)],
    );
}

fn read(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// utime + stime of a `/proc/<pid>/stat` line, in seconds. The command name in
/// parentheses may hold spaces and parentheses itself, so fields are counted from the
/// last `)`: utime and stime are fields 14 and 15.
fn cpu_seconds(stat: &str) -> Option<f64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // fields[0] is field 3 (the state), so field N is fields[N - 3].
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / TICKS_PER_SECOND)
}

/// A `Name:   1234 kB` line of `/proc/<pid>/status`, in bytes.
fn status_bytes(status: &str, name: &str) -> Option<u64> {
    let line = status
        .lines()
        .find(|line| line.split(':').next() == Some(name))?;
    let mut words = line.split_whitespace().skip(1);
    let kib: u64 = words.next()?.parse().ok()?;
    (words.next() == Some("kB")).then_some(kib * 1024)
}

/// The soft limit on open files from `/proc/<pid>/limits`; `None` when unlimited.
fn max_open_files(limits: &str) -> Option<u64> {
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_is_utime_plus_stime_counted_after_the_name() {
        // A name with a space and a parenthesis, as a thread may have.
        let stat =
            "4242 (kreply (x) y) S 1 4242 4242 0 -1 4194560 812 0 0 0 250 75 0 0 20 0 9 0 1234 0 0";
        assert_eq!(cpu_seconds(stat), Some(3.25));
        assert_eq!(cpu_seconds("4242 (kreply) S 1"), None);
    }

    #[test]
    fn resident_memory_is_the_vmrss_line_in_bytes() {
        let status = "Name:\tkreply\nVmPeak:\t  99999 kB\nVmRSS:\t   9640 kB\nThreads:\t9\n";
        assert_eq!(status_bytes(status, "VmRSS"), Some(9640 * 1024));
        assert_eq!(status_bytes(status, "VmSwap"), None);
        assert_eq!(status_bytes("VmRSS:\t12 pages\n", "VmRSS"), None);
    }

    #[test]
    fn the_fd_limit_is_the_soft_one_and_unlimited_is_none() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max processes             95541                95541                processes \n\
                      Max open files            20000                65536                files     \n";
        assert_eq!(max_open_files(limits), Some(20000));
        let unlimited =
            "Max open files            unlimited            unlimited            files     \n";
        assert_eq!(max_open_files(unlimited), None);
    }

    #[test]
    fn this_process_renders_every_process_metric_and_the_build() {
        mark_start();
        let mut out = Exposition::default();
        render(&mut out);
        let text = out.finish();
        for name in [
            "process_cpu_seconds_total ",
            "process_resident_memory_bytes ",
            "process_open_fds ",
            "process_max_fds ",
            "process_start_time_seconds ",
        ] {
            assert!(text.contains(name), "{name} in {text}");
        }
        let build = format!(
            "kreply_build_info{{version=\"{}\",commit=\"{COMMIT}\"}} 1\n",
            env!("CARGO_PKG_VERSION")
        );
        assert!(text.contains(&build), "{build} in {text}");
    }
}
