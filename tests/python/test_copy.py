"""COPY FROM STDIN / COPY TO STDOUT in text and CSV, as psql and drivers use them."""

from decimal import Decimal

import pytest
from psycopg import errors

SCHEMA = "(id INT PRIMARY KEY, s TEXT, d DATE, n NUMERIC(10,2))"

TEXT_IN = (
    "1\thello\t2024-01-02\t1.50\n"
    "2\t\\N\t\\N\t\\N\n"
    "3\ttab\\there\\nnewline \\\\ back\t2024-12-31\t-0.25\n"
    "4\t\t2024-02-29\t0\n"  # empty string, not NULL
)
TEXT_ROWS = [
    (1, "hello", "2024-01-02", "1.50"),
    (2, None, None, None),
    (3, "tab\there\nnewline \\ back", "2024-12-31", "-0.25"),
    (4, "", "2024-02-29", "0.00"),
]
TEXT_OUT = (
    "1\thello\t2024-01-02\t1.50\n"
    "2\t\\N\t\\N\t\\N\n"
    "3\ttab\\there\\nnewline \\\\ back\t2024-12-31\t-0.25\n"
    "4\t\t2024-02-29\t0.00\n"
)

CSV_IN = (
    "id,s,d,n\n"
    '1,"a, b",2024-01-02,1.5\n'
    "2,,,\n"
    '3,"",2024-01-03,2\n'
    '4,"say ""hi""\nnext line",2024-01-04,3.25\n'
)
CSV_ROWS = [
    (1, "a, b", "2024-01-02", "1.50"),
    (2, None, None, None),
    (3, "", "2024-01-03", "2.00"),
    (4, 'say "hi"\nnext line', "2024-01-04", "3.25"),
]
CSV_OUT = (
    "id,s,d,n\n"
    '1,"a, b",2024-01-02,1.50\n'
    "2,,,\n"
    '3,"",2024-01-03,2.00\n'
    '4,"say ""hi""\nnext line",2024-01-04,3.25\n'
)


def _rows(conn, tname):
    return conn.execute(f"SELECT id, s, d::text, n::text FROM {tname} ORDER BY id").fetchall()


def _copy_in(conn, sql, data, chunk=None):
    cur = conn.cursor()
    data = data.encode() if isinstance(data, str) else data
    with cur.copy(sql) as cp:
        if chunk:
            for i in range(0, len(data), chunk):
                cp.write(data[i:i + chunk])
        else:
            cp.write(data)
    return cur


def _copy_out(conn, sql):
    cur = conn.cursor()
    out = bytearray()
    with cur.copy(sql) as cp:
        for block in cp:
            out += block
    return bytes(out).decode()


def test_copy_from_stdin_text(conn, tname):
    conn.execute(f"CREATE TABLE {tname} {SCHEMA}")
    cur = _copy_in(conn, f"COPY {tname} FROM STDIN", TEXT_IN)
    assert cur.rowcount == 4
    assert _rows(conn, tname) == TEXT_ROWS


def test_copy_from_stdin_csv_header(conn, tname):
    conn.execute(f"CREATE TABLE {tname} {SCHEMA}")
    cur = _copy_in(conn, f"COPY {tname} FROM STDIN WITH (FORMAT csv, HEADER true)", CSV_IN)
    assert cur.rowcount == 4
    assert _rows(conn, tname) == CSV_ROWS


def test_copy_from_stdin_csv_legacy_syntax_and_delimiter(conn, tname):
    conn.execute(f"CREATE TABLE {tname} {SCHEMA}")
    _copy_in(conn, f"COPY {tname} FROM STDIN WITH CSV", '1,x,2024-01-01,1\n2,"y",,\n')
    _copy_in(conn, f"COPY {tname} FROM STDIN WITH (FORMAT csv, DELIMITER '|')", "3|z|2024-01-03|3\n")
    assert _rows(conn, tname) == [(1, "x", "2024-01-01", "1.00"), (2, "y", None, None),
                                  (3, "z", "2024-01-03", "3.00")]


def test_copy_with_column_list(conn, tname):
    conn.execute(f"CREATE TABLE {tname} (id INT PRIMARY KEY, s TEXT DEFAULT 'dflt', d DATE, n NUMERIC(10,2))")
    _copy_in(conn, f"COPY {tname} (n, id) FROM STDIN", "1.25\t10\n\\N\t11\n")
    assert _rows(conn, tname) == [(10, "dflt", None, "1.25"), (11, "dflt", None, None)]


def test_copy_to_stdout_text(conn, tname):
    conn.execute(f"CREATE TABLE {tname} {SCHEMA}")
    _copy_in(conn, f"COPY {tname} FROM STDIN", TEXT_IN)
    assert _copy_out(conn, f"COPY (SELECT * FROM {tname} ORDER BY id) TO STDOUT") == TEXT_OUT
    # whole table, in no particular order
    whole = _copy_out(conn, f"COPY {tname} TO STDOUT")
    assert sorted(whole.splitlines()) == sorted(TEXT_OUT.splitlines())


def test_copy_to_stdout_csv(conn, tname):
    conn.execute(f"CREATE TABLE {tname} {SCHEMA}")
    _copy_in(conn, f"COPY {tname} FROM STDIN WITH (FORMAT csv, HEADER true)", CSV_IN)
    out = _copy_out(conn, f"COPY (SELECT * FROM {tname} ORDER BY id) TO STDOUT WITH (FORMAT csv, HEADER true)")
    assert out == CSV_OUT
    out = _copy_out(conn, f"COPY (SELECT id, s FROM {tname} WHERE id <= 2 ORDER BY id) TO STDOUT WITH CSV")
    assert out == '1,"a, b"\n2,\n'


def test_copy_round_trip_large_chunked(conn, tname):
    """100k rows sent in odd-sized chunks that split rows and escapes across CopyData messages."""
    conn.execute(f"CREATE TABLE {tname} (id BIGINT PRIMARY KEY, s TEXT, v DOUBLE PRECISION)")
    n = 100_000
    data = "".join(f"{i}\tname\\t{i}\\\\x\t{i}.5\n" for i in range(n))
    cur = _copy_in(conn, f"COPY {tname} FROM STDIN", data, chunk=8191)
    assert cur.rowcount == n
    assert conn.execute(f"SELECT count(*), sum(id), sum(v) FROM {tname}").fetchone() == (n, n * (n - 1) // 2, n * (n - 1) / 2 + n * 0.5)  # halves: exact in float8 in any order
    assert conn.execute(f"SELECT s FROM {tname} WHERE id = 77").fetchone() == ("name\t77\\x",)
    out = _copy_out(conn, f"COPY (SELECT * FROM {tname} ORDER BY id) TO STDOUT")
    assert out == data


def test_copy_bad_data_loads_nothing(conn, tname):
    conn.execute(f"CREATE TABLE {tname} {SCHEMA}")
    conn.execute(f"INSERT INTO {tname} VALUES (100, 'before', NULL, NULL)")
    good = "".join(f"{i}\tok\t2024-01-01\t1\n" for i in range(1, 1000))
    with pytest.raises(errors.InvalidTextRepresentation) as e:
        _copy_in(conn, f"COPY {tname} FROM STDIN", good + "notanint\tbad\t2024-01-01\t1\n")
    assert e.value.sqlstate == "22P02"
    with pytest.raises(errors.BadCopyFileFormat) as e:
        _copy_in(conn, f"COPY {tname} FROM STDIN", good + "5000\ttoo few columns\n")
    assert e.value.sqlstate == "22P04"
    with pytest.raises(errors.UniqueViolation):
        _copy_in(conn, f"COPY {tname} FROM STDIN", good + "100\tdup\t\\N\t\\N\n")
    with pytest.raises(errors.InvalidDatetimeFormat):
        _copy_in(conn, f"COPY {tname} FROM STDIN WITH (FORMAT csv)", "7,x,not-a-date,1\n")
    assert conn.execute(f"SELECT id, s FROM {tname}").fetchall() == [(100, "before")]
    # the session goes on and COPY still works
    _copy_in(conn, f"COPY {tname} FROM STDIN", "1\tafter\t\\N\t\\N\n")
    assert conn.execute(f"SELECT count(*) FROM {tname}").fetchone() == (2,)


def test_copy_into_missing_table(conn):
    with pytest.raises(errors.UndefinedTable):
        _copy_in(conn, "COPY no_such_copy_target FROM STDIN", "1\n")
    assert conn.execute("SELECT 1").fetchone() == (1,)


def test_copy_inside_transaction_rolls_back(connect, tname):
    a, b = connect(), connect()
    a.execute(f"CREATE TABLE {tname} {SCHEMA}")
    a.execute("BEGIN")
    _copy_in(a, f"COPY {tname} FROM STDIN", TEXT_IN)
    assert a.execute(f"SELECT count(*) FROM {tname}").fetchone() == (4,)
    assert b.execute(f"SELECT count(*) FROM {tname}").fetchone() == (0,)
    a.execute("ROLLBACK")
    assert b.execute(f"SELECT count(*) FROM {tname}").fetchone() == (0,)


def test_copy_many_chunks_csv_header_quoted_newlines(conn, tname):
    """Input of several decode chunks (Quiver decodes 4 MiB chunks in parallel): quoted
    newlines, a header and rows in order across chunk boundaries."""
    conn.execute(f"CREATE TABLE {tname} (id BIGINT PRIMARY KEY, s TEXT, pad TEXT)")
    n = 120_000
    pad = "p" * 60
    rows = "".join(f'{i},"line one\nline ""two"" {i}",{pad}\n' for i in range(n))
    cur = _copy_in(conn, f"COPY {tname} FROM STDIN WITH (FORMAT csv, HEADER true)", "id,s,pad\n" + rows,
                   chunk=65536)
    assert cur.rowcount == n
    assert conn.execute(f"SELECT count(*), sum(id) FROM {tname}").fetchone() == (n, n * (n - 1) // 2)
    assert conn.execute(f"SELECT s FROM {tname} WHERE id = 99999").fetchone() == ('line one\nline "two" 99999',)


def test_copy_error_far_into_the_input_names_its_line(conn, tname):
    conn.execute(f"CREATE TABLE {tname} (id BIGINT, s TEXT)")
    n = 300_000  # about 10 MB: the bad line is several chunks in
    lines = [f"{i}\t{'x' * 24}\n" for i in range(n)]
    lines[250_000] = "oops\tbad\n"
    with pytest.raises(errors.InvalidTextRepresentation) as e:
        _copy_in(conn, f"COPY {tname} FROM STDIN", "".join(lines), chunk=65536)
    assert "line 250001" in (e.value.diag.context or ""), e.value.diag.context
    assert conn.execute(f"SELECT count(*) FROM {tname}").fetchone() == (0,)


def test_copy_end_marker_stops_the_data(conn, tname):
    conn.execute(f"CREATE TABLE {tname} (id BIGINT, s TEXT)")
    before = "".join(f"{i}\t{'y' * 40}\n" for i in range(150_000))
    cur = _copy_in(conn, f"COPY {tname} FROM STDIN", before + "\\.\n", chunk=65536)
    assert cur.rowcount == 150_000
    assert conn.execute(f"SELECT count(*) FROM {tname}").fetchone() == (150_000,)


def test_copy_out_one_message_per_row_psycopg(conn, tname):
    """psycopg reads COPY TO STDOUT row by row: each CopyData message is one row, as the
    protocol says (several rows in one message came back as a single row)."""
    conn.execute(f"CREATE TABLE {tname} (id INT PRIMARY KEY, s TEXT, n NUMERIC(10,2))")
    conn.execute(f"INSERT INTO {tname} SELECT g, 'row ' || g, g * 1.5 FROM generate_series(1, 2500) g")
    cur = conn.cursor()
    with cur.copy(f"COPY (SELECT id FROM {tname} WHERE id < 6 ORDER BY id) TO STDOUT") as cp:
        rows = list(cp.rows())
    assert rows == [("1",), ("2",), ("3",), ("4",), ("5",)]
    # read_row() with declared types, over more rows than one batch holds
    with cur.copy(f"COPY (SELECT id, s, n FROM {tname} ORDER BY id) TO STDOUT") as cp:
        cp.set_types(["int4", "text", "numeric"])
        got = []
        while (row := cp.read_row()) is not None:
            got.append(row)
    assert len(got) == 2500
    assert got[0] == (1, "row 1", Decimal("1.50"))
    assert got[-1][0] == 2500
    # CSV: a value with a newline is still one row
    conn.execute(f"UPDATE {tname} SET s = 'two\nlines' WHERE id = 2")
    with cur.copy(f"COPY (SELECT id, s FROM {tname} WHERE id <= 3 ORDER BY id) TO STDOUT WITH (FORMAT csv)") as cp:
        blocks = [bytes(b) for b in cp]
    assert blocks == [b"1,row 1\n", b'2,"two\nlines"\n', b"3,row 3\n"]


def test_copy_out_header_in_its_own_message(conn, tname):
    conn.execute(f"CREATE TABLE {tname} (id INT, s TEXT)")
    conn.execute(f"INSERT INTO {tname} VALUES (1, 'a'), (2, 'b'), (3, 'c')")
    cur = conn.cursor()
    with cur.copy(f"COPY (SELECT * FROM {tname} ORDER BY id) TO STDOUT WITH (FORMAT csv, HEADER true)") as cp:
        blocks = [bytes(b) for b in cp]
    assert blocks == [b"id,s\n", b"1,a\n", b"2,b\n", b"3,c\n"]
    with cur.copy(f"COPY {tname} TO STDOUT") as cp:
        assert len([bytes(b) for b in cp]) == 3
    assert cur.rowcount == 3


def test_copy_out_tag_counts_rows_not_header(conn, tname):
    conn.execute(f"CREATE TABLE {tname} (id INT, s TEXT)")
    conn.execute(f"INSERT INTO {tname} VALUES (1, 'a'), (2, 'b'), (3, 'c')")
    cur = conn.cursor()
    with cur.copy(f"COPY {tname} TO STDOUT WITH (FORMAT csv, HEADER true)") as cp:
        assert len([bytes(b) for b in cp]) == 4
    assert cur.rowcount == 3
    conn.execute(f"DELETE FROM {tname}")
    with cur.copy(f"COPY {tname} TO STDOUT WITH (FORMAT csv, HEADER true)") as cp:
        assert [bytes(b) for b in cp] == [b"id,s\n"]
    assert cur.rowcount == 0
