//! The point-query fast path: `SELECT cols FROM t WHERE key = v [AND ...]`
//! on a whole unique key, answered from the hash index without DataFusion.
//!
//! Planning a query with DataFusion costs far more CPU than looking a row up
//! in the index, and point queries are the bulk of many OLTP workloads. A
//! statement qualifies only when its shape leaves nothing to interpret:
//! one stored table, plain (optionally aliased) column references or `*`,
//! and a conjunction of `column = literal | $n` that covers exactly the
//! columns of one unique key whose types compare the same way in Arrow and
//! PostgreSQL (integers and text). Anything else, and any value that does not
//! convert to the key's type without loss, takes the general path, which
//! gives the same answer (or the proper error) more slowly.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::{ParamValues, ScalarValue};
use datafusion::sql::sqlparser::ast::{
    BinaryOperator, Expr, GroupByExpr, ObjectName, ObjectNamePart, SelectFlavor, SelectItem,
    SetExpr, Statement, TableFactor, TableWithJoins, Value,
};

use super::txn::PendingTable;
use crate::storage::engine::Engine;
use crate::storage::table::{SqlType, TableMeta};
use crate::storage::{DbVersion, StorageError};

/// Where one key column's value comes from.
#[derive(Debug, Clone)]
pub(super) enum KeyValue {
    Literal(ScalarValue),
    /// `$n`, zero-based.
    Param(usize),
}

/// A WHERE clause that names one row by a whole unique key: the key's
/// columns and where each value comes from. Point queries and point writes
/// ([`super::point_write`]) share it.
#[derive(Debug, Clone)]
pub struct KeyLookup {
    pub table: Arc<TableMeta>,
    /// Table column positions of the unique key, in index order.
    key: Vec<usize>,
    /// One value per key column.
    values: Vec<KeyValue>,
}

/// A recognised point query, bound to the table version it was read from.
#[derive(Debug, Clone)]
pub struct PointQuery {
    pub table: Arc<TableMeta>,
    lookup: KeyLookup,
    /// Table column positions of the result.
    projection: Vec<usize>,
    /// The result schema (column names as PostgreSQL reports them).
    pub schema: SchemaRef,
}

/// Key column types whose equality means the same in Arrow and PostgreSQL
/// (not `char(n)`, which ignores trailing blanks, nor json).
fn key_type_ok(t: &SqlType) -> bool {
    matches!(
        t,
        SqlType::Int2 | SqlType::Int4 | SqlType::Int8 | SqlType::Text | SqlType::Varchar(_)
    )
}

/// The column an identifier expression names, if it names one of `meta`'s
/// columns through the table's name or alias.
fn column_of(e: &Expr, meta: &TableMeta, qualifier: &str) -> Option<usize> {
    let name = match e {
        Expr::Identifier(i) => super::idents::fold(i),
        Expr::CompoundIdentifier(parts) if parts.len() == 2 => {
            if super::idents::fold(&parts[0]) != qualifier {
                return None;
            }
            super::idents::fold(&parts[1])
        }
        Expr::Nested(inner) => return column_of(inner, meta, qualifier),
        _ => return None,
    };
    meta.column_index(&name)
}

/// A literal or parameter on the value side of `col = v`.
fn value_of(e: &Expr) -> Option<KeyValue> {
    match e {
        Expr::Value(v) => match &v.value {
            Value::Number(n, false) => n
                .parse::<i64>()
                .ok()
                .map(|n| KeyValue::Literal(ScalarValue::Int64(Some(n)))),
            Value::SingleQuotedString(s) => {
                Some(KeyValue::Literal(ScalarValue::Utf8(Some(s.clone()))))
            }
            Value::Placeholder(p) => {
                let n: usize = p.strip_prefix('$')?.parse().ok()?;
                n.checked_sub(1).map(KeyValue::Param)
            }
            _ => None,
        },
        Expr::Nested(inner) => value_of(inner),
        _ => None,
    }
}

/// Splits a conjunction of `col = v` into (column, value) pairs.
fn equalities(
    e: &Expr,
    meta: &TableMeta,
    qualifier: &str,
    out: &mut Vec<(usize, KeyValue)>,
) -> Option<()> {
    match e {
        Expr::BinaryOp {
            left,
            op: BinaryOperator::And,
            right,
        } => {
            equalities(left, meta, qualifier, out)?;
            equalities(right, meta, qualifier, out)
        }
        Expr::BinaryOp {
            left,
            op: BinaryOperator::Eq,
            right,
        } => {
            let (c, v) = match (column_of(left, meta, qualifier), value_of(right)) {
                (Some(c), Some(v)) => (c, v),
                _ => (column_of(right, meta, qualifier)?, value_of(left)?),
            };
            // A literal must be of a kind PostgreSQL would compare with the
            // column without an error: numbers with integer columns, strings
            // with either.
            if let KeyValue::Literal(ScalarValue::Int64(_)) = v {
                if meta.columns[c].ty.arrow_type() == DataType::Utf8 {
                    return None;
                }
            }
            out.push((c, v));
            Some(())
        }
        Expr::Nested(inner) => equalities(inner, meta, qualifier, out),
        _ => None,
    }
}

/// A query that is only its body: no WITH, ORDER BY, LIMIT, FETCH,
/// locking clause or dialect extras.
pub(super) fn is_plain(q: &datafusion::sql::sqlparser::ast::Query) -> bool {
    q.with.is_none()
        && q.order_by.is_none()
        && q.limit_clause.is_none()
        && q.fetch.is_none()
        && q.locks.is_empty()
        && q.for_clause.is_none()
        && q.settings.is_none()
        && q.format_clause.is_none()
        && q.pipe_operators.is_empty()
}

impl PointQuery {
    /// Recognises `stmt` as a point query on a table of `version`.
    pub fn recognize(stmt: &Statement, version: &DbVersion) -> Option<PointQuery> {
        let Statement::Query(q) = stmt else {
            return None;
        };
        if !is_plain(q) {
            return None;
        }
        let SetExpr::Select(s) = q.body.as_ref() else {
            return None;
        };
        let plain_group_by =
            matches!(&s.group_by, GroupByExpr::Expressions(e, m) if e.is_empty() && m.is_empty());
        if s.distinct.is_some()
            || s.top.is_some()
            || s.into.is_some()
            || s.exclude.is_some()
            || s.select_modifiers.is_some()
            || !s.optimizer_hints.is_empty()
            || !s.lateral_views.is_empty()
            || s.prewhere.is_some()
            || !s.connect_by.is_empty()
            || !plain_group_by
            || !s.cluster_by.is_empty()
            || !s.distribute_by.is_empty()
            || !s.sort_by.is_empty()
            || s.having.is_some()
            || !s.named_window.is_empty()
            || s.qualify.is_some()
            || s.value_table_mode.is_some()
            || !matches!(s.flavor, SelectFlavor::Standard)
            || s.from.len() != 1
            || !s.from[0].joins.is_empty()
        {
            return None;
        }
        let (table_name, qualifier) = single_table(&s.from[0])?;
        let data = version.table_by_name(&table_name)?;
        let meta = data.meta.clone();

        let mut projection = Vec::new();
        let mut fields: Vec<Field> = Vec::new();
        for item in &s.projection {
            match item {
                SelectItem::Wildcard(opts) if opts_plain(opts) => {
                    for (i, c) in meta.columns.iter().enumerate() {
                        projection.push(i);
                        fields.push(c.field());
                    }
                }
                SelectItem::UnnamedExpr(e) => {
                    let c = column_of(e, &meta, &qualifier)?;
                    projection.push(c);
                    fields.push(meta.columns[c].field());
                }
                SelectItem::ExprWithAlias { expr, alias } => {
                    let c = column_of(expr, &meta, &qualifier)?;
                    projection.push(c);
                    fields.push(
                        meta.columns[c]
                            .field()
                            .with_name(super::idents::fold(alias)),
                    );
                }
                _ => return None,
            }
        }
        if projection.is_empty() {
            return None;
        }

        let lookup = KeyLookup::of(s.selection.as_ref()?, meta.clone(), &qualifier)?;
        Some(PointQuery {
            schema: Arc::new(Schema::new(fields)),
            table: meta,
            lookup,
            projection,
        })
    }

    /// The parameter types this query expects (`$1` first), for Describe.
    pub fn param_types(&self) -> Vec<Option<DataType>> {
        self.lookup.param_types()
    }

    /// See [`KeyLookup::key_arrays`].
    pub fn key_arrays(&self, params: Option<&ParamValues>) -> Option<Vec<ArrayRef>> {
        self.lookup.key_arrays(params)
    }

    /// The key this query looks up.
    pub fn lookup(&self) -> &KeyLookup {
        &self.lookup
    }

    /// Table column positions of the result.
    pub fn projection(&self) -> &[usize] {
        &self.projection
    }

    /// Positions of the key columns in the table.
    pub fn key_columns(&self) -> &[usize] {
        &self.lookup.key
    }

    /// Projects a stored row batch to the result schema.
    pub fn project(&self, stored: &RecordBatch) -> Option<RecordBatch> {
        let cols = self
            .projection
            .iter()
            .map(|&i| stored.column(i).clone())
            .collect();
        RecordBatch::try_new(self.schema.clone(), cols).ok()
    }
}

impl KeyLookup {
    /// Recognises `selection` as `col = v AND ...` over exactly the columns
    /// of one of `meta`'s unique keys (columns named directly or through
    /// `qualifier`; values literals or parameters).
    pub(super) fn of(selection: &Expr, meta: Arc<TableMeta>, qualifier: &str) -> Option<Self> {
        let mut eqs = Vec::new();
        equalities(selection, &meta, qualifier, &mut eqs)?;
        for key in meta.unique_keys() {
            if key.len() != eqs.len() {
                continue;
            }
            let mut values = Vec::with_capacity(key.len());
            for &c in &key {
                let mut it = eqs.iter().filter(|(ec, _)| *ec == c);
                match (it.next(), it.next()) {
                    (Some((_, v)), None) => values.push(v.clone()),
                    _ => break,
                }
            }
            if values.len() != key.len() || !key.iter().all(|&c| key_type_ok(&meta.columns[c].ty)) {
                continue;
            }
            return Some(KeyLookup {
                table: meta,
                key,
                values,
            });
        }
        None
    }

    /// The parameter types this query expects (`$1` first), for Describe.
    pub fn param_types(&self) -> Vec<Option<DataType>> {
        let mut out: Vec<Option<DataType>> = Vec::new();
        for (v, &c) in self.values.iter().zip(&self.key) {
            if let KeyValue::Param(i) = v {
                if out.len() <= *i {
                    out.resize(*i + 1, None);
                }
                out[*i] = Some(self.table.columns[c].ty.arrow_type());
            }
        }
        out
    }

    /// The key values as one array per key column, or `None` when a value
    /// does not convert to its column's type exactly (the general path then
    /// decides what that means).
    pub fn key_arrays(&self, params: Option<&ParamValues>) -> Option<Vec<ArrayRef>> {
        let mut out = Vec::with_capacity(self.key.len());
        for (v, &c) in self.values.iter().zip(&self.key) {
            let value = match v {
                KeyValue::Literal(s) => s.clone(),
                KeyValue::Param(i) => match params? {
                    ParamValues::List(l) => l.get(*i)?.value.clone(),
                    ParamValues::Map(_) => return None,
                },
            };
            let ty = self.table.columns[c].ty.arrow_type();
            let value = if value.data_type() == ty {
                value
            } else {
                let cast = value.cast_to(&ty).ok()?;
                // Only a round trip proves the conversion lost nothing.
                if cast.cast_to(&value.data_type()).ok()? != value {
                    return None;
                }
                cast
            };
            if value.is_null() {
                return None;
            }
            out.push(value.to_array().ok()?);
        }
        Some(out)
    }

    /// Positions of the key columns in the table.
    pub fn key_columns(&self) -> &[usize] {
        &self.key
    }

    /// The stored rows (row ids kept) with this key as a transaction sees
    /// the table: the rows of `version` it has not deleted, then its own
    /// pending rows with the key. `None` when the index cannot answer at
    /// this snapshot, a key value does not fit its column, or the pending
    /// rows are too many to look through (the general path then runs).
    pub fn rows(
        &self,
        engine: &Engine,
        version: &DbVersion,
        pending: Option<&PendingTable>,
        params: Option<&ParamValues>,
    ) -> Result<Option<Vec<RecordBatch>>, StorageError> {
        let (Some(keys), Some(t), Some(idx)) = (
            self.key_arrays(params),
            version.tables.get(&self.table.id),
            engine.indexes(self.table.id),
        ) else {
            return Ok(None);
        };
        let Some(key) = idx
            .keys
            .iter()
            .find(|k| k.columns == self.key && k.usable_at(version.lsn))
        else {
            return Ok(None);
        };
        let pending_rows: usize =
            pending.map_or(0, |p| p.inserts.iter().map(|b| b.num_rows()).sum());
        if pending_rows > MAX_PENDING_SCAN {
            return Ok(None);
        }
        let encoded = key.encode_arrays(&keys)?;
        let wanted = encoded.row(0);
        let mut out = Vec::new();
        if !pending.is_some_and(|p| p.truncate) {
            if let Some(r) = key.newest(wanted.as_ref(), |r| t.is_live(r)) {
                if !pending.is_some_and(|p| p.deletes.contains(&r)) {
                    out.extend(t.row(r));
                }
            }
        }
        for b in pending.map_or(&[][..], |p| p.inserts.as_slice()) {
            let cols: Vec<ArrayRef> = self.key.iter().map(|&c| b.column(c).clone()).collect();
            let rows = key.encode_arrays(&cols)?;
            let hits: Vec<u32> = (0..b.num_rows())
                .filter(|&i| rows.row(i) == wanted)
                .filter_map(|i| u32::try_from(i).ok())
                .collect();
            if !hits.is_empty() {
                let take = datafusion::arrow::array::UInt32Array::from(hits);
                out.push(datafusion::arrow::compute::take_record_batch(b, &take)?);
            }
        }
        Ok(Some(out))
    }
}

/// A transaction with more pending rows in the table than this looks its key
/// up through the general path.
const MAX_PENDING_SCAN: usize = 4096;

/// The one plain table of a FROM item (no joins, hints or column
/// aliases): its catalog name and the qualifier of its columns.
pub(super) fn single_table(t: &TableWithJoins) -> Option<(String, String)> {
    if !t.joins.is_empty() {
        return None;
    }
    let TableFactor::Table {
        name,
        alias,
        args: None,
        with_hints,
        version: None,
        with_ordinality: false,
        partitions,
        json_path: None,
        sample: None,
        index_hints,
        ..
    } = &t.relation
    else {
        return None;
    };
    if !with_hints.is_empty() || !partitions.is_empty() || !index_hints.is_empty() {
        return None;
    }
    let table = plain_table_name(name)?;
    let qualifier = match alias {
        Some(a) if !a.columns.is_empty() => return None,
        Some(a) => super::idents::fold(&a.name),
        None => table.clone(),
    };
    Some((table, qualifier))
}

/// The catalog name of a table named plainly: `t`, `public.t` or
/// `quiver.public.t`.
pub(super) fn plain_table_name(name: &ObjectName) -> Option<String> {
    let parts: Vec<String> = name
        .0
        .iter()
        .map(|p| match p {
            ObjectNamePart::Identifier(i) => Some(super::idents::fold(i)),
            _ => None,
        })
        .collect::<Option<_>>()?;
    match parts.as_slice() {
        [t] => Some(t.clone()),
        [s, t] if s == "public" => Some(t.clone()),
        [c, s, t] if c == super::CATALOG && s == "public" => Some(t.clone()),
        _ => None,
    }
}

fn opts_plain(o: &datafusion::sql::sqlparser::ast::WildcardAdditionalOptions) -> bool {
    o.opt_ilike.is_none()
        && o.opt_exclude.is_none()
        && o.opt_except.is_none()
        && o.opt_replace.is_none()
        && o.opt_rename.is_none()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::table::ColumnMeta;
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    fn version() -> DbVersion {
        let col = |name: &str, ty| ColumnMeta {
            name: name.into(),
            ty,
            nullable: false,
            default: None,
        };
        let meta = TableMeta {
            id: 1,
            name: "kv".into(),
            columns: vec![
                col("id", SqlType::Int8),
                col("v", SqlType::Text),
                col("n", SqlType::Int4),
            ],
            primary_key: Some(vec![0]),
            uniques: vec![],
        };
        let mut v = DbVersion::default();
        v.names.insert("kv".into(), 1);
        v.tables.insert(
            1,
            Arc::new(crate::storage::table::TableData::new(Arc::new(meta))),
        );
        v
    }

    fn rec(sql: &str) -> Option<PointQuery> {
        let stmt = Parser::parse_sql(&PostgreSqlDialect {}, sql)
            .unwrap()
            .remove(0);
        PointQuery::recognize(&stmt, &version())
    }

    #[test]
    fn recognises_key_lookups() {
        let q = rec("SELECT v, n FROM kv WHERE id = $1").unwrap();
        assert_eq!(q.param_types(), vec![Some(DataType::Int64)]);
        assert_eq!(q.schema.field(0).name(), "v");
        let q = rec("select K.v AS value FROM public.kv k WHERE 5 = k.id").unwrap();
        assert_eq!(q.schema.field(0).name(), "value");
        let arrays = q.key_arrays(None).unwrap();
        assert_eq!(arrays[0].len(), 1);
        assert!(rec("SELECT * FROM kv WHERE (id = '7')").is_some());
    }

    #[test]
    fn leaves_everything_else_to_datafusion() {
        for sql in [
            "SELECT v FROM kv WHERE n = 1",
            "SELECT v FROM kv WHERE id = 1 AND n = 2",
            "SELECT v FROM kv WHERE id = 1 OR id = 2",
            "SELECT v FROM kv WHERE id > 1",
            "SELECT v FROM kv WHERE id = 1 ORDER BY v",
            "SELECT v FROM kv WHERE id = 1 LIMIT 1",
            "SELECT count(*) FROM kv WHERE id = 1",
            "SELECT v || 'x' FROM kv WHERE id = 1",
            "SELECT DISTINCT v FROM kv WHERE id = 1",
            "SELECT v FROM kv, kv AS b WHERE kv.id = 1",
            "SELECT v FROM other WHERE id = 1",
            "SELECT v FROM kv WHERE id = 1.5",
            "SELECT v FROM kv WHERE id = NULL",
            "SELECT v FROM kv x WHERE kv.id = 1",
            "SELECT v FROM kv WHERE v = 1",
        ] {
            assert!(rec(sql).is_none(), "{sql}");
        }
    }

    #[test]
    fn values_that_do_not_fit_fall_back() {
        let q = rec("SELECT v FROM kv WHERE id = 'abc'").unwrap();
        assert!(q.key_arrays(None).is_none());
        let q = rec("SELECT v FROM kv WHERE id = $1").unwrap();
        let p = ParamValues::List(vec![ScalarValue::Utf8(Some("x".into())).into()]);
        assert!(q.key_arrays(Some(&p)).is_none());
        let p = ParamValues::List(vec![ScalarValue::Int32(Some(3)).into()]);
        assert!(q.key_arrays(Some(&p)).is_some());
        assert!(q.key_arrays(None).is_none());
    }
}
