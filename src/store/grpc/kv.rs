//! The KV service: Range, Put, DeleteRange, Txn, Compact. Mirrors etcd's `v3rpc/key.go`.

use std::pin::Pin;

use etcd_client::proto::{
    PbCompactionRequest, PbCompactionResponse, PbDeleteRequest, PbDeleteResponse, PbKvService,
    PbPutRequest, PbPutResponse, PbRangeRequest, PbRangeResponse, PbRangeStreamResponse,
    PbTxnRequest, PbTxnResponse,
};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::{check_size, fill, mismatch, unimplemented, write};
use crate::store::apply::{self, WriteRequest, WriteResponse};
use crate::store::backend::Store;

pub struct KvService(pub Store);

type RangeStream = Pin<Box<dyn Stream<Item = Result<PbRangeStreamResponse, Status>> + Send>>;

#[tonic::async_trait]
impl PbKvService for KvService {
    async fn range(
        &self,
        req: Request<PbRangeRequest>,
    ) -> Result<Response<PbRangeResponse>, Status> {
        let r = req.into_inner();
        let mut resp = self.0.read(|s, latest| apply::range(&s.mvcc, &r, latest))?;
        fill(&self.0, &mut resp.header);
        Ok(Response::new(resp))
    }

    type RangeStreamStream = RangeStream;

    async fn range_stream(
        &self,
        _req: Request<PbRangeRequest>,
    ) -> Result<Response<RangeStream>, Status> {
        // RangeStream is newer than etcd 3.4, which klab-store mirrors.
        Err(unimplemented("KV", "RangeStream"))
    }

    async fn put(&self, req: Request<PbPutRequest>) -> Result<Response<PbPutResponse>, Status> {
        let r = req.into_inner();
        check_size(&r)?;
        let WriteResponse::Put(mut resp) = write(&self.0, WriteRequest::Put(r)).await? else {
            return Err(mismatch());
        };
        fill(&self.0, &mut resp.header);
        Ok(Response::new(resp))
    }

    async fn delete_range(
        &self,
        req: Request<PbDeleteRequest>,
    ) -> Result<Response<PbDeleteResponse>, Status> {
        let r = req.into_inner();
        check_size(&r)?;
        let WriteResponse::DeleteRange(mut resp) =
            write(&self.0, WriteRequest::DeleteRange(r)).await?
        else {
            return Err(mismatch());
        };
        fill(&self.0, &mut resp.header);
        Ok(Response::new(resp))
    }

    async fn txn(&self, req: Request<PbTxnRequest>) -> Result<Response<PbTxnResponse>, Status> {
        let r = req.into_inner();
        check_size(&r)?;
        let WriteResponse::Txn(mut resp) = write(&self.0, WriteRequest::Txn(r)).await? else {
            return Err(mismatch());
        };
        fill(&self.0, &mut resp.header);
        Ok(Response::new(resp))
    }

    async fn compact(
        &self,
        req: Request<PbCompactionRequest>,
    ) -> Result<Response<PbCompactionResponse>, Status> {
        let r = req.into_inner();
        let WriteResponse::Compact(mut resp) = write(&self.0, WriteRequest::Compact(r)).await?
        else {
            return Err(mismatch());
        };
        fill(&self.0, &mut resp.header);
        Ok(Response::new(resp))
    }
}
