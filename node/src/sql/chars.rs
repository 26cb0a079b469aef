//! `character(n)` and `character varying(n)` as PostgreSQL has them.
//!
//! On the way in ([`enforce_lengths`], for every row a table receives):
//! a value longer than `n` characters is refused with SQLSTATE 22001 unless
//! what goes beyond `n` is only spaces, which are cut. `character(n)` values
//! are stored without trailing spaces: PostgreSQL ignores them when it
//! compares, hashes, measures or casts a `character(n)` to text, and so do
//! plain string operations on the trimmed value.
//!
//! On the way out ([`pad_output`]) a `character(n)` column is blank-padded
//! to `n` characters, as PostgreSQL sends it. The length travels in the
//! column's Arrow field metadata ([`CHAR_LENGTH_KEY`]).

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, RecordBatch, StringArray, StringBuilder};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::arrow::error::ArrowError;
use datafusion::common::ScalarValue;
use datafusion::logical_expr::{
    ColumnarValue, Expr, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility,
};

use super::error::SqlError;
use crate::storage::table::{SqlType, TableMeta, CHAR_LENGTH_KEY, PG_TYPE_KEY};

/// Checks (and trims) the string columns of a batch in the table's layout.
pub fn enforce_lengths(meta: &TableMeta, batch: RecordBatch) -> Result<RecordBatch, SqlError> {
    let mut cols: Option<Vec<ArrayRef>> = None;
    for (i, c) in meta.columns.iter().enumerate() {
        let (limit, blank_padded) = match c.ty {
            SqlType::Char(Some(n)) => (n as usize, true),
            SqlType::Varchar(Some(n)) => (n as usize, false),
            _ => continue,
        };
        let Some(arr) = batch.column(i).as_any().downcast_ref::<StringArray>() else {
            continue;
        };
        if !needs_work(arr, limit, blank_padded) {
            continue;
        }
        let fixed = fix(arr, limit, blank_padded, &c.ty.pg_name())?;
        cols.get_or_insert_with(|| batch.columns().to_vec())[i] = Arc::new(fixed);
    }
    match cols {
        None => Ok(batch),
        Some(cols) => RecordBatch::try_new(batch.schema(), cols)
            .map_err(|e| SqlError::new("XX000", e.to_string())),
    }
}

/// True when some value may be too long or (for `character(n)`) ends in a
/// space. Looks at byte lengths only: a value of at most `limit` bytes has
/// at most `limit` characters.
fn needs_work(arr: &StringArray, limit: usize, blank_padded: bool) -> bool {
    let offsets = arr.value_offsets();
    let values = arr.value_data();
    offsets.windows(2).any(|w| {
        let (s, e) = (w[0] as usize, w[1] as usize);
        e - s > limit || (blank_padded && e > s && values[e - 1] == b' ')
    })
}

fn fix(
    arr: &StringArray,
    limit: usize,
    blank_padded: bool,
    ty: &str,
) -> Result<StringArray, SqlError> {
    let mut out = StringBuilder::with_capacity(arr.len(), arr.value_data().len());
    for v in arr.iter() {
        let Some(v) = v else {
            out.append_null();
            continue;
        };
        let v = if blank_padded {
            v.trim_end_matches(' ')
        } else {
            v
        };
        match v.char_indices().nth(limit) {
            None => out.append_value(v),
            Some((cut, _)) if v[cut..].bytes().all(|b| b == b' ') => out.append_value(&v[..cut]),
            Some(_) => {
                return Err(SqlError::new(
                    "22001",
                    format!("value too long for type {ty}"),
                ))
            }
        }
    }
    Ok(out.finish())
}

/// The metadata of a `character(n)` field.
pub fn char_length(field: &Field) -> Option<usize> {
    field.metadata().get(CHAR_LENGTH_KEY)?.parse().ok()
}

/// Blank-pads the `character(n)` columns of a result batch.
pub fn pad_output(batch: RecordBatch) -> Result<RecordBatch, ArrowError> {
    let schema = batch.schema();
    if !schema.fields().iter().any(|f| char_length(f).is_some()) {
        return Ok(batch);
    }
    let mut cols = batch.columns().to_vec();
    for (i, f) in schema.fields().iter().enumerate() {
        let Some(n) = char_length(f) else { continue };
        if f.data_type() != &DataType::Utf8 {
            continue;
        }
        let Some(arr) = cols[i].as_any().downcast_ref::<StringArray>() else {
            continue;
        };
        let mut out = StringBuilder::with_capacity(arr.len(), arr.len() * n);
        let mut buf = String::new();
        for v in arr.iter() {
            match v {
                None => out.append_null(),
                Some(v) => {
                    let len = v.chars().count();
                    if len >= n {
                        out.append_value(v);
                    } else {
                        buf.clear();
                        buf.push_str(v);
                        buf.extend(std::iter::repeat_n(' ', n - len));
                        out.append_value(&buf);
                    }
                }
            }
        }
        cols[i] = Arc::new(out.finish());
    }
    RecordBatch::try_new(schema, cols)
}

/// `CAST(text AS character(n))`: the first `n` characters without trailing
/// blanks (as a `character(n)` column stores them), in a field tagged
/// `bpchar` of length `n`, so the result is padded and typed on the way out
/// as a stored `character(n)` column is.
pub fn cast_to_char(text: Expr, n: usize) -> Expr {
    let n = Expr::Literal(ScalarValue::Int64(Some(n as i64)), None);
    ScalarUDF::new_from_impl(CharCast::default()).call(vec![text, n])
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct CharCast {
    signature: Signature,
}

impl Default for CharCast {
    fn default() -> Self {
        CharCast {
            signature: Signature::exact(
                vec![DataType::Utf8, DataType::Int64],
                Volatility::Immutable,
            ),
        }
    }
}

fn cast_length(args: &[ColumnarValue]) -> datafusion::common::Result<usize> {
    match args.get(1) {
        Some(ColumnarValue::Scalar(ScalarValue::Int64(Some(n)))) if *n > 0 => Ok(*n as usize),
        _ => Err(SqlError::new("XX000", "char cast: the length is a positive constant").into()),
    }
}

impl ScalarUDFImpl for CharCast {
    fn name(&self) -> &str {
        "quiver_char_cast"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> datafusion::common::Result<DataType> {
        Ok(DataType::Utf8)
    }
    fn return_field_from_args(
        &self,
        args: ReturnFieldArgs,
    ) -> datafusion::common::Result<FieldRef> {
        let n = match args.scalar_arguments.get(1) {
            Some(Some(ScalarValue::Int64(Some(n)))) => n.to_string(),
            _ => return Err(SqlError::new("XX000", "char cast: the length is a constant").into()),
        };
        let md = std::collections::HashMap::from([
            (PG_TYPE_KEY.to_owned(), "bpchar".to_owned()),
            (CHAR_LENGTH_KEY.to_owned(), n),
        ]);
        Ok(Arc::new(
            Field::new(self.name(), DataType::Utf8, true).with_metadata(md),
        ))
    }
    fn invoke_with_args(
        &self,
        args: ScalarFunctionArgs,
    ) -> datafusion::common::Result<ColumnarValue> {
        let n = cast_length(&args.args)?;
        let cut = |v: &str| -> String {
            let end = v.char_indices().nth(n).map_or(v.len(), |(i, _)| i);
            v[..end].trim_end_matches(' ').to_owned()
        };
        match &args.args[0] {
            ColumnarValue::Scalar(ScalarValue::Utf8(v)) => Ok(ColumnarValue::Scalar(
                ScalarValue::Utf8(v.as_deref().map(cut)),
            )),
            ColumnarValue::Array(a) => {
                let a = a
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .ok_or_else(|| SqlError::new("XX000", "char cast of a non-text array"))?;
                let out: StringArray = a.iter().map(|v| v.map(cut)).collect();
                Ok(ColumnarValue::Array(Arc::new(out)))
            }
            _ => Err(SqlError::new("XX000", "char cast of a non-text value").into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::table::ColumnMeta;

    fn meta() -> TableMeta {
        let col = |name: &str, ty| ColumnMeta {
            name: name.into(),
            ty,
            nullable: true,
            default: None,
        };
        TableMeta {
            id: 1,
            name: "t".into(),
            columns: vec![
                col("c", SqlType::Char(Some(3))),
                col("v", SqlType::Varchar(Some(3))),
                col("t", SqlType::Text),
            ],
            primary_key: None,
            uniques: vec![],
        }
    }

    fn batch(c: Vec<Option<&str>>, v: Vec<Option<&str>>) -> RecordBatch {
        let t: Vec<Option<&str>> = vec![Some("long text is fine"); c.len()];
        RecordBatch::try_new(
            meta().schema(),
            vec![
                Arc::new(StringArray::from(c)),
                Arc::new(StringArray::from(v)),
                Arc::new(StringArray::from(t)),
            ],
        )
        .unwrap()
    }

    fn strings(b: &RecordBatch, i: usize) -> Vec<Option<String>> {
        let a = b.column(i).as_any().downcast_ref::<StringArray>().unwrap();
        a.iter().map(|v| v.map(str::to_string)).collect()
    }

    #[test]
    fn trims_and_cuts_spaces_and_refuses_long_values() {
        let b = batch(
            vec![Some("ab "), Some("abc   "), None, Some("é  ")],
            vec![Some("ab "), Some("abc   "), None, Some("ééé")],
        );
        let out = enforce_lengths(&meta(), b).unwrap();
        let s = |v: &str| Some(v.to_string());
        assert_eq!(strings(&out, 0), vec![s("ab"), s("abc"), None, s("é")]);
        assert_eq!(strings(&out, 1), vec![s("ab "), s("abc"), None, s("ééé")]);
        let e = enforce_lengths(&meta(), batch(vec![Some("abcd")], vec![None])).unwrap_err();
        assert_eq!(
            (e.sqlstate, e.message.as_str()),
            ("22001", "value too long for type character(3)")
        );
        let e = enforce_lengths(&meta(), batch(vec![None], vec![Some("ab d")])).unwrap_err();
        assert_eq!(e.message, "value too long for type character varying(3)");
        // Multi-byte characters count as one.
        assert!(enforce_lengths(&meta(), batch(vec![Some("ééé")], vec![Some("☃☃☃")])).is_ok());
    }

    #[test]
    fn pads_char_columns_on_output_only() {
        let b = enforce_lengths(
            &meta(),
            batch(vec![Some("a"), None, Some("é ")], vec![Some("a"); 3]),
        )
        .unwrap();
        let out = pad_output(b).unwrap();
        let s = |v: &str| Some(v.to_string());
        assert_eq!(strings(&out, 0), vec![s("a  "), None, s("é  ")]);
        assert_eq!(strings(&out, 1), vec![s("a"); 3]);
    }
}
