//! Every error path of the decoder: SQLSTATE, message, line, column, value
//! and the rendered CONTEXT.

use arrow_schema::{DataType, IntervalUnit, TimeUnit};

use super::{decode_chunked, decode_err, schema};
use crate::{CopyDecoder, CopyError, CopyOptions, DataError};

fn data(e: &CopyError) -> &DataError {
    e.data()
        .unwrap_or_else(|| panic!("not a data error: {e:?}"))
}

fn one(dt: DataType) -> arrow_schema::SchemaRef {
    schema(&[("id", DataType::Int32, true), ("x", dt, true)])
}

/// `(type, input value, sqlstate, message)` for column `x` on line 2.
fn check_value(dt: DataType, value: &str, state: &str, message: &str) {
    let input = format!("1\t\\N\n2\t{value}\n3\t\\N\n");
    let e = decode_err(&one(dt.clone()), &CopyOptions::text(), &input);
    assert_eq!(e.sqlstate(), state, "{dt} {value}: {e}");
    let d = data(&e);
    assert_eq!(d.message, message, "{dt} {value}");
    assert_eq!(d.line, 2);
    assert_eq!(d.column.as_deref(), Some("x"));
    // The value is reported after de-escaping, as PostgreSQL does.
    let value = value.replace("\\\\", "\\");
    assert_eq!(d.value.as_deref(), Some(value.as_str()));
    assert_eq!(
        d.context("t"),
        format!("COPY t, line 2, column x: \"{value}\"")
    );
}

#[test]
fn value_errors() {
    check_value(
        DataType::Int32,
        "abc",
        "22P02",
        "invalid input syntax for type integer: \"abc\"",
    );
    check_value(
        DataType::Int16,
        "1.5",
        "22P02",
        "invalid input syntax for type smallint: \"1.5\"",
    );
    check_value(
        DataType::Int64,
        "99999999999999999999",
        "22003",
        "value \"99999999999999999999\" is out of range for type bigint",
    );
    check_value(
        DataType::Int16,
        "40000",
        "22003",
        "value \"40000\" is out of range for type smallint",
    );
    check_value(
        DataType::Boolean,
        "maybe",
        "22P02",
        "invalid input syntax for type boolean: \"maybe\"",
    );
    check_value(
        DataType::Float64,
        "1e999",
        "22003",
        "\"1e999\" is out of range for type double precision",
    );
    check_value(
        DataType::Float32,
        "x1",
        "22P02",
        "invalid input syntax for type real: \"x1\"",
    );
    check_value(
        DataType::Decimal128(5, 2),
        "12a",
        "22P02",
        "invalid input syntax for type numeric: \"12a\"",
    );
    check_value(
        DataType::Decimal128(5, 2),
        "1000",
        "22003",
        "numeric field overflow",
    );
    check_value(
        DataType::Date32,
        "2024-02-30",
        "22008",
        "date/time field value out of range: \"2024-02-30\"",
    );
    check_value(
        DataType::Date32,
        "soon",
        "22007",
        "invalid input syntax for type date: \"soon\"",
    );
    check_value(
        DataType::Timestamp(TimeUnit::Microsecond, None),
        "2024-01-01 12:61:00",
        "22008",
        "date/time field value out of range: \"2024-01-01 12:61:00\"",
    );
    check_value(
        DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        "yesterday-ish",
        "22007",
        "invalid input syntax for type timestamp with time zone: \"yesterday-ish\"",
    );
    check_value(
        DataType::Interval(IntervalUnit::MonthDayNano),
        "1 fortnight",
        "22007",
        "invalid input syntax for type interval: \"1 fortnight\"",
    );
    check_value(
        DataType::Binary,
        "\\\\xzz",
        "22023",
        "invalid hexadecimal digit: \"z\"",
    );
    check_value(
        DataType::Time64(TimeUnit::Microsecond),
        "25:00",
        "22008",
        "date/time field value out of range: \"25:00\"",
    );
    let e = decode_err(
        &one(DataType::Decimal128(5, 2)),
        &CopyOptions::text(),
        "1\t1000\n",
    );
    assert_eq!(
        e.detail(),
        Some("A field with precision 5, scale 2 must round to an absolute value less than 10^3.")
    );
}

#[test]
fn json_errors() {
    let s = std::sync::Arc::new(arrow_schema::Schema::new(vec![super::json_field("j")]));
    let e = decode_err(&s, &CopyOptions::text(), "{\"a\":1}\n{\"a\":}\n");
    assert_eq!(e.sqlstate(), "22P02");
    assert_eq!(
        data(&e).message,
        "invalid input syntax for type json: \"{\"a\":}\""
    );
    assert_eq!(data(&e).line, 2);
    assert!(e.detail().is_some());
}

#[test]
fn utf8_errors_are_traced_to_their_row() {
    let s = schema(&[("a", DataType::Int32, true), ("s", DataType::Utf8, true)]);
    for (input, line) in [
        (b"1\tok\n2\tbad \xff here\n3\tok\n".as_slice(), 2),
        (b"1\tok\n2\tok\n3\t\xc3\n".as_slice(), 3),
        (b"1\t\\xc3\\xa9 fine\n2\tnul\\0\n".as_slice(), 2),
    ] {
        for batch_size in [1, 2, 100] {
            let e = decode_chunked(&s, &CopyOptions::text(), input, 3, batch_size).unwrap_err();
            assert_eq!(e.sqlstate(), "22021", "{e}");
            assert_eq!(data(&e).line, line);
            assert_eq!(data(&e).column.as_deref(), Some("s"));
            assert!(data(&e)
                .message
                .starts_with("invalid byte sequence for encoding \"UTF8\": 0x"));
        }
    }
    // Split multi-byte characters across fields are caught too.
    let e = decode_chunked(
        &schema(&[("a", DataType::Utf8, true), ("b", DataType::Utf8, true)]),
        &CopyOptions::text(),
        b"\xc3\t\xa9\n",
        100,
        10,
    )
    .unwrap_err();
    assert_eq!(e.sqlstate(), "22021");
}

#[test]
fn column_count_errors() {
    let s = schema(&[("a", DataType::Int32, true), ("b", DataType::Utf8, true)]);
    let e = decode_err(&s, &CopyOptions::text(), "1\tx\n2\tx\textra\n");
    assert_eq!(e.sqlstate(), "22P04");
    assert_eq!(e.to_string(), "extra data after last expected column");
    assert_eq!(data(&e).line, 2);
    assert_eq!(data(&e).context("t"), "COPY t, line 2: \"2\tx\textra\"");

    let e = decode_err(&s, &CopyOptions::text(), "1\n");
    assert_eq!(e.sqlstate(), "22P04");
    assert_eq!(e.to_string(), "missing data for column \"b\"");
    assert_eq!(data(&e).context("t"), "COPY t, line 1: \"1\"");

    let e = decode_err(&s, &CopyOptions::csv(), "1,a\n1,2,3\n");
    assert_eq!(e.to_string(), "extra data after last expected column");
    let e = decode_err(&s, &CopyOptions::csv(), "\n");
    assert_eq!(e.to_string(), "missing data for column \"b\"");
}

#[test]
fn quoting_and_line_ending_errors() {
    let s = schema(&[("a", DataType::Int32, true), ("b", DataType::Utf8, true)]);
    let e = decode_err(&s, &CopyOptions::csv(), "1,\"abc\n2,x\n");
    assert_eq!(e.sqlstate(), "22P04");
    assert_eq!(e.to_string(), "unterminated CSV quoted field");
    assert_eq!(data(&e).line, 1);

    let e = decode_err(&s, &CopyOptions::text(), "1\ta\n2\tb\r\n");
    assert_eq!(e.to_string(), "literal carriage return found in data");
    assert_eq!(
        e.detail(),
        Some("Use \"\\r\" to represent carriage return.")
    );
    assert_eq!(data(&e).line, 2);
    let e = decode_err(&s, &CopyOptions::text(), "1\ta\r\n2\tb\n");
    assert_eq!(e.to_string(), "literal newline found in data");
    let e = decode_err(&s, &CopyOptions::text(), "1\ta\rb\n");
    assert_eq!(e.to_string(), "literal newline found in data");
    let e = decode_err(&s, &CopyOptions::csv(), "1,a\n2,b\r\n");
    assert_eq!(e.to_string(), "unquoted carriage return found in data");
    let e = decode_err(&s, &CopyOptions::csv(), "1,a\r\n2,b\n");
    assert_eq!(e.to_string(), "unquoted newline found in data");

    let e = decode_err(&s, &CopyOptions::text(), "1\ta\n\\.x\n");
    assert_eq!(e.to_string(), "end-of-copy marker corrupt");
    let e = decode_err(&s, &CopyOptions::text(), "1\ta\\.\n");
    assert_eq!(e.to_string(), "end-of-copy marker is not alone on its line");
    assert_eq!(e.sqlstate(), "22P04");
}

#[test]
fn not_null_violation() {
    let s = schema(&[("a", DataType::Int32, false), ("b", DataType::Utf8, true)]);
    let e = decode_err(&s, &CopyOptions::text(), "1\tx\n\\N\ty\n");
    assert_eq!(e.sqlstate(), "23502");
    assert_eq!(
        e.to_string(),
        "null value in column \"a\" violates not-null constraint"
    );
    assert_eq!(data(&e).line, 2);
    assert_eq!(data(&e).column.as_deref(), Some("a"));
    assert_eq!(data(&e).context("t"), "COPY t, line 2: \"\\N\ty\"");

    let mut d = CopyDecoder::new(s.clone(), CopyOptions::csv(), 10)
        .unwrap()
        .with_table_name("t");
    let e = d.push(b",x\n").unwrap_err();
    assert_eq!(
        e.to_string(),
        "null value in column \"a\" of relation \"t\" violates not-null constraint"
    );
    // A poisoned decoder refuses more input.
    assert!(matches!(d.push(b"1,x\n"), Err(CopyError::Poisoned)));
    assert!(matches!(d.finish(), Err(CopyError::Poisoned)));
}

#[test]
fn header_match_errors() {
    let s = schema(&[("a", DataType::Int32, true), ("b", DataType::Utf8, true)]);
    let opts = CopyOptions {
        header: true,
        header_match: true,
        ..CopyOptions::csv()
    };
    let e = decode_err(&s, &opts, "a,c\n1,x\n");
    assert_eq!(e.sqlstate(), "22P04");
    assert_eq!(
        e.to_string(),
        "column name mismatch in header line field 2: got \"c\", expected \"b\""
    );
    let e = decode_err(&s, &opts, "a\n");
    assert_eq!(
        e.to_string(),
        "wrong number of fields in header line: got 1, expected 2"
    );
    let e = decode_err(&s, &opts, "a,\n");
    assert_eq!(
        e.to_string(),
        "column name mismatch in header line field 2: got null value (\"\"), expected \"b\""
    );
}

#[test]
fn unsupported_type() {
    let s = schema(&[(
        "l",
        DataType::List(std::sync::Arc::new(arrow_schema::Field::new(
            "i",
            DataType::Int32,
            true,
        ))),
        true,
    )]);
    match CopyDecoder::new(s, CopyOptions::text(), 10) {
        Err(e) => {
            assert_eq!(e.sqlstate(), "0A000");
            assert!(e.to_string().contains("\"l\""));
        }
        Ok(_) => panic!("list columns are not supported"),
    }
}
