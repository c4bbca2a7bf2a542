//! The machine's own IP addresses, for a server started without `--announce`.
//!
//! A media socket bound to a wildcard address receives on every interface, but ICE candidates
//! must name addresses; announcing each interface's address lets a browser on this machine, on
//! the school LAN or on a VPN reach it without configuration. Firefox does not pair its host
//! candidates with a loopback-only server candidate, so loopback alone is not enough even for a
//! trial on one machine.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The addresses of the interfaces that are up, non-loopback first (in the kernel's order, one
/// per address), loopback last; IPv6 only with `ipv6`. Link-local addresses are left out: a
/// browser cannot use them without a scope, and does not offer them itself.
pub fn local_addresses(ipv6: bool) -> std::io::Result<Vec<IpAddr>> {
    let mut found = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list it allocated, freed below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut cursor = head;
    while !cursor.is_null() {
        // SAFETY: `cursor` is a node of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*cursor };
        cursor = ifa.ifa_next;
        let up = ifa.ifa_flags & (libc::IFF_UP as libc::c_uint) != 0;
        if !up || ifa.ifa_addr.is_null() {
            continue;
        }
        // SAFETY: a non-null ifa_addr points at a sockaddr whose family says which struct it is.
        let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
        let ip = match family {
            libc::AF_INET => {
                // SAFETY: AF_INET means a sockaddr_in.
                let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                IpAddr::V4(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)))
            }
            libc::AF_INET6 if ipv6 => {
                // SAFETY: AF_INET6 means a sockaddr_in6.
                let sin6 = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
                IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr))
            }
            _ => continue,
        };
        if usable(ip) && !found.contains(&ip) {
            found.push(ip);
        }
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    Ok(order(found))
}

fn usable(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !v4.is_unspecified() && !v4.is_link_local() && !v4.is_multicast(),
        IpAddr::V6(v6) => !v6.is_unspecified() && !v6.is_multicast() && !v6.is_unicast_link_local(),
    }
}

/// Non-loopback first: browsers try candidates in priority order, and str0m gives the first
/// ones the highest local preference.
fn order(mut ips: Vec<IpAddr>) -> Vec<IpAddr> {
    ips.sort_by_key(|ip| ip.is_loopback());
    ips
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_machine_has_at_least_loopback() {
        let ips = local_addresses(false).unwrap();
        assert!(ips.contains(&IpAddr::V4(Ipv4Addr::LOCALHOST)), "{ips:?}");
        assert!(ips.iter().all(IpAddr::is_ipv4));
        assert!(ips.last().unwrap().is_loopback());
    }

    #[test]
    fn loopback_goes_last_and_link_local_is_left_out() {
        let ips: Vec<IpAddr> = ["127.0.0.1", "192.168.1.5", "::1", "10.0.0.2"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let ordered = order(ips);
        assert_eq!(
            ordered[..2],
            [
                "192.168.1.5".parse::<IpAddr>().unwrap(),
                "10.0.0.2".parse().unwrap()
            ]
        );
        assert!(ordered[2..].iter().all(IpAddr::is_loopback));
        assert!(!usable("169.254.3.4".parse().unwrap()));
        assert!(!usable("fe80::1".parse().unwrap()));
        assert!(usable("2001:db8::1".parse().unwrap()));
    }
}
