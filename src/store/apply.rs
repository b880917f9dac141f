//! Applying etcd requests to the key space: Range, Put, DeleteRange, Txn, Compact, leases.
//!
//! Mirrors etcd's `etcdserver/apply.go` and the request checks of `api/v3rpc/key.go`: the same
//! checks in the same order, so a bad request gets the error etcd gives. Every write turns into
//! WAL records ([`Record`]); replaying those records rebuilds exactly the same state.

use std::collections::BTreeSet;
use std::time::Instant;

use etcd_client::proto::{
    PbCompactionRequest, PbCompactionResponse, PbCompare, PbDeleteRequest, PbDeleteResponse,
    PbLeaseGrantRequest, PbLeaseGrantResponse, PbLeaseRevokeRequest, PbLeaseRevokeResponse,
    PbPutRequest, PbPutResponse, PbRangeRequest, PbRangeResponse, PbResponseHeader, PbResponseOp,
    PbTargetUnion, PbTxnOpRequest, PbTxnOpResponse, PbTxnRequest, PbTxnRequestOp, PbTxnResponse,
};

use super::error::StoreError;
use super::lease::{Leases, MAX_TTL, MIN_TTL};
use super::mvcc::{KeyRange, Mvcc, Version, to_kv};
use super::wal::{Change, Record};

/// etcd's default `--max-txn-ops`.
pub const MAX_TXN_OPS: usize = 128;

/// Everything the store knows: the key space and the leases.
#[derive(Debug, Default)]
pub struct State {
    pub mvcc: Mvcc,
    pub leases: Leases,
}

/// A request that changes state, so it goes through the WAL.
#[derive(Debug, Clone)]
pub enum WriteRequest {
    Put(PbPutRequest),
    DeleteRange(PbDeleteRequest),
    Txn(PbTxnRequest),
    Compact(PbCompactionRequest),
    LeaseGrant(PbLeaseGrantRequest),
    LeaseRevoke(PbLeaseRevokeRequest),
}

#[derive(Debug, Clone)]
pub enum WriteResponse {
    Put(PbPutResponse),
    DeleteRange(PbDeleteResponse),
    Txn(PbTxnResponse),
    Compact(PbCompactionResponse),
    LeaseGrant(PbLeaseGrantResponse),
    LeaseRevoke(PbLeaseRevokeResponse),
}

fn header(revision: i64) -> Option<PbResponseHeader> {
    Some(PbResponseHeader {
        revision,
        ..Default::default()
    })
}

impl State {
    /// Applies one change at revision `rev`, keeping lease attachments in step.
    pub fn apply_change(&mut self, rev: i64, change: &Change) -> Option<Version> {
        match change {
            Change::Put { key, value, lease } => {
                let prev = self.mvcc.put(key, value.clone(), *lease, rev);
                if let Some(p) = prev.as_ref().filter(|p| p.lease != *lease) {
                    self.leases.detach(p.lease, key);
                }
                self.leases.attach(*lease, key);
                prev
            }
            Change::Delete { key } => {
                let prev = self.mvcc.delete(key, rev);
                if let Some(p) = &prev {
                    self.leases.detach(p.lease, key);
                }
                prev
            }
        }
    }

    /// Replays one WAL record (recovery). Lease deadlines start afresh at `now`.
    pub fn replay(&mut self, record: &Record, now: Instant) {
        match record {
            Record::Write { rev, changes } => {
                for c in changes {
                    self.apply_change(*rev, c);
                }
                self.mvcc.finish_rev(*rev);
            }
            Record::LeaseGrant { id, ttl } => self.leases.grant(*id, *ttl, now),
            Record::LeaseRevoke { id } => {
                self.leases.remove(*id);
            }
            Record::Compact { rev } => {
                // A compaction in the log was valid when written; replay cannot make it invalid.
                let _ = self.mvcc.compact(*rev);
            }
        }
    }

    /// Applies a write, returning its response and the records that make it durable.
    pub fn apply(
        &mut self,
        req: &WriteRequest,
        now: Instant,
    ) -> Result<(WriteResponse, Vec<Record>), StoreError> {
        let mut records = Vec::new();
        let resp = match req {
            WriteRequest::Put(p) => {
                check_put(p)?;
                check_put_dynamic(self, p)?;
                let mut w = WriteTxn::new(self);
                let resp = w.put(p);
                records.extend(w.finish());
                WriteResponse::Put(resp)
            }
            WriteRequest::DeleteRange(d) => {
                check_key(&d.key)?;
                let mut w = WriteTxn::new(self);
                let resp = w.delete(d);
                records.extend(w.finish());
                WriteResponse::DeleteRange(resp)
            }
            WriteRequest::Txn(t) => {
                check_txn(t)?;
                let read_rev = self.mvcc.current();
                let mut path = Vec::new();
                compare_path(&self.mvcc, t, read_rev, &mut path);
                check_txn_dynamic(self, t, &mut path.iter().copied())?;
                let mut w = WriteTxn::new(self);
                let resp = w.txn(t, &mut path.into_iter());
                records.extend(w.finish());
                let mut resp = resp;
                resp.header = header(self.mvcc.current());
                WriteResponse::Txn(resp)
            }
            WriteRequest::Compact(c) => {
                self.mvcc.compact(c.revision)?;
                records.push(Record::Compact { rev: c.revision });
                WriteResponse::Compact(PbCompactionResponse {
                    header: header(self.mvcc.current()),
                })
            }
            WriteRequest::LeaseGrant(g) => {
                if g.ttl > MAX_TTL {
                    return Err(StoreError::LeaseTtlTooLarge);
                }
                let mut id = g.id;
                while id == 0 || (g.id == 0 && self.leases.contains(id)) {
                    id = rand::random::<i64>() & i64::MAX;
                }
                if self.leases.contains(id) {
                    return Err(StoreError::LeaseExists);
                }
                let ttl = g.ttl.max(MIN_TTL);
                self.leases.grant(id, ttl, now);
                records.push(Record::LeaseGrant { id, ttl });
                WriteResponse::LeaseGrant(PbLeaseGrantResponse {
                    header: header(self.mvcc.current()),
                    id,
                    ttl,
                    error: String::new(),
                })
            }
            WriteRequest::LeaseRevoke(r) => {
                let lease = self.leases.get(r.id).ok_or(StoreError::LeaseNotFound)?;
                // etcd deletes a lease's keys in sorted order, all in one revision.
                let keys: Vec<Vec<u8>> = lease.keys.iter().cloned().collect();
                let mut w = WriteTxn::new(self);
                for key in keys {
                    w.delete(&PbDeleteRequest {
                        key,
                        ..Default::default()
                    });
                }
                records.extend(w.finish());
                self.leases.remove(r.id);
                records.push(Record::LeaseRevoke { id: r.id });
                WriteResponse::LeaseRevoke(PbLeaseRevokeResponse {
                    header: header(self.mvcc.current()),
                })
            }
        };
        Ok((resp, records))
    }
}

/// A write transaction: every change it makes shares one new revision.
struct WriteTxn<'a> {
    state: &'a mut State,
    rev: i64,
    changes: Vec<Change>,
}

impl<'a> WriteTxn<'a> {
    fn new(state: &'a mut State) -> Self {
        let rev = state.mvcc.current() + 1;
        Self {
            state,
            rev,
            changes: Vec::new(),
        }
    }

    /// Reads inside a transaction see its own earlier writes, as in etcd.
    fn read_rev(&self) -> i64 {
        if self.changes.is_empty() {
            self.rev - 1
        } else {
            self.rev
        }
    }

    fn put(&mut self, p: &PbPutRequest) -> PbPutResponse {
        let current = self.state.mvcc.get(&p.key, self.read_rev()).cloned();
        let value = match (&current, p.ignore_value) {
            (Some(c), true) => c.value.clone(),
            _ => p.value.clone(),
        };
        let lease = match (&current, p.ignore_lease) {
            (Some(c), true) => c.lease,
            _ => p.lease,
        };
        let change = Change::Put {
            key: p.key.clone(),
            value,
            lease,
        };
        let prev = self.state.apply_change(self.rev, &change);
        self.changes.push(change);
        PbPutResponse {
            header: header(self.rev),
            prev_kv: prev.filter(|_| p.prev_kv).map(|v| to_kv(&p.key, &v)),
        }
    }

    fn delete(&mut self, d: &PbDeleteRequest) -> PbDeleteResponse {
        let range = KeyRange::new(&d.key, &d.range_end);
        let keys: Vec<Vec<u8>> = self
            .state
            .mvcc
            .range(&range, self.read_rev())
            .map(|(k, _)| k.to_vec())
            .collect();
        let mut prev_kvs = Vec::new();
        for key in &keys {
            let change = Change::Delete { key: key.clone() };
            if let Some(prev) = self.state.apply_change(self.rev, &change) {
                if d.prev_kv {
                    prev_kvs.push(to_kv(key, &prev));
                }
            }
            self.changes.push(change);
        }
        let rev = if self.changes.is_empty() {
            self.rev - 1
        } else {
            self.rev
        };
        PbDeleteResponse {
            header: header(rev),
            deleted: keys.len() as i64,
            prev_kvs,
        }
    }

    fn txn(&mut self, t: &PbTxnRequest, path: &mut impl Iterator<Item = bool>) -> PbTxnResponse {
        let succeeded = path.next().unwrap_or(false);
        let ops = if succeeded { &t.success } else { &t.failure };
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            let response = match &op.request {
                Some(PbTxnOpRequest::RequestRange(r)) => {
                    let rev = self.read_rev();
                    // Checked before the transaction began; a failure here cannot happen.
                    let resp = range(&self.state.mvcc, r, rev).unwrap_or_default();
                    Some(PbTxnOpResponse::ResponseRange(resp))
                }
                Some(PbTxnOpRequest::RequestPut(p)) => {
                    Some(PbTxnOpResponse::ResponsePut(self.put(p)))
                }
                Some(PbTxnOpRequest::RequestDeleteRange(d)) => {
                    Some(PbTxnOpResponse::ResponseDeleteRange(self.delete(d)))
                }
                Some(PbTxnOpRequest::RequestTxn(inner)) => {
                    // etcd leaves a nested transaction's header empty.
                    let mut resp = self.txn(inner, path);
                    resp.header = Some(PbResponseHeader::default());
                    Some(PbTxnOpResponse::ResponseTxn(resp))
                }
                None => None,
            };
            responses.push(PbResponseOp { response });
        }
        PbTxnResponse {
            header: None,
            succeeded,
            responses,
        }
    }

    fn finish(self) -> Option<Record> {
        if self.changes.is_empty() {
            return None;
        }
        self.state.mvcc.finish_rev(self.rev);
        Some(Record::Write {
            rev: self.rev,
            changes: self.changes,
        })
    }
}

/// Range, as etcd's `applierV3backend.Range`: filter, count, sort, then limit.
pub fn range(m: &Mvcc, r: &PbRangeRequest, latest: i64) -> Result<PbRangeResponse, StoreError> {
    check_key(&r.key)?;
    let rev = m.check_rev(r.revision, latest)?;
    let range = KeyRange::new(&r.key, &r.range_end);
    let mut kvs: Vec<(&[u8], &Version)> = m.range(&range, rev).collect();
    let count = kvs.len() as i64;
    if r.count_only {
        return Ok(PbRangeResponse {
            header: header(latest),
            count,
            ..Default::default()
        });
    }
    kvs.retain(|(_, v)| {
        (r.min_mod_revision == 0 || v.mod_rev >= r.min_mod_revision)
            && (r.max_mod_revision == 0 || v.mod_rev <= r.max_mod_revision)
            && (r.min_create_revision == 0 || v.create_rev >= r.min_create_revision)
            && (r.max_create_revision == 0 || v.create_rev <= r.max_create_revision)
    });
    // SortOrder: NONE=0, ASCEND=1, DESCEND=2; SortTarget: KEY=0, VERSION, CREATE, MOD, VALUE.
    let order = if r.sort_target != 0 && r.sort_order == 0 {
        1
    } else {
        r.sort_order
    };
    if order != 0 {
        kvs.sort_by(|(ka, a), (kb, b)| {
            let o = match r.sort_target {
                1 => a.version.cmp(&b.version),
                2 => a.create_rev.cmp(&b.create_rev),
                3 => a.mod_rev.cmp(&b.mod_rev),
                4 => a.value.cmp(&b.value),
                _ => ka.cmp(kb),
            };
            if order == 2 { o.reverse() } else { o }
        });
    }
    let mut more = false;
    if r.limit > 0 && kvs.len() > r.limit as usize {
        kvs.truncate(r.limit as usize);
        more = true;
    }
    let kvs = kvs
        .into_iter()
        .map(|(k, v)| {
            let mut kv = to_kv(k, v);
            if r.keys_only {
                kv.value.clear();
            }
            kv
        })
        .collect();
    Ok(PbRangeResponse {
        header: header(latest),
        kvs,
        more,
        count,
    })
}

fn check_key(key: &[u8]) -> Result<(), StoreError> {
    if key.is_empty() {
        Err(StoreError::EmptyKey)
    } else {
        Ok(())
    }
}

fn check_put(p: &PbPutRequest) -> Result<(), StoreError> {
    check_key(&p.key)?;
    if p.ignore_value && !p.value.is_empty() {
        return Err(StoreError::ValueProvided);
    }
    if p.ignore_lease && p.lease != 0 {
        return Err(StoreError::LeaseProvided);
    }
    Ok(())
}

fn check_put_dynamic(state: &State, p: &PbPutRequest) -> Result<(), StoreError> {
    if (p.ignore_value || p.ignore_lease) && state.mvcc.get(&p.key, state.mvcc.current()).is_none()
    {
        return Err(StoreError::KeyNotFound);
    }
    if p.lease != 0 && !state.leases.contains(p.lease) {
        return Err(StoreError::LeaseNotFound);
    }
    Ok(())
}

/// The static checks of etcd's `checkTxnRequest` and `checkIntervals`.
fn check_txn(t: &PbTxnRequest) -> Result<(), StoreError> {
    if t.compare.len() > MAX_TXN_OPS
        || t.success.len() > MAX_TXN_OPS
        || t.failure.len() > MAX_TXN_OPS
    {
        return Err(StoreError::TooManyOps);
    }
    if t.compare.iter().any(|c| c.key.is_empty()) {
        return Err(StoreError::EmptyKey);
    }
    for op in t.success.iter().chain(&t.failure) {
        match &op.request {
            Some(PbTxnOpRequest::RequestRange(r)) => check_key(&r.key)?,
            Some(PbTxnOpRequest::RequestPut(p)) => check_put(p)?,
            Some(PbTxnOpRequest::RequestDeleteRange(d)) => check_key(&d.key)?,
            Some(PbTxnOpRequest::RequestTxn(inner)) => check_txn(inner)?,
            None => {}
        }
    }
    written_keys(&t.success)?;
    written_keys(&t.failure)?;
    Ok(())
}

/// The keys a branch writes: (deleted ranges, put keys); a key written twice is an error.
fn written_keys(ops: &[PbTxnRequestOp]) -> Result<(Vec<KeyRange>, BTreeSet<Vec<u8>>), StoreError> {
    let mut dels = Vec::new();
    let mut puts = BTreeSet::new();
    for op in ops {
        match &op.request {
            Some(PbTxnOpRequest::RequestPut(p)) if !puts.insert(p.key.clone()) => {
                return Err(StoreError::DuplicateKey);
            }
            Some(PbTxnOpRequest::RequestDeleteRange(d)) => {
                dels.push(KeyRange::new(&d.key, &d.range_end))
            }
            Some(PbTxnOpRequest::RequestTxn(inner)) => {
                let (sd, sp) = written_keys(&inner.success)?;
                let (fd, fp) = written_keys(&inner.failure)?;
                dels.extend(sd.into_iter().chain(fd));
                for k in sp.union(&fp) {
                    if !puts.insert(k.clone()) {
                        return Err(StoreError::DuplicateKey);
                    }
                }
            }
            _ => {}
        }
    }
    if puts.iter().any(|k| dels.iter().any(|d| d.contains(k))) {
        return Err(StoreError::DuplicateKey);
    }
    Ok((dels, puts))
}

/// Evaluates every compare of the transaction and its nested ones, before anything is written.
fn compare_path(m: &Mvcc, t: &PbTxnRequest, rev: i64, path: &mut Vec<bool>) {
    let ok = t.compare.iter().all(|c| compare(m, c, rev));
    path.push(ok);
    let ops = if ok { &t.success } else { &t.failure };
    for op in ops {
        if let Some(PbTxnOpRequest::RequestTxn(inner)) = &op.request {
            compare_path(m, inner, rev, path);
        }
    }
}

fn check_txn_dynamic(
    state: &State,
    t: &PbTxnRequest,
    path: &mut impl Iterator<Item = bool>,
) -> Result<(), StoreError> {
    let ops = if path.next().unwrap_or(false) {
        &t.success
    } else {
        &t.failure
    };
    for op in ops {
        match &op.request {
            Some(PbTxnOpRequest::RequestPut(p)) => check_put_dynamic(state, p)?,
            Some(PbTxnOpRequest::RequestRange(r)) => {
                state.mvcc.check_rev(r.revision, state.mvcc.current())?;
            }
            Some(PbTxnOpRequest::RequestTxn(inner)) => check_txn_dynamic(state, inner, path)?,
            _ => {}
        }
    }
    Ok(())
}

/// One compare, as etcd's `applyCompare`: every key in the range must satisfy it; an empty
/// range compares against a zero key-value, except for VALUE, which then fails.
fn compare(m: &Mvcc, c: &PbCompare, rev: i64) -> bool {
    let range = KeyRange::new(&c.key, &c.range_end);
    let zero = Version {
        mod_rev: 0,
        create_rev: 0,
        version: 0,
        lease: 0,
        value: vec![],
    };
    let mut found = m.range(&range, rev).peekable();
    if found.peek().is_none() {
        // CompareTarget: VERSION=0, CREATE=1, MOD=2, VALUE=3, LEASE=4.
        return c.target != 3 && compare_one(c, &zero);
    }
    found.all(|(_, v)| compare_one(c, v))
}

fn compare_one(c: &PbCompare, v: &Version) -> bool {
    let int = |want: Option<i64>, have: i64| have.cmp(&want.unwrap_or(0));
    let ord = match (c.target, &c.target_union) {
        (3, Some(PbTargetUnion::Value(want))) => v.value.as_slice().cmp(want.as_slice()),
        (3, _) => v.value.as_slice().cmp(&[][..]),
        (0, u) => int(u.as_ref().and_then(|u| as_int(u, 0)), v.version),
        (1, u) => int(u.as_ref().and_then(|u| as_int(u, 1)), v.create_rev),
        (2, u) => int(u.as_ref().and_then(|u| as_int(u, 2)), v.mod_rev),
        (4, u) => int(u.as_ref().and_then(|u| as_int(u, 4)), v.lease),
        _ => return false,
    };
    // CompareResult: EQUAL=0, GREATER=1, LESS=2, NOT_EQUAL=3.
    match c.result {
        0 => ord.is_eq(),
        1 => ord.is_gt(),
        2 => ord.is_lt(),
        3 => ord.is_ne(),
        _ => false,
    }
}

/// The integer a compare carries for `target`, as protobuf's getters read a oneof.
fn as_int(u: &PbTargetUnion, target: i32) -> Option<i64> {
    match (u, target) {
        (PbTargetUnion::Version(x), 0)
        | (PbTargetUnion::CreateRevision(x), 1)
        | (PbTargetUnion::ModRevision(x), 2)
        | (PbTargetUnion::Lease(x), 4) => Some(*x),
        _ => None,
    }
}
