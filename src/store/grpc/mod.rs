//! The etcd v3 gRPC services, implemented over the store with the server traits generated
//! from the `etcd-client` crate's protos (its `build-server` feature).
//!
//! Mirrors etcd's `api/v3rpc`: request size limits, response headers (`header.go`), and error
//! statuses. The Auth service is not registered, so its calls get `Unimplemented`, as every
//! unknown method does.

mod cluster;
mod kv;
mod lease;
mod maintenance;
pub mod watch;

use etcd_client::proto::{
    PbClusterServer, PbKvServer, PbLeaseServer, PbMaintenanceServer, PbResponseHeader,
    PbWatchServer,
};
use tonic::Status;

use super::apply::{WriteRequest, WriteResponse};
use super::backend::Store;
use super::error::StoreError;

/// etcd's `--max-request-bytes` default: 1.5 MiB.
pub const MAX_REQUEST_BYTES: usize = 1536 * 1024;
/// etcd lets gRPC read this much more than a request may hold, then refuses it itself.
pub const MAX_GRPC_MESSAGE: usize = MAX_REQUEST_BYTES + 512 * 1024;
/// A single member elects itself leader in term 2, as a fresh etcd does.
pub const RAFT_TERM: u64 = 2;
/// The etcd version klab-store reports in Status: the API level it speaks.
pub const VERSION: &str = "3.4.23";

/// Fills a response header the way etcd's `header.fill` does: ids, term, and the current
/// revision unless the operation already set the revision it produced.
pub fn fill(store: &Store, h: &mut Option<PbResponseHeader>) {
    let h = h.get_or_insert_with(PbResponseHeader::default);
    h.cluster_id = store.0.ids.cluster_id;
    h.member_id = store.0.ids.member_id;
    h.raft_term = RAFT_TERM;
    if h.revision == 0 {
        h.revision = store.visible();
    }
}

/// A header for a given revision, used where etcd sets it explicitly (watch responses).
pub fn header_at(store: &Store, revision: i64) -> Option<PbResponseHeader> {
    Some(PbResponseHeader {
        cluster_id: store.0.ids.cluster_id,
        member_id: store.0.ids.member_id,
        revision,
        raft_term: RAFT_TERM,
    })
}

/// Refuses requests over etcd's size limit with etcd's error.
pub fn check_size(m: &impl prost::Message) -> Result<(), Status> {
    if m.encoded_len() > MAX_REQUEST_BYTES {
        return Err(StoreError::RequestTooLarge.into());
    }
    Ok(())
}

/// Submits a write, mapping store errors to etcd's statuses.
pub async fn write(store: &Store, req: WriteRequest) -> Result<WriteResponse, Status> {
    store.write(req).await.map_err(Status::from)
}

/// The status a mismatched write response becomes; the pipeline never produces one.
pub fn mismatch() -> Status {
    Status::internal("klab-store: response does not match request")
}

/// The status grpc-go answers for a method a server does not implement.
pub fn unimplemented(service: &str, method: &str) -> Status {
    Status::unimplemented(format!(
        "unknown method {method} for service etcdserverpb.{service}"
    ))
}

/// Every service, ready to add to a tonic router.
pub struct Services {
    pub kv: PbKvServer<kv::KvService>,
    pub watch: PbWatchServer<watch::WatchService>,
    pub lease: PbLeaseServer<lease::LeaseService>,
    pub maintenance: PbMaintenanceServer<maintenance::MaintenanceService>,
    pub cluster: PbClusterServer<cluster::ClusterService>,
}

impl Services {
    pub fn new(store: &Store, progress_interval: std::time::Duration) -> Self {
        Self {
            kv: PbKvServer::new(kv::KvService(store.clone()))
                .max_decoding_message_size(MAX_GRPC_MESSAGE),
            watch: PbWatchServer::new(watch::WatchService {
                store: store.clone(),
                progress_interval,
            })
            .max_decoding_message_size(MAX_GRPC_MESSAGE),
            lease: PbLeaseServer::new(lease::LeaseService(store.clone())),
            maintenance: PbMaintenanceServer::new(maintenance::MaintenanceService(store.clone())),
            cluster: PbClusterServer::new(cluster::ClusterService(store.clone())),
        }
    }
}
