//! How often one address may knock at the door of lesson links (`link_join`).
//!
//! The door is public: anyone may send `link_join`, and each one costs the link gate a lookup
//! and a hash. A partner server dials each of its links once, then again only after a loss or
//! a refusal with backoff (at most 16 links, so a few dozen `link_join`s a minute from one
//! school network at worst). An address that knocks more often is guessing: its further
//! attempts are refused `rate_limited` before the gate is asked.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::unjoined::Host;

/// `link_join`s one address may make per [`WINDOW`].
pub const ATTEMPTS: usize = 20;
pub const WINDOW: Duration = Duration::from_secs(10);
/// Addresses remembered at once. When all of them knocked within the window, a new address is
/// refused until some age out: the door's memory stays bounded under a flood from many
/// addresses, at the price of refusing for a few seconds a partner that knocks in it.
pub const MAX_ADDRESSES: usize = 4096;

/// Recent `link_join` attempts by address.
#[derive(Debug, Default)]
pub(crate) struct LinkDoor {
    attempts: Mutex<HashMap<Host, VecDeque<Instant>>>,
}

impl LinkDoor {
    /// Counts an attempt from `host` at `now`, or refuses it: `Err` is how long until the
    /// address may try again.
    pub fn knock(&self, host: Host, now: Instant) -> Result<(), Duration> {
        let mut attempts = self.attempts.lock().unwrap_or_else(PoisonError::into_inner);
        let fresh = |t: &Instant| now.saturating_duration_since(*t) < WINDOW;
        if !attempts.contains_key(&host) && attempts.len() >= MAX_ADDRESSES {
            attempts.retain(|_, times| times.back().is_some_and(fresh));
            if attempts.len() >= MAX_ADDRESSES {
                return Err(WINDOW);
            }
        }
        let times = attempts.entry(host).or_default();
        while times.front().is_some_and(|t| !fresh(t)) {
            times.pop_front();
        }
        match times.front() {
            Some(oldest) if times.len() >= ATTEMPTS => {
                Err((*oldest + WINDOW).saturating_duration_since(now))
            }
            _ => {
                times.push_back(now);
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(n: u32) -> Host {
        Host::V4(n)
    }

    #[test]
    fn an_address_gets_its_attempts_per_window() {
        let door = LinkDoor::default();
        let t0 = Instant::now();
        for i in 0..ATTEMPTS as u64 {
            assert_eq!(door.knock(host(1), t0 + Duration::from_millis(i)), Ok(()));
        }
        assert_eq!(
            door.knock(host(1), t0 + Duration::from_secs(2)),
            Err(WINDOW - Duration::from_secs(2))
        );
        // Another address is not affected; the first one's window frees as it ages.
        assert_eq!(door.knock(host(2), t0), Ok(()));
        assert_eq!(door.knock(host(1), t0 + WINDOW), Ok(()));
    }

    #[test]
    fn the_door_remembers_a_bounded_number_of_addresses() {
        let door = LinkDoor::default();
        let t0 = Instant::now();
        for n in 0..MAX_ADDRESSES as u32 {
            assert_eq!(door.knock(host(n), t0), Ok(()));
        }
        assert_eq!(door.knock(host(u32::MAX), t0), Err(WINDOW));
        // Known addresses still count as usual.
        assert_eq!(door.knock(host(0), t0), Ok(()));
        // Once the window passed, the old addresses are forgotten.
        assert_eq!(door.knock(host(u32::MAX), t0 + WINDOW), Ok(()));
        assert_eq!(door.attempts.lock().unwrap().len(), 1);
    }
}
