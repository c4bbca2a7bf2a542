//! How many sockets each client address holds open without having joined.
//!
//! An unjoined socket costs the server a task and buffers but proves nothing about its owner, so
//! one address may hold only a few at a time. The count is per host: an IPv4 address, or an
//! IPv6 /64 (one home or school network gets a whole /64, so counting single IPv6 addresses
//! would let one host open millions).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// The unit an address is counted under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Host {
    V4(u32),
    /// The upper 64 bits of an IPv6 address.
    V6Prefix(u64),
}

impl Host {
    fn of(ip: IpAddr) -> Host {
        match ip {
            IpAddr::V4(v4) => Host::V4(u32::from(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Host::V4(u32::from(v4)),
                None => Host::V6Prefix(prefix64(v6)),
            },
        }
    }
}

fn prefix64(v6: Ipv6Addr) -> u64 {
    (u128::from(v6) >> 64) as u64
}

/// Open unjoined sockets by host, with a cap per host.
pub(crate) struct UnjoinedSockets {
    limit: usize,
    counts: Mutex<HashMap<Host, usize>>,
}

/// The cap was reached for this address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TooManyUnjoined {
    pub limit: usize,
}

/// One unjoined socket counted against its address; dropping it (on join or close) frees the
/// place.
#[derive(Debug)]
pub(crate) struct UnjoinedSlot {
    sockets: Arc<UnjoinedSockets>,
    host: Host,
}

impl std::fmt::Debug for UnjoinedSockets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnjoinedSockets")
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

impl UnjoinedSockets {
    pub fn new(limit: usize) -> Arc<UnjoinedSockets> {
        Arc::new(UnjoinedSockets {
            limit,
            counts: Mutex::new(HashMap::new()),
        })
    }

    /// Counts one more unjoined socket from `ip`, unless that address already has `limit`.
    pub fn try_acquire(self: &Arc<Self>, ip: IpAddr) -> Result<UnjoinedSlot, TooManyUnjoined> {
        let host = Host::of(ip);
        let mut counts = self.lock();
        let count = counts.entry(host).or_insert(0);
        if *count >= self.limit {
            return Err(TooManyUnjoined { limit: self.limit });
        }
        *count += 1;
        Ok(UnjoinedSlot {
            sockets: Arc::clone(self),
            host,
        })
    }

    /// Addresses with at least one unjoined socket (the map never keeps zeros).
    #[cfg(test)]
    fn hosts(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Host, usize>> {
        // The map stays consistent whatever panicked while holding it: every change is one
        // arithmetic step.
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl UnjoinedSlot {
    /// The address (or IPv6 /64) the socket is counted under.
    pub fn host(&self) -> Host {
        self.host
    }
}

impl Drop for UnjoinedSlot {
    fn drop(&mut self) {
        let mut counts = self.sockets.lock();
        if let Some(count) = counts.get_mut(&self.host) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&self.host);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn each_address_gets_the_limit_and_a_freed_place_is_reusable() {
        let sockets = UnjoinedSockets::new(2);
        let a = sockets.try_acquire(ip("192.0.2.1")).unwrap();
        let _b = sockets.try_acquire(ip("192.0.2.1")).unwrap();
        assert_eq!(
            sockets.try_acquire(ip("192.0.2.1")).unwrap_err(),
            TooManyUnjoined { limit: 2 }
        );
        // Another address is not affected.
        let _other = sockets.try_acquire(ip("192.0.2.2")).unwrap();
        drop(a);
        let _c = sockets.try_acquire(ip("192.0.2.1")).unwrap();
        assert!(sockets.try_acquire(ip("192.0.2.1")).is_err());
    }

    #[test]
    fn an_ipv6_slash_64_counts_as_one_host() {
        let sockets = UnjoinedSockets::new(1);
        let _a = sockets.try_acquire(ip("2001:db8:1:2::1")).unwrap();
        assert!(
            sockets
                .try_acquire(ip("2001:db8:1:2:ffff:ffff:ffff:ffff"))
                .is_err()
        );
        let _b = sockets.try_acquire(ip("2001:db8:1:3::1")).unwrap();
        // An IPv4-mapped address is the IPv4 host.
        let _v4 = sockets.try_acquire(ip("198.51.100.7")).unwrap();
        assert!(sockets.try_acquire(ip("::ffff:198.51.100.7")).is_err());
    }

    #[test]
    fn released_addresses_leave_no_entry() {
        let sockets = UnjoinedSockets::new(3);
        let slots: Vec<_> = (1..=50)
            .map(|i| sockets.try_acquire(ip(&format!("10.0.0.{i}"))).unwrap())
            .collect();
        assert_eq!(sockets.hosts(), 50);
        drop(slots);
        assert_eq!(sockets.hosts(), 0);
    }
}
