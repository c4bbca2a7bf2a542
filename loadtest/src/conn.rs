//! One WebRTC connection of a load client: a sans-IO str0m `Rtc` in RTP mode and its own UDP
//! socket (the SFU tells peers apart by source address, so each connection needs its 5-tuple).
//!
//! RTP mode hands packets over as they arrive: no jitter buffer, no depacketising, no decoding —
//! a pupil costs the SRTP decryption and the bookkeeping, which is what lets one process play
//! hundreds of pupils.

use std::net::SocketAddr;
use std::time::Instant;

use str0m::net::{DatagramRecv, Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc, RtcConfig, RtcError};
use thiserror::Error;
use tokio::net::UdpSocket;

#[derive(Debug, Error)]
pub enum ConnError {
    #[error("socket: {0}")]
    Socket(#[from] std::io::Error),
    #[error("webrtc: {0}")]
    Rtc(#[from] RtcError),
    #[error("sdp: {0}")]
    Sdp(String),
    #[error("candidate: {0}")]
    Candidate(String),
    #[error("webrtc-rs: {0}")]
    WebrtcRs(#[from] webrtc::error::Error),
    #[error("not supported: {0}")]
    Unsupported(&'static str),
}

/// Largest datagram read.
pub const RECV_BUF: usize = 2048;

pub struct Conn {
    pub rtc: Rtc,
    /// Receives (through tokio's reactor).
    pub socket: UdpSocket,
    /// Sends: the same socket, written directly. tokio's `try_send_to` refuses to send until its
    /// reactor has seen the new socket become writable, so the first datagram of every connection
    /// (its first ICE check) was dropped, and ICE waited 250 ms for the retransmission.
    sender: std::net::UdpSocket,
    pub local: SocketAddr,
    /// When the `Rtc` wants an `Input::Timeout`.
    pub deadline: Instant,
    pub connected: bool,
    /// When ICE and DTLS were done (`Event::Connected`).
    pub connected_at: Option<Instant>,
    /// Datagrams that could not be sent (socket buffer full).
    pub send_errors: u64,
    /// RTP datagrams sent (not RTCP, STUN or DTLS).
    pub rtp_sent: u64,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn").field("local", &self.local).finish()
    }
}

/// The `Rtc` configuration of every load client: RTP mode, Opus and VP8 only.
pub fn rtc_config() -> RtcConfig {
    RtcConfig::new()
        .set_rtp_mode(true)
        .clear_codecs()
        .enable_opus(true, false)
        .enable_vp8(true)
}

impl Conn {
    /// Binds a fresh UDP socket on `ip` and announces it as the only (host) candidate.
    pub fn bind(ip: std::net::IpAddr, config: RtcConfig) -> Result<Conn, ConnError> {
        let std_socket = std::net::UdpSocket::bind(SocketAddr::new(ip, 0))?;
        std_socket.set_nonblocking(true)?;
        let sender = std_socket.try_clone()?;
        let socket = UdpSocket::from_std(std_socket)?;
        let local = socket.local_addr()?;
        let now = Instant::now();
        let mut rtc = config.build(now);
        let candidate =
            Candidate::host(local, "udp").map_err(|e| ConnError::Candidate(e.to_string()))?;
        rtc.add_local_candidate(candidate);
        Ok(Conn {
            rtc,
            socket,
            sender,
            local,
            deadline: now,
            connected: false,
            connected_at: None,
            send_errors: 0,
            rtp_sent: 0,
        })
    }

    /// Feeds one datagram to the `Rtc`. Garbage is ignored, as a browser would.
    pub fn receive(
        &mut self,
        now: Instant,
        source: SocketAddr,
        data: &[u8],
    ) -> Result<(), ConnError> {
        let Ok(contents) = DatagramRecv::try_from(data) else {
            return Ok(());
        };
        let input = Input::Receive(
            now,
            Receive {
                proto: Protocol::Udp,
                source,
                destination: self.local,
                contents,
            },
        );
        self.rtc.handle_input(input)?;
        Ok(())
    }

    /// Advances time if the deadline passed.
    pub fn tick(&mut self, now: Instant) -> Result<(), ConnError> {
        if now >= self.deadline {
            self.rtc.handle_input(Input::Timeout(now))?;
        }
        Ok(())
    }

    /// Sends one datagram now. Non-blocking: a full socket buffer drops it like a congested link
    /// would, rather than stalling every client of this thread.
    fn send(&mut self, datagram: &[u8], destination: SocketAddr) {
        if self.sender.send_to(datagram, destination).is_err() {
            self.send_errors += 1;
        } else if crate::media::is_rtp(datagram) {
            self.rtp_sent += 1;
        }
    }

    /// Drains the `Rtc`: sends its datagrams, hands its events to `on_event`, and remembers the
    /// next deadline.
    pub fn drain(&mut self, mut on_event: impl FnMut(&mut Rtc, Event)) -> Result<(), ConnError> {
        loop {
            match self.rtc.poll_output()? {
                Output::Timeout(at) => {
                    self.deadline = at;
                    return Ok(());
                }
                Output::Transmit(t) => self.send(&t.contents, t.destination),
                Output::Event(event) => {
                    if matches!(event, Event::Connected) {
                        self.connected = true;
                        self.connected_at.get_or_insert_with(Instant::now);
                    }
                    on_event(&mut self.rtc, event);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_new_connection_sends_its_first_datagram_at_once() {
        // The first datagram of a connection is its first ICE check; losing it cost every join
        // 250 ms (tokio's `try_send_to` refuses until its reactor has seen the socket writable).
        let receiver = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        receiver
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .expect("timeout");
        let mut conn = Conn::bind("127.0.0.1".parse().expect("ip"), rtc_config()).expect("conn");
        conn.send(b"first", receiver.local_addr().expect("addr"));
        assert_eq!(conn.send_errors, 0, "the first datagram was refused");
        let mut buf = [0u8; 16];
        let (n, from) = receiver.recv_from(&mut buf).expect("the first datagram");
        assert_eq!((&buf[..n], from), (&b"first"[..], conn.local));
    }
}
