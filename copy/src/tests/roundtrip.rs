//! Encode -> decode round trips for every supported type, in text and CSV,
//! plus the exact text PostgreSQL would print for them.

use std::sync::Arc;

use arrow_array::types::IntervalMonthDayNano;
use arrow_array::{
    ArrayRef, BinaryArray, BooleanArray, Date32Array, Decimal128Array, Float32Array, Float64Array,
    Int16Array, Int32Array, Int64Array, IntervalMonthDayNanoArray, LargeBinaryArray,
    LargeStringArray, RecordBatch, StringArray, StringViewArray, Time64MicrosecondArray,
    TimestampMicrosecondArray, TimestampNanosecondArray,
};
use arrow_schema::{DataType, Field, IntervalUnit, Schema, TimeUnit};

use super::{decode_chunked, json_field, render};
use crate::{encode_header, CopyOptions};

fn iv(months: i32, days: i32, nanoseconds: i64) -> Option<IntervalMonthDayNano> {
    Some(IntervalMonthDayNano {
        months,
        days,
        nanoseconds,
    })
}

const TS: i64 = 1_704_164_645_123_456;

pub(super) fn all_types_batch() -> RecordBatch {
    let strs = [
        Some("plain"),
        Some("tab\there\nnew \\ back, comma \"q\" \r"),
        None,
        Some(""),
        Some("\\N"),
        Some("héllo 😀 \\."),
    ];
    let fields = vec![
        Field::new("b", DataType::Boolean, true),
        Field::new("i2", DataType::Int16, true),
        Field::new("i4", DataType::Int32, true),
        Field::new("i8", DataType::Int64, false),
        Field::new("f4", DataType::Float32, true),
        Field::new("f8", DataType::Float64, true),
        Field::new("n", DataType::Decimal128(15, 2), true),
        Field::new("s", DataType::Utf8, true),
        Field::new("ls", DataType::LargeUtf8, true),
        Field::new("sv", DataType::Utf8View, true),
        json_field("j"),
        Field::new("by", DataType::Binary, true),
        Field::new("lby", DataType::LargeBinary, true),
        Field::new("d", DataType::Date32, true),
        Field::new("ts", DataType::Timestamp(TimeUnit::Microsecond, None), true),
        Field::new(
            "tz",
            DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into())),
            true,
        ),
        Field::new(
            "tzu",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
        Field::new("tsn", DataType::Timestamp(TimeUnit::Nanosecond, None), true),
        Field::new("t", DataType::Time64(TimeUnit::Microsecond), true),
        Field::new("iv", DataType::Interval(IntervalUnit::MonthDayNano), true),
    ];
    let ts_vals = [
        Some(TS),
        Some(-1),
        None,
        Some(0),
        Some(i64::MAX),
        Some(i64::MIN),
    ];
    let bins: [Option<&[u8]>; 6] = [
        Some(&[0, 1, 255, 10]),
        Some(&[]),
        None,
        Some(b"\\"),
        Some(b"\\N"),
        Some(b"a,b\"c"),
    ];
    let columns: Vec<ArrayRef> = vec![
        Arc::new(BooleanArray::from(vec![
            Some(true),
            Some(false),
            None,
            Some(true),
            Some(false),
            None,
        ])),
        Arc::new(Int16Array::from(vec![
            Some(i16::MIN),
            Some(-1),
            None,
            Some(i16::MAX),
            Some(0),
            Some(7),
        ])),
        Arc::new(Int32Array::from(vec![
            Some(i32::MIN),
            Some(0),
            None,
            Some(i32::MAX),
            Some(5),
            Some(-5),
        ])),
        Arc::new(Int64Array::from(vec![i64::MIN, 42, 0, i64::MAX, 1, -1])),
        Arc::new(Float32Array::from(vec![
            Some(1.5),
            Some(f32::NAN),
            None,
            Some(f32::NEG_INFINITY),
            Some(3.4028235e38),
            Some(1e-45),
        ])),
        Arc::new(Float64Array::from(vec![
            Some(0.1 + 0.2),
            Some(f64::INFINITY),
            None,
            Some(-0.0),
            Some(1e-300),
            Some(123456789012345680.0),
        ])),
        Arc::new(
            Decimal128Array::from(vec![
                Some(12345),
                Some(-5),
                None,
                Some(0),
                Some(999_999_999_999_999),
                Some(-100),
            ])
            .with_precision_and_scale(15, 2)
            .unwrap(),
        ),
        Arc::new(StringArray::from(strs.to_vec())),
        Arc::new(LargeStringArray::from(strs.to_vec())),
        Arc::new(StringViewArray::from(strs.to_vec())),
        Arc::new(StringArray::from(vec![
            Some("{\"a\": [1, \"x\\ty\", null]}"),
            Some("[]"),
            None,
            Some("\"\""),
            Some("1.5e3"),
            Some(" {\"k\" : {\"n\": true}} "),
        ])),
        Arc::new(BinaryArray::from(bins.to_vec())),
        Arc::new(LargeBinaryArray::from(bins.to_vec())),
        Arc::new(Date32Array::from(vec![
            Some(0),
            Some(-1_000_000),
            None,
            Some(19_782),
            Some(i32::MAX),
            Some(i32::MIN),
        ])),
        Arc::new(TimestampMicrosecondArray::from(ts_vals.to_vec())),
        Arc::new(TimestampMicrosecondArray::from(ts_vals.to_vec()).with_timezone("+00:00")),
        Arc::new(TimestampMicrosecondArray::from(ts_vals.to_vec()).with_timezone("UTC")),
        Arc::new(TimestampNanosecondArray::from(vec![
            Some(1_704_164_645_123_456_789),
            Some(-1),
            None,
            Some(0),
            Some(1),
            Some(i64::MAX),
        ])),
        Arc::new(Time64MicrosecondArray::from(vec![
            Some(0),
            Some(86_399_999_999),
            None,
            Some(11_045_250_000),
            Some(86_400_000_000),
            Some(1),
        ])),
        Arc::new(IntervalMonthDayNanoArray::from(vec![
            iv(14, 3, 14_706_000_000_000),
            iv(0, -1, 7_200_000_000_000),
            None,
            iv(0, 0, 0),
            iv(-14, 0, -1_500_000_000),
            iv(1, 2, 3_000),
        ])),
    ];
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap()
}

fn csv_opts() -> CopyOptions {
    CopyOptions::csv()
}

#[test]
fn text_output_is_postgres_text() {
    let batch = all_types_batch();
    let out = render(&[batch.slice(0, 2)], &CopyOptions::text());
    let lines: Vec<&str> = out.lines().collect();
    let row0: Vec<&str> = lines[0].split('\t').collect();
    assert_eq!(
        row0,
        [
            "t",
            "-32768",
            "-2147483648",
            "-9223372036854775808",
            "1.5",
            "0.30000000000000004",
            "123.45",
            "plain",
            "plain",
            "plain",
            "{\"a\": [1, \"x\\\\ty\", null]}",
            "\\\\x0001ff0a",
            "\\\\x0001ff0a",
            "1970-01-01",
            "2024-01-02 03:04:05.123456",
            "2024-01-02 03:04:05.123456+00",
            "2024-01-02 03:04:05.123456+00",
            "2024-01-02 03:04:05.123456789",
            "00:00:00",
            "1 year 2 mons 3 days 04:05:06",
        ]
    );
    let row1: Vec<&str> = lines[1].split('\t').collect();
    assert_eq!(row1[5], "Infinity");
    assert_eq!(row1[4], "NaN");
    assert_eq!(row1[6], "-0.05");
    assert_eq!(row1[7], "tab\\there\\nnew \\\\ back, comma \"q\" \\r");
    assert_eq!(row1[11], "\\\\x");
    assert_eq!(row1[13], "0769-02-04 BC");
    assert_eq!(row1[14], "1969-12-31 23:59:59.999999");
    assert_eq!(row1[18], "23:59:59.999999");
    assert_eq!(row1[19], "-1 days +02:00:00");
    let null_row = render(&[batch.slice(2, 1)], &CopyOptions::text());
    assert_eq!(
        null_row,
        "\\N\t\\N\t\\N\t0\t".to_string() + &["\\N"; 16].join("\t") + "\n"
    );
}

#[test]
fn csv_output_is_postgres_csv() {
    let batch = all_types_batch();
    let out = render(&[batch.slice(1, 3)], &csv_opts());
    let s = "\"tab\there\nnew \\ back, comma \"\"q\"\" \r\"";
    let expected = format!(
        "f,-1,0,42,NaN,Infinity,-0.05,{s},{s},{s},[],\\x,\\x,0769-02-04 BC,\
1969-12-31 23:59:59.999999,1969-12-31 23:59:59.999999+00,1969-12-31 23:59:59.999999+00,\
1969-12-31 23:59:59.999999999,23:59:59.999999,-1 days +02:00:00\n\
,,,0,,,,,,,,,,,,,,,,\n\
t,32767,2147483647,9223372036854775807,-Infinity,-0,0.00,\"\",\"\",\"\",\"\"\"\"\"\",\\x5c,\\x5c,\
2024-02-29,1970-01-01 00:00:00,1970-01-01 00:00:00+00,1970-01-01 00:00:00+00,\
1970-01-01 00:00:00,03:04:05.25,00:00:00\n"
    );
    assert_eq!(out, expected);
    let mut header = Vec::new();
    encode_header(&batch.schema(), &csv_opts(), &mut header);
    assert!(header.starts_with(b"b,i2,i4,i8,f4,f8,n,s,"));
}

#[test]
fn round_trip_every_type() {
    let batch = all_types_batch();
    let schema = batch.schema();
    let pipe_csv = CopyOptions {
        delimiter: b'|',
        quote: b'\'',
        escape: b'\\',
        null: "NULL".into(),
        ..CopyOptions::csv()
    };
    let text_comma = CopyOptions {
        delimiter: b',',
        null: "<null>".into(),
        ..CopyOptions::text()
    };
    let text_space = CopyOptions {
        delimiter: b' ',
        ..CopyOptions::text()
    };
    for opts in [
        CopyOptions::text(),
        csv_opts(),
        pipe_csv,
        text_comma,
        text_space,
    ] {
        let encoded = render(std::slice::from_ref(&batch), &opts);
        for chunk in [1, 2, 3, 7, 64, 100_000] {
            for batch_size in [1, 4, 1024] {
                let got = decode_chunked(&schema, &opts, encoded.as_bytes(), chunk, batch_size)
                    .unwrap_or_else(|e| panic!("{opts:?} chunk {chunk}: {e:?}"));
                let rows: usize = got.iter().map(RecordBatch::num_rows).sum();
                assert_eq!(rows, batch.num_rows());
                assert!(got.iter().all(|b| b.num_rows() <= batch_size));
                let again = render(&got, &opts);
                assert_eq!(again, encoded, "{opts:?} chunk {chunk}");
                if batch_size == 1024 {
                    assert_eq!(got.len(), 1);
                    assert_eq!(got[0], batch, "{opts:?} chunk {chunk}");
                }
            }
        }
    }
}

#[test]
fn header_round_trip() {
    let batch = all_types_batch();
    let schema = batch.schema();
    for base in [CopyOptions::text(), csv_opts()] {
        let opts = CopyOptions {
            header: true,
            ..base.clone()
        };
        let mut out = Vec::new();
        encode_header(&schema, &opts, &mut out);
        crate::encode_batch(&batch, &opts, &mut out).unwrap();
        let matching = CopyOptions {
            header_match: true,
            ..opts.clone()
        };
        for o in [opts, matching] {
            let got = decode_chunked(&schema, &o, &out, 5, 100).unwrap();
            assert_eq!(got, vec![batch.clone()]);
        }
    }
}
