//! Which peer connection a datagram on the shared UDP port belongs to.
//!
//! A STUN binding request names its target in the USERNAME attribute (`<our ufrag>:<their
//! ufrag>`, RFC 8445 §7.2.2), so it is routed by our ICE ufrag. Everything else (DTLS, SRTP,
//! SRTCP) is routed by source address. Both are map lookups; no datagram is ever offered to every
//! peer in turn. ICE-TCP packets are routed the same way, by the connection they came on: with one
//! listening socket, the client's address and port name the connection, and [`Transport`] keeps a
//! TCP connection apart from a UDP source that happens to share its address and port.
//!
//! An address is bound to a peer only when that peer's `Rtc` answers a STUN request sent from it
//! ([`Demuxer::confirm`]): str0m answers only requests whose MESSAGE-INTEGRITY proves knowledge of
//! the ICE password, so a spoofed request cannot steal or evict another client's address. Each
//! peer keeps at most [`MAX_ADDRESSES_PER_PEER`] addresses.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::SocketAddr;

/// Candidate pairs a client may probe from (IPv4, IPv6, a changed NAT binding, …).
pub const MAX_ADDRESSES_PER_PEER: usize = 4;

const STUN_HEADER: usize = 20;
const STUN_MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];
const STUN_ATTR_USERNAME: u16 = 0x0006;

/// How a packet reached the media plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// A datagram on the UDP media socket.
    Udp,
    /// A frame on an ICE-TCP connection (RFC 6544).
    Tcp,
}

/// A client's transport address: where its packets come from and ours go.
pub type Route = (Transport, SocketAddr);

/// Routes datagrams to peers of key type `K`.
#[derive(Debug)]
pub struct Demuxer<K> {
    by_ufrag: HashMap<String, K>,
    by_addr: HashMap<Route, K>,
    addrs_of: HashMap<K, Vec<Route>>,
}

/// Why a datagram has no peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unroutable {
    /// A STUN message whose USERNAME names no peer (or has none).
    UnknownUfrag,
    /// Not STUN, and from an address no peer has used.
    UnknownAddress,
}

impl<K: Copy + Eq + Hash> Default for Demuxer<K> {
    fn default() -> Self {
        Demuxer {
            by_ufrag: HashMap::new(),
            by_addr: HashMap::new(),
            addrs_of: HashMap::new(),
        }
    }
}

impl<K: Copy + Eq + Hash> Demuxer<K> {
    /// Registers a peer by the local ICE ufrag it answers to.
    pub fn insert(&mut self, ufrag: &str, key: K) {
        self.by_ufrag.insert(ufrag.to_owned(), key);
    }

    /// The peer now answers to `new` instead of `old` (an ICE restart); its addresses stay.
    pub fn rename(&mut self, old: &str, new: &str, key: K) {
        if self.by_ufrag.get(old) == Some(&key) {
            self.by_ufrag.remove(old);
        }
        self.by_ufrag.insert(new.to_owned(), key);
    }

    /// Forgets a peer: its ufrag and every address learned for it.
    pub fn remove(&mut self, ufrag: &str, key: K) {
        if self.by_ufrag.get(ufrag) == Some(&key) {
            self.by_ufrag.remove(ufrag);
        }
        for addr in self.addrs_of.remove(&key).unwrap_or_default() {
            if self.by_addr.get(&addr) == Some(&key) {
                self.by_addr.remove(&addr);
            }
        }
    }

    /// The peer for a UDP datagram from `source`.
    pub fn route(&self, source: SocketAddr, datagram: &[u8]) -> Result<K, Unroutable> {
        self.route_via((Transport::Udp, source), datagram)
    }

    /// The peer for a packet that came by `source`.
    pub fn route_via(&self, source: Route, datagram: &[u8]) -> Result<K, Unroutable> {
        if is_stun(datagram) {
            return stun_local_ufrag(datagram)
                .and_then(|ufrag| self.by_ufrag.get(ufrag))
                .copied()
                .ok_or(Unroutable::UnknownUfrag);
        }
        self.by_addr
            .get(&source)
            .copied()
            .ok_or(Unroutable::UnknownAddress)
    }

    /// Number of registered peers.
    pub fn len(&self) -> usize {
        self.by_ufrag.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_ufrag.is_empty()
    }

    /// Called for every UDP datagram a peer sends: a STUN message (an authenticated binding
    /// response) to `destination` binds that address to the peer.
    pub fn confirm(&mut self, key: K, destination: SocketAddr, datagram: &[u8]) -> bool {
        self.confirm_via(key, (Transport::Udp, destination), datagram)
    }

    /// [`Demuxer::confirm`] for a packet sent by `destination`. True when this bound the
    /// address anew (other shards are then told, `shard::cross`).
    pub fn confirm_via(&mut self, key: K, destination: Route, datagram: &[u8]) -> bool {
        is_stun(datagram) && self.learn(destination, key)
    }

    /// Binds an address another demultiplexer confirmed (a shard's table of the peers of other
    /// shards, kept from their owners' word).
    pub fn bind(&mut self, source: Route, key: K) {
        self.learn(source, key);
    }

    /// Whether packets from `source` reach a peer now (an ICE-TCP connection that no longer
    /// does has lost its use).
    pub fn is_bound(&self, source: Route) -> bool {
        self.by_addr.contains_key(&source)
    }

    fn learn(&mut self, source: Route, key: K) -> bool {
        match self.by_addr.get(&source) {
            Some(k) if *k == key => return false,
            // The address moved to another peer (a reused port): take it from the old one.
            Some(old) => {
                let old = *old;
                if let Some(list) = self.addrs_of.get_mut(&old) {
                    list.retain(|a| *a != source);
                }
            }
            None => {}
        }
        let list = self.addrs_of.entry(key).or_default();
        if list.len() >= MAX_ADDRESSES_PER_PEER {
            let oldest = list.remove(0);
            self.by_addr.remove(&oldest);
        }
        list.push(source);
        self.by_addr.insert(source, key);
        true
    }
}

/// RFC 5389 §6: first two bits zero and the magic cookie.
fn is_stun(d: &[u8]) -> bool {
    d.len() >= STUN_HEADER && d[0] & 0xc0 == 0 && d[4..8] == STUN_MAGIC_COOKIE
}

/// The part of USERNAME before the colon: the ufrag of the side receiving the request.
fn stun_local_ufrag(d: &[u8]) -> Option<&str> {
    let declared = usize::from(u16::from_be_bytes([d[2], d[3]]));
    let end = (STUN_HEADER + declared).min(d.len());
    let mut i = STUN_HEADER;
    while i + 4 <= end {
        let typ = u16::from_be_bytes([d[i], d[i + 1]]);
        let len = usize::from(u16::from_be_bytes([d[i + 2], d[i + 3]]));
        let value = d.get(i + 4..i + 4 + len)?;
        if typ == STUN_ATTR_USERNAME {
            let username = std::str::from_utf8(value).ok()?;
            return username.split(':').next();
        }
        // Attributes are padded to four bytes.
        i += 4 + len.div_ceil(4) * 4;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    /// A binding request carrying USERNAME and one more attribute after it.
    fn binding_request(username: &str) -> Vec<u8> {
        let mut attrs = Vec::new();
        // An attribute before USERNAME, to exercise the walk (PRIORITY, 4 bytes).
        attrs.extend_from_slice(&[0x00, 0x24, 0x00, 0x04, 1, 2, 3, 4]);
        attrs.extend_from_slice(&STUN_ATTR_USERNAME.to_be_bytes());
        attrs.extend_from_slice(&(username.len() as u16).to_be_bytes());
        attrs.extend_from_slice(username.as_bytes());
        while attrs.len() % 4 != 0 {
            attrs.push(0);
        }
        attrs.extend_from_slice(&[0x80, 0x28, 0x00, 0x04, 9, 9, 9, 9]); // FINGERPRINT
        let mut d = vec![0x00, 0x01];
        d.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
        d.extend_from_slice(&STUN_MAGIC_COOKIE);
        d.extend_from_slice(&[7; 12]);
        d.extend_from_slice(&attrs);
        d
    }

    #[test]
    fn stun_routes_by_ufrag_and_teaches_the_address() {
        let mut dm = Demuxer::default();
        dm.insert("srvA", 1u32);
        dm.insert("srvB", 2u32);
        let dtls = [22u8, 0xfe, 0xfd, 0, 0];
        assert_eq!(dm.route(addr(5000), &dtls), Err(Unroutable::UnknownAddress));
        assert_eq!(dm.route(addr(5000), &binding_request("srvB:cli1")), Ok(2));
        assert_eq!(
            dm.route(addr(5000), &dtls),
            Err(Unroutable::UnknownAddress),
            "not yet answered"
        );
        dm.confirm(2, addr(5000), &binding_request("cli1:srvB"));
        assert_eq!(dm.route(addr(5000), &dtls), Ok(2));
        assert_eq!(dm.route(addr(5001), &binding_request("srvA:x")), Ok(1));
        // Only STUN the peer sends binds an address; media towards it does not.
        dm.confirm(1, addr(5001), &dtls);
        assert_eq!(dm.route(addr(5001), &dtls), Err(Unroutable::UnknownAddress));
        dm.confirm(1, addr(5001), &binding_request("x:srvA"));
        assert_eq!(dm.route(addr(5001), &dtls), Ok(1));
        assert_eq!(
            dm.route(addr(5002), &binding_request("nobody:x")),
            Err(Unroutable::UnknownUfrag)
        );
    }

    #[test]
    fn an_ice_restart_and_a_new_address_keep_routing_to_the_same_peer() {
        let mut dm = Demuxer::default();
        dm.insert("srvA", 1u32);
        let dtls = [22u8, 0xfe, 0xfd, 0, 0];
        dm.confirm(1, addr(20), &binding_request("x:srvA"));
        dm.rename("srvA", "srvA2", 1);
        assert_eq!(
            dm.route(addr(20), &binding_request("srvA:x")),
            Err(Unroutable::UnknownUfrag)
        );
        assert_eq!(dm.route(addr(20), &dtls), Ok(1), "learned addresses stay");
        // Wi-Fi to LTE: a check from a new address, answered, moves media there at once.
        assert_eq!(dm.route(addr(21), &binding_request("srvA2:y")), Ok(1));
        dm.confirm(1, addr(21), &binding_request("y:srvA2"));
        assert_eq!(dm.route(addr(21), &dtls), Ok(1));
        assert_eq!(dm.len(), 1);
    }

    #[test]
    fn malformed_stun_is_unroutable_not_a_panic() {
        let mut dm = Demuxer::default();
        dm.insert("srvA", 1u32);
        let mut d = binding_request("srvA:x");
        dm.confirm(1, addr(9), &[0u8; 3]);
        assert_eq!(
            dm.route(addr(9), &[0x80, 0, 0, 0]),
            Err(Unroutable::UnknownAddress)
        );
        // Claim a USERNAME longer than the datagram.
        d[20 + 8 + 2] = 0xff;
        assert_eq!(dm.route(addr(1), &d), Err(Unroutable::UnknownUfrag));
        // Declared message length beyond the datagram.
        let mut d = binding_request("srvA:x");
        d[2] = 0xff;
        assert_eq!(dm.route(addr(1), &d), Ok(1));
        // Short, random and empty datagrams.
        for junk in [&[][..], &[0u8; 3][..], &[0xffu8; 40][..]] {
            assert!(dm.route(addr(2), junk).is_err());
        }
        let mut not_utf8 = binding_request("srvA:x");
        not_utf8[20 + 8 + 4] = 0xff;
        assert_eq!(dm.route(addr(3), &not_utf8), Err(Unroutable::UnknownUfrag));
    }

    #[test]
    fn removal_forgets_ufrag_and_addresses() {
        let mut dm = Demuxer::default();
        dm.insert("srvA", 1u32);
        dm.confirm(1, addr(10), &binding_request("x:srvA"));
        dm.confirm(1, addr(11), &binding_request("x:srvA"));
        dm.remove("srvA", 1);
        assert!(dm.is_empty());
        assert_eq!(
            dm.route(addr(10), &[0x80, 0, 0, 0]),
            Err(Unroutable::UnknownAddress)
        );
        assert_eq!(
            dm.route(addr(11), &binding_request("srvA:x")),
            Err(Unroutable::UnknownUfrag)
        );
    }

    #[test]
    fn addresses_per_peer_are_bounded_and_can_move() {
        let mut dm = Demuxer::default();
        dm.insert("srvA", 1u32);
        dm.insert("srvB", 2u32);
        for port in 0..10 {
            dm.confirm(1, addr(100 + port), &binding_request("x:srvA"));
        }
        let rtp = [0x80u8, 96, 0, 1];
        assert_eq!(dm.route(addr(100), &rtp), Err(Unroutable::UnknownAddress));
        assert_eq!(dm.route(addr(109), &rtp), Ok(1));
        // Port 109 is reused by another peer's client, which authenticates.
        assert_eq!(dm.route(addr(109), &binding_request("srvB:y")), Ok(2));
        dm.confirm(2, addr(109), &binding_request("y:srvB"));
        assert_eq!(dm.route(addr(109), &rtp), Ok(2));
        dm.remove("srvA", 1);
        assert_eq!(
            dm.route(addr(109), &rtp),
            Ok(2),
            "removing A keeps B's address"
        );
    }

    #[test]
    fn tcp_connections_are_apart_from_udp_sources() {
        let mut dm = Demuxer::default();
        dm.insert("srvA", 1u32);
        dm.insert("srvB", 2u32);
        let tcp = (Transport::Tcp, addr(7000));
        let rtp = [0x80u8, 96, 0, 1];
        assert_eq!(dm.route_via(tcp, &binding_request("srvA:x")), Ok(1));
        assert!(!dm.is_bound(tcp));
        dm.confirm_via(1, tcp, &binding_request("x:srvA"));
        assert!(dm.is_bound(tcp));
        assert_eq!(dm.route_via(tcp, &rtp), Ok(1));
        // The same address and port over UDP is another client's (or nobody's).
        assert_eq!(dm.route(addr(7000), &rtp), Err(Unroutable::UnknownAddress));
        dm.confirm(2, addr(7000), &binding_request("y:srvB"));
        assert_eq!(dm.route(addr(7000), &rtp), Ok(2));
        assert_eq!(dm.route_via(tcp, &rtp), Ok(1));
        dm.remove("srvA", 1);
        assert!(!dm.is_bound(tcp));
        assert_eq!(dm.route(addr(7000), &rtp), Ok(2));
    }
}
