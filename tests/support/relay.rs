//! A userspace UDP relay that shapes one client's media path, like a home connection would.
//!
//! The relay listens on 127.0.0.1 and stands between one client and the server's media port:
//! datagrams from the server go to the client ("down"), everything else goes to the server
//! ("up") and the first such source is taken as the client. Only one socket is used, so the server
//! sees the relay's address as the client's; being ICE-lite it answers wherever the
//! authenticated STUN came from. To put a subscriber behind the relay, rewrite the server's
//! `a=candidate` lines in the offers it applies ([`rewrite_candidates`]).
//!
//! Each direction is shaped on its own ([`Shaping`]), changeable at any time:
//!
//! * **rate**: a bottleneck link. Packets are serialised at `rate_bps`; a packet that finds more
//!   than `queue_ms` worth of bytes waiting is dropped (tail drop, a bounded buffer — what a
//!   real bottleneck does, and what a bandwidth estimator has to notice).
//! * **burst**: instead of the serialising bottleneck, a token bucket ([`TokenBucket`], the
//!   semantics of Linux's `tc … tbf rate R burst B latency L`): up to B bytes pass at once, then
//!   the rate; what waits is bounded (tail drop) as tbf bounds it. Many home lines, mobile plans
//!   throttled after their cap and ISP policers shape this way, and a probe that fits in the
//!   burst sees a much faster line than there is.
//! * **delay** and **jitter**: added after the bottleneck, uniformly in `delay ± jitter`, but never
//!   reordering packets of one direction.
//! * **loss**: random, independent, before the bottleneck.
//!
//! Counters per direction ([`RelayStats`]) tell what the relay did.

use anyhow::{Context, Result};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How one direction of the relay is shaped.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shaping {
    /// Bottleneck rate in bits per second (`None`: unlimited).
    pub rate_bps: Option<u64>,
    /// The bottleneck's buffer, as time at `rate_bps` (at least 4 full-size packets).
    pub queue_ms: u64,
    /// One-way delay added after the bottleneck.
    pub delay: Duration,
    /// Each packet's delay is uniform in `delay ± jitter` (without reordering).
    pub jitter: Duration,
    /// Random loss, 0.0..=1.0.
    pub loss: f64,
    /// With `rate_bps`: a token bucket of this many bytes instead of the serialising bottleneck
    /// (`queue_ms` is then tbf's `latency`).
    pub burst_bytes: Option<u64>,
}

impl Shaping {
    /// No shaping at all.
    pub const NONE: Shaping = Shaping {
        rate_bps: None,
        queue_ms: 200,
        delay: Duration::ZERO,
        jitter: Duration::ZERO,
        loss: 0.0,
        burst_bytes: None,
    };

    pub fn rate(mut self, bps: u64) -> Self {
        self.rate_bps = Some(bps);
        self
    }

    pub fn unlimited(mut self) -> Self {
        self.rate_bps = None;
        self
    }

    pub fn delay(mut self, delay: Duration, jitter: Duration) -> Self {
        self.delay = delay;
        self.jitter = jitter;
        self
    }

    pub fn loss(mut self, loss: f64) -> Self {
        self.loss = loss;
        self
    }

    pub fn queue_ms(mut self, ms: u64) -> Self {
        self.queue_ms = ms;
        self
    }

    /// A token bucket like `tc … tbf rate R burst B latency L`: `rate_bps` is R, `bytes` is B
    /// and `queue_ms` is L (see [`TokenBucket`]).
    pub fn burst(mut self, bytes: u64) -> Self {
        self.burst_bytes = Some(bytes);
        self
    }

    /// The token bucket this shaping asks for, if any.
    fn token_bucket(&self) -> Option<TokenBucket> {
        let rate = self.rate_bps?;
        let burst = self.burst_bytes?;
        Some(TokenBucket::new(
            rate,
            burst,
            Duration::from_millis(self.queue_ms),
        ))
    }

    /// The bottleneck buffer in bytes.
    fn queue_bytes(&self) -> Option<f64> {
        self.rate_bps
            .map(|rate| (rate as f64 / 8.0 * self.queue_ms as f64 / 1000.0).max(4.0 * 1500.0))
    }
}

/// A token bucket filter with `tc … tbf rate R burst B latency L` semantics, as a value: it
/// decides, for each datagram arriving at a given time, when it leaves or that it is dropped.
/// Tokens (bytes) accrue at R up to B; a datagram leaves, in arrival order, as soon as the bucket
/// holds its length (at once when the line was idle long enough: a burst of up to B bytes passes
/// at full speed), taking that many tokens. Datagrams waiting for tokens are bounded as tc bounds
/// tbf's queue, `limit = R × L + B` bytes: one that would make the waiting bytes exceed it is
/// dropped (tail drop). The bucket starts full, as an idle line's does.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    /// Bytes per second.
    rate: f64,
    burst: f64,
    limit: f64,
    /// Tokens in the bucket at `tokens_at` (after the latest departure).
    tokens: f64,
    tokens_at: Option<Instant>,
    /// Departure time and length of each datagram admitted that may still be waiting.
    waiting: VecDeque<(Instant, usize)>,
}

impl TokenBucket {
    pub fn new(rate_bps: u64, burst_bytes: u64, latency: Duration) -> Self {
        let rate = rate_bps as f64 / 8.0;
        let burst = burst_bytes as f64;
        Self {
            rate,
            burst,
            limit: rate * latency.as_secs_f64() + burst,
            tokens: burst,
            tokens_at: None,
            waiting: VecDeque::new(),
        }
    }

    /// tc's `limit`: the most bytes that may wait for tokens.
    pub fn limit_bytes(&self) -> u64 {
        self.limit as u64
    }

    /// Bytes admitted at or before `now` that have not left by `now`.
    pub fn backlog(&mut self, now: Instant) -> usize {
        while self.waiting.front().is_some_and(|(at, _)| *at <= now) {
            self.waiting.pop_front();
        }
        self.waiting.iter().map(|(_, len)| len).sum()
    }

    /// When a datagram of `len` bytes arriving at `now` leaves the bucket, or `None`: dropped
    /// because the queue is full. Calls come in arrival order (`now` never goes backwards).
    pub fn admit(&mut self, now: Instant, len: usize) -> Option<Instant> {
        if (self.backlog(now) + len) as f64 > self.limit {
            return None;
        }
        // FIFO: it cannot leave before the datagram ahead of it, whose departure is when the
        // token count was last settled.
        let start = self.tokens_at.map_or(now, |at| at.max(now));
        let accrued = self
            .tokens_at
            .map_or(0.0, |at| (start - at).as_secs_f64() * self.rate);
        let tokens = (self.tokens + accrued).min(self.burst);
        let len_f = len as f64;
        let (departure, left) = if tokens >= len_f {
            (start, tokens - len_f)
        } else {
            let wait = Duration::from_secs_f64((len_f - tokens) / self.rate);
            (start + wait, 0.0)
        };
        self.tokens = left;
        self.tokens_at = Some(departure);
        self.waiting.push_back((departure, len));
        Some(departure)
    }
}

/// What the relay did in one direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirectionStats {
    /// Datagrams that arrived at the relay.
    pub received: u64,
    /// Datagrams delivered to the other side.
    pub forwarded: u64,
    pub forwarded_bytes: u64,
    /// Dropped because the bottleneck buffer was full.
    pub dropped_queue: u64,
    /// Dropped at random.
    pub dropped_loss: u64,
}

impl DirectionStats {
    pub fn dropped(&self) -> u64 {
        self.dropped_queue + self.dropped_loss
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayStats {
    /// Server -> client.
    pub down: DirectionStats,
    /// Client -> server.
    pub up: DirectionStats,
}

/// The shaping state of one direction: the configuration and the bottleneck's clock.
struct Direction {
    shaping: Shaping,
    /// When the bottleneck finishes sending what it has queued.
    link_free_at: Instant,
    /// The token bucket, when the shaping asks for one; kept across shaping changes that keep
    /// the same bucket parameters.
    bucket: Option<TokenBucket>,
    /// The delivery time of the latest packet (deliveries never go backwards).
    last_delivery: Instant,
    stats: DirectionStats,
    /// The first RTP sequence number that arrived on each SSRC, dropped or not: a receiver
    /// whose first packet is later than this knows the stream's start was lost on the way.
    first_seq: HashMap<u32, u16>,
    /// The latest RTP sequence number that arrived on each SSRC. A sender's media stream is
    /// sent in sequence order (resends go on the RTX SSRC), so this is the newest it has sent.
    last_seq: HashMap<u32, u16>,
}

impl Direction {
    fn new(shaping: Shaping) -> Self {
        let now = Instant::now();
        Self {
            bucket: shaping.token_bucket(),
            shaping,
            link_free_at: now,
            last_delivery: now,
            stats: DirectionStats::default(),
            first_seq: HashMap::new(),
            last_seq: HashMap::new(),
        }
    }

    /// Shapes with `shaping` from now on. The token bucket carries on (its tokens and queue)
    /// while its rate, size and latency stay, so that changing only the loss or the delay does
    /// not hand out a fresh burst.
    fn reshape(&mut self, shaping: Shaping) {
        let same_bucket = (shaping.rate_bps, shaping.burst_bytes, shaping.queue_ms)
            == (
                self.shaping.rate_bps,
                self.shaping.burst_bytes,
                self.shaping.queue_ms,
            );
        if !same_bucket {
            self.bucket = shaping.token_bucket();
        }
        self.shaping = shaping;
    }

    fn note_rtp(&mut self, datagram: &[u8]) {
        // RFC 7983 demultiplexing: RTP and RTCP start with version 2; RTCP's packet types
        // 192..=223 show as 64..=95 once the marker bit is masked off.
        if datagram.len() < 12 || datagram[0] >> 6 != 2 || (64..=95).contains(&(datagram[1] & 0x7f))
        {
            return;
        }
        let seq = u16::from_be_bytes([datagram[2], datagram[3]]);
        let ssrc = u32::from_be_bytes([datagram[8], datagram[9], datagram[10], datagram[11]]);
        self.first_seq.entry(ssrc).or_insert(seq);
        self.last_seq.insert(ssrc, seq);
    }

    /// Decides the fate of a datagram of `len` bytes arriving `now`: `Some(delivery time)` or
    /// dropped.
    fn admit(&mut self, now: Instant, len: usize) -> Option<Instant> {
        self.stats.received += 1;
        let shaping = self.shaping;
        if shaping.loss > 0.0 && rand::random::<f64>() < shaping.loss {
            self.stats.dropped_loss += 1;
            return None;
        }
        let departure = match (shaping.rate_bps, shaping.queue_bytes(), &mut self.bucket) {
            (Some(_), _, Some(bucket)) => {
                let Some(departure) = bucket.admit(now, len) else {
                    self.stats.dropped_queue += 1;
                    return None;
                };
                departure
            }
            (Some(rate), Some(limit), None) => {
                let start = self.link_free_at.max(now);
                // Bytes still waiting in the buffer when this packet arrives.
                let backlog = (start - now).as_secs_f64() * rate as f64 / 8.0;
                if backlog + len as f64 > limit {
                    self.stats.dropped_queue += 1;
                    return None;
                }
                let done = start + Duration::from_secs_f64(len as f64 * 8.0 / rate as f64);
                self.link_free_at = done;
                done
            }
            _ => {
                // Unlimited: the link is free as soon as it has sent what was queued before.
                self.link_free_at = self.link_free_at.max(now);
                self.link_free_at
            }
        };
        let jitter = if shaping.jitter.is_zero() {
            0.0
        } else {
            (rand::random::<f64>() * 2.0 - 1.0) * shaping.jitter.as_secs_f64()
        };
        let delay = (shaping.delay.as_secs_f64() + jitter).max(0.0);
        let delivery = (departure + Duration::from_secs_f64(delay)).max(self.last_delivery);
        self.last_delivery = delivery;
        self.stats.forwarded += 1;
        self.stats.forwarded_bytes += len as u64;
        Some(delivery)
    }
}

struct State {
    down: Direction,
    up: Direction,
    client: Option<SocketAddr>,
}

/// A running relay. Dropping it stops it.
pub struct Relay {
    /// Where the client must send (the address to put into the server's candidates).
    pub addr: SocketAddr,
    /// The server's media address.
    pub upstream: SocketAddr,
    state: Arc<Mutex<State>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

type Outgoing = (Instant, Vec<u8>, SocketAddr);

impl Relay {
    /// Starts a relay to `upstream`, shaping server -> client with `down` and client -> server
    /// with `up`.
    pub async fn start(upstream: SocketAddr, down: Shaping, up: Shaping) -> Result<Relay> {
        let socket = UdpSocket::bind("127.0.0.1:0")
            .await
            .context("bind the relay socket")?;
        let addr = socket.local_addr()?;
        let socket = Arc::new(socket);
        let state = Arc::new(Mutex::new(State {
            down: Direction::new(down),
            up: Direction::new(up),
            client: None,
        }));

        // One sender per direction: deliveries of a direction are in time order, so a FIFO
        // channel and a sleep until each one's time suffice.
        let (down_tx, down_rx) = mpsc::unbounded_channel::<Outgoing>();
        let (up_tx, up_rx) = mpsc::unbounded_channel::<Outgoing>();
        let mut tasks = vec![
            tokio::spawn(deliver(Arc::clone(&socket), down_rx)),
            tokio::spawn(deliver(Arc::clone(&socket), up_rx)),
        ];

        let reader_state = Arc::clone(&state);
        tasks.push(tokio::spawn(async move {
            let mut buf = vec![0u8; 65_536];
            loop {
                let Ok((len, from)) = socket.recv_from(&mut buf).await else {
                    // ICMP errors (a peer gone) surface here on some systems; keep going.
                    tokio::task::yield_now().await;
                    continue;
                };
                let now = Instant::now();
                let mut state = reader_state.lock().unwrap();
                if from == upstream {
                    let Some(client) = state.client else {
                        continue;
                    };
                    state.down.note_rtp(&buf[..len]);
                    if let Some(at) = state.down.admit(now, len) {
                        let _ = down_tx.send((at, buf[..len].to_vec(), client));
                    }
                } else {
                    // The client is whoever sends first; another source later replaces it
                    // (a new local candidate), as a NAT binding would.
                    state.client = Some(from);
                    if let Some(at) = state.up.admit(now, len) {
                        let _ = up_tx.send((at, buf[..len].to_vec(), upstream));
                    }
                }
            }
        }));

        Ok(Relay {
            addr,
            upstream,
            state,
            tasks,
        })
    }

    /// Changes the shaping of server -> client from now on (packets already queued keep their
    /// times).
    pub fn set_down(&self, shaping: Shaping) {
        self.state.lock().unwrap().down.reshape(shaping);
    }

    /// Changes the shaping of client -> server from now on.
    pub fn set_up(&self, shaping: Shaping) {
        self.state.lock().unwrap().up.reshape(shaping);
    }

    pub fn down(&self) -> Shaping {
        self.state.lock().unwrap().down.shaping
    }

    pub fn stats(&self) -> RelayStats {
        let state = self.state.lock().unwrap();
        RelayStats {
            down: state.down.stats,
            up: state.up.stats,
        }
    }

    /// The first RTP sequence number the server sent the client on `ssrc` (whether or not the
    /// relay delivered it).
    pub fn first_seq_down(&self, ssrc: u32) -> Option<u16> {
        self.state
            .lock()
            .unwrap()
            .down
            .first_seq
            .get(&ssrc)
            .copied()
    }

    /// The latest RTP sequence number the server sent the client on `ssrc` (whether or not the
    /// relay delivered it).
    pub fn last_seq_down(&self, ssrc: u32) -> Option<u16> {
        self.state.lock().unwrap().down.last_seq.get(&ssrc).copied()
    }

    /// The client's address, once it has sent something.
    pub fn client(&self) -> Option<SocketAddr> {
        self.state.lock().unwrap().client
    }

    /// A rewriter for [`rewrite_candidates`] that points the server's candidates at this relay.
    pub fn sdp_rewriter(&self) -> SdpRewrite {
        let (from, to) = (self.upstream, self.addr);
        Arc::new(move |sdp: &str| rewrite_candidates(sdp, from, to))
    }
}

/// A rewrite applied to each offer's SDP before the client applies it.
pub type SdpRewrite = Arc<dyn Fn(&str) -> String + Send + Sync>;

async fn deliver(socket: Arc<UdpSocket>, mut queue: mpsc::UnboundedReceiver<Outgoing>) {
    while let Some((at, datagram, to)) = queue.recv().await {
        tokio::time::sleep_until(at).await;
        let _ = socket.send_to(&datagram, to).await;
    }
}

/// Replaces the address and port of every `a=candidate` line that names `from` (the server's
/// media address; an unspecified IP in `from` matches any address with its port) by `to`.
pub fn rewrite_candidates(sdp: &str, from: SocketAddr, to: SocketAddr) -> String {
    let mut out = String::with_capacity(sdp.len());
    for line in sdp.split_inclusive('\n') {
        let body = line.trim_end_matches(['\r', '\n']);
        let ending = &line[body.len()..];
        if let Some(rest) = body.strip_prefix("a=candidate:") {
            // foundation component transport priority address port typ ...
            let mut fields: Vec<&str> = rest.split(' ').collect();
            if fields.len() >= 6 {
                let ip_matches = from.ip().is_unspecified() || fields[4] == from.ip().to_string();
                if ip_matches && fields[5] == from.port().to_string() {
                    let ip = to.ip().to_string();
                    let port = to.port().to_string();
                    fields[4] = &ip;
                    fields[5] = &port;
                    out.push_str("a=candidate:");
                    out.push_str(&fields.join(" "));
                    out.push_str(ending);
                    continue;
                }
            }
        }
        out.push_str(line);
    }
    out
}
