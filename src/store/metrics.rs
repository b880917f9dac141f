//! The store's Prometheus metrics, under the names etcd exports, rendered as Prometheus text.
//!
//! Mirrors the etcd metrics a dashboard or a learner looks at first: WAL fsync and backend
//! commit latency histograms, database size, current and compacted revision, leader presence.
//! Leaves out everything else (gRPC counters, raft proposals, network).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A fixed-bucket histogram, as Prometheus' client keeps one.
#[derive(Debug)]
pub struct Histogram {
    bounds: Vec<f64>,
    counts: Vec<AtomicU64>,
    sum_micros: AtomicU64,
    total: AtomicU64,
}

impl Histogram {
    /// etcd's buckets for disk latency: 1 ms doubling to about 8 s.
    pub fn disk() -> Self {
        let bounds: Vec<f64> = (0..14).map(|i| 0.001 * f64::from(1u32 << i)).collect();
        let counts = bounds.iter().map(|_| AtomicU64::new(0)).collect();
        Self {
            bounds,
            counts,
            sum_micros: AtomicU64::new(0),
            total: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = self.bounds.iter().position(|b| secs <= *b) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        self.sum_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
        self.total.fetch_add(1, Ordering::Relaxed);
    }

    fn render(&self, name: &str, help: &str, out: &mut String) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            cumulative += c.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cumulative}");
        }
        let total = self.total.load(Ordering::Relaxed);
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(
            out,
            "{name}_bucket{{le=\"+Inf\"}} {total}\n{name}_sum {sum}\n{name}_count {total}"
        );
    }
}

/// Every metric the store exports.
#[derive(Debug)]
pub struct Metrics {
    pub wal_fsync: Histogram,
    pub backend_commit: Histogram,
    pub db_size: AtomicU64,
    pub current_revision: AtomicU64,
    pub compact_revision: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            wal_fsync: Histogram::disk(),
            backend_commit: Histogram::disk(),
            db_size: AtomicU64::new(0),
            current_revision: AtomicU64::new(0),
            compact_revision: AtomicU64::new(0),
        }
    }
}

impl Metrics {
    /// The Prometheus text exposition of all metrics.
    pub fn render(&self) -> String {
        let mut out = String::new();
        self.wal_fsync.render(
            "etcd_disk_wal_fsync_duration_seconds",
            "The latency distributions of fsync called by WAL.",
            &mut out,
        );
        self.backend_commit.render(
            "etcd_disk_backend_commit_duration_seconds",
            "The latency distributions of commit called by backend.",
            &mut out,
        );
        let gauges = [
            (
                "etcd_mvcc_db_total_size_in_bytes",
                "Total size of the underlying database physically allocated in bytes.",
                &self.db_size,
            ),
            (
                "etcd_debugging_mvcc_current_revision",
                "The current revision of store.",
                &self.current_revision,
            ),
            (
                "etcd_debugging_mvcc_compact_revision",
                "The revision of the last compaction in store.",
                &self.compact_revision,
            ),
        ];
        for (name, help, v) in gauges {
            let v = v.load(Ordering::Relaxed);
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        out.push_str("# HELP etcd_server_has_leader Whether or not a leader exists. 1 is existence, 0 is not.\n");
        out.push_str("# TYPE etcd_server_has_leader gauge\netcd_server_has_leader 1\n");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative() {
        let m = Metrics::default();
        m.wal_fsync.observe(Duration::from_micros(500));
        m.wal_fsync.observe(Duration::from_millis(3));
        let text = m.render();
        assert!(text.contains("etcd_disk_wal_fsync_duration_seconds_bucket{le=\"0.001\"} 1"));
        assert!(text.contains("etcd_disk_wal_fsync_duration_seconds_bucket{le=\"0.004\"} 2"));
        assert!(text.contains("etcd_disk_wal_fsync_duration_seconds_count 2"));
    }
}
