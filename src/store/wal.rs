//! The write-ahead log and the snapshot: how the store survives `kill -9` and power loss.
//!
//! Mirrors etcd's `wal` and `snap` packages in spirit (etcd logs raft entries, then applies them
//! to bbolt; klab-store logs the applied changes and keeps the key space in memory). Each record
//! is framed as `[len u32][crc32 u32][payload]`; a torn tail left by a crash fails its length or
//! checksum and is cut off at recovery. A record counts only once `fdatasync` has returned.
//!
//! Files, under `<data-dir>/member/`: `wal/klab.wal` and `snap/klab.snap`. A snapshot is written
//! to a temporary file, synced and renamed, and carries the index of the last record it holds,
//! so records already in it are skipped if the log was not yet emptied when the process died.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use super::apply::State;
use super::mvcc::{Mvcc, Version};

/// One change inside a revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
        lease: i64,
    },
    Delete {
        key: Vec<u8>,
    },
}

/// One durable fact in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    Write { rev: i64, changes: Vec<Change> },
    LeaseGrant { id: i64, ttl: i64 },
    LeaseRevoke { id: i64 },
    Compact { rev: i64 },
}

#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("creating data directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("opening {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is locked: another klab-store or etcd uses this data directory")]
    Locked { path: PathBuf },
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("appending to the WAL")]
    Append(#[source] io::Error),
    #[error("fsync of the WAL")]
    Sync(#[source] io::Error),
    #[error("writing snapshot {path}")]
    WriteSnapshot {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("snapshot {path} is corrupt")]
    CorruptSnapshot { path: PathBuf },
}

impl WalError {
    /// Whether the disk is full (etcd turns this into its NOSPACE alarm).
    pub fn is_no_space(&self) -> bool {
        use std::error::Error;
        let io = self.source().and_then(|s| s.downcast_ref::<io::Error>());
        io.is_some_and(|e| e.raw_os_error() == Some(28))
    }
}

// ---- encoding ------------------------------------------------------------------------------

fn put_i64(buf: &mut Vec<u8>, x: i64) {
    buf.extend_from_slice(&x.to_le_bytes());
}

fn put_bytes(buf: &mut Vec<u8>, b: &[u8]) {
    buf.extend_from_slice(&(b.len() as u32).to_le_bytes());
    buf.extend_from_slice(b);
}

/// A cursor over a payload; every read fails cleanly on truncated input.
struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn i64(&mut self) -> Option<i64> {
        self.take(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap_or_default()))
    }
    fn bytes(&mut self) -> Option<Vec<u8>> {
        let n = u32::from_le_bytes(self.take(4)?.try_into().ok()?) as usize;
        self.take(n).map(<[u8]>::to_vec)
    }
}

const WRITE: u8 = 1;
const LEASE_GRANT: u8 = 2;
const LEASE_REVOKE: u8 = 3;
const COMPACT: u8 = 4;
const SNAP_HEADER: u8 = 10;
const SNAP_KEY: u8 = 11;
const SNAP_LEASE: u8 = 12;

fn encode_record(index: u64, r: &Record, buf: &mut Vec<u8>) {
    buf.extend_from_slice(&index.to_le_bytes());
    match r {
        Record::Write { rev, changes } => {
            buf.push(WRITE);
            put_i64(buf, *rev);
            put_i64(buf, changes.len() as i64);
            for c in changes {
                match c {
                    Change::Put { key, value, lease } => {
                        buf.push(0);
                        put_bytes(buf, key);
                        put_bytes(buf, value);
                        put_i64(buf, *lease);
                    }
                    Change::Delete { key } => {
                        buf.push(1);
                        put_bytes(buf, key);
                    }
                }
            }
        }
        Record::LeaseGrant { id, ttl } => {
            buf.push(LEASE_GRANT);
            put_i64(buf, *id);
            put_i64(buf, *ttl);
        }
        Record::LeaseRevoke { id } => {
            buf.push(LEASE_REVOKE);
            put_i64(buf, *id);
        }
        Record::Compact { rev } => {
            buf.push(COMPACT);
            put_i64(buf, *rev);
        }
    }
}

fn decode_record(payload: &[u8]) -> Option<(u64, Record)> {
    let mut c = Cursor(payload);
    let index = u64::from_le_bytes(c.take(8)?.try_into().ok()?);
    let record = match c.u8()? {
        WRITE => {
            let rev = c.i64()?;
            let n = c.i64()?;
            let mut changes = Vec::new();
            for _ in 0..n {
                changes.push(match c.u8()? {
                    0 => Change::Put {
                        key: c.bytes()?,
                        value: c.bytes()?,
                        lease: c.i64()?,
                    },
                    _ => Change::Delete { key: c.bytes()? },
                });
            }
            Record::Write { rev, changes }
        }
        LEASE_GRANT => Record::LeaseGrant {
            id: c.i64()?,
            ttl: c.i64()?,
        },
        LEASE_REVOKE => Record::LeaseRevoke { id: c.i64()? },
        COMPACT => Record::Compact { rev: c.i64()? },
        _ => return None,
    };
    Some((index, record))
}

/// Appends `payload` framed with its length and checksum.
fn frame(payload: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// Reads framed payloads until the end or the first torn/corrupt frame; returns them and the
/// byte length of the good prefix.
fn read_frames(data: &[u8]) -> (Vec<&[u8]>, usize) {
    let mut frames = Vec::new();
    let mut pos = 0;
    while data.len() - pos >= 8 {
        let len = u32::from_le_bytes([data[pos], data[pos + 1], data[pos + 2], data[pos + 3]]);
        let crc = u32::from_le_bytes([data[pos + 4], data[pos + 5], data[pos + 6], data[pos + 7]]);
        let end = pos + 8 + len as usize;
        if len == 0 || end > data.len() || crc32fast::hash(&data[pos + 8..end]) != crc {
            break;
        }
        frames.push(&data[pos + 8..end]);
        pos = end;
    }
    (frames, pos)
}

// ---- the log -------------------------------------------------------------------------------

/// The open write-ahead log.
#[derive(Debug)]
pub struct Wal {
    dir: PathBuf,
    file: File,
    next_index: u64,
    wal_bytes: u64,
    snap_bytes: u64,
}

fn wal_path(dir: &Path) -> PathBuf {
    dir.join("member/wal/klab.wal")
}

fn snap_path(dir: &Path) -> PathBuf {
    dir.join("member/snap/klab.snap")
}

fn read_all(path: &Path) -> Result<Vec<u8>, WalError> {
    match fs::read(path) {
        Ok(d) => Ok(d),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(source) => Err(WalError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

fn sync_dir(path: &Path) -> io::Result<()> {
    File::open(path)?.sync_all()
}

impl Wal {
    /// Opens (or creates) the data directory and rebuilds the state from snapshot and log.
    pub fn open(data_dir: &Path, now: std::time::Instant) -> Result<(Wal, State), WalError> {
        for sub in ["member/wal", "member/snap"] {
            let path = data_dir.join(sub);
            fs::create_dir_all(&path).map_err(|source| WalError::CreateDir { path, source })?;
        }
        // One process per data directory, as etcd's WAL lock ensures; the lock dies with us.
        let wal = wal_path(data_dir);
        let open_err = |source| WalError::Open {
            path: wal.clone(),
            source,
        };
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&wal)
            .map_err(open_err)?;
        if rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err() {
            return Err(WalError::Locked { path: wal });
        }
        let snap = snap_path(data_dir);
        let snap_data = read_all(&snap)?;
        let (mut state, snap_index) = if snap_data.is_empty() {
            (State::default(), 0)
        } else {
            load_snapshot(&snap_data, now)
                .ok_or(WalError::CorruptSnapshot { path: snap.clone() })?
        };
        let data = read_all(&wal)?;
        let (frames, good) = read_frames(&data);
        let mut next_index = snap_index + 1;
        for payload in frames {
            let Some((index, record)) = decode_record(payload) else {
                break;
            };
            if index > snap_index {
                state.replay(&record, now);
            }
            next_index = next_index.max(index + 1);
        }
        if good < data.len() {
            // Cut the torn tail a crash left, so new records follow the last good one.
            file.set_len(good as u64).map_err(open_err)?;
            file.sync_all().map_err(open_err)?;
        }
        sync_dir(&data_dir.join("member/wal")).map_err(open_err)?;
        let wal = Wal {
            dir: data_dir.to_owned(),
            file,
            next_index,
            wal_bytes: good as u64,
            snap_bytes: snap_data.len() as u64,
        };
        Ok((wal, state))
    }

    /// Appends records without syncing; call [`Wal::sync`] before acknowledging them.
    pub fn append(&mut self, records: &[Record]) -> Result<(), WalError> {
        let mut out = Vec::new();
        let mut payload = Vec::new();
        for r in records {
            payload.clear();
            encode_record(self.next_index, r, &mut payload);
            self.next_index += 1;
            frame(&payload, &mut out);
        }
        self.file.write_all(&out).map_err(WalError::Append)?;
        self.wal_bytes += out.len() as u64;
        Ok(())
    }

    /// Makes every appended record durable.
    pub fn sync(&mut self) -> Result<(), WalError> {
        self.file.sync_data().map_err(WalError::Sync)
    }

    /// Bytes on disk (log plus snapshot), reported as the database size.
    pub fn size(&self) -> u64 {
        self.wal_bytes + self.snap_bytes
    }

    pub fn wal_bytes(&self) -> u64 {
        self.wal_bytes
    }

    /// The index of the last record written (etcd's raft index, in Status).
    pub fn last_index(&self) -> u64 {
        self.next_index - 1
    }

    /// Writes a snapshot of `state` and empties the log.
    pub fn snapshot(&mut self, state: &State) -> Result<(), WalError> {
        let path = snap_path(&self.dir);
        let tmp = path.with_extension("snap.tmp");
        let werr = |source| WalError::WriteSnapshot {
            path: path.clone(),
            source,
        };
        let file = File::create(&tmp).map_err(werr)?;
        let mut w = BufWriter::new(file);
        let bytes = write_snapshot(&mut w, state, self.last_index()).map_err(werr)?;
        let file = w.into_inner().map_err(|e| werr(e.into_error()))?;
        file.sync_all().map_err(werr)?;
        fs::rename(&tmp, &path).map_err(werr)?;
        sync_dir(&self.dir.join("member/snap")).map_err(werr)?;
        self.snap_bytes = bytes;
        self.file.set_len(0).map_err(WalError::Append)?;
        self.file.sync_all().map_err(WalError::Sync)?;
        self.wal_bytes = 0;
        Ok(())
    }
}

fn write_snapshot(w: &mut impl Write, state: &State, index: u64) -> io::Result<u64> {
    let mut total = 0u64;
    let mut emit = |payload: &[u8]| -> io::Result<()> {
        let mut out = Vec::with_capacity(payload.len() + 8);
        frame(payload, &mut out);
        total += out.len() as u64;
        w.write_all(&out)
    };
    let mut p = vec![SNAP_HEADER];
    p.extend_from_slice(&index.to_le_bytes());
    put_i64(&mut p, state.mvcc.current());
    put_i64(&mut p, state.mvcc.compacted());
    emit(&p)?;
    for lease in state.leases.all() {
        let mut p = vec![SNAP_LEASE];
        put_i64(&mut p, lease.id);
        put_i64(&mut p, lease.ttl);
        emit(&p)?;
    }
    for (key, history) in state.mvcc.histories() {
        let mut p = vec![SNAP_KEY];
        put_bytes(&mut p, key);
        put_i64(&mut p, history.len() as i64);
        for v in history {
            for x in [v.mod_rev, v.create_rev, v.version, v.lease] {
                put_i64(&mut p, x);
            }
            put_bytes(&mut p, &v.value);
        }
        emit(&p)?;
    }
    Ok(total)
}

fn load_snapshot(data: &[u8], now: std::time::Instant) -> Option<(State, u64)> {
    let (frames, good) = read_frames(data);
    if good != data.len() {
        return None;
    }
    let mut frames = frames.into_iter();
    let mut c = Cursor(frames.next()?);
    if c.u8()? != SNAP_HEADER {
        return None;
    }
    let index = u64::from_le_bytes(c.take(8)?.try_into().ok()?);
    let (current, compacted) = (c.i64()?, c.i64()?);
    let mut state = State::default();
    let mut histories = Vec::new();
    for payload in frames {
        let mut c = Cursor(payload);
        match c.u8()? {
            SNAP_LEASE => state.leases.grant(c.i64()?, c.i64()?, now),
            SNAP_KEY => {
                let key = c.bytes()?;
                let n = c.i64()?;
                let mut history = Vec::new();
                for _ in 0..n {
                    let (mod_rev, create_rev, version, lease) =
                        (c.i64()?, c.i64()?, c.i64()?, c.i64()?);
                    history.push(Version {
                        mod_rev,
                        create_rev,
                        version,
                        lease,
                        value: c.bytes()?,
                    });
                }
                histories.push((key, history));
            }
            _ => return None,
        }
    }
    state.mvcc = Mvcc::restore(current, compacted, histories);
    let live: Vec<(Vec<u8>, i64)> = state
        .mvcc
        .range(&super::mvcc::KeyRange::From(vec![]), current)
        .filter(|(_, v)| v.lease != 0)
        .map(|(k, v)| (k.to_vec(), v.lease))
        .collect();
    for (key, lease) in live {
        state.leases.attach(lease, &key);
    }
    Some((state, index))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::apply::WriteRequest;
    use etcd_client::proto::{PbCompactionRequest, PbPutRequest};
    use std::time::Instant;

    fn put(state: &mut State, wal: &mut Wal, key: &str, value: &str) {
        let req = WriteRequest::Put(PbPutRequest {
            key: key.into(),
            value: value.into(),
            ..Default::default()
        });
        let (_, records) = state.apply(&req, Instant::now()).unwrap();
        wal.append(&records).unwrap();
        wal.sync().unwrap();
    }

    #[test]
    fn one_process_per_data_directory() {
        let dir = tempfile::tempdir().unwrap();
        let first = Wal::open(dir.path(), Instant::now()).unwrap();
        let second = Wal::open(dir.path(), Instant::now());
        assert!(matches!(second, Err(WalError::Locked { .. })));
        drop(first);
        assert!(
            Wal::open(dir.path(), Instant::now()).is_ok(),
            "the lock goes with its owner"
        );
    }

    #[test]
    fn recovers_log_and_snapshot_and_cuts_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let now = Instant::now();
        {
            let (mut wal, mut state) = Wal::open(dir.path(), now).unwrap();
            put(&mut state, &mut wal, "a", "1");
            put(&mut state, &mut wal, "a", "2");
            let req = WriteRequest::Compact(PbCompactionRequest {
                revision: 3,
                physical: false,
            });
            let (_, records) = state.apply(&req, now).unwrap();
            wal.append(&records).unwrap();
            wal.snapshot(&state).unwrap();
            put(&mut state, &mut wal, "b", "1");
        }
        // A crash in the middle of a record leaves a torn tail.
        let log = dir.path().join("member/wal/klab.wal");
        let mut f = OpenOptions::new().append(true).open(&log).unwrap();
        f.write_all(&[9, 0, 0, 0, 1, 2]).unwrap();
        let (_, state) = Wal::open(dir.path(), now).unwrap();
        assert_eq!(state.mvcc.current(), 4);
        assert_eq!(state.mvcc.compacted(), 3);
        assert_eq!(state.mvcc.get(b"a", 4).unwrap().value, b"2");
        assert_eq!(state.mvcc.get(b"b", 4).unwrap().version, 1);
        let (_, good) = read_frames(&fs::read(&log).unwrap());
        assert_eq!(
            good as u64,
            fs::metadata(&log).unwrap().len(),
            "torn tail cut"
        );
    }
}
