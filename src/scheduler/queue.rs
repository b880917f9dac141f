//! The scheduling queue: pods waiting for a node, in three places as upstream keeps them.
//!
//! Mirrors `pkg/scheduler/backend/queue.PriorityQueue`: activeQ (ready to try: higher
//! `spec.priority` first, then first in first out, as upstream's default QueueSort plugin
//! PrioritySort), backoffQ (failed recently: wait 1 s, doubling up to 10 s,
//! upstream's `--pod-initial-backoff-seconds`/`--pod-max-backoff-seconds` defaults) and the
//! unschedulable pods (no node fitted: retried when the cluster changes in a way that may
//! help, or after five minutes). Leaves out queueing hints per plugin.

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

pub const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Upstream's `podMaxInUnschedulablePodsDuration`.
pub const MAX_UNSCHEDULABLE: Duration = Duration::from_secs(300);

#[derive(Debug, Default)]
pub struct Queue {
    /// Ordered by priority (highest first), then by when the pod became active.
    active: BTreeSet<(Reverse<i32>, u64, String)>,
    in_active: HashMap<String, (Reverse<i32>, u64)>,
    seq: u64,
    priority: HashMap<String, i32>,
    backoff: HashMap<String, Instant>,
    unschedulable: HashMap<String, Instant>,
    attempts: HashMap<String, u32>,
    /// When each pod last failed, to know whether its backoff is over.
    last_failure: HashMap<String, Instant>,
}

impl Queue {
    pub fn len(&self) -> (usize, usize, usize) {
        (
            self.active.len(),
            self.backoff.len(),
            self.unschedulable.len(),
        )
    }

    pub fn contains(&self, key: &str) -> bool {
        self.in_active.contains_key(key)
            || self.backoff.contains_key(key)
            || self.unschedulable.contains_key(key)
    }

    /// A new pending pod (or one seen again): queued once.
    pub fn add(&mut self, key: &str) {
        if !self.contains(key) {
            self.push_active(key);
        }
    }

    /// The pod's `spec.priority`, which orders the active queue.
    pub fn set_priority(&mut self, key: &str, priority: i32) {
        self.priority.insert(key.to_owned(), priority);
    }

    fn push_active(&mut self, key: &str) {
        if self.in_active.contains_key(key) {
            return;
        }
        let p = Reverse(self.priority.get(key).copied().unwrap_or(0));
        self.seq += 1;
        self.in_active.insert(key.to_owned(), (p, self.seq));
        self.active.insert((p, self.seq, key.to_owned()));
    }

    pub fn pop(&mut self) -> Option<String> {
        let (_, _, key) = self.active.pop_first()?;
        self.in_active.remove(&key);
        Some(key)
    }

    /// The pod is gone or bound: forget it everywhere.
    pub fn remove(&mut self, key: &str) {
        if let Some((p, seq)) = self.in_active.remove(key) {
            self.active.remove(&(p, seq, key.to_owned()));
        }
        self.priority.remove(key);
        self.backoff.remove(key);
        self.unschedulable.remove(key);
        self.attempts.remove(key);
        self.last_failure.remove(key);
    }

    fn backoff_for(&self, key: &str) -> Duration {
        let n = self.attempts.get(key).copied().unwrap_or(1).max(1);
        let d = INITIAL_BACKOFF.saturating_mul(1 << (n - 1).min(8));
        d.min(MAX_BACKOFF)
    }

    fn backoff_over(&self, key: &str, now: Instant) -> bool {
        self.last_failure
            .get(key)
            .is_none_or(|t| now >= *t + self.backoff_for(key))
    }

    /// No node fitted: wait for a cluster change.
    pub fn unschedulable(&mut self, key: &str, now: Instant) {
        *self.attempts.entry(key.to_owned()).or_default() += 1;
        self.last_failure.insert(key.to_owned(), now);
        self.unschedulable.insert(key.to_owned(), now);
    }

    /// An error (binding failed, API unreachable): retry after the backoff.
    pub fn error(&mut self, key: &str, now: Instant) {
        *self.attempts.entry(key.to_owned()).or_default() += 1;
        self.last_failure.insert(key.to_owned(), now);
        self.backoff
            .insert(key.to_owned(), now + self.backoff_for(key));
    }

    /// Something changed that may let unschedulable pods fit (a node came or changed, a pod
    /// left a node): move them all to active, or to backoff while their backoff runs.
    pub fn cluster_changed(&mut self, now: Instant) {
        let keys: Vec<String> = self.unschedulable.drain().map(|(k, _)| k).collect();
        for k in keys {
            if self.backoff_over(&k, now) {
                self.push_active(&k);
            } else {
                let at = self.last_failure[&k] + self.backoff_for(&k);
                self.backoff.insert(k, at);
            }
        }
    }

    /// Moves pods whose backoff is over to active, and pods unschedulable for too long.
    pub fn flush(&mut self, now: Instant) {
        let ready: Vec<String> = self
            .backoff
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for k in ready {
            self.backoff.remove(&k);
            self.push_active(&k);
        }
        let stale: Vec<String> = self
            .unschedulable
            .iter()
            .filter(|(_, since)| now >= **since + MAX_UNSCHEDULABLE)
            .map(|(k, _)| k.clone())
            .collect();
        for k in stale {
            self.unschedulable.remove(&k);
            self.push_active(&k);
        }
    }

    /// When the next backoff ends, if any pod is backing off.
    pub fn next_wakeup(&self) -> Option<Instant> {
        self.backoff.values().min().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unschedulable_pods_return_on_cluster_change_after_backoff() {
        let mut q = Queue::default();
        let t0 = Instant::now();
        q.add("default/a");
        q.add("default/a");
        assert_eq!(q.pop().as_deref(), Some("default/a"));
        assert_eq!(q.pop(), None);
        q.unschedulable("default/a", t0);
        q.flush(t0 + Duration::from_secs(2));
        assert_eq!(q.pop(), None, "unschedulable pods wait for a change");
        q.cluster_changed(t0);
        assert_eq!(q.pop(), None, "still backing off");
        q.flush(t0 + INITIAL_BACKOFF);
        assert_eq!(q.pop().as_deref(), Some("default/a"));
    }

    #[test]
    fn higher_priority_pods_come_first_then_first_in_first_out() {
        let mut q = Queue::default();
        q.add("default/low-1");
        q.set_priority("default/critical", 2_000_000_000);
        q.add("default/critical");
        q.add("default/low-2");
        q.set_priority("default/mid", 1000);
        q.add("default/mid");
        let order: Vec<String> = std::iter::from_fn(|| q.pop()).collect();
        assert_eq!(
            order,
            [
                "default/critical",
                "default/mid",
                "default/low-1",
                "default/low-2"
            ]
        );
        q.add("default/x");
        q.remove("default/x");
        assert_eq!(q.pop(), None);
    }

    #[test]
    fn backoff_doubles_up_to_the_maximum() {
        let mut q = Queue::default();
        let t0 = Instant::now();
        for _ in 0..3 {
            q.error("default/b", t0);
        }
        assert_eq!(q.next_wakeup(), Some(t0 + Duration::from_secs(4)));
        for _ in 0..10 {
            q.error("default/b", t0);
        }
        assert_eq!(q.next_wakeup(), Some(t0 + MAX_BACKOFF));
    }
}
