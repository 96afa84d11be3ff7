//! The config's `"tls"` and `"sasl"` as krafka's [`AuthConfig`], and what a failed
//! connection means in their terms.
//!
//! [`super::client`] is where every krafka client is built (the gateway's, the worker's,
//! `check-config`'s, and every reconnection), so it is the one place that applies them.

use crate::config::{Config, SaslMechanism, SaslSettings, TlsSettings};
use crate::error::StartupError;
use krafka::KrafkaError;
use krafka::auth::{AuthConfig, TlsConfig};

/// The security krafka connects with, or `None` for plaintext and anonymous.
pub(crate) fn auth_config(config: &Config) -> Option<AuthConfig> {
    let tls = config.tls.as_ref().map(tls_config);
    match (config.sasl.as_ref().map(sasl_config), tls) {
        (Some(sasl), Some(tls)) => Some(sasl.with_tls(tls)),
        (Some(sasl), None) => Some(sasl),
        (None, Some(tls)) => Some(AuthConfig::ssl(tls)),
        (None, None) => None,
    }
}

fn tls_config(tls: &TlsSettings) -> TlsConfig {
    let path = |p: &std::path::Path| p.to_string_lossy().into_owned();
    let mut krafka = TlsConfig::new();
    if let Some(ca) = &tls.ca_file {
        krafka = krafka.with_ca_cert(path(ca));
    }
    if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
        krafka = krafka.with_client_cert(path(cert), path(key));
    }
    if let Some(name) = &tls.server_name {
        krafka = krafka.with_sni_hostname(name);
    }
    krafka
}

/// krafka copies the password into a `String` of its own (`PlainCredentials` or
/// `ScramCredentials`, kept in every client for its reconnections, and again into each
/// SCRAM exchange). kreply cannot wipe that copy; krafka 0.28.1 derives `ZeroizeOnDrop`
/// for those credentials, so it is wiped when the client holding it is dropped.
fn sasl_config(sasl: &SaslSettings) -> AuthConfig {
    let (user, password) = (sasl.username.as_str(), sasl.password.expose());
    match sasl.mechanism {
        SaslMechanism::Plain => AuthConfig::sasl_plain(user, password),
        SaslMechanism::ScramSha256 => AuthConfig::sasl_scram_sha256(user, password),
        SaslMechanism::ScramSha512 => AuthConfig::sasl_scram_sha512(user, password),
    }
}

/// The startup sentence for a failed first connection to the brokers, "what failed (what
/// to check): krafka's cause". What to check first depends on whether TLS, SASL or the
/// network failed.
pub(crate) fn connect_failed(e: KrafkaError, config: &Config, config_path: &str) -> StartupError {
    let brokers = config.brokers.join(",");
    let cause = e.to_string();
    let (what, check) = match (&e, &config.tls, &config.sasl) {
        (KrafkaError::Auth { .. }, Some(tls), _) if cause.contains("TLS") => (
            format!("the TLS handshake with the Kafka brokers {brokers} failed"),
            certificate_check(tls, config_path),
        ),
        (KrafkaError::Auth { .. }, _, Some(sasl)) => (
            format!(
                "the Kafka brokers {brokers} refused SASL {} authentication as user \"{}\"",
                sasl.mechanism, sasl.username
            ),
            format!("check \"sasl\" in {config_path} and the password it names"),
        ),
        (KrafkaError::Config { .. }, tls, sasl) if tls.is_some() || sasl.is_some() => (
            format!(
                "cannot connect to the Kafka brokers {brokers} with these TLS or SASL settings"
            ),
            format!("check \"tls\" and \"sasl\" in {config_path}"),
        ),
        (_, Some(tls), _) if cause.contains("fatal alert") => (
            format!("the Kafka brokers {brokers} refused kreply's TLS connection"),
            match &tls.cert_file {
                None => format!(
                    "they may require a client certificate: set \"tls.cert_file\" and \"tls.key_file\" in {config_path}"
                ),
                Some(cert) => format!(
                    "check that the brokers trust the issuer of \"tls.cert_file\" {}, in {config_path}",
                    cert.display()
                ),
            },
        ),
        (_, Some(_), _) if timed_out(&cause) => (
            format!(
                "the Kafka brokers {brokers} completed no TLS handshake within {} ms",
                config.connect_timeout_ms
            ),
            format!(
                "check that the ports in \"brokers\" are TLS listeners, as a plaintext port never answers a TLS hello, or remove \"tls\" in {config_path} for a plaintext one; and that the brokers are reachable"
            ),
        ),
        (_, None, _) if cause.to_lowercase().contains("connection reset") => (
            format!("the Kafka brokers {brokers} hung up on a plaintext connection"),
            format!(
                "check \"brokers\" in {config_path} or KREPLY_BROKERS; a TLS listener does this, and needs \"tls\" there"
            ),
        ),
        _ => (
            format!("cannot reach the Kafka brokers {brokers}"),
            format!("check \"brokers\" in {config_path} or KREPLY_BROKERS"),
        ),
    };
    StartupError::new(format!("{what} ({check}): {cause}"))
}

/// What a refused TLS handshake asks the operator to check.
fn certificate_check(tls: &TlsSettings, config_path: &str) -> String {
    let issuer = match &tls.ca_file {
        Some(ca) => format!("\"tls.ca_file\" {}", ca.display()),
        None => "a public CA (there is no \"tls.ca_file\")".to_string(),
    };
    let name = match &tls.server_name {
        Some(name) => format!("\"{name}\" from \"tls.server_name\""),
        None => "the host in \"brokers\"".to_string(),
    };
    format!(
        "check that {issuer} issued the brokers' certificate and that it names {name}, in {config_path}"
    )
}

/// krafka's two words for a connection that took longer than `connect_timeout`: the
/// whole attempt, or its TLS handshake (whichever timer fires first).
fn timed_out(cause: &str) -> bool {
    cause.contains("was not established within") || cause.contains("did not complete within")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn config(json: &str) -> Config {
        Config::parse(Path::new("/etc/kreply/kreply.json"), json).unwrap()
    }

    const TLS: &str = r#""tls": {"ca_file": "ca.pem", "server_name": "kafka.internal"}"#;
    const SASL: &str =
        r#""sasl": {"mechanism": "SCRAM-SHA-256", "username": "kreply", "password_env": "PW"}"#;

    #[test]
    fn each_section_turns_on_its_part_of_the_security_protocol() {
        assert!(auth_config(&config("{}")).is_none());
        let both = auth_config(&config(&format!("{{{TLS}, {SASL}}}"))).unwrap();
        assert!(both.requires_tls() && both.requires_sasl());
        assert_eq!(both.security_protocol().to_string(), "SASL_SSL");
        assert_eq!(both.sasl_mechanism().unwrap().to_string(), "SCRAM-SHA-256");
        let tls = both.tls_config().unwrap();
        assert_eq!(tls.ca_cert_path(), Some("/etc/kreply/ca.pem"));
        assert_eq!(tls.sni_hostname(), Some("kafka.internal"));
        let tls_only = auth_config(&config(&format!("{{{TLS}}}"))).unwrap();
        assert_eq!(tls_only.security_protocol().to_string(), "SSL");
        let sasl_only = auth_config(&config(&format!("{{{SASL}}}"))).unwrap();
        assert_eq!(sasl_only.security_protocol().to_string(), "SASL_PLAINTEXT");
    }

    #[test]
    fn the_sentence_points_at_the_setting_that_failed() {
        let secured = config(&format!("{{\"brokers\": [\"k:9093\"], {TLS}, {SASL}}}"));
        for (error, expected) in [
            (
                KrafkaError::auth("TLS handshake failed: invalid peer certificate: UnknownIssuer"),
                "the TLS handshake with the Kafka brokers k:9093 failed (check that \"tls.ca_file\" /etc/kreply/ca.pem issued the brokers' certificate and that it names \"kafka.internal\" from \"tls.server_name\", in k.json)",
            ),
            (
                KrafkaError::auth("SASL authentication step failed"),
                "the Kafka brokers k:9093 refused SASL SCRAM-SHA-256 authentication as user \"kreply\" (check \"sasl\" in k.json",
            ),
            (
                KrafkaError::timeout("TLS handshake with k:9093 did not complete within 3s"),
                "the Kafka brokers k:9093 completed no TLS handshake within 3000 ms (check that the ports in \"brokers\" are TLS listeners",
            ),
            (
                KrafkaError::network(std::io::Error::other(
                    "received fatal alert: CertificateRequired",
                )),
                "the Kafka brokers k:9093 refused kreply's TLS connection (they may require a client certificate",
            ),
            (
                KrafkaError::config("no certificates found in CA bundle"),
                "with these TLS or SASL settings (check \"tls\" and \"sasl\" in k.json)",
            ),
        ] {
            let cause = error.to_string();
            let sentence = connect_failed(error, &secured, "k.json").to_string();
            assert!(sentence.contains(expected), "{sentence}");
            assert!(sentence.ends_with(&format!("): {cause}")), "{sentence}");
        }
        let plain = config(r#"{"brokers": ["k:9093"]}"#);
        let reset = KrafkaError::network(std::io::Error::from_raw_os_error(104));
        let sentence = connect_failed(reset, &plain, "k.json").to_string();
        assert!(
            sentence.starts_with("the Kafka brokers k:9093 hung up on a plaintext connection"),
            "{sentence}"
        );
    }
}
