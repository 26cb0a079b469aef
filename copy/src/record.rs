//! Types shared by the text and CSV record scanners and field splitters:
//! where a record ends, which line ending it used, and the sink that
//! receives each field.

use crate::columns::NullMatch;
use crate::error::CopyError;

/// A line ending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Eol {
    /// `\n`
    Nl,
    /// `\r`
    Cr,
    /// `\r\n`
    CrNl,
}

/// Result of looking for the end of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Found {
    /// The record's content ends at `end`; the next record starts at `next`.
    Record { end: usize, next: usize, eol: Eol },
    /// The record is not complete; scanning may resume at `resume`.
    NeedMore { resume: usize },
    /// End of input without a line ending: the rest is the last record.
    Eof,
}

/// Why splitting a line failed.
#[derive(Debug)]
pub(crate) enum SplitError {
    /// The sink (a column) rejected a field.
    Sink(CopyError),
    /// The line is malformed (`22P04`), with PostgreSQL's message.
    Format(&'static str),
}

impl From<CopyError> for SplitError {
    fn from(e: CopyError) -> Self {
        Self::Sink(e)
    }
}

/// Receives the fields of one line, in order.
pub(crate) trait FieldSink {
    /// Field `idx` with its (de-escaped) bytes and how it matched NULL.
    fn field(&mut self, idx: usize, value: &[u8], null: NullMatch) -> Result<(), CopyError>;
}
