//! The internal gRPC service coordinators replicate the metadata log over.
//!
//! Step in the flow: the server half of `quiver.raft.v1.RaftService`
//! (`proto/quiver/raft/v1/raft.proto`). Each call decodes the JSON openraft
//! request from `payload`, hands it to the local [`MetaRaft`], and answers
//! with the JSON of the whole `Result`, so a Raft error travels back as a
//! value and the client can tell it from a transport failure (a gRPC status).
//! The client half is [`super::GrpcRaftNetworkFactory`]. This service is
//! separate from the public `MetadataService`.

use quiver_proto::raft::v1::raft_service_server::{RaftService, RaftServiceServer};
use quiver_proto::raft::v1::{RaftReply, RaftRequest};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::{Request, Response, Status};

use super::types::MetaRaft;

/// Serves one coordinator's Raft to its peers.
#[derive(Clone)]
pub struct RaftGrpcService {
    raft: MetaRaft,
}

impl RaftGrpcService {
    /// The service for `raft`, ready to add to a tonic `Server`.
    pub fn server(raft: MetaRaft) -> RaftServiceServer<Self> {
        RaftServiceServer::new(Self { raft })
    }
}

fn decode<T: DeserializeOwned>(request: Request<RaftRequest>) -> Result<T, Status> {
    serde_json::from_slice(&request.into_inner().payload)
        .map_err(|e| Status::invalid_argument(format!("undecodable raft request: {e}")))
}

fn reply<T: Serialize>(result: &T) -> Result<Response<RaftReply>, Status> {
    let payload = serde_json::to_vec(result)
        .map_err(|e| Status::internal(format!("unencodable raft reply: {e}")))?;
    Ok(Response::new(RaftReply { payload }))
}

#[tonic::async_trait]
impl RaftService for RaftGrpcService {
    async fn append_entries(
        &self,
        request: Request<RaftRequest>,
    ) -> Result<Response<RaftReply>, Status> {
        let rpc = decode(request)?;
        reply(&self.raft.append_entries(rpc).await)
    }

    async fn vote(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let rpc = decode(request)?;
        reply(&self.raft.vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftRequest>,
    ) -> Result<Response<RaftReply>, Status> {
        let rpc = decode(request)?;
        reply(&self.raft.install_snapshot(rpc).await)
    }
}
