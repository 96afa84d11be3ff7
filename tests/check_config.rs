//! `kreply check-config --print`.

mod common;

use common::*;
use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;

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
