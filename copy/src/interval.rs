//! `interval` text (Arrow `Interval(MonthDayNano)`): input in PostgreSQL's
//! `postgres` style (`1 year 2 mons 3 days 04:05:06`, `@ 1 hour ago`,
//! unit abbreviations, fractional units), SQL-standard (`1-2`, `3 4:05:06`)
//! and ISO 8601 (`P1Y2M3DT4H5M6S`); output in `IntervalStyle = postgres`.

use arrow_array::types::IntervalMonthDayNano;

use crate::datetime::push_fraction;
use crate::error::{DataErrorKind, ValueError};

const NS_PER_US: i128 = 1_000;
const NS_PER_MS: i128 = 1_000_000;
const NS_PER_SEC: i128 = 1_000_000_000;
const NS_PER_MIN: i128 = 60 * NS_PER_SEC;
const NS_PER_HOUR: i128 = 60 * NS_PER_MIN;
const NS_PER_DAY: i128 = 24 * NS_PER_HOUR;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    Micro,
    Milli,
    Second,
    Minute,
    Hour,
    Day,
    Week,
    Month,
    Year,
    Decade,
    Century,
    Millennium,
}

fn unit_of(word: &str) -> Option<Unit> {
    let w = word.to_ascii_lowercase();
    Some(match w.as_str() {
        "microsecond" | "microseconds" | "usec" | "usecs" | "us" | "microsecon" => Unit::Micro,
        "millisecond" | "milliseconds" | "msec" | "msecs" | "ms" | "millisecon" => Unit::Milli,
        "second" | "seconds" | "sec" | "secs" | "s" => Unit::Second,
        "minute" | "minutes" | "min" | "mins" | "m" => Unit::Minute,
        "hour" | "hours" | "hr" | "hrs" | "h" => Unit::Hour,
        "day" | "days" | "d" => Unit::Day,
        "week" | "weeks" | "w" => Unit::Week,
        "month" | "months" | "mon" | "mons" => Unit::Month,
        "year" | "years" | "yr" | "yrs" | "y" => Unit::Year,
        "decade" | "decades" | "dec" | "decs" => Unit::Decade,
        "century" | "centuries" | "cent" | "c" => Unit::Century,
        "millennium" | "millennia" | "mil" | "mils" => Unit::Millennium,
        _ => return None,
    })
}

/// Accumulated interval, wide enough to detect overflow at the end.
#[derive(Default)]
struct Acc {
    months: i64,
    days: i64,
    nanos: i128,
}

impl Acc {
    /// Adds `value` (`int` whole units plus `frac` of one) of `unit`.
    fn add(&mut self, unit: Unit, int: i64, frac: f64) {
        let nanos_of = |per: i128| i128::from(int) * per + (frac * per as f64).round() as i128;
        match unit {
            Unit::Micro => self.nanos += nanos_of(NS_PER_US),
            Unit::Milli => self.nanos += nanos_of(NS_PER_MS),
            Unit::Second => self.nanos += nanos_of(NS_PER_SEC),
            Unit::Minute => self.nanos += nanos_of(NS_PER_MIN),
            Unit::Hour => self.nanos += nanos_of(NS_PER_HOUR),
            Unit::Day => {
                self.days = self.days.saturating_add(int);
                self.nanos += (frac * NS_PER_DAY as f64).round() as i128;
            }
            Unit::Week => {
                self.days = self.days.saturating_add(int.saturating_mul(7));
                self.add_frac_days(frac * 7.0);
            }
            Unit::Month => {
                self.months = self.months.saturating_add(int);
                self.add_frac_days(frac * 30.0);
            }
            Unit::Year | Unit::Decade | Unit::Century | Unit::Millennium => {
                let years = match unit {
                    Unit::Decade => 10,
                    Unit::Century => 100,
                    Unit::Millennium => 1000,
                    _ => 1,
                };
                let whole = int.saturating_mul(12 * years);
                let part = (frac * 12.0 * years as f64).round() as i64;
                self.months = self.months.saturating_add(whole).saturating_add(part);
            }
        }
    }

    fn add_frac_days(&mut self, days: f64) {
        let whole = days.trunc();
        self.days = self.days.saturating_add(whole as i64);
        self.nanos += ((days - whole) * NS_PER_DAY as f64).round() as i128;
    }

    fn negate(&mut self) {
        self.months = -self.months;
        self.days = -self.days;
        self.nanos = -self.nanos;
    }

    fn finish(self) -> Option<IntervalMonthDayNano> {
        Some(IntervalMonthDayNano {
            months: i32::try_from(self.months).ok()?,
            days: i32::try_from(self.days).ok()?,
            nanoseconds: i64::try_from(self.nanos).ok()?,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fail {
    Syntax,
    Overflow,
}

/// A signed decimal number: whole part and fraction (same sign).
fn parse_number(s: &str) -> Result<(i64, f64), Fail> {
    let (neg, body) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let (ip, fp) = body.split_once('.').unwrap_or((body, ""));
    if (ip.is_empty() && fp.is_empty())
        || !ip.bytes().all(|b| b.is_ascii_digit())
        || !fp.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(Fail::Syntax);
    }
    let int: i64 = if ip.is_empty() {
        0
    } else {
        ip.parse().map_err(|_| Fail::Overflow)?
    };
    let frac: f64 = if fp.is_empty() {
        0.0
    } else {
        format!("0.{fp}").parse().map_err(|_| Fail::Syntax)?
    };
    Ok(if neg { (-int, -frac) } else { (int, frac) })
}

/// `[+-]H:MM[:SS[.f]]` as nanoseconds.
fn parse_clock(s: &str) -> Result<i128, Fail> {
    let (neg, body) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let mut parts = body.split(':');
    let h = parts.next().ok_or(Fail::Syntax)?;
    let m = parts.next().ok_or(Fail::Syntax)?;
    let sec = parts.next();
    if parts.next().is_some() || h.is_empty() || !h.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Fail::Syntax);
    }
    if m.len() > 2 || m.is_empty() || !m.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Fail::Syntax);
    }
    let h: i128 = h.parse().map_err(|_| Fail::Overflow)?;
    let m: i128 = m.parse().map_err(|_| Fail::Syntax)?;
    let mut nanos = h * NS_PER_HOUR + m * NS_PER_MIN;
    if let Some(sec) = sec {
        let (si, sf) = parse_number(sec)?;
        if sec.starts_with(['-', '+']) || si >= 60 || m >= 60 {
            return Err(if sec.starts_with(['-', '+']) {
                Fail::Syntax
            } else {
                Fail::Overflow
            });
        }
        nanos += i128::from(si) * NS_PER_SEC + (sf * NS_PER_SEC as f64).round() as i128;
    } else if m >= 60 {
        return Err(Fail::Overflow);
    }
    Ok(if neg { -nanos } else { nanos })
}

/// Splits `12days` into `("12", "days")`.
fn split_number_unit(tok: &str) -> (&str, &str) {
    let at = tok
        .char_indices()
        .find(|&(_, c)| c.is_ascii_alphabetic())
        .map_or(tok.len(), |(i, _)| i);
    tok.split_at(at)
}

fn parse_postgres(t: &str) -> Result<Acc, Fail> {
    let t = t.strip_prefix('@').unwrap_or(t).trim_start();
    let toks: Vec<&str> = t.split_ascii_whitespace().collect();
    if toks.is_empty() {
        return Err(Fail::Syntax);
    }
    let mut acc = Acc::default();
    let mut i = 0;
    let mut ago = false;
    while i < toks.len() {
        let tok = toks[i];
        i += 1;
        if tok.eq_ignore_ascii_case("ago") {
            if i != toks.len() || ago {
                return Err(Fail::Syntax);
            }
            ago = true;
            continue;
        }
        if tok.contains(':') {
            acc.nanos += parse_clock(tok)?;
            continue;
        }
        // SQL-standard year-month `Y-M`.
        let year_month = tok
            .get(1..)
            .and_then(|r| r.split_once('-'))
            .map(|(a, b)| (&tok[..a.len() + 1], b));
        if let Some((y, m)) = year_month {
            if !m.is_empty() && m.bytes().all(|b| b.is_ascii_digit()) {
                let (y, _) = parse_number(y)?;
                let m: i64 = m.parse().map_err(|_| Fail::Syntax)?;
                if m > 11 {
                    return Err(Fail::Overflow);
                }
                let sign = if tok.starts_with('-') { -1 } else { 1 };
                acc.months = acc.months.saturating_add(y.saturating_mul(12) + sign * m);
                continue;
            }
        }
        let (num, unit) = split_number_unit(tok);
        let (int, frac) = parse_number(num)?;
        let unit = if !unit.is_empty() {
            Some(unit)
        } else if i < toks.len() && unit_of(toks[i]).is_some() {
            i += 1;
            Some(toks[i - 1])
        } else {
            None
        };
        match unit {
            Some(u) => acc.add(unit_of(u).ok_or(Fail::Syntax)?, int, frac),
            // A bare number before a clock is days, alone at the end seconds.
            None if i < toks.len() && toks[i].contains(':') => acc.add(Unit::Day, int, frac),
            None if i == toks.len() => acc.add(Unit::Second, int, frac),
            None => return Err(Fail::Syntax),
        }
    }
    if ago {
        acc.negate();
    }
    Ok(acc)
}

fn parse_iso(t: &str) -> Result<Acc, Fail> {
    let body = &t[1..];
    let mut acc = Acc::default();
    let mut in_time = false;
    let mut num_start = 0;
    let mut any = false;
    for (i, c) in body.char_indices() {
        match c.to_ascii_uppercase() {
            'T' if !in_time && num_start == i => {
                in_time = true;
                num_start = i + 1;
            }
            '0'..='9' | '.' | '-' | '+' => {}
            u @ ('Y' | 'M' | 'W' | 'D' | 'H' | 'S') => {
                let (int, frac) = parse_number(&body[num_start..i])?;
                let unit = match (u, in_time) {
                    ('Y', false) => Unit::Year,
                    ('M', false) => Unit::Month,
                    ('W', false) => Unit::Week,
                    ('D', false) => Unit::Day,
                    ('H', true) => Unit::Hour,
                    ('M', true) => Unit::Minute,
                    ('S', true) => Unit::Second,
                    _ => return Err(Fail::Syntax),
                };
                acc.add(unit, int, frac);
                num_start = i + 1;
                any = true;
            }
            _ => return Err(Fail::Syntax),
        }
    }
    if !any || num_start != body.len() {
        return Err(Fail::Syntax);
    }
    Ok(acc)
}

/// Parses `interval` input.
pub fn parse_interval(s: &[u8]) -> Result<IntervalMonthDayNano, ValueError> {
    let err = |f: Fail| {
        let v = String::from_utf8_lossy(s);
        match f {
            Fail::Syntax => ValueError::new(
                DataErrorKind::InvalidDatetimeFormat,
                format!("invalid input syntax for type interval: \"{v}\""),
            ),
            Fail::Overflow => ValueError::new(
                DataErrorKind::IntervalFieldOverflow,
                format!("interval field value out of range: \"{v}\""),
            ),
        }
    };
    let t = std::str::from_utf8(crate::numeric::trim(s)).map_err(|_| err(Fail::Syntax))?;
    let acc = if t.starts_with(['P', 'p']) {
        parse_iso(t)
    } else {
        parse_postgres(t)
    }
    .map_err(err)?;
    acc.finish().ok_or_else(|| err(Fail::Overflow))
}

fn push_part(out: &mut Vec<u8>, value: i64, unit: &str, is_zero: &mut bool, is_before: &mut bool) {
    if value == 0 {
        return;
    }
    if !*is_zero {
        out.push(b' ');
    }
    if *is_before && value > 0 {
        out.push(b'+');
    }
    crate::numeric::format_int(value, out);
    out.push(b' ');
    out.extend_from_slice(unit.as_bytes());
    if value != 1 {
        out.push(b's');
    }
    *is_before = value < 0;
    *is_zero = false;
}

/// Appends an interval as PostgreSQL prints it with `IntervalStyle = postgres`.
pub(crate) fn format_interval(v: IntervalMonthDayNano, out: &mut Vec<u8>) {
    let mut is_zero = true;
    let mut is_before = false;
    let years = v.months / 12;
    let mons = v.months % 12;
    push_part(out, i64::from(years), "year", &mut is_zero, &mut is_before);
    push_part(out, i64::from(mons), "mon", &mut is_zero, &mut is_before);
    push_part(out, i64::from(v.days), "day", &mut is_zero, &mut is_before);
    let ns = i128::from(v.nanoseconds);
    if is_zero || ns != 0 {
        if !is_zero {
            out.push(b' ');
        }
        if ns < 0 {
            out.push(b'-');
        } else if is_before {
            out.push(b'+');
        }
        let a = ns.unsigned_abs();
        let hours = a / NS_PER_HOUR as u128;
        let mins = (a / NS_PER_MIN as u128) % 60;
        let secs = (a / NS_PER_SEC as u128) % 60;
        let frac = (a % NS_PER_SEC as u128) as i64;
        if hours < 10 {
            out.push(b'0');
        }
        crate::numeric::format_int(hours as i64, out);
        out.push(b':');
        out.push(b'0' + (mins / 10) as u8);
        out.push(b'0' + (mins % 10) as u8);
        out.push(b':');
        out.push(b'0' + (secs / 10) as u8);
        out.push(b'0' + (secs % 10) as u8);
        push_fraction(out, frac, 9);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iv(months: i32, days: i32, nanoseconds: i64) -> IntervalMonthDayNano {
        IntervalMonthDayNano {
            months,
            days,
            nanoseconds,
        }
    }

    fn p(s: &str) -> IntervalMonthDayNano {
        parse_interval(s.as_bytes()).unwrap_or_else(|e| panic!("{s}: {e:?}"))
    }

    fn f(v: IntervalMonthDayNano) -> String {
        let mut o = Vec::new();
        format_interval(v, &mut o);
        String::from_utf8(o).unwrap()
    }

    const S: i64 = 1_000_000_000;

    #[test]
    fn parse_forms() {
        assert_eq!(p("1 day 02:03:04"), iv(0, 1, 7384 * S));
        assert_eq!(p("3 mons"), iv(3, 0, 0));
        assert_eq!(p("1 year 2 mons"), iv(14, 0, 0));
        assert_eq!(
            p("1 year 2 mons 3 days 04:05:06.5"),
            iv(14, 3, 14_706 * S + S / 2)
        );
        assert_eq!(p("@ 1 hour ago"), iv(0, 0, -3600 * S));
        assert_eq!(p("2 weeks"), iv(0, 14, 0));
        assert_eq!(p("1.5 days"), iv(0, 1, 43_200 * S));
        assert_eq!(p("1.5 years"), iv(18, 0, 0));
        assert_eq!(p("1.5 mons"), iv(1, 15, 0));
        assert_eq!(p("10 min 5 sec"), iv(0, 0, 605 * S));
        assert_eq!(p("3h 2m"), iv(0, 0, 10_920 * S));
        assert_eq!(p("5"), iv(0, 0, 5 * S));
        assert_eq!(p("1-2"), iv(14, 0, 0));
        assert_eq!(p("3 4:05:06"), iv(0, 3, 14_706 * S));
        assert_eq!(p("-1 days +02:00:00"), iv(0, -1, 7200 * S));
        assert_eq!(p("-00:00:01.5"), iv(0, 0, -S - S / 2));
        assert_eq!(p("100:00:00"), iv(0, 0, 360_000 * S));
        assert_eq!(p("1 millisecond 1 microsecond"), iv(0, 0, 1_001_000));
        assert_eq!(p("1 decade 1 century"), iv(1320, 0, 0));
        assert_eq!(p("P1Y2M3DT4H5M6S"), iv(14, 3, 14_706 * S));
        assert_eq!(p("P1DT2H"), iv(0, 1, 7200 * S));
        assert_eq!(p("PT0.5S"), iv(0, 0, S / 2));
        assert_eq!(p("P2W"), iv(0, 14, 0));
    }

    #[test]
    fn parse_errors() {
        for bad in [
            "",
            "abc",
            "1 fortnight",
            "P",
            "PT",
            "P1H",
            "1 day ago ago",
            "1 2",
            "1:2:3:4",
        ] {
            let e = parse_interval(bad.as_bytes()).unwrap_err();
            assert_eq!(e.kind.sqlstate(), "22007", "{bad}");
        }
        let e = parse_interval(b"3000000000 days").unwrap_err();
        assert_eq!(e.kind.sqlstate(), "22015");
        assert_eq!(
            e.message,
            "interval field value out of range: \"3000000000 days\""
        );
        assert_eq!(
            parse_interval(b"1-13").unwrap_err().kind.sqlstate(),
            "22015"
        );
        let huge = "9223372036854775807 days 9223372036854775807 days 9223372036854775807 years";
        assert_eq!(
            parse_interval(huge.as_bytes()).unwrap_err().kind.sqlstate(),
            "22015"
        );
        assert_eq!(
            parse_interval(b"xyz").unwrap_err().message,
            "invalid input syntax for type interval: \"xyz\""
        );
    }

    #[test]
    fn format_postgres_style() {
        assert_eq!(f(iv(0, 0, 0)), "00:00:00");
        assert_eq!(f(iv(0, 1, 7384 * S)), "1 day 02:03:04");
        assert_eq!(f(iv(3, 0, 0)), "3 mons");
        assert_eq!(f(iv(14, 3, 14_706 * S)), "1 year 2 mons 3 days 04:05:06");
        assert_eq!(f(iv(12, 0, 0)), "1 year");
        assert_eq!(f(iv(-14, 0, 0)), "-1 years -2 mons");
        assert_eq!(f(iv(0, -1, 7200 * S)), "-1 days +02:00:00");
        assert_eq!(f(iv(1, -1, 0)), "1 mon -1 days");
        assert_eq!(f(iv(0, 0, -3600 * S)), "-01:00:00");
        assert_eq!(f(iv(0, 0, 360_000 * S)), "100:00:00");
        assert_eq!(f(iv(0, 0, 1_500_000)), "00:00:00.0015");
        assert_eq!(f(iv(0, 2, S / 2)), "2 days 00:00:00.5");
        for s in [
            "1 year 2 mons 3 days 04:05:06.789",
            "-1 days +02:00:00",
            "-1 years -2 mons",
            "00:00:00",
        ] {
            assert_eq!(f(p(s)), s);
        }
    }
}
