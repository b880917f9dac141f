//! The Lease service: Grant, Revoke, KeepAlive (a stream), TimeToLive, Leases. Mirrors etcd's
//! `v3rpc/lease.go`, including its answers for unknown leases (TTL 0 on keep-alive, TTL -1 on
//! TimeToLive).

use std::pin::Pin;
use std::time::Instant;

use etcd_client::proto::{
    PbLeaseGrantRequest, PbLeaseGrantResponse, PbLeaseKeepAliveRequest, PbLeaseKeepAliveResponse,
    PbLeaseLeasesRequest, PbLeaseLeasesResponse, PbLeaseRevokeRequest, PbLeaseRevokeResponse,
    PbLeaseService, PbLeaseStatus, PbLeaseTimeToLiveRequest, PbLeaseTimeToLiveResponse,
};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::{fill, mismatch, write};
use crate::store::apply::{WriteRequest, WriteResponse};
use crate::store::backend::Store;

pub struct LeaseService(pub Store);

type KeepAliveStream = Pin<Box<dyn Stream<Item = Result<PbLeaseKeepAliveResponse, Status>> + Send>>;

#[tonic::async_trait]
impl PbLeaseService for LeaseService {
    async fn lease_grant(
        &self,
        req: Request<PbLeaseGrantRequest>,
    ) -> Result<Response<PbLeaseGrantResponse>, Status> {
        let r = req.into_inner();
        let WriteResponse::LeaseGrant(mut resp) =
            write(&self.0, WriteRequest::LeaseGrant(r)).await?
        else {
            return Err(mismatch());
        };
        fill(&self.0, &mut resp.header);
        Ok(Response::new(resp))
    }

    async fn lease_revoke(
        &self,
        req: Request<PbLeaseRevokeRequest>,
    ) -> Result<Response<PbLeaseRevokeResponse>, Status> {
        let r = req.into_inner();
        let WriteResponse::LeaseRevoke(mut resp) =
            write(&self.0, WriteRequest::LeaseRevoke(r)).await?
        else {
            return Err(mismatch());
        };
        fill(&self.0, &mut resp.header);
        Ok(Response::new(resp))
    }

    type LeaseKeepAliveStream = KeepAliveStream;

    async fn lease_keep_alive(
        &self,
        req: Request<Streaming<PbLeaseKeepAliveRequest>>,
    ) -> Result<Response<KeepAliveStream>, Status> {
        let mut incoming = req.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let store = self.0.clone();
        tokio::spawn(async move {
            while let Ok(Some(r)) = incoming.message().await {
                let ttl = store.keepalive(r.id).unwrap_or(0);
                let mut resp = PbLeaseKeepAliveResponse {
                    header: None,
                    id: r.id,
                    ttl,
                };
                fill(&store, &mut resp.header);
                if tx.send(Ok(resp)).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn lease_time_to_live(
        &self,
        req: Request<PbLeaseTimeToLiveRequest>,
    ) -> Result<Response<PbLeaseTimeToLiveResponse>, Status> {
        let r = req.into_inner();
        let now = Instant::now();
        let mut resp = self.0.read(|s, _| match s.leases.get(r.id) {
            Some(l) => PbLeaseTimeToLiveResponse {
                header: None,
                id: r.id,
                ttl: l.remaining(now),
                granted_ttl: l.ttl,
                keys: if r.keys {
                    l.keys.iter().cloned().collect()
                } else {
                    vec![]
                },
            },
            None => PbLeaseTimeToLiveResponse {
                id: r.id,
                ttl: -1,
                ..Default::default()
            },
        });
        fill(&self.0, &mut resp.header);
        Ok(Response::new(resp))
    }

    async fn lease_leases(
        &self,
        _req: Request<PbLeaseLeasesRequest>,
    ) -> Result<Response<PbLeaseLeasesResponse>, Status> {
        let leases = self
            .0
            .read(|s, _| s.leases.ids().map(|id| PbLeaseStatus { id }).collect());
        let mut resp = PbLeaseLeasesResponse {
            header: None,
            leases,
        };
        fill(&self.0, &mut resp.header);
        Ok(Response::new(resp))
    }
}
