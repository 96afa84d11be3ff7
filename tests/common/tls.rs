//! TLS for real: a CA and a broker certificate made with the `openssl` command, and
//! stunnel in front of tansu (which speaks no TLS itself), so every client connection is
//! a TLS connection that stunnel terminates. scripts/install-stunnel installs stunnel.

use super::{free_port, log_dir, wait_until};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The name the broker's certificate carries; kreply reaches it by IP, so its config
/// names this in `tls.server_name`.
pub const SERVER_NAME: &str = "broker.kreply.test";

/// A folder of PEM files: `ca.pem` issued `broker.pem` (for [`SERVER_NAME`] only), and
/// `other-ca.pem` is a CA that issued nothing here.
pub struct Certificates {
    pub dir: PathBuf,
}

impl Certificates {
    pub fn generate() -> Certificates {
        let dir = log_dir().join(format!("tls-{}", free_port()));
        std::fs::create_dir_all(&dir).unwrap();
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
        for (key, ca, name) in [
            ("ca.key", "ca.pem", "kreply test CA"),
            ("other-ca.key", "other-ca.pem", "a CA kreply does not trust"),
        ] {
            let subject = format!("/CN={name}");
            openssl(
                &dir,
                &["req", "-x509", "-nodes", "-days", "2"],
                &ec,
                &["-keyout", key, "-out", ca, "-subj", &subject],
            );
        }
        let subject = format!("/CN={SERVER_NAME}");
        openssl(
            &dir,
            &["req", "-nodes"],
            &ec,
            &[
                "-keyout",
                "broker.key",
                "-out",
                "broker.csr",
                "-subj",
                &subject,
            ],
        );
        let extensions = format!(
            "subjectAltName=DNS:{SERVER_NAME}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
        );
        std::fs::write(dir.join("broker.ext"), extensions).unwrap();
        openssl(
            &dir,
            &["x509", "-req", "-days", "2", "-in", "broker.csr"],
            &[],
            &[
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-extfile",
                "broker.ext",
                "-out",
                "broker.pem",
            ],
        );
        Certificates { dir }
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }
}

fn openssl(dir: &Path, command: &[&str], key: &[&str], rest: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(command)
        .args(key)
        .args(rest)
        .output()
        .expect("the openssl command must be installed");
    assert!(
        out.status.success(),
        "openssl {command:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// stunnel terminating TLS on `addr` with the broker certificate and passing the bytes on
/// to a plaintext broker; killed on drop.
pub struct TlsFront {
    pub addr: String,
    child: Child,
}

impl TlsFront {
    /// Listens on `port` (the port the broker advertises) in front of `upstream`.
    pub fn start(port: u16, upstream: &str, certificates: &Certificates) -> TlsFront {
        let addr = format!("127.0.0.1:{port}");
        let log = certificates.path(&format!("stunnel-{port}.log"));
        let conf = format!(
            "foreground = yes\npid =\noutput = {}\n[kafka]\naccept = {addr}\nconnect = {upstream}\ncert = {}\nkey = {}\n",
            log.display(),
            certificates.path("broker.pem").display(),
            certificates.path("broker.key").display(),
        );
        let conf_path = certificates.path(&format!("stunnel-{port}.conf"));
        std::fs::write(&conf_path, conf).unwrap();
        let child = Command::new("stunnel")
            .arg(&conf_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("stunnel must be installed: run scripts/install-stunnel");
        wait_until("stunnel to listen", Duration::from_secs(10), || {
            TcpStream::connect(&addr).is_ok()
        });
        TlsFront { addr, child }
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
