//! Decode side, text format: finding where a record ends (a newline not
//! escaped by a backslash) and splitting it into fields with PostgreSQL's
//! backslash escapes (`\b \f \n \r \t \v \\`, octal `\123`, hex `\x41`),
//! as `CopyReadLineText` and `CopyReadAttributesText` do.

use memchr::{memchr, memchr2, memchr3};

use crate::columns::NullMatch;
use crate::record::{Eol, FieldSink, Found, SplitError};

/// Finds the end of the record starting at `start`, scanning from `from`
/// (a resume point never inside an escape pair). At EOF a trailing CR is an
/// end of line and a trailing backslash is data.
pub(crate) fn find_record(data: &[u8], start: usize, from: usize, at_eof: bool) -> Found {
    let mut i = from.max(start);
    while let Some(off) = memchr3(b'\\', b'\n', b'\r', &data[i..]) {
        let j = i + off;
        match data[j] {
            b'\\' => {
                if j + 1 >= data.len() {
                    if at_eof {
                        break;
                    }
                    return Found::NeedMore { resume: j };
                }
                i = j + 2;
            }
            b'\n' => {
                return Found::Record {
                    end: j,
                    next: j + 1,
                    eol: Eol::Nl,
                }
            }
            _ => match data.get(j + 1) {
                Some(b'\n') => {
                    return Found::Record {
                        end: j,
                        next: j + 2,
                        eol: Eol::CrNl,
                    }
                }
                None if !at_eof => return Found::NeedMore { resume: j },
                _ => {
                    return Found::Record {
                        end: j,
                        next: j + 1,
                        eol: Eol::Cr,
                    }
                }
            },
        }
    }
    if at_eof {
        Found::Eof
    } else {
        Found::NeedMore { resume: data.len() }
    }
}

/// Splits a text-format line into fields, de-escaping into `scratch` only
/// when a field has a backslash, and hands each to `sink`.
#[inline]
pub(crate) fn split_fields<S: FieldSink>(
    line: &[u8],
    delim: u8,
    null: &[u8],
    scratch: &mut Vec<u8>,
    sink: &mut S,
) -> Result<usize, SplitError> {
    let mut idx = 0;
    let mut pos = 0;
    loop {
        let mut j = pos;
        let mut escaped = false;
        let end = loop {
            match memchr2(delim, b'\\', &line[j..]) {
                None => break line.len(),
                Some(o) if line[j + o] == delim => break j + o,
                Some(o) => {
                    escaped = true;
                    j = (j + o + 2).min(line.len());
                }
            }
        };
        let raw = &line[pos..end];
        if raw == null {
            sink.field(idx, raw, NullMatch::Unquoted)?;
        } else if escaped {
            unescape(raw, scratch).map_err(|at| {
                if pos + at == 0 {
                    SplitError::Format("end-of-copy marker corrupt")
                } else {
                    SplitError::Format("end-of-copy marker is not alone on its line")
                }
            })?;
            sink.field(idx, scratch, NullMatch::No)?;
        } else {
            sink.field(idx, raw, NullMatch::No)?;
        }
        idx += 1;
        if end >= line.len() {
            return Ok(idx);
        }
        pos = end + 1;
    }
}

fn octal(b: Option<&u8>) -> Option<u8> {
    match b {
        Some(&c @ b'0'..=b'7') => Some(c - b'0'),
        _ => None,
    }
}

fn hex(b: Option<&u8>) -> Option<u8> {
    match b {
        Some(&c @ b'0'..=b'9') => Some(c - b'0'),
        Some(&c @ b'a'..=b'f') => Some(c - b'a' + 10),
        Some(&c @ b'A'..=b'F') => Some(c - b'A' + 10),
        _ => None,
    }
}

/// De-escapes a text-format field into `out`. `Err(offset)` for `\.`.
pub(crate) fn unescape(raw: &[u8], out: &mut Vec<u8>) -> Result<(), usize> {
    out.clear();
    let mut i = 0;
    while let Some(off) = memchr(b'\\', &raw[i..]) {
        let k = i + off;
        out.extend_from_slice(&raw[i..k]);
        let Some(&c) = raw.get(k + 1) else {
            // A lone trailing backslash is dropped, as PostgreSQL does.
            return Ok(());
        };
        i = k + 2;
        let byte = match c {
            b'0'..=b'7' => {
                let mut v = c - b'0';
                for _ in 0..2 {
                    match octal(raw.get(i)) {
                        Some(d) => {
                            v = v.wrapping_shl(3) | d;
                            i += 1;
                        }
                        None => break,
                    }
                }
                v
            }
            b'x' => match hex(raw.get(i)) {
                Some(h) => {
                    i += 1;
                    match hex(raw.get(i)) {
                        Some(l) => {
                            i += 1;
                            (h << 4) | l
                        }
                        None => h,
                    }
                }
                None => b'x',
            },
            b'b' => 0x08,
            b'f' => 0x0c,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'v' => 0x0b,
            b'.' => return Err(k),
            other => other,
        };
        out.push(byte);
    }
    out.extend_from_slice(&raw[i..]);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn un(s: &[u8]) -> Vec<u8> {
        let mut o = Vec::new();
        unescape(s, &mut o).unwrap();
        o
    }

    #[test]
    fn escapes() {
        assert_eq!(un(b"plain"), b"plain");
        assert_eq!(un(b"a\\tb\\nc\\\\d"), b"a\tb\nc\\d");
        assert_eq!(un(b"\\b\\f\\r\\v"), b"\x08\x0c\r\x0b");
        assert_eq!(un(b"\\101\\0\\7x"), b"A\0\x07x");
        assert_eq!(un(b"\\1011"), b"A1");
        assert_eq!(un(b"\\x41\\x4g\\xz"), b"A\x04gxz");
        assert_eq!(un(b"\\N\\q\\,"), b"Nq,");
        assert_eq!(un(b"end\\"), b"end");
        assert_eq!(un(b"\\377"), b"\xff");
        let mut o = Vec::new();
        assert_eq!(unescape(b"ab\\.", &mut o), Err(2));
    }

    #[test]
    fn record_ends() {
        let d = b"a\\\nb\nc";
        assert_eq!(
            find_record(d, 0, 0, false),
            Found::Record {
                end: 4,
                next: 5,
                eol: Eol::Nl
            }
        );
        assert_eq!(find_record(d, 5, 5, false), Found::NeedMore { resume: 6 });
        assert_eq!(find_record(d, 5, 5, true), Found::Eof);
        assert_eq!(
            find_record(b"ab\\", 0, 0, false),
            Found::NeedMore { resume: 2 }
        );
        assert_eq!(
            find_record(b"ab\r", 0, 0, false),
            Found::NeedMore { resume: 2 }
        );
        assert_eq!(
            find_record(b"ab\r", 0, 0, true),
            Found::Record {
                end: 2,
                next: 3,
                eol: Eol::Cr
            }
        );
        assert_eq!(
            find_record(b"ab\r\nx", 0, 0, false),
            Found::Record {
                end: 2,
                next: 4,
                eol: Eol::CrNl
            }
        );
    }
}
