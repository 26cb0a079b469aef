"""Durability: clean restarts, SIGKILL, and a crash in the middle of a COPY load.

Each test owns its server (data dir kept across restarts) and kills it with
SIGKILL to the whole process group, as a crash would.
"""

import threading
import time

import psycopg
import pytest


def _connect(server, **kw):
    kw.setdefault("autocommit", True)
    return psycopg.connect(server.dsn, connect_timeout=10, **kw)


@pytest.fixture
def own_server(make_server):
    s = make_server()
    s.start()
    yield s
    s.close()


def test_clean_restart_keeps_everything(own_server):
    s = own_server
    with _connect(s) as c:
        c.execute("CREATE TABLE dur_items (id INT PRIMARY KEY, name TEXT NOT NULL, qty INT, at DATE)")
        c.execute("CREATE TABLE dur_other (k TEXT)")
        c.execute("INSERT INTO dur_items SELECT g, 'item' || g, g % 10, DATE '2024-01-01' + g FROM generate_series(1, 3000) AS s(g)")
        c.execute("UPDATE dur_items SET name = 'renamed' WHERE id <= 10")
        c.execute("DELETE FROM dur_items WHERE id > 2990")
        c.execute("INSERT INTO dur_other VALUES ('x'), ('y')")
        c.execute("TRUNCATE dur_other")
        c.execute("INSERT INTO dur_other VALUES ('after truncate')")
        c.execute("CREATE TABLE dur_dropped (a INT)")
        c.execute("DROP TABLE dur_dropped")
        before = c.execute("SELECT id, name, qty, at FROM dur_items ORDER BY id").fetchall()
    assert len(before) == 2990
    code = s.stop()
    assert code == 0, f"clean shutdown exited with {code}"
    s.start()
    with _connect(s) as c:
        assert c.execute("SELECT id, name, qty, at FROM dur_items ORDER BY id").fetchall() == before
        assert c.execute("SELECT k FROM dur_other").fetchall() == [("after truncate",)]
        with pytest.raises(psycopg.errors.UndefinedTable):
            c.execute("SELECT * FROM dur_dropped")
        # constraints still enforced, and writes still work
        with pytest.raises(psycopg.errors.UniqueViolation):
            c.execute("INSERT INTO dur_items VALUES (1, 'dup', 0, NULL)")
        c.execute("INSERT INTO dur_items VALUES (5000, 'new', 1, NULL)")
        assert c.execute("SELECT count(*) FROM dur_items").fetchone() == (2991,)
    # and a second restart after more writes
    assert s.stop() == 0
    s.start()
    with _connect(s) as c:
        assert c.execute("SELECT count(*) FROM dur_items").fetchone() == (2991,)


def test_sigkill_keeps_acknowledged_writes(own_server):
    s = own_server
    with _connect(s) as c:
        c.execute("CREATE TABLE kill_t (id INT PRIMARY KEY, v TEXT)")
        for i in range(200):  # 200 separate autocommit statements, each acknowledged
            c.execute("INSERT INTO kill_t VALUES (%s, %s)", (i, f"v{i}"))
        c.execute("UPDATE kill_t SET v = 'updated' WHERE id < 50")
        c.execute("DELETE FROM kill_t WHERE id >= 190")
    # an open transaction at the moment of the crash must vanish
    open_tx = _connect(s)
    open_tx.execute("BEGIN")
    open_tx.execute("INSERT INTO kill_t VALUES (1000, 'uncommitted')")
    open_tx.execute("UPDATE kill_t SET v = 'uncommitted' WHERE id = 100")
    s.kill()
    open_tx.close()
    s.start()
    with _connect(s) as c:
        rows = c.execute("SELECT id, v FROM kill_t ORDER BY id").fetchall()
    expected = [(i, "updated" if i < 50 else f"v{i}") for i in range(190)]
    assert rows == expected


def test_added_column_defaults_survive_sigkill_and_checkpoint(own_server):
    """ALTER TABLE ... ADD COLUMN ... DEFAULT fills the rows already there; the filled values
    are logged with the ALTER, so a crash (WAL replay) and a checkpoint (rewritten parts)
    both keep them."""
    s = own_server
    with _connect(s) as c:
        c.execute("CREATE TABLE dur_alter (id INT PRIMARY KEY, v TEXT)")
        c.execute("INSERT INTO dur_alter SELECT g, 'r' || g FROM generate_series(1, 300) AS s(g)")
        c.execute("ALTER TABLE dur_alter ADD COLUMN z INT DEFAULT 5")
        c.execute("ALTER TABLE dur_alter ADD COLUMN label TEXT NOT NULL DEFAULT 'x'")
        c.execute("INSERT INTO dur_alter (id) VALUES (1000)")
    s.kill()
    s.start()
    want = [(300, 300 * 5, 301)]
    with _connect(s) as c:
        got = c.execute("SELECT count(*), sum(z) FILTER (WHERE id <= 300), count(*) FILTER (WHERE label = 'x') "
                        "FROM dur_alter").fetchall()
        assert [(got[0][0] - 1, got[0][1], got[0][2])] == want
    s.stop()  # SIGTERM checkpoints: the table's parts are written again, with the new columns
    s.start()
    with _connect(s) as c:
        assert c.execute("SELECT count(*), min(z), max(z), min(label) FROM dur_alter WHERE id <= 300").fetchone() \
            == (300, 5, 5, "x")


def test_sigkill_twice_and_during_recovery_writes(own_server):
    """Crash, restart, write more, crash again: both generations of acknowledged writes survive."""
    s = own_server
    with _connect(s) as c:
        c.execute("CREATE TABLE kill2 (id INT PRIMARY KEY, gen INT)")
        c.execute("INSERT INTO kill2 SELECT g, 1 FROM generate_series(1, 1000) AS s(g)")
    s.kill()
    s.start()
    with _connect(s) as c:
        c.execute("INSERT INTO kill2 SELECT g, 2 FROM generate_series(1001, 1500) AS s(g)")
        c.execute("DELETE FROM kill2 WHERE id <= 100")
    s.kill()
    s.start()
    with _connect(s) as c:
        assert c.execute("SELECT gen, count(*), min(id), max(id) FROM kill2 GROUP BY gen ORDER BY gen").fetchall() == [
            (1, 900, 101, 1000), (2, 500, 1001, 1500)]


class Loader(threading.Thread):
    """Loads batches with COPY, one transaction per batch, and records which were acknowledged."""

    def __init__(self, dsn, rows_per_batch, max_batches, pad=40):
        super().__init__(daemon=True)
        self.dsn = dsn
        self.pad = pad
        self.rows_per_batch = rows_per_batch
        self.max_batches = max_batches
        self.acked: list[int] = []
        self.in_flight: int | None = None
        self.error: Exception | None = None
        self.progress = threading.Condition()

    def batch_data(self, b):
        pad = "x" * self.pad
        return "".join(f"{b}\t{i}\t{pad}{b}-{i}\n" for i in range(self.rows_per_batch)).encode()

    def run(self):
        try:
            with psycopg.connect(self.dsn, autocommit=True, connect_timeout=10) as c:
                cur = c.cursor()
                for b in range(self.max_batches):
                    data = self.batch_data(b)
                    self.in_flight = b
                    with c.transaction():
                        with cur.copy("COPY crash_load (batch, seq, payload) FROM STDIN") as cp:
                            for i in range(0, len(data), 65536):
                                cp.write(data[i:i + 65536])
                    # COMMIT returned: the batch is acknowledged
                    with self.progress:
                        self.acked.append(b)
                        self.in_flight = None
                        self.progress.notify_all()
        except Exception as e:  # the crash ends the loader with a connection error
            self.error = e
        finally:
            with self.progress:
                self.progress.notify_all()


@pytest.mark.parametrize("kill_after,rows_per_batch,pad", [
    (5, 5000, 40), (23, 5000, 40),
    # About 11 MB per batch: each COPY logs full chunks ahead of its commit (staged WAL
    # records), so the kill lands among staged records of an uncommitted batch.
    (3, 60_000, 160)])
def test_crash_during_copy_load(own_server, kill_after, rows_per_batch, pad):
    s = own_server
    with _connect(s) as c:
        c.execute("CREATE TABLE crash_load (batch INT NOT NULL, seq INT NOT NULL, payload TEXT, PRIMARY KEY (batch, seq))")
    loader = Loader(s.dsn, rows_per_batch, max_batches=10_000, pad=pad)
    loader.start()
    deadline = time.monotonic() + 300
    with loader.progress:
        while len(loader.acked) < kill_after and loader.is_alive():
            assert time.monotonic() < deadline, "loader made no progress"
            loader.progress.wait(1)
    assert loader.error is None, f"loader failed before the crash: {loader.error!r}"
    s.kill()  # mid-load: the loader is in the middle of its next batch
    loader.join(60)
    assert not loader.is_alive()
    assert loader.error is not None, "loader finished without noticing the crash"
    acked = set(loader.acked)
    assert len(acked) >= kill_after
    s.start()
    with _connect(s) as c:
        counts = dict(c.execute("SELECT batch, count(*) FROM crash_load GROUP BY batch").fetchall())
        # every acknowledged batch is there, whole
        missing = sorted(b for b in acked if counts.get(b) != rows_per_batch)
        assert not missing, f"acknowledged batches missing or partial after crash: {missing[:10]} " \
                            f"(counts {[counts.get(b) for b in missing[:10]]})"
        # nothing partial, nothing that was never sent
        partial = {b: n for b, n in counts.items() if n != rows_per_batch}
        assert not partial, f"partial batches visible after crash: {partial}"
        unknown = set(counts) - acked - {loader.in_flight}
        assert not unknown, f"batches present that were never sent: {sorted(unknown)}"
        # contents, not just counts
        b = max(acked)
        got = c.execute("SELECT seq, payload FROM crash_load WHERE batch = %s ORDER BY seq", (b,)).fetchall()
        assert got == [(i, f"{'x' * pad}{b}-{i}") for i in range(rows_per_batch)]
        # the table takes writes again, and the in-flight batch number can be loaded
        nxt = max(counts) + 1
        c.execute("INSERT INTO crash_load VALUES (%s, 0, 'after')", (nxt,))
        assert c.execute("SELECT count(*) FROM crash_load WHERE batch = %s", (nxt,)).fetchone() == (1,)


def _big_copy(cur, table, first, n, pad=200):
    """COPY of n rows (ids first..first+n-1), about n * (pad + 10) bytes: big enough that
    full chunks are logged ahead of the commit."""
    data = "".join(f"{i}\t{'z' * pad}{i}\n" for i in range(first, first + n)).encode()
    with cur.copy(f"COPY {table} FROM STDIN") as cp:
        for i in range(0, len(data), 1 << 20):
            cp.write(data[i:i + (1 << 20)])


def test_staged_copy_rows_follow_savepoints_rollbacks_and_failures_across_sigkill(own_server):
    """Large COPYs log their rows ahead of the commit. Only what the transaction finally
    commits may come back after a crash: not a statement rolled back to a savepoint, not
    a rolled-back transaction, not a COPY that failed late."""
    s = own_server
    n = 40_000  # about 8.5 MB per COPY
    with _connect(s) as c:
        c.execute("CREATE TABLE staged (id INT PRIMARY KEY, s TEXT NOT NULL)")
        cur = c.cursor()
        with c.transaction():
            _big_copy(cur, "staged", 0, n)
            c.execute("SAVEPOINT sp")
            _big_copy(cur, "staged", n, n)
            c.execute("ROLLBACK TO SAVEPOINT sp")
            _big_copy(cur, "staged", 2 * n, n)
            # own rows visible inside the transaction
            assert c.execute("SELECT count(*) FROM staged").fetchone() == (2 * n,)
        c.execute("BEGIN")
        _big_copy(cur, "staged", 10 * n, n)
        c.execute("ROLLBACK")
        # A duplicate key at the very end fails the whole COPY after its chunks were staged.
        dup = "".join(f"{i}\t{'q' * 200}\n" for i in range(20 * n, 21 * n)) + "5\tdup\n"
        with pytest.raises(psycopg.errors.UniqueViolation):
            with cur.copy("COPY staged FROM STDIN") as cp:
                cp.write(dup.encode())
        # A NULL into NOT NULL near the end, in its own chunk.
        bad = "".join(f"{i}\t{'q' * 200}\n" for i in range(30 * n, 31 * n)) + "7\t\\N\n"
        with pytest.raises(psycopg.errors.NotNullViolation):
            with cur.copy("COPY staged FROM STDIN") as cp:
                cp.write(bad.encode())
        _big_copy(cur, "staged", 40 * n, n)
        expect = c.execute("SELECT count(*), sum(id), min(id), max(id) FROM staged").fetchone()
    assert expect == (3 * n, sum(range(n)) + sum(range(2 * n, 3 * n)) + sum(range(40 * n, 41 * n)), 0, 41 * n - 1)
    s.kill()
    s.start()
    with _connect(s) as c:
        assert c.execute("SELECT count(*), sum(id), min(id), max(id) FROM staged").fetchone() == expect
        assert c.execute("SELECT s FROM staged WHERE id = %s", (2 * n + 7,)).fetchone() == (f"{'z' * 200}{2 * n + 7}",)
        assert c.execute("SELECT count(*) FROM staged WHERE id >= %s AND id < %s", (n, 2 * n)).fetchone() == (0,)
        # the key index came back too
        with pytest.raises(psycopg.errors.UniqueViolation):
            c.execute("INSERT INTO staged VALUES (%s, 'again')", (40 * n,))
    # and once more after a clean stop (checkpointed into parts)
    assert s.stop() == 0
    s.start()
    with _connect(s) as c:
        assert c.execute("SELECT count(*), sum(id), min(id), max(id) FROM staged").fetchone() == expect
