//! The store's Prometheus metrics, under the names etcd exports, rendered as Prometheus text.
//!
//! Mirrors the etcd metrics a dashboard or a learner looks at first: WAL fsync and backend
//! commit latency histograms, database size, current and compacted revision, leader presence.
//! Leaves out everything else (gRPC counters, raft proposals, network).

use crate::component::metrics::Histogram;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// etcd's buckets for disk latency: 1 ms doubling to about 8 s.
const DISK_BUCKET_START: f64 = 0.001;
const DISK_BUCKETS: u32 = 14;

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
            wal_fsync: Histogram::doubling(DISK_BUCKET_START, DISK_BUCKETS),
            backend_commit: Histogram::doubling(DISK_BUCKET_START, DISK_BUCKETS),
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
    use std::time::Duration;

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
