//! klab-store: the cluster's memory — an embedded, single-node store speaking etcd's v3 gRPC API.
//!
//! Mirrors etcd 3.4 as a client sees it (the API server, etcdctl): the same services, the same
//! MVCC semantics and the same errors, on one member without raft. The parts, inside out:
//!
//! - [`mvcc`]: every key's history under one global revision; ranges, events, compaction.
//! - [`lease`]: leases and the keys attached to them.
//! - [`apply`]: etcd's requests (Put, Txn, …) applied to that state, producing WAL records.
//! - [`wal`]: the write-ahead log and snapshot that make the state durable.
//! - [`backend`]: the commit thread: group commit, fsync before acknowledging, visible revision.
//! - [`grpc`]: the KV, Watch, Lease, Maintenance and Cluster services.
//! - [`server`], [`metrics_http`], [`compactor`]: the process around them.
//!
//! Leaves out raft, auth, snapshots over the API, and defragmentation (nothing to defragment).

pub mod apply;
pub mod backend;
pub mod compactor;
pub mod error;
pub mod grpc;
pub mod lease;
pub mod metrics;
pub mod metrics_http;
pub mod mvcc;
pub mod server;
pub mod wal;

pub use backend::Store;
pub use server::{Running, run, start};
