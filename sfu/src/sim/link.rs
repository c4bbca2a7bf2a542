//! One direction of a simulated network path, in virtual time.
//!
//! A bottleneck of `rate_bps` with a FIFO of at most `queue_bytes` (a datagram that does not fit
//! is dropped, as a router's tail drop), then `delay` ± `jitter` (never reordering: a datagram
//! leaves no earlier than the one before it), and random loss drawn from a seeded generator, so
//! a run is repeatable. With `burst_bytes`, the bottleneck is a token bucket instead (a cable
//! modem or a `tc tbf` qdisc): up to that many bytes pass at once, then the rate applies. A link
//! can be cut (`set_up(false)`): everything sent on it is lost until it is restored.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// How one direction of a path treats datagrams.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shaping {
    /// Bottleneck rate in bits per second (`None`: unlimited).
    pub rate_bps: Option<u64>,
    /// The bottleneck's buffer, as time at `rate_bps` (at least four full-size packets).
    pub queue_ms: u64,
    /// A token bucket of this many bytes instead of a plain serialising bottleneck.
    pub burst_bytes: Option<usize>,
    /// One-way delay after the bottleneck.
    pub delay: Duration,
    /// Each datagram's delay is uniform in `delay ± jitter` (without reordering).
    pub jitter: Duration,
    /// Random loss, 0.0..=1.0.
    pub loss: f64,
}

impl Shaping {
    /// No shaping: delivered at once.
    pub const NONE: Shaping = Shaping {
        rate_bps: None,
        queue_ms: 200,
        burst_bytes: None,
        delay: Duration::ZERO,
        jitter: Duration::ZERO,
        loss: 0.0,
    };

    pub fn rate(mut self, bps: u64) -> Self {
        self.rate_bps = Some(bps);
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

    /// A token bucket: `rate_bps` on average, up to `bytes` at once.
    pub fn burst(mut self, bytes: usize) -> Self {
        self.burst_bytes = Some(bytes);
        self
    }

    fn queue_bytes(&self) -> usize {
        match self.rate_bps {
            Some(bps) => ((bps as u128 * u128::from(self.queue_ms) / 8_000) as usize).max(4 * 1500),
            None => usize::MAX,
        }
    }
}

/// A datagram on its way.
#[derive(Debug)]
pub struct Datagram {
    pub source: SocketAddr,
    pub destination: SocketAddr,
    pub bytes: Vec<u8>,
}

/// What a link did with what it was given.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LinkStats {
    pub sent: u64,
    pub delivered: u64,
    pub dropped_queue: u64,
    pub dropped_loss: u64,
    pub dropped_down: u64,
}

pub struct Link {
    shaping: Shaping,
    rng: StdRng,
    up: bool,
    /// When the bottleneck is free again (plain) or when the bucket was last filled (bucket).
    busy_until: Option<Instant>,
    tokens: f64,
    /// Departure time and size of every datagram still in the bottleneck's queue.
    queued: VecDeque<(Instant, usize)>,
    queued_bytes: usize,
    in_flight: VecDeque<(Instant, Datagram)>,
    pub stats: LinkStats,
}

impl Link {
    pub fn new(shaping: Shaping, seed: u64) -> Link {
        Link {
            shaping,
            rng: StdRng::seed_from_u64(seed),
            up: true,
            busy_until: None,
            tokens: shaping.burst_bytes.unwrap_or(0) as f64,
            queued: VecDeque::new(),
            queued_bytes: 0,
            in_flight: VecDeque::new(),
            stats: LinkStats::default(),
        }
    }

    /// Changes the shaping from now on (datagrams already on their way keep theirs).
    pub fn reshape(&mut self, shaping: Shaping) {
        self.shaping = shaping;
    }

    /// Cuts the link (`false`) or restores it.
    pub fn set_up(&mut self, up: bool) {
        self.up = up;
    }

    pub fn send(&mut self, now: Instant, datagram: Datagram) {
        self.stats.sent += 1;
        if !self.up {
            self.stats.dropped_down += 1;
            return;
        }
        while self.queued.front().is_some_and(|(left, _)| *left <= now) {
            if let Some((_, len)) = self.queued.pop_front() {
                self.queued_bytes -= len;
            }
        }
        let len = datagram.bytes.len();
        let departure = match self.shaping.rate_bps {
            None => now,
            Some(bps) => {
                if self.queued_bytes + len > self.shaping.queue_bytes() {
                    self.stats.dropped_queue += 1;
                    return;
                }
                let bytes_per_s = bps as f64 / 8.0;
                let start = self.busy_until.map_or(now, |b| b.max(now));
                let departure = match self.shaping.burst_bytes {
                    None => start + Duration::from_secs_f64(len as f64 / bytes_per_s),
                    Some(burst) => {
                        let filled = self
                            .busy_until
                            .map_or(0.0, |b| start.saturating_duration_since(b).as_secs_f64());
                        self.tokens = (self.tokens + filled * bytes_per_s).min(burst as f64);
                        if self.tokens >= len as f64 {
                            self.tokens -= len as f64;
                            start
                        } else {
                            let wait = (len as f64 - self.tokens) / bytes_per_s;
                            self.tokens = 0.0;
                            start + Duration::from_secs_f64(wait)
                        }
                    }
                };
                self.busy_until = Some(departure);
                self.queued.push_back((departure, len));
                self.queued_bytes += len;
                departure
            }
        };
        if self.shaping.loss > 0.0 && self.rng.random::<f64>() < self.shaping.loss {
            self.stats.dropped_loss += 1;
            return;
        }
        let jitter = self.shaping.jitter.as_secs_f64();
        let delay = if jitter > 0.0 {
            let offset = self.rng.random_range(-jitter..=jitter);
            Duration::from_secs_f64((self.shaping.delay.as_secs_f64() + offset).max(0.0))
        } else {
            self.shaping.delay
        };
        let mut arrival = departure + delay;
        if let Some((last, _)) = self.in_flight.back() {
            arrival = arrival.max(*last);
        }
        self.in_flight.push_back((arrival, datagram));
    }

    /// When the next datagram arrives at the far end.
    pub fn next_arrival(&self) -> Option<Instant> {
        self.in_flight.front().map(|(t, _)| *t)
    }

    /// The next datagram that has arrived by `now`.
    pub fn receive(&mut self, now: Instant) -> Option<Datagram> {
        if self.in_flight.front()?.0 > now {
            return None;
        }
        let (_, d) = self.in_flight.pop_front()?;
        self.stats.delivered += 1;
        Some(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn datagram(len: usize) -> Datagram {
        let a: SocketAddr = "10.0.0.1:1".parse().unwrap();
        Datagram {
            source: a,
            destination: a,
            bytes: vec![0; len],
        }
    }

    fn arrivals(link: &mut Link, t0: Instant) -> Vec<Duration> {
        let mut out = Vec::new();
        while let Some(t) = link.next_arrival() {
            link.receive(t).unwrap();
            out.push(t - t0);
        }
        out
    }

    #[test]
    fn a_bottleneck_serialises_and_delays() {
        let t0 = Instant::now();
        // 1000 bytes at 800 kbit/s is 10 ms each.
        let mut link = Link::new(
            Shaping::NONE
                .rate(800_000)
                .delay(Duration::from_millis(5), Duration::ZERO),
            1,
        );
        for _ in 0..3 {
            link.send(t0, datagram(1000));
        }
        assert_eq!(
            arrivals(&mut link, t0),
            [15, 25, 35].map(Duration::from_millis).to_vec()
        );
    }

    #[test]
    fn a_full_queue_drops_the_tail() {
        let t0 = Instant::now();
        // 200 ms at 240 kbit/s is 6000 bytes: the four-packet floor.
        let mut link = Link::new(Shaping::NONE.rate(240_000), 1);
        for _ in 0..6 {
            link.send(t0, datagram(1500));
        }
        assert_eq!(link.stats.dropped_queue, 2);
        assert_eq!(arrivals(&mut link, t0).len(), 4);
    }

    #[test]
    fn a_token_bucket_passes_its_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut link = Link::new(Shaping::NONE.rate(800_000).burst(2000), 1);
        for _ in 0..4 {
            link.send(t0, datagram(1000));
        }
        // Two at once, then one every 10 ms.
        assert_eq!(
            arrivals(&mut link, t0),
            [0, 0, 10, 20].map(Duration::from_millis).to_vec()
        );
        // After a quiet second the bucket is full again.
        let t1 = t0 + Duration::from_secs(1);
        link.send(t1, datagram(1000));
        link.send(t1, datagram(1000));
        assert_eq!(
            arrivals(&mut link, t0),
            [1000, 1000].map(Duration::from_millis).to_vec()
        );
    }

    #[test]
    fn loss_and_jitter_repeat_with_the_seed_and_never_reorder() {
        let t0 = Instant::now();
        let shaping = Shaping::NONE
            .delay(Duration::from_millis(30), Duration::from_millis(20))
            .loss(0.1);
        let run = |seed| {
            let mut link = Link::new(shaping, seed);
            for i in 0..1000 {
                link.send(t0 + Duration::from_millis(i), datagram(100));
            }
            (arrivals(&mut link, t0), link.stats)
        };
        let (a, stats) = run(7);
        assert_eq!(run(7).0, a);
        assert_ne!(run(8).0, a);
        assert!(a.windows(2).all(|w| w[0] <= w[1]));
        assert!((50..150).contains(&stats.dropped_loss), "{stats:?}");
    }

    #[test]
    fn a_cut_link_loses_everything_until_restored() {
        let t0 = Instant::now();
        let mut link = Link::new(Shaping::NONE, 1);
        link.set_up(false);
        link.send(t0, datagram(10));
        link.set_up(true);
        link.send(t0, datagram(10));
        assert_eq!(link.stats.dropped_down, 1);
        assert_eq!(arrivals(&mut link, t0).len(), 1);
    }
}
