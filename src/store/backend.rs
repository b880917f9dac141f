//! The commit pipeline: one thread applies writes in order and group-commits them to the WAL.
//!
//! Mirrors what etcd's raft loop plus backend batching do on one member: requests queue up while
//! the previous batch is being fsynced, the next batch takes all of them, and one `fdatasync`
//! covers the whole batch. A write is answered only after that fsync returned. Readers never see
//! a revision that is not yet durable: they read at the *visible* revision, which moves only
//! after the fsync. If a write or fsync fails, the batch is rolled back (keys and leases), nothing
//! in it is acknowledged, and the store refuses every later write (as etcd stops on a WAL error).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock, mpsc};
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, watch};

use super::apply::{State, WriteRequest, WriteResponse};
use super::error::StoreError;
use super::lease::Lease;
use super::metrics::Metrics;
use super::mvcc::KeyRange;
use super::wal::{Record, Wal, WalError};

/// Take a snapshot (and empty the log) once the log is this big.
const SNAPSHOT_AFTER_BYTES: u64 = 64 << 20;
/// At most this many requests share one fsync.
const MAX_BATCH: usize = 4096;

struct Job {
    req: WriteRequest,
    reply: oneshot::Sender<Result<WriteResponse, StoreError>>,
}

/// Identity of this member, as etcd puts it in every response header.
#[derive(Debug, Clone, Copy)]
pub struct Ids {
    pub cluster_id: u64,
    pub member_id: u64,
}

impl Ids {
    /// Stable ids derived from the member name (etcd derives them from its peer URLs).
    pub fn from_name(name: &str) -> Self {
        let fnv = |s: &str| {
            s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
            })
        };
        Self {
            cluster_id: fnv(&format!("klab-store/{name}")),
            member_id: fnv(name),
        }
    }
}

/// What every part of the server shares.
pub struct Shared {
    pub state: RwLock<State>,
    visible: watch::Sender<i64>,
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    commit_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Set after a failed write or fsync: the error every later write gets.
    failed: Mutex<Option<StoreError>>,
    pub metrics: Metrics,
    pub ids: Ids,
    pub name: String,
    pub client_urls: Vec<String>,
    pub peer_urls: Vec<String>,
    raft_index: std::sync::atomic::AtomicU64,
}

/// A handle to the running store; cheap to clone.
#[derive(Clone)]
pub struct Store(pub Arc<Shared>);

impl Store {
    /// Recovers the data directory and starts the commit thread.
    pub fn open(
        data_dir: &std::path::Path,
        name: &str,
        client_urls: Vec<String>,
        peer_urls: Vec<String>,
    ) -> Result<Store, WalError> {
        let (wal, state) = Wal::open(data_dir, Instant::now())?;
        let rev = state.mvcc.current();
        let (tx, rx) = mpsc::channel();
        let shared = Arc::new(Shared {
            state: RwLock::new(state),
            visible: watch::channel(rev).0,
            jobs: Mutex::new(Some(tx)),
            commit_thread: Mutex::new(None),
            failed: Mutex::new(None),
            metrics: Metrics::default(),
            ids: Ids::from_name(name),
            name: name.to_owned(),
            client_urls,
            peer_urls,
            raft_index: wal.last_index().into(),
        });
        shared.publish(&wal, rev);
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("klab-store-commit".into())
            .spawn(move || commit_loop(&s, wal, rx))
            .map_err(|e| WalError::Open {
                path: data_dir.to_owned(),
                source: e,
            })?;
        if let Ok(mut t) = shared.commit_thread.lock() {
            *t = Some(thread);
        }
        Ok(Store(shared))
    }

    /// Submits a write and waits until it is durable (or refused).
    pub async fn write(&self, req: WriteRequest) -> Result<WriteResponse, StoreError> {
        let (reply, rx) = oneshot::channel();
        {
            let jobs = self.0.jobs.lock().map_err(|_| StoreError::Stopped)?;
            let tx = jobs.as_ref().ok_or(StoreError::Stopped)?;
            tx.send(Job { req, reply })
                .map_err(|_| StoreError::Stopped)?;
        }
        rx.await.map_err(|_| StoreError::Stopped)?
    }

    /// The newest durable revision; reads happen at this revision.
    pub fn visible(&self) -> i64 {
        *self.0.visible.borrow()
    }

    /// Wakes whenever a new revision became durable.
    pub fn subscribe(&self) -> watch::Receiver<i64> {
        self.0.visible.subscribe()
    }

    /// Runs `f` on the state under the read lock, with the visible revision.
    pub fn read<R>(&self, f: impl FnOnce(&State, i64) -> R) -> R {
        let latest = self.visible();
        let state = self.0.state.read().unwrap_or_else(|p| p.into_inner());
        f(&state, latest)
    }

    /// Restarts a lease's clock; `None` if there is no such lease.
    pub fn keepalive(&self, id: i64) -> Option<i64> {
        let mut state = self.0.state.write().unwrap_or_else(|p| p.into_inner());
        state.leases.renew(id, Instant::now())
    }

    /// Why the store refuses writes, if it does.
    pub fn failure(&self) -> Option<String> {
        self.0
            .failed
            .lock()
            .ok()
            .and_then(|f| f.as_ref().map(ToString::to_string))
    }

    pub fn raft_index(&self) -> u64 {
        self.0.raft_index.load(Ordering::Relaxed)
    }

    /// Stops accepting writes and waits until the commit thread has drained its queue and
    /// released the data directory.
    pub fn close(&self) {
        if let Ok(mut jobs) = self.0.jobs.lock() {
            jobs.take();
        }
        let thread = self.0.commit_thread.lock().ok().and_then(|mut t| t.take());
        if let Some(t) = thread {
            let _ = t.join();
        }
    }

    /// Revokes expired leases every half second, deleting their keys (etcd's lessor loop).
    pub async fn expire_leases(self) {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tick.tick().await;
            let expired = self.read(|s, _| s.leases.expired(Instant::now()));
            for id in expired {
                let req = etcd_client::proto::PbLeaseRevokeRequest { id };
                match self.write(WriteRequest::LeaseRevoke(req)).await {
                    Ok(_) | Err(StoreError::LeaseNotFound) => {}
                    Err(StoreError::Stopped) => return,
                    Err(e) => eprintln!("klab-store: revoking expired lease {id:x}: {e}"),
                }
            }
        }
    }
}

impl Shared {
    fn publish(&self, wal: &Wal, rev: i64) {
        self.raft_index.store(wal.last_index(), Ordering::Relaxed);
        self.metrics.db_size.store(wal.size(), Ordering::Relaxed);
        self.metrics
            .current_revision
            .store(rev as u64, Ordering::Relaxed);
        self.visible.send_replace(rev);
    }

    fn fail(&self, e: &WalError) -> StoreError {
        let mut msg = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            msg.push_str(&format!(": {s}"));
            source = s.source();
        }
        eprintln!("klab-store: {msg}; refusing all writes until restart");
        let err = if e.is_no_space() {
            StoreError::NoSpace
        } else {
            StoreError::StorageFailed(msg)
        };
        if let Ok(mut f) = self.failed.lock() {
            f.get_or_insert(err.clone());
        }
        err
    }
}

/// Returns the state to the last durable revision after a batch failed to reach the disk.
/// (A compaction in the batch stays done: it only forgot history, it changed no current value.)
fn undo(state: &mut State, durable: i64, records: &[Record], revoked: Vec<Lease>) {
    state.mvcc.rollback(durable);
    for r in records {
        if let Record::LeaseGrant { id, .. } = r {
            state.leases.remove(*id);
        }
    }
    for lease in revoked {
        state.leases.restore(lease);
    }
    let State { mvcc, leases } = state;
    let live = mvcc
        .range(&KeyRange::From(vec![]), durable)
        .filter(|(_, v)| v.lease != 0);
    leases.reattach(live.map(|(k, v)| (k, v.lease)));
}

fn commit_loop(shared: &Shared, mut wal: Wal, rx: mpsc::Receiver<Job>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let started = Instant::now();
        if let Some(err) = shared.failed.lock().ok().and_then(|f| f.clone()) {
            for job in batch {
                let _ = job.reply.send(Err(err.clone()));
            }
            continue;
        }
        let mut records = Vec::new();
        let mut results = Vec::with_capacity(batch.len());
        let mut compacted = false;
        let durable = *shared.visible.borrow();
        let mut revoked = Vec::new();
        {
            let mut state = shared.state.write().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            // Kept aside so a revoke can be undone if this batch never reaches the disk.
            for job in &batch {
                if let WriteRequest::LeaseRevoke(r) = &job.req {
                    revoked.extend(state.leases.get(r.id).cloned());
                }
            }
            for job in &batch {
                let result = state.apply(&job.req, now).map(|(resp, recs)| {
                    compacted |= matches!(job.req, WriteRequest::Compact(_));
                    records.extend(recs);
                    resp
                });
                results.push(result);
            }
        }
        let outcome = if records.is_empty() {
            Ok(())
        } else {
            wal.append(&records).and_then(|()| {
                let t = Instant::now();
                let r = wal.sync();
                shared.metrics.wal_fsync.observe(t.elapsed());
                r
            })
        };
        if let Err(e) = outcome {
            let err = shared.fail(&e);
            let mut state = shared.state.write().unwrap_or_else(|p| p.into_inner());
            undo(&mut state, durable, &records, revoked);
            drop(state);
            for job in batch {
                let _ = job.reply.send(Err(err.clone()));
            }
            continue;
        }
        let (rev, compact_rev) = {
            let state = shared.state.read().unwrap_or_else(|p| p.into_inner());
            if compacted || wal.wal_bytes() > SNAPSHOT_AFTER_BYTES {
                if let Err(e) = wal.snapshot(&state) {
                    shared.fail(&e);
                }
            }
            (state.mvcc.current(), state.mvcc.compacted())
        };
        shared
            .metrics
            .compact_revision
            .store(compact_rev as u64, Ordering::Relaxed);
        shared.publish(&wal, rev);
        shared.metrics.backend_commit.observe(started.elapsed());
        for (job, result) in batch.into_iter().zip(results) {
            let _ = job.reply.send(result);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etcd_client::proto::{PbLeaseGrantRequest, PbLeaseRevokeRequest, PbPutRequest};

    fn apply(state: &mut State, req: WriteRequest, records: &mut Vec<Record>) {
        let (_, recs) = state.apply(&req, Instant::now()).unwrap();
        records.extend(recs);
    }

    fn put(key: &str, lease: i64) -> WriteRequest {
        WriteRequest::Put(PbPutRequest {
            key: key.into(),
            lease,
            ..Default::default()
        })
    }

    #[test]
    fn undo_returns_keys_and_leases_to_the_durable_state() {
        let mut state = State::default();
        let mut durable_records = Vec::new();
        let grant = |id| WriteRequest::LeaseGrant(PbLeaseGrantRequest { ttl: 60, id });
        apply(&mut state, grant(7), &mut durable_records);
        apply(&mut state, put("a", 7), &mut durable_records);
        let durable = state.mvcc.current();

        // A batch that will "fail": a new lease with a key, and the revoke of lease 7.
        let mut records = Vec::new();
        let revoked = vec![state.leases.get(7).unwrap().clone()];
        apply(&mut state, grant(8), &mut records);
        apply(&mut state, put("b", 8), &mut records);
        apply(
            &mut state,
            WriteRequest::LeaseRevoke(PbLeaseRevokeRequest { id: 7 }),
            &mut records,
        );
        assert!(state.mvcc.get(b"a", state.mvcc.current()).is_none());

        undo(&mut state, durable, &records, revoked);
        assert_eq!(state.mvcc.current(), durable);
        assert!(state.mvcc.get(b"a", durable).is_some());
        assert!(state.mvcc.get(b"b", durable).is_none());
        assert_eq!(state.leases.ids().collect::<Vec<_>>(), vec![7]);
        assert!(state.leases.get(7).unwrap().keys.contains(b"a".as_slice()));
    }
}
