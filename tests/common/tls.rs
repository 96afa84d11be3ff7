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

/// A folder of PEM files: `ca.pem` issued `broker.pem` (for [`SERVER_NAME`] only) and
/// the client certificate `client.pem` (key `client.key`); `other-ca.pem` is a CA that
/// issued nothing here. Keys are P-256, quick to make.
pub struct Certificates {
    pub dir: PathBuf,
}

impl Certificates {
    pub fn generate() -> Certificates {
        let dir = log_dir().join(format!("tls-{}", free_port()));
        std::fs::create_dir_all(&dir).unwrap();
        for (name, common_name) in [("ca", "kreply test CA"), ("other-ca", "another CA")] {
            let (key, pem) = (format!("{name}.key"), format!("{name}.pem"));
            let subject = format!("/CN={common_name}");
            let tail = [key.as_str(), "-out", &pem, "-subj", &subject];
            openssl(
                &dir,
                &[&["req", "-x509", "-days", "2"], NEW_KEY, &tail].concat(),
            );
        }
        let broker = format!("subjectAltName=DNS:{SERVER_NAME}\nextendedKeyUsage=serverAuth\n");
        issue(&dir, "broker", SERVER_NAME, &broker);
        issue(&dir, "client", "kreply", "extendedKeyUsage=clientAuth\n");
        Certificates { dir }
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }
}

/// A new unencrypted P-256 key (quick to make), written to the file named next.
const NEW_KEY: &[&str] = &[
    "-nodes",
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-keyout",
];

/// `<name>.pem` and `<name>.key`, issued by `ca.pem` to `common_name` with `extensions`.
fn issue(dir: &Path, name: &str, common_name: &str, extensions: &str) {
    let [key, csr, ext, pem] = ["key", "csr", "ext", "pem"].map(|kind| format!("{name}.{kind}"));
    let subject = format!("/CN={common_name}");
    openssl(
        dir,
        &[&["req"], NEW_KEY, &[&key, "-out", &csr, "-subj", &subject]].concat(),
    );
    let extensions = format!("basicConstraints=CA:FALSE\n{extensions}");
    std::fs::write(dir.join(&ext), extensions).unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-days",
            "2",
            "-in",
            &csr,
            "-out",
            &pem,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-extfile",
            &ext,
        ],
    );
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("the openssl command must be installed");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
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
        TlsFront::spawn(port, upstream, certificates, "")
    }

    /// [`TlsFront::start`], refusing clients without a certificate that `ca.pem` issued.
    pub fn requiring_client_certificates(
        port: u16,
        upstream: &str,
        certificates: &Certificates,
    ) -> TlsFront {
        let ca = certificates.path("ca.pem");
        let verify = format!("CAfile = {}\nverifyChain = yes\n", ca.display());
        TlsFront::spawn(port, upstream, certificates, &verify)
    }

    fn spawn(port: u16, upstream: &str, certificates: &Certificates, extra: &str) -> TlsFront {
        let addr = format!("127.0.0.1:{port}");
        let log = certificates.path(&format!("stunnel-{port}.log"));
        let conf = format!(
            "foreground = yes\npid =\noutput = {}\n[kafka]\naccept = {addr}\nconnect = {upstream}\ncert = {}\nkey = {}\n{extra}",
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
