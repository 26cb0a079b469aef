//! Decode side, CSV format: finding where a record ends (a newline outside
//! quotes) and splitting it into fields, as PostgreSQL's `CopyReadLineText`
//! (CSV mode) and `CopyReadAttributesCSV` do: a quote may open anywhere in a
//! field, the escape byte (default: the quote) escapes a quote or itself
//! inside quotes, and a quoted NULL marker is a value.

use memchr::{memchr, memchr2, memchr3};

use crate::columns::NullMatch;
use crate::record::{Eol, FieldSink, Found, SplitError};

/// Quote and escape bytes, plus the delimiter.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CsvBytes {
    pub delim: u8,
    pub quote: u8,
    pub escape: u8,
}

/// Finds the end of the record starting at `start`, scanning from `from`
/// with the quote state `in_quote` (both carried across calls).
pub(crate) fn find_record(
    data: &[u8],
    start: usize,
    from: usize,
    in_quote: &mut bool,
    b: CsvBytes,
    at_eof: bool,
) -> Found {
    let mut i = from.max(start);
    loop {
        if *in_quote {
            let hit = if b.quote == b.escape {
                memchr(b.quote, &data[i..])
            } else {
                memchr2(b.quote, b.escape, &data[i..])
            };
            let Some(off) = hit else { break };
            let j = i + off;
            if data[j] == b.escape && b.escape != b.quote {
                match data.get(j + 1) {
                    None if !at_eof => return Found::NeedMore { resume: j },
                    Some(&c) if c == b.quote || c == b.escape => i = j + 2,
                    _ => i = j + 1,
                }
            } else {
                *in_quote = false;
                i = j + 1;
            }
        } else {
            let Some(off) = memchr3(b.quote, b'\n', b'\r', &data[i..]) else {
                break;
            };
            let j = i + off;
            match data[j] {
                b'\n' => {
                    return Found::Record {
                        end: j,
                        next: j + 1,
                        eol: Eol::Nl,
                    }
                }
                b'\r' => {
                    return match data.get(j + 1) {
                        Some(b'\n') => Found::Record {
                            end: j,
                            next: j + 2,
                            eol: Eol::CrNl,
                        },
                        None if !at_eof => Found::NeedMore { resume: j },
                        _ => Found::Record {
                            end: j,
                            next: j + 1,
                            eol: Eol::Cr,
                        },
                    }
                }
                _ => {
                    *in_quote = true;
                    i = j + 1;
                }
            }
        }
    }
    if at_eof {
        Found::Eof
    } else {
        Found::NeedMore { resume: data.len() }
    }
}

/// Splits a CSV line into fields and hands each to `sink`. Unquoted fields
/// are passed as slices of `line`; quoted ones are assembled in `scratch`.
#[inline]
pub(crate) fn split_fields<S: FieldSink>(
    line: &[u8],
    b: CsvBytes,
    null: &[u8],
    scratch: &mut Vec<u8>,
    sink: &mut S,
) -> Result<usize, SplitError> {
    let mut idx = 0;
    let mut pos = 0;
    loop {
        let hit = memchr2(b.delim, b.quote, &line[pos..]).map(|o| pos + o);
        let end = match hit {
            Some(j) if line[j] == b.quote => {
                let end = quoted_field(line, pos, j, b, scratch)?;
                let null_match = if scratch.as_slice() == null {
                    NullMatch::Quoted
                } else {
                    NullMatch::No
                };
                sink.field(idx, scratch, null_match)?;
                end
            }
            _ => {
                let end = hit.unwrap_or(line.len());
                let raw = &line[pos..end];
                let null_match = if raw == null {
                    NullMatch::Unquoted
                } else {
                    NullMatch::No
                };
                sink.field(idx, raw, null_match)?;
                end
            }
        };
        idx += 1;
        if end >= line.len() {
            return Ok(idx);
        }
        pos = end + 1;
    }
}

/// Assembles a field that has a quote at `q` into `out`; returns where the
/// field ends (its delimiter or the line end).
fn quoted_field(
    line: &[u8],
    pos: usize,
    q: usize,
    b: CsvBytes,
    out: &mut Vec<u8>,
) -> Result<usize, SplitError> {
    out.clear();
    out.extend_from_slice(&line[pos..q]);
    let mut i = q + 1;
    loop {
        // Inside quotes.
        loop {
            let Some(off) = memchr2(b.quote, b.escape, &line[i..]) else {
                return Err(SplitError::Format("unterminated CSV quoted field"));
            };
            let k = i + off;
            out.extend_from_slice(&line[i..k]);
            let next = line.get(k + 1).copied();
            if line[k] == b.escape && next.is_some_and(|c| c == b.quote || c == b.escape) {
                out.push(line[k + 1]);
                i = k + 2;
            } else if line[k] == b.quote {
                i = k + 1;
                break;
            } else {
                out.push(line[k]);
                i = k + 1;
            }
        }
        // After a closing quote: unquoted text until delimiter or quote.
        match memchr2(b.delim, b.quote, &line[i..]) {
            None => {
                out.extend_from_slice(&line[i..]);
                return Ok(line.len());
            }
            Some(off) => {
                let k = i + off;
                out.extend_from_slice(&line[i..k]);
                if line[k] == b.delim {
                    return Ok(k);
                }
                i = k + 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::CopyError;

    const STD: CsvBytes = CsvBytes {
        delim: b',',
        quote: b'"',
        escape: b'"',
    };

    struct Collect(Vec<(Vec<u8>, NullMatch)>);

    impl FieldSink for Collect {
        fn field(&mut self, _: usize, v: &[u8], n: NullMatch) -> Result<(), CopyError> {
            self.0.push((v.to_vec(), n));
            Ok(())
        }
    }

    fn split(line: &[u8], b: CsvBytes) -> Result<Vec<(String, NullMatch)>, &'static str> {
        let mut c = Collect(Vec::new());
        let mut scratch = Vec::new();
        match split_fields(line, b, b"", &mut scratch, &mut c) {
            Ok(n) => {
                assert_eq!(n, c.0.len());
                Ok(c.0
                    .into_iter()
                    .map(|(v, n)| (String::from_utf8(v).unwrap(), n))
                    .collect())
            }
            Err(SplitError::Format(m)) => Err(m),
            Err(SplitError::Sink(e)) => panic!("{e}"),
        }
    }

    fn vals(line: &str) -> Vec<String> {
        split(line.as_bytes(), STD)
            .unwrap()
            .into_iter()
            .map(|(v, _)| v)
            .collect()
    }

    #[test]
    fn fields() {
        assert_eq!(vals("a,b,c"), ["a", "b", "c"]);
        assert_eq!(vals("\"a,b\",c"), ["a,b", "c"]);
        assert_eq!(vals("\"a\"\"b\""), ["a\"b"]);
        assert_eq!(vals("x\"a,b\"y,z"), ["xa,by", "z"]);
        assert_eq!(vals("\"line\nbreak\""), ["line\nbreak"]);
        assert_eq!(vals(",,"), ["", "", ""]);
        assert_eq!(vals("\"\"\"\""), ["\""]);
        let f = split(b"\"\",", STD).unwrap();
        assert_eq!(f[0].1, NullMatch::Quoted);
        assert_eq!(f[1].1, NullMatch::Unquoted);
        assert_eq!(split(b"\"abc", STD), Err("unterminated CSV quoted field"));
        assert_eq!(
            split(b"\"abc\"\"", STD),
            Err("unterminated CSV quoted field")
        );
        let esc = CsvBytes {
            escape: b'\\',
            ..STD
        };
        let f = split(b"\"a\\\"b\\\\c\\d\",\"\"\"", esc);
        assert_eq!(f, Err("unterminated CSV quoted field"));
        let f = split(b"\"a\\\"b\\\\c\\d\",e", esc).unwrap();
        assert_eq!(f[0].0, "a\"b\\c\\d");
        assert_eq!(f[1].0, "e");
    }

    #[test]
    fn record_ends() {
        let mut q = false;
        let d = b"\"a\nb\",c\nd";
        assert_eq!(
            find_record(d, 0, 0, &mut q, STD, false),
            Found::Record {
                end: 7,
                next: 8,
                eol: Eol::Nl
            }
        );
        assert!(!q);
        let mut q = false;
        assert_eq!(
            find_record(b"\"a\n", 0, 0, &mut q, STD, false),
            Found::NeedMore { resume: 3 }
        );
        assert!(q);
        assert_eq!(
            find_record(b"\"a\nb\"\r\n", 0, 3, &mut q, STD, false),
            Found::Record {
                end: 5,
                next: 7,
                eol: Eol::CrNl
            }
        );
        let esc = CsvBytes {
            escape: b'\\',
            ..STD
        };
        let mut q = false;
        assert_eq!(
            find_record(b"\"a\\", 0, 0, &mut q, esc, false),
            Found::NeedMore { resume: 2 }
        );
        assert_eq!(
            find_record(b"\"a\\\"\n\"\n", 0, 2, &mut q, esc, false),
            Found::Record {
                end: 6,
                next: 7,
                eol: Eol::Nl
            }
        );
    }
}
