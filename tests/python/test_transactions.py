"""BEGIN / COMMIT / ROLLBACK as PostgreSQL users rely on them."""

import psycopg
import pytest
from psycopg import errors


def _count(conn, tname):
    return conn.execute(f"SELECT count(*) FROM {tname}").fetchone()[0]


def test_commit_makes_writes_visible_together(connect, tname):
    a, b = connect(), connect()
    a.execute(f"CREATE TABLE {tname} (id INT PRIMARY KEY, v TEXT)")
    a.execute("BEGIN")
    a.execute(f"INSERT INTO {tname} VALUES (1, 'x')")
    a.execute(f"INSERT INTO {tname} VALUES (2, 'y')")
    assert _count(a, tname) == 2  # own writes are visible inside the transaction
    assert _count(b, tname) == 0  # not to others before COMMIT
    a.execute("COMMIT")
    assert b.execute(f"SELECT id, v FROM {tname} ORDER BY id").fetchall() == [(1, "x"), (2, "y")]


def test_rollback_discards_writes(connect, tname):
    a, b = connect(), connect()
    a.execute(f"CREATE TABLE {tname} (id INT PRIMARY KEY, v TEXT)")
    a.execute(f"INSERT INTO {tname} VALUES (1, 'keep')")
    a.execute("BEGIN")
    a.execute(f"INSERT INTO {tname} VALUES (2, 'gone')")
    a.execute(f"UPDATE {tname} SET v = 'changed' WHERE id = 1")
    a.execute(f"DELETE FROM {tname} WHERE id = 1")
    assert _count(a, tname) == 1
    a.execute("ROLLBACK")
    assert a.execute(f"SELECT id, v FROM {tname}").fetchall() == [(1, "keep")]
    assert b.execute(f"SELECT id, v FROM {tname}").fetchall() == [(1, "keep")]
    # the rolled-back key is free
    a.execute(f"INSERT INTO {tname} VALUES (2, 'new')")
    assert _count(b, tname) == 2


def test_failed_statement_aborts_transaction_until_rollback(connect, tname):
    a, b = connect(), connect()
    a.execute(f"CREATE TABLE {tname} (id INT PRIMARY KEY)")
    a.execute("BEGIN")
    a.execute(f"INSERT INTO {tname} VALUES (1)")
    with pytest.raises(errors.UniqueViolation):
        a.execute(f"INSERT INTO {tname} VALUES (1)")
    for sql in ["SELECT 1", f"INSERT INTO {tname} VALUES (2)", f"SELECT * FROM {tname}"]:
        with pytest.raises(errors.InFailedSqlTransaction) as e:
            a.execute(sql)
        assert e.value.sqlstate == "25P02"
    assert a.info.transaction_status == psycopg.pq.TransactionStatus.INERROR
    a.execute("ROLLBACK")
    assert a.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    assert _count(a, tname) == 0
    assert _count(b, tname) == 0
    assert a.execute("SELECT 1").fetchone() == (1,)


def test_commit_of_failed_transaction_rolls_back(connect, tname):
    a = connect()
    a.execute(f"CREATE TABLE {tname} (id INT PRIMARY KEY)")
    a.execute("BEGIN")
    a.execute(f"INSERT INTO {tname} VALUES (1)")
    with pytest.raises(errors.SyntaxError):
        a.execute("SELEC")
    cur = a.execute("COMMIT")  # PostgreSQL answers ROLLBACK to a COMMIT of a failed transaction
    assert cur.statusmessage == "ROLLBACK"
    assert _count(a, tname) == 0


def test_psycopg_transaction_blocks(connect, tname):
    a = connect()
    a.execute(f"CREATE TABLE {tname} (id INT PRIMARY KEY, v INT)")
    with a.transaction():
        a.execute(f"INSERT INTO {tname} VALUES (1, 1)")
    with pytest.raises(RuntimeError):
        with a.transaction():
            a.execute(f"INSERT INTO {tname} VALUES (2, 2)")
            raise RuntimeError("client-side failure -> ROLLBACK")
    assert a.execute(f"SELECT id FROM {tname}").fetchall() == [(1,)]


def test_non_autocommit_connection(connect, tname):
    setup = connect()
    setup.execute(f"CREATE TABLE {tname} (id INT)")
    c = connect(autocommit=False)  # psycopg's default: implicit BEGIN before the first statement
    c.execute(f"INSERT INTO {tname} VALUES (1)")
    assert _count(setup, tname) == 0
    c.commit()
    assert _count(setup, tname) == 1
    c.execute(f"INSERT INTO {tname} VALUES (2)")
    c.rollback()
    assert _count(setup, tname) == 1


def test_transaction_sees_one_snapshot_of_other_commits(connect, tname):
    a, b = connect(), connect()
    a.execute(f"CREATE TABLE {tname} (id INT PRIMARY KEY, v INT)")
    a.execute(f"INSERT INTO {tname} VALUES (1, 100), (2, 100)")
    b.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
    assert b.execute(f"SELECT sum(v) FROM {tname}").fetchone() == (200,)
    # a transfer committed by another session while b's transaction is open
    with a.transaction():
        a.execute(f"UPDATE {tname} SET v = v - 30 WHERE id = 1")
        a.execute(f"UPDATE {tname} SET v = v + 30 WHERE id = 2")
    a.execute(f"INSERT INTO {tname} VALUES (3, 5)")
    assert b.execute(f"SELECT id, v FROM {tname} ORDER BY id").fetchall() == [(1, 100), (2, 100)]
    b.execute("COMMIT")
    assert b.execute(f"SELECT id, v FROM {tname} ORDER BY id").fetchall() == [(1, 70), (2, 130), (3, 5)]


def test_statement_sees_consistent_totals_during_concurrent_transfers(connect, tname):
    """Every statement reads one snapshot: concurrent balanced transfers never change the sum it sees."""
    import threading

    a = connect()
    a.execute(f"CREATE TABLE {tname} (id INT PRIMARY KEY, v BIGINT NOT NULL)")
    a.execute(f"INSERT INTO {tname} SELECT g, 1000 FROM generate_series(1, 50) AS s(g)")
    stop = threading.Event()
    errors_seen = []

    def mover():
        w = connect()
        i = 0
        try:
            while not stop.is_set() and i < 400:
                src, dst = i % 50 + 1, (i * 7 + 3) % 50 + 1
                with w.transaction():
                    w.execute(f"UPDATE {tname} SET v = v - 1 WHERE id = %s", (src,))
                    w.execute(f"UPDATE {tname} SET v = v + 1 WHERE id = %s", (dst,))
                i += 1
        except Exception as e:  # report, don't hide
            errors_seen.append(e)

    t = threading.Thread(target=mover)
    t.start()
    sums = []
    try:
        for _ in range(100):
            sums.append(a.execute(f"SELECT sum(v) FROM {tname}").fetchone()[0])
    finally:
        stop.set()
        t.join()
    assert not errors_seen, errors_seen
    assert set(sums) == {50 * 1000}
    assert a.execute(f"SELECT sum(v) FROM {tname}").fetchone() == (50000,)


def test_savepoints(connect, tname):
    a, b = connect(autocommit=True), connect(autocommit=True)
    a.execute(f"CREATE TABLE {tname} (id INT PRIMARY KEY, v TEXT)")
    a.execute("BEGIN")
    a.execute(f"INSERT INTO {tname} VALUES (1, 'kept')")
    a.execute("SAVEPOINT s1")
    a.execute(f"INSERT INTO {tname} VALUES (2, 'undone')")
    a.execute(f"UPDATE {tname} SET v = 'undone too' WHERE id = 1")
    a.execute("SAVEPOINT s2")
    a.execute(f"INSERT INTO {tname} VALUES (3, 'undone with s1')")
    a.execute("ROLLBACK TO SAVEPOINT s1")
    assert a.execute(f"SELECT id, v FROM {tname} ORDER BY id").fetchall() == [(1, "kept")]
    # s2 went with the rollback; s1 stays and can be used again
    with pytest.raises(errors.InvalidSavepointSpecification):
        a.execute("RELEASE SAVEPOINT s2")
    a.execute("ROLLBACK TO s1")  # also leaves the aborted state
    a.execute(f"INSERT INTO {tname} VALUES (4, 'after')")
    # a failed statement is undone by rolling back to a savepoint
    a.execute("SAVEPOINT s3")
    with pytest.raises(errors.UniqueViolation):
        a.execute(f"INSERT INTO {tname} VALUES (1, 'dup')")
    with pytest.raises(errors.InFailedSqlTransaction):
        a.execute("SELECT 1")
    a.execute("ROLLBACK TO SAVEPOINT s3")
    a.execute("RELEASE s3")
    assert _count(b, tname) == 0
    a.execute("COMMIT")
    assert b.execute(f"SELECT id, v FROM {tname} ORDER BY id").fetchall() == [(1, "kept"), (4, "after")]


def test_savepoint_outside_a_block_and_psycopg_nested_transactions(connect, tname):
    conn = connect(autocommit=True)
    with pytest.raises(errors.NoActiveSqlTransaction):
        conn.execute("SAVEPOINT nope")
    conn.execute(f"CREATE TABLE {tname} (id INT PRIMARY KEY)")
    with conn.transaction():
        conn.execute(f"INSERT INTO {tname} VALUES (1)")
        try:
            with conn.transaction():  # psycopg uses SAVEPOINT for the inner block
                conn.execute(f"INSERT INTO {tname} VALUES (2)")
                conn.execute(f"INSERT INTO {tname} VALUES (1)")
        except errors.UniqueViolation:
            pass
        conn.execute(f"INSERT INTO {tname} VALUES (3)")
    assert conn.execute(f"SELECT id FROM {tname} ORDER BY id").fetchall() == [(1,), (3,)]
