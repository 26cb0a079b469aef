//! `ALTER TABLE` for a session: ADD / DROP / RENAME COLUMN and RENAME TO
//! on the stored table, the values existing rows take in added columns,
//! and (for a distributed table) the same change on every shard.

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::sql::sqlparser::ast::{AlterTableOperation, RenameTableNameKind};

use super::ddl;
use super::error::SqlError;
use super::idents;
use super::session::{Outcome, Session};
use crate::storage::table::{unfilled_not_null, TableData, TableMeta};

impl Session {
    pub(super) async fn alter_table(
        &mut self,
        at: &datafusion::sql::sqlparser::ast::AlterTable,
    ) -> Result<Outcome, SqlError> {
        let name = idents::relation(&at.name);
        let snap = self.db.engine.snapshot();
        let t = snap
            .table_by_name(&name)
            .cloned()
            .ok_or_else(|| SqlError::new("42P01", format!("relation \"{name}\" does not exist")))?;
        let mut meta = (*t.meta).clone();
        let mut mapping: Vec<Option<usize>> = (0..meta.columns.len()).map(Some).collect();
        for op in &at.operations {
            match op {
                AlterTableOperation::AddColumn {
                    column_def,
                    if_not_exists,
                    ..
                } => {
                    let (col, pk, unique) = ddl::column_meta(column_def)?;
                    if meta.column_index(&col.name).is_some() {
                        if *if_not_exists {
                            continue;
                        }
                        return Err(SqlError::new(
                            "42701",
                            format!(
                                "column \"{}\" of relation \"{name}\" already exists",
                                col.name
                            ),
                        ));
                    }
                    if pk || unique {
                        return Err(SqlError::unsupported(
                            "ADD COLUMN with PRIMARY KEY or UNIQUE is not supported yet",
                        ));
                    }
                    meta.columns.push(col);
                    mapping.push(None);
                }
                AlterTableOperation::DropColumn {
                    column_names,
                    if_exists,
                    ..
                } => {
                    for c in column_names {
                        let cname = idents::fold(c);
                        let Some(i) = meta.column_index(&cname) else {
                            if *if_exists {
                                continue;
                            }
                            return Err(SqlError::new(
                                "42703",
                                format!("column \"{cname}\" of relation \"{name}\" does not exist"),
                            ));
                        };
                        let in_key = meta.unique_keys().iter().any(|k| k.contains(&i));
                        if in_key {
                            return Err(SqlError::unsupported(
                                "cannot drop a column that is part of a key",
                            ));
                        }
                        meta.columns.remove(i);
                        mapping.remove(i);
                        let fix = |k: &mut Vec<usize>| {
                            for x in k.iter_mut() {
                                if *x > i {
                                    *x -= 1;
                                }
                            }
                        };
                        if let Some(pk) = meta.primary_key.as_mut() {
                            fix(pk);
                        }
                        for u in meta.uniques.iter_mut() {
                            fix(u);
                        }
                    }
                }
                AlterTableOperation::RenameColumn {
                    old_column_name,
                    new_column_name,
                } => {
                    let old = idents::fold(old_column_name);
                    let i = meta.column_index(&old).ok_or_else(|| {
                        SqlError::new("42703", format!("column \"{old}\" does not exist"))
                    })?;
                    meta.columns[i].name = idents::fold(new_column_name);
                }
                AlterTableOperation::RenameTable { table_name } => {
                    meta.name = match table_name {
                        RenameTableNameKind::As(n) | RenameTableNameKind::To(n) => {
                            idents::relation(n)
                        }
                    };
                }
                other => {
                    return Err(SqlError::unsupported(format!(
                        "ALTER TABLE {other} is not supported yet"
                    )))
                }
            }
        }
        let distributed = self
            .db
            .cluster
            .as_ref()
            .and_then(|c| c.layout(&name).map(|l| (c.clone(), l)));
        if let Some((_, layout)) = &distributed {
            if meta.name != name {
                return Err(SqlError::unsupported(
                    "renaming a distributed table is not supported yet",
                ));
            }
            crate::dist::ddl::check_alter(layout, &meta)?;
        }
        let fill = self.new_column_fill(&t, &meta, &mapping)?;
        if distributed.is_some() {
            // Each shard would check its own rows: some could take the
            // column and others refuse it.
            if let Some(c) = unfilled_not_null(&meta, &mapping, fill.as_ref()) {
                return Err(SqlError::unsupported(format!(
                    "ADD COLUMN \"{}\" NOT NULL needs a non-null DEFAULT on a distributed table",
                    c.name
                )));
            }
        }
        self.db
            .engine
            .alter_table(meta.clone(), mapping, fill)
            .await?;
        if let Some((cluster, layout)) = distributed {
            crate::dist::ddl::alter_shards(&cluster, &layout, &meta, at).await?;
        }
        Ok(Outcome::Command("ALTER TABLE".into()))
    }

    /// The values existing rows take in the columns an ALTER TABLE adds: a
    /// new column's DEFAULT, computed once (as PostgreSQL does for a
    /// non-volatile default), or NULL. `None` when no new column has one.
    fn new_column_fill(
        &self,
        old: &TableData,
        meta: &TableMeta,
        mapping: &[Option<usize>],
    ) -> Result<Option<RecordBatch>, SqlError> {
        let added = |i: usize| mapping.get(i) == Some(&None);
        if !(0..meta.columns.len()).any(|i| added(i) && meta.columns[i].default.is_some()) {
            return Ok(None);
        }
        let mut cols = Vec::with_capacity(meta.columns.len());
        for (i, c) in meta.columns.iter().enumerate() {
            let ty = c.ty.arrow_type();
            let Some(sql) = c.default.as_deref().filter(|_| added(i)) else {
                cols.push(datafusion::arrow::array::new_null_array(&ty, 1));
                continue;
            };
            if self.db.schema.plan_default(meta, sql)?.is_volatile() && old.live_rows() > 0 {
                return Err(SqlError::unsupported(format!(
                    "ADD COLUMN \"{}\" with a volatile DEFAULT on a table that has rows \
                     is not supported yet: add the column, then UPDATE it",
                    c.name
                )));
            }
            cols.push(self.default_array(meta, i, 1)?);
        }
        // Columns not filled are NULL here, NOT NULL ones too.
        let fields: Vec<_> = meta
            .schema()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect();
        let schema = Arc::new(datafusion::arrow::datatypes::Schema::new(fields));
        RecordBatch::try_new(schema, cols)
            .map(Some)
            .map_err(|e| SqlError::new("XX000", e.to_string()))
    }
}
