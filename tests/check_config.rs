//! `kreply check-config`: one role at a time (issue 19, item 4), and `--print`.

mod common;

use common::*;
use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;

/// A host in no line of the shipped host table.
const WORKER_ONLY_HOST: &str = "10.9.9.9";

/// The report's one error line, checked to be the only one.
fn the_error(report: &str) -> &str {
    let errors: Vec<&str> = report
        .lines()
        .filter(|l| l.starts_with("kreply: "))
        .collect();
    assert_eq!(errors.len(), 1, "{report}");
    errors[0]
}

/// A worker-only host, in no line of the host table, passes `check-config worker`, which
/// needs neither the table nor the gateway's reply and dead-letter topics (the broker has
/// neither), and fails `check-config gateway` with the one sentence naming the host table.
/// Without a role both are checked, and the sentence says how to check a worker-only host.
#[test]
fn a_worker_only_host_passes_the_worker_check_and_fails_the_gateway_check() {
    let broker = Broker::start();
    broker.create_topics(&[REQUEST_TOPIC, "payment_results"], 3);
    let shipped = shipped_config();
    let check = |config: &Path, role: Option<&str>| {
        let mut args = vec!["check-config", "--config", config.to_str().unwrap()];
        args.extend(role);
        let env = [
            ("KREPLY_BROKERS", broker.addr.as_str()),
            ("KREPLY_HOST_IP", WORKER_ONLY_HOST),
        ];
        run_kreply(&args, &env)
    };

    let (ok, report) = check(&shipped, Some("worker"));
    assert!(ok, "{report}");
    assert_holds(
        &report,
        &[
            "(checked for the worker)",
            "ok  PG URL http://127.0.0.1:9300: the worker charges POST http://127.0.0.1:9300/charge",
            &format!("ok  brokers {}", broker.addr),
            "ok  request (worker) topic payment_request: 3 partition(s)",
            "ok  results (worker) topic payment_results: 3 partition(s)",
            "all checks passed for the worker",
        ],
    );
    assert!(!report.contains("host table"), "{report}");

    let (ok, report) = check(&shipped, Some("gateway"));
    assert!(!ok, "{report}");
    assert_holds(&report, &["(checked for the gateway)"]);
    let error = the_error(&report);
    let table = shipped.with_file_name("reply-hosts.txt");
    assert!(
        error.starts_with(&format!(
            "kreply: none of this host's IPs ({WORKER_ONLY_HOST}) is in the host table {}; add a line",
            table.display()
        )),
        "{error}"
    );
    assert!(!error.contains("check-config worker"), "{error}");

    let (ok, report) = check(&shipped, None);
    assert!(!ok, "{report}");
    assert_holds(&report, &["(checked for the gateway and the worker)"]);
    let error = the_error(&report);
    assert_holds(
        error,
        &[
            "is in the host table",
            "; on a host that runs only the worker, run \"kreply check-config worker\"",
        ],
    );

    // The worker's own need: a PG URL it can call, checked before the brokers.
    let https = config_with(|c| c["worker"]["pg_url"] = json!("https://pg.example"));
    let (ok, report) = check(&https, Some("worker"));
    assert!(!ok, "{report}");
    assert_eq!(
        the_error(&report),
        "kreply: \"worker.pg_url\" \"https://pg.example\" is not an http:// URL; use http://host:port"
    );
}

/// `kreply check-config --print` with `env` as the whole environment: (success, stdout,
/// stderr).
fn print(config: &Path, env: &[(&str, &str)]) -> (bool, String, String) {
    let out = Command::new(kreply_binary())
        .args([
            "check-config",
            "--print",
            "--config",
            config.to_str().unwrap(),
        ])
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

/// `--print` shows the file's values, the environment's overrides and the defaults the
/// file leaves out, as JSON; the password as `***` and nowhere in clear. Its output, less
/// the password, is a config that prints the same.
#[test]
fn print_shows_the_effective_config_with_the_password_masked() {
    let secret = "pw-5b1d-never-printed";
    let config = config_with(|c| {
        c["max_in_flight"] = json!(77);
        c["sasl"] = json!({"mechanism": "SCRAM-SHA-256", "username": "kreply", "password_env": "KAFKA_TEST_PW"});
    });
    let env = [
        ("KAFKA_TEST_PW", secret),
        ("KREPLY_BROKERS", "10.0.2.11:9092, 10.0.2.12:9092"),
        ("KREPLY_PG_URL", "http://10.0.3.5:8080"),
    ];
    let (ok, stdout, stderr) = print(&config, &env);
    assert!(ok, "{stderr}");
    assert!(!stdout.contains(secret) && !stderr.contains(secret));
    let printed: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        printed["brokers"],
        json!(["10.0.2.11:9092", "10.0.2.12:9092"])
    );
    assert_eq!(printed["worker"]["pg_url"], "http://10.0.3.5:8080");
    assert_eq!(printed["max_in_flight"], 77);
    // Defaults of keys the shipped file does not set.
    assert_eq!(printed["reply_stale_after_ms"], 3000);
    assert_eq!(printed["worker"]["claim"], "log");
    assert_eq!(printed["tls"], Value::Null);
    assert_eq!(printed["sasl"]["password"], "***");
    assert_eq!(printed["sasl"]["username"], "kreply");

    let mut again = printed.clone();
    again["sasl"].as_object_mut().unwrap().remove("password");
    let file = config_with(|c| *c = again);
    let (ok, reprinted, stderr) = print(&file, &[("KAFKA_TEST_PW", secret)]);
    assert!(ok, "{stderr}");
    assert_eq!(serde_json::from_str::<Value>(&reprinted).unwrap(), printed);
}
