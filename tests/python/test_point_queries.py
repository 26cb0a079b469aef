"""Point queries on a unique key (the fast path that skips the planner) give
the same answers as the general path, under every visibility rule.

Each lookup is checked against the same query written so that it cannot take
the fast path (`id + 0 = v`), and the suite also runs against PostgreSQL
(`--pg`), which pins down the expected semantics.
"""

import psycopg
import pytest
from psycopg import errors


def _setup(conn, tname):
    conn.execute(
        f"CREATE TABLE {tname} (id BIGINT PRIMARY KEY, code VARCHAR(10) UNIQUE, v TEXT, n INT)"
    )
    conn.execute(
        f"INSERT INTO {tname} SELECT g, 'c' || g, 'v' || g, g * 10 FROM generate_series(1, 2000) AS s(g)"
    )


def _both(conn, fast, slow, params=()):
    a = conn.execute(fast, params).fetchall()
    b = conn.execute(slow, params).fetchall()
    assert a == b, (fast, a, b)
    return a


def test_point_lookup_shapes(conn, tname):
    _setup(conn, tname)
    t = tname
    assert _both(conn, f"SELECT v, n FROM {t} WHERE id = 7", f"SELECT v, n FROM {t} WHERE id + 0 = 7") == [("v7", 70)]
    assert _both(conn, f"SELECT * FROM {t} WHERE id = %s", f"SELECT * FROM {t} WHERE id + 0 = %s", (1999,)) == [
        (1999, "c1999", "v1999", 19990)
    ]
    assert _both(conn, f"SELECT x.n AS total FROM public.{t} x WHERE 12 = x.id", f"SELECT n AS total FROM {t} WHERE id + 0 = 12") == [(120,)]
    assert _both(conn, f"SELECT id FROM {t} WHERE code = 'c44'", f"SELECT id FROM {t} WHERE code || '' = 'c44'") == [(44,)]
    assert _both(conn, f"SELECT v FROM {t} WHERE id = '8'", f"SELECT v FROM {t} WHERE id + 0 = 8") == [("v8",)]
    # no such key, and keys beyond the column type's range
    assert conn.execute(f"SELECT v FROM {t} WHERE id = 5000").fetchall() == []
    assert conn.execute(f"SELECT v FROM {t} WHERE n = 99999999999").fetchall() == []
    cur = conn.execute(f"SELECT v AS label, n FROM {t} WHERE id = %s", (3,))
    assert [d.name for d in cur.description] == ["label", "n"]
    assert cur.fetchall() == [("v3", 30)]


def test_point_lookup_prepared_many_times(connect, tname):
    with connect() as conn:
        _setup(conn, tname)
        with conn.cursor() as cur:
            for k in list(range(1, 60)) + [0, 2001, -1]:
                cur.execute(f"SELECT v, n FROM {tname} WHERE id = %s", (k,), prepare=True)
                want = [(f"v{k}", k * 10)] if 1 <= k <= 2000 else []
                assert cur.fetchall() == want, k


def test_point_lookup_bad_values_give_errors(conn, tname):
    _setup(conn, tname)
    with pytest.raises(errors.InvalidTextRepresentation):
        conn.execute(f"SELECT v FROM {tname} WHERE id = 'abc'")
    conn.rollback()
    assert conn.execute(f"SELECT v FROM {tname} WHERE id = 9").fetchall() == [("v9",)]


def test_point_lookup_sees_own_writes_and_commits(connect, tname):
    with connect(autocommit=True) as a, connect(autocommit=True) as b:
        _setup(a, tname)
        a.execute("BEGIN")
        a.execute(f"UPDATE {tname} SET v = 'mine' WHERE id = 5")
        a.execute(f"DELETE FROM {tname} WHERE id = 6")
        a.execute(f"INSERT INTO {tname} VALUES (3000, 'new', 'fresh', 1)")
        assert a.execute(f"SELECT v FROM {tname} WHERE id = 5").fetchall() == [("mine",)]
        assert a.execute(f"SELECT v FROM {tname} WHERE id = 6").fetchall() == []
        assert a.execute(f"SELECT v FROM {tname} WHERE id = %s", (3000,)).fetchall() == [("fresh",)]
        # another session sees none of it until COMMIT
        assert b.execute(f"SELECT v FROM {tname} WHERE id = 5").fetchall() == [("v5",)]
        assert b.execute(f"SELECT v FROM {tname} WHERE id = 3000").fetchall() == []
        a.execute("COMMIT")
        assert b.execute(f"SELECT v FROM {tname} WHERE id = 5").fetchall() == [("mine",)]
        assert b.execute(f"SELECT v FROM {tname} WHERE id = 6").fetchall() == []
        assert b.execute(f"SELECT v FROM {tname} WHERE id = 3000").fetchall() == [("fresh",)]


def test_point_lookup_repeatable_read_keeps_its_snapshot(connect, tname):
    with connect(autocommit=True) as a, connect(autocommit=True) as b:
        _setup(a, tname)
        a.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        assert a.execute(f"SELECT v FROM {tname} WHERE id = 10").fetchall() == [("v10",)]
        b.execute(f"UPDATE {tname} SET v = 'later' WHERE id = 10")
        b.execute(f"DELETE FROM {tname} WHERE id = 11")
        assert a.execute(f"SELECT v FROM {tname} WHERE id = 10").fetchall() == [("v10",)]
        assert a.execute(f"SELECT v FROM {tname} WHERE id = 11").fetchall() == [("v11",)]
        a.execute("COMMIT")
        assert a.execute(f"SELECT v FROM {tname} WHERE id = 10").fetchall() == [("later",)]
        assert a.execute(f"SELECT v FROM {tname} WHERE id = 11").fetchall() == []


def test_point_lookup_after_alter_and_recreate(conn, tname):
    _setup(conn, tname)
    assert conn.execute(f"SELECT * FROM {tname} WHERE id = %s", (4,)).fetchall() == [(4, "c4", "v4", 40)]
    conn.execute(f"ALTER TABLE {tname} ADD COLUMN extra INT")
    conn.execute(f"UPDATE {tname} SET extra = 1 WHERE id = 4")
    assert conn.execute(f"SELECT * FROM {tname} WHERE id = %s", (4,)).fetchall() == [(4, "c4", "v4", 40, 1)]
    conn.execute(f"DROP TABLE {tname}")
    conn.execute(f"CREATE TABLE {tname} (id BIGINT PRIMARY KEY, v TEXT)")
    conn.execute(f"INSERT INTO {tname} VALUES (4, 'again')")
    assert conn.execute(f"SELECT * FROM {tname} WHERE id = 4").fetchall() == [(4, "again")]


def test_prepared_point_query_after_the_table_changes_shape(connect, tname):
    """PostgreSQL re-plans and returns the new columns; Quiver may instead
    refuse with 0A000 (as PostgreSQL once did), but never returns rows that
    do not match the row description."""
    with connect(autocommit=True) as conn:
        _setup(conn, tname)
        with conn.cursor() as cur:
            cur.execute(f"SELECT * FROM {tname} WHERE id = %s", (4,), prepare=True)
            assert cur.fetchall() == [(4, "c4", "v4", 40)]
            conn.execute(f"ALTER TABLE {tname} ADD COLUMN extra INT")
            try:
                cur.execute(f"SELECT * FROM {tname} WHERE id = %s", (4,), prepare=True)
                assert cur.fetchall() == [(4, "c4", "v4", 40, None)]
                assert [d.name for d in cur.description] == ["id", "code", "v", "n", "extra"]
            except errors.FeatureNotSupported as e:
                assert "cached plan must not change result type" in str(e)
        assert conn.execute(f"SELECT n FROM {tname} WHERE id = 4").fetchall() == [(40,)]
