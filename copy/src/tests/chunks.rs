//! Chunk boundaries: the same input split at every byte offset (and fed one
//! byte at a time) must decode exactly like the input in one piece.

use arrow_schema::{DataType, TimeUnit};

use super::{decode_chunked, render, schema};
use crate::{CopyDecoder, CopyOptions};

fn tricky_schema() -> arrow_schema::SchemaRef {
    schema(&[
        ("id", DataType::Int32, false),
        ("s", DataType::Utf8, true),
        ("n", DataType::Decimal128(10, 2), true),
        (
            "ts",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
    ])
}

const TEXT_SAMPLE: &str = "1\ta\\tb\\\\c\\nd\t1.50\t2024-01-02 03:04:05.5+02\n\
2\t\\N\t\\N\t\\N\n\
3\th\u{e9}llo \u{1F600} \\x41\\101\\\nline\t-0.005\t2024-01-02T00:00:00Z\n\
4\t\\\\N\t99999999.99\tinfinity\n\
5\t\t0\t1999-12-31 23:59:59.999999\n\
\\.\n\
this is ignored\n";

const CSV_SAMPLE: &str = "id,s,n,ts\r\n\
1,\"a,b\"\"c\r\nd\",1.5,2024-01-02 03:04:05\r\n\
2,,,\r\n\
3,\"\",\" 2.5 \",\r\n\
4,x\"q,q\"y,3,\"2024-01-02 03:04:05-05:30\"\r\n\
5,\"h\u{e9}llo \u{1F600}\",\"\",2024-01-02\r\n\
6,\"\\.\",7,\r\n\
\\.\r\n";

fn check_all_splits(opts: &CopyOptions, input: &str, expected_rows: usize) {
    let schema = tricky_schema();
    let bytes = input.as_bytes();
    let whole = decode_chunked(&schema, opts, bytes, bytes.len(), 1024).unwrap();
    let expected = render(&whole, &CopyOptions::text());
    assert_eq!(expected.lines().count(), expected_rows, "{expected:?}");
    for cut in 0..=bytes.len() {
        let mut d = CopyDecoder::new(schema.clone(), opts.clone(), 2).unwrap();
        let mut got = d.push(&bytes[..cut]).unwrap();
        got.extend(d.push(&bytes[cut..]).unwrap());
        let unterminated = u64::from(!input.ends_with('\n'));
        assert_eq!(d.rows(), expected_rows as u64 - unterminated);
        got.extend(d.finish().unwrap());
        assert_eq!(render(&got, &CopyOptions::text()), expected, "cut at {cut}");
    }
    for size in [1, 2, 3, 5, 13] {
        let got = decode_chunked(&schema, opts, bytes, size, 3).unwrap();
        assert_eq!(
            render(&got, &CopyOptions::text()),
            expected,
            "chunks of {size}"
        );
    }
}

#[test]
fn text_every_offset() {
    check_all_splits(&CopyOptions::text(), TEXT_SAMPLE, 5);
    let schema = tricky_schema();
    let got = decode_chunked(
        &schema,
        &CopyOptions::text(),
        TEXT_SAMPLE.as_bytes(),
        4,
        100,
    )
    .unwrap();
    let text = render(&got, &CopyOptions::text());
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "1\ta\\tb\\\\c\\nd\t1.50\t2024-01-02 01:04:05.5+00"
    );
    assert_eq!(lines[1], "2\t\\N\t\\N\t\\N");
    assert_eq!(
        lines[2],
        "3\th\u{e9}llo \u{1F600} AA\\nline\t-0.01\t2024-01-02 00:00:00+00"
    );
    assert_eq!(lines[3], "4\t\\\\N\t99999999.99\tinfinity");
    assert_eq!(lines[4], "5\t\t0.00\t1999-12-31 23:59:59.999999+00");
}

#[test]
fn csv_every_offset() {
    let opts = CopyOptions {
        header: true,
        force_null: vec!["n".into()],
        ..CopyOptions::csv()
    };
    check_all_splits(&opts, CSV_SAMPLE, 6);
    let schema = tricky_schema();
    let got = decode_chunked(&schema, &opts, CSV_SAMPLE.as_bytes(), 3, 100).unwrap();
    let csv = render(&got, &CopyOptions::csv());
    assert_eq!(
        csv,
        "1,\"a,b\"\"c\r\nd\",1.50,2024-01-02 03:04:05+00\n\
2,,,\n\
3,\"\",2.50,\n\
4,\"xq,qy\",3.00,2024-01-02 08:34:05+00\n\
5,h\u{e9}llo \u{1F600},,2024-01-02 00:00:00+00\n\
6,\\.,7.00,\n"
    );
}

#[test]
fn csv_escape_every_offset() {
    let opts = CopyOptions {
        escape: b'\\',
        ..CopyOptions::csv()
    };
    let input = "1,\"a\\\"b\\\\\",1,\n2,\"x\\y\n\",2,\n3,\"\\\"\\\"\",3,";
    check_all_splits(&opts, input, 3);
    let got = decode_chunked(&tricky_schema(), &opts, input.as_bytes(), 1, 100).unwrap();
    assert_eq!(
        render(&got, &CopyOptions::text()),
        "1\ta\"b\\\\\t1.00\t\\N\n2\tx\\\\y\\n\t2.00\t\\N\n3\t\"\"\t3.00\t\\N\n"
    );
}

#[test]
fn crlf_and_cr_line_endings() {
    let schema = schema(&[("a", DataType::Int32, true), ("b", DataType::Utf8, true)]);
    for (input, opts) in [
        ("1\tx\r\n2\ty\r\n", CopyOptions::text()),
        ("1\tx\r2\ty\r", CopyOptions::text()),
        ("1,x\r\n2,y\r\n", CopyOptions::csv()),
        ("1,x\r2,y", CopyOptions::csv()),
    ] {
        for chunk in 1..=input.len() {
            let got = decode_chunked(&schema, &opts, input.as_bytes(), chunk, 10).unwrap();
            assert_eq!(
                render(&got, &CopyOptions::text()),
                "1\tx\n2\ty\n",
                "{input:?}"
            );
        }
    }
}
