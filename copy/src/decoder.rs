//! Decode side, driver: [`CopyDecoder`] takes `CopyData` payloads split
//! anywhere, finds complete records (text or CSV rules), checks line
//! endings, skips or matches the header, stops at the `\.` end marker, and
//! feeds each line's fields to the column builders, emitting a
//! `RecordBatch` every `batch_size` rows.

use arrow_array::{RecordBatch, RecordBatchOptions};
use arrow_schema::SchemaRef;

use crate::columns::{Column, NullMatch};
use crate::csv::{self, CsvBytes};
use crate::error::{CopyError, DataError, DataErrorKind, ValueError};
use crate::options::{CopyFormat, CopyOptions};
use crate::record::{Eol, FieldSink, Found, SplitError};
use crate::text;

/// Streaming decoder of COPY FROM data into Arrow record batches.
///
/// Feed bytes with [`push`](Self::push) as they arrive (chunks may split a
/// record anywhere), then call [`finish`](Self::finish) for the last rows.
/// After an error the decoder refuses further input ([`CopyError::Poisoned`]).
pub struct CopyDecoder {
    schema: SchemaRef,
    opts: CopyOptions,
    csv: CsvBytes,
    batch_size: usize,
    table: Option<String>,
    columns: Vec<Column>,
    /// Unconsumed input: the start of an incomplete record.
    buf: Vec<u8>,
    /// Where scanning of the record at the start of `buf` may resume.
    resume: usize,
    /// CSV quote state at `resume`.
    in_quote: bool,
    eol: Option<Eol>,
    line: u64,
    rows: u64,
    pending: usize,
    /// Input line of the first row of the batch being built.
    batch_first_line: u64,
    header_pending: bool,
    ended: bool,
    at_eof: bool,
    failed: bool,
    scratch: Vec<u8>,
}

impl CopyDecoder {
    /// A decoder producing batches of `schema` with up to `batch_size` rows.
    /// Fails with [`CopyError::UnsupportedType`] for a column type the codec
    /// cannot parse.
    pub fn new(schema: SchemaRef, opts: CopyOptions, batch_size: usize) -> Result<Self, CopyError> {
        let batch_size = batch_size.max(1);
        let columns = schema
            .fields()
            .iter()
            .map(|f| Column::new(f, &opts, batch_size))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            csv: CsvBytes {
                delim: opts.delimiter,
                quote: opts.quote,
                escape: opts.escape,
            },
            header_pending: opts.header,
            schema,
            opts,
            batch_size,
            table: None,
            columns,
            buf: Vec::new(),
            resume: 0,
            in_quote: false,
            eol: None,
            line: 0,
            rows: 0,
            pending: 0,
            batch_first_line: 0,
            ended: false,
            at_eof: false,
            failed: false,
            scratch: Vec::new(),
        })
    }

    /// Names the target table in not-null messages
    /// (`null value in column "x" of relation "t" ...`).
    pub fn with_table_name(mut self, table: impl Into<String>) -> Self {
        self.table = Some(table.into());
        self
    }

    /// Data rows decoded so far (not counting a header).
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Input lines (records) read so far, counting a header.
    pub fn lines(&self) -> u64 {
        self.line
    }

    /// Whether the `\.` end-of-data marker has been seen.
    pub fn saw_end_marker(&self) -> bool {
        self.ended
    }

    /// Feeds the next chunk; returns the batches that became full.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<RecordBatch>, CopyError> {
        if self.failed {
            return Err(CopyError::Poisoned);
        }
        let mut out = Vec::new();
        let r = self.push_inner(chunk, &mut out);
        if let Err(e) = r {
            self.failed = true;
            return Err(e);
        }
        Ok(out)
    }

    fn push_inner(&mut self, chunk: &[u8], out: &mut Vec<RecordBatch>) -> Result<(), CopyError> {
        let mut rest = chunk;
        if !self.buf.is_empty() {
            // Complete the pending record, then go on straight from `chunk`.
            let mut buf = std::mem::take(&mut self.buf);
            let old = buf.len();
            buf.extend_from_slice(chunk);
            let used = self.consume(&buf, out, true)?;
            if self.ended {
                return Ok(());
            }
            if used < old {
                buf.drain(..used);
                self.buf = buf;
                return Ok(());
            }
            rest = &chunk[used - old..];
            buf.clear();
            self.buf = buf;
        }
        let used = self.consume(rest, out, false)?;
        if !self.ended {
            self.buf.extend_from_slice(&rest[used..]);
        }
        Ok(())
    }

    /// Ends the input: decodes a last line without a line ending and returns
    /// the remaining rows (`None` when there are none).
    pub fn finish(mut self) -> Result<Option<RecordBatch>, CopyError> {
        if self.failed {
            return Err(CopyError::Poisoned);
        }
        self.at_eof = true;
        let buf = std::mem::take(&mut self.buf);
        let mut out = Vec::new();
        self.consume(&buf, &mut out, false)?;
        if self.pending == 0 {
            return Ok(out.pop());
        }
        self.flush().map(Some)
    }

    /// Decodes every complete record of `data` (only the first one with
    /// `just_one`); returns the bytes used.
    fn consume(
        &mut self,
        data: &[u8],
        out: &mut Vec<RecordBatch>,
        just_one: bool,
    ) -> Result<usize, CopyError> {
        let mut start = 0;
        while !self.ended {
            let from = start + self.resume;
            let found = match self.opts.format {
                CopyFormat::Text => text::find_record(data, start, from, self.at_eof),
                CopyFormat::Csv => {
                    csv::find_record(data, start, from, &mut self.in_quote, self.csv, self.at_eof)
                }
            };
            match found {
                Found::Record { end, next, eol } => {
                    self.resume = 0;
                    self.in_quote = false;
                    self.check_eol(eol, &data[start..end])?;
                    self.record(&data[start..end], out)?;
                    start = next;
                    if just_one {
                        return Ok(start);
                    }
                }
                Found::NeedMore { resume } => {
                    self.resume = resume - start;
                    return Ok(start);
                }
                Found::Eof => {
                    if start < data.len() {
                        self.record(&data[start..], out)?;
                    }
                    return Ok(data.len());
                }
            }
        }
        Ok(data.len())
    }

    /// The first line ending fixes the style; a different one later is a
    /// stray CR or LF in the data, as in PostgreSQL.
    fn check_eol(&mut self, eol: Eol, line: &[u8]) -> Result<(), CopyError> {
        let style = *self.eol.get_or_insert(eol);
        if style == eol {
            return Ok(());
        }
        let newline = matches!((style, eol), (Eol::CrNl, Eol::Nl) | (Eol::Cr, _));
        let csv = self.opts.format == CopyFormat::Csv;
        let (message, hint) = match (newline, csv) {
            (true, false) => (
                "literal newline found in data",
                "Use \"\\n\" to represent newline.",
            ),
            (false, false) => (
                "literal carriage return found in data",
                "Use \"\\r\" to represent carriage return.",
            ),
            (true, true) => (
                "unquoted newline found in data",
                "Use quoted CSV field to represent newline.",
            ),
            (false, true) => (
                "unquoted carriage return found in data",
                "Use quoted CSV field to represent carriage return.",
            ),
        };
        let mut e = row_error(
            DataErrorKind::BadCopyFileFormat,
            message.to_string(),
            self.line + 1,
            line,
        );
        e.detail = Some(hint.to_string());
        Err(e.into())
    }

    fn record(&mut self, line: &[u8], out: &mut Vec<RecordBatch>) -> Result<(), CopyError> {
        self.line += 1;
        if self.header_pending {
            self.header_pending = false;
            return self.header(line);
        }
        if line == b"\\." {
            self.ended = true;
            return Ok(());
        }
        if self.pending == 0 {
            self.batch_first_line = self.line;
        }
        self.row(line)?;
        self.rows += 1;
        self.pending += 1;
        if self.pending >= self.batch_size && !self.at_eof {
            out.push(self.flush()?);
        }
        Ok(())
    }

    fn split<S: FieldSink>(&mut self, line: &[u8], sink: &mut S) -> Result<usize, SplitError> {
        split_line(&self.opts, self.csv, &mut self.scratch, line, sink)
    }

    fn row(&mut self, line: &[u8]) -> Result<(), CopyError> {
        let lineno = self.line;
        if self.columns.is_empty() {
            if line.is_empty() {
                return Ok(());
            }
            return Err(extra_data(lineno, line));
        }
        let mut columns = std::mem::take(&mut self.columns);
        let mut sink = RowSink {
            columns: &mut columns,
            line: lineno,
            text: line,
            table: self.table.as_deref(),
        };
        let r = split_line(&self.opts, self.csv, &mut self.scratch, line, &mut sink);
        let n_cols = columns.len();
        let missing = match &r {
            Ok(n) if *n < n_cols => Some(columns[*n].name.clone()),
            _ => None,
        };
        self.columns = columns;
        match r {
            Ok(_) => match missing {
                Some(name) => Err(row_error(
                    DataErrorKind::BadCopyFileFormat,
                    format!("missing data for column \"{name}\""),
                    lineno,
                    line,
                )
                .into()),
                None => Ok(()),
            },
            Err(SplitError::Sink(e)) => Err(e),
            Err(SplitError::Format(m)) => Err(row_error(
                DataErrorKind::BadCopyFileFormat,
                m.to_string(),
                lineno,
                line,
            )
            .into()),
        }
    }

    fn header(&mut self, line: &[u8]) -> Result<(), CopyError> {
        if !self.opts.header_match {
            return Ok(());
        }
        let mut names = HeaderSink(Vec::new());
        let n = match self.split(line, &mut names) {
            Ok(n) => n,
            Err(SplitError::Sink(e)) => return Err(e),
            Err(SplitError::Format(m)) => {
                return Err(row_error(
                    DataErrorKind::BadCopyFileFormat,
                    m.to_string(),
                    self.line,
                    line,
                )
                .into())
            }
        };
        let bad = |msg: String| -> CopyError {
            row_error(DataErrorKind::BadCopyFileFormat, msg, self.line, line).into()
        };
        if n != self.columns.len() {
            return Err(bad(format!(
                "wrong number of fields in header line: got {n}, expected {}",
                self.columns.len()
            )));
        }
        for (i, ((got, is_null), col)) in names.0.iter().zip(&self.columns).enumerate() {
            let got = String::from_utf8_lossy(got);
            if *is_null {
                return Err(bad(format!(
                    "column name mismatch in header line field {}: got null value (\"{got}\"), expected \"{}\"",
                    i + 1,
                    col.name
                )));
            }
            if got != col.name.as_str() {
                return Err(bad(format!(
                    "column name mismatch in header line field {}: got \"{got}\", expected \"{}\"",
                    i + 1,
                    col.name
                )));
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<RecordBatch, CopyError> {
        let first_line = self.batch_first_line;
        let arrays = self
            .columns
            .iter_mut()
            .map(|c| c.finish(first_line))
            .collect::<Result<Vec<_>, _>>()?;
        let options = RecordBatchOptions::new().with_row_count(Some(self.pending));
        let batch = RecordBatch::try_new_with_options(self.schema.clone(), arrays, &options)?;
        self.pending = 0;
        Ok(batch)
    }
}

#[inline]
fn split_line<S: FieldSink>(
    opts: &CopyOptions,
    csv: CsvBytes,
    scratch: &mut Vec<u8>,
    line: &[u8],
    sink: &mut S,
) -> Result<usize, SplitError> {
    let null = opts.null.as_bytes();
    match opts.format {
        CopyFormat::Text => text::split_fields(line, opts.delimiter, null, scratch, sink),
        CopyFormat::Csv => csv::split_fields(line, csv, null, scratch, sink),
    }
}

/// A row-level (not column-level) error, echoing the line like PostgreSQL.
fn row_error(kind: DataErrorKind, message: String, line: u64, text: &[u8]) -> DataError {
    DataError {
        kind,
        message,
        detail: None,
        line,
        column: None,
        value: None,
        line_text: Some(String::from_utf8_lossy(text).into_owned()),
    }
}

fn extra_data(line: u64, text: &[u8]) -> CopyError {
    row_error(
        DataErrorKind::BadCopyFileFormat,
        "extra data after last expected column".to_string(),
        line,
        text,
    )
    .into()
}

/// Appends each field of a data line to its column.
struct RowSink<'a> {
    columns: &'a mut [Column],
    line: u64,
    text: &'a [u8],
    table: Option<&'a str>,
}

impl FieldSink for RowSink<'_> {
    #[inline]
    fn field(&mut self, idx: usize, value: &[u8], null: NullMatch) -> Result<(), CopyError> {
        let Some(col) = self.columns.get_mut(idx) else {
            return Err(extra_data(self.line, self.text));
        };
        if col.is_null(null) {
            if !col.nullable {
                let rel = self
                    .table
                    .map(|t| format!(" of relation \"{t}\""))
                    .unwrap_or_default();
                let mut e = row_error(
                    DataErrorKind::NotNullViolation,
                    format!(
                        "null value in column \"{}\"{rel} violates not-null constraint",
                        col.name
                    ),
                    self.line,
                    self.text,
                );
                e.column = Some(col.name.clone());
                return Err(e.into());
            }
            col.append_null();
            return Ok(());
        }
        col.append(value)
            .map_err(|e| value_error(e, self.line, &col.name, value))
    }
}

fn value_error(e: ValueError, line: u64, column: &str, value: &[u8]) -> CopyError {
    DataError {
        kind: e.kind,
        message: e.message,
        detail: e.detail,
        line,
        column: Some(column.to_string()),
        value: Some(String::from_utf8_lossy(value).into_owned()),
        line_text: None,
    }
    .into()
}

/// Collects header names: `(bytes, is NULL marker)`.
struct HeaderSink(Vec<(Vec<u8>, bool)>);

impl FieldSink for HeaderSink {
    fn field(&mut self, _: usize, value: &[u8], null: NullMatch) -> Result<(), CopyError> {
        self.0.push((value.to_vec(), null == NullMatch::Unquoted));
        Ok(())
    }
}
