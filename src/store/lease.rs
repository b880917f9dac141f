//! Leases: time-to-live handles that keys attach to; when one expires its keys are deleted.
//!
//! Mirrors etcd's `lease/lessor.go` on a single member: grants and revokes are durable (they go
//! through the WAL), deadlines are not. As etcd does when a leader takes over, every lease gets
//! a fresh full TTL after a restart. Leaves out checkpointing and lease forwarding.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// etcd's smallest TTL with default election settings: ceil(1.5 × election timeout) seconds.
pub const MIN_TTL: i64 = 2;
/// etcd's `MaxLeaseTTL` (about 285 years).
pub const MAX_TTL: i64 = 9_000_000_000;

#[derive(Debug, Clone)]
pub struct Lease {
    pub id: i64,
    /// The TTL granted, in seconds.
    pub ttl: i64,
    pub deadline: Instant,
    pub keys: BTreeSet<Vec<u8>>,
}

impl Lease {
    /// Whole seconds left, as etcd's TimeToLive reports them (truncated, never negative).
    pub fn remaining(&self, now: Instant) -> i64 {
        self.deadline.saturating_duration_since(now).as_secs() as i64
    }
}

#[derive(Debug, Default)]
pub struct Leases {
    map: BTreeMap<i64, Lease>,
}

impl Leases {
    pub fn get(&self, id: i64) -> Option<&Lease> {
        self.map.get(&id)
    }

    pub fn contains(&self, id: i64) -> bool {
        self.map.contains_key(&id)
    }

    pub fn ids(&self) -> impl Iterator<Item = i64> + '_ {
        self.map.keys().copied()
    }

    pub fn all(&self) -> impl Iterator<Item = &Lease> {
        self.map.values()
    }

    pub fn grant(&mut self, id: i64, ttl: i64, now: Instant) {
        let deadline = now + Duration::from_secs(ttl.max(0) as u64);
        self.map.insert(
            id,
            Lease {
                id,
                ttl,
                deadline,
                keys: BTreeSet::new(),
            },
        );
    }

    pub fn remove(&mut self, id: i64) -> Option<Lease> {
        self.map.remove(&id)
    }

    /// Restarts a lease's clock; returns its TTL, or `None` if there is no such lease.
    pub fn renew(&mut self, id: i64, now: Instant) -> Option<i64> {
        let lease = self.map.get_mut(&id)?;
        lease.deadline = now + Duration::from_secs(lease.ttl.max(0) as u64);
        Some(lease.ttl)
    }

    pub fn attach(&mut self, id: i64, key: &[u8]) {
        if let Some(l) = self.map.get_mut(&id) {
            l.keys.insert(key.to_vec());
        }
    }

    pub fn detach(&mut self, id: i64, key: &[u8]) {
        if let Some(l) = self.map.get_mut(&id) {
            l.keys.remove(key);
        }
    }

    /// Puts back a lease as it was (used to undo a revoke that never became durable).
    pub fn restore(&mut self, lease: Lease) {
        self.map.insert(lease.id, lease);
    }

    /// Recomputes which keys each lease holds from `(key, lease)` pairs of the live keys.
    pub fn reattach<'a>(&mut self, live: impl IntoIterator<Item = (&'a [u8], i64)>) {
        for l in self.map.values_mut() {
            l.keys.clear();
        }
        for (key, id) in live {
            self.attach(id, key);
        }
    }

    /// Leases whose deadline has passed.
    pub fn expired(&self, now: Instant) -> Vec<i64> {
        self.map
            .values()
            .filter(|l| l.deadline <= now)
            .map(|l| l.id)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grant_renew_expire() {
        let t0 = Instant::now();
        let mut leases = Leases::default();
        leases.grant(7, 10, t0);
        leases.attach(7, b"k");
        assert_eq!(leases.get(7).unwrap().remaining(t0), 10);
        assert!(leases.expired(t0 + Duration::from_secs(11)).contains(&7));
        assert_eq!(leases.renew(7, t0 + Duration::from_secs(9)), Some(10));
        assert!(leases.expired(t0 + Duration::from_secs(11)).is_empty());
        assert_eq!(leases.renew(8, t0), None);
    }
}
