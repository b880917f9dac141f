//! Periodic auto-compaction, as etcd's `--auto-compaction-mode=periodic`.
//!
//! Mirrors etcd 3.4's `v3compactor/periodic.go`: the current revision is sampled every tenth of
//! the retention window (at most every 6 minutes); once a full window has passed, the store is
//! compacted to the revision sampled one window ago, and again every window (at most hourly).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use etcd_client::proto::PbCompactionRequest;

use super::apply::WriteRequest;
use super::backend::Store;
use super::error::StoreError;

#[derive(Debug, thiserror::Error)]
#[error(
    "invalid --auto-compaction-retention {0:?}: use hours (\"1\") or a duration (\"5m\", \"1h30m\")"
)]
pub struct ParseRetentionError(String);

/// Parses etcd's retention: a bare number means hours, otherwise a Go duration. `0` disables.
pub fn parse_retention(s: &str) -> Result<Option<Duration>, ParseRetentionError> {
    let bad = || ParseRetentionError(s.to_owned());
    if let Ok(hours) = s.parse::<u64>() {
        return Ok((hours > 0).then(|| Duration::from_secs(hours * 3600)));
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .ok_or_else(bad)?;
        let n: f64 = rest[..digits].parse().map_err(|_| bad())?;
        let unit_len = rest[digits..]
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len() - digits);
        let secs = match &rest[digits..digits + unit_len] {
            "h" => n * 3600.0,
            "m" => n * 60.0,
            "s" => n,
            "ms" => n / 1000.0,
            _ => return Err(bad()),
        };
        total += Duration::from_secs_f64(secs);
        rest = &rest[digits + unit_len..];
    }
    Ok((!total.is_zero()).then_some(total))
}

/// Runs the periodic compactor for `retention` until the store stops.
pub async fn run(store: Store, retention: Duration) {
    let interval = retention.min(Duration::from_secs(3600)) / 10;
    let keep = (retention.as_secs_f64() / interval.as_secs_f64()) as usize + 1;
    let mut samples: VecDeque<i64> = VecDeque::new();
    let mut last = Instant::now();
    let mut window = retention;
    loop {
        samples.push_back(store.visible());
        if samples.len() > keep {
            samples.pop_front();
        }
        tokio::time::sleep(interval).await;
        if last.elapsed() < window {
            continue;
        }
        let Some(&rev) = samples.front() else {
            continue;
        };
        let req = WriteRequest::Compact(PbCompactionRequest {
            revision: rev,
            physical: false,
        });
        match store.write(req).await {
            Ok(_) => eprintln!("klab-store: auto-compacted to revision {rev}"),
            Err(StoreError::Compacted) => {}
            Err(StoreError::Stopped) => return,
            Err(e) => {
                eprintln!("klab-store: auto-compaction to revision {rev} failed: {e}");
                continue;
            }
        }
        last = Instant::now();
        window = retention.min(Duration::from_secs(3600));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_as_etcd_reads_it() {
        assert_eq!(parse_retention("0").unwrap(), None);
        assert_eq!(
            parse_retention("1").unwrap(),
            Some(Duration::from_secs(3600))
        );
        assert_eq!(
            parse_retention("5m").unwrap(),
            Some(Duration::from_secs(300))
        );
        assert_eq!(
            parse_retention("1h30m").unwrap(),
            Some(Duration::from_secs(5400))
        );
        assert!(parse_retention("5 minutes").is_err());
    }
}
