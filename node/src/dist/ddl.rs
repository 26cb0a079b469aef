//! `create_distributed_table`, `create_reference_table` and dropping a
//! distributed table.
//!
//! Step in the flow: the session recognises `SELECT create_...(...)` as a
//! [`UtilityCall`] and runs it here, on a coordinator:
//! 1. the local table (plain `CREATE TABLE` before) gives the schema and
//!    stays as the "shell" that `pg_catalog` and `\d` read;
//! 2. the shards and placements are planned ([`crate::meta::placement`])
//!    and recorded in Raft in one `CreateDistributedTable` /
//!    `CreateReferenceTable` entry;
//! 3. every placement's shard table is created on its worker (on failure
//!    the metadata is dropped again and the error reported);
//! 4. rows already in the local table move into the shards in one
//!    distributed transaction, then the local copy is emptied.

use std::sync::Arc;

use datafusion::sql::sqlparser::ast::{
    Expr as SqlExpr, FunctionArg, FunctionArgExpr, FunctionArguments, SelectItem, SetExpr,
    Statement, Value,
};

use super::coord::{meta_err, Cluster};
use super::route::{ShardRoute, TableLayout};
use super::shard_table_name;
use super::wire::Action;
use crate::meta::command::{Distribution, MetaCommand, MetaResponse, NewTable};
use crate::meta::placement::{
    colocated_placements, placeable_workers, plan_hash_shards, plan_placements,
};
use crate::meta::state::{ColumnDef, TableKind};
use crate::sql::txn::TxnContext;
use crate::sql::{Database, SqlError};
use crate::storage::table::TableMeta;
use crate::storage::{TableWrites, WriteSet};

/// A `SELECT f(args)` of one of Quiver's cluster functions.
#[derive(Debug, Clone)]
pub struct UtilityCall {
    pub name: String,
    /// Positional arguments, as text.
    pub args: Vec<String>,
    /// `name => value` arguments, as text.
    pub named: Vec<(String, String)>,
    /// Arguments given as expressions (e.g. `now() - interval '30 days'`):
    /// their SQL stands in `args`/`named` until the session evaluates them
    /// ([`UtilityCall::computed`]).
    pub computed: Vec<ArgRef>,
}

/// Which argument of a [`UtilityCall`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArgRef {
    Position(usize),
    Named(String),
}

impl UtilityCall {
    /// The SQL of each argument given as an expression, with a slot to put
    /// its value in.
    pub fn computed(&mut self) -> Vec<(String, &mut String)> {
        let mut out = Vec::new();
        let computed = self.computed.clone();
        for (i, a) in self.args.iter_mut().enumerate() {
            if computed.contains(&ArgRef::Position(i)) {
                out.push((a.clone(), a));
            }
        }
        for (n, v) in self.named.iter_mut() {
            if computed.contains(&ArgRef::Named(n.clone())) {
                out.push((v.clone(), v));
            }
        }
        out
    }
}

const UTILITIES: &[&str] = &[
    "create_distributed_table",
    "create_reference_table",
    "quiver_drop_old_shards",
    super::mover::MOVE_FN,
    "rebalance_table_shards",
    "quiver_cancel_rebalance",
];

fn arg_text(e: &SqlExpr) -> Option<String> {
    match e {
        SqlExpr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => Some(s.clone()),
            Value::Number(n, _) => Some(n.clone()),
            Value::Boolean(b) => Some(b.to_string()),
            _ => None,
        },
        SqlExpr::Cast { expr, .. } => arg_text(expr),
        SqlExpr::Identifier(i) => Some(i.value.clone()),
        _ => None,
    }
}

/// Recognises `SELECT create_distributed_table(...)` and friends.
pub fn utility_call(stmt: &Statement) -> Option<UtilityCall> {
    let Statement::Query(q) = stmt else {
        return None;
    };
    let SetExpr::Select(sel) = q.body.as_ref() else {
        return None;
    };
    if !sel.from.is_empty() || sel.projection.len() != 1 || sel.selection.is_some() {
        return None;
    }
    let (SelectItem::UnnamedExpr(SqlExpr::Function(f))
    | SelectItem::ExprWithAlias {
        expr: SqlExpr::Function(f),
        ..
    }) = &sel.projection[0]
    else {
        return None;
    };
    let name = f.name.to_string().to_ascii_lowercase();
    if !UTILITIES.contains(&name.as_str()) {
        return None;
    }
    let mut call = UtilityCall {
        name,
        args: vec![],
        named: vec![],
        computed: vec![],
    };
    let FunctionArguments::List(list) = &f.args else {
        return Some(call);
    };
    for a in &list.args {
        let (name, e) = match a {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => (None, e),
            FunctionArg::Named {
                name,
                arg: FunctionArgExpr::Expr(e),
                ..
            }
            | FunctionArg::ExprNamed {
                name: SqlExpr::Identifier(name),
                arg: FunctionArgExpr::Expr(e),
                ..
            } => (Some(crate::sql::idents::fold(name)), e),
            _ => return None,
        };
        let text = match arg_text(e) {
            Some(t) => t,
            None => {
                call.computed.push(match &name {
                    Some(n) => ArgRef::Named(n.clone()),
                    None => ArgRef::Position(call.args.len()),
                });
                e.to_string()
            }
        };
        match name {
            Some(n) => call.named.push((n, text)),
            None => call.args.push(text),
        }
    }
    Some(call)
}

/// The result of a utility call: one text column named after the function
/// (PostgreSQL shows `void` results as an empty value).
pub fn utility_schema(call: &UtilityCall) -> datafusion::arrow::datatypes::SchemaRef {
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    Arc::new(Schema::new(vec![Field::new(
        &call.name,
        DataType::Utf8,
        true,
    )]))
}

fn arg<'a>(call: &'a UtilityCall, pos: usize, name: &str) -> Option<&'a str> {
    call.args.get(pos).map(String::as_str).or_else(|| {
        call.named
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    })
}

fn column_defs(meta: &TableMeta) -> Vec<ColumnDef> {
    meta.columns
        .iter()
        .map(|c| ColumnDef {
            name: c.name.clone(),
            data_type: c.ty.arrow_type().to_string(),
            nullable: c.nullable,
            default: c.default.clone(),
        })
        .collect()
}

/// Runs a [`UtilityCall`] on a coordinator; the text of its result.
pub async fn run_utility(
    call: &UtilityCall,
    cluster: &Arc<Cluster>,
    db: &Arc<Database>,
    default_shard_count: u32,
    replication_factor: u32,
) -> Result<String, SqlError> {
    let name = arg(call, 0, "table_name")
        .map(crate::sql::idents::name_text)
        .ok_or_else(|| SqlError::new("42883", format!("{}() needs a table name", call.name)))?;
    for (n, _) in &call.named {
        let known = [
            "table_name",
            "distribution_column",
            "shard_count",
            "colocate_with",
            "partition_by",
            "interval",
            "older_than",
        ];
        if !known.contains(&n.as_str()) {
            return Err(SqlError::new(
                "42883",
                format!("{}() has no parameter named \"{n}\"", call.name),
            ));
        }
    }
    let shell = db
        .engine
        .snapshot()
        .table_by_name(&name)
        .map(|t| t.meta.clone())
        .ok_or_else(|| SqlError::new("42P01", format!("relation \"{name}\" does not exist")))?;
    if call.name == "quiver_drop_old_shards" {
        return drop_old_shards(call, cluster, &shell).await;
    }
    let state = cluster.snapshot();
    if state.table_by_name(&name).is_some() {
        return Err(SqlError::new(
            "42P07",
            format!("table \"{name}\" is already distributed"),
        ));
    }
    let new_table = NewTable {
        name: name.clone(),
        columns: column_defs(&shell),
    };
    let cmd = if call.name == "create_reference_table" {
        let nodes = placeable_workers(&state);
        if nodes.is_empty() {
            return Err(SqlError::new(
                "55000",
                "no active worker to place the reference table on",
            ));
        }
        MetaCommand::CreateReferenceTable {
            table: new_table,
            nodes,
        }
    } else {
        let column = arg(call, 1, "distribution_column")
            .map(crate::sql::idents::name_text)
            .ok_or_else(|| {
                SqlError::new(
                    "42883",
                    "create_distributed_table() needs a distribution column",
                )
            })?;
        let col_idx = shell.column_index(&column).ok_or_else(|| {
            SqlError::new(
                "42703",
                format!("column \"{column}\" of relation \"{name}\" does not exist"),
            )
        })?;
        if shell.unique_keys().iter().any(|k| !k.contains(&col_idx)) {
            return Err(SqlError::new(
                "0A000",
                format!(
                    "cannot distribute relation \"{name}\": a PRIMARY KEY or UNIQUE constraint \
                     must include the distribution column \"{column}\""
                ),
            ));
        }
        let partition_by = arg(call, usize::MAX, "partition_by").unwrap_or("hash");
        if partition_by.eq_ignore_ascii_case("range") {
            range_table(
                call,
                new_table,
                &column,
                &shell.columns[col_idx].ty.arrow_type(),
                replication_factor,
            )?
        } else if !partition_by.eq_ignore_ascii_case("hash") {
            return Err(SqlError::new(
                "22023",
                format!("partition_by must be 'hash' or 'range', not '{partition_by}'"),
            ));
        } else {
            let column_type = shell.columns[col_idx].ty.arrow_type().to_string();
            let shard_count = match arg(call, 2, "shard_count") {
                Some(n) => n.parse::<u32>().map_err(|_| {
                    SqlError::new(
                        "22023",
                        format!("shard_count must be a positive integer, not {n}"),
                    )
                })?,
                None => default_shard_count,
            };
            let colocate_with = arg(call, 3, "colocate_with").map(str::to_owned);
            // Co-location: with a named table, its group (which must match);
            // by default, any group with the same shard count and column type.
            let group = match colocate_with.as_deref() {
                Some(c) if c.eq_ignore_ascii_case("none") => None,
                Some(c) if c.eq_ignore_ascii_case("default") => {
                    find_group(&state, shard_count, &column_type, replication_factor)
                }
                Some(other) => {
                    let other = crate::sql::idents::name_text(other);
                    let id = state.table_by_name(&other).ok_or_else(|| {
                        SqlError::new(
                            "42P01",
                            format!("relation \"{other}\" is not a distributed table"),
                        )
                    })?;
                    let TableKind::Hash { colocation_id, .. } = state.tables[&id].kind else {
                        return Err(SqlError::new(
                            "0A000",
                            format!("cannot colocate with \"{other}\": it is not hash-distributed"),
                        ));
                    };
                    let g = &state.colocations[&colocation_id];
                    if g.column_type != column_type {
                        return Err(SqlError::new(
                            "0A000",
                            format!(
                                "cannot colocate tables {name} and {other}: distribution column \
                             types do not match ({} and {})",
                                column_type, g.column_type
                            ),
                        ));
                    }
                    Some(colocation_id)
                }
                None => find_group(&state, shard_count, &column_type, replication_factor),
            };
            let (shards, placements, replication_factor) = match group {
                Some(g) => {
                    let info = &state.colocations[&g];
                    (
                        plan_hash_shards(info.shard_count)
                            .map_err(|e| SqlError::new("22023", e.to_string()))?,
                        colocated_placements(&state, g)
                            .map_err(|e| SqlError::new("55000", e.to_string()))?,
                        info.replication_factor,
                    )
                }
                None => (
                    plan_hash_shards(shard_count)
                        .map_err(|e| SqlError::new("22023", e.to_string()))?,
                    plan_placements(&state, 0, shard_count, replication_factor)
                        .map_err(|e| SqlError::new("55000", e.to_string()))?,
                    replication_factor,
                ),
            };
            MetaCommand::CreateDistributedTable {
                table: new_table,
                distribution: Distribution::Hash {
                    column,
                    colocate_with: group,
                    replication_factor,
                },
                shards,
                placements,
            }
        }
    };
    let MetaResponse::TableCreated { table_id, .. } = cluster.propose(cmd, "55000").await? else {
        return Err(meta_err("unexpected answer to a table creation"));
    };
    let layout = cluster
        .layout(&name)
        .ok_or_else(|| meta_err("the new table is missing from the catalogue"))?;
    if let Err(e) = create_shard_tables(cluster, &shell, &name, &layout.shards).await {
        let _ = cluster
            .propose(MetaCommand::DropTable { table_id }, "XX000")
            .await;
        drop_shards(cluster, &layout).await;
        return Err(e);
    }
    move_rows(cluster, db, &shell, &layout).await?;
    Ok(String::new())
}

/// The command creating range table `table` (with no shards yet).
fn range_table(
    call: &UtilityCall,
    table: NewTable,
    column: &str,
    ty: &datafusion::arrow::datatypes::DataType,
    replication_factor: u32,
) -> Result<MetaCommand, SqlError> {
    if arg(call, 2, "shard_count").is_some() || arg(call, 3, "colocate_with").is_some() {
        return Err(SqlError::new(
            "22023",
            "shard_count and colocate_with do not apply to a range-distributed table",
        ));
    }
    if !super::range::supported(ty) {
        return Err(SqlError::unsupported(format!(
            "a range distribution column must be an integer, date or timestamp; \"{column}\" is {ty}"
        )));
    }
    let interval = arg(call, usize::MAX, "interval").ok_or_else(|| {
        SqlError::new(
            "22023",
            "a range-distributed table needs an interval, e.g. interval => '1 day'",
        )
    })?;
    let interval = super::range::parse_interval(interval, ty)?;
    Ok(MetaCommand::CreateDistributedTable {
        table,
        distribution: Distribution::Range {
            column: column.to_owned(),
            interval: Some(interval),
            replication_factor,
        },
        shards: vec![],
        placements: vec![],
    })
}

/// `quiver_drop_old_shards(table, older_than)`: drops the range shards
/// whose whole range lies before `older_than`; the number dropped.
async fn drop_old_shards(
    call: &UtilityCall,
    cluster: &Cluster,
    shell: &TableMeta,
) -> Result<String, SqlError> {
    let layout = cluster.layout(&shell.name).ok_or_else(|| {
        SqlError::new(
            "0A000",
            format!("table \"{}\" is not range-distributed", shell.name),
        )
    })?;
    let older_than = arg(call, 1, "older_than").ok_or_else(|| {
        SqlError::new(
            "42883",
            "quiver_drop_old_shards() needs older_than => value",
        )
    })?;
    let ty = layout
        .column()
        .and_then(|c| shell.column_index(c))
        .map(|i| shell.columns[i].ty.arrow_type())
        .unwrap_or(datafusion::arrow::datatypes::DataType::Null);
    let dropped = super::range::drop_older(cluster, &layout, older_than, &ty).await?;
    Ok(dropped.to_string())
}

fn find_group(
    state: &crate::meta::state::MetaState,
    shard_count: u32,
    column_type: &str,
    replication_factor: u32,
) -> Option<u64> {
    state
        .colocations
        .iter()
        .find(|(id, g)| {
            g.shard_count == shard_count
                && g.column_type == column_type
                && g.replication_factor == replication_factor
                && state.first_table_in_colocation(**id).is_some()
        })
        .map(|(id, _)| *id)
}

/// Creates the tables of `shards` of table `name` on every placement.
pub(super) async fn create_shard_tables(
    cluster: &Cluster,
    shell: &TableMeta,
    name: &str,
    shards: &[ShardRoute],
) -> Result<(), SqlError> {
    let mut calls = Vec::new();
    for shard in shards {
        for (_, addr) in &shard.placements {
            let mut meta = shell.clone();
            meta.id = 0;
            meta.name = shard_table_name(name, shard.shard_id);
            let clients = cluster.clients.clone();
            let addr = addr.clone();
            calls.push(async move { clients.action(&addr, &Action::CreateShard { meta }).await });
        }
    }
    for r in futures::future::join_all(calls).await {
        r?;
    }
    Ok(())
}

/// Refuses schema changes a distributed table cannot take: dropping or
/// renaming its distribution column.
pub fn check_alter(layout: &TableLayout, new: &TableMeta) -> Result<(), SqlError> {
    if let Some(col) = layout.column() {
        if new.column_index(col).is_none() {
            return Err(SqlError::unsupported(format!(
                "cannot drop or rename the distribution column \"{col}\" of a distributed table"
            )));
        }
    }
    Ok(())
}

/// Applies `ALTER TABLE` to every shard of `layout` and records the new
/// columns in the catalogue. The shell table has already changed.
pub async fn alter_shards(
    cluster: &Cluster,
    layout: &TableLayout,
    new: &TableMeta,
    at: &datafusion::sql::sqlparser::ast::AlterTable,
) -> Result<(), SqlError> {
    use datafusion::sql::sqlparser::ast::{Ident, ObjectName};
    cluster.refuse_if_moving(layout.table_id)?;
    let mut calls = Vec::new();
    for shard in &layout.shards {
        let mut stmt = at.clone();
        stmt.name = ObjectName::from(vec![Ident::new(shard_table_name(
            &layout.info.name,
            shard.shard_id,
        ))]);
        let sql = Statement::AlterTable(stmt).to_string();
        for (_, addr) in &shard.placements {
            let clients = cluster.clients.clone();
            let addr = addr.clone();
            let sql = sql.clone();
            let gid = format!("ddl-{}-{}", layout.table_id, shard.shard_id);
            calls.push(async move {
                let exec = clients
                    .action(
                        &addr,
                        &Action::Exec {
                            gid: gid.clone(),
                            sql,
                            snapshot: None,
                        },
                    )
                    .await;
                if let Err(e) = exec {
                    // End the worker's transaction: the next ALTER of this
                    // shard reuses the name.
                    let _ = clients.action(&addr, &Action::Abort { gid }).await;
                    return Err(e);
                }
                clients.action(&addr, &Action::Commit { gid }).await
            });
        }
    }
    let mut first_err = None;
    for r in futures::future::join_all(calls).await {
        if let Err(e) = r {
            tracing::warn!(table = %layout.info.name, error = %e.message, "ALTER TABLE did not reach a shard");
            first_err.get_or_insert(e);
        }
    }
    cluster
        .propose(
            MetaCommand::AlterTable {
                table_id: layout.table_id,
                columns: column_defs(new),
                expected_version: layout.info.schema_version,
            },
            "40001",
        )
        .await?;
    match first_err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Drops every shard table of `layout` on its workers (best effort).
pub async fn drop_shards(cluster: &Cluster, layout: &TableLayout) {
    drop_shard_tables(cluster, &layout.info.name, &layout.shards).await;
}

/// Drops the tables of `shards` of table `name` on their workers (best
/// effort: a failure is logged).
pub(super) async fn drop_shard_tables(cluster: &Cluster, name: &str, shards: &[ShardRoute]) {
    let mut per_node: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for shard in shards {
        for (_, addr) in &shard.placements {
            per_node
                .entry(addr.clone())
                .or_default()
                .push(shard_table_name(name, shard.shard_id));
        }
    }
    for (addr, names) in per_node {
        if let Err(e) = cluster
            .clients
            .action(&addr, &Action::DropShards { names })
            .await
        {
            tracing::warn!(worker = %addr, error = %e.message, "could not drop shards");
        }
    }
}

/// Moves the local table's rows into the shards, then empties it.
async fn move_rows(
    cluster: &Arc<Cluster>,
    db: &Arc<Database>,
    shell: &TableMeta,
    layout: &TableLayout,
) -> Result<(), SqlError> {
    let snap = db.engine.snapshot();
    let Some(t) = snap.tables.get(&shell.id) else {
        return Ok(());
    };
    if t.live_rows() == 0 {
        return Ok(());
    }
    let stored = t.live_batches()?;
    let n = shell.columns.len();
    let batches = stored
        .iter()
        .map(|b| b.project(&(0..n).collect::<Vec<_>>()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| SqlError::new("XX000", e.to_string()))?;
    let column = layout.column().and_then(|c| shell.column_index(c));
    // A transaction of its own, even inside the caller's block.
    let own = TxnContext::new(db.engine.clone());
    let moved = cluster
        .write_rows(&own, shell, layout, column, &batches)
        .await;
    let dist = own.take_dist();
    if let Err(e) = moved {
        if let Some(d) = dist {
            cluster.abort(d).await;
        }
        return Err(e);
    }
    if let Some(d) = dist {
        cluster.commit(d).await?;
    }
    let mut ws = WriteSet::default();
    ws.tables.insert(
        shell.id,
        TableWrites {
            truncate: true,
            ..Default::default()
        },
    );
    db.engine.commit(ws).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(sql: &str) -> Statement {
        let db = datafusion::sql::sqlparser::dialect::PostgreSqlDialect {};
        datafusion::sql::sqlparser::parser::Parser::parse_sql(&db, sql)
            .unwrap()
            .remove(0)
    }

    #[test]
    fn utility_calls_are_recognised() {
        let c = utility_call(&parse(
            "SELECT create_distributed_table('events', 'tenant', shard_count => 8, colocate_with => 'x')",
        ))
        .unwrap();
        assert_eq!(c.name, "create_distributed_table");
        assert_eq!(c.args, vec!["events", "tenant"]);
        assert_eq!(arg(&c, 2, "shard_count"), Some("8"));
        assert_eq!(arg(&c, 3, "colocate_with"), Some("x"));
        assert!(utility_call(&parse("SELECT create_reference_table('r')")).is_some());
        assert!(utility_call(&parse("SELECT lower('r')")).is_none());
        assert!(utility_call(&parse("SELECT create_reference_table('r') FROM t")).is_none());
        let mut c = utility_call(&parse(
            "SELECT quiver_drop_old_shards('m', older_than => now() - INTERVAL '1 day')",
        ))
        .unwrap();
        assert_eq!(c.computed, vec![ArgRef::Named("older_than".into())]);
        for (sql, slot) in c.computed() {
            assert!(sql.starts_with("now()"));
            *slot = "2024-01-01".into();
        }
        assert_eq!(arg(&c, 1, "older_than"), Some("2024-01-01"));
    }
}
