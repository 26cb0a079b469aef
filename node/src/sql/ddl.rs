//! DDL: turning `CREATE TABLE` / `ALTER TABLE` syntax into table metadata.
//!
//! Types are read from the SQL text of the parsed type, so every spelling
//! PostgreSQL accepts for a supported type maps to one [`SqlType`].

use datafusion::arrow::datatypes::DataType;
use datafusion::sql::sqlparser::ast::{
    ColumnDef, ColumnOption, CreateTable, IndexColumn, TableConstraint,
};

use super::error::SqlError;
use super::idents;
use crate::storage::table::{ColumnMeta, SqlType, TableMeta};

/// Maps a SQL type name (as PostgreSQL spells it) to a [`SqlType`].
pub fn parse_type(text: &str) -> Result<SqlType, SqlError> {
    let t = text.trim().to_ascii_lowercase();
    let (base, args) = match t.find('(') {
        Some(i) => {
            let end = t.rfind(')').unwrap_or(t.len());
            let inner = t.get(i + 1..end).unwrap_or("");
            let rest = t.get(end + 1..).unwrap_or("").trim().to_string();
            let base = format!("{} {}", t[..i].trim(), rest).trim().to_string();
            let args: Vec<u32> = inner
                .split(',')
                .filter_map(|a| a.trim().parse().ok())
                .collect();
            (base, args)
        }
        None => (t.clone(), vec![]),
    };
    let ty = match base.as_str() {
        "bool" | "boolean" => SqlType::Bool,
        "smallint" | "int2" => SqlType::Int2,
        "int" | "integer" | "int4" => SqlType::Int4,
        "bigint" | "int8" => SqlType::Int8,
        "real" | "float4" => SqlType::Float4,
        "double precision" | "double" | "float8" => SqlType::Float8,
        "float" => match args.first() {
            Some(p) if *p <= 24 => SqlType::Float4,
            _ => SqlType::Float8,
        },
        "numeric" | "decimal" if args.is_empty() => SqlType::NumericAny,
        "numeric" | "decimal" => {
            let precision = args[0];
            let scale = args.get(1).copied().unwrap_or(0);
            if !(1..=76).contains(&precision) {
                return Err(SqlError::new(
                    "22023",
                    format!("NUMERIC precision {precision} must be between 1 and 76"),
                ));
            }
            if scale > precision {
                return Err(SqlError::new(
                    "22023",
                    format!("NUMERIC scale {scale} must be between 0 and precision {precision}"),
                ));
            }
            SqlType::Numeric {
                precision: precision as u8,
                scale: scale as i8,
            }
        }
        "text" | "string" => SqlType::Text,
        "varchar" | "character varying" => SqlType::Varchar(args.first().copied()),
        "char" | "character" | "bpchar" => SqlType::Char(Some(args.first().copied().unwrap_or(1))),
        "date" => SqlType::Date,
        "timestamp" | "timestamp without time zone" => SqlType::Timestamp,
        "timestamptz" | "timestamp with time zone" => SqlType::Timestamptz,
        "interval" => SqlType::Interval,
        "bytea" => SqlType::Bytea,
        "json" | "jsonb" => SqlType::Json,
        "serial" | "bigserial" | "smallserial" => {
            return Err(SqlError::new(
                "0A000",
                format!("type \"{base}\" is not supported yet; use an integer column with a value"),
            ))
        }
        _ => {
            return Err(SqlError::new(
                "42704",
                format!("type \"{base}\" does not exist"),
            ))
        }
    };
    Ok(ty)
}

/// Maps an Arrow type (e.g. of a query result) to the closest [`SqlType`].
pub fn from_arrow(dt: &DataType) -> Result<SqlType, SqlError> {
    Ok(match dt {
        DataType::Boolean => SqlType::Bool,
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => SqlType::Int2,
        DataType::Int32 | DataType::UInt16 => SqlType::Int4,
        DataType::Int64 | DataType::UInt32 | DataType::UInt64 => SqlType::Int8,
        DataType::Float16 | DataType::Float32 => SqlType::Float4,
        DataType::Float64 => SqlType::Float8,
        DataType::Decimal256(p, s)
            if *p == quiver_copy::UNCONSTRAINED_PRECISION
                && *s == quiver_copy::UNCONSTRAINED_SCALE =>
        {
            SqlType::NumericAny
        }
        DataType::Decimal128(p, s) | DataType::Decimal256(p, s) => SqlType::Numeric {
            precision: *p,
            scale: *s,
        },
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => SqlType::Text,
        DataType::Date32 | DataType::Date64 => SqlType::Date,
        DataType::Timestamp(_, None) => SqlType::Timestamp,
        DataType::Timestamp(_, Some(_)) => SqlType::Timestamptz,
        DataType::Interval(_) => SqlType::Interval,
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => SqlType::Bytea,
        DataType::Null => SqlType::Text,
        other => {
            return Err(SqlError::new(
                "0A000",
                format!("cannot store values of type {other} in a table"),
            ))
        }
    })
}

fn index_columns(cols: &[IndexColumn], names: &[String]) -> Result<Vec<usize>, SqlError> {
    cols.iter()
        .map(|c| {
            let name =
                idents::column_of(&c.column.expr).unwrap_or_else(|| c.column.expr.to_string());
            names.iter().position(|n| *n == name).ok_or_else(|| {
                SqlError::new(
                    "42703",
                    format!("column \"{name}\" named in key does not exist"),
                )
            })
        })
        .collect()
}

/// One column definition.
pub fn column_meta(def: &ColumnDef) -> Result<(ColumnMeta, bool, bool), SqlError> {
    let ty = parse_type(&def.data_type.to_string())?;
    let mut col = ColumnMeta {
        name: idents::fold(&def.name),
        ty,
        nullable: true,
        default: None,
    };
    let (mut pk, mut unique) = (false, false);
    for opt in &def.options {
        match &opt.option {
            ColumnOption::NotNull => col.nullable = false,
            ColumnOption::Null => col.nullable = true,
            ColumnOption::Default(e) => col.default = Some(e.to_string()),
            ColumnOption::PrimaryKey(_) => {
                pk = true;
                col.nullable = false;
            }
            ColumnOption::Unique(_) => unique = true,
            ColumnOption::Check(_) | ColumnOption::ForeignKey(_) => {
                return Err(SqlError::new(
                    "0A000",
                    "CHECK and FOREIGN KEY constraints are not supported yet",
                ))
            }
            _ => {}
        }
    }
    Ok((col, pk, unique))
}

/// Builds table metadata from `CREATE TABLE` (id assigned by the engine).
pub fn table_meta(ct: &CreateTable) -> Result<TableMeta, SqlError> {
    let name = idents::relation(&ct.name);
    let mut columns = Vec::new();
    let mut primary_key = None;
    let mut uniques = Vec::new();
    for (i, def) in ct.columns.iter().enumerate() {
        let (col, pk, unique) = column_meta(def)?;
        if columns.iter().any(|c: &ColumnMeta| c.name == col.name) {
            return Err(SqlError::new(
                "42701",
                format!("column \"{}\" specified more than once", col.name),
            ));
        }
        if pk {
            if primary_key.is_some() {
                return Err(SqlError::new(
                    "42P16",
                    format!("multiple primary keys for table \"{name}\" are not allowed"),
                ));
            }
            primary_key = Some(vec![i]);
        }
        if unique {
            uniques.push(vec![i]);
        }
        columns.push(col);
    }
    let names: Vec<String> = columns.iter().map(|c| c.name.clone()).collect();
    for c in &ct.constraints {
        match c {
            TableConstraint::PrimaryKey(pk) => {
                if primary_key.is_some() {
                    return Err(SqlError::new(
                        "42P16",
                        format!("multiple primary keys for table \"{name}\" are not allowed"),
                    ));
                }
                let cols = index_columns(&pk.columns, &names)?;
                for &c in &cols {
                    columns[c].nullable = false;
                }
                primary_key = Some(cols);
            }
            TableConstraint::Unique(u) => uniques.push(index_columns(&u.columns, &names)?),
            _ => {
                return Err(SqlError::new(
                    "0A000",
                    "only PRIMARY KEY and UNIQUE table constraints are supported",
                ))
            }
        }
    }
    if columns.is_empty() {
        return Err(SqlError::new("42601", "a table needs at least one column"));
    }
    Ok(TableMeta {
        id: 0,
        name,
        columns,
        primary_key,
        uniques,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_spellings() {
        assert_eq!(parse_type("INTEGER").unwrap(), SqlType::Int4);
        assert_eq!(parse_type("int8").unwrap(), SqlType::Int8);
        assert_eq!(
            parse_type("NUMERIC(15,2)").unwrap(),
            SqlType::Numeric {
                precision: 15,
                scale: 2
            }
        );
        assert_eq!(
            parse_type("VARCHAR(25)").unwrap(),
            SqlType::Varchar(Some(25))
        );
        assert_eq!(parse_type("CHAR(1)").unwrap(), SqlType::Char(Some(1)));
        assert_eq!(parse_type("double precision").unwrap(), SqlType::Float8);
        assert_eq!(
            parse_type("TIMESTAMP WITH TIME ZONE").unwrap(),
            SqlType::Timestamptz
        );
        assert_eq!(
            parse_type("timestamp(3) with time zone").unwrap(),
            SqlType::Timestamptz
        );
        assert_eq!(parse_type("bogus").unwrap_err().sqlstate, "42704");
    }
}
