//! Throughput check for the COPY codec on TPC-H `lineitem`-like rows.
//!
//! `cargo run --release -p quiver-copy --example copy_bench [rows]`
//! generates rows with a fixed pseudo-random sequence, feeds them to the
//! decoder in 64 KiB chunks (as `CopyData` messages would arrive) in text
//! and CSV format, and reports rows/s and MB/s for decode and encode.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Instant;

use arrow_array::RecordBatch;
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use quiver_copy::{encode_batch, CopyDecoder, CopyError, CopyOptions};

fn lineitem_schema() -> SchemaRef {
    let dec = DataType::Decimal128(15, 2);
    let f = |n: &str, t: DataType| Field::new(n, t, false);
    Arc::new(Schema::new(vec![
        f("l_orderkey", DataType::Int64),
        f("l_partkey", DataType::Int64),
        f("l_suppkey", DataType::Int64),
        f("l_linenumber", DataType::Int32),
        f("l_quantity", dec.clone()),
        f("l_extendedprice", dec.clone()),
        f("l_discount", dec.clone()),
        f("l_tax", dec),
        f("l_returnflag", DataType::Utf8),
        f("l_linestatus", DataType::Utf8),
        f("l_shipdate", DataType::Date32),
        f("l_commitdate", DataType::Date32),
        f("l_receiptdate", DataType::Date32),
        f("l_shipinstruct", DataType::Utf8),
        f("l_shipmode", DataType::Utf8),
        f("l_comment", DataType::Utf8),
    ]))
}

struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

fn generate(rows: usize, delim: char) -> String {
    const INSTRUCT: [&str; 4] = [
        "DELIVER IN PERSON",
        "COLLECT COD",
        "NONE",
        "TAKE BACK RETURN",
    ];
    const MODE: [&str; 7] = ["REG AIR", "AIR", "RAIL", "SHIP", "TRUCK", "MAIL", "FOB"];
    const WORDS: [&str; 12] = [
        "furiously",
        "carefully",
        "blithely",
        "regular",
        "final",
        "deposits",
        "requests",
        "accounts",
        "packages",
        "ironic",
        "express",
        "pending",
    ];
    let mut r = Lcg(42);
    let mut s = String::with_capacity(rows * 140);
    for i in 0..rows {
        let qty = 1 + r.next(50);
        let price = qty * (90_000 + r.next(10_000_000)) / 100;
        let comment: Vec<&str> = (0..4).map(|_| WORDS[r.next(12) as usize]).collect();
        let day = 1 + r.next(28);
        let month = 1 + r.next(12);
        let year = 1992 + r.next(7);
        let d = delim;
        let _ = writeln!(
            s,
            "{o}{d}{p}{d}{su}{d}{ln}{d}{qty}.00{d}{pi}.{pf:02}{d}0.0{disc}{d}0.0{tax}{d}{rf}{d}{ls}{d}\
{year}-{month:02}-{day:02}{d}{year}-{month:02}-{day2:02}{d}{year}-{month:02}-{day3:02}{d}{ins}{d}{mode}{d}{c}",
            o = i / 4 + 1,
            p = r.next(200_000) + 1,
            su = r.next(10_000) + 1,
            ln = i % 7 + 1,
            pi = price / 100,
            pf = price % 100,
            disc = r.next(10),
            tax = r.next(9),
            rf = ["R", "A", "N"][r.next(3) as usize],
            ls = ["O", "F"][r.next(2) as usize],
            day2 = (day % 28) + 1,
            day3 = ((day + 3) % 28) + 1,
            ins = INSTRUCT[r.next(4) as usize],
            mode = MODE[r.next(7) as usize],
            c = comment.join(" "),
        );
    }
    s
}

fn decode(
    schema: &SchemaRef,
    opts: &CopyOptions,
    input: &[u8],
) -> Result<Vec<RecordBatch>, CopyError> {
    let mut d = CopyDecoder::new(schema.clone(), opts.clone(), 8192)?;
    let mut out = Vec::new();
    for chunk in input.chunks(64 * 1024) {
        out.extend(d.push(chunk)?);
    }
    out.extend(d.finish()?);
    Ok(out)
}

/// CPU seconds used by this process so far (user + system), from
/// `/proc/self/stat`; wall time is unreliable on a shared machine.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = after
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    // Fields 14 and 15 (utime, stime) are at 11 and 12 after the comm field.
    (f.get(11).copied().unwrap_or(0.0) + f.get(12).copied().unwrap_or(0.0)) / 100.0
}

fn main() -> Result<(), CopyError> {
    let rows: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let schema = lineitem_schema();
    let csv = CopyOptions::csv();
    let text = CopyOptions {
        delimiter: b'|',
        ..CopyOptions::text()
    };
    for (name, opts, delim) in [("text", &text, '|'), ("csv", &csv, ',')] {
        let input = generate(rows, delim);
        let mb = input.len() as f64 / 1e6;
        let mut best = f64::MAX;
        let mut best_cpu = f64::MAX;
        let mut batches = Vec::new();
        for _ in 0..3 {
            let (t, c) = (Instant::now(), cpu_seconds());
            batches = decode(&schema, opts, input.as_bytes())?;
            best = best.min(t.elapsed().as_secs_f64());
            best_cpu = best_cpu.min(cpu_seconds() - c);
        }
        let n: usize = batches.iter().map(RecordBatch::num_rows).sum();
        assert_eq!(n, rows);
        println!(
            "decode {name}: {rows} rows, {mb:.1} MB: wall {best:.3} s = {:.2} M rows/s ({:.0} MB/s); \
cpu {best_cpu:.2} s = {:.2} M rows/s",
            rows as f64 / best / 1e6,
            mb / best,
            rows as f64 / best_cpu / 1e6,
        );
        let (t, c) = (Instant::now(), cpu_seconds());
        let mut out = Vec::with_capacity(input.len());
        for b in &batches {
            encode_batch(b, opts, &mut out)?;
        }
        let secs = t.elapsed().as_secs_f64();
        let cpu = cpu_seconds() - c;
        assert!(out == input.as_bytes(), "encode output differs from input");
        println!(
            "encode {name}: wall {:.2} M rows/s ({:.0} MB/s); cpu {cpu:.2} s",
            rows as f64 / secs / 1e6,
            out.len() as f64 / 1e6 / secs
        );
    }
    Ok(())
}
