//! Cutting a COPY input stream into chunks of whole records, so that chunks
//! can be decoded on several threads at once.
//!
//! A record ends at a line feed that is not inside a CSV quoted field. In
//! the text format a line feed inside a value is always escaped (`\n`), so
//! every raw line feed ends a record. In CSV the splitter follows the quote
//! state across pushes. Input with bare carriage-return line endings has no
//! line feed to cut at and stays in one chunk: correct, only not parallel.
//!
//! Each chunk is then decoded by its own [`CopyDecoder`](crate::CopyDecoder)
//! made with [`CopyOptions::for_chunk`]; [`CopyError::shift_lines`] turns
//! the chunk's line numbers into the input's.

use crate::error::CopyError;
use crate::options::{CopyFormat, CopyOptions};

/// Splits COPY input into chunks of whole records of about `target` bytes.
#[derive(Debug)]
pub struct RecordSplitter {
    csv: bool,
    quote: u8,
    escape: u8,
    target: usize,
    buf: Vec<u8>,
    /// Bytes of `buf` already scanned.
    scanned: usize,
    /// End (after the line feed) of the last complete record in `buf`.
    boundary: usize,
    in_quote: bool,
    /// The next byte is escaped (CSV, inside quotes).
    escaped: bool,
}

impl RecordSplitter {
    /// A splitter for input in the format `opts` describes.
    pub fn new(opts: &CopyOptions, target: usize) -> Self {
        RecordSplitter {
            csv: opts.format == CopyFormat::Csv,
            quote: opts.quote,
            escape: opts.escape,
            target: target.max(1),
            buf: Vec::new(),
            scanned: 0,
            boundary: 0,
            in_quote: false,
            escaped: false,
        }
    }

    /// Adds input; returns a chunk of whole records once at least `target`
    /// bytes of them are buffered.
    pub fn push(&mut self, data: &[u8]) -> Option<Vec<u8>> {
        self.buf.extend_from_slice(data);
        if self.buf.len() < self.target {
            return None;
        }
        self.scan();
        if self.boundary == 0 {
            return None;
        }
        let rest = self.buf.split_off(self.boundary);
        let chunk = std::mem::replace(&mut self.buf, rest);
        self.scanned -= self.boundary;
        self.boundary = 0;
        Some(chunk)
    }

    /// The input left at the end (possibly a last record without a line
    /// ending).
    pub fn finish(&mut self) -> Vec<u8> {
        self.scanned = 0;
        self.boundary = 0;
        std::mem::take(&mut self.buf)
    }

    fn scan(&mut self) {
        let new = &self.buf[self.scanned..];
        if !self.csv {
            if let Some(p) = new.iter().rposition(|&b| b == b'\n') {
                self.boundary = self.scanned + p + 1;
            }
            self.scanned = self.buf.len();
            return;
        }
        for (i, &b) in new.iter().enumerate() {
            if self.in_quote {
                if self.escaped {
                    self.escaped = false;
                } else if b == self.escape && self.escape != self.quote {
                    self.escaped = true;
                } else if b == self.quote {
                    self.in_quote = false;
                }
            } else if b == self.quote {
                self.in_quote = true;
            } else if b == b'\n' {
                self.boundary = self.scanned + i + 1;
            }
        }
        self.scanned = self.buf.len();
    }
}

impl CopyOptions {
    /// Options for decoding a chunk that does not start the input: no
    /// header line to skip or match.
    pub fn for_chunk(&self, first: bool) -> CopyOptions {
        let mut o = self.clone();
        if !first {
            o.header = false;
            o.header_match = false;
        }
        o
    }
}

impl CopyError {
    /// Adds `lines` to the line number of a data error (for a chunk that
    /// starts after `lines` records of input).
    pub fn shift_lines(mut self, lines: u64) -> CopyError {
        if let CopyError::Data(d) = &mut self {
            d.line += lines;
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split_all(opts: &CopyOptions, input: &[u8], piece: usize, target: usize) -> Vec<Vec<u8>> {
        let mut s = RecordSplitter::new(opts, target);
        let mut out = Vec::new();
        for p in input.chunks(piece) {
            out.extend(s.push(p));
        }
        out.push(s.finish());
        out
    }

    #[test]
    fn text_cuts_after_line_feeds_only() {
        let input = b"1\tone\n2\ttwo\\nstill two\n3\tthree\n4\tfour";
        let chunks = split_all(&CopyOptions::text(), input, 3, 8);
        assert_eq!(chunks.concat(), input.to_vec());
        for c in &chunks[..chunks.len() - 1] {
            assert_eq!(c.last(), Some(&b'\n'));
        }
        assert!(chunks.len() > 2);
    }

    #[test]
    fn csv_keeps_quoted_newlines_inside_a_chunk() {
        let input = b"1,\"a\nb\"\n2,\"c\"\"\nd\"\n3,e\n";
        let opts = CopyOptions::parse(&[("format".into(), Some("csv".into()))]).unwrap();
        for piece in 1..6 {
            let chunks = split_all(&opts, input, piece, 1);
            assert_eq!(chunks.concat(), input.to_vec());
            let cuts: Vec<usize> = chunks
                .iter()
                .scan(0, |acc, c| {
                    *acc += c.len();
                    Some(*acc)
                })
                .collect();
            for cut in &cuts[..cuts.len() - 1] {
                assert!(
                    [8usize, 18, 22].contains(cut),
                    "cut at {cut} with pieces of {piece}"
                );
            }
        }
    }

    #[test]
    fn csv_escape_other_than_quote() {
        let input = b"1,\"a\\\"\nb\"\n2,c\n";
        let opts = CopyOptions::parse(&[
            ("format".into(), Some("csv".into())),
            ("escape".into(), Some("\\".into())),
        ])
        .unwrap();
        let chunks = split_all(&opts, input, 1, 1);
        assert_eq!(chunks[0], b"1,\"a\\\"\nb\"\n".to_vec());
    }

    #[test]
    fn chunk_options_drop_the_header() {
        let opts = CopyOptions::parse(&[("header".into(), Some("true".into()))]).unwrap();
        assert!(opts.for_chunk(true).header);
        assert!(!opts.for_chunk(false).header);
    }
}
