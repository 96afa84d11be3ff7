//! The operator kit in `ops/`: the alert rules pass `promtool check rules` and their unit
//! tests, the dashboard's queries parse, and every metric the rules, their tests and the
//! dashboard name is one a running gateway and worker really export. A rule on a metric
//! nobody exports never fires, and nothing else would say so.
//!
//! promtool comes from `scripts/install-promtool` (Debian's prometheus package). Without
//! it the promtool tests say so and pass, except under CI (`CI` set), where they fail.

mod common;

use common::answers::sample;
use common::system::{System, system_config_with};
use common::*;
use serde_json::json;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn kit(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("ops").join(path)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// promtool on PATH or where `scripts/install-promtool` puts it; `None` (and a line
/// saying the test is skipped) only outside CI.
fn promtool() -> Option<PathBuf> {
    let home = std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo/bin"));
    let dirs =
        std::env::var_os("PATH").map_or_else(Vec::new, |p| std::env::split_paths(&p).collect());
    let found = dirs
        .into_iter()
        .chain(home)
        .map(|dir| dir.join("promtool"))
        .find(|path| path.is_file());
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "promtool is missing in CI: .ci/run installs it with scripts/install-promtool"
        );
        eprintln!(
            "SKIPPED: promtool is not installed; run scripts/install-promtool to check ops/prometheus"
        );
    }
    found
}

/// Runs promtool with `args` in `dir`, failing the test with its output unless it succeeds.
fn run_promtool(promtool: &Path, dir: &Path, args: &[&str]) {
    let out = Command::new(promtool)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
}

#[test]
fn the_alert_rules_pass_promtool_and_their_unit_tests() {
    let Some(promtool) = promtool() else { return };
    let dir = kit("prometheus");
    run_promtool(&promtool, &dir, &["check", "rules", "kreply-rules.yml"]);
    run_promtool(&promtool, &dir, &["test", "rules", "kreply-rules.test.yml"]);
}

/// Every alert in the rules has a unit test of its own.
#[test]
fn every_alert_rule_has_a_unit_test() {
    let rules = read(&kit("prometheus/kreply-rules.yml"));
    let tests = read(&kit("prometheus/kreply-rules.test.yml"));
    let named = |text: &str, key: &str| -> BTreeSet<String> {
        text.lines()
            .filter_map(|l| l.trim().strip_prefix(key))
            .map(|name| name.trim().to_string())
            .collect()
    };
    let alerts = named(&rules, "- alert:");
    assert!(alerts.len() >= 9, "{alerts:?}");
    let tested = named(&tests, "alertname:");
    let untested: Vec<_> = alerts.difference(&tested).collect();
    assert!(
        untested.is_empty(),
        "alerts without a unit test: {untested:?}"
    );
}

/// Grafana's `$__rate_interval` is no PromQL: promtool reads each query as a recording
/// rule, with 5m in its place.
#[test]
fn the_dashboard_queries_parse() {
    let Some(promtool) = promtool() else { return };
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, expr) in dashboard_queries().iter().enumerate() {
        let expr = expr.replace("$__rate_interval", "5m");
        rules.push_str(&format!(
            "      - record: dashboard:query{i}\n        expr: {}\n",
            json!(expr)
        ));
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("dashboard-{}", free_port()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("dashboard.yml"), rules).unwrap();
    run_promtool(&promtool, &dir, &["check", "rules", "dashboard.yml"]);
}

#[test]
fn every_metric_the_kit_names_is_one_the_binaries_export() {
    let metrics_listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let config = system_config_with(3000, |c| c["metrics_listen"] = json!(metrics_listen));
    let system = System::start_with(1, &[], config);
    let paid = system.gateway.pay("approve", &json!({"order_id": "KIT-1"}));
    paid.assert_status(200);

    // With metrics_listen, /metrics has left the payment port for its own.
    assert_eq!(get(system.gateway.addr, "/metrics").unwrap().status, 404);
    let gateway = scrape(metrics_listen);
    let worker_addr = system.workers[0].metrics_addr;
    // The worker reports lag once its commit after the reply is in.
    wait_until(
        "the worker's lag back to 0",
        Duration::from_secs(10),
        || {
            let worker = scrape(worker_addr);
            (0..3).all(|p| {
                sample_or(&worker, &format!("kreply_worker_lag{{partition=\"{p}\"}}")) == Some(0.0)
            })
        },
    );
    let worker = scrape(worker_addr);

    // The new series are fed, not merely declared.
    for (text, series, at_least) in [
        (
            &gateway,
            r#"kreply_requests_total{operation="approve",outcome="approved"}"#,
            1.0,
        ),
        (
            &gateway,
            r#"kreply_request_duration_seconds_count{operation="approve",outcome="approved"}"#,
            1.0,
        ),
        (
            &gateway,
            r#"kreply_produce_ack_duration_seconds_count{record="request"}"#,
            1.0,
        ),
        (&worker, "kreply_worker_settle_duration_seconds_count", 1.0),
        (
            &worker,
            r#"kreply_worker_produce_ack_duration_seconds_count{record="reply"}"#,
            1.0,
        ),
        (
            &worker,
            r#"kreply_worker_produce_ack_duration_seconds_count{record="result"}"#,
            1.0,
        ),
        (&worker, "kreply_worker_pg_concurrency", 1.0),
        (&gateway, "process_open_fds", 1.0),
        (&worker, "process_resident_memory_bytes", 1.0),
    ] {
        let value = sample(text, series);
        assert!(
            value >= at_least,
            "{series} is {value}, expected at least {at_least}"
        );
    }
    // ... and the series alerts count from are there at 0 before their first event.
    for (text, series) in [
        (
            &gateway,
            r#"kreply_requests_total{operation="refund",outcome="timeout"}"#,
        ),
        (&gateway, r#"kreply_dlq_writes_total{cause="send-failed"}"#),
        (&gateway, "kreply_dlq_write_failures_total"),
        (
            &worker,
            r#"kreply_worker_requests_total{result="pg-unknown"}"#,
        ),
    ] {
        assert_eq!(sample(text, series), 0.0, "{series}");
    }
    assert!(
        gateway.contains(&format!(
            "kreply_build_info{{version=\"{}\",commit=\"",
            env!("CARGO_PKG_VERSION")
        )),
        "{gateway}"
    );

    let exported: BTreeSet<String> = families(&gateway)
        .union(&families(&worker))
        .cloned()
        .collect();
    let rules = read(&kit("prometheus/kreply-rules.yml"));
    let tests = read(&kit("prometheus/kreply-rules.test.yml"));
    let mut used: Vec<(String, &str)> = Vec::new();
    for expr in rule_exprs(&rules) {
        used.extend(
            metric_names(&expr)
                .into_iter()
                .map(|n| (n, "kreply-rules.yml")),
        );
    }
    for series in test_series(&tests) {
        used.extend(
            metric_names(&series)
                .into_iter()
                .map(|n| (n, "kreply-rules.test.yml")),
        );
    }
    for expr in dashboard_queries() {
        used.extend(
            metric_names(&expr)
                .into_iter()
                .map(|n| (n, "kreply-dashboard.json")),
        );
    }
    assert!(used.len() > 20, "too few metric names found: {used:?}");
    let unknown: BTreeSet<_> = used
        .iter()
        .filter(|(name, _)| !exported.contains(&family_of(name, &exported)))
        .collect();
    assert!(
        unknown.is_empty(),
        "named in the kit but exported by neither binary: {unknown:?}"
    );
}

fn scrape(addr: SocketAddr) -> String {
    let answer = get(addr, "/metrics").unwrap();
    assert_eq!(answer.status, 200, "/metrics on {addr}");
    String::from_utf8(answer.body).unwrap()
}

fn sample_or(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.parse().ok())
}

/// The metric families a scrape declares (`# TYPE name kind`).
fn families(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|line| line.strip_prefix("# TYPE ")?.split(' ').next())
        .map(str::to_string)
        .collect()
}

/// The family a used name belongs to: itself, or a histogram's without its suffix.
fn family_of(name: &str, exported: &BTreeSet<String>) -> String {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix)
            && exported.contains(base)
        {
            return base.to_string();
        }
    }
    name.to_string()
}

/// The PromQL of each rule: `expr: ...` on one line, or the block under `expr: |`.
fn rule_exprs(rules: &str) -> Vec<String> {
    let mut exprs = Vec::new();
    let mut lines = rules.lines().peekable();
    while let Some(line) = lines.next() {
        let Some(expr) = line.trim_start().strip_prefix("expr:") else {
            continue;
        };
        if expr.trim() != "|" {
            exprs.push(expr.trim().to_string());
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        let mut block = String::new();
        while let Some(next) =
            lines.next_if(|l| l.trim().is_empty() || l.len() - l.trim_start().len() > indent)
        {
            block.push_str(next);
            block.push('\n');
        }
        exprs.push(block);
    }
    exprs
}

/// The input series of the rules' unit tests (`series: '...'`).
fn test_series(tests: &str) -> Vec<String> {
    tests
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- series:"))
        .map(|s| s.trim().trim_matches('\'').to_string())
        .collect()
}

/// Every `expr` in the dashboard, wherever it sits.
fn dashboard_queries() -> Vec<String> {
    fn walk(value: &serde_json::Value, found: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, inner) in map {
                    match (key.as_str(), inner.as_str()) {
                        ("expr", Some(expr)) => found.push(expr.to_string()),
                        _ => walk(inner, found),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|i| walk(i, found)),
            _ => {}
        }
    }
    let dashboard: serde_json::Value =
        serde_json::from_str(&read(&kit("grafana/kreply-dashboard.json"))).unwrap();
    let mut found = Vec::new();
    walk(&dashboard, &mut found);
    assert!(found.len() >= 10, "{found:?}");
    found
}

/// The kreply and process metric names in a PromQL expression: identifiers (quoted
/// strings skipped: label values) that start with `kreply_` or `process_`. Label names
/// and functions never do.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut names = BTreeSet::new();
    let mut chars = expr.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '"' || c == '\'' {
            // Past the closing quote; PromQL escapes with a backslash.
            while let Some(inner) = chars.next() {
                match inner {
                    '\\' => drop(chars.next()),
                    q if q == c => break,
                    _ => {}
                }
            }
        } else if ident(c) {
            let mut word = c.to_string();
            while let Some(next) = chars.next_if(|n| ident(*n)) {
                word.push(next);
            }
            if word.starts_with("kreply_") || word.starts_with("process_") {
                names.insert(word);
            }
        }
    }
    names
}

#[test]
fn metric_names_are_read_out_of_promql() {
    let expr = r#"histogram_quantile(0.99, sum by (le) (rate(kreply_x_bucket{job="kreply_not_a_metric",a='process_no'}[5m])))
        / on(instance) process_open_fds and kreply_ready==0"#;
    let names: Vec<String> = metric_names(expr).into_iter().collect();
    assert_eq!(
        names,
        ["kreply_ready", "kreply_x_bucket", "process_open_fds"]
    );
    let exported = BTreeSet::from(["kreply_x".to_string()]);
    assert_eq!(family_of("kreply_x_bucket", &exported), "kreply_x");
    assert_eq!(family_of("kreply_y_count", &exported), "kreply_y_count");
}

#[test]
fn rule_exprs_read_one_line_and_block_expressions() {
    let rules = "      - alert: A\n        expr: kreply_ready == 0\n        for: 1m\n      - alert: B\n        expr: |\n          sum(kreply_a)\n          / sum(kreply_b)\n        labels:\n";
    let exprs = rule_exprs(rules);
    assert_eq!(exprs.len(), 2, "{exprs:?}");
    assert_eq!(exprs[0], "kreply_ready == 0");
    assert!(
        exprs[1].contains("sum(kreply_a)") && exprs[1].contains("kreply_b"),
        "{exprs:?}"
    );
    assert!(!exprs[1].contains("labels"), "{exprs:?}");
}
