//! What the shard's own entry points cost, apart from the simulated peers around it.
//!
//! The forward benchmark (`benches/forward.rs`) asks for the server's CPU per outgoing packet.
//! In the harness one thread runs the shard and every peer's `Rtc` (their decryption, their
//! feedback), so the whole thread's CPU time would mostly measure the clients: the meter reads
//! the thread's CPU clock around each call into the shard instead and counts the media packets
//! (and bandwidth probes) the shard sends to pupils.

use std::time::Duration;

/// CPU time of this thread (`CLOCK_THREAD_CPUTIME_ID`, user and system): the machine is shared,
/// so wall time would measure the neighbours.
pub fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the call to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// What the shard has cost since metering began.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ShardCost {
    /// CPU time inside the shard's entry points, as read around each call (the clock reads
    /// themselves included: `calls` × [`clock_read_cost`] is the part to take off).
    pub cpu: Duration,
    /// Entry points timed.
    pub calls: u64,
    /// RTP packets of media (and resends on NACK) the shard sent to pupils.
    pub packets: u64,
    /// RTP packets with the padding bit it sent them besides: str0m's bandwidth probes (padding
    /// only, or a resend used as padding).
    pub padded: u64,
    /// Every datagram the shard sent, to anyone.
    pub datagrams: u64,
}

/// Runs `f`, adding its CPU time to `meter` when there is one.
pub(super) fn timed<R>(meter: &mut Option<ShardCost>, f: impl FnOnce() -> R) -> R {
    let Some(cost) = meter else {
        return f();
    };
    let start = thread_cpu();
    let r = f();
    cost.cpu += thread_cpu() - start;
    cost.calls += 1;
    r
}

/// Whether a datagram is RTP rather than RTCP, STUN or DTLS (RFC 7983; RFC 5761 §4: RTCP packet
/// types 192–223 sit where RTP's marker bit and payload type are). SRTP leaves the header clear.
pub(super) fn is_rtp(datagram: &[u8]) -> bool {
    match datagram {
        [first, second, ..] => (128..=191).contains(first) && !(192..=223).contains(second),
        _ => false,
    }
}

/// Whether an RTP packet carries padding (RFC 3550 §5.1: the P bit).
pub(super) fn is_padded(packet: &[u8]) -> bool {
    packet.first().is_some_and(|b| b & 0x20 != 0)
}

/// What one [`thread_cpu`] read costs on this machine (it is a system call, not a vDSO read):
/// a timed call is charged about one read besides its own work.
pub fn clock_read_cost() -> Duration {
    const READS: u32 = 10_000;
    let start = thread_cpu();
    for _ in 0..READS {
        std::hint::black_box(thread_cpu());
    }
    (thread_cpu() - start) / READS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtp_is_told_from_rtcp_stun_and_dtls() {
        // VP8 with the marker bit (0x80 | 96), Opus without.
        assert!(is_rtp(&[0x90, 0xe0, 0, 1]));
        assert!(is_rtp(&[0x80, 111, 0, 1]));
        // Sender report, receiver report, transport feedback.
        assert!(!is_rtp(&[0x80, 200, 0, 6]));
        assert!(!is_rtp(&[0x81, 201, 0, 7]));
        assert!(!is_rtp(&[0x8f, 205, 0, 5]));
        // STUN binding, DTLS record, too short.
        assert!(!is_rtp(&[0x00, 0x01, 0, 0]));
        assert!(!is_rtp(&[22, 0xfe, 0xfd]));
        assert!(!is_rtp(&[0x80]));
        assert!(is_padded(&[0xa0, 0x60]));
        assert!(!is_padded(&[0x90, 0x60]));
    }
}
