//! The tests' SCRAM-SHA-256 checking proxy (`tests/common/scram_proxy.rs`, included as is)
//! as a program, for `scripts/systemd-check`, which puts it in front of a tansu on the host
//! (tansu 0.6 does not check SCRAM proofs; see that file):
//!
//!     cargo build --example scram_proxy
//!     target/debug/examples/scram_proxy PORT UPSTREAM USER PASSWORD_FILE
//!
//! It listens on 127.0.0.1:PORT, lets through connections that prove the password in
//! PASSWORD_FILE (one trailing newline ignored) for USER, and passes them on to UPSTREAM.
//! It runs until killed, and prints a line each time its counts change:
//! `authenticated N refused M`.

#[path = "../tests/common/scram_proxy.rs"]
mod scram_proxy;

use std::time::Duration;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [port, upstream, user, password_file] = args.as_slice() else {
        eprintln!("usage: scram_proxy PORT UPSTREAM USER PASSWORD_FILE");
        std::process::exit(2);
    };
    let port: u16 = port.parse().unwrap_or_else(|_| {
        eprintln!("scram_proxy: PORT {port:?} is not a port number");
        std::process::exit(2);
    });
    let password = std::fs::read_to_string(password_file).unwrap_or_else(|e| {
        eprintln!("scram_proxy: cannot read {password_file}: {e}");
        std::process::exit(2);
    });
    let password = password.strip_suffix('\n').unwrap_or(&password);

    let proxy = scram_proxy::ScramProxy::start(port, upstream, user, password);
    println!(
        "listening on {} in front of {upstream}, for user {user:?}",
        proxy.addr
    );
    let mut last = None;
    loop {
        let counts = (proxy.authenticated(), proxy.refused());
        if last != Some(counts) {
            println!("authenticated {} refused {}", counts.0, counts.1);
            last = Some(counts);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
