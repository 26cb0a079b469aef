//! Edge cases of both formats: NULL markers, FORCE_NULL / FORCE_NOT_NULL,
//! empty lines, end markers, zero-column tables and batch sizes.

use arrow_array::RecordBatch;
use arrow_schema::DataType;

use super::{decode, decode_chunked, normalize, schema};
use crate::{CopyDecoder, CopyOptions};

fn two() -> arrow_schema::SchemaRef {
    schema(&[("a", DataType::Utf8, true), ("b", DataType::Int32, true)])
}

#[test]
fn csv_nulls_and_empty_strings() {
    let csv = CopyOptions::csv();
    assert_eq!(
        normalize(&two(), &csv, ",\n\"\",\n\"x\",1\n"),
        "\\N\t\\N\n\t\\N\nx\t1\n"
    );
    let fnn = CopyOptions {
        force_not_null: vec!["a".into()],
        ..CopyOptions::csv()
    };
    assert_eq!(normalize(&two(), &fnn, ",\n"), "\t\\N\n");
    let fnull = CopyOptions {
        force_null: vec!["a".into(), "b".into()],
        ..CopyOptions::csv()
    };
    assert_eq!(normalize(&two(), &fnull, "\"\",\"\"\n"), "\\N\t\\N\n");
    let marker = CopyOptions {
        null: "NULL".into(),
        ..CopyOptions::csv()
    };
    assert_eq!(
        normalize(&two(), &marker, "NULL,NULL\n\"NULL\",NULL\n"),
        "\\N\t\\N\nNULL\t\\N\n"
    );
}

#[test]
fn csv_whitespace_and_quotes_are_data() {
    let csv = CopyOptions::csv();
    assert_eq!(normalize(&two(), &csv, " a , 2 \n"), " a \t2\n");
    assert_eq!(normalize(&two(), &csv, "a\"b\"c,\"3\"\n"), "abc\t3\n");
    assert_eq!(normalize(&two(), &csv, "\"\\N\",4\n"), "\\\\N\t4\n");
    assert_eq!(normalize(&two(), &csv, "\"a\nb\",5\n"), "a\\nb\t5\n");
    assert_eq!(
        normalize(&two(), &csv, "\"\\.\",6\n\\.\n7,7\n"),
        "\\\\.\t6\n"
    );
    let semi = CopyOptions {
        delimiter: b';',
        quote: b'\'',
        escape: b'\'',
        ..CopyOptions::csv()
    };
    assert_eq!(normalize(&two(), &semi, "'a;''b';1\n"), "a;'b\t1\n");
}

#[test]
fn text_nulls_and_escapes() {
    let text = CopyOptions::text();
    assert_eq!(
        normalize(&two(), &text, "\\N\t\\N\n\t1\n"),
        "\\N\t\\N\n\t1\n"
    );
    assert_eq!(normalize(&two(), &text, "\\\\N\t1\n"), "\\\\N\t1\n");
    assert_eq!(normalize(&two(), &text, "a\\\tb\t1\n"), "a\\tb\t1\n");
    assert_eq!(normalize(&two(), &text, "a\\\nb\t1\n"), "a\\nb\t1\n");
    let custom = CopyOptions {
        null: "".into(),
        delimiter: b'|',
        ..CopyOptions::text()
    };
    assert_eq!(
        normalize(&two(), &custom, "|\nx\\|y|2\n"),
        "\\N\t\\N\nx|y\t2\n"
    );
}

#[test]
fn single_column_empty_lines() {
    let s = schema(&[("a", DataType::Utf8, true)]);
    assert_eq!(normalize(&s, &CopyOptions::text(), "\n\nx\n"), "\n\nx\n");
    assert_eq!(normalize(&s, &CopyOptions::csv(), "\n\"\"\n"), "\\N\n\n");
    let n = schema(&[("a", DataType::Int64, true)]);
    let e = super::decode_err(&n, &CopyOptions::text(), "\n");
    assert_eq!(e.sqlstate(), "22P02");
}

#[test]
fn zero_columns() {
    let s = schema(&[]);
    let b = decode(&s, &CopyOptions::text(), b"\n\n").unwrap();
    assert_eq!(b.iter().map(RecordBatch::num_rows).sum::<usize>(), 2);
    let e = super::decode_err(&s, &CopyOptions::text(), "x\n");
    assert_eq!(e.to_string(), "extra data after last expected column");
}

#[test]
fn end_marker_and_empty_input() {
    let s = two();
    assert!(decode(&s, &CopyOptions::text(), b"").unwrap().is_empty());
    assert!(decode(&s, &CopyOptions::text(), b"\\.\n")
        .unwrap()
        .is_empty());
    let mut d = CopyDecoder::new(s.clone(), CopyOptions::text(), 10).unwrap();
    assert!(d.push(b"a\t1\n\\.").unwrap().is_empty());
    assert!(!d.saw_end_marker());
    assert!(d.push(b"\ngarbage\t\t\t\n").unwrap().is_empty());
    assert!(d.saw_end_marker());
    assert_eq!(d.rows(), 1);
    assert_eq!(d.finish().unwrap().map(|b| b.num_rows()), Some(1));
    let mut d = CopyDecoder::new(s, CopyOptions::text(), 10).unwrap();
    d.push(b"a\t1\n\\.").unwrap();
    assert_eq!(d.finish().unwrap().map(|b| b.num_rows()), Some(1));
}

#[test]
fn batches_fill_to_batch_size() {
    let s = two();
    let input: String = (0..10).map(|i| format!("r{i}\t{i}\n")).collect();
    for chunk in [1, 4, 1000] {
        let b = decode_chunked(&s, &CopyOptions::text(), input.as_bytes(), chunk, 3).unwrap();
        let sizes: Vec<usize> = b.iter().map(RecordBatch::num_rows).collect();
        assert_eq!(sizes, [3, 3, 3, 1]);
    }
    let mut d = CopyDecoder::new(s, CopyOptions::text(), 2).unwrap();
    assert_eq!(d.push(b"a\t1\nb\t2\nc\t3").unwrap().len(), 1);
    assert_eq!(d.rows(), 2);
    assert_eq!(d.lines(), 2);
    assert_eq!(d.finish().unwrap().map(|b| b.num_rows()), Some(1));
}

#[test]
fn header_skipped_in_both_formats() {
    let opts = CopyOptions {
        header: true,
        ..CopyOptions::text()
    };
    assert_eq!(normalize(&two(), &opts, "anything\there\nx\t1\n"), "x\t1\n");
    let opts = CopyOptions {
        header: true,
        ..CopyOptions::csv()
    };
    assert_eq!(
        normalize(&two(), &opts, "\"multi\nline\",h\nx,1\n"),
        "x\t1\n"
    );
    let e = super::decode_err(&two(), &opts, "h,h\nx,y\n");
    assert_eq!(e.data().map(|d| d.line), Some(2));
}

/// Random bytes from an alphabet of the characters that matter must never
/// panic, whatever the chunking; errors are fine.
#[test]
fn random_input_never_panics() {
    use arrow_schema::{IntervalUnit, TimeUnit};
    let s = schema(&[
        ("a", DataType::Utf8, true),
        ("b", DataType::Int32, true),
        ("c", DataType::Decimal128(10, 3), true),
        (
            "d",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
        ("e", DataType::Interval(IntervalUnit::MonthDayNano), true),
        ("f", DataType::Binary, true),
        ("g", DataType::Date32, false),
    ]);
    let alphabet: &[u8] = b"\\\t\n\r,\"'.0123456789-+:eE xNTPDHMS\xc3\xa9\xff";
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = |n: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n as u64) as usize
    };
    let mut escape_csv = CopyOptions::csv();
    escape_csv.escape = b'\\';
    let options = [CopyOptions::text(), CopyOptions::csv(), escape_csv];
    for round in 0..20_000 {
        let len = next(60);
        let input: Vec<u8> = (0..len).map(|_| alphabet[next(alphabet.len())]).collect();
        let opts = &options[round % options.len()];
        let chunk = 1 + next(8);
        let _ = decode_chunked(&s, opts, &input, chunk, 1 + next(3));
        let v = &input[..];
        let _ = crate::decimal::parse_decimal(v, 38, 5);
        let _ = crate::interval::parse_interval(v);
        let _ = crate::datetime::parse_timestamp(v, TimeUnit::Nanosecond, true);
        let _ = crate::datetime::parse_date(v);
        let _ = crate::bytes::validate_json(v);
        let mut out = Vec::new();
        let _ = crate::bytes::parse_bytea(v, &mut out);
        let _ = crate::text::unescape(v, &mut out);
    }
}
