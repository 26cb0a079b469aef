"""Single-row writes by unique key and short INSERT ... VALUES (the fast paths
that skip the query planner) do what PostgreSQL does: the same rows, the same
command tags, the same errors, inside and outside transactions, on both query
protocols.

Each write is also run in a form that cannot take the fast path (`id + 0 = v`,
an INSERT from a SELECT) on a twin table and the two tables are compared; the
suite runs against PostgreSQL too (`--pg`), which pins down the semantics.
"""

import psycopg
import pytest
from psycopg import errors


def _tables(conn, t):
    for name in (t, t + "_slow"):
        conn.execute(
            f"CREATE TABLE {name} (id INT PRIMARY KEY, code VARCHAR(8) UNIQUE, n INT NOT NULL, "
            f"big BIGINT, pad CHAR(4), b BYTEA, ts TIMESTAMP, d NUMERIC(10,2) DEFAULT 1.5, note TEXT DEFAULT 'none')"
        )
        conn.execute(
            f"INSERT INTO {name} (id, code, n, big, pad) SELECT g, 'c' || g, g * 10, g, 'p' FROM generate_series(1, 50) AS s(g)"
        )


def _rows(conn, t):
    return conn.execute(f"SELECT id, code, n, big, pad, b, d, note FROM {t} ORDER BY id").fetchall()


def _same(conn, t):
    fast, slow = _rows(conn, t), _rows(conn, t + "_slow")
    assert fast == slow
    return fast


def _tag(conn, sql, params=()):
    cur = conn.execute(sql, params)
    return cur.statusmessage


def test_update_and_delete_by_key_match_the_general_path(conn, tname):
    _tables(conn, tname)
    t, s = tname, tname + "_slow"
    cases = [
        ("UPDATE {t} SET n = n + 5 WHERE id = 3", "UPDATE {t} SET n = n + 5 WHERE id + 0 = 3"),
        ("UPDATE {t} AS x SET n = x.n * 2, note = 'twice' WHERE x.id = 4",
         "UPDATE {t} SET n = n * 2, note = 'twice' WHERE id + 0 = 4"),
        ("UPDATE {t} SET big = big * 3000000000, d = d + 0.25 WHERE code = 'c5'",
         "UPDATE {t} SET big = big * 3000000000, d = d + 0.25 WHERE code || '' = 'c5'"),
        ("UPDATE {t} SET pad = 'ab', b = '\\x0102' WHERE 6 = id", "UPDATE {t} SET pad = 'ab', b = '\\x0102' WHERE id + 0 = 6"),
        ("UPDATE {t} SET id = id + 100 WHERE id = 7", "UPDATE {t} SET id = id + 100 WHERE id + 0 = 7"),
        ("UPDATE {t} SET n = length(note) + abs(-3) WHERE id = 8", "UPDATE {t} SET n = length(note) + abs(-3) WHERE id + 0 = 8"),
        ("UPDATE {t} SET n = 1 WHERE id = 9999", "UPDATE {t} SET n = 1 WHERE id + 0 = 9999"),
        ("DELETE FROM {t} WHERE id = 10", "DELETE FROM {t} WHERE id + 0 = 10"),
        ("DELETE FROM {t} WHERE id = 10", "DELETE FROM {t} WHERE id + 0 = 10"),
        ("DELETE FROM public.{t} WHERE code = 'c11'", "DELETE FROM {t} WHERE code || '' = 'c11'"),
    ]
    for fast, slow in cases:
        assert _tag(conn, fast.format(t=t)) == _tag(conn, slow.format(t=s)), fast
    rows = _same(conn, t)
    by_id = {r[0]: r for r in rows}
    assert by_id[3][2] == 35 and by_id[4][2] == 80 and by_id[4][7] == "twice"
    assert by_id[5][3] == 15000000000
    assert by_id[6][4] == "ab  " and bytes(by_id[6][5]) == b"\x01\x02"
    assert 7 not in by_id and 107 in by_id
    assert by_id[8][2] == 7
    assert 10 not in by_id and 11 not in by_id


def test_point_write_errors_match_postgres(conn, tname):
    _tables(conn, tname)
    t = tname
    with pytest.raises(errors.NumericValueOutOfRange):
        conn.execute(f"UPDATE {t} SET n = n + 2147483647 WHERE id = 1")
    with pytest.raises(errors.NumericValueOutOfRange):
        conn.execute(f"UPDATE {t} SET n = 3000000000 WHERE id = 1")
    with pytest.raises(errors.NotNullViolation):
        conn.execute(f"UPDATE {t} SET n = NULL WHERE id = 1")
    with pytest.raises(errors.UniqueViolation):
        conn.execute(f"UPDATE {t} SET code = 'c2' WHERE id = 1")
    with pytest.raises(errors.UniqueViolation):
        conn.execute(f"UPDATE {t} SET id = 2 WHERE id = 1")
    with pytest.raises(errors.StringDataRightTruncation):
        conn.execute(f"UPDATE {t} SET code = 'much too long' WHERE id = 1")
    with pytest.raises(errors.UndefinedColumn):
        conn.execute(f"UPDATE {t} SET nosuch = 1 WHERE id = 1")
    with pytest.raises(errors.UndefinedColumn):
        conn.execute(f"UPDATE {t} SET n = nosuch + 1 WHERE id = 1")
    with pytest.raises(errors.InvalidTextRepresentation):
        conn.execute(f"UPDATE {t} SET n = 'x' WHERE id = 1")
    with pytest.raises(errors.UniqueViolation):
        conn.execute(f"INSERT INTO {t} (id, code, n) VALUES (1, 'new', 1)")
    with pytest.raises(errors.NotNullViolation):
        conn.execute(f"INSERT INTO {t} (id, code) VALUES (500, 'x')")
    with pytest.raises(errors.NumericValueOutOfRange):
        conn.execute(f"INSERT INTO {t} (id, n) VALUES (501, 2147483648)")
    with pytest.raises(errors.UndefinedColumn):
        conn.execute(f"INSERT INTO {t} (id, nosuch) VALUES (502, 1)")
    # Nothing changed, and the session goes on.
    assert conn.execute(f"SELECT id, code, n FROM {t} WHERE id = 1").fetchall() == [(1, "c1", 10)]
    assert conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] == 50


def test_values_insert_matches_insert_select(conn, tname):
    _tables(conn, tname)
    t, s = tname, tname + "_slow"
    for sql_fast, sql_slow in [
        ("INSERT INTO {t} VALUES (60, 'c60', 1, 2, 'x', '\\xff', '2024-01-02 03:04:05', 7.25, 'n')",
         "INSERT INTO {t} SELECT 60, 'c60', 1, 2, 'x', '\\xff', '2024-01-02 03:04:05', 7.25, 'n'"),
        ("INSERT INTO {t} (n, id) VALUES (5, 61), (6, 62), (7 * 3, 63)",
         "INSERT INTO {t} (n, id) SELECT n, id FROM (VALUES (5, 61), (6, 62), (21, 63)) AS v(n, id)"),
        ("INSERT INTO public.{t} (id, n, big, note) VALUES (64, -1, NULL, NULL)",
         "INSERT INTO {t} (id, n, big, note) SELECT 64, -1, NULL, NULL"),
        ("INSERT INTO {t} (id, n, code) VALUES (65, '42', upper('abc'))",
         "INSERT INTO {t} (id, n, code) SELECT 65, 42, 'ABC'"),
    ]:
        assert _tag(conn, sql_fast.format(t=t)) == _tag(conn, sql_slow.format(t=s)), sql_fast
    rows = _same(conn, t)
    by_id = {r[0]: r for r in rows}
    assert by_id[60][4] == "x   " and bytes(by_id[60][5]) == b"\xff"
    assert by_id[61][6] == 1.5 and by_id[61][7] == "none"
    assert by_id[63][2] == 21 and by_id[64][7] is None and by_id[65][1] == "ABC"
    got = conn.execute(f"SELECT ts FROM {t} WHERE id = 60").fetchone()[0]
    assert str(got) == "2024-01-02 03:04:05"
    conn.execute(f"INSERT INTO {t} (id, n, ts) VALUES (66, 0, CURRENT_TIMESTAMP)")
    assert conn.execute(f"SELECT ts IS NOT NULL FROM {t} WHERE id = 66").fetchone()[0] is True


def test_point_writes_in_a_transaction_see_their_own_rows(connect, tname):
    c = connect()
    _tables(c, tname)
    t = tname
    other = connect()
    with c.transaction():
        c.execute(f"INSERT INTO {t} (id, n) VALUES (70, 1)")
        assert c.execute(f"SELECT n FROM {t} WHERE id = 70").fetchall() == [(1,)]
        c.execute(f"UPDATE {t} SET n = n + 1 WHERE id = 70")
        c.execute(f"UPDATE {t} SET n = n + 1 WHERE id = 70")
        assert c.execute(f"SELECT n FROM {t} WHERE id = 70").fetchall() == [(3,)]
        c.execute(f"UPDATE {t} SET n = n + 1 WHERE id = 1")
        assert c.execute(f"SELECT n FROM {t} WHERE id = 1").fetchall() == [(11,)]
        c.execute(f"DELETE FROM {t} WHERE id = 2")
        assert c.execute(f"SELECT n FROM {t} WHERE id = 2").fetchall() == []
        assert _tag(c, f"UPDATE {t} SET n = 0 WHERE id = 2") == "UPDATE 0"
        c.execute(f"INSERT INTO {t} (id, n) VALUES (2, 99)")
        assert c.execute(f"SELECT n FROM {t} WHERE id = 2").fetchall() == [(99,)]
        # Not visible to anyone else before COMMIT.
        assert other.execute(f"SELECT n FROM {t} WHERE id = 70").fetchall() == []
        assert other.execute(f"SELECT n FROM {t} WHERE id = 1").fetchall() == [(10,)]
        assert other.execute(f"SELECT n FROM {t} WHERE id = 2").fetchall() == [(20,)]
    assert other.execute(f"SELECT id, n FROM {t} WHERE id IN (1, 2, 70) ORDER BY id").fetchall() == [
        (1, 11), (2, 99), (70, 3)]
    with pytest.raises(errors.UniqueViolation):
        with c.transaction():
            c.execute(f"INSERT INTO {t} (id, n) VALUES (71, 1)")
            c.execute(f"INSERT INTO {t} (id, n) VALUES (71, 2)")
    assert c.execute(f"SELECT count(*) FROM {t} WHERE id = 71").fetchone()[0] == 0


@pytest.mark.parametrize("prepare", [False, True])
def test_point_writes_with_parameters(connect, tname, prepare):
    c = connect()
    _tables(c, tname)
    t = tname
    with c.cursor() as cur:
        for k in range(1, 21):
            cur.execute(f"UPDATE {t} SET n = n + %s, note = %s WHERE id = %s", (k, f"k{k}", k), prepare=prepare)
            assert cur.statusmessage == "UPDATE 1"
            cur.execute(f"INSERT INTO {t} (id, n, code) VALUES (%s, %s, %s)", (1000 + k, k, f"x{k}"), prepare=prepare)
            assert cur.statusmessage == "INSERT 0 1"
            cur.execute(f"DELETE FROM {t} WHERE code = %s", (f"c{k + 20}",), prepare=prepare)
            assert cur.statusmessage == "DELETE 1"
    rows = {r[0]: (r[1], r[2]) for r in c.execute(f"SELECT id, n, note FROM {t}").fetchall()}
    assert all(rows[k] == (11 * k, f"k{k}") for k in range(1, 21))
    assert all(rows[1000 + k][0] == k for k in range(1, 21))
    assert not any(21 <= k <= 40 for k in rows)
    assert len(rows) == 50
