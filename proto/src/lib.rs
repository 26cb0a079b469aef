//! Protobuf/gRPC types shared by the Quiver node and operator.
//!
//! Step in the flow: the wire contract of the control plane. Coordinators
//! serve `quiver.meta.v1.MetadataService` (see `quiver/meta/v1/meta.proto`);
//! the operator and admin tools call it. Coordinators also serve each other
//! the internal `quiver.raft.v1.RaftService` (`quiver/raft/v1/raft.proto`),
//! which carries openraft messages as JSON. Besides the generated code this
//! crate holds the one shared convention that is not expressible in the
//! `.proto` file: how a follower says "not leader" and where the leader is
//! ([`not_leader`] builds that status, [`leader_hint`] reads it back).

/// Generated code for `quiver.meta.v1`.
pub mod meta {
    /// Version 1 of the metadata API.
    #[allow(missing_docs, clippy::all, clippy::pedantic)]
    pub mod v1 {
        tonic::include_proto!("quiver.meta.v1");
    }
}

/// Generated code for `quiver.raft.v1` (internal, coordinator to coordinator).
pub mod raft {
    /// Version 1 of the Raft transport.
    #[allow(missing_docs, clippy::all, clippy::pedantic)]
    pub mod v1 {
        tonic::include_proto!("quiver.raft.v1");
    }
}

use meta::v1::NotLeader;
use prost::Message;
use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

/// Message of a "not leader" status.
pub const NOT_LEADER_MESSAGE: &str = "not leader";
/// ASCII metadata key carrying the leader's Raft id in a "not leader" status.
pub const LEADER_ID_METADATA: &str = "quiver-leader-id";
/// ASCII metadata key carrying the leader's `host:port` in a "not leader" status.
pub const LEADER_ADDRESS_METADATA: &str = "quiver-leader-address";

/// The status a follower answers a mutation with: FAILED_PRECONDITION,
/// message [`NOT_LEADER_MESSAGE`], the [`NotLeader`] hint encoded as status
/// details, and the same hint as ASCII metadata for clients that cannot
/// decode details (e.g. grpcurl).
pub fn not_leader(hint: &NotLeader) -> Status {
    let mut status = Status::with_details(
        Code::FailedPrecondition,
        NOT_LEADER_MESSAGE,
        hint.encode_to_vec().into(),
    );
    if let Ok(value) = MetadataValue::try_from(hint.leader_id.to_string()) {
        status.metadata_mut().insert(LEADER_ID_METADATA, value);
    }
    if let Ok(value) = MetadataValue::try_from(hint.leader_address.as_str()) {
        status.metadata_mut().insert(LEADER_ADDRESS_METADATA, value);
    }
    status
}

/// Reads the leader hint out of a status built by [`not_leader`].
///
/// Returns `None` when the status is not a "not leader" answer. Returns
/// `Some` with an empty `leader_address` when the follower knows no leader
/// (an election is running).
pub fn leader_hint(status: &Status) -> Option<NotLeader> {
    if status.code() != Code::FailedPrecondition || status.message() != NOT_LEADER_MESSAGE {
        return None;
    }
    if !status.details().is_empty() {
        if let Ok(hint) = NotLeader::decode(status.details()) {
            return Some(hint);
        }
    }
    let metadata = status.metadata();
    let leader_address = metadata
        .get(LEADER_ADDRESS_METADATA)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let leader_id = metadata
        .get(LEADER_ID_METADATA)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or_default();
    Some(NotLeader {
        leader_id,
        leader_address,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_leader_round_trips_through_details() {
        let hint = NotLeader {
            leader_id: 2,
            leader_address: "db-coordinator-1.db-coordinator:9090".into(),
        };
        let status = not_leader(&hint);
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(leader_hint(&status), Some(hint));
    }

    #[test]
    fn hint_falls_back_to_metadata_without_details() {
        let mut status = Status::new(Code::FailedPrecondition, NOT_LEADER_MESSAGE);
        status.metadata_mut().insert(
            LEADER_ADDRESS_METADATA,
            MetadataValue::from_static("c-0.c:9090"),
        );
        status
            .metadata_mut()
            .insert(LEADER_ID_METADATA, MetadataValue::from_static("7"));
        let hint = leader_hint(&status).expect("a not-leader status");
        assert_eq!(hint.leader_id, 7);
        assert_eq!(hint.leader_address, "c-0.c:9090");
    }

    #[test]
    fn other_statuses_carry_no_hint() {
        assert_eq!(leader_hint(&Status::unavailable("down")), None);
        assert_eq!(
            leader_hint(&Status::failed_precondition("node has placements")),
            None
        );
    }

    #[test]
    fn unknown_leader_is_an_empty_hint() {
        let status = not_leader(&NotLeader::default());
        let hint = leader_hint(&status).expect("a not-leader status");
        assert!(hint.leader_address.is_empty());
    }
}
