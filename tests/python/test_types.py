"""Common PostgreSQL types round-trip through tables, in text and binary, with the right OIDs."""

import datetime as dt
import math
from decimal import Decimal, localcontext

import psycopg
import pytest
from psycopg.types.json import Json
from psycopg.types.string import TextLoader

UTC = dt.timezone.utc

# (column, SQL type, type OID, a value, the PostgreSQL text output of that value)
TYPES = [
    ("b", "BOOLEAN", 16, True, "t"),
    ("i2", "SMALLINT", 21, -32768, "-32768"),
    ("i4", "INTEGER", 23, 2147483647, "2147483647"),
    ("i8", "BIGINT", 20, -9223372036854775808, "-9223372036854775808"),
    ("f4", "REAL", 700, 1.5, "1.5"),
    ("f8", "DOUBLE PRECISION", 701, 3.141592653589793, "3.141592653589793"),
    ("n", "NUMERIC(20,6)", 1700, Decimal("-12345678901234.123456"), "-12345678901234.123456"),
    ("t", "TEXT", 25, 'héllo\n"world"\t\\ ☃', 'héllo\n"world"\t\\ ☃'),
    ("vc", "VARCHAR(20)", 1043, "abc", "abc"),
    ("c", "CHAR(5)", 1042, "ab", "ab   "),
    ("d", "DATE", 1082, dt.date(2024, 2, 29), "2024-02-29"),
    ("ts", "TIMESTAMP", 1114, dt.datetime(2024, 2, 29, 13, 14, 15, 123456), "2024-02-29 13:14:15.123456"),
    ("tz", "TIMESTAMPTZ", 1184, dt.datetime(2024, 2, 29, 13, 14, 15, 123456, tzinfo=UTC), "2024-02-29 13:14:15.123456+00"),
    ("iv", "INTERVAL", 1186, dt.timedelta(days=3, hours=4, minutes=5, seconds=6, microseconds=7), "3 days 04:05:06.000007"),
    ("by", "BYTEA", 17, b"\x00\x01\xfe\xffabc", "\\x0001feff616263"),
    ("j", "JSON", 114, {"a": [1, 2, {"b": None}], "c": "d"}, '{"a": [1, 2, {"b": null}], "c": "d"}'),
]
COLS = ", ".join(c for c, *_ in TYPES)

# what comes back for the value we put in
EXPECTED = {c: v for c, _, _, v, _ in TYPES}
EXPECTED["c"] = "ab   "  # char(n) is blank-padded


def _create(conn, tname):
    conn.execute("SET TimeZone = 'UTC'")
    cols = ", ".join(f"{c} {t}" for c, t, *_ in TYPES)
    conn.execute(f"CREATE TABLE {tname} (id INT PRIMARY KEY, {cols})")


def _param(col, value):
    return Json(value) if col == "j" else value


@pytest.mark.parametrize("binary", [False, True], ids=["text", "binary"])
def test_round_trip_with_parameters(conn, tname, binary):
    _create(conn, tname)
    ph = "%b" if binary else "%s"
    placeholders = ", ".join([ph] * (len(TYPES) + 1))
    cur = conn.cursor(binary=binary)
    cur.execute(f"INSERT INTO {tname} (id, {COLS}) VALUES ({placeholders})",
                [1] + [_param(c, v) for c, _, _, v, _ in TYPES])
    cur.execute(f"INSERT INTO {tname} (id) VALUES ({ph})", [2])
    cur.execute(f"SELECT id, {COLS} FROM {tname} ORDER BY id")
    oids = [d.type_code for d in cur.description]
    assert oids == [23] + [oid for _, _, oid, _, _ in TYPES]
    rows = cur.fetchall()
    assert len(rows) == 2
    got = dict(zip(["id"] + [c for c, *_ in TYPES], rows[0]))
    for c, *_ in TYPES:
        assert got[c] == EXPECTED[c], f"column {c}: got {got[c]!r}, expected {EXPECTED[c]!r}"
    assert rows[1] == (2,) + (None,) * len(TYPES)


@pytest.mark.parametrize("binary", [False, True], ids=["text", "binary"])
def test_round_trip_with_literals(conn, tname, binary):
    _create(conn, tname)
    literals = ", ".join("'" + text.replace("'", "''") + "'::" + t for _, t, _, _, text in TYPES)
    conn.execute(f"INSERT INTO {tname} (id, {COLS}) VALUES (1, {literals})")
    cur = conn.cursor(binary=binary)
    cur.execute(f"SELECT {COLS} FROM {tname} WHERE id = 1")
    assert [d.type_code for d in cur.description] == [oid for _, _, oid, _, _ in TYPES]
    row = cur.fetchone()
    for (c, *_), v in zip(TYPES, row):
        assert v == EXPECTED[c], f"column {c}: got {v!r}, expected {EXPECTED[c]!r}"


def test_text_output_format(conn, tname):
    """The exact text a PostgreSQL server sends for each type (drivers parse these strings)."""
    _create(conn, tname)
    cur = conn.cursor()
    cur.execute(f"INSERT INTO {tname} (id, {COLS}) VALUES (1, {', '.join(['%b'] * len(TYPES))})",
                [_param(c, v) for c, _, _, v, _ in TYPES])
    raw = conn.cursor()
    for _, _, oid, _, _ in TYPES:
        raw.adapters.register_loader(oid, TextLoader)
    raw.execute(f"SELECT {COLS} FROM {tname} WHERE id = 1")
    row = raw.fetchone()
    for (c, _, _, _, text), v in zip(TYPES, row):
        if c == "j":  # json keeps the input text; compare as JSON
            import json
            assert json.loads(v) == EXPECTED["j"]
        else:
            assert v == text, f"column {c}: server sent {v!r}, PostgreSQL sends {text!r}"


@pytest.mark.parametrize("binary", [False, True], ids=["text", "binary"])
def test_special_floats_and_extremes(conn, tname, binary):
    conn.execute(f"CREATE TABLE {tname} (id INT, f8 DOUBLE PRECISION, f4 REAL, d DATE, n NUMERIC)")
    ph = "%b" if binary else "%s"
    cur = conn.cursor(binary=binary)
    rows = [
        (1, math.inf, -math.inf, dt.date(1, 1, 1), Decimal("0")),
        (2, -0.0, 1e-30, dt.date(9999, 12, 31), Decimal("123456789012345678901234567890.123456789")),
        (3, 1e308, 3.4e38, dt.date(1970, 1, 1), Decimal("-0.000001")),
    ]
    cur.executemany(f"INSERT INTO {tname} VALUES ({ph}, {ph}, {ph}, {ph}, {ph})", rows)
    cur.execute(f"INSERT INTO {tname} VALUES (4, 'NaN', 'NaN', NULL, NULL)")
    cur.execute(f"SELECT id, f8, f4, d, n FROM {tname} ORDER BY id")
    got = cur.fetchall()
    assert got[0] == (1, math.inf, -math.inf, dt.date(1, 1, 1), Decimal("0"))
    assert got[1][0] == 2 and got[1][1] == 0.0 and math.copysign(1, got[1][1]) == -1.0
    assert got[1][2] == pytest.approx(1e-30, rel=1e-6)
    assert got[1][3:] == (dt.date(9999, 12, 31), Decimal("123456789012345678901234567890.123456789"))
    assert got[2][1] == 1e308 and got[2][2] == pytest.approx(3.4e38, rel=1e-6)
    assert got[2][3:] == (dt.date(1970, 1, 1), Decimal("-0.000001"))
    assert got[3][0] == 4 and math.isnan(got[3][1]) and math.isnan(got[3][2]) and got[3][3:] == (None, None)


@pytest.mark.parametrize("binary", [False, True], ids=["text", "binary"])
def test_expression_result_types(conn, binary):
    cur = conn.cursor(binary=binary)
    cur.execute("SELECT 1::int2 + 1::int2, 2::int4 * 3, 2::int8 * 3, 1.5::float8 / 2, "
                "'a'::text || 'b', DATE '2024-01-31' + 1, 7 / 2, 7 % 3, 'x' = 'x', NULL::int4")
    assert [d.type_code for d in cur.description] == [21, 23, 20, 701, 25, 1082, 23, 23, 16, 23]
    assert cur.fetchone() == (2, 6, 6, 0.75, "ab", dt.date(2024, 2, 1), 3, 1, True, None)


def test_char_and_varchar_lengths(conn, tname):
    """character(n) is blank-padded on output, compares without its trailing blanks, and
    both it and varchar(n) refuse longer values (22001) unless the excess is blanks."""
    conn.execute(f"CREATE TABLE {tname} (id INT, c CHAR(4), v VARCHAR(3))")
    conn.execute(f"INSERT INTO {tname} VALUES (1, 'ab', 'xy'), (2, 'abcd   ', 'xyz  '), (3, NULL, NULL)")
    assert conn.execute(f"SELECT id, c, v FROM {tname} ORDER BY id").fetchall() == [
        (1, "ab  ", "xy"), (2, "abcd", "xyz"), (3, None, None)]
    assert conn.execute(f"SELECT id FROM {tname} WHERE c = 'ab'").fetchall() == [(1,)]
    assert conn.execute(f"SELECT length(c), c::text || '|' FROM {tname} WHERE id = 1").fetchone() == (2, "ab|")
    for bad in [f"INSERT INTO {tname} VALUES (4, 'abcde', NULL)", f"INSERT INTO {tname} VALUES (4, NULL, 'wxyz')"]:
        with pytest.raises(psycopg.errors.StringDataRightTruncation) as e:
            conn.execute(bad)
        assert e.value.sqlstate == "22001"
        assert "value too long for type" in str(e.value)
    with pytest.raises(psycopg.errors.StringDataRightTruncation):
        conn.execute(f"UPDATE {tname} SET v = 'toolong' WHERE id = 1")
    # multi-byte characters count as one
    conn.execute(f"INSERT INTO {tname} VALUES (5, 'éé', '☃☃☃')")
    assert conn.execute(f"SELECT c, v FROM {tname} WHERE id = 5").fetchone() == ("éé  ", "☃☃☃")
    cur = conn.cursor()
    with cur.copy(f"COPY {tname} (id, c) TO STDOUT") as cp:
        out = b"".join(bytes(b) for b in cp).decode()
    assert "1\tab  \n" in out


def test_bytea_and_interval_input_text_in_inserts(conn, tname):
    conn.execute(f"CREATE TABLE {tname} (id INT, b BYTEA, iv INTERVAL)")
    conn.execute(f"INSERT INTO {tname} VALUES (1, '\\x00ff41', '1 day 02:03:04'), (2, 'a\\\\b', '-1:30:00'), "
                 f"(3, NULL, NULL)")
    conn.execute(f"INSERT INTO {tname} (iv, id, b) VALUES ('3 days', 4, '\\x')")
    rows = conn.execute(f"SELECT id, b, iv FROM {tname} ORDER BY id").fetchall()
    assert rows == [
        (1, b"\x00\xffA", dt.timedelta(days=1, hours=2, minutes=3, seconds=4)),
        (2, b"a\\b", dt.timedelta(hours=-1, minutes=-30)),
        (3, None, None),
        (4, b"", dt.timedelta(days=3)),
    ]
    assert conn.execute("SELECT '\\x4142'::bytea, BYTEA '\\x43'").fetchone() == (b"AB", b"C")
    with pytest.raises(psycopg.errors.InvalidParameterValue) as e:
        conn.execute(f"INSERT INTO {tname} (id, b) VALUES (9, '\\x0g')")
    assert 'invalid hexadecimal digit: "g"' in str(e.value)


def test_timestamptz_columns_follow_the_session_time_zone(conn, tname):
    conn.execute(f"CREATE TABLE {tname} (id INT, t TIMESTAMPTZ, n TIMESTAMP)")
    conn.execute(f"INSERT INTO {tname} VALUES (1, '2024-06-01 12:00:00+00', '2024-06-01 12:00:00.5'), "
                 f"(2, '2024-01-15 08:30:00.25+00', NULL)")
    raw = conn.cursor()
    for oid in (1184, 1114):
        raw.adapters.register_loader(oid, TextLoader)
    sql = f"SELECT t, n FROM {tname} ORDER BY id"
    conn.execute("SET TIME ZONE 'UTC'")
    assert raw.execute(sql).fetchall() == [("2024-06-01 12:00:00+00", "2024-06-01 12:00:00.5"),
                                           ("2024-01-15 08:30:00.25+00", None)]
    conn.execute("SET TIME ZONE 'Asia/Kolkata'")
    assert raw.execute(sql).fetchall() == [("2024-06-01 17:30:00+05:30", "2024-06-01 12:00:00.5"),
                                           ("2024-01-15 14:00:00.25+05:30", None)]
    conn.execute("SET TimeZone = 'America/New_York'")  # daylight saving time differs by date
    assert [r[0] for r in raw.execute(sql).fetchall()] == ["2024-06-01 08:00:00-04", "2024-01-15 03:30:00.25-05"]
    # the instants are the same in every zone and in binary
    for binary in (False, True):
        got = conn.cursor(binary=binary).execute(f"SELECT t FROM {tname} WHERE id = 1").fetchone()[0]
        assert got == dt.datetime(2024, 6, 1, 12, tzinfo=UTC)


def test_timestamp_casts_to_text_as_postgres(conn, tname):
    """Casts to text inside a query (explicit, and the one `||` implies) write
    timestamps as PostgreSQL does: a space, no zero fraction, timestamptz in
    the session's TimeZone with a short offset."""
    conn.execute(f"CREATE TABLE {tname} (id INT, tz TIMESTAMPTZ, ts TIMESTAMP)")
    conn.execute(f"INSERT INTO {tname} VALUES (1, '2024-01-15 08:30:00+00', '2024-01-15 08:30:00'), "
                 f"(2, '2024-07-01 23:00:00.25+00', '2024-07-01 23:00:00.25'), (3, NULL, NULL)")
    conn.execute("SET TIME ZONE 'Europe/Paris'")
    rows = conn.execute(f"SELECT tz::text, CAST(ts AS varchar), 'at ' || ts, length(tz::text) "
                        f"FROM {tname} ORDER BY id").fetchall()
    assert rows == [
        ("2024-01-15 09:30:00+01", "2024-01-15 08:30:00", "at 2024-01-15 08:30:00", 22),
        ("2024-07-02 01:00:00.25+02", "2024-07-01 23:00:00.25", "at 2024-07-01 23:00:00.25", 25),
        (None, None, None, None),
    ]
    assert conn.execute(f"SELECT id FROM {tname} WHERE tz::text LIKE '2024-07-02%'").fetchall() == [(2,)]


def test_integer_overflow_is_an_error_not_a_wrapped_value(conn, tname):
    conn.execute(f"CREATE TABLE {tname} (id INT, a INT, b BIGINT)")
    conn.execute(f"INSERT INTO {tname} VALUES (1, 2147483647, 9223372036854775807), (2, -5, -7)")
    for sql in [f"SELECT a + a FROM {tname}", f"SELECT a * 2::int4 FROM {tname} WHERE id = 1",
                f"SELECT b + 1 FROM {tname}", f"SELECT -b - 2 FROM {tname} WHERE id = 1",
                "SELECT 2147483647::int4 + 1::int4", "SELECT 9223372036854775807 * 2"]:
        with pytest.raises(psycopg.errors.NumericValueOutOfRange) as e:
            conn.execute(sql).fetchall()
        assert e.value.sqlstate == "22003"
        assert "out of range" in str(e.value)
    # in range, and widened first: the right answers
    assert conn.execute(f"SELECT a::int8 + a, b - 1, a - a FROM {tname} ORDER BY id").fetchall() == [
        (4294967294, 9223372036854775806, 0), (-10, -8, 0)]
    assert conn.execute(f"SELECT sum(a * 2) FROM {tname} WHERE id = 2").fetchone() == (-10,)


def test_integer_literals_are_int4_where_they_fit(conn, tname):
    cur = conn.execute("SELECT 1, 3000000000, 7 / 2, -2147483648")
    assert [d.type_code for d in cur.description] == [23, 20, 23, 23]
    assert cur.fetchone() == (1, 3000000000, 3, -2147483648)
    conn.execute(f"CREATE TABLE {tname} (a INT, b BIGINT)")
    conn.execute(f"INSERT INTO {tname} SELECT v, v * 10 FROM generate_series(1, 5) AS t(v)")
    # a wider side widens the literal; LIMIT/OFFSET and window offsets take them as they are
    cur = conn.execute(f"SELECT b + 1, a + 1, lag(a, 1) OVER (ORDER BY a) FROM {tname} "
                       f"ORDER BY a LIMIT 2 OFFSET 1")
    assert [d.type_code for d in cur.description] == [20, 23, 23]
    assert cur.fetchall() == [(21, 3, 1), (31, 4, 2)]
    assert sorted(conn.execute("SELECT 1 UNION ALL SELECT 3000000000").fetchall()) == [(1,), (3000000000,)]
    conn.execute(f"CREATE TABLE {tname}_c AS SELECT 1 AS one, a * 2 AS two FROM {tname}")
    cur = conn.execute(f"SELECT one, two FROM {tname}_c ORDER BY two LIMIT 1")
    assert [d.type_code for d in cur.description] == [23, 23]
    assert cur.fetchone() == (1, 2)


WIDE = [Decimal("123456789012345678901234567890.123456789"),
        Decimal("-99999999999999999999999999999999999999999999"),
        Decimal("0.000000000000001"), Decimal("1.5"), Decimal("0")]


@pytest.mark.parametrize("binary", [False, True], ids=["text", "binary"])
def test_numeric_holds_more_digits_than_decimal128(conn, tname, binary):
    """Unconstrained numeric and numeric(p,s) with p > 38 hold values beyond 28 and 38 digits:
    as parameters, literals, COPY and results, in text and binary."""
    conn.execute(f"CREATE TABLE {tname} (id INT, n NUMERIC, w NUMERIC(50,5))")
    ph = "%b" if binary else "%s"
    cur = conn.cursor(binary=binary)
    wide_w = Decimal("1234567890123456789012345678901234567890.12346")
    cur.executemany(f"INSERT INTO {tname} VALUES ({ph}, {ph}, {ph})",
                    [(i, v, wide_w if i == 0 else Decimal(i)) for i, v in enumerate(WIDE)])
    cur.execute(f"SELECT n, w FROM {tname} ORDER BY id")
    assert [d.type_code for d in cur.description] == [1700, 1700]
    rows = cur.fetchall()
    assert [r[0] for r in rows] == WIDE
    assert rows[0][1] == wide_w and rows[1][1] == Decimal("1.00000")
    # a parameter compared with the column, and arithmetic in numeric
    cur.execute(f"SELECT id FROM {tname} WHERE n = {ph}", (WIDE[0],))
    assert cur.fetchall() == [(0,)]
    with localcontext() as exact:
        exact.prec = 100
        cur.execute(f"SELECT sum(n), max(n), min(n), sum(w) FROM {tname}")
        assert cur.fetchone() == (sum(WIDE), WIDE[0], WIDE[1], wide_w + 10)
        cur.execute(f"SELECT n * 2, n + 0.5 FROM {tname} WHERE id = 0")
        assert cur.fetchone() == (WIDE[0] * 2, WIDE[0] + Decimal("0.5"))
    # literals are numeric too
    cur.execute("SELECT 123456789012345678901234567890.123456789, 0.1 + 0.2 = 0.3")
    assert cur.description[0].type_code == 1700
    assert cur.fetchone() == (WIDE[0], True)
    with conn.cursor().copy(f"COPY {tname} (id, n) TO STDOUT") as cp:
        out = b"".join(bytes(b) for b in cp).decode()
    assert "0\t123456789012345678901234567890.123456789\n" in out
    conn.execute(f"DELETE FROM {tname}")
    with conn.cursor().copy(f"COPY {tname} (id, n) FROM STDIN") as cp:
        cp.write("7\t-123456789012345678901234567890.5\n")
    assert conn.execute(f"SELECT n FROM {tname}").fetchone() == (Decimal("-123456789012345678901234567890.5"),)


def test_numeric_columns_in_the_catalog_and_their_limits(conn, tname):
    conn.execute(f"CREATE TABLE {tname} (n NUMERIC, w NUMERIC(50,5), m NUMERIC(10,2))")
    rows = conn.execute(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
        f"JOIN pg_class c ON a.attrelid = c.oid WHERE c.relname = '{tname}' AND a.attnum > 0 "
        "ORDER BY a.attnum").fetchall()
    assert rows == [("n", "numeric"), ("w", "numeric(50,5)"), ("m", "numeric(10,2)")]
    with pytest.raises(psycopg.errors.NumericValueOutOfRange) as e:
        conn.execute(f"INSERT INTO {tname} (m) VALUES (%s)", (Decimal("123456789.5"),))
    assert e.value.sqlstate == "22003"
    with pytest.raises(psycopg.errors.NumericValueOutOfRange):
        conn.execute(f"INSERT INTO {tname} (w) VALUES (%s)", (Decimal("1" + "0" * 45),))
    assert conn.execute(f"SELECT count(*) FROM {tname}").fetchone() == (0,)
