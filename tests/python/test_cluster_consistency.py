"""Reads across shards see each transaction whole (ADR 0011): a bank workload on a real cluster.

One coordinator and two workers of the quiver binary. Writers move money between accounts that
live on different shards (and workers), in explicit transactions and as single statements; a
reader sums every balance over and over. The total never changes, so every sum the reader sees
must be the same. Before ADR 0011 every such read could see one half of a two-phase commit.
"""

from __future__ import annotations

import random
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts" / "lib"))
from servers import running_cluster  # noqa: E402

pytestmark = pytest.mark.usefixtures("quiver_only")

ACCOUNTS = 40
START = 1000
TOTAL = ACCOUNTS * START


def _setup(c, table: str, shards: int = 8, distribute: bool = True):
    with psycopg.connect(c.dsn, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, balance bigint NOT NULL)")
        if not distribute:
            conn.execute(f"INSERT INTO {table} SELECT g, {START} FROM generate_series(1, {ACCOUNTS}) AS s(g)")
            return
        conn.execute(f"SELECT create_distributed_table('{table}', 'id', shard_count => {shards})")
        conn.execute(f"INSERT INTO {table} SELECT g, {START} FROM generate_series(1, {ACCOUNTS}) AS s(g)")
        # the accounts really are spread over both workers
        nodes = conn.execute(
            "SELECT count(DISTINCT p.nodeid) FROM pg_dist_shard s "
            "JOIN pg_dist_placement p USING (shardid) WHERE s.logicalrelid = %s", (table,)
        ).fetchone()[0]
        assert nodes == 2


def _transfers(dsn: str, table: str, seed: int, stop: threading.Event, stats: dict, lock: threading.Lock):
    rng = random.Random(seed)
    with psycopg.connect(dsn, autocommit=True) as w:
        while not stop.is_set():
            a, b = rng.sample(range(1, ACCOUNTS + 1), 2)
            amount = rng.randint(1, 50)
            try:
                if rng.random() < 0.5:
                    with w.transaction():
                        w.execute(f"UPDATE {table} SET balance = balance - %s WHERE id = %s", (amount, a))
                        w.execute(f"UPDATE {table} SET balance = balance + %s WHERE id = %s", (amount, b))
                else:
                    # one statement, two shards
                    w.execute(
                        f"UPDATE {table} SET balance = balance + CASE WHEN id = %s THEN -%s ELSE %s END "
                        f"WHERE id IN (%s, %s)", (a, amount, amount, a, b))
                key = "committed"
            except (psycopg.errors.SerializationFailure, psycopg.errors.DeadlockDetected):
                key = "conflicts"  # two writers met on rows; the sum is unaffected
            with lock:
                stats[key] = stats.get(key, 0) + 1


def _run_bank(c, table: str, seconds: float, query: str):
    stop = threading.Event()
    stats: dict = {}
    lock = threading.Lock()
    writers = [threading.Thread(target=_transfers, args=(c.dsn, table, s, stop, stats, lock)) for s in range(3)]
    for t in writers:
        t.start()
    sums: list[int] = []
    try:
        with psycopg.connect(c.dsn, autocommit=True) as r:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                sums.append(r.execute(query).fetchone()[0])
    finally:
        stop.set()
        for t in writers:
            t.join(30)
    return sums, stats


def test_bank_sum_never_changes_during_transfers(two_workers):
    _setup(two_workers, "bank")
    sums, stats = _run_bank(two_workers, "bank", 8, "SELECT sum(balance) FROM bank")
    wrong = [s for s in sums if s != TOTAL]
    assert stats.get("committed", 0) >= 100, f"too few transfers to mean anything: {stats}"
    assert len(sums) >= 50, f"too few reads: {len(sums)}"
    assert not wrong, f"{len(wrong)} of {len(sums)} reads saw a partial transfer, e.g. {wrong[:5]}; {stats}"
    with psycopg.connect(two_workers.dsn, autocommit=True) as conn:
        assert conn.execute("SELECT sum(balance), count(*) FROM bank").fetchone() == (TOTAL, ACCOUNTS)


def test_bank_sum_never_changes_on_a_standalone_node(server):
    """The same workload on one node (local tables): the baseline the cluster must equal."""
    table = f"bank_sa_{time.monotonic_ns()}"
    _setup(server, table, distribute=False)
    sums, stats = _run_bank(server, table, 8, f"SELECT sum(balance) FROM {table}")
    wrong = [s for s in sums if s != TOTAL]
    assert stats.get("committed", 0) >= 200, f"too few transfers to mean anything: {stats}"
    assert not wrong, f"{len(wrong)} of {len(sums)} reads saw a partial transfer, e.g. {wrong[:5]}"
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        assert conn.execute(f"SELECT sum(balance), count(*) FROM {table}").fetchone() == (TOTAL, ACCOUNTS)


def test_reads_through_a_shuffle_see_transfers_whole(two_workers):
    """A join on a column that is not the distribution column reads the shards in map tasks."""
    _setup(two_workers, "bank2")
    with psycopg.connect(two_workers.dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE owners (id int PRIMARY KEY, acct int NOT NULL)")
        conn.execute("SELECT create_distributed_table('owners', 'id', shard_count => 4)")
        conn.execute(f"INSERT INTO owners SELECT g, g FROM generate_series(1, {ACCOUNTS}) AS s(g)")
    query = "SELECT sum(b.balance) FROM owners o JOIN bank2 b ON b.id = o.acct"
    sums, stats = _run_bank(two_workers, "bank2", 5, query)
    wrong = [s for s in sums if s != TOTAL]
    assert stats.get("committed", 0) >= 50, stats
    assert len(sums) >= 10, len(sums)
    assert not wrong, f"{len(wrong)} of {len(sums)} reads saw a partial transfer, e.g. {wrong[:5]}"


def test_repeatable_read_block_sees_one_snapshot_across_shards(two_workers):
    _setup(two_workers, "bank3")
    with psycopg.connect(two_workers.dsn, autocommit=True) as a, \
            psycopg.connect(two_workers.dsn, autocommit=True) as b:
        b.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        assert b.execute("SELECT sum(balance) FROM bank3").fetchone() == (TOTAL,)
        with a.transaction():
            a.execute("UPDATE bank3 SET balance = balance - 7 WHERE id = 1")
            a.execute("UPDATE bank3 SET balance = balance + 7 WHERE id = 2")
        a.execute("INSERT INTO bank3 VALUES (1000, 5)")
        # the block still reads the snapshot of its first statement, on every shard
        assert b.execute("SELECT sum(balance), count(*) FROM bank3").fetchone() == (TOTAL, ACCOUNTS)
        b.execute("COMMIT")
        assert b.execute("SELECT sum(balance), count(*) FROM bank3").fetchone() == (TOTAL + 5, ACCOUNTS + 1)


def test_pgbench_tpcb_on_the_cluster_fails_nothing_and_copies_agree():
    """pgbench's TPC-B-like transaction with accounts and history distributed and branches and
    tellers as reference tables (as Citus's docs set it up): four clients meet on the one branch
    row on every worker; they wait for each other, none fails, and afterwards every worker's copy
    of each reference table is the same (read from each worker's data directory on its own)."""
    from test_pgbench import check_tpcb_balances, run_tpcb, tpcb_tables
    from servers import QuiverServer

    with running_cluster(workers=2) as c:
        with psycopg.connect(c.dsn, autocommit=True) as conn:
            tpcb_tables(conn, distribute=True)
            done, failed, out = run_tpcb(c.coordinator.port, c.coordinator.user, c.coordinator.dbname, 8)
            assert failed == 0, out
            assert done >= 20, out
            check_tpcb_balances(conn, done)
            shards = dict(conn.execute(
                "SELECT logicalrelid::text, shardid FROM pg_dist_shard "
                "WHERE logicalrelid::text IN ('pgbench_branches', 'pgbench_tellers')").fetchall())
            want = {t: conn.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall() for t in shards}
        for w in c.workers:
            w.stop()
        for w in c.workers:
            with QuiverServer(data_dir=w.data_dir) as alone, \
                    psycopg.connect(alone.dsn, autocommit=True) as conn:
                for table, shard in shards.items():
                    got = conn.execute(f"SELECT * FROM {table}_{shard} ORDER BY 1").fetchall()
                    assert got == want[table], f"{table} differs on worker {w.rpc_port}"
