//! Unit tests of the shard-move commands (`moves.rs`, ADR 0013).

use super::apply_tests::{assert_rejected, columns, hash_table_cmd, register};
use super::moves::{CleanupPolicy, MoveState};
use super::state::{MetaState, NodeId, PlacementState, ShardId, TableKind};
use super::*;

/// Three workers; `a` (4 shards) with `b` co-located, and reference `r`.
fn cluster() -> MetaState {
    let mut s = MetaState::default();
    for w in ["w-0", "w-1", "w-2"] {
        register(&mut s, w, "g");
    }
    // the third worker takes no shards yet
    let w2 = s.node_by_addr("w-2", 9090).unwrap();
    apply(
        &mut s,
        &MetaCommand::SetDraining {
            node_id: w2,
            draining: true,
        },
    );
    let cmd = hash_table_cmd(&s, "a", 4, 1);
    assert!(matches!(
        apply(&mut s, &cmd),
        MetaResponse::TableCreated { .. }
    ));
    let a = s.table_by_name("a").unwrap();
    let TableKind::Hash { colocation_id, .. } = s.tables[&a].kind.clone() else {
        panic!("a is not hash-distributed");
    };
    let placements = s
        .shards_of(a)
        .iter()
        .map(|(id, sh)| PlacementSpec {
            shard_index: sh.index,
            node_id: s.placements_of(*id)[0].1.node_id,
        })
        .collect();
    let b = MetaCommand::CreateDistributedTable {
        table: NewTable {
            name: "b".into(),
            columns: columns(),
        },
        distribution: Distribution::Hash {
            column: "id".into(),
            colocate_with: Some(colocation_id),
            replication_factor: 1,
        },
        shards: placement::plan_hash_shards(4).unwrap(),
        placements,
    };
    assert!(matches!(
        apply(&mut s, &b),
        MetaResponse::TableCreated { .. }
    ));
    let workers: Vec<NodeId> = s.nodes.keys().copied().take(2).collect();
    let r = MetaCommand::CreateReferenceTable {
        table: NewTable {
            name: "r".into(),
            columns: columns(),
        },
        nodes: workers,
    };
    assert!(matches!(
        apply(&mut s, &r),
        MetaResponse::TableCreated { .. }
    ));
    apply(
        &mut s,
        &MetaCommand::SetDraining {
            node_id: w2,
            draining: false,
        },
    );
    s
}

fn first_shard(s: &MetaState, table: &str) -> (ShardId, NodeId) {
    let t = s.table_by_name(table).unwrap();
    let (shard, _) = s.shards_of(t)[0];
    (shard, s.placements_of(shard)[0].1.node_id)
}

fn start(s: &mut MetaState, id: &str, shard: ShardId, from: NodeId, to: NodeId) -> Vec<ShardId> {
    let cmd = MetaCommand::StartMove {
        id: id.into(),
        shard_id: shard,
        from,
        to,
        started_ms: 1,
        copy: false,
    };
    match apply(s, &cmd) {
        MetaResponse::MoveStarted { shards } => shards,
        other => panic!("{cmd:?}: {other:?}"),
    }
}

fn ok(s: &mut MetaState, cmd: MetaCommand) {
    assert_eq!(apply(s, &cmd), MetaResponse::Ok, "{cmd:?}");
}

fn progress(id: &str, state: MoveState) -> MetaCommand {
    MetaCommand::MoveProgress {
        id: id.into(),
        state,
        bytes_copied: 10,
        bytes_total: 20,
    }
}

#[test]
fn a_move_takes_the_co_located_shards_and_records_the_target_cleanup_first() {
    let mut s = cluster();
    let (shard, from) = first_shard(&s, "a");
    let (b_shard, _) = first_shard(&s, "b");
    let to = s.node_by_addr("w-2", 9090).unwrap();
    let shards = start(&mut s, "m1", shard, from, to);
    assert_eq!(shards, vec![shard, b_shard]);
    let job = &s.moves["m1"];
    assert_eq!(
        (job.from, job.to, &job.state),
        (from, to, &MoveState::Planned)
    );
    let records: Vec<_> = s.cleanups.values().collect();
    assert_eq!(records.len(), 1);
    assert_eq!(
        (records[0].node, records[0].policy),
        (to, CleanupPolicy::OnFailure)
    );
    assert_eq!(records[0].shards, shards);
    assert!(
        !records[0].is_due(&s),
        "the target's copies stay while the move runs"
    );
}

#[test]
fn bad_moves_are_refused_and_change_nothing() {
    let mut s = cluster();
    let (shard, from) = first_shard(&s, "a");
    let (r_shard, r_node) = first_shard(&s, "r");
    let to = s.node_by_addr("w-2", 9090).unwrap();
    let other = s
        .nodes
        .keys()
        .copied()
        .find(|n| *n != from && *n != to)
        .unwrap();
    let mv = |shard_id, from, to| MetaCommand::StartMove {
        id: "m".into(),
        shard_id,
        from,
        to,
        started_ms: 1,
        copy: false,
    };
    assert!(assert_rejected(&mut s, mv(9999, from, to)).contains("does not exist"));
    assert!(assert_rejected(&mut s, mv(r_shard, r_node, to)).contains("reference table"));
    assert!(assert_rejected(&mut s, mv(shard, other, to)).contains("no active placement"));
    assert!(assert_rejected(&mut s, mv(shard, from, from)).contains("already"));
    assert!(assert_rejected(&mut s, mv(shard, from, 77)).contains("no node 77"));
    ok(
        &mut s,
        MetaCommand::SetDraining {
            node_id: to,
            draining: true,
        },
    );
    assert!(assert_rejected(&mut s, mv(shard, from, to)).contains("cannot take placements"));
    ok(
        &mut s,
        MetaCommand::SetDraining {
            node_id: to,
            draining: false,
        },
    );
    start(&mut s, "m1", shard, from, to);
    assert!(assert_rejected(&mut s, mv(shard, from, to)).contains("already being moved"));
    // steps out of order
    let fence = MetaCommand::FenceMove {
        id: "m1".into(),
        deadline_ms: 5,
    };
    assert!(assert_rejected(&mut s, fence).contains("catches up"));
    let switch = MetaCommand::SwitchMove {
        id: "m1".into(),
        finished_ms: 5,
    };
    assert!(assert_rejected(&mut s, switch).contains("not fenced"));
    assert!(assert_rejected(&mut s, progress("m1", MoveState::Switched)).contains("cannot set"));
    assert!(assert_rejected(&mut s, progress("nope", MoveState::Copying)).contains("no move"));
    // the nodes of a running move stay
    assert!(assert_rejected(&mut s, MetaCommand::RemoveNode { node_id: to }).contains("move m1"));
}

#[test]
fn a_switch_moves_the_placements_bumps_epochs_and_leaves_the_source_to_clean() {
    let mut s = cluster();
    let (shard, from) = first_shard(&s, "a");
    let to = s.node_by_addr("w-2", 9090).unwrap();
    let shards = start(&mut s, "m1", shard, from, to);
    ok(&mut s, progress("m1", MoveState::Copying));
    ok(&mut s, progress("m1", MoveState::CatchingUp));
    ok(
        &mut s,
        MetaCommand::FenceMove {
            id: "m1".into(),
            deadline_ms: 5,
        },
    );
    ok(
        &mut s,
        MetaCommand::SwitchMove {
            id: "m1".into(),
            finished_ms: 6,
        },
    );
    for sh in &shards {
        let p = s.placements_of(*sh);
        assert_eq!(p.len(), 1);
        assert_eq!((p[0].1.node_id, p[0].1.state), (to, PlacementState::Active));
        assert_eq!(s.shards[sh].epoch, 1);
    }
    assert_eq!(s.moves["m1"].state, MoveState::Switched);
    let (&record, r) = s.cleanups.iter().next().unwrap();
    assert_eq!(s.cleanups.len(), 1, "the target's record is gone");
    assert_eq!((r.node, r.policy), (from, CleanupPolicy::DeferredOnSuccess));
    assert!(r.is_due(&s));
    // an ended move takes no more steps; its cleanup finishes once
    let again = MetaCommand::SwitchMove {
        id: "m1".into(),
        finished_ms: 7,
    };
    assert!(assert_rejected(&mut s, again).contains("has ended"));
    ok(&mut s, MetaCommand::FinishCleanup { record });
    assert!(s.cleanups.is_empty());
    let twice = MetaCommand::FinishCleanup { record };
    assert!(assert_rejected(&mut s, twice).contains("no cleanup record"));
    // and the shard can move back
    start(&mut s, "m2", shard, to, from);
}

#[test]
fn a_failed_move_keeps_the_source_and_cleans_the_target() {
    let mut s = cluster();
    let (shard, from) = first_shard(&s, "a");
    let to = s.node_by_addr("w-2", 9090).unwrap();
    start(&mut s, "m1", shard, from, to);
    ok(&mut s, progress("m1", MoveState::Copying));
    let (&record, _) = s.cleanups.iter().next().unwrap();
    let early = MetaCommand::FinishCleanup { record };
    assert!(assert_rejected(&mut s, early).contains("waits for move m1"));
    ok(
        &mut s,
        MetaCommand::FailMove {
            id: "m1".into(),
            reason: Some("target unreachable".into()),
            finished_ms: 3,
        },
    );
    assert_eq!(
        s.moves["m1"].state,
        MoveState::Failed("target unreachable".into())
    );
    assert_eq!(s.placements_of(shard)[0].1.node_id, from);
    assert_eq!(s.shards[&shard].epoch, 0);
    assert!(s.cleanups[&record].is_due(&s));
    ok(&mut s, MetaCommand::FinishCleanup { record });
    // a cancel of a new attempt works the same way
    start(&mut s, "m2", shard, from, to);
    ok(
        &mut s,
        MetaCommand::FailMove {
            id: "m2".into(),
            reason: None,
            finished_ms: 4,
        },
    );
    assert_eq!(s.moves["m2"].state, MoveState::Cancelled);
}

#[test]
fn ended_moves_are_forgotten_once_nothing_names_them() {
    let mut s = cluster();
    let (shard, from) = first_shard(&s, "a");
    let to = s.node_by_addr("w-2", 9090).unwrap();
    start(&mut s, "m1", shard, from, to);
    let forget = MetaCommand::ForgetMoves {
        ids: vec!["m1".into()],
    };
    apply(&mut s, &forget);
    assert!(s.moves.contains_key("m1"), "a running move stays");
    apply(
        &mut s,
        &MetaCommand::FailMove {
            id: "m1".into(),
            reason: Some("test".into()),
            finished_ms: 2,
        },
    );
    apply(&mut s, &forget);
    assert!(
        s.moves.contains_key("m1"),
        "its cleanup record still names it"
    );
    let record = *s.cleanups.keys().next().unwrap();
    apply(&mut s, &MetaCommand::FinishCleanup { record });
    apply(&mut s, &forget);
    assert!(!s.moves.contains_key("m1"));
}
