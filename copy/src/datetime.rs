//! Parsers and formatters for `date` (Arrow `Date32`), `timestamp` /
//! `timestamptz` (Arrow `Timestamp(unit, tz)`) and `time` (`Time64`), in
//! PostgreSQL's ISO text forms with `DateStyle = ISO` output and a UTC
//! session time zone. `infinity`/`-infinity` map to the type's max/min.

use arrow_schema::TimeUnit;

use crate::error::{DataErrorKind, ValueError};

/// Days from 1970-01-01 to a proleptic Gregorian date (year 0 = 1 BC).
pub(crate) fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Inverse of [`days_from_civil`]: `(year, month, day)`.
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if is_leap(y) => 29,
        _ => 28,
    }
}

/// Why a date/time did not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fail {
    Syntax,
    FieldRange,
    Range,
}

/// Julian day 0 (4714-11-24 BC) in days since 1970, PostgreSQL's lower bound.
const MIN_DAYS: i64 = -2_440_588;
/// 5874897-12-31, PostgreSQL's upper date bound.
const MAX_DATE_DAYS: i64 = 2_147_483_494;
/// 294276-12-31, PostgreSQL's upper timestamp date.
const MAX_TS_DAYS: i64 = 106_751_616;

struct Cursor<'a> {
    s: &'a [u8],
    i: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    /// Up to `max` digits as a number, with the count read.
    fn digits(&mut self, max: usize) -> (i64, usize) {
        let mut v = 0i64;
        let mut n = 0;
        while n < max {
            match self.peek() {
                Some(b @ b'0'..=b'9') => {
                    v = v * 10 + i64::from(b - b'0');
                    self.i += 1;
                    n += 1;
                }
                _ => break,
            }
        }
        (v, n)
    }

    fn skip_spaces(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.i += 1;
        }
    }

    fn rest(&self) -> &'a [u8] {
        &self.s[self.i..]
    }

    fn eat_word(&mut self, w: &[u8]) -> bool {
        let r = self.rest();
        if r.len() >= w.len() && r[..w.len()].eq_ignore_ascii_case(w) {
            self.i += w.len();
            true
        } else {
            false
        }
    }

    fn eat_era(&mut self) -> Option<bool> {
        let save = self.i;
        self.skip_spaces();
        if self.eat_word(b"BC") {
            return Some(true);
        }
        if self.eat_word(b"AD") {
            return Some(false);
        }
        self.i = save;
        None
    }
}

/// Parses `Y-M-D` (or `YYYYMMDD`) into days since 1970, validating fields.
fn parse_date_part(c: &mut Cursor<'_>) -> Result<i64, Fail> {
    let (y, yn) = c.digits(9);
    if yn == 0 {
        return Err(Fail::Syntax);
    }
    let (y, m, d) = if c.eat(b'-') {
        let (m, mn) = c.digits(2);
        if mn == 0 || !c.eat(b'-') {
            return Err(Fail::Syntax);
        }
        let (d, dn) = c.digits(2);
        if dn == 0 {
            return Err(Fail::Syntax);
        }
        (y, m, d)
    } else if yn == 8 {
        (y / 10_000, (y / 100) % 100, y % 100)
    } else {
        return Err(Fail::Syntax);
    };
    let bc = c.eat_era();
    if y == 0 || !(1..=12).contains(&m) {
        return Err(Fail::FieldRange);
    }
    let year = if bc == Some(true) { 1 - y } else { y };
    let (m, d) = (m as u32, d as u32);
    if d == 0 || d > days_in_month(year, m) {
        return Err(Fail::FieldRange);
    }
    Ok(days_from_civil(year, m, d))
}

/// Parses `HH:MM[:SS[.frac]]` into seconds of day plus fraction in
/// `10^-digits` units (rounded half up; may equal `10^digits`).
fn parse_time_part(c: &mut Cursor<'_>, frac_digits: u32) -> Result<(i64, i64), Fail> {
    let (h, hn) = c.digits(2);
    if hn == 0 || !c.eat(b':') {
        return Err(Fail::Syntax);
    }
    let (mi, mn) = c.digits(2);
    if mn != 2 {
        return Err(Fail::Syntax);
    }
    let mut sec = 0;
    let mut frac = 0i64;
    if c.eat(b':') {
        let (s, sn) = c.digits(2);
        if sn != 2 {
            return Err(Fail::Syntax);
        }
        sec = s;
        if c.eat(b'.') {
            let mut n = 0u32;
            let mut round_up = false;
            while let Some(b @ b'0'..=b'9') = c.peek() {
                if n < frac_digits {
                    frac = frac * 10 + i64::from(b - b'0');
                } else if n == frac_digits {
                    round_up = b >= b'5';
                }
                n += 1;
                c.i += 1;
            }
            if n < frac_digits {
                frac *= 10i64.pow(frac_digits - n);
            }
            if round_up {
                frac += 1;
            }
        }
    }
    if h > 24 || mi > 59 || sec > 60 || (h == 24 && (mi > 0 || sec > 0 || frac > 0)) {
        return Err(Fail::FieldRange);
    }
    Ok((h * 3600 + mi * 60 + sec, frac))
}

/// Parses a zone suffix: `Z`, `UTC`, `GMT`, `+HH`, `+HHMM`, `+HH:MM[:SS]`.
/// Returns seconds east of UTC.
fn parse_zone(c: &mut Cursor<'_>) -> Result<Option<i64>, Fail> {
    let save = c.i;
    c.skip_spaces();
    if c.eat_word(b"UTC") || c.eat_word(b"GMT") || c.eat(b'Z') || c.eat(b'z') {
        return Ok(Some(0));
    }
    let sign = match c.peek() {
        Some(b'+') => 1,
        Some(b'-') => -1,
        _ => {
            c.i = save;
            return Ok(None);
        }
    };
    c.i += 1;
    let (v, n) = c.digits(6);
    let (h, m, s) = match n {
        1 | 2 => {
            if c.eat(b':') {
                let (m, mn) = c.digits(2);
                if mn != 2 {
                    return Err(Fail::Syntax);
                }
                let s = if c.eat(b':') {
                    let (s, sn) = c.digits(2);
                    if sn != 2 {
                        return Err(Fail::Syntax);
                    }
                    s
                } else {
                    0
                };
                (v, m, s)
            } else {
                (v, 0, 0)
            }
        }
        4 => (v / 100, v % 100, 0),
        6 => (v / 10_000, (v / 100) % 100, v % 100),
        _ => return Err(Fail::Syntax),
    };
    if h > 15 || m > 59 || s > 59 {
        return Err(Fail::FieldRange);
    }
    Ok(Some(sign * (h * 3600 + m * 60 + s)))
}

/// Fraction digits kept for a unit.
fn unit_digits(unit: TimeUnit) -> u32 {
    match unit {
        TimeUnit::Second => 0,
        TimeUnit::Millisecond => 3,
        TimeUnit::Microsecond => 6,
        TimeUnit::Nanosecond => 9,
    }
}

fn unit_per_sec(unit: TimeUnit) -> i64 {
    10i64.pow(unit_digits(unit))
}

fn dt_error(fail: Fail, type_name: &str, what: &str, s: &[u8]) -> ValueError {
    let v = String::from_utf8_lossy(s);
    match fail {
        Fail::Syntax => ValueError::new(
            DataErrorKind::InvalidDatetimeFormat,
            format!("invalid input syntax for type {type_name}: \"{v}\""),
        ),
        Fail::FieldRange => ValueError::new(
            DataErrorKind::DatetimeFieldOverflow,
            format!("date/time field value out of range: \"{v}\""),
        ),
        Fail::Range => ValueError::new(
            DataErrorKind::DatetimeFieldOverflow,
            format!("{what} out of range: \"{v}\""),
        ),
    }
}

fn special(t: &[u8]) -> Option<i8> {
    if t.eq_ignore_ascii_case(b"infinity") || t.eq_ignore_ascii_case(b"+infinity") {
        Some(1)
    } else if t.eq_ignore_ascii_case(b"-infinity") {
        Some(-1)
    } else if t.eq_ignore_ascii_case(b"epoch") {
        Some(0)
    } else {
        None
    }
}

/// Parses `date` input into days since 1970 (`Date32`).
pub(crate) fn parse_date(s: &[u8]) -> Result<i32, ValueError> {
    // Fast path: exactly YYYY-MM-DD.
    if let [y0, y1, y2, y3, b'-', m0, m1, b'-', d0, d1] = *s {
        let ds = [y0, y1, y2, y3, m0, m1, d0, d1];
        if ds.iter().all(u8::is_ascii_digit) {
            let n = |i: usize| i64::from(ds[i] - b'0');
            let y = n(0) * 1000 + n(1) * 100 + n(2) * 10 + n(3);
            let m = (n(4) * 10 + n(5)) as u32;
            let d = (n(6) * 10 + n(7)) as u32;
            if y > 0 && (1..=12).contains(&m) && d >= 1 && d <= days_in_month(y, m) {
                return Ok(days_from_civil(y, m, d) as i32);
            }
            return Err(dt_error(Fail::FieldRange, "date", "date", s));
        }
    }
    parse_date_slow(s).map_err(|f| dt_error(f, "date", "date", s))
}

fn parse_date_slow(s: &[u8]) -> Result<i32, Fail> {
    let t = crate::numeric::trim(s);
    match special(t) {
        Some(1) => return Ok(i32::MAX),
        Some(-1) => return Ok(i32::MIN),
        Some(_) => return Ok(0),
        None => {}
    }
    let mut c = Cursor { s: t, i: 0 };
    let days = parse_date_part(&mut c)?;
    // A time part is allowed and ignored.
    if c.eat(b'T') || c.eat(b't') || matches!(c.peek(), Some(b' ')) {
        c.skip_spaces();
        if c.peek().is_some() {
            parse_time_part(&mut c, 6)?;
            parse_zone(&mut c)?;
            c.eat_era();
        }
    }
    if c.i != t.len() {
        return Err(Fail::Syntax);
    }
    if !(MIN_DAYS..=MAX_DATE_DAYS).contains(&days) {
        return Err(Fail::Range);
    }
    i32::try_from(days).map_err(|_| Fail::Range)
}

/// Parses `timestamp` (`with_tz = false`, zone ignored as PostgreSQL does)
/// or `timestamptz` (zone applied; none means UTC) in `unit` ticks.
pub fn parse_timestamp(s: &[u8], unit: TimeUnit, with_tz: bool) -> Result<i64, ValueError> {
    let name = if with_tz {
        "timestamp with time zone"
    } else {
        "timestamp"
    };
    parse_timestamp_inner(s, unit, with_tz).map_err(|f| dt_error(f, name, "timestamp", s))
}

fn parse_timestamp_inner(s: &[u8], unit: TimeUnit, with_tz: bool) -> Result<i64, Fail> {
    let t = crate::numeric::trim(s);
    match special(t) {
        Some(1) => return Ok(i64::MAX),
        Some(-1) => return Ok(i64::MIN),
        Some(_) => return Ok(0),
        None => {}
    }
    let mut c = Cursor { s: t, i: 0 };
    let days = parse_date_part(&mut c)?;
    let mut secs = 0;
    let mut frac = 0;
    let mut zone = None;
    let digits = unit_digits(unit);
    if c.eat(b'T') || c.eat(b't') || matches!(c.peek(), Some(b' ')) {
        c.skip_spaces();
        if c.peek().is_some() {
            (secs, frac) = parse_time_part(&mut c, digits)?;
            zone = parse_zone(&mut c)?;
            if let Some(bc) = c.eat_era() {
                // Era after the time: re-interpret the date's year.
                if bc {
                    let (y, m, d) = civil_from_days(days);
                    let days_bc = days_from_civil(1 - y, m, d);
                    return finish_ts(days_bc, secs, frac, zone, unit, with_tz, &c);
                }
            }
        }
    }
    finish_ts(days, secs, frac, zone, unit, with_tz, &c)
}

fn finish_ts(
    days: i64,
    secs: i64,
    frac: i64,
    zone: Option<i64>,
    unit: TimeUnit,
    with_tz: bool,
    c: &Cursor<'_>,
) -> Result<i64, Fail> {
    if c.i != c.s.len() {
        return Err(Fail::Syntax);
    }
    if !(MIN_DAYS..=MAX_TS_DAYS).contains(&days) {
        return Err(Fail::Range);
    }
    let offset = if with_tz { zone.unwrap_or(0) } else { 0 };
    let per = unit_per_sec(unit);
    let total_secs = days * 86_400 + secs - offset;
    total_secs
        .checked_mul(per)
        .and_then(|v| v.checked_add(frac))
        .ok_or(Fail::Range)
}

/// Parses `time` input into `Time64` ticks of `unit`.
pub(crate) fn parse_time(s: &[u8], unit: TimeUnit) -> Result<i64, ValueError> {
    let t = crate::numeric::trim(s);
    let mut c = Cursor { s: t, i: 0 };
    let r = parse_time_part(&mut c, unit_digits(unit)).and_then(|(secs, frac)| {
        if c.i != t.len() {
            return Err(Fail::Syntax);
        }
        let v = secs * unit_per_sec(unit) + frac;
        if v > 86_400 * unit_per_sec(unit) {
            return Err(Fail::FieldRange);
        }
        Ok(v)
    });
    r.map_err(|f| dt_error(f, "time without time zone", "time", s))
}

fn push2(out: &mut Vec<u8>, v: u32) {
    out.push(b'0' + (v / 10 % 10) as u8);
    out.push(b'0' + (v % 10) as u8);
}

fn push_year(out: &mut Vec<u8>, y: i64) {
    if (0..10_000).contains(&y) {
        let y = y as u32;
        push2(out, y / 100);
        push2(out, y % 100);
    } else {
        crate::numeric::format_int(y, out);
    }
}

fn push_ymd(out: &mut Vec<u8>, days: i64) -> bool {
    let (y, m, d) = civil_from_days(days);
    let bc = y <= 0;
    push_year(out, if bc { 1 - y } else { y });
    out.push(b'-');
    push2(out, m);
    out.push(b'-');
    push2(out, d);
    bc
}

/// Appends a `Date32` value as `YYYY-MM-DD` (with ` BC` before year 1).
pub(crate) fn format_date(days: i32, out: &mut Vec<u8>) {
    match days {
        i32::MAX => out.extend_from_slice(b"infinity"),
        i32::MIN => out.extend_from_slice(b"-infinity"),
        _ => {
            if push_ymd(out, i64::from(days)) {
                out.extend_from_slice(b" BC");
            }
        }
    }
}

/// Appends `HH:MM:SS[.fff]` with trailing fraction zeros removed.
fn push_time(out: &mut Vec<u8>, secs_of_day: i64, frac: i64, digits: u32) {
    let h = (secs_of_day / 3600) as u32;
    push2(out, h);
    out.push(b':');
    push2(out, (secs_of_day / 60 % 60) as u32);
    out.push(b':');
    push2(out, (secs_of_day % 60) as u32);
    push_fraction(out, frac, digits);
}

/// Appends `.ddd` for a non-zero fraction, trailing zeros trimmed.
pub(crate) fn push_fraction(out: &mut Vec<u8>, frac: i64, digits: u32) {
    if frac == 0 || digits == 0 {
        return;
    }
    let mut buf = [b'0'; 9];
    let mut f = frac;
    for i in (0..digits as usize).rev() {
        buf[i] = b'0' + (f % 10) as u8;
        f /= 10;
    }
    let mut n = digits as usize;
    while n > 0 && buf[n - 1] == b'0' {
        n -= 1;
    }
    out.push(b'.');
    out.extend_from_slice(&buf[..n]);
}

/// Appends a timestamp in `unit` ticks as PostgreSQL's ISO output; with
/// `with_tz` the UTC offset `+00` follows.
pub(crate) fn format_timestamp(v: i64, unit: TimeUnit, with_tz: bool, out: &mut Vec<u8>) {
    format_timestamp_at(v, unit, with_tz.then_some(0), out)
}

/// Appends a timestamp in `unit` ticks as PostgreSQL's ISO output. With an
/// offset (seconds east of UTC) `v` is a UTC instant shown as wall time at
/// that offset, followed by it (`+09`, `-03:30`); without, `v` is shown as
/// it is.
pub fn format_timestamp_at(v: i64, unit: TimeUnit, offset: Option<i32>, out: &mut Vec<u8>) {
    match v {
        i64::MAX => return out.extend_from_slice(b"infinity"),
        i64::MIN => return out.extend_from_slice(b"-infinity"),
        _ => {}
    }
    let per = unit_per_sec(unit);
    let secs = v.div_euclid(per) + i64::from(offset.unwrap_or(0));
    let frac = v.rem_euclid(per);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let bc = push_ymd(out, days);
    out.push(b' ');
    push_time(out, sod, frac, unit_digits(unit));
    if let Some(off) = offset {
        out.push(if off < 0 { b'-' } else { b'+' });
        let a = off.unsigned_abs();
        let (h, m, s) = (a / 3600, a / 60 % 60, a % 60);
        out.extend_from_slice(format!("{h:02}").as_bytes());
        if m != 0 || s != 0 {
            out.extend_from_slice(format!(":{m:02}").as_bytes());
        }
        if s != 0 {
            out.extend_from_slice(format!(":{s:02}").as_bytes());
        }
    }
    if bc {
        out.extend_from_slice(b" BC");
    }
}

/// Appends a `Time64`/`Time32` value as `HH:MM:SS[.ffffff]`.
pub fn format_time(v: i64, unit: TimeUnit, out: &mut Vec<u8>) {
    let per = unit_per_sec(unit);
    push_time(out, v.div_euclid(per), v.rem_euclid(per), unit_digits(unit));
}

#[cfg(test)]
mod tests {
    use super::*;

    const US: TimeUnit = TimeUnit::Microsecond;

    fn ts(s: &str) -> i64 {
        parse_timestamp(s.as_bytes(), US, false).unwrap()
    }

    fn tstz(s: &str) -> i64 {
        parse_timestamp(s.as_bytes(), US, true).unwrap()
    }

    fn fmt_ts(v: i64, tz: bool) -> String {
        let mut o = Vec::new();
        format_timestamp(v, US, tz, &mut o);
        String::from_utf8(o).unwrap()
    }

    fn fmt_date(v: i32) -> String {
        let mut o = Vec::new();
        format_date(v, &mut o);
        String::from_utf8(o).unwrap()
    }

    #[test]
    fn civil_round_trip() {
        for z in (-1_000_000..1_000_000).step_by(997) {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
        }
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(-4713, 11, 24), MIN_DAYS);
    }

    #[test]
    fn dates() {
        assert_eq!(parse_date(b"1970-01-01").unwrap(), 0);
        assert_eq!(parse_date(b"2024-02-29").unwrap(), 19_782);
        assert_eq!(parse_date(b" 2024-2-9 ").unwrap(), 19_762);
        assert_eq!(parse_date(b"20240229").unwrap(), 19_782);
        assert_eq!(parse_date(b"2024-02-29 13:14:15").unwrap(), 19_782);
        assert_eq!(parse_date(b"2024-02-29T13:14").unwrap(), 19_782);
        assert_eq!(parse_date(b"infinity").unwrap(), i32::MAX);
        assert_eq!(parse_date(b"-infinity").unwrap(), i32::MIN);
        assert_eq!(
            parse_date(b"0044-03-15 BC").unwrap(),
            days_from_civil(-43, 3, 15) as i32
        );
        assert_eq!(fmt_date(0), "1970-01-01");
        assert_eq!(fmt_date(19_782), "2024-02-29");
        assert_eq!(
            fmt_date(days_from_civil(-43, 3, 15) as i32),
            "0044-03-15 BC"
        );
        assert_eq!(fmt_date(days_from_civil(12345, 1, 2) as i32), "12345-01-02");
        assert_eq!(fmt_date(i32::MAX), "infinity");
        let e = parse_date(b"2023-02-29").unwrap_err();
        assert_eq!(e.kind.sqlstate(), "22008");
        assert_eq!(
            e.message,
            "date/time field value out of range: \"2023-02-29\""
        );
        assert_eq!(
            parse_date(b"2024-13-01").unwrap_err().kind.sqlstate(),
            "22008"
        );
        assert_eq!(
            parse_date(b"0000-01-01").unwrap_err().kind.sqlstate(),
            "22008"
        );
        assert_eq!(
            parse_date(b"6000000-01-01").unwrap_err().kind.sqlstate(),
            "22008"
        );
        for bad in [
            "",
            "abc",
            "2024-01",
            "2024/01/01",
            "2024-01-01x",
            "2024-01-01 25:00",
        ] {
            let e = parse_date(bad.as_bytes()).unwrap_err();
            assert!(
                e.kind.sqlstate() == "22007" || e.kind.sqlstate() == "22008",
                "{bad}"
            );
        }
        assert_eq!(
            parse_date(b"abc").unwrap_err().message,
            "invalid input syntax for type date: \"abc\""
        );
    }

    #[test]
    fn timestamps() {
        let base = 1_704_164_645_000_000; // 2024-01-02 03:04:05 UTC
        assert_eq!(ts("2024-01-02 03:04:05"), base);
        assert_eq!(ts("2024-01-02T03:04:05"), base);
        assert_eq!(ts("2024-01-02 03:04:05.123456"), base + 123_456);
        assert_eq!(ts("2024-01-02 03:04:05.1"), base + 100_000);
        assert_eq!(ts("2024-01-02 03:04:05.1234567"), base + 123_457);
        assert_eq!(ts("2024-01-02 03:04:05.9999996"), base + 1_000_000);
        assert_eq!(ts("2024-01-02 03:04"), base - 5_000_000);
        assert_eq!(ts("2024-01-02"), base - 11_045_000_000);
        assert_eq!(ts("2024-01-02 03:04:05+02"), base);
        assert_eq!(tstz("2024-01-02 03:04:05+02"), base - 7_200_000_000);
        assert_eq!(tstz("2024-01-02 03:04:05-05:30"), base + 19_800_000_000);
        assert_eq!(tstz("2024-01-02T03:04:05Z"), base);
        assert_eq!(tstz("2024-01-02 03:04:05 UTC"), base);
        assert_eq!(
            tstz("2024-01-02 03:04:05.5+0100"),
            base - 3_600_000_000 + 500_000
        );
        assert_eq!(ts("2024-01-01 24:00:00"), ts("2024-01-02"));
        assert_eq!(ts("infinity"), i64::MAX);
        assert_eq!(ts("-infinity"), i64::MIN);
        assert_eq!(ts("epoch"), 0);
        assert_eq!(
            parse_timestamp(
                b"2024-01-02 03:04:05.123456789",
                TimeUnit::Nanosecond,
                false
            )
            .unwrap(),
            1_704_164_645_123_456_789
        );
        assert_eq!(
            parse_timestamp(b"2024-01-02 03:04:05.5", TimeUnit::Second, false).unwrap(),
            1_704_164_646
        );
        assert_eq!(fmt_ts(base, false), "2024-01-02 03:04:05");
        assert_eq!(fmt_ts(base + 123_456, false), "2024-01-02 03:04:05.123456");
        assert_eq!(fmt_ts(base + 120_000, true), "2024-01-02 03:04:05.12+00");
        assert_eq!(fmt_ts(-1, false), "1969-12-31 23:59:59.999999");
        assert_eq!(fmt_ts(i64::MIN, true), "-infinity");
        let bc = ts("0044-03-15 12:00:00 BC");
        assert_eq!(fmt_ts(bc, false), "0044-03-15 12:00:00 BC");
        assert_eq!(ts("0044-03-15 BC 12:00:00"), bc);
        assert_eq!(fmt_ts(bc, true), "0044-03-15 12:00:00+00 BC");
        let e = parse_timestamp(b"2024-01-02 25:00:00", US, false).unwrap_err();
        assert_eq!(e.kind.sqlstate(), "22008");
        let e = parse_timestamp(b"nope", US, true).unwrap_err();
        assert_eq!(e.kind.sqlstate(), "22007");
        assert_eq!(
            e.message,
            "invalid input syntax for type timestamp with time zone: \"nope\""
        );
        let e = parse_timestamp(b"300000-01-01", US, false).unwrap_err();
        assert_eq!(e.message, "timestamp out of range: \"300000-01-01\"");
        assert_eq!(
            parse_timestamp(b"2500-01-01", TimeUnit::Nanosecond, false)
                .unwrap_err()
                .kind
                .sqlstate(),
            "22008"
        );
        for bad in [
            "2024-01-02 3",
            "2024-01-02 03:4",
            "2024-01-02 03:04:05+",
            "2024-01-02 x",
        ] {
            assert!(parse_timestamp(bad.as_bytes(), US, true).is_err(), "{bad}");
        }
    }

    #[test]
    fn times() {
        assert_eq!(parse_time(b"03:04:05.25", US).unwrap(), 11_045_250_000);
        assert_eq!(parse_time(b"24:00:00", US).unwrap(), 86_400_000_000);
        assert!(parse_time(b"24:00:01", US).is_err());
        let mut o = Vec::new();
        format_time(11_045_250_000, US, &mut o);
        assert_eq!(o, b"03:04:05.25");
    }
}
