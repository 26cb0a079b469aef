//! Errors of the COPY codec, shaped so the frontend can build a PostgreSQL
//! `ErrorResponse` from them: every error has a SQLSTATE, data errors carry
//! the input line number, the column and the offending value, and
//! [`DataError::context`] renders PostgreSQL's `CONTEXT` line.

use arrow_schema::{ArrowError, DataType};
use thiserror::Error;

/// SQLSTATE codes used by this crate.
pub mod sqlstate {
    /// `syntax_error`: unknown or repeated COPY option.
    pub const SYNTAX_ERROR: &str = "42601";
    /// `invalid_parameter_value`: bad option value, bad bytea hex digit.
    pub const INVALID_PARAMETER_VALUE: &str = "22023";
    /// `feature_not_supported`: binary format, multi-byte delimiter, column type.
    pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
    /// `invalid_text_representation`: a value that does not parse.
    pub const INVALID_TEXT_REPRESENTATION: &str = "22P02";
    /// `bad_copy_file_format`: wrong column count, broken quoting, stray CR/LF.
    pub const BAD_COPY_FILE_FORMAT: &str = "22P04";
    /// `not_null_violation`: NULL for a non-nullable column.
    pub const NOT_NULL_VIOLATION: &str = "23502";
    /// `numeric_value_out_of_range`.
    pub const NUMERIC_VALUE_OUT_OF_RANGE: &str = "22003";
    /// `invalid_datetime_format`.
    pub const INVALID_DATETIME_FORMAT: &str = "22007";
    /// `datetime_field_overflow`.
    pub const DATETIME_FIELD_OVERFLOW: &str = "22008";
    /// `interval_field_overflow`.
    pub const INTERVAL_FIELD_OVERFLOW: &str = "22015";
    /// `character_not_in_repertoire`: input that is not valid UTF-8.
    pub const CHARACTER_NOT_IN_REPERTOIRE: &str = "22021";
    /// `program_limit_exceeded`.
    pub const PROGRAM_LIMIT_EXCEEDED: &str = "54000";
    /// `internal_error`.
    pub const INTERNAL_ERROR: &str = "XX000";
}

/// Longest value or line echoed in a `CONTEXT` (PostgreSQL uses 100 bytes).
const MAX_DISPLAY: usize = 100;

/// What kind of data error happened; decides the SQLSTATE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataErrorKind {
    /// `22P02`: the text is not a value of the column type.
    InvalidTextRepresentation,
    /// `22P04`: the COPY data itself is malformed.
    BadCopyFileFormat,
    /// `23502`: NULL into a non-nullable column.
    NotNullViolation,
    /// `22003`: a number outside the column type's range.
    NumericValueOutOfRange,
    /// `22007`: a date/time value that does not parse.
    InvalidDatetimeFormat,
    /// `22008`: a date/time field outside its range.
    DatetimeFieldOverflow,
    /// `22015`: an interval outside the representable range.
    IntervalFieldOverflow,
    /// `22023`: e.g. a bad hexadecimal digit in bytea input.
    InvalidParameterValue,
    /// `22021`: bytes that are not valid UTF-8.
    CharacterNotInRepertoire,
    /// `54000`: e.g. more string data in one batch than its offsets can address.
    ProgramLimitExceeded,
}

impl DataErrorKind {
    /// The five-character SQLSTATE for this kind.
    pub fn sqlstate(self) -> &'static str {
        match self {
            Self::InvalidTextRepresentation => sqlstate::INVALID_TEXT_REPRESENTATION,
            Self::BadCopyFileFormat => sqlstate::BAD_COPY_FILE_FORMAT,
            Self::NotNullViolation => sqlstate::NOT_NULL_VIOLATION,
            Self::NumericValueOutOfRange => sqlstate::NUMERIC_VALUE_OUT_OF_RANGE,
            Self::InvalidDatetimeFormat => sqlstate::INVALID_DATETIME_FORMAT,
            Self::DatetimeFieldOverflow => sqlstate::DATETIME_FIELD_OVERFLOW,
            Self::IntervalFieldOverflow => sqlstate::INTERVAL_FIELD_OVERFLOW,
            Self::InvalidParameterValue => sqlstate::INVALID_PARAMETER_VALUE,
            Self::CharacterNotInRepertoire => sqlstate::CHARACTER_NOT_IN_REPERTOIRE,
            Self::ProgramLimitExceeded => sqlstate::PROGRAM_LIMIT_EXCEEDED,
        }
    }
}

/// A value that failed to parse, before it is tied to a line and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueError {
    /// Decides the SQLSTATE.
    pub kind: DataErrorKind,
    /// PostgreSQL-style primary message.
    pub message: String,
    /// Optional `DETAIL`.
    pub detail: Option<String>,
}

impl ValueError {
    pub(crate) fn new(kind: DataErrorKind, message: String) -> Self {
        Self {
            kind,
            message,
            detail: None,
        }
    }

    pub(crate) fn with_detail(mut self, detail: String) -> Self {
        self.detail = Some(detail);
        self
    }

    /// `invalid input syntax for type <ty>: "<value>"`.
    pub(crate) fn syntax(kind: DataErrorKind, type_name: &str, value: &[u8]) -> Self {
        Self::new(
            kind,
            format!(
                "invalid input syntax for type {type_name}: \"{}\"",
                String::from_utf8_lossy(value)
            ),
        )
    }
}

/// A data error tied to its position in the COPY stream.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{message}")]
pub struct DataError {
    /// Decides the SQLSTATE.
    pub kind: DataErrorKind,
    /// PostgreSQL-style primary message.
    pub message: String,
    /// Optional `DETAIL`.
    pub detail: Option<String>,
    /// 1-based input line (record) number, counting a header line.
    pub line: u64,
    /// Column the error is about, when there is one.
    pub column: Option<String>,
    /// The offending field (after de-escaping); `None` for NULL or row errors.
    pub value: Option<String>,
    /// The raw input line, for row-level errors (column count, quoting).
    pub line_text: Option<String>,
}

impl DataError {
    /// PostgreSQL's `CONTEXT` for this error, e.g.
    /// `COPY t, line 3, column x: "abc"` or `COPY t, line 2: "1,2,3"`.
    pub fn context(&self, table: &str) -> String {
        match (&self.column, &self.value, &self.line_text) {
            (Some(col), Some(v), _) => {
                format!(
                    "COPY {table}, line {}, column {col}: \"{}\"",
                    self.line,
                    clip(v)
                )
            }
            (Some(col), None, None) => {
                format!("COPY {table}, line {}, column {col}: null input", self.line)
            }
            (_, _, Some(text)) => format!("COPY {table}, line {}: \"{}\"", self.line, clip(text)),
            _ => format!("COPY {table}, line {}", self.line),
        }
    }
}

fn clip(s: &str) -> String {
    if s.len() <= MAX_DISPLAY {
        return s.to_string();
    }
    let mut end = MAX_DISPLAY;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// Everything that can go wrong in this crate.
#[derive(Debug, Error)]
pub enum CopyError {
    /// A COPY option is unknown, repeated, or has a bad value.
    #[error("{message}")]
    InvalidOption {
        /// `42601`, `22023` or `0A000`, as PostgreSQL reports it.
        sqlstate: &'static str,
        /// PostgreSQL-style message.
        message: String,
    },
    /// The target schema has a column type this codec cannot handle.
    #[error("COPY does not support column \"{column}\" of type {data_type}")]
    UnsupportedType {
        /// Column name.
        column: String,
        /// Its Arrow type.
        data_type: DataType,
    },
    /// Bad input data, with its line, column and value.
    #[error(transparent)]
    Data(Box<DataError>),
    /// The decoder was used again after it returned an error.
    #[error("COPY decoder cannot continue after an earlier error")]
    Poisoned,
    /// Building an Arrow array failed (should not happen).
    #[error("arrow error in COPY: {0}")]
    Arrow(#[from] ArrowError),
}

impl CopyError {
    /// The five-character SQLSTATE to report to the client.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            Self::InvalidOption { sqlstate, .. } => sqlstate,
            Self::UnsupportedType { .. } => sqlstate::FEATURE_NOT_SUPPORTED,
            Self::Data(e) => e.kind.sqlstate(),
            Self::Poisoned | Self::Arrow(_) => sqlstate::INTERNAL_ERROR,
        }
    }

    /// The data error, when this is one.
    pub fn data(&self) -> Option<&DataError> {
        match self {
            Self::Data(e) => Some(e),
            _ => None,
        }
    }

    /// PostgreSQL `DETAIL`, when there is one.
    pub fn detail(&self) -> Option<&str> {
        self.data().and_then(|e| e.detail.as_deref())
    }

    pub(crate) fn option(sqlstate: &'static str, message: impl Into<String>) -> Self {
        Self::InvalidOption {
            sqlstate,
            message: message.into(),
        }
    }
}

impl From<DataError> for CopyError {
    fn from(e: DataError) -> Self {
        Self::Data(Box::new(e))
    }
}
