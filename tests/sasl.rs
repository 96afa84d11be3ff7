//! SASL to the brokers: SCRAM-SHA-256, checked on the broker side by
//! `tests/common/scram_proxy.rs` in front of tansu (tansu 0.6 accepts a wrong SCRAM proof,
//! see there). tansu advertises the proxy's port, so every connection kreply makes has to
//! prove the password before the proxy passes it on to the broker. The last test puts
//! stunnel in front of the proxy, for SCRAM inside TLS.

mod common;

use common::scram_proxy::ScramProxy;
use common::system::{System, system_config_with};
use common::tls::{Certificates, SERVER_NAME, TlsFront};
use common::*;
use serde_json::json;
use std::path::{Path, PathBuf};

const USER: &str = "kreply";
const PASSWORD: &str = "correct horse battery staple";

fn broker_behind_scram() -> (Broker, ScramProxy) {
    let port = free_port();
    let broker = Broker::start_behind(port);
    let proxy = ScramProxy::start(port, &broker.addr, USER, PASSWORD);
    (broker, proxy)
}

/// A folder of its own holding `kafka-password` with `password` and a newline, as an
/// operator (or systemd's LoadCredential=) would provide it.
fn credentials_with(password: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("credentials-{}", free_port()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("kafka-password"), format!("{password}\n")).unwrap();
    dir
}

fn scram_with_file(file: &Path) -> serde_json::Value {
    json!({"mechanism": "SCRAM-SHA-256", "username": USER, "password_file": file})
}

#[test]
fn a_payment_goes_through_connections_that_proved_the_password() {
    let (broker, proxy) = broker_behind_scram();
    let password = credentials_with(PASSWORD).join("kafka-password");
    let config = system_config_with(3000, |c| c["sasl"] = scram_with_file(&password));

    let system = System::start_on(broker, &proxy.addr, 1, &[], config);
    let response = system
        .gateway
        .pay("approve", &json!({"order_id": "SASL-1", "amount": 900}));

    response.assert_status(200);
    assert_eq!(response.json()["status"], "APPROVED");
    assert_eq!(system.pg.charges()["charges"], json!({"SASL-1:approve": 1}));
    // The gateway's and the worker's clients each connected at least once.
    assert!(proxy.authenticated() >= 2, "{}", proxy.authenticated());
    assert_eq!(proxy.refused(), 0);
    // Each process says once, for all its clients, how it reached the brokers.
    let connected = format!(
        "startup: connected to {} (plaintext, SASL SCRAM-SHA-256 as user \"kreply\" (password from \"sasl.password_file\" {})), following tansu-0.6 rules: clients",
        proxy.addr,
        password.display()
    );
    for log in [
        system.gateway.log_text(),
        system.workers[0].daemon.log_text(),
    ] {
        let lines = log.matches("startup: connected to").count();
        assert_eq!(lines, 1, "{log}");
        assert!(log.contains(&connected), "no {connected:?} in:\n{log}");
        assert!(!log.contains(PASSWORD), "the password is in a log: {log}");
    }
}

#[test]
fn a_wrong_password_stops_gateway_and_worker_with_one_sentence() {
    let (_broker, proxy) = broker_behind_scram();
    let wrong = "not the password";
    let password = credentials_with(wrong).join("kafka-password");
    let config = config_with(|c| c["sasl"] = scram_with_file(&password));

    for command in ["gateway", "worker"] {
        let stderr = startup_refusal(command, &config, &proxy.addr);
        let what = format!(
            "kreply: the Kafka brokers {} refused SASL SCRAM-SHA-256 authentication as user \"kreply\" (check \"sasl\" in ",
            proxy.addr
        );
        assert_holds(&stderr, &[&what, "invalid credentials"]);
        assert!(!stderr.contains(wrong), "{command}: {stderr}");
    }
    assert!(proxy.refused() >= 2, "{}", proxy.refused());
    assert_eq!(proxy.authenticated(), 0);
}

#[test]
fn check_config_finds_the_password_in_systemd_credentials_and_never_prints_it() {
    let (_broker, proxy) = broker_behind_scram();
    let credentials = credentials_with(PASSWORD);
    let config = config_with(|c| {
        c["sasl"] = scram_with_file(Path::new("kafka-password"));
        c["topics"]["auto_create"] = json!(true);
    });
    let args = ["check-config", "--config", config.to_str().unwrap()];
    let mut env = vec![
        ("KREPLY_HOST_IP", "127.0.0.2"),
        ("KREPLY_BROKERS", proxy.addr.as_str()),
    ];

    let (ok, without_credentials) = run_kreply(&args, &env);
    let beside = config.with_file_name("kafka-password");
    assert!(!ok);
    assert!(
        without_credentials.contains(&format!(
            "cannot read \"sasl.password_file\" {} (",
            beside.display()
        )),
        "{without_credentials}"
    );

    let credentials_dir = credentials.display().to_string();
    env.push(("CREDENTIALS_DIRECTORY", &credentials_dir));
    let (ok, report) = run_kreply(&args, &env);
    assert!(ok, "{report}");
    assert!(
        report.contains(&format!(
            "ok  brokers {} (plaintext, SASL SCRAM-SHA-256 as user \"kreply\" (password from \"sasl.password_file\" {}))",
            proxy.addr,
            credentials.join("kafka-password").display()
        )),
        "{report}"
    );
    assert!(!report.contains(PASSWORD), "{report}");
    assert!(proxy.authenticated() >= 1);
}

#[test]
fn scram_inside_tls_reaches_the_broker() {
    let certificates = Certificates::generate();
    let (tls_port, proxy_port) = (free_port(), free_port());
    let broker = Broker::start_behind(tls_port);
    let proxy = ScramProxy::start(proxy_port, &broker.addr, USER, PASSWORD);
    let front = TlsFront::start(tls_port, &proxy.addr, &certificates);
    let password = credentials_with(PASSWORD).join("kafka-password");
    let config = config_with(|c| {
        c["tls"] = json!({"ca_file": certificates.path("ca.pem"), "server_name": SERVER_NAME});
        c["sasl"] = scram_with_file(&password);
        c["topics"]["auto_create"] = json!(true);
    });

    let (ok, report) = run_against("check-config", &config, &front.addr);

    assert!(ok, "{report}");
    assert!(
        report.contains(&format!("ok  brokers {} (TLS (CA ", front.addr)),
        "{report}"
    );
    assert!(
        report.contains("SASL SCRAM-SHA-256 as user \"kreply\""),
        "{report}"
    );
    assert!(proxy.authenticated() >= 1);
}
