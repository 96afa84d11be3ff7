//! Gateway hosts beyond the two in `etc/reply-hosts.txt`: a host table of a test's own, and
//! gateways that each listen on their own loopback IP, as separate hosts behind a load
//! balancer would. The soak runs three hosts; the shipped table lists two.

use super::{Gateway, log_dir};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};

/// Writes a host table listing `hosts` as `(ip, suffix)` pairs; returns its path.
pub fn host_table(hosts: &[(&str, &str)]) -> PathBuf {
    let text: String = hosts
        .iter()
        .map(|(ip, suffix)| format!("{ip} {suffix}\n"))
        .collect();
    let path = log_dir().join(format!("reply-hosts-{}.txt", super::free_port()));
    std::fs::write(&path, text).unwrap();
    path
}

/// A free port on `ip`.
fn free_addr(ip: &str) -> SocketAddr {
    TcpListener::bind((ip, 0)).unwrap().local_addr().unwrap()
}

/// Starts a gateway as host `host_ip`, listening on that IP, and waits until it is ready.
pub fn gateway_on_own_ip(broker: &str, host_ip: &str, config: &Path) -> Gateway {
    let gateway = Gateway::spawn_at(broker, host_ip, config, free_addr(host_ip));
    gateway.wait_ready();
    gateway
}
