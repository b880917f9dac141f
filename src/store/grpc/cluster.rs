//! The Cluster service: MemberList answers with the one member; membership changes are
//! `Unimplemented` (klab-store is single-node by design). Mirrors etcd's `v3rpc/member.go`.

use etcd_client::proto::{
    PbClusterService, PbMember, PbMemberAddRequest, PbMemberAddResponse, PbMemberListRequest,
    PbMemberListResponse, PbMemberPromoteRequest, PbMemberPromoteResponse, PbMemberRemoveRequest,
    PbMemberRemoveResponse, PbMemberUpdateRequest, PbMemberUpdateResponse,
};
use tonic::{Request, Response, Status};

use super::{fill, unimplemented};
use crate::store::backend::Store;

pub struct ClusterService(pub Store);

#[tonic::async_trait]
impl PbClusterService for ClusterService {
    async fn member_add(
        &self,
        _req: Request<PbMemberAddRequest>,
    ) -> Result<Response<PbMemberAddResponse>, Status> {
        Err(unimplemented("Cluster", "MemberAdd"))
    }

    async fn member_remove(
        &self,
        _req: Request<PbMemberRemoveRequest>,
    ) -> Result<Response<PbMemberRemoveResponse>, Status> {
        Err(unimplemented("Cluster", "MemberRemove"))
    }

    async fn member_update(
        &self,
        _req: Request<PbMemberUpdateRequest>,
    ) -> Result<Response<PbMemberUpdateResponse>, Status> {
        Err(unimplemented("Cluster", "MemberUpdate"))
    }

    async fn member_list(
        &self,
        _req: Request<PbMemberListRequest>,
    ) -> Result<Response<PbMemberListResponse>, Status> {
        let shared = &self.0.0;
        let member = PbMember {
            id: shared.ids.member_id,
            name: shared.name.clone(),
            peer_ur_ls: shared.peer_urls.clone(),
            client_ur_ls: shared.client_urls.clone(),
            is_learner: false,
        };
        let mut resp = PbMemberListResponse {
            header: None,
            members: vec![member],
        };
        fill(&self.0, &mut resp.header);
        Ok(Response::new(resp))
    }

    async fn member_promote(
        &self,
        _req: Request<PbMemberPromoteRequest>,
    ) -> Result<Response<PbMemberPromoteResponse>, Status> {
        Err(unimplemented("Cluster", "MemberPromote"))
    }
}
