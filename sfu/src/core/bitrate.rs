//! Measured bitrate of each (spatial, temporal) layer a publisher sends.
//!
//! The allocator needs what a layer really costs, not what the encoder was told: a static
//! slide costs a fraction of its cap, a busy classroom all of it. Bytes are summed per window and
//! smoothed; a layer that sent nothing for [`SILENT_AFTER`] counts as unavailable (paused by the
//! publisher, or dynacast switched it off).
//!
//! The meter also keeps the size of each spatial layer's latest keyframe: a switch to a layer
//! starts with one, and on a narrow link a large keyframe freezes the picture for as long as it
//! takes to cross (see `core::layer::KEYFRAME_TRANSIT`).

use std::time::{Duration, Instant};

use super::layer::{KeyframeSizes, LayerBitrates, MAX_SPATIAL, MAX_TEMPORAL};

/// Length of one measuring window.
pub const WINDOW: Duration = Duration::from_millis(500);
/// The first window of a track is shorter: until it closes no layer is available, so a pupil
/// who joined as the publisher started has nothing to start on and waits for it.
pub const FIRST_WINDOW: Duration = Duration::from_millis(200);
/// A layer silent this long is no longer available.
pub const SILENT_AFTER: Duration = Duration::from_millis(1500);
/// How many windows [`LayerMeter::peak_rates`] looks back over (2 s).
const PEAK_WINDOWS: usize = 4;

/// Byte counts per layer, turned into [`LayerBitrates`] once per window.
#[derive(Debug, Clone)]
pub struct LayerMeter {
    window_start: Option<Instant>,
    bytes: [[u64; MAX_TEMPORAL]; MAX_SPATIAL],
    last_seen: [Option<Instant>; MAX_SPATIAL],
    /// Smoothed bits per second per (spatial, temporal) — not cumulative.
    smoothed: [[f64; MAX_TEMPORAL]; MAX_SPATIAL],
    /// The smoothed rates at the close of each of the last [`PEAK_WINDOWS`] windows.
    recent: [[[f64; MAX_TEMPORAL]; MAX_SPATIAL]; PEAK_WINDOWS],
    /// Windows closed so far; the next one is stored at this modulo [`PEAK_WINDOWS`].
    closed: usize,
    /// Per spatial layer, the keyframe being counted: its RTP timestamp and bytes so far.
    keyframe_open: [Option<(u32, u64)>; MAX_SPATIAL],
    keyframes: KeyframeSizes,
    /// Whether a window has closed: rates exist.
    measured: bool,
}

/// One received packet, as the meter counts it.
#[derive(Debug, Clone, Copy)]
pub struct MeteredPacket {
    pub spatial: u8,
    pub temporal: u8,
    /// Payload bytes.
    pub bytes: usize,
    pub rtp_timestamp: u32,
    /// The first packet of a keyframe.
    pub keyframe_start: bool,
}

impl Default for LayerMeter {
    fn default() -> Self {
        LayerMeter {
            window_start: None,
            bytes: [[0; MAX_TEMPORAL]; MAX_SPATIAL],
            last_seen: [None; MAX_SPATIAL],
            smoothed: [[0.0; MAX_TEMPORAL]; MAX_SPATIAL],
            recent: [[[0.0; MAX_TEMPORAL]; MAX_SPATIAL]; PEAK_WINDOWS],
            closed: 0,
            keyframe_open: [None; MAX_SPATIAL],
            keyframes: KeyframeSizes::default(),
            measured: false,
        }
    }
}

impl LayerMeter {
    /// Counts one packet.
    pub fn record(&mut self, packet: MeteredPacket, now: Instant) {
        let (s, t) = (usize::from(packet.spatial), usize::from(packet.temporal));
        if s >= MAX_SPATIAL || t >= MAX_TEMPORAL {
            return;
        }
        let bytes = packet.bytes as u64;
        self.window_start.get_or_insert(now);
        self.bytes[s][t] += bytes;
        self.last_seen[s] = Some(now);
        // A keyframe is every packet with its timestamp; the first other one closes it. A resent
        // packet of the open keyframe counts twice: the size errs large, on the safe side.
        let open = &mut self.keyframe_open[s];
        match *open {
            Some((ts, ref mut sum)) if ts == packet.rtp_timestamp && !packet.keyframe_start => {
                *sum += bytes;
            }
            Some((_, sum)) => {
                self.keyframes.0[s] = sum;
                *open = None;
            }
            None => {}
        }
        if packet.keyframe_start {
            *open = Some((packet.rtp_timestamp, bytes));
        }
    }

    /// The latest complete keyframe of each spatial layer.
    pub fn keyframes(&self) -> KeyframeSizes {
        self.keyframes
    }

    /// Whether the first window can close now: the caller need not wait for its next round to
    /// learn the first rates.
    pub fn first_window_due(&self, now: Instant) -> bool {
        !self.measured
            && self
                .window_start
                .is_some_and(|start| now.saturating_duration_since(start) >= FIRST_WINDOW)
    }

    /// Closes the window if it is over; returns whether the rates changed.
    pub fn tick(&mut self, now: Instant) -> bool {
        let Some(start) = self.window_start else {
            return false;
        };
        let elapsed = now.saturating_duration_since(start);
        if elapsed < if self.measured { WINDOW } else { FIRST_WINDOW } {
            return false;
        }
        self.measured = true;
        let secs = elapsed.as_secs_f64();
        for s in 0..MAX_SPATIAL {
            for t in 0..MAX_TEMPORAL {
                let rate = self.bytes[s][t] as f64 * 8.0 / secs;
                let old = self.smoothed[s][t];
                // First measurement taken as is; then an EWMA that follows a change within ~2 s.
                self.smoothed[s][t] = if old == 0.0 {
                    rate
                } else {
                    old * 0.7 + rate * 0.3
                };
                self.bytes[s][t] = 0;
            }
        }
        self.recent[self.closed % PEAK_WINDOWS] = self.smoothed;
        self.closed += 1;
        self.window_start = Some(now);
        true
    }

    /// Cumulative bitrates per layer (what forwarding temporal layers `0..=t` costs); zero for
    /// layers silent for [`SILENT_AFTER`].
    pub fn rates(&self, now: Instant) -> LayerBitrates {
        self.cumulative(now, &self.smoothed)
    }

    /// [`Self::rates`] at the busiest each layer was over the last two seconds. An encoder's
    /// output swings by a fifth from one window to the next; an upgrade judged on a quiet window
    /// is undone at the next busy one, and each such round trip costs the subscriber two
    /// keyframe waits.
    pub fn peak_rates(&self, now: Instant) -> LayerBitrates {
        let mut peak = self.rates(now);
        for snapshot in self.recent.iter().take(self.closed.min(PEAK_WINDOWS)) {
            let rates = self.cumulative(now, snapshot);
            for (row, other) in peak.0.iter_mut().zip(rates.0) {
                for (cell, rate) in row.iter_mut().zip(other) {
                    *cell = (*cell).max(rate);
                }
            }
        }
        peak
    }

    fn cumulative(
        &self,
        now: Instant,
        rates: &[[f64; MAX_TEMPORAL]; MAX_SPATIAL],
    ) -> LayerBitrates {
        let mut out = [[0u64; MAX_TEMPORAL]; MAX_SPATIAL];
        for (s, row) in out.iter_mut().enumerate() {
            let alive = self.last_seen[s]
                .is_some_and(|seen| now.saturating_duration_since(seen) < SILENT_AFTER);
            if !alive {
                continue;
            }
            let mut sum = 0.0;
            let base_seen = rates[s][0] > 0.0;
            for (t, cell) in row.iter_mut().enumerate() {
                sum += rates[s][t];
                // A temporal layer that carries nothing is not a separate step; a layer with
                // only TID 0 (no temporal scalability) is then available at every temporal cap.
                *cell = if base_seen { sum.max(1.0) as u64 } else { 0 };
            }
        }
        LayerBitrates(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(spatial: u8, temporal: u8, bytes: usize) -> MeteredPacket {
        MeteredPacket {
            spatial,
            temporal,
            bytes,
            rtp_timestamp: 0,
            keyframe_start: false,
        }
    }

    #[test]
    fn measures_cumulative_layer_rates_and_forgets_silent_layers() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut m = LayerMeter::default();
        let record = |m: &mut LayerMeter, s, t, bytes, at| m.record(packet(s, t, bytes), at);
        // One window of 500 ms: spatial 0 TID0 10 kB, TID1 5 kB; spatial 1 TID0 20 kB.
        record(&mut m, 0, 0, 10_000, ms(0));
        record(&mut m, 0, 1, 5_000, ms(10));
        record(&mut m, 1, 0, 20_000, ms(20));
        assert!(!m.tick(ms(199)));
        // The first window may close from 200 ms on; here it closes at 500.
        assert!(m.tick(ms(500)));
        let r = m.rates(ms(500));
        assert_eq!(r.0[0], [160_000, 240_000, 240_000]);
        assert_eq!(r.0[1], [320_000, 320_000, 320_000]);
        assert_eq!(r.0[2], [0, 0, 0]);
        // Spatial 1 goes silent; spatial 0 continues at half the rate.
        for i in 0..10 {
            record(&mut m, 0, 0, 500, ms(500 + i * 100));
        }
        assert!(m.tick(ms(1000)));
        assert!(m.tick(ms(2100)));
        let r = m.rates(ms(2100));
        assert_eq!(r.0[1], [0, 0, 0], "silent for more than 1.5 s");
        assert!(r.0[0][0] > 0 && r.0[0][0] < 160_000);
        // Junk layer indices are ignored, not a panic.
        record(&mut m, 7, 9, 100, ms(2200));
    }

    #[test]
    fn peak_rates_remember_the_busiest_of_the_last_four_windows() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut m = LayerMeter::default();
        let near = |got: u64, want: u64| got.abs_diff(want) <= 1;
        // 200 kbit/s in the first window, then 100 kbit/s: the smoothed rate falls step by step.
        m.record(packet(0, 0, 12_500), ms(0));
        assert!(m.tick(ms(500)));
        assert!(near(m.peak_rates(ms(500)).0[0][0], 200_000));
        let mut at = 500;
        for _ in 0..4 {
            m.record(packet(0, 0, 6_250), ms(at + 100));
            at += 500;
            assert!(m.tick(ms(at)));
        }
        // Smoothed: 170k, 149k, 134.3k, 124k. The 200k window is now five windows old.
        let (rates, peaks) = (m.rates(ms(at)), m.peak_rates(ms(at)));
        assert!(near(rates.0[0][0], 124_010), "{rates:?}");
        assert!(near(peaks.0[0][0], 170_000), "{peaks:?}");
        assert!(peaks.0[1].iter().all(|&r| r == 0), "no other layer appears");
    }

    #[test]
    fn the_first_window_is_short() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut m = LayerMeter::default();
        assert!(!m.first_window_due(ms(1_000)), "nothing received yet");
        m.record(packet(0, 0, 2_500), ms(0));
        assert!(!m.first_window_due(ms(199)));
        assert!(m.first_window_due(ms(200)));
        assert!(m.tick(ms(200)));
        assert_eq!(m.rates(ms(200)).0[0], [100_000; 3]);
        // Later windows are the full length.
        assert!(!m.first_window_due(ms(400)));
        m.record(packet(0, 0, 2_500), ms(300));
        assert!(!m.tick(ms(699)));
        assert!(m.tick(ms(700)));
    }

    #[test]
    fn remembers_the_size_of_each_layers_latest_keyframe() {
        let t0 = Instant::now();
        let mut m = LayerMeter::default();
        let mut send = |spatial, ts, keyframe_start, bytes| {
            m.record(
                MeteredPacket {
                    spatial,
                    temporal: 0,
                    bytes,
                    rtp_timestamp: ts,
                    keyframe_start,
                },
                t0,
            );
            m.keyframes().0
        };
        // A keyframe of h in three packets, interleaved with q's delta frames.
        send(1, 9_000, true, 1_200);
        send(0, 9_000, false, 300);
        send(1, 9_000, false, 1_200);
        let open = send(1, 9_000, false, 600);
        assert_eq!(open, [0, 0, 0], "not complete until the next frame");
        assert_eq!(send(1, 12_000, false, 400), [0, 3_000, 0]);
        // A keyframe right after another closes the first; a later one replaces it.
        send(0, 12_000, true, 500);
        assert_eq!(send(0, 15_000, true, 700), [500, 3_000, 0]);
        assert_eq!(send(0, 18_000, false, 100), [700, 3_000, 0]);
    }
}
