//! The IP addresses this host answers on, as candidates for the host-table lookup.
//!
//! Read from the kernel's own tables (`/proc/net/fib_trie` for IPv4, `/proc/net/if_inet6`
//! for IPv6) rather than through `getifaddrs`: no `unsafe`, no extra crate, and the daemon
//! only runs on Linux hosts. `KREPLY_HOST_IP` skips detection altogether.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Every local address of this host, IPv4 first, without duplicates.
pub fn detect() -> Vec<IpAddr> {
    let v4 = std::fs::read_to_string("/proc/net/fib_trie").unwrap_or_default();
    let v6 = std::fs::read_to_string("/proc/net/if_inet6").unwrap_or_default();
    let mut ips: Vec<IpAddr> = local_ipv4(&v4).into_iter().map(IpAddr::V4).collect();
    ips.extend(local_ipv6(&v6).into_iter().map(IpAddr::V6));
    let mut seen = Vec::new();
    ips.retain(|ip| {
        let new = !seen.contains(ip);
        seen.push(*ip);
        new
    });
    ips
}

/// In `fib_trie`, a host address is a `|-- a.b.c.d` leaf followed by `/32 host LOCAL`.
fn local_ipv4(fib_trie: &str) -> Vec<Ipv4Addr> {
    let mut found = Vec::new();
    let mut leaf: Option<Ipv4Addr> = None;
    for line in fib_trie.lines() {
        let line = line.trim();
        if let Some(addr) = line.strip_prefix("|-- ") {
            leaf = addr.parse().ok();
        } else if line.contains("/32 host LOCAL") {
            found.extend(leaf.take());
        }
    }
    found
}

/// Each `if_inet6` line starts with the address as 32 hex digits.
fn local_ipv6(if_inet6: &str) -> Vec<Ipv6Addr> {
    if_inet6
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter_map(|hex| u128::from_str_radix(hex, 16).ok())
        .map(Ipv6Addr::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIB_TRIE: &str = "Main:
  +-- 0.0.0.0/0 3 0 5
     |-- 0.0.0.0
        /0 universe UNICAST
     +-- 10.0.1.0/24 2 0 2
        |-- 10.0.1.0
           /24 link UNICAST
        |-- 10.0.1.11
           /32 host LOCAL
        |-- 10.0.1.255
           /32 link BROADCAST
     +-- 127.0.0.0/8 2 0 2
        |-- 127.0.0.1
           /32 host LOCAL
Local:
  +-- 0.0.0.0/0 3 0 5
        |-- 10.0.1.11
           /32 host LOCAL
";

    #[test]
    fn finds_local_host_addresses_only() {
        let ips = local_ipv4(FIB_TRIE);
        assert_eq!(
            ips,
            [
                "10.0.1.11".parse::<Ipv4Addr>().unwrap(),
                "127.0.0.1".parse().unwrap(),
                "10.0.1.11".parse().unwrap()
            ]
        );
    }

    #[test]
    fn parses_if_inet6() {
        let text = "00000000000000000000000000000001 01 80 10 80       lo\nfe800000000000000000000000000001 02 40 20 80     eth0\n";
        assert_eq!(
            local_ipv6(text),
            [
                "::1".parse::<Ipv6Addr>().unwrap(),
                "fe80::1".parse().unwrap()
            ]
        );
    }

    #[test]
    fn detect_finds_loopback_on_this_machine() {
        let ips = detect();
        assert!(ips.contains(&"127.0.0.1".parse().unwrap()), "{ips:?}");
        let unique: std::collections::HashSet<_> = ips.iter().collect();
        assert_eq!(unique.len(), ips.len());
    }
}
