//! Whether a subscriber's video goes through str0m's pacer.
//!
//! str0m paces what it sends at 1.1 × the bandwidth estimate, in bursts of at most 40 ms. That
//! protects a link the estimate is close to: a keyframe sent at once would overflow a small
//! router queue and be lost. But a subscriber that already gets every layer it asked for is not
//! limited by its link, and there the pacer only holds frames back: GoogCC's estimate of a link
//! with room to spare stays near what is sent (it cannot measure capacity nobody uses), so a
//! frame larger than 40 ms of that waits in the pacer for no reason. Measured with 200 pupils on
//! the middle layer: video latency p99 39 ms paced, 13–15 ms unpaced, same CPU.
//!
//! Audio is never paced (str0m's default): its packets are small and evenly spaced.

/// A video packet loss fraction from which bursts are smoothed again whatever the layers.
pub const LOSSY_LINK: f32 = 0.02;

/// What one allocation round found about a subscriber's link.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkState {
    /// Some video track could go to a higher layer (spatial or temporal) than the estimate gives
    /// it now: the link, not the request, decides what this subscriber gets.
    pub limited: bool,
    /// Some video track is paused for want of bandwidth.
    pub paused: bool,
    /// The loss fraction receiver reports give for this subscriber's streams, if any yet.
    pub loss: Option<f32>,
}

/// Whether this subscriber's video should be paced.
pub fn pace_video(link: LinkState) -> bool {
    link.limited || link.paused || link.loss.is_some_and(|l| l >= LOSSY_LINK)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(limited: bool, paused: bool, loss: Option<f32>) -> LinkState {
        LinkState {
            limited,
            paused,
            loss,
        }
    }

    #[test]
    fn a_subscriber_the_link_holds_back_is_paced() {
        // Climbing, or held below what it asked for: the estimate is close to the link.
        assert!(pace_video(link(true, false, Some(0.0))));
        assert!(pace_video(link(false, true, None)));
    }

    #[test]
    fn a_subscriber_with_everything_it_asked_for_is_not_paced() {
        assert!(!pace_video(link(false, false, Some(0.0))));
        assert!(!pace_video(link(false, false, None)));
        assert!(!pace_video(link(false, false, Some(LOSSY_LINK / 2.0))));
    }

    #[test]
    fn a_lossy_link_is_paced_even_with_every_layer() {
        assert!(pace_video(link(false, false, Some(LOSSY_LINK))));
        assert!(pace_video(link(false, false, Some(0.2))));
    }
}
