//! Two gateway hosts as a load balancer sees them: different IPs, the same port. The
//! host table routes a late-reply lookup from one to the other by IP and this shared port.

use super::Gateway;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;

/// A port free on every one of `ips` right now.
pub fn port_free_on(ips: &[&str]) -> u16 {
    loop {
        let first = TcpListener::bind((ips[0], 0)).unwrap();
        let port = first.local_addr().unwrap().port();
        if ips[1..]
            .iter()
            .all(|ip| TcpListener::bind((*ip, port)).is_ok())
        {
            return port;
        }
    }
}

/// Gateways for each host IP in `ips`, listening on that IP and one shared port; ready.
pub fn gateways_on_one_port(broker: &str, ips: &[&str], config: &Path) -> Vec<Gateway> {
    let port = port_free_on(ips);
    let gateways: Vec<Gateway> = ips
        .iter()
        .map(|ip| {
            let addr = SocketAddr::new(ip.parse().unwrap(), port);
            Gateway::spawn_at(broker, ip, addr, config)
        })
        .collect();
    for gateway in &gateways {
        gateway.wait_ready();
    }
    gateways
}
