//! The store's errors, and how each reaches the wire: the gRPC code and message etcd uses.
//!
//! Mirrors etcd's `api/v3rpc/rpctypes` (the `ErrGRPC…` table): clients such as the API server
//! and etcdctl compare these messages, so they are copied verbatim.

use tonic::{Code, Status};

/// An error a store operation answers with. Every variant is one of etcd's own errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("etcdserver: key is not provided")]
    EmptyKey,
    #[error("etcdserver: key not found")]
    KeyNotFound,
    #[error("etcdserver: value is provided")]
    ValueProvided,
    #[error("etcdserver: lease is provided")]
    LeaseProvided,
    #[error("etcdserver: too many operations in txn request")]
    TooManyOps,
    #[error("etcdserver: duplicate key given in txn request")]
    DuplicateKey,
    #[error("etcdserver: mvcc: required revision has been compacted")]
    Compacted,
    #[error("etcdserver: mvcc: required revision is a future revision")]
    FutureRev,
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    #[error("etcdserver: lease already exists")]
    LeaseExists,
    #[error("etcdserver: too large lease TTL")]
    LeaseTtlTooLarge,
    #[error("etcdserver: request is too large")]
    RequestTooLarge,
    /// The disk is full: etcd raises its NOSPACE alarm with this message.
    #[error("etcdserver: mvcc: database space exceeded")]
    NoSpace,
    /// A write or fsync failed; the store refuses every write until it is restarted.
    #[error("etcdserver: storage failed, writes are refused until restart: {0}")]
    StorageFailed(String),
    #[error("etcdserver: server stopped")]
    Stopped,
}

impl StoreError {
    /// The gRPC code etcd sends with this error.
    pub fn code(&self) -> Code {
        match self {
            Self::EmptyKey
            | Self::KeyNotFound
            | Self::ValueProvided
            | Self::LeaseProvided
            | Self::TooManyOps
            | Self::DuplicateKey
            | Self::RequestTooLarge => Code::InvalidArgument,
            Self::Compacted | Self::FutureRev | Self::LeaseTtlTooLarge => Code::OutOfRange,
            Self::LeaseNotFound => Code::NotFound,
            Self::LeaseExists => Code::FailedPrecondition,
            Self::NoSpace => Code::ResourceExhausted,
            Self::StorageFailed(_) | Self::Stopped => Code::Unavailable,
        }
    }
}

impl From<StoreError> for Status {
    fn from(e: StoreError) -> Self {
        Status::new(e.code(), e.to_string())
    }
}
