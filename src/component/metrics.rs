//! A fixed-bucket Prometheus histogram and its text exposition, as the components export
//! their latency metrics (klab-store's etcd WAL and commit latencies, kube-proxy's sync
//! latency). Mirrors the histogram of `k8s.io/component-base/metrics` (Prometheus' client),
//! without labels.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A fixed-bucket histogram, as Prometheus' client keeps one.
#[derive(Debug)]
pub struct Histogram {
    /// Upper bounds in seconds.
    bounds: Vec<f64>,
    counts: Vec<AtomicU64>,
    sum_micros: AtomicU64,
    total: AtomicU64,
}

impl Histogram {
    /// Buckets from `start` seconds, doubling, `count` of them (Prometheus'
    /// `ExponentialBuckets(start, 2, count)`).
    pub fn doubling(start: f64, count: u32) -> Self {
        let bounds: Vec<f64> = (0..count).map(|i| start * f64::from(1u32 << i)).collect();
        Self {
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            bounds,
            sum_micros: AtomicU64::new(0),
            total: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = self.bounds.iter().position(|b| secs <= *b) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        self.sum_micros.fetch_add(
            u64::try_from(d.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        self.total.fetch_add(1, Ordering::Relaxed);
    }

    /// Appends the histogram as Prometheus text: HELP, TYPE, cumulative buckets, sum, count.
    pub fn render(&self, name: &str, help: &str, out: &mut String) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_the_sum_is_in_seconds() {
        let h = Histogram::doubling(0.001, 3);
        h.observe(Duration::from_micros(500));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(1));
        let mut out = String::new();
        h.render("x_seconds", "X.", &mut out);
        assert_eq!(
            out,
            "# HELP x_seconds X.\n# TYPE x_seconds histogram\n\
             x_seconds_bucket{le=\"0.001\"} 1\nx_seconds_bucket{le=\"0.002\"} 1\n\
             x_seconds_bucket{le=\"0.004\"} 2\nx_seconds_bucket{le=\"+Inf\"} 3\n\
             x_seconds_sum 1.0035\nx_seconds_count 3\n"
        );
    }
}
