"""Concurrent writes wait for each other as in PostgreSQL (row locks), on standalone.

In the style of PostgreSQL's isolation tester: two or more sessions, each step run in a chosen
order, and the outcome checked. Runs against PostgreSQL 15 too (--target=pg), where it must pass
unchanged. `test_cluster_row_locks.py` runs the same tests on a distributed table whose rows 1
and 2 live on different workers.
"""

from __future__ import annotations

import threading
import time

import psycopg
import pytest


def _table(conn, tname, rows=((1, 100), (2, 100))):
    conn.execute(f"CREATE TABLE {tname} (id int PRIMARY KEY, v int NOT NULL)")
    for r in rows:
        conn.execute(f"INSERT INTO {tname} VALUES (%s, %s)", r)


@pytest.fixture
def make_table():
    """make_table(conn, name[, rows]): the test's table of (id, v) rows."""
    return _table


def _in_thread(fn):
    out: dict = {}

    def run():
        try:
            out["value"] = fn()
        except Exception as e:  # handed to the test, not hidden
            out["error"] = e

    t = threading.Thread(target=run)
    t.start()
    return t, out


def _blocked(t: threading.Thread, seconds: float = 0.5) -> bool:
    """True if `t` is still running after `seconds` (it waits for a lock)."""
    t.join(seconds)
    return t.is_alive()


def test_no_lost_update_under_concurrent_increments(connect, tname, make_table):
    a = connect()
    make_table(a, tname, rows=((1, 0),))
    errors: list = []

    def bump():
        with connect() as c:
            for _ in range(40):
                try:
                    c.execute(f"UPDATE {tname} SET v = v + 1 WHERE id = 1")
                except psycopg.Error as e:
                    errors.append(e)

    threads = [threading.Thread(target=bump) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors[:3]
    assert a.execute(f"SELECT v FROM {tname} WHERE id = 1").fetchone() == (160,)


def test_waiting_update_applies_to_the_newest_row(connect, tname, make_table):
    a, b = connect(), connect()
    make_table(a, tname)
    a.execute("BEGIN")
    a.execute(f"UPDATE {tname} SET v = v + 10 WHERE id = 1")
    b.execute("BEGIN")
    t, out = _in_thread(lambda: b.execute(f"UPDATE {tname} SET v = v * 2 WHERE id = 1").rowcount)
    assert _blocked(t), "the second UPDATE of the row must wait for the first transaction"
    a.execute("COMMIT")
    t.join(30)
    assert "error" not in out, out
    assert out["value"] == 1
    b.execute("COMMIT")
    # (100 + 10) * 2: the waiting UPDATE read the committed row, not its snapshot's
    assert a.execute(f"SELECT v FROM {tname} WHERE id = 1").fetchone() == (220,)


def test_waiting_delete_after_rollback_deletes(connect, tname, make_table):
    a, b = connect(), connect()
    make_table(a, tname)
    a.execute("BEGIN")
    a.execute(f"UPDATE {tname} SET v = 0 WHERE id = 2")
    t, out = _in_thread(lambda: b.execute(f"DELETE FROM {tname} WHERE id = 2").rowcount)
    assert _blocked(t)
    a.execute("ROLLBACK")
    t.join(30)
    assert out.get("value") == 1, out
    assert a.execute(f"SELECT count(*) FROM {tname}").fetchone() == (1,)


def test_deadlock_is_detected_and_one_side_goes_on(connect, tname, make_table):
    a, b = connect(), connect()
    make_table(a, tname)
    a.execute("BEGIN")
    b.execute("BEGIN")
    a.execute(f"UPDATE {tname} SET v = v + 1 WHERE id = 1")
    b.execute(f"UPDATE {tname} SET v = v + 1 WHERE id = 2")
    ta, out_a = _in_thread(lambda: a.execute(f"UPDATE {tname} SET v = v + 1 WHERE id = 2"))
    assert _blocked(ta)
    started = time.monotonic()
    tb, out_b = _in_thread(lambda: b.execute(f"UPDATE {tname} SET v = v + 1 WHERE id = 1"))
    # one of the two is chosen as the victim (PostgreSQL picks the first waiter after
    # deadlock_timeout, Quiver the one that closes the cycle); the other goes on
    deadline = time.monotonic() + 10
    while "error" not in out_a and "error" not in out_b:
        assert time.monotonic() < deadline, "deadlock not detected"
        time.sleep(0.02)
    assert time.monotonic() - started < 10
    victim, winner = (a, b) if "error" in out_a else (b, a)
    err = (out_a if victim is a else out_b)["error"]
    assert isinstance(err, psycopg.errors.DeadlockDetected), err
    victim.execute("ROLLBACK")
    ta.join(30)
    tb.join(30)
    other = out_b if victim is a else out_a
    assert "error" not in other, other
    winner.execute("COMMIT")
    rows = a.execute(f"SELECT id, v FROM {tname} ORDER BY id").fetchall()
    assert rows == [(1, 101), (2, 101)]


def test_repeatable_read_update_of_a_changed_row_fails(connect, tname, make_table):
    a, b = connect(), connect()
    make_table(a, tname)
    b.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
    assert b.execute(f"SELECT v FROM {tname} WHERE id = 1").fetchone() == (100,)
    a.execute(f"UPDATE {tname} SET v = 1 WHERE id = 1")
    with pytest.raises(psycopg.errors.SerializationFailure):
        b.execute(f"UPDATE {tname} SET v = v + 1 WHERE id = 1")
    b.execute("ROLLBACK")
    assert a.execute(f"SELECT v FROM {tname} WHERE id = 1").fetchone() == (1,)


def test_write_skew_is_allowed_under_repeatable_read(connect, tname, make_table):
    """Snapshot isolation, as PostgreSQL's REPEATABLE READ: two transactions that each read both
    rows and update a different one both commit (write skew)."""
    a, b = connect(), connect()
    make_table(a, tname)
    for c in (a, b):
        c.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        assert c.execute(f"SELECT sum(v) FROM {tname}").fetchone() == (200,)
    a.execute(f"UPDATE {tname} SET v = v - 150 WHERE id = 1")
    b.execute(f"UPDATE {tname} SET v = v - 150 WHERE id = 2")
    a.execute("COMMIT")
    b.execute("COMMIT")
    assert a.execute(f"SELECT sum(v) FROM {tname}").fetchone() == (-100,)


def test_read_skew_is_prevented_under_repeatable_read(connect, tname, make_table):
    """A transfer between rows 1 and 2 commits between a REPEATABLE READ transaction's reads of
    row 1 and row 2: the second read still sees the snapshot, so the sum holds."""
    a, b = connect(), connect()
    make_table(a, tname)
    a.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
    first = a.execute(f"SELECT v FROM {tname} WHERE id = 1").fetchone()[0]
    with b.transaction():
        b.execute(f"UPDATE {tname} SET v = v - 30 WHERE id = 1")
        b.execute(f"UPDATE {tname} SET v = v + 30 WHERE id = 2")
    second = a.execute(f"SELECT v FROM {tname} WHERE id = 2").fetchone()[0]
    assert first + second == 200, (first, second)
    a.execute("COMMIT")
    # read committed sees the transfer at the next statement
    assert a.execute(f"SELECT v FROM {tname} WHERE id = 2").fetchone() == (130,)


def test_isolation_levels_are_shown_and_set_as_in_postgres(connect, tname, make_table):
    a, b = connect(), connect()
    make_table(a, tname)
    assert a.execute("SHOW transaction_isolation").fetchone() == ("read committed",)
    a.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
    assert a.execute("SHOW transaction_isolation").fetchone() == ("repeatable read",)
    a.execute("COMMIT")
    # SET TRANSACTION before the block's first query switches the level ...
    a.execute("BEGIN")
    a.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
    assert a.execute("SHOW transaction_isolation").fetchone() == ("repeatable read",)
    assert a.execute(f"SELECT v FROM {tname} WHERE id = 1").fetchone() == (100,)
    b.execute(f"UPDATE {tname} SET v = 5 WHERE id = 1")
    assert a.execute(f"SELECT v FROM {tname} WHERE id = 1").fetchone() == (100,)
    # ... and after it is refused
    with pytest.raises(psycopg.errors.ActiveSqlTransaction):
        a.execute("SET TRANSACTION ISOLATION LEVEL READ COMMITTED")
    a.execute("ROLLBACK")
    # the session default
    a.execute("SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL REPEATABLE READ")
    a.execute("BEGIN")
    assert a.execute("SHOW transaction_isolation").fetchone() == ("repeatable read",)
    a.execute("COMMIT")
    assert a.execute("SHOW default_transaction_isolation").fetchone() == ("repeatable read",)


def test_select_for_update_locks_rows_and_reads_the_newest(connect, tname, make_table):
    a, b = connect(), connect()
    make_table(a, tname)
    # a's FOR UPDATE holds the row: b's UPDATE waits for a's COMMIT
    a.execute("BEGIN")
    assert a.execute(f"SELECT v FROM {tname} WHERE id = 1 FOR UPDATE").fetchall() == [(100,)]
    t, out = _in_thread(lambda: b.execute(f"UPDATE {tname} SET v = v + 1 WHERE id = 1").rowcount)
    assert _blocked(t), "an UPDATE of a row locked FOR UPDATE must wait"
    a.execute(f"UPDATE {tname} SET v = 50 WHERE id = 1")
    a.execute("COMMIT")
    t.join(30)
    assert out.get("value") == 1, out
    assert a.execute(f"SELECT v FROM {tname} WHERE id = 1").fetchone() == (51,)
    # a FOR UPDATE that meets an uncommitted change waits, then reads the committed row
    b.execute("BEGIN")
    b.execute(f"UPDATE {tname} SET v = 7 WHERE id = 2")
    a.execute("BEGIN")
    t, out = _in_thread(lambda: a.execute(f"SELECT id, v FROM {tname} WHERE id = 2 FOR UPDATE").fetchall())
    assert _blocked(t)
    b.execute("COMMIT")
    t.join(30)
    assert out.get("value") == [(2, 7)], out
    a.execute("COMMIT")
