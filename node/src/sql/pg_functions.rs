//! PostgreSQL's information functions that clients call while they look
//! around: `version()` in PostgreSQL's form (drivers such as SQLAlchemy
//! parse it), `current_user` / `session_user` naming the superuser (the
//! emulation says `postgres`), `pg_typeof`, the `*_description` functions
//! (no comments are stored: NULL), `pg_is_in_recovery()`,
//! `pg_size_pretty`, and the `quiver` role in `pg_roles`.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{Array, AsArray, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Int64Type, TimeUnit};
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::{
    create_udf, ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl,
    Signature, TypeSignature, Volatility,
};
use datafusion::prelude::SessionContext;
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::context::{
    PgCatalogContextProvider, Role,
};

use crate::frontend::auth::SUPERUSER;

/// The text of `version()`: PostgreSQL's form, then what Quiver is.
pub fn version_text() -> String {
    format!(
        "PostgreSQL 15.0 (Quiver {}) on {}-unknown-linux-gnu, compiled by rustc, 64-bit",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::ARCH
    )
}

/// The roles `pg_roles` lists: the superuser.
#[derive(Debug, Clone)]
pub struct Roles;

#[async_trait]
impl PgCatalogContextProvider for Roles {
    async fn roles(&self) -> Vec<String> {
        vec![SUPERUSER.to_owned()]
    }

    async fn role(&self, name: &str) -> Option<Role> {
        (name == SUPERUSER).then(|| Role {
            name: SUPERUSER.to_owned(),
            is_superuser: true,
            can_login: true,
            can_create_db: true,
            can_create_role: true,
            can_create_user: true,
            can_replication: true,
            grants: Vec::new(),
            inherited_roles: Vec::new(),
        })
    }
}

/// A function of no arguments with a constant result.
fn constant(name: &str, value: ScalarValue) -> ScalarUDF {
    let ty = value.data_type();
    create_udf(
        name,
        vec![],
        ty,
        Volatility::Stable,
        Arc::new(move |_: &[ColumnarValue]| Ok(ColumnarValue::Scalar(value.clone()))),
    )
}

/// A text function of `arities` arguments of any type that is always NULL.
fn null_text(name: &'static str, arities: &[usize]) -> ScalarUDF {
    ScalarUDF::new_from_impl(Constant {
        name,
        value: ScalarValue::Utf8(None),
        signature: Signature::one_of(
            arities.iter().map(|&n| TypeSignature::Any(n)).collect(),
            Volatility::Stable,
        ),
    })
}

/// A function of any arguments whose result is always `value`.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Constant {
    name: &'static str,
    value: ScalarValue,
    signature: Signature,
}

impl ScalarUDFImpl for Constant {
    fn name(&self) -> &str {
        self.name
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(self.value.data_type())
    }
    fn invoke_with_args(&self, _: ScalarFunctionArgs) -> Result<ColumnarValue> {
        Ok(ColumnarValue::Scalar(self.value.clone()))
    }
}

/// PostgreSQL's name of the type a value of `t` has (`regtype` output).
pub fn pg_type_name(t: &DataType) -> &'static str {
    match t {
        DataType::Null => "unknown",
        DataType::Boolean => "boolean",
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => "smallint",
        DataType::Int32 | DataType::UInt16 => "integer",
        DataType::Int64 | DataType::UInt32 | DataType::UInt64 => "bigint",
        DataType::Float16 | DataType::Float32 => "real",
        DataType::Float64 => "double precision",
        DataType::Decimal32(..)
        | DataType::Decimal64(..)
        | DataType::Decimal128(..)
        | DataType::Decimal256(..) => "numeric",
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "text",
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => "bytea",
        DataType::Date32 | DataType::Date64 => "date",
        DataType::Time32(_) | DataType::Time64(_) => "time without time zone",
        DataType::Timestamp(_, None) => "timestamp without time zone",
        DataType::Timestamp(_, Some(_)) => "timestamp with time zone",
        DataType::Interval(_) | DataType::Duration(TimeUnit::Microsecond) => "interval",
        DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => {
            match f.data_type() {
                DataType::Int16 => "smallint[]",
                DataType::Int32 => "integer[]",
                DataType::Int64 => "bigint[]",
                DataType::Float64 => "double precision[]",
                DataType::Boolean => "boolean[]",
                _ => "text[]",
            }
        }
        _ => "text",
    }
}

/// `pg_typeof(x)`: the PostgreSQL name of `x`'s type.
#[derive(Debug, PartialEq, Eq, Hash)]
struct TypeOf {
    signature: Signature,
}

impl ScalarUDFImpl for TypeOf {
    fn name(&self) -> &str {
        "pg_typeof"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }
    /// Text tagged `regtype`, so clients see PostgreSQL's result type.
    fn return_field_from_args(&self, _: ReturnFieldArgs) -> Result<FieldRef> {
        let md = std::collections::HashMap::from([(
            crate::storage::table::PG_TYPE_KEY.to_owned(),
            "regtype".to_owned(),
        )]);
        Ok(Arc::new(
            Field::new(self.name(), DataType::Utf8, true).with_metadata(md),
        ))
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let field = args.arg_fields.first();
        let name = match field {
            // varchar, char(n) and json are Utf8 with a tag.
            Some(f) => match f
                .metadata()
                .get(crate::storage::table::PG_TYPE_KEY)
                .map(String::as_str)
            {
                Some("varchar") => "character varying",
                Some("bpchar") => "character",
                Some("json") => "json",
                _ => pg_type_name(f.data_type()),
            },
            None => "unknown",
        };
        Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(
            name.to_owned(),
        ))))
    }
}

/// `pg_size_pretty(bigint)` as PostgreSQL rounds it.
fn size_pretty(bytes: i64) -> String {
    const UNITS: [&str; 5] = ["kB", "MB", "GB", "TB", "PB"];
    const LIMIT: u64 = 10 * 1024;
    if bytes.unsigned_abs() < LIMIT {
        return format!("{bytes} bytes");
    }
    let half_rounded = |x: i64| (x + if x < 0 { -1 } else { 1 }) / 2;
    // One extra bit is kept for rounding.
    let mut v = bytes >> 9;
    for (i, unit) in UNITS.iter().enumerate() {
        if v.unsigned_abs() < LIMIT * 2 - 1 || i == UNITS.len() - 1 {
            return format!("{} {unit}", half_rounded(v));
        }
        v >>= 10;
    }
    format!("{} PB", half_rounded(v))
}

fn size_pretty_udf() -> ScalarUDF {
    create_udf(
        "pg_size_pretty",
        vec![DataType::Int64],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| {
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let Some(first) = arrays.first() else {
                return Ok(ColumnarValue::Scalar(ScalarValue::Utf8(None)));
            };
            let v = cast(first, &DataType::Int64)?;
            let out: StringArray = v
                .as_primitive::<Int64Type>()
                .iter()
                .map(|b| b.map(size_pretty))
                .collect();
            Ok(ColumnarValue::Array(Arc::new(out) as Arc<dyn Array>))
        }),
    )
}

/// Registers the functions on `ctx` (after the emulation's, replacing
/// its `session_user`).
pub fn install(ctx: &SessionContext) {
    let user = ScalarValue::Utf8(Some(SUPERUSER.to_owned()));
    for name in ["session_user", "current_user", "user", "current_role"] {
        ctx.register_udf(constant(name, user.clone()));
    }
    ctx.register_udf(constant("version", ScalarValue::Utf8(Some(version_text()))));
    ctx.register_udf(constant(
        "pg_is_in_recovery",
        ScalarValue::Boolean(Some(false)),
    ));
    // Every object is the superuser's.
    ctx.register_udf(ScalarUDF::new_from_impl(Constant {
        name: "pg_get_userbyid",
        value: user,
        signature: Signature::any(1, Volatility::Stable),
    }));
    ctx.register_udf(null_text("obj_description", &[1, 2]));
    ctx.register_udf(null_text("col_description", &[2]));
    ctx.register_udf(null_text("shobj_description", &[2]));
    ctx.register_udf(ScalarUDF::new_from_impl(TypeOf {
        signature: Signature::any(1, Volatility::Immutable),
    }));
    ctx.register_udf(size_pretty_udf());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_as_postgres_prints_them() {
        assert_eq!(size_pretty(0), "0 bytes");
        assert_eq!(size_pretty(10239), "10239 bytes");
        assert_eq!(size_pretty(10240), "10 kB");
        assert_eq!(size_pretty(1_000_000), "977 kB");
        assert_eq!(size_pretty(10 * 1024 * 1024), "10 MB");
        assert_eq!(size_pretty(123_456_789_012), "115 GB");
    }

    #[test]
    fn version_reads_as_postgres() {
        let v = version_text();
        assert!(v.starts_with("PostgreSQL 15.0 (Quiver "), "{v}");
    }

    #[test]
    fn type_names() {
        assert_eq!(pg_type_name(&DataType::Int32), "integer");
        assert_eq!(
            pg_type_name(&DataType::Timestamp(
                TimeUnit::Microsecond,
                Some("+00:00".into())
            )),
            "timestamp with time zone"
        );
        assert_eq!(pg_type_name(&DataType::Decimal128(10, 2)), "numeric");
    }
}
