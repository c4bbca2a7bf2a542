//! A UDP datagram on the shared media port, as the media thread handles it
//! (`sfu/src/shard/mod.rs`, `handle_datagram`): routed to a peer by the demultiplexer (a STUN
//! request by the ufrag in its USERNAME, anything else by source address), then classified by
//! str0m as STUN, DTLS, RTP or RTCP.
//!
//! Properties: never panics; routing and address learning agree on what is STUN; a peer that
//! answers STUN from many addresses is reachable from at most `MAX_ADDRESSES_PER_PEER` of them.
#![no_main]

use std::net::SocketAddr;

use classroom_sfu::core::demux::{Demuxer, MAX_ADDRESSES_PER_PEER, Unroutable};
use libfuzzer_sys::fuzz_target;
use str0m::net::DatagramRecv;

/// Two peers, by the server ufrags that the seed binding requests (captured from a real session)
/// name, so that the fuzzer starts from datagrams that route.
const PEERS: [(&str, u8); 2] = [("xlcmh0X6UF6lt3tS", 1), ("Bgv8xad0GfAAZMUr", 2)];

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([192, 0, 2, 1], port))
}

/// Non-STUN bytes (an RTP header) to ask which peer an address is bound to.
const RTP: [u8; 12] = [0x80, 96, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1];

fuzz_target!(|data: &[u8]| {
    let mut demux = Demuxer::default();
    for (ufrag, key) in PEERS {
        demux.insert(ufrag, key);
    }
    let from = addr(1000);
    let routed = demux.route(from, data);
    let is_stun = routed != Err(Unroutable::UnknownAddress);
    if let Ok(key) = routed {
        assert!(PEERS.iter().any(|(_, k)| *k == key));
    }

    // Only STUN a peer sends binds the destination to it; then media from there reaches it.
    demux.confirm(1, from, data);
    assert_eq!(demux.route(from, &RTP).is_ok(), is_stun);

    // str0m reads every routed datagram; it must refuse what it cannot read, not panic.
    let _ = DatagramRecv::try_from(data);

    // The fuzzer's bytes as a script of answered binding requests from many ports: each peer
    // stays reachable from at most MAX_ADDRESSES_PER_PEER of them, its newest.
    if !is_stun {
        return;
    }
    demux.remove(PEERS[0].0, PEERS[0].1);
    demux.insert(PEERS[0].0, PEERS[0].1);
    let ports: Vec<u16> = data.iter().take(64).map(|&b| 2000 + u16::from(b)).collect();
    for (i, &port) in ports.iter().enumerate() {
        let key = PEERS[i % 2].1;
        demux.confirm(key, addr(port), data);
    }
    for (_, key) in PEERS {
        let reachable = (2000..2256)
            .filter(|&p| demux.route(addr(p), &RTP) == Ok(key))
            .count();
        assert!(reachable <= MAX_ADDRESSES_PER_PEER, "{reachable} addresses");
    }
    if let Some(&last) = ports.last() {
        let last_key = PEERS[(ports.len() - 1) % 2].1;
        assert_eq!(demux.route(addr(last), &RTP), Ok(last_key));
    }
});
