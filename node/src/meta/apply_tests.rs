//! Unit tests of the pure `apply` and of placement planning.

use super::*;

pub(super) fn register(s: &mut MetaState, host: &str, group: &str) -> NodeId {
    let cmd = MetaCommand::RegisterWorker {
        host: host.into(),
        port: 9090,
        group: group.into(),
    };
    match apply(s, &cmd) {
        MetaResponse::NodeRegistered { node_id, .. } => node_id,
        other => panic!("unexpected {other:?}"),
    }
}

pub(super) fn columns() -> Vec<ColumnDef> {
    vec![
        ColumnDef {
            name: "id".into(),
            data_type: "Int64".into(),
            nullable: false,
            default: None,
        },
        ColumnDef {
            name: "v".into(),
            data_type: "Utf8".into(),
            nullable: true,
            default: None,
        },
    ]
}

pub(super) fn hash_table_cmd(s: &MetaState, name: &str, shards: u32, rf: u32) -> MetaCommand {
    MetaCommand::CreateDistributedTable {
        table: NewTable {
            name: name.into(),
            columns: columns(),
        },
        distribution: Distribution::Hash {
            column: "id".into(),
            colocate_with: None,
            replication_factor: rf,
        },
        shards: plan_hash_shards(shards).unwrap(),
        placements: plan_placements(s, 0, shards, rf).unwrap(),
    }
}

/// Asserts that `cmd` is rejected and leaves `s` as it was.
pub(super) fn assert_rejected(s: &mut MetaState, cmd: MetaCommand) -> String {
    let before = s.clone();
    match apply(s, &cmd) {
        MetaResponse::Rejected(reason) => {
            assert_eq!(*s, before, "a rejected {cmd:?} changed the state");
            reason
        }
        other => panic!("{cmd:?} was not rejected: {other:?}"),
    }
}

#[test]
fn registration_is_idempotent() {
    let mut s = MetaState::default();
    let cmd = MetaCommand::RegisterWorker {
        host: "w-0".into(),
        port: 9090,
        group: "a".into(),
    };
    let first = apply(&mut s, &cmd);
    assert_eq!(
        first,
        MetaResponse::NodeRegistered {
            node_id: 1,
            already_registered: false
        }
    );
    let after_first = s.clone();
    let again = apply(&mut s, &cmd);
    assert_eq!(
        again,
        MetaResponse::NodeRegistered {
            node_id: 1,
            already_registered: true
        }
    );
    assert_eq!(s, after_first, "registering again must change nothing");
    // AddNode with the same address is the same node.
    let add = MetaCommand::AddNode {
        host: "w-0".into(),
        port: 9090,
        group: "a".into(),
        role: NodeRole::Worker,
    };
    assert!(matches!(
        apply(&mut s, &add),
        MetaResponse::NodeRegistered {
            node_id: 1,
            already_registered: true
        }
    ));
    // Another port is another node.
    let other = MetaCommand::RegisterWorker {
        host: "w-0".into(),
        port: 9091,
        group: "a".into(),
    };
    assert!(matches!(
        apply(&mut s, &other),
        MetaResponse::NodeRegistered {
            node_id: 2,
            already_registered: false
        }
    ));
}

#[test]
fn placements_spread_evenly_over_active_workers() {
    let mut s = MetaState::default();
    let workers: Vec<NodeId> = (0..4)
        .map(|i| register(&mut s, &format!("w-{i}"), &format!("g{}", i % 2)))
        .collect();
    // A draining worker gets nothing.
    let drained = register(&mut s, "w-drain", "g0");
    apply(
        &mut s,
        &MetaCommand::SetDraining {
            node_id: drained,
            draining: true,
        },
    );

    let cmd = hash_table_cmd(&s, "t1", 32, 1);
    let MetaResponse::TableCreated {
        shard_ids,
        placement_ids,
        ..
    } = apply(&mut s, &cmd)
    else {
        panic!("table not created");
    };
    assert_eq!(shard_ids.len(), 32);
    assert_eq!(placement_ids.len(), 32);
    let counts = s.placement_counts();
    for w in &workers {
        assert_eq!(counts.get(w), Some(&8), "{counts:?}");
    }
    assert_eq!(counts.get(&drained), None);

    // Two copies each: 64 more placements, still even, never twice on a
    // node, and in two different groups.
    let cmd = hash_table_cmd(&s, "t2", 32, 2);
    let MetaResponse::TableCreated { shard_ids, .. } = apply(&mut s, &cmd) else {
        panic!("table not created");
    };
    let counts = s.placement_counts();
    for w in &workers {
        assert_eq!(counts.get(w), Some(&24), "{counts:?}");
    }
    for shard in shard_ids {
        let nodes: Vec<NodeId> = s
            .placements_of(shard)
            .iter()
            .map(|(_, p)| p.node_id)
            .collect();
        assert_eq!(nodes.len(), 2);
        assert_ne!(nodes[0], nodes[1]);
        assert_ne!(s.nodes[&nodes[0]].group, s.nodes[&nodes[1]].group);
    }

    // An uneven count differs by at most one between workers.
    let before = s.placement_counts();
    let cmd = hash_table_cmd(&s, "t3", 6, 1);
    apply(&mut s, &cmd);
    let added: Vec<u64> = workers
        .iter()
        .map(|w| s.placement_counts()[w] - before[w])
        .collect();
    assert_eq!(added.iter().sum::<u64>(), 6);
    assert!(
        added.iter().max().unwrap() - added.iter().min().unwrap() <= 1,
        "{added:?}"
    );

    // Not enough workers for the replication factor.
    assert!(matches!(
        plan_placements(&s, 0, 4, 5),
        Err(PlacementError::NotEnoughWorkers { .. })
    ));
}

#[test]
fn colocated_table_follows_its_group() {
    let mut s = MetaState::default();
    for i in 0..3 {
        register(&mut s, &format!("w-{i}"), "g");
    }
    let cmd = hash_table_cmd(&s, "orders", 8, 1);
    apply(&mut s, &cmd);
    let TableKind::Hash { colocation_id, .. } = s.tables[&1].kind else {
        panic!("not a hash table");
    };
    let layout = colocated_placements(&s, colocation_id).unwrap();
    let cmd = MetaCommand::CreateDistributedTable {
        table: NewTable {
            name: "lines".into(),
            columns: columns(),
        },
        distribution: Distribution::Hash {
            column: "id".into(),
            colocate_with: Some(colocation_id),
            replication_factor: 1,
        },
        shards: plan_hash_shards(8).unwrap(),
        placements: layout.clone(),
    };
    assert!(matches!(
        apply(&mut s, &cmd),
        MetaResponse::TableCreated { .. }
    ));
    assert_eq!(s.colocations.len(), 1);
    // A different layout in the same group is refused.
    let mut moved = layout;
    moved[0].node_id = if moved[0].node_id == 1 { 2 } else { 1 };
    let bad = MetaCommand::CreateDistributedTable {
        table: NewTable {
            name: "other".into(),
            columns: columns(),
        },
        distribution: Distribution::Hash {
            column: "id".into(),
            colocate_with: Some(colocation_id),
            replication_factor: 1,
        },
        shards: plan_hash_shards(8).unwrap(),
        placements: moved,
    };
    assert_rejected(&mut s, bad);
    // Dropping both tables drops the group.
    apply(&mut s, &MetaCommand::DropTable { table_id: 1 });
    assert_eq!(s.colocations.len(), 1);
    apply(&mut s, &MetaCommand::DropTable { table_id: 2 });
    assert!(s.colocations.is_empty());
    assert!(s.shards.is_empty() && s.placements.is_empty());
}

#[test]
fn node_with_placements_cannot_be_removed() {
    let mut s = MetaState::default();
    let a = register(&mut s, "w-a", "g");
    let b = register(&mut s, "w-b", "g");
    let cmd = MetaCommand::CreateReferenceTable {
        table: NewTable {
            name: "countries".into(),
            columns: columns(),
        },
        nodes: vec![a],
    };
    assert!(matches!(
        apply(&mut s, &cmd),
        MetaResponse::TableCreated { .. }
    ));
    let reason = assert_rejected(&mut s, MetaCommand::RemoveNode { node_id: a });
    assert!(reason.contains("only copy"), "{reason}");
    // A node holding a copy of a table that is not a reference table must
    // be drained first.
    let hash = hash_table_cmd(&s, "t", 2, 1);
    assert!(matches!(
        apply(&mut s, &hash),
        MetaResponse::TableCreated { .. }
    ));
    let reason = assert_rejected(&mut s, MetaCommand::RemoveNode { node_id: a });
    assert!(reason.contains("drain it first"), "{reason}");
    apply(&mut s, &MetaCommand::DropTable { table_id: 2 });
    // A node without placements goes.
    assert_eq!(
        apply(&mut s, &MetaCommand::RemoveNode { node_id: b }),
        MetaResponse::Ok
    );
    assert!(!s.nodes.contains_key(&b));
    // A reference table's copy leaves with its node when another remains.
    let c = register(&mut s, "w-c", "g");
    let shard = *s.shards.keys().next().unwrap();
    let copy = s.add_placement(shard, c);
    assert_eq!(
        apply(&mut s, &MetaCommand::RemoveNode { node_id: c }),
        MetaResponse::Ok
    );
    assert!(!s.placements.contains_key(&copy));
    // Once the table is gone, so may the node be.
    apply(&mut s, &MetaCommand::DropTable { table_id: 1 });
    assert_eq!(
        apply(&mut s, &MetaCommand::RemoveNode { node_id: a }),
        MetaResponse::Ok
    );
}

#[test]
fn first_txn_decision_wins() {
    let mut s = MetaState::default();
    let abort = MetaCommand::DecideTxn {
        gid: "gid-1".into(),
        decision: Decision::Abort,
        participants: vec![1, 2],
    };
    let commit = MetaCommand::DecideTxn {
        gid: "gid-1".into(),
        decision: Decision::Commit,
        participants: vec![1, 2],
    };
    assert_eq!(
        apply(&mut s, &abort),
        MetaResponse::TxnDecided {
            decision: Decision::Abort,
            first: true
        }
    );
    // The late commit learns the stored abort.
    assert_eq!(
        apply(&mut s, &commit),
        MetaResponse::TxnDecided {
            decision: Decision::Abort,
            first: false
        }
    );
    assert_eq!(s.txns["gid-1"].decision, Decision::Abort);
    apply(
        &mut s,
        &MetaCommand::ForgetTxns {
            gids: vec!["gid-1".into()],
        },
    );
    assert!(s.txns.is_empty());
}

#[test]
fn rejected_commands_leave_the_state_unchanged() {
    let mut s = MetaState::default();
    let w = register(&mut s, "w-0", "g");
    let cmd = hash_table_cmd(&s, "t", 4, 1);
    apply(&mut s, &cmd);

    // Name taken.
    let dup = hash_table_cmd(&s, "t", 4, 1);
    assert_rejected(&mut s, dup);
    // Hash shards that leave a gap.
    let mut gap = hash_table_cmd(&s, "t2", 4, 1);
    if let MetaCommand::CreateDistributedTable { shards, .. } = &mut gap {
        shards[1].min += 1;
    }
    assert_rejected(&mut s, gap);
    // Placement on a node that does not exist.
    let mut ghost = hash_table_cmd(&s, "t3", 4, 1);
    if let MetaCommand::CreateDistributedTable { placements, .. } = &mut ghost {
        placements[3].node_id = 99;
    }
    assert_rejected(&mut s, ghost);
    // Distribution column that is not a column.
    let mut bad_col = hash_table_cmd(&s, "t4", 4, 1);
    if let MetaCommand::CreateDistributedTable { distribution, .. } = &mut bad_col {
        *distribution = Distribution::Hash {
            column: "nope".into(),
            colocate_with: None,
            replication_factor: 1,
        };
    }
    assert_rejected(&mut s, bad_col);
    // Stale schema version, and dropping the distribution column.
    assert_rejected(
        &mut s,
        MetaCommand::AlterTable {
            table_id: 1,
            columns: columns(),
            expected_version: 7,
        },
    );
    assert_rejected(
        &mut s,
        MetaCommand::AlterTable {
            table_id: 1,
            columns: columns()[1..].to_vec(),
            expected_version: 1,
        },
    );
    // Shards of a hash table cannot be dropped one by one.
    let shard = *s.shards.keys().next().unwrap();
    assert_rejected(
        &mut s,
        MetaCommand::DropShards {
            table_id: 1,
            shard_ids: vec![shard],
        },
    );
    // Unknown nodes, placements, rebalances.
    assert_rejected(&mut s, MetaCommand::RemoveNode { node_id: 42 });
    assert_rejected(
        &mut s,
        MetaCommand::MarkNodeFailed {
            node_id: w,
            reason: "x".into(),
            promotions: vec![1000],
        },
    );
    assert_rejected(
        &mut s,
        MetaCommand::RebalanceProgress {
            id: "r".into(),
            moves_done: 1,
        },
    );
    // And the valid alter goes through.
    assert_eq!(
        apply(
            &mut s,
            &MetaCommand::AlterTable {
                table_id: 1,
                columns: columns(),
                expected_version: 1,
            }
        ),
        MetaResponse::TableAltered { schema_version: 2 }
    );
}

#[test]
fn range_shards_and_failover() {
    let mut s = MetaState::default();
    let a = register(&mut s, "w-a", "g1");
    let b = register(&mut s, "w-b", "g2");
    let spec = |index, min, max| ShardSpec { index, min, max };
    let cmd = MetaCommand::CreateDistributedTable {
        table: NewTable {
            name: "events".into(),
            columns: columns(),
        },
        distribution: Distribution::Range {
            column: "id".into(),
            interval: Some(100),
            replication_factor: 2,
        },
        shards: vec![spec(0, 0, 100)],
        placements: plan_placements(&s, 0, 1, 2).unwrap(),
    };
    assert!(matches!(
        apply(&mut s, &cmd),
        MetaResponse::TableCreated { .. }
    ));
    // Overlapping range refused; adjacent one accepted with index 1.
    let overlap = MetaCommand::AddRangeShards {
        table_id: 1,
        shards: vec![spec(1, 50, 150)],
        placements: vec![PlacementSpec {
            shard_index: 1,
            node_id: a,
        }],
    };
    assert_rejected(&mut s, overlap);
    let next = MetaCommand::AddRangeShards {
        table_id: 1,
        shards: vec![spec(1, 100, 200)],
        placements: plan_placements(&s, 1, 1, 2).unwrap(),
    };
    let MetaResponse::ShardsAdded { shard_ids, .. } = apply(&mut s, &next) else {
        panic!("shards not added");
    };
    assert_eq!(s.shards[&shard_ids[0]].index, 1);

    // Node a fails: its placements go inactive, b's stay active.
    let b_placement = s
        .placements
        .iter()
        .find(|(_, p)| p.node_id == b)
        .map(|(id, _)| *id)
        .unwrap();
    let resp = apply(
        &mut s,
        &MetaCommand::MarkNodeFailed {
            node_id: a,
            reason: "pod deleted".into(),
            promotions: vec![b_placement],
        },
    );
    assert_eq!(
        resp,
        MetaResponse::NodeFailed {
            deactivated: 2,
            promoted: 0
        }
    );
    assert!(!s.nodes[&a].active);
    assert!(s
        .placements
        .values()
        .filter(|p| p.node_id == a)
        .all(|p| p.state == PlacementState::Inactive));
    // A failed node takes no new placements.
    assert_eq!(placeable_workers(&s), vec![b]);

    // Drop the first range.
    let first = s.shards_of(1)[0].0;
    assert_eq!(
        apply(
            &mut s,
            &MetaCommand::DropShards {
                table_id: 1,
                shard_ids: vec![first],
            }
        ),
        MetaResponse::Ok
    );
    assert_eq!(s.shards_of(1).len(), 1);
    assert!(s.placements.values().all(|p| p.shard_id != first));
}

#[test]
fn state_round_trips_through_json() {
    let mut s = MetaState::default();
    register(&mut s, "w-0", "g");
    let cmd = hash_table_cmd(&s, "t", 4, 1);
    apply(&mut s, &cmd);
    let json = serde_json::to_vec(&s).unwrap();
    let back: MetaState = serde_json::from_slice(&json).unwrap();
    assert_eq!(back, s);
    // Deterministic: serializing twice gives the same bytes.
    assert_eq!(serde_json::to_vec(&back).unwrap(), json);
}
