//! Keys and defaults in `pg_catalog`, from the tables Quiver stores.
//!
//! The `pg_catalog` emulation ships `pg_index`, `pg_constraint` and
//! `pg_attrdef` empty, so psql's `\d` showed no indexes and no defaults and
//! GUI clients found no primary key. Here each stored table's PRIMARY KEY
//! and UNIQUE constraints become a `pg_index` row, a `pg_constraint` row
//! and a `pg_class` row (relkind `i`, the table's `relhasindex` set), named
//! as PostgreSQL names them (`t_pkey`, `t_a_b_key`); each DEFAULT becomes a
//! `pg_attrdef` row whose `adbin` is the expression's text, which
//! [`pg_get_expr`] gives back. `pg_get_indexdef` and `pg_get_constraintdef`
//! write the definitions. The OIDs of indexes and constraints encode the
//! table's id (see [`key_oid`]), so the functions need no other state.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{
    new_null_array, Array, ArrayRef, AsArray, BooleanArray, Float64Array, Int16Array, Int32Array,
    RecordBatch, StringArray,
};
use datafusion::arrow::compute::{cast, concat_batches};
use datafusion::arrow::datatypes::{DataType, Field, Int32Type, Schema, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{DataFusionError, Result};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::TableType;
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature,
    Volatility,
};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionContext;

use super::idents::quote_if_needed;
use super::pg_attribute::{column, scan_all};
use crate::storage::table::TableMeta;
use crate::storage::Engine;

/// Index and constraint OIDs start here, above those the emulation hands
/// out to tables (from 16384, one per relation).
const KEY_OID_BASE: i64 = 1_000_000_000;
/// Keys per table that get distinct OIDs.
const KEYS_PER_TABLE: i64 = 32;
/// Table ids are taken modulo this, to keep OIDs within `i32`.
const TABLE_SPAN: i64 = 10_000_000;

/// What an OID made by [`key_oid`] names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyObject {
    Index,
    Constraint,
}

/// The OID of key `k` (0 = the primary key if any, then the UNIQUE
/// constraints in order) of table `table_id`, as an index or a constraint.
fn key_oid(table_id: u64, k: usize, what: KeyObject) -> i32 {
    let kind = match what {
        KeyObject::Index => 0,
        KeyObject::Constraint => KEYS_PER_TABLE,
    };
    let t = (table_id as i64) % TABLE_SPAN;
    (KEY_OID_BASE + t * 2 * KEYS_PER_TABLE + kind + k as i64) as i32
}

/// The table id (modulo [`TABLE_SPAN`]), kind and key of an OID from [`key_oid`].
fn decode_key_oid(oid: i64) -> Option<(i64, KeyObject, usize)> {
    let rel = oid.checked_sub(KEY_OID_BASE)?;
    if !(0..TABLE_SPAN * 2 * KEYS_PER_TABLE).contains(&rel) {
        return None;
    }
    let t = rel / (2 * KEYS_PER_TABLE);
    let rest = rel % (2 * KEYS_PER_TABLE);
    let what = if rest < KEYS_PER_TABLE {
        KeyObject::Index
    } else {
        KeyObject::Constraint
    };
    Some((t, what, (rest % KEYS_PER_TABLE) as usize))
}

/// One PRIMARY KEY or UNIQUE constraint of a table.
pub(super) struct Key<'a> {
    pub name: String,
    pub columns: &'a [usize],
    pub primary: bool,
}

/// A table's keys, the primary key first, named as PostgreSQL names them.
pub(super) fn keys(meta: &TableMeta) -> Vec<Key<'_>> {
    let mut out = Vec::new();
    if let Some(pk) = &meta.primary_key {
        out.push(Key {
            name: format!("{}_pkey", meta.name),
            columns: pk,
            primary: true,
        });
    }
    for u in &meta.uniques {
        let cols: Vec<&str> = u.iter().map(|&c| meta.columns[c].name.as_str()).collect();
        out.push(Key {
            name: format!("{}_{}_key", meta.name, cols.join("_")),
            columns: u,
            primary: false,
        });
    }
    out.truncate(KEYS_PER_TABLE as usize);
    out
}

fn column_list(meta: &TableMeta, cols: &[usize]) -> String {
    cols.iter()
        .map(|&c| quote_if_needed(&meta.columns[c].name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `pg_get_indexdef` of key `k` of `meta`.
fn index_def(meta: &TableMeta, k: usize) -> Option<String> {
    let key = keys(meta).into_iter().nth(k)?;
    Some(format!(
        "CREATE UNIQUE INDEX {} ON public.{} USING btree ({})",
        quote_if_needed(&key.name),
        quote_if_needed(&meta.name),
        column_list(meta, key.columns)
    ))
}

/// `pg_get_constraintdef` of key `k` of `meta`.
fn constraint_def(meta: &TableMeta, k: usize) -> Option<String> {
    let key = keys(meta).into_iter().nth(k)?;
    let kind = if key.primary { "PRIMARY KEY" } else { "UNIQUE" };
    Some(format!("{kind} ({})", column_list(meta, key.columns)))
}

/// Which catalog table a [`KeyTable`] serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    Class,
    Index,
    Constraint,
    AttrDef,
}

impl Which {
    pub fn of(name: &str) -> Option<Which> {
        Some(match name {
            "pg_class" => Which::Class,
            "pg_index" => Which::Index,
            "pg_constraint" => Which::Constraint,
            "pg_attrdef" => Which::AttrDef,
            _ => return None,
        })
    }
}

/// A `pg_catalog` table with rows for stored tables' keys and defaults
/// added to the emulation's own.
pub struct KeyTable {
    which: Which,
    inner: Arc<dyn TableProvider>,
    classes: Arc<dyn TableProvider>,
    engine: Arc<Engine>,
    schema: SchemaRef,
}

impl std::fmt::Debug for KeyTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyTable({:?})", self.which)
    }
}

impl KeyTable {
    pub fn new(
        which: Which,
        inner: Arc<dyn TableProvider>,
        classes: Arc<dyn TableProvider>,
        engine: Arc<Engine>,
    ) -> KeyTable {
        // Every column may be NULL: the added rows fill only some.
        let inner_schema = inner.schema();
        let fields: Vec<Field> = inner_schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect();
        KeyTable {
            which,
            inner,
            classes,
            engine,
            schema: Arc::new(Schema::new(fields)),
        }
    }

    /// The added rows, as named columns (the others are NULL).
    fn rows(&self, tables: &[(i32, i32, Arc<TableMeta>)]) -> Vec<(&'static str, ArrayRef)> {
        let mut oid = Vec::new();
        let mut name = Vec::new();
        let mut rel = Vec::new();
        let mut ns = Vec::new();
        let mut nkeys: Vec<i16> = Vec::new();
        let mut primary = Vec::new();
        let mut keytext = Vec::new();
        let mut adnum: Vec<i16> = Vec::new();
        for (table_oid, ns_oid, meta) in tables {
            if self.which == Which::AttrDef {
                for (i, c) in meta.columns.iter().enumerate() {
                    if let Some(d) = &c.default {
                        rel.push(*table_oid);
                        adnum.push(i as i16 + 1);
                        keytext.push(d.clone());
                    }
                }
                continue;
            }
            for (k, key) in keys(meta).iter().enumerate() {
                let what = if self.which == Which::Constraint {
                    KeyObject::Constraint
                } else {
                    KeyObject::Index
                };
                oid.push(key_oid(meta.id, k, what));
                name.push(key.name.clone());
                rel.push(*table_oid);
                ns.push(*ns_oid);
                nkeys.push(key.columns.len() as i16);
                primary.push(key.primary);
                let nums: Vec<String> = key.columns.iter().map(|c| (c + 1).to_string()).collect();
                keytext.push(match self.which {
                    // int2vector text, and an int2[] for conkey
                    Which::Index => nums.join(" "),
                    _ => format!("{{{}}}", nums.join(",")),
                });
            }
        }
        let n = rel.len().max(oid.len());
        let text = |v: &[&str]| -> ArrayRef { Arc::new(StringArray::from(vec![v[0]; n])) };
        let yes = |b: bool| -> ArrayRef { Arc::new(BooleanArray::from(vec![b; n])) };
        let i32s = |v: Vec<i32>| -> ArrayRef { Arc::new(Int32Array::from(v)) };
        let i16s = |v: Vec<i16>| -> ArrayRef { Arc::new(Int16Array::from(v)) };
        match self.which {
            Which::Class => vec![
                ("oid", i32s(oid.clone())),
                ("relname", Arc::new(StringArray::from(name))),
                ("relnamespace", i32s(ns)),
                ("relowner", i32s(vec![10; n])),
                ("relam", i32s(vec![403; n])),
                ("relfilenode", i32s(oid)),
                ("reltablespace", i32s(vec![0; n])),
                ("relpages", i32s(vec![0; n])),
                ("reltuples", Arc::new(Float64Array::from(vec![0.0; n]))),
                ("relhasindex", yes(false)),
                ("relisshared", yes(false)),
                ("relpersistence", text(&["p"])),
                ("relkind", text(&["i"])),
                ("relnatts", i16s(nkeys)),
                ("relchecks", i16s(vec![0; n])),
                ("relhasrules", yes(false)),
                ("relhastriggers", yes(false)),
                ("relhassubclass", yes(false)),
                ("relrowsecurity", yes(false)),
                ("relforcerowsecurity", yes(false)),
                ("relispopulated", yes(true)),
                ("relreplident", text(&["n"])),
                ("relispartition", yes(false)),
            ],
            Which::Index => vec![
                ("indexrelid", i32s(oid)),
                ("indrelid", i32s(rel)),
                ("indnatts", i16s(nkeys.clone())),
                ("indnkeyatts", i16s(nkeys)),
                ("indisunique", yes(true)),
                ("indnullsnotdistinct", yes(false)),
                ("indisprimary", Arc::new(BooleanArray::from(primary))),
                ("indisexclusion", yes(false)),
                ("indimmediate", yes(true)),
                ("indisclustered", yes(false)),
                ("indisvalid", yes(true)),
                ("indcheckxmin", yes(false)),
                ("indisready", yes(true)),
                ("indislive", yes(true)),
                ("indisreplident", yes(false)),
                ("indkey", Arc::new(StringArray::from(keytext))),
            ],
            Which::Constraint => {
                let types: Vec<&str> = primary.iter().map(|&p| if p { "p" } else { "u" }).collect();
                let index_oids: Vec<i32> = oid.iter().map(|o| o - KEYS_PER_TABLE as i32).collect();
                vec![
                    ("oid", i32s(oid)),
                    ("conname", Arc::new(StringArray::from(name))),
                    ("connamespace", i32s(ns)),
                    ("contype", Arc::new(StringArray::from(types))),
                    ("condeferrable", yes(false)),
                    ("condeferred", yes(false)),
                    ("convalidated", yes(true)),
                    ("conrelid", i32s(rel)),
                    ("contypid", i32s(vec![0; n])),
                    ("conindid", i32s(index_oids)),
                    ("conparentid", i32s(vec![0; n])),
                    ("confrelid", i32s(vec![0; n])),
                    ("conislocal", yes(true)),
                    ("coninhcount", i16s(vec![0; n])),
                    ("connoinherit", yes(true)),
                    ("conkey", Arc::new(StringArray::from(keytext))),
                ]
            }
            Which::AttrDef => vec![
                ("adrelid", i32s(rel)),
                ("adnum", i16s(adnum)),
                ("adbin", Arc::new(StringArray::from(keytext))),
            ],
        }
    }

    /// `columns` as a batch of this table's schema (others NULL).
    fn batch(&self, columns: Vec<(&'static str, ArrayRef)>) -> Result<RecordBatch> {
        let n = columns.first().map_or(0, |(_, a)| a.len());
        let named: HashMap<&str, ArrayRef> = columns.into_iter().collect();
        let arrays = self
            .schema
            .fields()
            .iter()
            .map(|f| match named.get(f.name().as_str()) {
                Some(a) => cast(a, f.data_type()).map_err(DataFusionError::from),
                None => Ok(new_null_array(f.data_type(), n)),
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(RecordBatch::try_new(self.schema.clone(), arrays)?)
    }

    /// The emulation's rows, nullable, with `relhasindex` set on tables
    /// that have keys (for `pg_class`).
    fn inner_rows(&self, b: &RecordBatch, indexed: &[i32]) -> Result<RecordBatch> {
        let mut cols = b.columns().to_vec();
        if self.which == Which::Class {
            let idx = self.schema.index_of("relhasindex")?;
            let oids = column(b, "oid")?.as_primitive::<Int32Type>();
            let has = b.column(idx).as_boolean();
            let patched: BooleanArray = (0..b.num_rows())
                .map(|i| {
                    Some(indexed.contains(&oids.value(i)) || (has.is_valid(i) && has.value(i)))
                })
                .collect();
            cols[idx] = Arc::new(patched);
        }
        Ok(RecordBatch::try_new(self.schema.clone(), cols)?)
    }
}

#[async_trait]
impl TableProvider for KeyTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        self.inner.table_type()
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        // Stored tables as pg_class lists them: (oid, namespace oid, meta).
        let snap = self.engine.snapshot();
        let mut tables = Vec::new();
        let class_batches = scan_all(&self.classes, state).await?;
        for b in &class_batches {
            let oids = column(b, "oid")?.as_primitive::<Int32Type>();
            let names = column(b, "relname")?.as_string::<i32>();
            let nss = column(b, "relnamespace")?.as_primitive::<Int32Type>();
            for i in 0..b.num_rows() {
                if let Some(t) = snap.table_by_name(names.value(i)) {
                    tables.push((oids.value(i), nss.value(i), t.meta.clone()));
                }
            }
        }
        let indexed: Vec<i32> = tables
            .iter()
            .filter(|(_, _, m)| !keys(m).is_empty())
            .map(|(oid, _, _)| *oid)
            .collect();
        let inner = if self.which == Which::Class {
            class_batches
        } else {
            scan_all(&self.inner, state).await?
        };
        let mut batches = inner
            .iter()
            .map(|b| self.inner_rows(b, &indexed))
            .collect::<Result<Vec<_>>>()?;
        batches.push(self.batch(self.rows(&tables))?);
        let one = concat_batches(&self.schema, &batches)?;
        Ok(MemorySourceConfig::try_new_exec(
            &[vec![one]],
            self.schema.clone(),
            projection.cloned(),
        )?)
    }
}

/// `pg_get_indexdef(oid [, column, pretty])`, `pg_get_constraintdef(oid
/// [, pretty])` and `pg_get_expr(text, oid [, pretty])` over keys made here.
struct KeyDefFn {
    name: &'static str,
    engine: Arc<Engine>,
    signature: Signature,
}

impl std::fmt::Debug for KeyDefFn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

impl PartialEq for KeyDefFn {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for KeyDefFn {}

impl std::hash::Hash for KeyDefFn {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name.hash(state);
    }
}

impl ScalarUDFImpl for KeyDefFn {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let Some(first) = arrays.first() else {
            return Err(DataFusionError::Plan(format!(
                "{} needs an argument",
                self.name
            )));
        };
        if self.name == "pg_get_expr" {
            // adbin holds the expression's text already.
            return Ok(ColumnarValue::Array(cast(first, &DataType::Utf8)?));
        }
        let oids = cast(first, &DataType::Int64)?;
        let oids = oids.as_primitive::<datafusion::arrow::datatypes::Int64Type>();
        let snap = self.engine.snapshot();
        let out: StringArray = oids
            .iter()
            .map(|oid| {
                let (t, _, k) = decode_key_oid(oid?)?;
                let meta = &snap
                    .tables
                    .values()
                    .find(|d| (d.meta.id as i64) % TABLE_SPAN == t)?
                    .meta;
                if self.name == "pg_get_indexdef" {
                    index_def(meta, k)
                } else {
                    constraint_def(meta, k)
                }
            })
            .collect();
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}

/// Registers the key functions on `ctx`, replacing the emulation's.
pub fn install_functions(ctx: &SessionContext, engine: &Arc<Engine>) {
    for (name, arities) in [
        ("pg_get_indexdef", &[1usize, 3][..]),
        ("pg_get_constraintdef", &[1, 2]),
        ("pg_get_expr", &[2, 3]),
    ] {
        let signature = Signature::one_of(
            arities.iter().map(|&n| TypeSignature::Any(n)).collect(),
            Volatility::Stable,
        );
        ctx.register_udf(ScalarUDF::new_from_impl(KeyDefFn {
            name,
            engine: engine.clone(),
            signature,
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::table::{ColumnMeta, SqlType};

    fn meta() -> TableMeta {
        let col = |name: &str| ColumnMeta {
            name: name.into(),
            ty: SqlType::Int4,
            nullable: false,
            default: None,
        };
        TableMeta {
            id: 7,
            name: "t".into(),
            columns: vec![col("id"), col("a"), col("b")],
            primary_key: Some(vec![0]),
            uniques: vec![vec![1, 2]],
        }
    }

    #[test]
    fn key_oids_round_trip() {
        for id in [0u64, 7, 9_999_999, 10_000_007] {
            for k in [0, 1, 31] {
                for what in [KeyObject::Index, KeyObject::Constraint] {
                    let oid = key_oid(id, k, what);
                    assert!(oid > 16384);
                    assert_eq!(
                        decode_key_oid(i64::from(oid)),
                        Some(((id as i64) % TABLE_SPAN, what, k))
                    );
                }
            }
        }
        assert_eq!(decode_key_oid(16385), None);
    }

    #[test]
    fn definitions_as_postgres_writes_them() {
        let m = meta();
        assert_eq!(
            index_def(&m, 0).unwrap(),
            "CREATE UNIQUE INDEX t_pkey ON public.t USING btree (id)"
        );
        assert_eq!(constraint_def(&m, 1).unwrap(), "UNIQUE (a, b)");
        assert_eq!(keys(&m)[1].name, "t_a_b_key");
        assert!(index_def(&m, 2).is_none());
    }
}
