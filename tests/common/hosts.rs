//! Gateway hosts as a load balancer sees them. Two on different IPs and one shared port:
//! the host table routes a late-reply lookup from one to the other by IP and that port.
//! And hosts beyond the two in `etc/reply-hosts.txt`: a host table of a test's own, with
//! gateways that each listen on their own loopback IP (the soak runs three hosts).

use super::answers::correlation_bytes;
use super::{Gateway, log_dir};
use serde_json::json;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};

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

/// `callers` callers at once, `each` payments each, alternating between `hosts` as a
/// round-robin load balancer would; every caller must get its own reply (200, its order
/// id and amount). Returns the index of the host that answered each payment, and the
/// payment's correlation id.
pub fn pay_round_robin(hosts: &[&Gateway], callers: usize, each: usize) -> Vec<(usize, Vec<u8>)> {
    std::thread::scope(|s| {
        let callers: Vec<_> = (0..callers)
            .map(|caller| {
                s.spawn(move || {
                    (0..each)
                        .map(|i| pay_one(hosts, caller, i))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        callers
            .into_iter()
            .flat_map(|c| c.join().unwrap())
            .collect()
    })
}

/// Payment `i` of `caller`, through the next host in turn.
fn pay_one(hosts: &[&Gateway], caller: usize, i: usize) -> (usize, Vec<u8>) {
    let host = (caller + i) % hosts.len();
    let order = format!("O-{caller}-{i}");
    let response = hosts[host].pay("approve", &json!({"order_id": order, "amount": i}));
    response.assert_status(200);
    let reply = response.json();
    assert_eq!(
        reply["order_id"], order,
        "a caller got someone else's reply"
    );
    assert_eq!(reply["amount"], i);
    (host, correlation_bytes(&response))
}

/// Writes a host table listing `hosts` as `(ip, suffix)` pairs; returns its path.
pub fn host_table(hosts: &[(&str, &str)]) -> PathBuf {
    write_table(hosts.iter().map(|(ip, suffix)| format!("{ip} {suffix}\n")))
}

/// A host table for partition-per-host routing: `(ip, suffix, partition)` each.
pub fn partitioned_host_table(hosts: &[(&str, &str, i32)]) -> PathBuf {
    let line = |(ip, suffix, partition): &(&str, &str, i32)| {
        format!("{ip} {suffix} partition={partition}\n")
    };
    write_table(hosts.iter().map(line))
}

fn write_table(lines: impl Iterator<Item = String>) -> PathBuf {
    let path = log_dir().join(format!("reply-hosts-{}.txt", super::free_port()));
    std::fs::write(&path, lines.collect::<String>()).unwrap();
    path
}

/// A free port on `ip`.
fn free_addr(ip: &str) -> SocketAddr {
    TcpListener::bind((ip, 0)).unwrap().local_addr().unwrap()
}

/// Starts a gateway as host `host_ip`, listening on that IP, and waits until it is ready.
pub fn gateway_on_own_ip(broker: &str, host_ip: &str, config: &Path) -> Gateway {
    gateway_on_own_ip_logging(broker, host_ip, config, "info")
}

/// [`gateway_on_own_ip`] with the log filter `rust_log`.
pub fn gateway_on_own_ip_logging(
    broker: &str,
    host_ip: &str,
    config: &Path,
    rust_log: &str,
) -> Gateway {
    let gateway = Gateway::spawn_logging(broker, host_ip, free_addr(host_ip), config, rust_log);
    gateway.wait_ready();
    gateway
}
