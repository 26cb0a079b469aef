"""Distributed tables on a real cluster: one coordinator and three workers of the quiver binary.

Everything goes through the coordinator's pgwire port with psycopg, as a user would: distribute
tables, write with INSERT/COPY/UPDATE/DELETE, read with SQL, and compare TPC-H answers with DuckDB.
Crashes are real SIGKILLs of the processes.
"""

from __future__ import annotations

import re
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts" / "lib"))
sys.path.insert(0, str(ROOT / "bench"))
from servers import QuiverCluster  # noqa: E402

pytestmark = pytest.mark.usefixtures("quiver_only")


def connect(c: QuiverCluster, autocommit: bool = True) -> psycopg.Connection:
    return psycopg.connect(c.dsn, autocommit=autocommit)


def explain(conn, sql: str) -> str:
    return "\n".join(r[-1] for r in conn.execute(f"EXPLAIN {sql}").fetchall())


def test_distributed_table_lifecycle(cluster):
    with connect(cluster) as c:
        c.execute("CREATE TABLE events (tenant int NOT NULL, id bigint NOT NULL, payload text, "
                  "PRIMARY KEY (tenant, id))")
        c.execute("INSERT INTO events SELECT v % 10, v, 'p' || v FROM generate_series(1, 500) AS t(v)")
        c.execute("SELECT create_distributed_table('events', 'tenant', shard_count => 8)")
        # existing rows moved into the shards; the shell is empty but the table reads the same
        assert c.execute("SELECT count(*), sum(id) FROM events").fetchone() == (500, 125250)
        assert c.execute("SELECT count(*) FROM pg_dist_shard WHERE logicalrelid = 'events'").fetchone()[0] == 8
        nodes = c.execute(
            "SELECT count(DISTINCT p.nodeid) FROM pg_dist_placement p JOIN pg_dist_shard s "
            "ON p.shardid = s.shardid WHERE s.logicalrelid = 'events'").fetchone()[0]
        assert nodes == 3
        assert c.execute("SELECT partmethod, partkey FROM pg_dist_partition "
                         "WHERE logicalrelid = 'events'").fetchone() == ("h", "tenant")
        for catalog in ("pg_dist_node", "pg_dist_partition", "pg_dist_shard"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                c.execute(f"DROP TABLE {catalog}")
        assert c.execute("SELECT count(*) FROM pg_dist_node WHERE noderole = 'worker'").fetchone()[0] == 3

        # writes are routed; reads by the distribution column touch one shard
        c.execute("INSERT INTO events VALUES (3, 1000, 'x'), (4, 1001, 'y'), (5, 1002, 'z')")
        assert c.execute("SELECT payload FROM events WHERE tenant = 4 AND id = 1001").fetchone() == ("y",)
        plan = explain(c, "SELECT * FROM events WHERE tenant = 4")
        assert "ShardScanExec" in plan and "shards=1 " in plan, plan
        plan = explain(c, "SELECT * FROM events WHERE tenant IN (4, 5)")
        assert "shards=1 " in plan or "shards=2 " in plan, plan
        plan_all = explain(c, "SELECT * FROM events")
        assert "shards=8 " in plan_all, plan_all

        # a duplicate key on a shard is 23505 and the session goes on
        with pytest.raises(psycopg.errors.UniqueViolation):
            c.execute("INSERT INTO events VALUES (4, 1001, 'dup')")
        assert c.execute("SELECT count(*) FROM events").fetchone()[0] == 503

        # UPDATE and DELETE reach the shards they can touch
        assert c.execute("UPDATE events SET payload = 'u' WHERE tenant = 3").rowcount == 51
        assert c.execute("SELECT count(*) FROM events WHERE payload = 'u'").fetchone()[0] == 51
        assert c.execute("DELETE FROM events WHERE id > 1000").rowcount == 2
        with pytest.raises(psycopg.errors.FeatureNotSupported):
            c.execute("UPDATE events SET tenant = 99 WHERE id = 1")

        # aggregates, joins with a local table, ordering
        c.execute("CREATE TABLE tenants (tenant int, name text)")
        c.execute("INSERT INTO tenants SELECT v, 't' || v FROM generate_series(0, 9) AS t(v)")
        rows = c.execute("SELECT t.name, count(*) FROM events e JOIN tenants t ON e.tenant = t.tenant "
                         "GROUP BY t.name ORDER BY t.name").fetchall()
        assert len(rows) == 10 and sum(n for _, n in rows) == 501

        # COPY routes rows too
        with c.cursor().copy("COPY events (tenant, id, payload) FROM STDIN") as cp:
            for i in range(2000, 2300):
                cp.write(f"{i % 7}\t{i}\tcopied\n")
        assert c.execute("SELECT count(*) FROM events WHERE payload = 'copied'").fetchone()[0] == 300

        # DDL reaches every shard
        c.execute("ALTER TABLE events ADD COLUMN note text")
        c.execute("INSERT INTO events VALUES (1, 5000, 'n', 'hello')")
        assert c.execute("SELECT note FROM events WHERE tenant = 1 AND id = 5000").fetchone() == ("hello",)
        assert c.execute("SELECT count(*) FROM events WHERE note IS NULL").fetchone()[0] == 801
        c.execute("ALTER TABLE events DROP COLUMN note")
        assert [d.name for d in c.execute("SELECT * FROM events LIMIT 1").description] == ["tenant", "id", "payload"]
        with pytest.raises(psycopg.errors.FeatureNotSupported):
            c.execute("ALTER TABLE events DROP COLUMN tenant")

        c.execute("TRUNCATE events")
        assert c.execute("SELECT count(*) FROM events").fetchone()[0] == 0
        c.execute("DROP TABLE events")
        assert c.execute("SELECT count(*) FROM pg_dist_shard").fetchone()[0] == 0
        with pytest.raises(psycopg.errors.UndefinedTable):
            c.execute("SELECT * FROM events")


def test_transactions_span_shards(cluster):
    with connect(cluster) as c:
        c.execute("CREATE TABLE acct (id int PRIMARY KEY, balance int NOT NULL)")
        c.execute("SELECT create_distributed_table('acct', 'id', shard_count => 6)")
        c.execute("INSERT INTO acct SELECT v, 100 FROM generate_series(1, 60) AS t(v)")
    with connect(cluster, autocommit=False) as a, connect(cluster) as b:
        a.execute("INSERT INTO acct SELECT v, 1 FROM generate_series(61, 120) AS t(v)")
        a.execute("UPDATE acct SET balance = balance - 10 WHERE id <= 30")
        # the writer sees its own writes, others do not, until COMMIT
        assert a.execute("SELECT count(*), sum(balance) FROM acct").fetchone() == (120, 5760)
        assert b.execute("SELECT count(*), sum(balance) FROM acct").fetchone() == (60, 6000)
        # the router path (a point query on the key goes to one shard) too, with parameters
        assert a.execute("SELECT balance FROM acct WHERE id = %s", (61,)).fetchone() == (1,)
        assert a.execute("SELECT balance FROM acct WHERE id = 7").fetchone() == (90,)
        assert b.execute("SELECT balance FROM acct WHERE id = %s", (61,)).fetchone() is None
        a.commit()
        assert b.execute("SELECT balance FROM acct WHERE id = %s", (61,)).fetchone() == (1,)
        assert b.execute("SELECT count(*), sum(balance) FROM acct").fetchone() == (120, 5760)
        a.execute("DELETE FROM acct WHERE id > 60")
        a.rollback()
        assert b.execute("SELECT count(*) FROM acct").fetchone()[0] == 120
        # a failing statement in a multi-shard transaction takes all of it back
        a.execute("INSERT INTO acct VALUES (500, 1), (501, 1), (502, 1)")
        with pytest.raises(psycopg.errors.UniqueViolation):
            a.execute("INSERT INTO acct VALUES (503, 1), (1, 1)")
        a.rollback()
        assert b.execute("SELECT count(*) FROM acct WHERE id >= 500").fetchone()[0] == 0


def test_reference_table_on_every_worker(cluster):
    with connect(cluster) as c:
        c.execute("CREATE TABLE region (r_id int PRIMARY KEY, r_name text)")
        c.execute("INSERT INTO region VALUES (1, 'north'), (2, 'south')")
        c.execute("SELECT create_reference_table('region')")
        placements = c.execute(
            "SELECT count(*) FROM pg_dist_placement p JOIN pg_dist_shard s ON p.shardid = s.shardid "
            "WHERE s.logicalrelid = 'region'").fetchone()[0]
        assert placements == 3
        c.execute("INSERT INTO region VALUES (3, 'east')")
        c.execute("CREATE TABLE sales (r_id int, amount int)")
        c.execute("SELECT create_distributed_table('sales', 'r_id')")
        c.execute("INSERT INTO sales VALUES (1, 10), (2, 20), (3, 30), (3, 5)")
        rows = c.execute("SELECT r_name, sum(amount) FROM sales JOIN region USING (r_id) "
                         "GROUP BY r_name ORDER BY r_name").fetchall()
        assert rows == [("east", 35), ("north", 10), ("south", 20)]
    # every worker got every write: the copies agree when read one by one
    with connect(cluster) as c:
        assert c.execute("SELECT count(*) FROM region").fetchone()[0] == 3


def test_worker_down_is_a_clean_error(cluster):
    with connect(cluster) as c:
        c.execute("CREATE TABLE t (k int, v int)")
        c.execute("SELECT create_distributed_table('t', 'k', shard_count => 6)")
        c.execute("INSERT INTO t SELECT v, v FROM generate_series(1, 100) AS s(v)")
        cluster.workers[1].kill()
        t0 = time.monotonic()
        with pytest.raises(psycopg.errors.ConnectionFailure) as err:
            c.execute("SELECT sum(v) FROM t").fetchone()
        assert time.monotonic() - t0 < 30
        msg = str(err.value)
        assert "worker 127.0.0.1:" in msg and "shard" in msg, msg
        # the session goes on
        assert c.execute("SELECT 1").fetchone() == (1,)


def _batches_all_or_nothing_across_a_sigkill(cluster, table: str, victim) -> None:
    """Writes batches of rows over 6 shards (each INSERT one distributed transaction) while
    `victim` (a node of `cluster`) is SIGKILLed and started again on its data directory; then
    every batch is on all its shards or on none, and every acknowledged batch is there."""
    batch = 120
    with connect(cluster) as c:
        c.execute(f"CREATE TABLE {table} (id bigint, batch int)")
        c.execute(f"SELECT create_distributed_table('{table}', 'id', shard_count => 6)")
    acked: list[int] = []
    stop = threading.Event()

    def writer():
        try:
            with connect(cluster) as w:
                for b in range(1, 100000):
                    if stop.is_set():
                        return
                    w.execute(f"INSERT INTO {table} SELECT {b} * 1000 + v, {b} "
                              f"FROM generate_series(1, {batch}) AS t(v)")
                    acked.append(b)
        except psycopg.Error:
            return

    t = threading.Thread(target=writer)
    t.start()
    deadline = time.monotonic() + 60
    while len(acked) < 5:
        assert time.monotonic() < deadline and t.is_alive(), "writer made no progress"
        time.sleep(0.01)
    victim.kill()
    stop.set()
    t.join(30)
    victim.start()
    with connect(cluster) as c:
        # Recovery resolves the transactions the crash left prepared on the workers; until a
        # decided commit has reached all its workers, a read waits for it (ADR 0011) and never
        # sees a batch on some shards only. (It may give up with 40001 if recovery is slow.)
        deadline = time.monotonic() + 60
        while True:
            try:
                counts = dict(c.execute(f"SELECT batch, count(*) FROM {table} GROUP BY batch").fetchall())
                break
            except (psycopg.errors.SerializationFailure, psycopg.OperationalError):
                assert time.monotonic() < deadline, "no consistent read after the restart"
                time.sleep(0.1)  # retry pause while recovery runs
        partial = {b: n for b, n in counts.items() if n != batch}
        assert not partial, f"a read saw batches on some shards only: {partial}"
        missing = [b for b in acked if counts.get(b) != batch]
        assert not missing, f"acknowledged batches lost: {missing}"


def test_coordinator_sigkill_leaves_all_or_nothing(cluster):
    _batches_all_or_nothing_across_a_sigkill(cluster, "ledger", cluster.coordinator)


def test_worker_sigkill_keeps_prepared_transactions(cluster):
    # A worker killed between prepare and commit finds its prepared transactions in its log
    # when it starts again (ADR 0015), and the coordinator's recovery commits or aborts them.
    _batches_all_or_nothing_across_a_sigkill(cluster, "ledger_w", cluster.workers[0])


def test_tpch_matches_duckdb(cluster, tmp_path):
    import common
    import tpch
    assert (common.QUERIES / "q1.sql").exists(), (
        f"TPC-H query texts not found at {common.QUERIES}: set TPCH_QUERIES to shared/tpch/queries")
    sf = 0.01
    parquet = common.tpch_data(sf, "parquet")
    csv = common.tpch_data(sf, "csv")
    # the benchmark's distribution, with fewer shards to keep the test quick
    setup = [s.replace("')", "', shard_count => 8)") if "distributed" in s and "colocate" not in s else s
             for s in tpch.DISTRIBUTION]
    tpch.load_target(cluster.dsn, csv, parquet, setup=setup)
    with connect(cluster) as c:
        kinds = dict(c.execute("SELECT logicalrelid, partmethod FROM pg_dist_partition").fetchall())
        assert kinds == {"orders": "h", "lineitem": "h", "customer": "h", "part": "h",
                         "partsupp": "h", "supplier": "h", "nation": "n", "region": "n"}
        co = c.execute("SELECT count(DISTINCT colocationid) FROM pg_dist_partition "
                       "WHERE logicalrelid IN ('orders', 'lineitem')").fetchone()[0]
        assert co == 1
    duck = tpch.DuckDB(parquet, 2)
    target = tpch.PgWire(cluster.dsn, 300)
    failures = []
    for n in range(1, 23):
        stmts = tpch.load_query(n)
        ai = tpch.answer_index(stmts)
        want = duck.run(stmts, ai)
        try:
            got = target.run(stmts, ai)
        except Exception as e:  # report every query, not just the first failure
            failures.append(f"q{n}: {type(e).__name__}: {e}")
            target.cleanup_after_error(stmts)
            continue
        diff = tpch.compare(got, want, tpch.has_order_by(stmts[ai]))
        if diff:
            failures.append(f"q{n}: {diff}")
    assert not failures, "\n".join(failures)


def test_colocated_work_runs_on_the_workers(cluster):
    """Joins of co-located tables, joins with reference tables and aggregates grouped by the
    distribution column run inside the shard fragments; answers equal the same query over
    identical local tables on the coordinator."""
    with connect(cluster) as c:
        for suffix in ("", "_local"):
            c.execute(f"CREATE TABLE o{suffix} (ok int, cust int, d date)")
            c.execute(f"CREATE TABLE l{suffix} (ok int, qty int, price numeric(12,2))")
            c.execute(f"CREATE TABLE n{suffix} (nk int, name text)")
            c.execute(f"INSERT INTO o{suffix} SELECT v, v % 5, DATE '2020-01-01' + v "
                      "FROM generate_series(1, 400) AS t(v)")
            c.execute(f"INSERT INTO l{suffix} SELECT v % 400 + 1, v, v * 1.5 FROM generate_series(1, 1200) AS t(v)")
            c.execute(f"INSERT INTO n{suffix} SELECT v, 'n' || v FROM generate_series(0, 4) AS t(v)")
        c.execute("SELECT create_distributed_table('o', 'ok', shard_count => 4)")
        c.execute("SELECT create_distributed_table('l', 'ok', colocate_with => 'o')")
        c.execute("SELECT create_reference_table('n')")
        queries = [
            "SELECT o.ok, sum(l.qty), max(l.price) FROM o JOIN l ON o.ok = l.ok "
            "WHERE o.d > DATE '2020-02-01' GROUP BY o.ok ORDER BY 2 DESC, 1 LIMIT 7",
            "SELECT n.name, count(*), sum(l.price) FROM o JOIN n ON o.cust = n.nk JOIN l ON l.ok = o.ok "
            "GROUP BY n.name ORDER BY 1",
            "SELECT o.cust, count(DISTINCT l.qty % 7) FROM o LEFT JOIN l ON o.ok = l.ok GROUP BY o.cust ORDER BY 1",
            "SELECT count(*) FROM o WHERE NOT EXISTS (SELECT 1 FROM l WHERE l.ok = o.ok AND l.qty > 1000)",
            # partial aggregates on the shards, final ones on the coordinator
            "SELECT l.qty % 3 AS k, count(*), sum(l.price), avg(l.price), min(l.qty), max(l.qty) "
            "FROM l GROUP BY l.qty % 3 ORDER BY 1",
            "SELECT count(*), avg(l.qty), sum(l.price) FROM l WHERE l.qty > 10",
            "SELECT o.cust, count(*), avg(l.qty) FROM o JOIN l ON o.ok = l.ok GROUP BY o.cust ORDER BY 1",
            # top-k: each shard sends its first rows; DISTINCT: each shard its distinct values
            "SELECT l.ok, l.qty, l.price FROM l ORDER BY l.price DESC, l.qty LIMIT 5",
            "SELECT l.ok, l.qty FROM l WHERE l.qty % 2 = 0 ORDER BY l.qty LIMIT 3 OFFSET 4",
            "SELECT DISTINCT l.qty % 11 FROM l ORDER BY 1",
        ]
        for q in queries:
            local = q.replace(" o ", " o_local o ").replace(" l ", " l_local l ").replace(" n ", " n_local n ")
            assert c.execute(q).fetchall() == c.execute(local).fetchall(), q
        plan = explain(c, queries[0])
        frag = next(line for line in plan.splitlines() if "ShardScanExec" in line)
        assert "table=fragment_" in frag and "JOIN" in frag and "GROUP BY" in frag, plan
        plan = explain(c, queries[1])
        assert "INNER JOIN n" in plan, plan
        plan = explain(c, queries[4])
        frag = next(line for line in plan.splitlines() if "ShardScanExec" in line)
        assert "count(" in frag and "GROUP BY" in frag, plan
        for q, part in ((queries[7], "LIMIT 5"), (queries[8], "LIMIT 7")):
            plan = explain(c, q)
            frag = next(line for line in plan.splitlines() if "ShardScanExec" in line)
            assert part in frag and "table=fragment_" in frag, plan
        # grouped by other columns than the distribution column: partials are shuffled by the
        # group, and the workers finish them
        for q in (queries[4], queries[9]):
            plan = explain(c, q)
            frag = next(line for line in plan.splitlines() if "ShardScanExec" in line)
            assert "table=shuffle_agg_l" in frag and "GROUP BY" in frag, plan
        plan = explain(c, queries[5])
        frag = next(line for line in plan.splitlines() if "ShardScanExec" in line)
        assert "table=fragment_l" in frag and "count(" in frag, plan

        # the executor's per-query pool: one stream per worker still answers every query
        c.execute("SET quiver.max_adaptive_executor_pool_size = 1")
        c.execute("SET quiver.executor_slow_start_interval = '0'")
        assert c.execute("SHOW quiver.max_adaptive_executor_pool_size").fetchone() == ("1",)
        for q in queries[:3] + queries[7:]:
            local = q.replace(" o ", " o_local o ").replace(" l ", " l_local l ").replace(" n ", " n_local n ")
            assert c.execute(q).fetchall() == c.execute(local).fetchall(), q
        with pytest.raises(psycopg.errors.InvalidParameterValue):
            c.execute("SET quiver.max_adaptive_executor_pool_size = 0")
        with pytest.raises(psycopg.errors.InvalidParameterValue):
            c.execute("SET quiver.executor_slow_start_interval = 'soon'")
        with pytest.raises(psycopg.errors.CantChangeRuntimeParam):
            c.execute("SET quiver.max_shared_pool_size = 8")
        assert c.execute("SELECT count(*) FROM l").fetchone() == (1200,)


def test_replicated_shards_take_every_write(cluster):
    with connect(cluster) as c:
        c.execute("SET quiver.shard_replication_factor = 2")
        c.execute("CREATE TABLE r2 (k int PRIMARY KEY, v int)")
        c.execute("SELECT create_distributed_table('r2', 'k', shard_count => 4)")
        rows = c.execute(
            "SELECT s.shardid, count(DISTINCT p.nodeid) FROM pg_dist_shard s JOIN pg_dist_placement p "
            "ON p.shardid = s.shardid WHERE s.logicalrelid = 'r2' GROUP BY s.shardid").fetchall()
        assert len(rows) == 4 and all(n == 2 for _, n in rows), rows
        assert c.execute("SELECT DISTINCT replicationfactor FROM pg_dist_colocation c JOIN pg_dist_partition p "
                         "ON p.colocationid = c.colocationid WHERE p.logicalrelid = 'r2'").fetchall() == [(2,)]
        c.execute("INSERT INTO r2 SELECT v, v FROM generate_series(1, 200) AS t(v)")
        assert c.execute("UPDATE r2 SET v = v + 1 WHERE k <= 50").rowcount == 50
        assert c.execute("DELETE FROM r2 WHERE k > 150").rowcount == 50
        assert c.execute("SELECT count(*), sum(v) FROM r2").fetchone() == (150, 11375)
        # a worker dies: once the coordinator suspects it, reads go to the other copies
        dead = cluster.workers[0]
        dead.kill()
        deadline = time.monotonic() + 30
        while c.execute("SELECT health FROM pg_dist_node WHERE nodeport = %s",
                        (dead.rpc_port,)).fetchone() != ("suspect",):
            assert time.monotonic() < deadline, "the killed worker was never suspected"
            time.sleep(0.1)  # poll interval
        assert c.execute("SELECT count(*), sum(v) FROM r2").fetchone() == (150, 11375)
        assert c.execute("SELECT v FROM r2 WHERE k = %s", (10,)).fetchone() == (11,)


def test_joins_on_other_keys_shuffle_between_workers(cluster):
    """Joins of tables not co-located on the join key repartition both inputs between the workers
    (map fragments on every shard, one join per bucket) and answer as local tables do."""
    with connect(cluster) as c:
        for suffix in ("", "_local"):
            c.execute(f"CREATE TABLE cust{suffix} (id int, region int, name text)")
            c.execute(f"CREATE TABLE ord{suffix} (oid bigint, cust int, amount int)")
            c.execute(f"INSERT INTO cust{suffix} SELECT v, v % 7, 'c' || v FROM generate_series(1, 300) AS t(v)")
            c.execute(f"INSERT INTO cust{suffix} VALUES (NULL, 1, 'nobody')")
            c.execute(f"INSERT INTO ord{suffix} SELECT v, CASE WHEN v % 50 = 0 THEN NULL ELSE v % 320 END, v "
                      "FROM generate_series(1, 2000) AS t(v)")
            c.execute(f"CREATE TABLE reg{suffix} (rid int, label text)")
            c.execute(f"INSERT INTO reg{suffix} SELECT v, 'region ' || v FROM generate_series(0, 5) AS t(v)")
        c.execute("SELECT create_distributed_table('cust', 'region', shard_count => 4)")
        c.execute("SELECT create_distributed_table('ord', 'oid', shard_count => 6)")
        c.execute("SELECT create_distributed_table('reg', 'label', shard_count => 2)")
        queries = [
            "SELECT c.region, count(*), sum(o.amount) FROM ord o JOIN cust c ON o.cust = c.id "
            "GROUP BY c.region ORDER BY 1",
            "SELECT c.id, c.name, o.oid FROM cust c LEFT JOIN ord o ON o.cust = c.id "
            "WHERE c.id > 290 OR c.id IS NULL ORDER BY 1, 3",
            "SELECT count(*), count(c.id), count(o.oid) FROM cust c FULL JOIN ord o ON o.cust = c.id",
            "SELECT o.oid, c.name FROM ord o RIGHT JOIN cust c ON o.cust = c.id AND o.amount > 0 "
            "WHERE c.region = 3 ORDER BY 1 NULLS FIRST, 2",
            # a chain: the first join's buckets are the second shuffle's input
            "SELECT r.label, count(*), sum(o.amount) FROM ord o JOIN cust c ON o.cust = c.id "
            "JOIN reg r ON c.region = r.rid GROUP BY r.label ORDER BY 1",
            "SELECT r.label, c.name, o.amount * 2 AS a2 FROM ord o JOIN cust c ON o.cust = c.id "
            "LEFT JOIN reg r ON c.region + 1 = r.rid WHERE o.amount < 40 ORDER BY 3, 2",
            # window functions, CTEs and subqueries give the same answers
            "SELECT c.id, c.region, rank() OVER (PARTITION BY c.region ORDER BY c.id DESC), "
            "sum(c.id) OVER (ORDER BY c.id ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) "
            "FROM cust c WHERE c.id < 40 ORDER BY c.id",
            "WITH big AS (SELECT o.cust, sum(o.amount) AS s FROM ord o GROUP BY o.cust) "
            "SELECT count(*), max(s) FROM big WHERE s > (SELECT avg(o.amount) * 5 FROM ord o)",
            "SELECT c.name FROM cust c WHERE c.id IN (SELECT o.cust FROM ord o WHERE o.amount > 1990) "
            "AND NOT EXISTS (SELECT 1 FROM ord o WHERE o.cust = c.id AND o.amount < 5) ORDER BY 1",
        ]
        for q in queries:
            local = (q.replace(" ord o ", " ord_local o ").replace(" cust c ", " cust_local c ")
                     .replace(" reg r ", " reg_local r "))
            assert c.execute(q).fetchall() == c.execute(local).fetchall(), q
        plan = explain(c, queries[0])
        frag = next(line for line in plan.splitlines() if "ShardScanExec" in line)
        assert "table=shuffle_" in frag and "shuffle into 3 buckets" in frag and "INNER JOIN" in frag, plan
        assert "left x6" in frag and "right x4" in frag, plan
        plan = explain(c, queries[4])
        frag = next(line for line in plan.splitlines() if "ShardScanExec" in line)
        assert "2 steps" in frag and "FROM (SELECT" in frag, plan
        # EXPLAIN ANALYZE: rows and time of every map task; the ord side sends all 2000 rows
        plan = explain(c, "ANALYZE " + queries[0])
        frag = next(line for line in plan.splitlines() if "ShardScanExec" in line)
        ran = re.findall(r"(\w)@[\d.:]+ (\d+) rows in [\d.]+ ms", frag)
        assert len(ran) == 10, plan
        assert sum(int(n) for side, n in ran if side == "l") == 2000, plan
        assert sum(int(n) for side, n in ran if side == "r") == 301, plan

        # a transaction's own writes take part in the shuffle
        c.execute("BEGIN")
        c.execute("INSERT INTO ord VALUES (9001, 299, 5), (9002, 298, 7)")
        assert c.execute("SELECT sum(o.amount) FROM ord o JOIN cust c ON o.cust = c.id "
                         "WHERE o.oid > 9000").fetchone() == (12,)
        c.execute("ROLLBACK")
        # no intermediate result is listed or left visible as a table
        assert c.execute("SELECT count(*) FROM ord o JOIN cust c ON o.cust = c.id WHERE o.oid > 9000"
                         ).fetchone() == (0,)


def test_timestamp_text_and_overflow_checks_in_fragments(cluster):
    """A cast of a timestamptz to text that runs on the workers (filters, grouped
    aggregates) writes it in the coordinator session's TimeZone."""
    with connect(cluster) as c:
        c.execute("CREATE TABLE ev_ts (id int NOT NULL, at timestamptz)")
        c.execute("SELECT create_distributed_table('ev_ts', 'id', shard_count => 4)")
        values = ", ".join(f"({v}, '2024-06-{1 + (12 + v) // 24:02d} {(12 + v) % 24:02d}:00:00+00')"
                           for v in range(1, 25))
        c.execute(f"INSERT INTO ev_ts VALUES {values}")
        c.execute("SET TIME ZONE 'Asia/Tokyo'")
        rows = c.execute("SELECT substr(at::text, 1, 10) AS day, count(*) FROM ev_ts "
                         "GROUP BY 1 ORDER BY 1").fetchall()
        # 13:00 .. 12:00 next day UTC is 22:00 .. 21:00 in Tokyo (+09)
        assert rows == [("2024-06-01", 2), ("2024-06-02", 22)], rows
        assert c.execute("SELECT id, at::text FROM ev_ts WHERE at::text LIKE '%21:00:00+09'").fetchall() == [
            (24, "2024-06-02 21:00:00+09")]
        # integer overflow inside a fragment is 22003 from the worker, and the session goes on
        c.execute("CREATE TABLE ov_int (id int NOT NULL, m int)")
        c.execute("SELECT create_distributed_table('ov_int', 'id', shard_count => 4)")
        c.execute("INSERT INTO ov_int VALUES (1, 1000), (22, 100000000), (23, 1000)")
        with pytest.raises(psycopg.errors.NumericValueOutOfRange):
            c.execute("SELECT sum(id * m) FROM ov_int").fetchall()
        # also from a filter the shards evaluate (their error reaches several partitions)
        with pytest.raises(psycopg.errors.NumericValueOutOfRange):
            c.execute("SELECT count(*) FROM ov_int WHERE id * m > 0").fetchall()
        assert c.execute("SELECT sum(id * m) FROM ov_int WHERE m = 1000").fetchone() == (24000,)
