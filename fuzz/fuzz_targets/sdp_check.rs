//! SDP from a client: the publish-offer check (`sdp_check::sections`) that runs before the media
//! plane sees an offer, then str0m's parse of offers and subscriber answers, which the media
//! thread runs on the same text (`sfu/src/shard/negotiate.rs`).
//!
//! Properties: never panics; an accepted offer has between one and `MAX_SECTIONS` sections; a
//! refusal says why in a short, fixed text.
#![no_main]

use classroom_signaling::protocol::MAX_MESSAGE_BYTES;
use classroom_signaling::sdp_check::{self, MAX_SECTIONS};
use libfuzzer_sys::fuzz_target;
use str0m::change::{SdpAnswer, SdpOffer};

fuzz_target!(|data: &[u8]| {
    // SDP arrives inside a JSON string of a frame no longer than MAX_MESSAGE_BYTES.
    let Ok(sdp) = std::str::from_utf8(data) else {
        return;
    };
    if sdp.len() > MAX_MESSAGE_BYTES {
        return;
    }
    match sdp_check::sections(sdp) {
        Ok(sections) => {
            assert!((1..=MAX_SECTIONS).contains(&sections.len()));
            for s in &sections {
                if let Some(mid) = &s.mid {
                    assert!(mid.len() <= sdp.len());
                }
            }
        }
        Err(why) => assert!(!why.is_empty() && why.len() < 200, "{why}"),
    }
    if let Err(e) = SdpOffer::from_sdp_string(sdp) {
        let _ = e.to_string();
    }
    if let Err(e) = SdpAnswer::from_sdp_string(sdp) {
        let _ = e.to_string();
    }
});
