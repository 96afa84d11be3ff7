//! TLS to the brokers, for real: stunnel, holding a certificate from a CA made for the
//! test, in front of tansu, which advertises stunnel's port; so every connection kreply
//! makes (bootstrap, broker, group coordinator) is a TLS connection, checked against
//! `tls.ca_file` and `tls.server_name`. Needs `openssl` and `stunnel`
//! (scripts/install-stunnel).

mod common;

use common::system::{System, system_config_with};
use common::tls::{Certificates, SERVER_NAME, TlsFront};
use common::*;
use serde_json::json;
use std::path::Path;
use std::time::Duration;

/// A tansu that only stunnel's TLS port leads to.
fn broker_behind_tls(certificates: &Certificates) -> (Broker, TlsFront) {
    let front_port = free_port();
    let broker = Broker::start_behind(front_port);
    let front = TlsFront::start(front_port, &broker.addr, certificates);
    (broker, front)
}

fn tls_trusting(ca: &Path) -> serde_json::Value {
    json!({"ca_file": ca, "server_name": SERVER_NAME})
}

#[test]
fn a_payment_goes_through_gateway_worker_and_pg_over_tls() {
    let certificates = Certificates::generate();
    let (broker, front) = broker_behind_tls(&certificates);
    let ca = certificates.path("ca.pem");
    let config = system_config_with(3000, |c| c["tls"] = tls_trusting(&ca));

    let system = System::start_on(broker, &front.addr, 1, &[], config);
    let response = system.gateway.pay(
        "approve",
        &json!({"order_id": "TLS-1", "amount": 700, "currency": "KRW"}),
    );

    response.assert_status(200);
    assert_eq!(response.json()["status"], "APPROVED");
    assert_eq!(system.pg.charges()["charges"], json!({"TLS-1:approve": 1}));
    let connected = format!(
        "startup: connected to {} (TLS (CA {}, server name {SERVER_NAME}), no SASL), following tansu-0.6 rules: clients",
        front.addr,
        ca.display()
    );
    for (daemon, clients) in [
        (
            &system.gateway.daemon,
            "kreply-gateway, kreply-gateway-replies",
        ),
        (
            &system.workers[0].daemon,
            "kreply-worker, kreply-worker-producer, kreply-worker-results",
        ),
    ] {
        daemon.wait_for_log(&format!("{connected} {clients}"), Duration::from_secs(1));
    }
}

#[test]
fn an_untrusted_certificate_stops_gateway_and_worker_with_one_sentence() {
    let certificates = Certificates::generate();
    let (_broker, front) = broker_behind_tls(&certificates);
    let other_ca = certificates.path("other-ca.pem");
    let config = config_with(|c| c["tls"] = tls_trusting(&other_ca));

    for command in ["gateway", "worker"] {
        let stderr = startup_refusal(command, &config, &front.addr);
        let fix = format!(
            "kreply: the TLS handshake with the Kafka brokers {} failed (check that \"tls.ca_file\" {} issued the brokers' certificate and that it names \"{SERVER_NAME}\" from \"tls.server_name\", in ",
            front.addr,
            other_ca.display()
        );
        assert_holds(&stderr, &[&fix, "invalid peer certificate: UnknownIssuer"]);
    }
}

#[test]
fn a_certificate_for_another_name_stops_startup_with_one_sentence() {
    let certificates = Certificates::generate();
    let (_broker, front) = broker_behind_tls(&certificates);
    let config = config_with(|c| c["tls"] = json!({"ca_file": certificates.path("ca.pem")}));

    let stderr = startup_refusal("gateway", &config, &front.addr);
    let what = format!(
        "kreply: the TLS handshake with the Kafka brokers {} failed",
        front.addr
    );
    let cause = format!("certificate is only valid for DnsName(\"{SERVER_NAME}\")");
    assert_holds(
        &stderr,
        &[&what, "that it names the host in \"brokers\"", &cause],
    );
}

#[test]
fn a_tls_client_at_a_plaintext_port_stops_startup_with_one_sentence() {
    let certificates = Certificates::generate();
    let broker = Broker::start();
    let config = config_with(|c| {
        c["tls"] = tls_trusting(&certificates.path("ca.pem"));
        c["connect_timeout_ms"] = json!(1000);
    });

    let stderr = startup_refusal("gateway", &config, &broker.addr);
    let what = format!(
        "kreply: the Kafka brokers {} completed no TLS handshake within 1000 ms (check that the ports in \"brokers\" are TLS listeners, as a plaintext port",
        broker.addr
    );
    assert_holds(&stderr, &[&what]);
}

#[test]
fn a_plaintext_client_at_a_tls_port_is_told_about_tls() {
    let certificates = Certificates::generate();
    let (_broker, front) = broker_behind_tls(&certificates);

    let stderr = startup_refusal("gateway", &shipped_config(), &front.addr);
    let what = format!(
        "kreply: the Kafka brokers {} hung up on a plaintext connection",
        front.addr
    );
    assert_holds(&stderr, &[&what, "needs \"tls\""]);
}

#[test]
fn a_broker_that_asks_for_a_client_certificate_gets_the_configured_one() {
    let certificates = Certificates::generate();
    let front_port = free_port();
    let broker = Broker::start_behind(front_port);
    let front = TlsFront::requiring_client_certificates(front_port, &broker.addr, &certificates);
    let ca = certificates.path("ca.pem");
    let with_certificate = config_with(|c| {
        c["tls"] = tls_trusting(&ca);
        c["tls"]["cert_file"] = json!(certificates.path("client.pem"));
        c["tls"]["key_file"] = json!(certificates.path("client.key"));
        c["topics"]["auto_create"] = json!(true);
    });
    let without = config_with(|c| c["tls"] = tls_trusting(&ca));

    let (ok, report) = run_against("check-config", &with_certificate, &front.addr);
    assert!(ok, "{report}");
    assert!(report.contains("client certificate "), "{report}");
    let stderr = startup_refusal("gateway", &without, &front.addr);
    let what = format!(
        "kreply: the Kafka brokers {} refused kreply's TLS connection (they may require a client certificate: set \"tls.cert_file\" and \"tls.key_file\"",
        front.addr
    );
    assert_holds(&stderr, &[&what]);
}
