//! `information_schema` as PostgreSQL clients read it.
//!
//! DataFusion's `information_schema.columns` names Arrow types (`Int32`,
//! `Utf8`), counts columns from 0 and knows no defaults, and it has no
//! `table_constraints` or `key_column_usage`, where GUI clients and ORMs
//! look for keys. This schema serves DataFusion's other tables as they are
//! and replaces `columns` (PostgreSQL type names, positions from 1,
//! defaults, lengths and precisions of declared types, `udt_name`), and
//! adds `table_constraints` and `key_column_usage` from stored tables'
//! PRIMARY KEY and UNIQUE constraints (named as in `pg_constraint`, see
//! [`super::pg_keys`]).

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, RecordBatch, StringBuilder, UInt64Builder};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::information_schema::InformationSchemaProvider;
use datafusion::catalog::{CatalogProviderList, SchemaProvider, Session, TableProvider};
use datafusion::common::Result;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::TableType;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;

use super::pg_functions::pg_type_name;
use super::pg_keys::keys;
use crate::storage::table::{SqlType, TableMeta};
use crate::storage::Engine;

/// The schema's name.
pub const INFORMATION_SCHEMA: &str = "information_schema";

/// The `information_schema` schema (register it in the catalog, with
/// DataFusion's own turned off).
pub struct InfoSchema {
    inner: InformationSchemaProvider,
    catalogs: Arc<dyn CatalogProviderList>,
    engine: Arc<Engine>,
}

impl InfoSchema {
    pub fn new(catalogs: Arc<dyn CatalogProviderList>, engine: Arc<Engine>) -> InfoSchema {
        InfoSchema {
            inner: InformationSchemaProvider::new(catalogs.clone()),
            catalogs,
            engine,
        }
    }
}

impl std::fmt::Debug for InfoSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InfoSchema")
    }
}

/// The tables this module builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Built {
    Columns,
    TableConstraints,
    KeyColumnUsage,
}

impl Built {
    fn of(name: &str) -> Option<Built> {
        Some(match name {
            "columns" => Built::Columns,
            "table_constraints" => Built::TableConstraints,
            "key_column_usage" => Built::KeyColumnUsage,
            _ => return None,
        })
    }

    fn schema(self) -> SchemaRef {
        let text = |n: &str| Field::new(n, DataType::Utf8, true);
        let num = |n: &str| Field::new(n, DataType::UInt64, true);
        let names = |n: &[&str]| n.iter().map(|n| text(n)).collect::<Vec<_>>();
        let fields = match self {
            Built::Columns => {
                let mut f = names(&["table_catalog", "table_schema", "table_name", "column_name"]);
                f.push(num("ordinal_position"));
                f.extend(names(&["column_default", "is_nullable", "data_type"]));
                f.extend(["character_maximum_length", "character_octet_length"].map(num));
                f.extend(
                    [
                        "numeric_precision",
                        "numeric_precision_radix",
                        "numeric_scale",
                    ]
                    .map(num),
                );
                f.push(num("datetime_precision"));
                f.extend(names(&[
                    "interval_type",
                    "udt_catalog",
                    "udt_schema",
                    "udt_name",
                ]));
                f.extend(names(&["is_identity", "is_generated", "is_updatable"]));
                f
            }
            Built::TableConstraints => names(&[
                "constraint_catalog",
                "constraint_schema",
                "constraint_name",
                "table_catalog",
                "table_schema",
                "table_name",
                "constraint_type",
                "is_deferrable",
                "initially_deferred",
                "enforced",
            ]),
            Built::KeyColumnUsage => {
                let mut f = names(&[
                    "constraint_catalog",
                    "constraint_schema",
                    "constraint_name",
                    "table_catalog",
                    "table_schema",
                    "table_name",
                    "column_name",
                ]);
                f.push(num("ordinal_position"));
                f.push(num("position_in_unique_constraint"));
                f
            }
        };
        Arc::new(Schema::new(fields))
    }
}

#[async_trait]
impl SchemaProvider for InfoSchema {
    fn table_names(&self) -> Vec<String> {
        let mut names = self.inner.table_names();
        names.extend(["table_constraints".into(), "key_column_usage".into()]);
        names
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        match Built::of(name) {
            Some(built) => Ok(Some(Arc::new(BuiltTable {
                built,
                schema: built.schema(),
                catalogs: self.catalogs.clone(),
                engine: self.engine.clone(),
            }))),
            None => self.inner.table(name).await,
        }
    }

    fn table_exist(&self, name: &str) -> bool {
        Built::of(name).is_some() || self.inner.table_exist(name)
    }
}

struct BuiltTable {
    built: Built,
    schema: SchemaRef,
    catalogs: Arc<dyn CatalogProviderList>,
    engine: Arc<Engine>,
}

impl std::fmt::Debug for BuiltTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "information_schema {:?}", self.built)
    }
}

/// `information_schema` facts of a declared column type: data_type,
/// udt_name, character_maximum_length, numeric precision and scale.
fn declared(ty: &SqlType) -> (&'static str, &'static str, Option<u64>, Option<(u64, u64)>) {
    match ty {
        SqlType::Bool => ("boolean", "bool", None, None),
        SqlType::Int2 => ("smallint", "int2", None, Some((16, 0))),
        SqlType::Int4 => ("integer", "int4", None, Some((32, 0))),
        SqlType::Int8 => ("bigint", "int8", None, Some((64, 0))),
        SqlType::Float4 => ("real", "float4", None, Some((24, 0))),
        SqlType::Float8 => ("double precision", "float8", None, Some((53, 0))),
        SqlType::Numeric { precision, scale } => (
            "numeric",
            "numeric",
            None,
            Some((u64::from(*precision), u64::try_from(*scale).unwrap_or(0))),
        ),
        SqlType::NumericAny => ("numeric", "numeric", None, None),
        SqlType::Text => ("text", "text", None, None),
        SqlType::Varchar(n) => ("character varying", "varchar", n.map(u64::from), None),
        SqlType::Char(n) => ("character", "bpchar", Some(n.map_or(1, u64::from)), None),
        SqlType::Date => ("date", "date", None, None),
        SqlType::Timestamp => ("timestamp without time zone", "timestamp", None, None),
        SqlType::Timestamptz => ("timestamp with time zone", "timestamptz", None, None),
        SqlType::Interval => ("interval", "interval", None, None),
        SqlType::Bytea => ("bytea", "bytea", None, None),
        SqlType::Json => ("json", "json", None, None),
    }
}

impl BuiltTable {
    /// Stored tables (schema `public`), by name.
    fn stored(&self) -> Vec<Arc<TableMeta>> {
        let snap = self.engine.snapshot();
        snap.names
            .values()
            .filter_map(|id| snap.tables.get(id))
            .map(|t| t.meta.clone())
            .collect()
    }

    async fn columns(&self) -> Result<Vec<ArrayRef>> {
        let mut t = (0..4).map(|_| StringBuilder::new()).collect::<Vec<_>>();
        let mut pos = UInt64Builder::new();
        let (mut default, mut nullable, mut data_type) = (
            StringBuilder::new(),
            StringBuilder::new(),
            StringBuilder::new(),
        );
        let mut lens = [UInt64Builder::new(), UInt64Builder::new()];
        let mut nums = [
            UInt64Builder::new(),
            UInt64Builder::new(),
            UInt64Builder::new(),
        ];
        let mut dt_precision = UInt64Builder::new();
        let mut tail = (0..7).map(|_| StringBuilder::new()).collect::<Vec<_>>();
        let snap = self.engine.snapshot();
        for cat_name in self.catalogs.catalog_names() {
            let Some(cat) = self.catalogs.catalog(&cat_name) else {
                continue;
            };
            for schema_name in cat.schema_names() {
                if schema_name == INFORMATION_SCHEMA {
                    continue;
                }
                let Some(schema) = cat.schema(&schema_name) else {
                    continue;
                };
                for table_name in schema.table_names() {
                    let stored = (schema_name == "public")
                        .then(|| snap.table_by_name(&table_name))
                        .flatten();
                    let fields = match stored {
                        Some(_) => None,
                        None => match schema.table(&table_name).await? {
                            Some(p) => Some(p.schema()),
                            None => continue,
                        },
                    };
                    let n = stored.map_or_else(
                        || fields.as_ref().map_or(0, |f| f.fields().len()),
                        |s| s.meta.columns.len(),
                    );
                    for i in 0..n {
                        let (name, null, facts, def) = match (stored, &fields) {
                            (Some(s), _) => {
                                let c = &s.meta.columns[i];
                                (
                                    c.name.clone(),
                                    c.nullable,
                                    declared(&c.ty),
                                    c.default.clone(),
                                )
                            }
                            (None, Some(f)) => {
                                let f = f.field(i);
                                let name = pg_type_name(f.data_type());
                                (
                                    f.name().clone(),
                                    f.is_nullable(),
                                    (name, name, None, None),
                                    None,
                                )
                            }
                            (None, None) => continue,
                        };
                        for (b, v) in t.iter_mut().zip([
                            cat_name.as_str(),
                            schema_name.as_str(),
                            table_name.as_str(),
                            name.as_str(),
                        ]) {
                            b.append_value(v);
                        }
                        pos.append_value(i as u64 + 1);
                        default.append_option(def);
                        nullable.append_value(if null { "YES" } else { "NO" });
                        let (dt, udt, len, prec) = facts;
                        data_type.append_value(dt);
                        lens[0].append_option(len);
                        lens[1].append_option(len.map(|l| l * 4));
                        nums[0].append_option(prec.map(|p| p.0));
                        nums[1].append_option(prec.map(|_| if dt == "numeric" { 10 } else { 2 }));
                        nums[2].append_option(prec.map(|p| p.1));
                        dt_precision.append_option(dt.starts_with("timestamp").then_some(6));
                        tail[0].append_null(); // interval_type
                        tail[1].append_value(&cat_name);
                        tail[2].append_value("pg_catalog");
                        tail[3].append_value(udt);
                        tail[4].append_value("NO");
                        tail[5].append_value("NEVER");
                        tail[6].append_value(if stored.is_some() { "YES" } else { "NO" });
                    }
                }
            }
        }
        let mut out: Vec<ArrayRef> = t
            .iter_mut()
            .map(|b| Arc::new(b.finish()) as ArrayRef)
            .collect();
        out.push(Arc::new(pos.finish()));
        for b in [&mut default, &mut nullable, &mut data_type] {
            out.push(Arc::new(b.finish()));
        }
        for b in lens.iter_mut().chain(nums.iter_mut()) {
            out.push(Arc::new(b.finish()));
        }
        out.push(Arc::new(dt_precision.finish()));
        out.extend(tail.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef));
        Ok(out)
    }

    fn constraints(&self, catalog: &str) -> Vec<ArrayRef> {
        let width = self.schema.fields().len();
        let mut text = (0..width).map(|_| StringBuilder::new()).collect::<Vec<_>>();
        let mut pos = [UInt64Builder::new(), UInt64Builder::new()];
        for meta in self.stored() {
            for key in keys(&meta) {
                let head = [catalog, "public", &key.name, catalog, "public", &meta.name];
                match self.built {
                    Built::TableConstraints => {
                        let kind = if key.primary { "PRIMARY KEY" } else { "UNIQUE" };
                        let row = head.iter().copied().chain([kind, "NO", "NO", "YES"]);
                        for (b, v) in text.iter_mut().zip(row) {
                            b.append_value(v);
                        }
                    }
                    _ => {
                        for (k, &c) in key.columns.iter().enumerate() {
                            let row = head.iter().copied().chain([meta.columns[c].name.as_str()]);
                            for (b, v) in text.iter_mut().zip(row) {
                                b.append_value(v);
                            }
                            pos[0].append_value(k as u64 + 1);
                            pos[1].append_null();
                        }
                    }
                }
            }
        }
        let mut out: Vec<ArrayRef> = Vec::with_capacity(width);
        for (i, f) in self.schema.fields().iter().enumerate() {
            if f.data_type() == &DataType::UInt64 {
                out.push(Arc::new(pos[i + 2 - width].finish()));
            } else {
                out.push(Arc::new(text[i].finish()));
            }
        }
        out
    }
}

#[async_trait]
impl TableProvider for BuiltTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let catalog = state.config().options().catalog.default_catalog.clone();
        let columns = match self.built {
            Built::Columns => self.columns().await?,
            _ => self.constraints(&catalog),
        };
        let batch = RecordBatch::try_new(self.schema.clone(), columns)?;
        Ok(MemorySourceConfig::try_new_exec(
            &[vec![batch]],
            self.schema.clone(),
            projection.cloned(),
        )?)
    }
}
