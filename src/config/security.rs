//! The `"tls"` and `"sasl"` sections: how kreply proves itself to the brokers and checks
//! that they are who they say.
//!
//! Both are optional; without them the connection is plaintext and anonymous, as before.
//! Startup reads every file they name, so a missing CA, key or password file stops
//! startup (and `kreply check-config`) with one sentence naming the setting and the path,
//! rather than failing later inside a connection attempt.
//!
//! The password is secret: it is held in a [`Secret`], whose `Debug` prints `[redacted]`,
//! which serializes as [`MASK`] (`check-config --print`) and has no `Display`, so it can
//! reach no log line or report by accident, and which overwrites its bytes when dropped,
//! so a freed config leaves no copy behind. A
//! relative `password_file` (or `key_file`) is looked up in `$CREDENTIALS_DIRECTORY` when
//! systemd set it (`LoadCredential=`), else beside the config file.

use crate::error::StartupError;
use serde::{Deserialize, Serialize, Serializer};
use std::fmt;
use std::path::{Path, PathBuf};
use zeroize::{ZeroizeOnDrop, Zeroizing};

/// `"tls"`: TLS to every broker.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TlsSettings {
    /// The CA bundle (PEM) that issued the brokers' certificates; it alone is trusted.
    /// Without it, the public web roots compiled into kreply (Mozilla's) are trusted.
    pub(crate) ca_file: Option<PathBuf>,
    /// A client certificate chain (PEM), for brokers that ask for one; with `key_file`.
    pub(crate) cert_file: Option<PathBuf>,
    /// The client certificate's private key (PEM, unencrypted); with `cert_file`.
    pub(crate) key_file: Option<PathBuf>,
    /// The name the brokers' certificates must carry, when it is not the host in
    /// `brokers` (e.g. brokers listed by IP); it is also sent as SNI.
    pub(crate) server_name: Option<String>,
}

/// `"sasl"`: SASL authentication on every broker connection.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SaslSettings {
    pub(crate) mechanism: SaslMechanism,
    pub(crate) username: String,
    /// A file holding the password (one trailing newline is ignored).
    pub(crate) password_file: Option<PathBuf>,
    /// The name of an environment variable holding the password.
    pub(crate) password_env: Option<String>,
    /// Read from `password_file` or `password_env` at load. Never a key of the file (the
    /// password stays out of it); printed as [`MASK`] by `check-config --print`, to show
    /// that one was read.
    #[serde(skip_deserializing)]
    pub(crate) password: Secret,
}

/// The SASL mechanisms kreply speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub(crate) enum SaslMechanism {
    /// The password itself goes to the broker: use it only with `"tls"`.
    #[serde(rename = "PLAIN")]
    Plain,
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
}

impl fmt::Display for SaslMechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        })
    }
}

/// A password. Its `Debug` hides it and it has no `Display`: only [`Secret::expose`]
/// gives it out, at the one place it is handed to krafka. Dropping it (and each clone)
/// overwrites its bytes with zeroes, so the memory a dropped config leaves to the
/// allocator holds no password.
#[derive(Clone, Default, ZeroizeOnDrop)]
pub(crate) struct Secret(String);

impl Secret {
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// What a secret serializes as, whatever it holds.
pub(crate) const MASK: &str = "***";

/// Serializing a config (`check-config --print`) cannot leak the password: the type
/// itself writes [`MASK`].
impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(MASK)
    }
}

impl TlsSettings {
    /// Makes `ca_file` and `cert_file` relative to the config file's folder, like the
    /// host table. (`key_file` is a secret and is found like `password_file`, at load.)
    pub(crate) fn anchor(&mut self, folder: &Path) {
        for file in [&mut self.ca_file, &mut self.cert_file]
            .into_iter()
            .flatten()
        {
            if file.is_relative() {
                *file = folder.join(&*file);
            }
        }
    }

    /// Rejects a client certificate without its key, or the other way round.
    pub(crate) fn check(&self) -> Result<(), String> {
        if self.cert_file.is_some() != self.key_file.is_some() {
            return Err("\"tls.cert_file\" and \"tls.key_file\" go together: set both for a client certificate, or neither".into());
        }
        if self.server_name.as_deref() == Some("") {
            return Err("\"tls.server_name\" is empty; remove it to check the certificate against the host in \"brokers\"".into());
        }
        Ok(())
    }

    /// Finds the key file and makes sure every file can be read now.
    fn load(&mut self, folder: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<(), String> {
        if let Some(key) = &mut self.key_file {
            *key = credential_path(key, folder, env);
        }
        for (setting, file) in [
            ("tls.ca_file", &self.ca_file),
            ("tls.cert_file", &self.cert_file),
            ("tls.key_file", &self.key_file),
        ] {
            if let Some(file) = file {
                read_file(setting, file)?;
            }
        }
        Ok(())
    }

    /// What `check-config` and the startup log say about it.
    fn describe(&self) -> String {
        let mut parts = vec![match &self.ca_file {
            Some(ca) => format!("CA {}", ca.display()),
            None => "the public web roots".to_string(),
        }];
        if let Some(cert) = &self.cert_file {
            parts.push(format!("client certificate {}", cert.display()));
        }
        if let Some(name) = &self.server_name {
            parts.push(format!("server name {name}"));
        }
        format!("TLS ({})", parts.join(", "))
    }
}

impl SaslSettings {
    /// Rejects an empty user, and a password with no source or two.
    pub(crate) fn check(&self) -> Result<(), String> {
        if self.username.is_empty() {
            return Err("\"sasl.username\" is empty".into());
        }
        match (&self.password_file, &self.password_env) {
            (Some(_), Some(_)) => Err("\"sasl\" sets both \"password_file\" and \"password_env\"; keep one".into()),
            (None, None) => Err("\"sasl\" needs the password: set \"password_file\" (e.g. \"kafka-password\" with systemd's LoadCredential=) or \"password_env\"".into()),
            (None, Some(name)) if name.is_empty() => Err("\"sasl.password_env\" is empty; name the environment variable that holds the password".into()),
            _ => Ok(()),
        }
    }

    /// Reads the password from its file or variable. What was read is zeroized too, once
    /// the [`Secret`] holds its copy. (The process environment keeps its own copy of a
    /// `password_env` variable, out of kreply's reach: prefer `password_file`.)
    fn load(&mut self, folder: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<(), String> {
        let read = if let Some(file) = &mut self.password_file {
            *file = credential_path(file, folder, env);
            Zeroizing::new(read_file("sasl.password_file", file)?)
        } else {
            let name = self.password_env.as_deref().unwrap_or_default();
            let value = env(name).ok_or_else(|| format!("cannot read the password from {name}, named by \"sasl.password_env\" (set it, e.g. in the unit's EnvironmentFile=): it is not set"))?;
            Zeroizing::new(value.into_bytes())
        };
        let password = std::str::from_utf8(&read).map_err(|_| {
            format!(
                "{} is not UTF-8 text (write the password as text)",
                self.source()
            )
        })?;
        let password = password.trim_end_matches(['\r', '\n']);
        if password.is_empty() {
            return Err(format!("the password from {} is empty", self.source()));
        }
        self.password = Secret(password.to_string());
        Ok(())
    }

    /// Where the password comes from, for messages: never the password itself.
    fn source(&self) -> String {
        match (&self.password_file, &self.password_env) {
            (Some(file), _) => format!("\"sasl.password_file\" {}", file.display()),
            (None, Some(name)) => format!("\"sasl.password_env\" {name}"),
            (None, None) => "nowhere".to_string(),
        }
    }

    fn describe(&self) -> String {
        format!(
            "SASL {} as user \"{}\" (password from {})",
            self.mechanism,
            self.username,
            self.source()
        )
    }
}

/// Reads the files the sections name, and the password. `env` reads the environment
/// (`CREDENTIALS_DIRECTORY`, and the variable `password_env` names).
pub(crate) fn load(
    tls: Option<&mut TlsSettings>,
    sasl: Option<&mut SaslSettings>,
    config_path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(), StartupError> {
    let folder = config_path.parent().unwrap_or(Path::new(""));
    let fail = |why: String| StartupError::new(format!("{}: {why}", config_path.display()));
    if let Some(tls) = tls {
        tls.load(folder, env).map_err(fail)?;
    }
    if let Some(sasl) = sasl {
        sasl.load(folder, env).map_err(fail)?;
    }
    Ok(())
}

/// How kreply meets the brokers, in a few words with no secret in them.
pub(crate) fn describe(tls: Option<&TlsSettings>, sasl: Option<&SaslSettings>) -> String {
    let tls = tls.map_or("plaintext".to_string(), TlsSettings::describe);
    let sasl = sasl.map_or("no SASL".to_string(), SaslSettings::describe);
    format!("{tls}, {sasl}")
}

/// A relative path is found in systemd's credentials folder when there is one (the unit's
/// `LoadCredential=name:/etc/...` puts the file there as `name`), else beside the config.
fn credential_path(path: &Path, folder: &Path, env: &dyn Fn(&str) -> Option<String>) -> PathBuf {
    if path.is_absolute() {
        return path.to_path_buf();
    }
    match env("CREDENTIALS_DIRECTORY") {
        Some(credentials) if !credentials.is_empty() => Path::new(&credentials).join(path),
        _ => folder.join(path),
    }
}

fn read_file(setting: &str, path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| {
        format!(
            "cannot read \"{setting}\" {} (check the path, the file's permissions, or the unit's LoadCredential=): {e}",
            path.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    /// A folder of its own under the system's temp dir, holding `files`.
    fn folder_with(name: &str, files: &[(&str, &str)]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("kreply-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (file, text) in files {
            std::fs::write(dir.join(file), text).unwrap();
        }
        dir
    }

    /// Parses `json` as `<folder>/kreply.json`, validates it and loads its security files
    /// with `env` as the environment.
    fn load_in(
        folder: &Path,
        json: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, String> {
        let path = folder.join("kreply.json");
        let mut config = Config::parse(&path, json).map_err(|e| e.to_string())?;
        config.validate(&path).map_err(|e| e.to_string())?;
        config
            .load_security(&path, env)
            .map_err(|e| e.to_string())?;
        Ok(config)
    }

    const SECURED: &str = r#"{
        "tls": {"ca_file": "ca.pem", "cert_file": "client.pem", "key_file": "client.key", "server_name": "kafka.internal"},
        "sasl": {"mechanism": "SCRAM-SHA-512", "username": "kreply", "password_file": "kafka-password"}
    }"#;

    #[test]
    fn files_are_found_beside_the_config_and_the_password_is_read_without_its_newline() {
        let dir = folder_with(
            "beside",
            &[
                ("ca.pem", "ca"),
                ("client.pem", "cert"),
                ("client.key", "key"),
                ("kafka-password", "s3cret-pw\n"),
            ],
        );
        let config = load_in(&dir, SECURED, &|_| None).unwrap();
        let tls = config.tls.as_ref().unwrap();
        assert_eq!(tls.ca_file.as_deref(), Some(dir.join("ca.pem").as_path()));
        assert_eq!(
            tls.key_file.as_deref(),
            Some(dir.join("client.key").as_path())
        );
        let sasl = config.sasl.as_ref().unwrap();
        assert_eq!(sasl.mechanism, SaslMechanism::ScramSha512);
        assert_eq!(sasl.password.expose(), "s3cret-pw");
        let said = config.broker_security();
        assert!(
            said.contains("SASL SCRAM-SHA-512 as user \"kreply\""),
            "{said}"
        );
        assert!(said.contains("server name kafka.internal"), "{said}");
        for shown in [said, format!("{config:?}"), format!("{config:#?}")] {
            assert!(!shown.contains("s3cret-pw"), "the password leaked: {shown}");
        }
    }

    #[test]
    fn systemd_credentials_hold_the_key_and_the_password_but_not_the_public_files() {
        let config_dir = folder_with("creds-config", &[("ca.pem", "ca"), ("client.pem", "cert")]);
        let credentials = folder_with(
            "creds",
            &[("client.key", "key"), ("kafka-password", "from-systemd")],
        );
        let env = |name: &str| {
            (name == "CREDENTIALS_DIRECTORY").then(|| credentials.display().to_string())
        };
        let config = load_in(&config_dir, SECURED, &env).unwrap();
        let tls = config.tls.as_ref().unwrap();
        assert_eq!(
            tls.ca_file.as_deref(),
            Some(config_dir.join("ca.pem").as_path())
        );
        assert_eq!(
            tls.key_file.as_deref(),
            Some(credentials.join("client.key").as_path())
        );
        assert_eq!(config.sasl.unwrap().password.expose(), "from-systemd");
    }

    #[test]
    fn a_missing_file_is_one_sentence_naming_the_setting_and_the_path() {
        let dir = folder_with("missing", &[("ca.pem", "ca"), ("client.pem", "c")]);
        let err = load_in(&dir, SECURED, &|_| None).unwrap_err();
        let key = dir.join("client.key").display().to_string();
        assert!(
            err.contains(&format!("cannot read \"tls.key_file\" {key} (")),
            "{err}"
        );
        assert_eq!(err.lines().count(), 1, "{err}");
        std::fs::write(dir.join("client.key"), "key").unwrap();
        let err = load_in(&dir, SECURED, &|_| None).unwrap_err();
        let password = dir.join("kafka-password").display().to_string();
        assert!(
            err.contains(&format!("cannot read \"sasl.password_file\" {password} (")),
            "{err}"
        );
    }

    #[test]
    fn the_password_may_come_from_a_named_environment_variable() {
        let dir = folder_with("env", &[]);
        let json =
            r#"{"sasl": {"mechanism": "PLAIN", "username": "u", "password_env": "KAFKA_PW"}}"#;
        let env = |name: &str| (name == "KAFKA_PW").then(|| "pw-from-env".to_string());
        let config = load_in(&dir, json, &env).unwrap();
        assert_eq!(config.sasl.unwrap().password.expose(), "pw-from-env");
        let err = load_in(&dir, json, &|_| None).unwrap_err();
        assert!(err.contains("KAFKA_PW"), "{err}");
        assert!(err.contains("it is not set"), "{err}");
    }

    #[test]
    fn no_debug_output_of_the_config_shows_the_password() {
        let dir = folder_with("debug", &[("kafka-password", "file-pw-7f3a\n")]);
        let from_file = r#"{"sasl": {"mechanism": "PLAIN", "username": "u", "password_file": "kafka-password"}}"#;
        let from_env =
            r#"{"sasl": {"mechanism": "SCRAM-SHA-256", "username": "u", "password_env": "PW"}}"#;
        let env = |name: &str| (name == "PW").then(|| "env-pw-9c1e".to_string());
        for (json, password) in [(from_file, "file-pw-7f3a"), (from_env, "env-pw-9c1e")] {
            let config = load_in(&dir, json, &env).unwrap();
            let sasl = config.sasl.clone().unwrap();
            assert_eq!(sasl.password.expose(), password);
            let printed = serde_json::to_value(&config).unwrap();
            for shown in [
                format!("{config:?}"),
                format!("{config:#?}"),
                format!("{sasl:?}"),
                format!("{:?}", sasl.password),
                config.broker_security(),
                printed.to_string(),
            ] {
                assert!(!shown.contains(password), "the password leaked: {shown}");
            }
            assert!(format!("{sasl:?}").contains("[redacted]"));
            assert_eq!(printed["sasl"]["password"], MASK);
        }
    }

    #[test]
    fn the_password_itself_is_no_key_of_the_file() {
        let json = r#"{"sasl": {"mechanism": "PLAIN", "username": "u", "password_env": "PW", "password": "x"}}"#;
        let err = Config::parse(Path::new("k.json"), json)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `password`"), "{err}");
    }

    /// Compiles only for types whose `Drop` zeroizes them: the derive that gives
    /// `ZeroizeOnDrop` writes that `Drop`.
    fn assert_zeroize_on_drop<T: ZeroizeOnDrop>() {}

    #[test]
    fn the_password_is_wiped_when_dropped() {
        assert_zeroize_on_drop::<Secret>();
    }

    #[test]
    fn half_settings_are_refused_naming_the_keys() {
        let dir = folder_with("half", &[]);
        for (json, expected) in [
            (r#"{"tls": {"cert_file": "c.pem"}}"#, "\"tls.key_file\""),
            (
                r#"{"sasl": {"mechanism": "PLAIN", "username": "u"}}"#,
                "\"password_file\"",
            ),
            (
                r#"{"sasl": {"mechanism": "PLAIN", "username": "u", "password_file": "f", "password_env": "E"}}"#,
                "keep one",
            ),
            (
                r#"{"sasl": {"mechanism": "PLAIN", "username": "", "password_env": "E"}}"#,
                "\"sasl.username\" is empty",
            ),
            (
                r#"{"sasl": {"mechanism": "GSSAPI", "username": "u", "password_env": "E"}}"#,
                "SCRAM-SHA-256",
            ),
        ] {
            let err = load_in(&dir, json, &|_| Some("x".into())).unwrap_err();
            assert!(err.contains(expected), "{json}: {err}");
        }
    }
}
