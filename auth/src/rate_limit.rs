//! A keyed rate limiter for sign-in (per client IP, per account), sans-IO: every call takes the
//! current `Instant`, so tests drive time explicitly.
//!
//! Each key is a token bucket kept in GCRA form (generic cell rate algorithm): one `Instant` per
//! key, the "theoretical arrival time" at which the bucket would be full again. That makes the
//! state per key 16 bytes and idleness trivial to see (`tat <= now` means a full bucket, which
//! is the same as never having seen the key), so idle keys can be dropped without changing any
//! decision. Memory is bounded by `max_keys`.
//!
//! Choosing quotas: a whole school usually reaches the server from one NAT address, and a class
//! of 40 signs in within the same minute, so the per-IP quota must be generous (e.g.
//! `Quota::per(300, 10 min)`) and mainly stops scripted floods; tighter limits belong on keys
//! that name one person or one link (e.g. failed link attempts per token hash prefix, or
//! per account where a sign-in names one).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Refusal: try again after this long.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many attempts; retry after {retry_after:?}")]
pub struct RateLimited {
    pub retry_after: Duration,
}

/// A bucket of `burst` requests, refilled at one request per `refill_every`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Requests allowed at once from a full bucket (at least 1).
    pub burst: u32,
    /// Time to earn back one request.
    pub refill_every: Duration,
}

impl Quota {
    /// E.g. `Quota::per(10, Duration::from_secs(60))`: 10 at once, then one every 6 s.
    pub fn per(burst: u32, period: Duration) -> Self {
        let burst = burst.max(1);
        Self {
            burst,
            refill_every: period / burst,
        }
    }

    /// How far ahead of `now` the arrival time may run before a request is refused.
    fn tolerance(&self) -> Duration {
        self.refill_every * (self.burst - 1)
    }
}

/// Keyed limiter. Not on the media path, so a `Mutex<HashMap>` is plenty; the lock is held for
/// a hash-map operation only (and an O(n) sweep when the map is full).
#[derive(Debug)]
pub struct RateLimiter<K> {
    quota: Quota,
    max_keys: usize,
    tat: Mutex<HashMap<K, Instant>>,
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    /// `max_keys` bounds memory (e.g. 100 000 keys ≈ a few MB for IP addresses).
    pub fn new(quota: Quota, max_keys: usize) -> Self {
        Self {
            quota,
            max_keys: max_keys.max(1),
            tat: Mutex::new(HashMap::new()),
        }
    }

    /// Count one attempt for `key` at `now`; refused attempts are not counted.
    pub fn check(&self, key: &K, now: Instant) -> Result<(), RateLimited> {
        // A poisoned lock only means another thread panicked mid-update of plain data; the map
        // is still usable, and refusing every sign-in forever would be worse.
        let mut map = self.tat.lock().unwrap_or_else(|e| e.into_inner());
        let tat = map.get(key).copied().unwrap_or(now).max(now);
        let ahead = tat - now;
        if ahead > self.quota.tolerance() {
            return Err(RateLimited {
                retry_after: ahead - self.quota.tolerance(),
            });
        }
        if !map.contains_key(key) && map.len() >= self.max_keys {
            Self::make_room(&mut map, now, self.max_keys);
        }
        map.insert(key.clone(), tat + self.quota.refill_every);
        Ok(())
    }

    /// Forget `key` (e.g. the account's counter after a successful sign-in).
    pub fn reset(&self, key: &K) {
        self.tat
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }

    /// Drop keys whose bucket has refilled completely: forgetting them changes no decision.
    /// Call it now and then (e.g. every minute); `check` also does it when the map is full.
    pub fn evict_idle(&self, now: Instant) {
        let mut map = self.tat.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, tat| *tat > now);
    }

    /// Number of keys held.
    pub fn len(&self) -> usize {
        self.tat.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn make_room(map: &mut HashMap<K, Instant>, now: Instant, max_keys: usize) {
        map.retain(|_, tat| *tat > now);
        if map.len() < max_keys {
            return;
        }
        // Still full of active keys (a flood of distinct addresses): drop the key closest to
        // full, i.e. the one that loses least by being forgotten.
        if let Some(victim) = map
            .iter()
            .min_by_key(|(_, tat)| **tat)
            .map(|(k, _)| k.clone())
        {
            map.remove(&victim);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn burst_then_refill() {
        let l = RateLimiter::new(Quota::per(3, 30 * S), 100);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(l.check(&"ip", t0), Ok(()));
        }
        assert_eq!(
            l.check(&"ip", t0),
            Err(RateLimited {
                retry_after: 10 * S
            })
        );
        // Other keys are independent.
        assert_eq!(l.check(&"other", t0), Ok(()));
        // One request earned back after 10 s, not two.
        assert_eq!(l.check(&"ip", t0 + 10 * S), Ok(()));
        assert_eq!(
            l.check(&"ip", t0 + 10 * S),
            Err(RateLimited {
                retry_after: 10 * S
            })
        );
        // Refused attempts do not push the window further out.
        assert_eq!(l.check(&"ip", t0 + 20 * S), Ok(()));
        // After a long pause the whole burst is back.
        let later = t0 + 600 * S;
        for _ in 0..3 {
            assert_eq!(l.check(&"ip", later), Ok(()));
        }
        assert!(l.check(&"ip", later).is_err());
    }

    #[test]
    fn reset_forgets_a_key() {
        let l = RateLimiter::new(Quota::per(1, 60 * S), 100);
        let t0 = Instant::now();
        assert!(l.check(&1, t0).is_ok());
        assert!(l.check(&1, t0).is_err());
        l.reset(&1);
        assert!(l.check(&1, t0).is_ok());
    }

    #[test]
    fn idle_keys_are_evicted() {
        let l = RateLimiter::new(Quota::per(2, 10 * S), 100);
        let t0 = Instant::now();
        for k in 0..50 {
            l.check(&k, t0).unwrap();
        }
        l.check(&7, t0).unwrap();
        assert_eq!(l.len(), 50);
        // After 5 s, single-use keys are full again; key 7 (used twice) is not.
        l.evict_idle(t0 + 5 * S);
        assert_eq!(l.len(), 1);
        l.evict_idle(t0 + 10 * S);
        assert!(l.is_empty());
    }

    #[test]
    fn memory_stays_bounded_under_a_flood_of_keys() {
        let l = RateLimiter::new(Quota::per(5, 60 * S), 10);
        let t0 = Instant::now();
        // Key 0 is used hardest: it must survive the flood.
        for _ in 0..5 {
            l.check(&0u32, t0).unwrap();
        }
        for k in 1..1000u32 {
            l.check(&k, t0 + Duration::from_millis(u64::from(k)))
                .unwrap();
            assert!(l.len() <= 10);
        }
        assert!(l.check(&0, t0 + S).is_err(), "the busy key kept its state");
    }
}
