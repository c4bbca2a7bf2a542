//! One peer connection: a str0m `Rtc` and what the shard needs to know about it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use str0m::change::SdpPendingOffer;
use str0m::media::Mid;
use str0m::rtp::{Ssrc, StreamTx};
use str0m::{Candidate, Rtc, RtcConfig};

use crate::core::probe::ProbePacer;
use crate::ids::{ParticipantId, TrackId};

/// Sent video packets kept per outgoing stream for NACKs (str0m's RTX cache; its default is 1000
/// or 3 s). The cache is a ring of slots that doubles when it wraps onto a live entry, and every
/// slot costs ~600 bytes per subscriber even though the payload is shared: the middle layer grew
/// it to ~200 (~120 KiB a pupil). 128 packets is 2 s of the middle layer and still ~0.5 s of a
/// 2.5 Mbit/s layer: several round trips of a home link for a NACK to arrive. (A shorter age
/// would not help: the ring is sized by packets, and 1.5 s of the middle layer needs 128 slots.)
const SEND_BUFFER_VIDEO: usize = 128;
/// How old a packet may be and still be resent (str0m's default).
const RESEND_MAX_AGE: Duration = Duration::from_secs(3);
/// str0m drops every queued resend while resent bytes exceed this share of the last second's.
/// Its default, 15 %, suits a fat stream. The lowest layer on a weak home link is ~20 kB/s of
/// ~1 kB packets: three resends in a second reach 15 %, which a link losing 5 % does in about
/// one second in ten (and a lost resend is resent again); the NACKs that follow then go
/// unanswered for up to a second, and the picture stands still until a keyframe comes. Resends
/// pass through the pacer with the media, within the estimate, so a higher cap cannot flood
/// the link; it only stops a NACK storm from taking all of it.
const RESEND_RATIO_CAP: f32 = 0.5;

/// Sets up the resend cache of an outgoing video stream before its first packet (str0m made one
/// at negotiation with its defaults; it is still empty, and is replaced).
pub(crate) fn configure_video_resends(tx: &mut StreamTx) {
    tx.set_rtx_cache(SEND_BUFFER_VIDEO, RESEND_MAX_AGE, Some(RESEND_RATIO_CAP));
}

/// Index of a peer in the shard's table. Reused after the peer is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct PeerKey(pub u32);

/// Which of a participant's two connections this is.
#[derive(Debug)]
pub(crate) enum PeerRole {
    /// The client offers; carries the participant's own tracks to us.
    Publish {
        /// mid → track published on it.
        tracks: HashMap<Mid, TrackId>,
        /// SSRC → (track, spatial layer), learned from the first packet of each SSRC.
        by_ssrc: HashMap<Ssrc, (TrackId, u8)>,
    },
    /// We offer; carries every track the participant receives.
    Subscribe {
        /// mid → track sent on it, for active sections.
        tracks: HashMap<Mid, TrackId>,
        /// Our offer awaiting the client's answer.
        pending: Option<SdpPendingOffer>,
        /// Something changed while an offer was pending; offer again after the answer.
        renegotiate: bool,
    },
}

/// A peer connection owned by the shard.
pub(crate) struct Peer {
    pub rtc: Rtc,
    pub ufrag: String,
    pub participant: ParticipantId,
    pub role: PeerRole,
    /// ICE and DTLS are up: media may be written.
    pub connected: bool,
    /// The deadline currently registered in the shard's timer set.
    pub timer: Option<Instant>,
    /// Queued to be polled before the shard waits again.
    pub dirty: bool,
    /// The latest bandwidth estimate towards this peer (subscribe connections).
    pub estimate: Option<u64>,
    /// The latest round-trip time: from transport-wide feedback once it comes, else from
    /// receiver reports (see `Shard::on_peer_stats`).
    pub rtt_ms: Option<u32>,
    /// Whether `rtt_ms` comes from transport-wide feedback.
    pub rtt_from_twcc: bool,
    /// The latest loss fraction receiver reports gave for this peer's streams.
    pub loss: Option<f32>,
    /// Every byte handed to the network towards this peer (media, resends, padding, RTCP, ICE):
    /// what the link was asked to carry.
    pub bytes_sent: u64,
    /// The rate this (subscribe) link has shown it carries, for larger pictures.
    pub capacity: crate::core::capacity::CapacityProof,
    /// When to ask the estimator to probe for a higher layer (subscribe connections).
    pub probe: ProbePacer,
    /// Whether this subscriber's video goes through str0m's pacer (`core::pacing`); str0m
    /// paces video until the first allocation says otherwise.
    pub video_paced: bool,
    /// ICE restarts, re-sent offers, how long ICE has been disconnected.
    pub recovery: super::recovery::Recovery,
    /// A connection of a link this server dialled: its own socket (`super::link`).
    pub link: Option<super::link::LinkEnd>,
}

impl Peer {
    /// An `Rtc` in RTP mode that answers on `candidates`; with `bandwidth_estimation`, str0m
    /// estimates what the path to the peer carries and paces what is sent. `ice_lite` for every
    /// peer but a link's (`super::link`), whose far end is ICE-lite too.
    pub fn new(
        now: Instant,
        participant: ParticipantId,
        role: PeerRole,
        candidates: &[Candidate],
        bandwidth_estimation: bool,
        ice_lite: bool,
    ) -> Peer {
        let initial = str0m::bwe::Bitrate::bps(crate::shard::allocation::INITIAL_ESTIMATE);
        let mut config = RtcConfig::new()
            .set_ice_lite(ice_lite)
            .set_rtp_mode(true)
            .clear_codecs()
            .enable_vp8(true)
            .enable_h264(true)
            .enable_vp9(true)
            .enable_bwe(bandwidth_estimation.then_some(initial))
            .set_stats_interval(Some(std::time::Duration::from_secs(1)));
        add_opus_with_fec_and_dtx(&mut config);
        let mut rtc = config.build(now);
        for c in candidates {
            rtc.add_local_candidate(c.clone());
        }
        let ufrag = rtc.direct_api().local_ice_credentials().ufrag;
        Peer {
            rtc,
            ufrag,
            participant,
            role,
            connected: false,
            timer: None,
            dirty: false,
            estimate: None,
            rtt_ms: None,
            rtt_from_twcc: false,
            loss: None,
            bytes_sent: 0,
            capacity: Default::default(),
            probe: ProbePacer::default(),
            video_paced: true,
            recovery: Default::default(),
            link: None,
        }
    }

    pub fn is_publisher(&self) -> bool {
        matches!(self.role, PeerRole::Publish { .. })
    }
}

/// Opus at 48 kHz stereo with in-band FEC (loss on home links) and DTX (silent pupils cost
/// nothing).
fn add_opus_with_fec_and_dtx(config: &mut RtcConfig) {
    use str0m::format::{Codec, FormatParams};
    use str0m::media::{Frequency, Pt};
    config.codec_config().add_config(
        Pt::new_with_value(111),
        None,
        Codec::Opus,
        Frequency::FORTY_EIGHT_KHZ,
        Some(2),
        FormatParams {
            min_p_time: Some(10),
            use_inband_fec: Some(true),
            use_dtx: Some(true),
            ..Default::default()
        },
    );
}
