//! Leader election on a coordination.k8s.io/v1 Lease, so that of several copies of a
//! component only one acts, and another takes over when it stops renewing.
//!
//! Mirrors `client-go/tools/leaderelection` with the `leases` lock: a candidate takes the
//! Lease when it is free or when the holder's record has not changed for a whole lease
//! duration *as this candidate observed it* (its own clock, so clock skew between machines
//! does not matter); the leader renews every retry period and gives up (the process exits,
//! as upstream's components do) when it cannot renew within the renew deadline. Writes go
//! through optimistic concurrency on resourceVersion, so two candidates never both win.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};

#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("leaderelection lost: could not renew lease {namespace}/{name} within {deadline:?}")]
    Lost {
        namespace: String,
        name: String,
        deadline: Duration,
    },
}

/// `--leader-elect-*` settings.
#[derive(Debug, Clone)]
pub struct Config {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

/// A unique identity as upstream makes it: hostname, underscore, a random UUID.
pub fn identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into());
    let r: u128 = rand::random();
    format!("{host}_{r:032x}")
}

pub struct Elector {
    api: Api<Lease>,
    cfg: Config,
    /// The last record seen (holder, renewTime) and when this process saw it change.
    observed: Option<(String, String, Instant)>,
}

impl Elector {
    pub fn new(client: kube::Client, cfg: Config) -> Elector {
        Elector {
            api: Api::namespaced(client, &cfg.namespace),
            cfg,
            observed: None,
        }
    }

    /// One attempt to take or renew the Lease. True when this process holds it afterwards.
    pub async fn try_acquire_or_renew(&mut self) -> bool {
        let now = Instant::now();
        let me = self.cfg.identity.clone();
        let ts = MicroTime(Timestamp::now());
        let current = match self.api.get_opt(&self.cfg.name).await {
            Ok(c) => c,
            Err(e) => {
                super::log(
                    'E',
                    format!(
                        "error retrieving resource lock {}/{}: {e}",
                        self.cfg.namespace, self.cfg.name
                    ),
                );
                return false;
            }
        };
        let secs = i32::try_from(self.cfg.lease_duration.as_secs()).unwrap_or(i32::MAX);
        let Some(mut lease) = current else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.cfg.name.clone()),
                    namespace: Some(self.cfg.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(me),
                    lease_duration_seconds: Some(secs),
                    acquire_time: Some(ts.clone()),
                    renew_time: Some(ts),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return self
                .api
                .create(&PostParams::default(), &lease)
                .await
                .is_ok();
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let renew = spec
            .renew_time
            .as_ref()
            .map(|t| t.0.to_string())
            .unwrap_or_default();
        let changed = self
            .observed
            .as_ref()
            .is_none_or(|(h, r, _)| *h != holder || *r != renew);
        if changed {
            self.observed = Some((holder.clone(), renew, now));
        }
        let seen_at = self.observed.as_ref().map(|o| o.2).unwrap_or(now);
        let held_by_other = !holder.is_empty() && holder != me;
        let duration = spec
            .lease_duration_seconds
            .map(|s| Duration::from_secs(s.max(0) as u64))
            .unwrap_or(self.cfg.lease_duration);
        if held_by_other && now < seen_at + duration {
            return false;
        }
        let mut new = spec;
        if holder != me {
            new.acquire_time = Some(ts.clone());
            new.lease_transitions = Some(new.lease_transitions.unwrap_or(0) + 1);
        }
        new.holder_identity = Some(me);
        new.renew_time = Some(ts);
        new.lease_duration_seconds = Some(secs);
        lease.spec = Some(new);
        let name = self.cfg.name.clone();
        self.api
            .replace(&name, &PostParams::default(), &lease)
            .await
            .is_ok()
    }

    /// Waits until this process is the leader.
    pub async fn acquire(&mut self) {
        super::log(
            'I',
            format!(
                "attempting to acquire leader lease {}/{}...",
                self.cfg.namespace, self.cfg.name
            ),
        );
        while !self.try_acquire_or_renew().await {
            tokio::time::sleep(self.cfg.retry_period).await;
        }
        super::log(
            'I',
            format!(
                "successfully acquired lease {}/{}",
                self.cfg.namespace, self.cfg.name
            ),
        );
    }

    /// Renews forever; returns the error once renewing failed for the whole renew deadline.
    pub async fn hold(mut self) -> LeaderError {
        let mut last_renew = Instant::now();
        loop {
            tokio::time::sleep(self.cfg.retry_period).await;
            if self.try_acquire_or_renew().await {
                last_renew = Instant::now();
            } else if last_renew.elapsed() >= self.cfg.renew_deadline {
                return LeaderError::Lost {
                    namespace: self.cfg.namespace.clone(),
                    name: self.cfg.name.clone(),
                    deadline: self.cfg.renew_deadline,
                };
            }
        }
    }
}
