//! Auto-compaction, as etcd's `--auto-compaction-mode` and `--auto-compaction-retention`.
//!
//! Mirrors etcd 3.4's `v3compactor`. Periodic mode: the current revision is sampled every tenth
//! of the retention window (at most every 6 minutes); once a full window has passed, the store
//! is compacted to the revision sampled one window ago, and again every window (at most
//! hourly). Revision mode: every 5 minutes, compact to the current revision minus the retention.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use etcd_client::proto::PbCompactionRequest;

use super::apply::WriteRequest;
use super::backend::Store;
use super::error::StoreError;
use crate::api::duration;

#[derive(Debug, thiserror::Error)]
#[error("invalid {flag} {value:?}: {hint}")]
pub struct ParseFlagError {
    flag: &'static str,
    value: String,
    hint: &'static str,
}

/// What to keep, decoded from the two flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retention {
    /// Keep this much time of history.
    Periodic(Duration),
    /// Keep this many revisions of history.
    Revisions(i64),
}

/// Reads `--auto-compaction-mode` and `--auto-compaction-retention` as etcd does: in periodic
/// mode a bare number means hours; `0` disables auto-compaction.
pub fn parse_retention(mode: &str, value: &str) -> Result<Option<Retention>, ParseFlagError> {
    let bad = |hint| ParseFlagError {
        flag: "--auto-compaction-retention",
        value: value.into(),
        hint,
    };
    if mode == "revision" {
        let n: i64 = value
            .parse()
            .map_err(|_| bad("use a number of revisions"))?;
        return Ok((n > 0).then_some(Retention::Revisions(n)));
    }
    let d = match value.parse::<u64>() {
        Ok(hours) => Duration::from_secs(hours * 3600),
        Err(_) => {
            duration::parse(value).ok_or_else(|| bad("use hours (\"1\") or a duration (\"5m\")"))?
        }
    };
    Ok((!d.is_zero()).then_some(Retention::Periodic(d)))
}

async fn compact(store: &Store, rev: i64) -> Result<(), StoreError> {
    let req = WriteRequest::Compact(PbCompactionRequest {
        revision: rev,
        physical: false,
    });
    match store.write(req).await {
        Ok(_) => {
            eprintln!("klab-store: auto-compacted to revision {rev}");
            Ok(())
        }
        Err(StoreError::Compacted) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Runs the auto-compactor until the store stops.
pub async fn run(store: Store, retention: Retention) {
    match retention {
        Retention::Periodic(d) => periodic(store, d).await,
        Retention::Revisions(n) => loop {
            tokio::time::sleep(Duration::from_secs(300)).await;
            let rev = store.visible() - n;
            if rev > 0 {
                match compact(&store, rev).await {
                    Err(StoreError::Stopped) => return,
                    Err(e) => eprintln!("klab-store: auto-compaction to {rev} failed: {e}"),
                    Ok(()) => {}
                }
            }
        },
    }
}

async fn periodic(store: Store, retention: Duration) {
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
        match compact(&store, rev).await {
            Err(StoreError::Stopped) => return,
            Err(e) => {
                eprintln!("klab-store: auto-compaction to revision {rev} failed: {e}");
                continue;
            }
            Ok(()) => {}
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
        let p = |v| parse_retention("periodic", v).unwrap();
        assert_eq!(p("0"), None);
        assert_eq!(p("1"), Some(Retention::Periodic(Duration::from_secs(3600))));
        assert_eq!(p("5m"), Some(Retention::Periodic(Duration::from_secs(300))));
        assert_eq!(
            p("1h30m"),
            Some(Retention::Periodic(Duration::from_secs(5400)))
        );
        assert!(parse_retention("periodic", "5 minutes").is_err());
        assert_eq!(
            parse_retention("revision", "1000").unwrap(),
            Some(Retention::Revisions(1000))
        );
    }
}
