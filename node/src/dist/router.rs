//! The router path: a point query on a distributed table's unique key
//! goes to the one shard holding it, without DataFusion planning.
//!
//! Step in the flow: the session recognises `SELECT cols FROM t WHERE key =
//! v` ([`PointQuery`]) and, when `t` is distributed, calls [`route_point`].
//! The key's distribution column value is hashed to its shard, and the
//! worker holding it answers `SELECT cols FROM shard WHERE key = literal`
//! with its own point-query fast path. Inside a transaction that wrote to
//! distributed tables the fragment runs in that transaction.

use datafusion::arrow::array::{Array, ArrayRef, RecordBatch, RecordBatchOptions};
use datafusion::common::{ParamValues, ScalarValue};
use futures::TryStreamExt;

use super::client::remote_error;
use super::coord::Cluster;
use super::read_point::ReadPoint;
use super::route::TableLayout;
use super::shard_table_name;
use super::table::quote;
use super::wire::QueryTicket;
use crate::sql::point::PointQuery;
use crate::sql::txn::TxnContext;
use crate::sql::{Outcome, SqlError};

/// `v` as a SQL literal (the key types of a point query: integers, text).
fn literal(arr: &ArrayRef) -> Option<String> {
    let v = ScalarValue::try_from_array(arr, 0).ok()?;
    match v {
        ScalarValue::Int16(Some(x)) => Some(x.to_string()),
        ScalarValue::Int32(Some(x)) => Some(x.to_string()),
        ScalarValue::Int64(Some(x)) => Some(x.to_string()),
        ScalarValue::Utf8(Some(s))
        | ScalarValue::LargeUtf8(Some(s))
        | ScalarValue::Utf8View(Some(s)) => Some(format!("'{}'", s.replace('\'', "''"))),
        _ => None,
    }
}

/// Answers point query `q` on distributed table `layout` from its shard;
/// `None` when the general path must run it (a key value that does not fit).
pub async fn route_point(
    cluster: &std::sync::Arc<Cluster>,
    layout: &TableLayout,
    q: &PointQuery,
    params: Option<&ParamValues>,
    txn: &TxnContext,
) -> Result<Option<Outcome>, SqlError> {
    let Some(keys) = q.key_arrays(params) else {
        return Ok(None);
    };
    let meta = &q.table;
    let mut conds = Vec::with_capacity(keys.len());
    let mut dist_value: Option<ArrayRef> = None;
    for (arr, &c) in keys.iter().zip(q.key_columns()) {
        let Some(lit) = literal(arr) else {
            return Ok(None);
        };
        let name = &meta.columns[c].name;
        if Some(name.as_str()) == layout.column() {
            dist_value = Some(arr.clone());
        }
        conds.push(format!("{} = {lit}", quote(name)));
    }
    let pos = if layout.is_reference() {
        0
    } else {
        let Some(v) = dist_value else {
            return Ok(None);
        };
        let col = layout.column().and_then(|c| meta.column_index(c));
        match layout
            .route(
                &RecordBatch::try_new_with_options(
                    std::sync::Arc::new(datafusion::arrow::datatypes::Schema::new(vec![
                        datafusion::arrow::datatypes::Field::new("k", v.data_type().clone(), true),
                    ])),
                    vec![v],
                    &RecordBatchOptions::new(),
                )
                .map_err(|e| SqlError::new("XX000", e.to_string()))?,
                col.map(|_| 0),
            )?
            .first()
        {
            Some((pos, _)) => *pos,
            None => return Ok(None),
        }
    };
    let shard = &layout.shards[pos];
    let (_, addr) = layout.read_placement(shard)?;
    let cols: Vec<String> = q
        .projection()
        .iter()
        .map(|&i| quote(&meta.columns[i].name))
        .collect();
    let sql = format!(
        "SELECT {} FROM {} WHERE {}",
        cols.join(", "),
        quote(&shard_table_name(&layout.info.name, shard.shard_id)),
        conds.join(" AND ")
    );
    let ticket = QueryTicket {
        sql,
        gid: txn.dist_gid(),
        tables: vec![],
        // One shard on one worker is one version, consistent by itself;
        // a repeatable-read block reads its block's snapshot.
        snapshot: match ReadPoint::of_block(txn, cluster) {
            Some(rp) => rp.pin_for(&addr).await?,
            None => None,
        },
    };
    let (stream, _permit) = cluster.clients.query(&addr, &ticket).await?;
    let batches: Vec<RecordBatch> = stream
        .try_collect()
        .await
        .map_err(|e| remote_error(&addr, "reading a shard", e))?;
    let mut out = Vec::with_capacity(batches.len());
    for b in batches {
        let cols = super::scan::cast_columns(&b, &q.schema)
            .map_err(|e| SqlError::new("XX000", e.to_string()))?;
        out.push(
            RecordBatch::try_new(q.schema.clone(), cols)
                .map_err(|e| SqlError::new("XX000", e.to_string()))?,
        );
    }
    Ok(Some(Outcome::Batches {
        schema: q.schema.clone(),
        batches: out,
    }))
}
