//! Which address a request comes from, for rate limits and the audit log.
//!
//! Behind a TLS reverse proxy every request arrives from the proxy's address, and a whole
//! school behind one NAT shares an address too. Counting sign-in attempts per TCP peer would
//! then let one client lock everyone out. The proxy says who its client was in a forwarded
//! header, but so can any client: a header is believed only when the TCP peer is a configured
//! [`TrustedProxies`] network, and then only as far as the chain of trusted hops reaches.
//!
//! The rule ([`resolve`]): with an untrusted peer, the peer. With a trusted one, walk the
//! header's addresses from the right (the hop the proxy itself appended) and take the first that
//! is not a trusted proxy; addresses left of it were written by whoever we cannot trust. If
//! every address is trusted, the leftmost (a client on the proxies' own network). A missing or
//! malformed header, or one we cannot read to the end of the trusted chain, means the peer.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use reqwest::header::HeaderMap;
use serde::{Deserialize, Serialize};

/// Trusted hops walked at most: no real deployment chains more proxies, and a client cannot make
/// the server parse a long list.
const MAX_HOPS: usize = 16;

/// A network in CIDR notation, e.g. `10.0.0.0/8` or `fd00::/8`; a bare address is one host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

/// Why a network could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetError {
    #[error("{0:?} is not an IP address or CIDR network (e.g. \"10.0.0.0/8\", \"::1/128\")")]
    Syntax(String),
    #[error("{text:?}: the prefix length must be at most {max}")]
    Prefix { text: String, max: u8 },
    #[error(
        "{text:?} has bits set after the /{prefix} prefix; did you mean \"{network}/{prefix}\"?"
    )]
    HostBits {
        text: String,
        network: IpAddr,
        prefix: u8,
    },
}

impl IpNet {
    fn max_prefix(addr: IpAddr) -> u8 {
        if addr.is_ipv4() { 32 } else { 128 }
    }

    /// The first `prefix` bits of `addr`, the rest zero.
    fn mask(addr: IpAddr, prefix: u8) -> IpAddr {
        match addr {
            IpAddr::V4(v4) => {
                let bits = u32::from(v4);
                let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                IpAddr::from((bits & mask).to_be_bytes())
            }
            IpAddr::V6(v6) => {
                let bits = u128::from(v6);
                let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(bits & mask))
            }
        }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.addr.is_ipv4() && Self::mask(ip, self.prefix) == self.addr
    }
}

impl FromStr for IpNet {
    type Err = NetError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let syntax = || NetError::Syntax(text.to_owned());
        let trimmed = text.trim();
        let (addr, prefix) = match trimmed.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (trimmed, None),
        };
        let addr = addr.parse::<IpAddr>().map_err(|_| syntax())?.to_canonical();
        let max = Self::max_prefix(addr);
        let prefix = match prefix {
            None => max,
            Some(p) if p.bytes().all(|b| b.is_ascii_digit()) && !p.is_empty() => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| NetError::Prefix {
                    text: text.to_owned(),
                    max,
                })?,
            Some(_) => return Err(syntax()),
        };
        let network = Self::mask(addr, prefix);
        // A typo such as 10.0.0.1/8 usually means a host was meant; refusing says so instead of
        // silently trusting a whole /8.
        if network != addr {
            return Err(NetError::HostBits {
                text: text.to_owned(),
                network,
                prefix,
            });
        }
        Ok(IpNet { addr, prefix })
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Which header the trusted proxies write the client's address into.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1` (nginx, Caddy, HAProxy, Traefik, cloud load balancers).
    #[default]
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=client;proto=https, for=proxy1`.
    Forwarded,
}

impl ForwardedHeader {
    pub fn name(self) -> &'static str {
        match self {
            ForwardedHeader::XForwardedFor => "x-forwarded-for",
            ForwardedHeader::Forwarded => "forwarded",
        }
    }
}

/// The reverse proxies whose forwarded header is believed, and which header that is. The
/// default trusts nobody: every request's address is its TCP peer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
    header: ForwardedHeader,
}

impl TrustedProxies {
    pub fn new(nets: Vec<IpNet>, header: ForwardedHeader) -> Self {
        TrustedProxies { nets, header }
    }

    /// Parses CIDR strings as a configuration gives them; the error names the bad entry.
    pub fn parse<S: AsRef<str>>(
        nets: &[S],
        header: ForwardedHeader,
    ) -> Result<TrustedProxies, NetError> {
        let nets = nets
            .iter()
            .map(|n| n.as_ref().parse())
            .collect::<Result<Vec<IpNet>, NetError>>()?;
        Ok(TrustedProxies { nets, header })
    }

    pub fn header(&self) -> ForwardedHeader {
        self.header
    }

    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.nets.iter().any(|n| n.contains(ip))
    }
}

/// The client address of a request that came from `peer` with `headers`; see the module
/// documentation for the rule.
pub fn resolve(peer: IpAddr, headers: &HeaderMap, trusted: &TrustedProxies) -> IpAddr {
    let peer = peer.to_canonical();
    if !trusted.trusts(peer) {
        return peer;
    }
    let mut lines = Vec::new();
    for value in headers.get_all(trusted.header.name()) {
        match value.to_str() {
            Ok(line) => lines.push(line),
            Err(_) => return peer,
        }
    }
    resolve_lines(peer, &lines, trusted)
}

/// [`resolve`] over the configured header's lines, in the order they arrived (several lines
/// of one header are one comma-separated list).
pub fn resolve_lines(peer: IpAddr, lines: &[&str], trusted: &TrustedProxies) -> IpAddr {
    let peer = peer.to_canonical();
    if !trusted.trusts(peer) {
        return peer;
    }
    let parse_hop = match trusted.header {
        ForwardedHeader::XForwardedFor => parse_node,
        ForwardedHeader::Forwarded => forwarded_for,
    };
    let mut hops = lines.iter().rev().flat_map(|line| line.rsplit(','));
    let mut leftmost = None;
    for _ in 0..MAX_HOPS {
        let Some(hop) = hops.next() else {
            return leftmost.unwrap_or(peer);
        };
        let Some(ip) = parse_hop(hop) else {
            return peer;
        };
        if !trusted.trusts(ip) {
            return ip;
        }
        leftmost = Some(ip);
    }
    peer
}

/// One `X-Forwarded-For` entry or `Forwarded` `for=` value: an address, optionally with a port
/// (`192.0.2.1:4711`, `[2001:db8::1]:4711`) or in brackets. `unknown` and obfuscated names
/// (`_hidden`) name no address.
fn parse_node(text: &str) -> Option<IpAddr> {
    let text = text.trim();
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Ok(sock) = text.parse::<SocketAddr>() {
        return Some(sock.ip().to_canonical());
    }
    let v6 = text.strip_prefix('[')?.strip_suffix(']')?;
    v6.parse::<Ipv6Addr>()
        .ok()
        .map(|ip| IpAddr::V6(ip).to_canonical())
}

/// The `for=` address of one RFC 7239 `Forwarded` element (`for=...;proto=...;by=...`).
fn forwarded_for(element: &str) -> Option<IpAddr> {
    let value = element.split(';').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        key.trim()
            .eq_ignore_ascii_case("for")
            .then_some(value.trim())
    })?;
    let unquoted = match value.strip_prefix('"') {
        Some(rest) => rest.strip_suffix('"')?,
        None => value,
    };
    parse_node(unquoted)
}

/// The key sign-in limits count an address under. An IPv6 client usually holds a whole /64
/// (privacy addresses rotate within it), so counting single IPv6 addresses would give one
/// client 2^64 buckets; its /64 is one key, as an IPv4 address is.
pub fn rate_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        v4 @ IpAddr::V4(_) => v4,
        v6 => IpNet::mask(v6, 64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn proxies(nets: &[&str], header: ForwardedHeader) -> TrustedProxies {
        TrustedProxies::parse(nets, header).unwrap()
    }

    fn xff(nets: &[&str]) -> TrustedProxies {
        proxies(nets, ForwardedHeader::XForwardedFor)
    }

    #[test]
    fn networks_parse_and_match() {
        let net: IpNet = "10.0.0.0/8".parse().unwrap();
        assert!(net.contains(ip("10.255.1.2")));
        assert!(!net.contains(ip("11.0.0.1")));
        assert!(!net.contains(ip("::1")));
        // A dual-stack listener reports IPv4 peers as IPv4-mapped IPv6.
        assert!(net.contains(ip("::ffff:10.1.2.3")));
        let host: IpNet = "127.0.0.1".parse().unwrap();
        assert_eq!(host.to_string(), "127.0.0.1/32");
        assert!(host.contains(ip("127.0.0.1")) && !host.contains(ip("127.0.0.2")));
        let v6: IpNet = "fd00::/8".parse().unwrap();
        assert!(v6.contains(ip("fd12::1")) && !v6.contains(ip("fe80::1")));
        let all: IpNet = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("203.0.113.9")));
    }

    #[test]
    fn bad_networks_say_what_is_wrong() {
        let err = |s: &str| s.parse::<IpNet>().unwrap_err().to_string();
        assert!(err("10.0.0.1/8").contains("did you mean \"10.0.0.0/8\""));
        assert!(err("10.0.0.0/33").contains("at most 32"));
        assert!(err("::/129").contains("at most 128"));
        assert!(err("proxy.local").contains("not an IP address"));
        assert!(err("10.0.0.0/-1").contains("not an IP address"));
        assert!(err("10.0.0.0/").contains("not an IP address"));
        assert!(err("").contains("not an IP address"));
        let list = TrustedProxies::parse(&["127.0.0.1/32", "nope"], ForwardedHeader::default());
        assert_eq!(list, Err(NetError::Syntax("nope".to_owned())));
    }

    #[test]
    fn untrusted_peer_cannot_choose_its_address() {
        let t = xff(&["10.0.0.0/8"]);
        assert_eq!(
            resolve_lines(ip("203.0.113.5"), &["198.51.100.1"], &t),
            ip("203.0.113.5")
        );
        // Nothing trusted (the default): the header never counts.
        let none = TrustedProxies::default();
        assert_eq!(
            resolve_lines(ip("127.0.0.1"), &["198.51.100.1"], &none),
            ip("127.0.0.1")
        );
    }

    #[test]
    fn trusted_peer_gives_the_rightmost_untrusted_hop() {
        let t = xff(&["127.0.0.1/32", "10.0.0.0/8"]);
        let peer = ip("127.0.0.1");
        assert_eq!(resolve_lines(peer, &["203.0.113.7"], &t), ip("203.0.113.7"));
        // A client's own made-up entries sit left of the one the proxy appended.
        assert_eq!(
            resolve_lines(peer, &["1.2.3.4, 203.0.113.7"], &t),
            ip("203.0.113.7")
        );
        // Trusted hops (a load balancer behind the proxy) are skipped.
        assert_eq!(
            resolve_lines(peer, &["1.2.3.4, 203.0.113.7, 10.1.1.1"], &t),
            ip("203.0.113.7")
        );
        // Several header lines are one list, in order.
        assert_eq!(
            resolve_lines(peer, &["1.2.3.4", "203.0.113.7", " 10.1.1.1 "], &t),
            ip("203.0.113.7")
        );
        // Ports and brackets, as some proxies write them.
        assert_eq!(
            resolve_lines(peer, &["[2001:db8::7]:4711"], &t),
            ip("2001:db8::7")
        );
        assert_eq!(
            resolve_lines(peer, &["203.0.113.7:80"], &t),
            ip("203.0.113.7")
        );
        // Everyone on the proxies' own network: the leftmost is the client.
        assert_eq!(
            resolve_lines(peer, &["10.0.0.5, 10.0.0.1"], &t),
            ip("10.0.0.5")
        );
    }

    #[test]
    fn malformed_or_missing_headers_fall_back_to_the_peer() {
        let t = xff(&["127.0.0.1/32"]);
        let peer = ip("127.0.0.1");
        for bad in [
            "",
            "unknown",
            "203.0.113.7,",
            "not-an-ip",
            "203.0.113.7 junk",
        ] {
            assert_eq!(resolve_lines(peer, &[bad], &t), peer, "{bad:?}");
        }
        assert_eq!(resolve_lines(peer, &[], &t), peer);
        // Garbage left of the client's entry is never read.
        assert_eq!(
            resolve_lines(peer, &["garbage, 203.0.113.7"], &t),
            ip("203.0.113.7")
        );
        // A chain of trusted hops longer than any deployment has is not walked to the end.
        let long = vec!["127.0.0.1"; MAX_HOPS + 1].join(",");
        assert_eq!(
            resolve_lines(peer, &[&format!("203.0.113.7,{long}")], &t),
            peer
        );
    }

    #[test]
    fn forwarded_header_of_rfc_7239() {
        let t = proxies(&["127.0.0.1/32"], ForwardedHeader::Forwarded);
        let peer = ip("127.0.0.1");
        assert_eq!(
            resolve_lines(
                peer,
                &["for=1.2.3.4, for=203.0.113.7;proto=https;by=127.0.0.1"],
                &t
            ),
            ip("203.0.113.7")
        );
        assert_eq!(
            resolve_lines(peer, &[r#"For="[2001:db8:cafe::17]:4711""#], &t),
            ip("2001:db8:cafe::17")
        );
        for bad in [
            "for=unknown",
            "for=_hidden",
            "proto=https",
            r#"for="1.2.3.4"#,
        ] {
            assert_eq!(resolve_lines(peer, &[bad], &t), peer, "{bad:?}");
        }
        // X-Forwarded-For is not read when the proxies write Forwarded.
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", "203.0.113.9".parse().unwrap());
        assert_eq!(resolve(peer, &headers, &t), peer);
        headers.insert("forwarded", "for=203.0.113.8".parse().unwrap());
        assert_eq!(resolve(peer, &headers, &t), ip("203.0.113.8"));
    }

    #[test]
    fn header_map_lines_are_read_in_order() {
        let t = xff(&["127.0.0.0/8"]);
        let mut headers = HeaderMap::new();
        headers.append("x-forwarded-for", "1.2.3.4".parse().unwrap());
        headers.append("x-forwarded-for", "203.0.113.7".parse().unwrap());
        assert_eq!(resolve(ip("127.0.0.2"), &headers, &t), ip("203.0.113.7"));
        // Bytes that are not text make the header unreadable: the peer.
        let mut opaque = HeaderMap::new();
        opaque.insert(
            "x-forwarded-for",
            reqwest::header::HeaderValue::from_bytes(b"203.0.113.7\xff").unwrap(),
        );
        assert_eq!(resolve(ip("127.0.0.2"), &opaque, &t), ip("127.0.0.2"));
    }

    #[test]
    fn rate_keys_group_an_ipv6_slash_64() {
        assert_eq!(rate_key(ip("203.0.113.7")), ip("203.0.113.7"));
        assert_eq!(rate_key(ip("::ffff:203.0.113.7")), ip("203.0.113.7"));
        assert_eq!(rate_key(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(
            rate_key(ip("2001:db8:1:2:ffff::9")),
            rate_key(ip("2001:db8:1:2::1"))
        );
        assert_ne!(
            rate_key(ip("2001:db8:1:3::1")),
            rate_key(ip("2001:db8:1:2::1"))
        );
    }
}
