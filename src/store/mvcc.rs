//! The multi-version key space: every key's history, one global revision, compaction.
//!
//! Mirrors etcd's `mvcc` package (`kvstore`, `keyIndex`, `watchable_store` history reads), kept
//! entirely in memory; durability is the WAL's job (see `wal.rs`). Leaves out etcd's
//! sub-revisions on disk: the order of changes inside one revision is kept in `revlog`.

use std::collections::BTreeMap;
use std::ops::Bound;

use etcd_client::proto::{PbEvent, PbKeyValue};

use super::error::StoreError;

/// etcd's event types (`mvccpb.Event_EventType`).
pub const EVENT_PUT: i32 = 0;
pub const EVENT_DELETE: i32 = 1;

/// One version of a key. A tombstone (the key was deleted) has `version == 0`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    pub mod_rev: i64,
    pub create_rev: i64,
    pub version: i64,
    pub lease: i64,
    pub value: Vec<u8>,
}

impl Version {
    pub fn is_tombstone(&self) -> bool {
        self.version == 0
    }
}

/// The lower and upper bound of a key range, as `BTreeMap::range` takes them.
type KeyBounds<'a> = (Bound<&'a [u8]>, Bound<&'a [u8]>);

/// The keys a request names, decoded from etcd's `key`/`range_end` pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyRange {
    /// `range_end` empty: exactly `key`.
    Single(Vec<u8>),
    /// `range_end` is `"\0"`: every key `>= key`.
    From(Vec<u8>),
    /// Every key in `[key, range_end)`; empty when `range_end <= key`.
    Span(Vec<u8>, Vec<u8>),
}

impl KeyRange {
    pub fn new(key: &[u8], range_end: &[u8]) -> Self {
        match range_end {
            [] => Self::Single(key.to_vec()),
            [0] => Self::From(key.to_vec()),
            end => Self::Span(key.to_vec(), end.to_vec()),
        }
    }

    pub fn contains(&self, k: &[u8]) -> bool {
        match self {
            Self::Single(key) => k == key.as_slice(),
            Self::From(key) => k >= key.as_slice(),
            Self::Span(key, end) => k >= key.as_slice() && k < end.as_slice(),
        }
    }

    fn bounds(&self) -> Option<KeyBounds<'_>> {
        match self {
            Self::Single(k) => Some((Bound::Included(k), Bound::Included(k))),
            Self::From(k) => Some((Bound::Included(k), Bound::Unbounded)),
            // BTreeMap::range panics on an inverted range; etcd answers it with no keys.
            Self::Span(k, end) if end <= k => None,
            Self::Span(k, end) => Some((Bound::Included(k), Bound::Excluded(end))),
        }
    }
}

/// The key space with all retained history.
#[derive(Debug)]
pub struct Mvcc {
    keys: BTreeMap<Vec<u8>, Vec<Version>>,
    /// Which keys each revision changed, in the order the changes were made.
    revlog: BTreeMap<i64, Vec<Vec<u8>>>,
    current: i64,
    compacted: i64,
}

impl Default for Mvcc {
    fn default() -> Self {
        // A fresh etcd answers with revision 1; the first write makes revision 2.
        Self {
            keys: BTreeMap::new(),
            revlog: BTreeMap::new(),
            current: 1,
            compacted: 0,
        }
    }
}

impl Mvcc {
    /// The newest revision applied (it may still wait for its fsync).
    pub fn current(&self) -> i64 {
        self.current
    }

    /// The revision of the last compaction (0 if none).
    pub fn compacted(&self) -> i64 {
        self.compacted
    }

    /// Resolves a request's revision (0 means `latest`) against compaction and the future.
    pub fn check_rev(&self, requested: i64, latest: i64) -> Result<i64, StoreError> {
        let rev = if requested <= 0 { latest } else { requested };
        if rev > latest {
            return Err(StoreError::FutureRev);
        }
        if rev < self.compacted {
            return Err(StoreError::Compacted);
        }
        Ok(rev)
    }

    /// The version of `key` that was current at `rev`, if the key existed then.
    pub fn get(&self, key: &[u8], rev: i64) -> Option<&Version> {
        let history = self.keys.get(key)?;
        version_at(history, rev).filter(|v| !v.is_tombstone())
    }

    /// The live keys of `range` at `rev`, in key order.
    pub fn range<'a>(
        &'a self,
        range: &KeyRange,
        rev: i64,
    ) -> impl Iterator<Item = (&'a [u8], &'a Version)> + 'a {
        let iter = range.bounds().map(|b| self.keys.range::<[u8], _>(b));
        iter.into_iter().flatten().filter_map(move |(k, history)| {
            version_at(history, rev)
                .filter(|v| !v.is_tombstone())
                .map(|v| (k.as_slice(), v))
        })
    }

    /// Writes `value` at revision `rev`; returns the version it replaced.
    pub fn put(&mut self, key: &[u8], value: Vec<u8>, lease: i64, rev: i64) -> Option<Version> {
        let history = self.keys.entry(key.to_vec()).or_default();
        let prev = history.last().filter(|v| !v.is_tombstone()).cloned();
        let (create_rev, version) = match &prev {
            Some(p) => (p.create_rev, p.version + 1),
            None => (rev, 1),
        };
        history.push(Version {
            mod_rev: rev,
            create_rev,
            version,
            lease,
            value,
        });
        self.revlog.entry(rev).or_default().push(key.to_vec());
        prev
    }

    /// Deletes `key` at revision `rev` by writing a tombstone; returns the deleted version.
    pub fn delete(&mut self, key: &[u8], rev: i64) -> Option<Version> {
        let history = self.keys.get_mut(key)?;
        let prev = history.last().filter(|v| !v.is_tombstone()).cloned()?;
        history.push(Version {
            mod_rev: rev,
            create_rev: 0,
            version: 0,
            lease: 0,
            value: vec![],
        });
        self.revlog.entry(rev).or_default().push(key.to_vec());
        Some(prev)
    }

    /// Marks revision `rev` as written (called once per write that changed something).
    pub fn finish_rev(&mut self, rev: i64) {
        self.current = self.current.max(rev);
    }

    /// Forgets every change after `rev`: used when a write could not be made durable.
    pub fn rollback(&mut self, rev: i64) {
        let undone = self.revlog.split_off(&(rev + 1));
        for key in undone.into_values().flatten() {
            if let Some(history) = self.keys.get_mut(&key) {
                history.retain(|v| v.mod_rev <= rev);
                if history.is_empty() {
                    self.keys.remove(&key);
                }
            }
        }
        self.current = self.current.min(rev);
    }

    /// Drops history older than `rev`, keeping each key's version current at `rev` (etcd's
    /// `keyIndex.compact`: a tombstone current at `rev` is dropped with everything before it).
    pub fn compact(&mut self, rev: i64) -> Result<(), StoreError> {
        if rev <= self.compacted {
            return Err(StoreError::Compacted);
        }
        if rev > self.current {
            return Err(StoreError::FutureRev);
        }
        self.keys.retain(|_, history| {
            let keep_from = history.partition_point(|v| v.mod_rev <= rev);
            let mut start = keep_from.saturating_sub(1);
            if keep_from > 0 && history[start].is_tombstone() {
                start = keep_from;
            }
            history.drain(..start);
            !history.is_empty()
        });
        self.revlog = self.revlog.split_off(&rev);
        self.compacted = rev;
        Ok(())
    }

    /// The events of revisions `from..=to` touching `range`, in commit order, stopping after
    /// the first revision that brings them to `max_bytes` of keys and values. Returns them with
    /// the next revision still to read (`to + 1` when all were read).
    pub fn events(
        &self,
        range: &KeyRange,
        (from, to): (i64, i64),
        with_prev: bool,
        max_bytes: usize,
    ) -> (Vec<PbEvent>, i64) {
        let mut out = Vec::new();
        let mut bytes = 0;
        if from > to {
            return (out, from);
        }
        for (&rev, keys) in self.revlog.range(from..=to) {
            if bytes >= max_bytes {
                return (out, rev);
            }
            for key in keys.iter().filter(|k| range.contains(k)) {
                let Some(history) = self.keys.get(key) else {
                    continue;
                };
                let Ok(i) = history.binary_search_by_key(&rev, |v| v.mod_rev) else {
                    continue;
                };
                let v = &history[i];
                let prev = i
                    .checked_sub(1)
                    .map(|p| &history[p])
                    .filter(|p| with_prev && !p.is_tombstone());
                let (r#type, kv) = if v.is_tombstone() {
                    let kv = PbKeyValue {
                        key: key.clone(),
                        mod_revision: rev,
                        ..Default::default()
                    };
                    (EVENT_DELETE, kv)
                } else {
                    (EVENT_PUT, to_kv(key, v))
                };
                let prev_kv = prev.map(|p| to_kv(key, p));
                bytes +=
                    kv.key.len() + kv.value.len() + prev_kv.as_ref().map_or(0, |p| p.value.len());
                out.push(PbEvent {
                    r#type,
                    kv: Some(kv),
                    prev_kv,
                });
            }
        }
        (out, to + 1)
    }

    /// Every key's retained history, for writing a snapshot.
    pub fn histories(&self) -> impl Iterator<Item = (&[u8], &[Version])> {
        self.keys.iter().map(|(k, h)| (k.as_slice(), h.as_slice()))
    }

    /// Rebuilds the key space from a snapshot's histories.
    pub fn restore(
        current: i64,
        compacted: i64,
        histories: impl IntoIterator<Item = (Vec<u8>, Vec<Version>)>,
    ) -> Self {
        let mut keys = BTreeMap::new();
        let mut by_rev: BTreeMap<i64, Vec<Vec<u8>>> = BTreeMap::new();
        for (key, history) in histories {
            for v in &history {
                by_rev.entry(v.mod_rev).or_default().push(key.clone());
            }
            keys.insert(key, history);
        }
        // Snapshots lose the order of changes inside one revision; key order stands in for it
        // (etcd sorts a lease's keys before deleting them, so that case keeps its order).
        Self {
            keys,
            revlog: by_rev,
            current,
            compacted,
        }
    }

    /// Approximate bytes held, reported as the database size.
    pub fn approx_size(&self) -> u64 {
        let per_key = self.keys.iter().map(|(k, h)| {
            h.iter()
                .map(|v| (k.len() + v.value.len() + 40) as u64)
                .sum::<u64>()
        });
        per_key.sum()
    }
}

fn version_at(history: &[Version], rev: i64) -> Option<&Version> {
    let n = history.partition_point(|v| v.mod_rev <= rev);
    n.checked_sub(1).map(|i| &history[i])
}

/// The wire form of one version of a key.
pub fn to_kv(key: &[u8], v: &Version) -> PbKeyValue {
    PbKeyValue {
        key: key.to_vec(),
        create_revision: v.create_rev,
        mod_revision: v.mod_rev,
        version: v.version,
        value: v.value.clone(),
        lease: v.lease,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store_with(puts: &[(&str, &str)]) -> Mvcc {
        let mut m = Mvcc::default();
        for (k, v) in puts {
            let rev = m.current() + 1;
            m.put(k.as_bytes(), v.as_bytes().to_vec(), 0, rev);
            m.finish_rev(rev);
        }
        m
    }

    #[test]
    fn revisions_versions_and_history() {
        let mut m = store_with(&[("a", "1"), ("b", "1"), ("a", "2")]);
        assert_eq!(m.current(), 4);
        let a = m.get(b"a", 4).unwrap();
        assert_eq!((a.create_rev, a.mod_rev, a.version), (2, 4, 2));
        assert_eq!(m.get(b"a", 3).unwrap().value, b"1");
        assert!(m.get(b"b", 2).is_none());
        m.delete(b"a", 5);
        m.finish_rev(5);
        assert!(m.get(b"a", 5).is_none());
        m.put(b"a", b"3".to_vec(), 0, 6);
        let a = m.get(b"a", 6).unwrap();
        assert_eq!(
            (a.create_rev, a.version),
            (6, 1),
            "a new life after a delete"
        );
    }

    #[test]
    fn ranges_follow_etcd() {
        let m = store_with(&[("a", ""), ("b", ""), ("c", "")]);
        let keys = |r: KeyRange| m.range(&r, 4).map(|(k, _)| k.to_vec()).collect::<Vec<_>>();
        assert_eq!(keys(KeyRange::new(b"b", b"\0")).len(), 2);
        assert_eq!(keys(KeyRange::new(b"a", b"c")).len(), 2);
        assert!(
            keys(KeyRange::new(b"c", b"a")).is_empty(),
            "inverted ranges are empty"
        );
        assert_eq!(keys(KeyRange::new(b"b", b"")), vec![b"b".to_vec()]);
    }

    #[test]
    fn compaction_keeps_what_is_current() {
        let mut m = store_with(&[("a", "1"), ("a", "2"), ("b", "1")]);
        m.delete(b"b", 5);
        m.finish_rev(5);
        m.compact(5).unwrap();
        assert_eq!(m.check_rev(4, 5), Err(StoreError::Compacted));
        assert_eq!(m.get(b"a", 5).unwrap().value, b"2");
        assert_eq!(
            m.histories().count(),
            1,
            "b's tombstone went with its history"
        );
        assert_eq!(m.compact(5), Err(StoreError::Compacted));
        assert_eq!(m.compact(9), Err(StoreError::FutureRev));
    }

    #[test]
    fn events_and_rollback() {
        let mut m = store_with(&[("a", "1"), ("a", "2")]);
        let (ev, next) = m.events(&KeyRange::new(b"a", b""), (2, 3), true, usize::MAX);
        assert_eq!((ev.len(), next), (2, 4));
        assert_eq!(ev[1].prev_kv.as_ref().unwrap().value, b"1");
        let (ev, next) = m.events(&KeyRange::new(b"a", b""), (2, 3), true, 1);
        assert_eq!(
            (ev.len(), next),
            (1, 3),
            "a byte budget stops at a revision boundary"
        );
        m.put(b"z", vec![], 0, 4);
        m.finish_rev(4);
        m.rollback(3);
        assert_eq!(m.current(), 3);
        assert!(m.get(b"z", 4).is_none());
    }
}
