//! SQL type names Quiver plans differently from DataFusion.
//!
//! Step in the flow: DataFusion's SQL planner asks [`QuiverTypePlanner`]
//! first for every type in a statement (`CAST(x AS numeric)`, `x::numeric`,
//! `CREATE TABLE ... AS` column types). Unconstrained `numeric` is
//! `Decimal256(76,16)`, as table columns of that type are
//! ([`crate::storage::table::SqlType::NumericAny`]); DataFusion would make it
//! `Decimal128(38,10)`. `varchar(n)` and `char(n)` are text whose field
//! carries the length ([`CAST_LENGTH_KEY`]), so that a cast to them cuts
//! the text as PostgreSQL's explicit casts do (see `pg_text`).

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, FieldRef};
use datafusion::common::datatype::DataTypeExt;
use datafusion::common::Result;
use datafusion::execution::SessionStateBuilder;
use datafusion::logical_expr::planner::TypePlanner;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{self, ExactNumberInfo};

/// Quiver's SQL type mapping where it differs from DataFusion's; other
/// types go to `inner` (the pg_catalog layer's planner of `regclass` and
/// friends), then to DataFusion.
#[derive(Debug, Default)]
pub struct QuiverTypePlanner {
    inner: Option<Arc<dyn TypePlanner>>,
}

impl QuiverTypePlanner {
    /// Installs the planner on `ctx`, in front of the one it has.
    pub fn install(ctx: &SessionContext) {
        let state = ctx.state_ref();
        let existing = state.read().clone();
        let mut builder = SessionStateBuilder::new_from_existing(existing);
        let inner = builder.type_planner().clone();
        let planner = Arc::new(QuiverTypePlanner { inner });
        *state.write() = builder.with_type_planner(planner).build();
    }
}

impl TypePlanner for QuiverTypePlanner {
    fn plan_type_field(&self, sql_type: &ast::DataType) -> Result<Option<FieldRef>> {
        if let Some(f) = own_type(sql_type) {
            return Ok(Some(f));
        }
        match &self.inner {
            Some(inner) => inner.plan_type_field(sql_type),
            None => Ok(None),
        }
    }
}

/// Field metadata of a cast target with a length: `v<n>` for `varchar(n)`,
/// `c<n>` for `char(n)`.
pub const CAST_LENGTH_KEY: &str = "quiver.cast_length";

fn own_type(sql_type: &ast::DataType) -> Option<FieldRef> {
    let length = |l: &Option<ast::CharacterLength>| match l {
        Some(ast::CharacterLength::IntegerLength { length, .. }) => Some(*length),
        _ => None,
    };
    let text_of = |tag: String| {
        Some(std::sync::Arc::new(
            datafusion::arrow::datatypes::Field::new("", DataType::Utf8, true).with_metadata(
                std::collections::HashMap::from([(CAST_LENGTH_KEY.to_owned(), tag)]),
            ),
        ))
    };
    match sql_type {
        ast::DataType::Varchar(l) | ast::DataType::CharacterVarying(l) => {
            length(l).and_then(|n| text_of(format!("v{n}")))
        }
        ast::DataType::Char(l) | ast::DataType::Character(l) => {
            text_of(format!("c{}", length(l).unwrap_or(1)))
        }
        ast::DataType::Numeric(ExactNumberInfo::None)
        | ast::DataType::Decimal(ExactNumberInfo::None)
        | ast::DataType::Dec(ExactNumberInfo::None) => Some(
            DataType::Decimal256(
                quiver_copy::UNCONSTRAINED_PRECISION,
                quiver_copy::UNCONSTRAINED_SCALE,
            )
            .into_nullable_field_ref(),
        ),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unconstrained_numeric_and_lengths_are_planned_here() {
        let p = QuiverTypePlanner::default();
        let f = p
            .plan_type_field(&ast::DataType::Numeric(ExactNumberInfo::None))
            .unwrap()
            .unwrap();
        assert_eq!(f.data_type(), &DataType::Decimal256(76, 16));
        let typed = ast::DataType::Numeric(ExactNumberInfo::PrecisionAndScale(10, 2));
        assert!(p.plan_type_field(&typed).unwrap().is_none());
        assert!(p.plan_type_field(&ast::DataType::Text).unwrap().is_none());
        let v2 = p
            .plan_type_field(&ast::DataType::Varchar(Some(
                ast::CharacterLength::IntegerLength {
                    length: 2,
                    unit: None,
                },
            )))
            .unwrap()
            .unwrap();
        assert_eq!(v2.data_type(), &DataType::Utf8);
        assert_eq!(
            v2.metadata().get(CAST_LENGTH_KEY).map(String::as_str),
            Some("v2")
        );
    }
}
