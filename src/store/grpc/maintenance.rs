//! The Maintenance service: Status, Alarm (never raised), Defragment (nothing to defragment).
//! Mirrors etcd's `v3rpc/maintenance.go`; Hash, HashKV, Snapshot, MoveLeader and Downgrade are
//! answered `Unimplemented`.

use std::pin::Pin;

use etcd_client::proto::{
    PbAlarmRequest, PbAlarmResponse, PbDefragmentRequest, PbDefragmentResponse, PbDowngradeRequest,
    PbDowngradeResponse, PbHashKvRequest, PbHashKvResponse, PbHashRequest, PbHashResponse,
    PbMaintenanceService, PbMoveLeaderRequest, PbMoveLeaderResponse, PbSnapshotRequest,
    PbSnapshotResponse, PbStatusRequest, PbStatusResponse,
};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::{RAFT_TERM, VERSION, fill, unimplemented};
use crate::store::backend::Store;

pub struct MaintenanceService(pub Store);

type SnapshotStream = Pin<Box<dyn Stream<Item = Result<PbSnapshotResponse, Status>> + Send>>;

#[tonic::async_trait]
impl PbMaintenanceService for MaintenanceService {
    async fn alarm(
        &self,
        _req: Request<PbAlarmRequest>,
    ) -> Result<Response<PbAlarmResponse>, Status> {
        // No alarm is ever raised; etcd answers an empty alarm list without a header.
        Ok(Response::new(PbAlarmResponse::default()))
    }

    async fn status(
        &self,
        _req: Request<PbStatusRequest>,
    ) -> Result<Response<PbStatusResponse>, Status> {
        let db = self
            .0
            .0
            .metrics
            .db_size
            .load(std::sync::atomic::Ordering::Relaxed) as i64;
        let in_use = self.0.read(|s, _| s.mvcc.approx_size()) as i64;
        let index = self.0.raft_index();
        let mut resp = PbStatusResponse {
            version: VERSION.to_owned(),
            db_size: db,
            leader: self.0.0.ids.member_id,
            raft_index: index,
            raft_term: RAFT_TERM,
            raft_applied_index: index,
            errors: self.0.failure().into_iter().collect(),
            db_size_in_use: in_use,
            ..Default::default()
        };
        fill(&self.0, &mut resp.header);
        Ok(Response::new(resp))
    }

    async fn defragment(
        &self,
        _req: Request<PbDefragmentRequest>,
    ) -> Result<Response<PbDefragmentResponse>, Status> {
        let mut resp = PbDefragmentResponse::default();
        fill(&self.0, &mut resp.header);
        Ok(Response::new(resp))
    }

    async fn hash(&self, _req: Request<PbHashRequest>) -> Result<Response<PbHashResponse>, Status> {
        Err(unimplemented("Maintenance", "Hash"))
    }

    async fn hash_kv(
        &self,
        _req: Request<PbHashKvRequest>,
    ) -> Result<Response<PbHashKvResponse>, Status> {
        Err(unimplemented("Maintenance", "HashKV"))
    }

    type SnapshotStream = SnapshotStream;

    async fn snapshot(
        &self,
        _req: Request<PbSnapshotRequest>,
    ) -> Result<Response<SnapshotStream>, Status> {
        Err(unimplemented("Maintenance", "Snapshot"))
    }

    async fn move_leader(
        &self,
        _req: Request<PbMoveLeaderRequest>,
    ) -> Result<Response<PbMoveLeaderResponse>, Status> {
        Err(unimplemented("Maintenance", "MoveLeader"))
    }

    async fn downgrade(
        &self,
        _req: Request<PbDowngradeRequest>,
    ) -> Result<Response<PbDowngradeResponse>, Status> {
        Err(unimplemented("Maintenance", "Downgrade"))
    }
}
