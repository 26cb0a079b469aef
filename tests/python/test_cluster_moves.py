"""Online shard moves on a real cluster (issue 15, ADR 0013).

One coordinator and two workers of the quiver binary; a third worker joins as a scale-out
would, and shard groups move onto it while clients keep transferring money between accounts
and a reader keeps summing them. Crashes are real: the coordinator aborts at a failpoint of
the move (as a SIGKILL there would stop it) and starts again on its data directory.
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
from servers import QuiverCluster, QuiverWorker, running_cluster  # noqa: E402

pytestmark = pytest.mark.usefixtures("quiver_only")

ACCOUNTS = 2000
START_BALANCE = 1000
SHARDS = 4
# History rows loaded before a rebalance (ids from FILLER up), so that moves copy
# many chunks and commits.
FILLER = 10_000_000
FILLER_ROWS = 1_000_000


@pytest.fixture
def grown():
    """1 coordinator + 2 workers holding a co-located pair and a reference table, then a
    third worker added (holding nothing yet)."""
    with running_cluster(workers=2) as c:
        with psycopg.connect(c.dsn, autocommit=True) as s:
            s.execute("CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL)")
            s.execute(f"SELECT create_distributed_table('accounts', 'id', shard_count => {SHARDS})")
            s.execute("CREATE TABLE transfers (id int, src int, dst int, amount int)")
            s.execute("SELECT create_distributed_table('transfers', 'id', colocate_with => 'accounts')")
            s.execute("CREATE TABLE branches (id int PRIMARY KEY, name text)")
            s.execute("SELECT create_reference_table('branches')")
            s.execute("INSERT INTO branches VALUES (1, 'main'), (2, 'north')")
            s.execute(f"INSERT INTO accounts SELECT v, {START_BALANCE} FROM generate_series(1, {ACCOUNTS}) AS t(v)")
        w = QuiverWorker(c.rpc_port)
        c.workers.append(w)
        w.start()
        c.wait_workers(3)
        with psycopg.connect(c.dsn, autocommit=True) as s:
            # the new worker gets its copy of the reference table by itself
            deadline = time.monotonic() + 30
            while reference_copies(s) < 3:
                assert time.monotonic() < deadline, s.execute("SELECT * FROM quiver_shard_moves").fetchall()
                time.sleep(0.1)  # poll interval: the leader's pass runs every second
        yield c


def reference_copies(conn) -> int:
    return conn.execute("SELECT count(*) FROM pg_dist_placement p JOIN pg_dist_shard s "
                        "ON s.shardid = p.shardid WHERE s.logicalrelid = 'branches'").fetchone()[0]


def node_of(c: QuiverCluster, worker: QuiverWorker) -> tuple[str, int]:
    return ("127.0.0.1", worker.rpc_port)


def placements(conn) -> dict[int, list[int]]:
    """shard id -> node ids of its placements, for the distributed tables."""
    rows = conn.execute("SELECT p.shardid, p.nodeid FROM pg_dist_placement p "
                        "JOIN pg_dist_shard s ON s.shardid = p.shardid "
                        "JOIN pg_dist_partition t ON t.logicalrelid = s.logicalrelid "
                        "WHERE t.partmethod = 'h'").fetchall()
    out: dict[int, list[int]] = {}
    for shard, node in rows:
        out.setdefault(shard, []).append(node)
    return out


def node_id(conn, port: int) -> int:
    return conn.execute("SELECT nodeid FROM pg_dist_node WHERE nodeport = %s", (port,)).fetchone()[0]


def a_shard_on(conn, node: int) -> int:
    return conn.execute("SELECT min(s.shardid) FROM pg_dist_shard s "
                        "JOIN pg_dist_placement p ON p.shardid = s.shardid "
                        "WHERE s.logicalrelid = 'accounts' AND p.nodeid = %s", (node,)).fetchone()[0]


class Bank:
    """4 clients moving money between accounts (each transfer one transaction that also logs a
    row in the co-located `transfers`), and a reader summing every balance."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.stop = threading.Event()
        self.errors: list[str] = []
        self.committed: list[int] = []
        self.sums: list[int] = []
        self.next_id = iter(range(1, 10**9))
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.client, args=(i,)) for i in range(4)]
        self.threads.append(threading.Thread(target=self.reader))

    def client(self, seed: int) -> None:
        rnd = random.Random(seed)
        with psycopg.connect(self.dsn, autocommit=True) as c:
            while not self.stop.is_set():
                a, b = sorted(rnd.sample(range(1, ACCOUNTS + 1), 2))
                amount = rnd.randint(1, 50)
                with self.lock:
                    tid = next(self.next_id)
                try:
                    with c.transaction():
                        c.execute("UPDATE accounts SET balance = balance - %s WHERE id = %s", (amount, a))
                        c.execute("UPDATE accounts SET balance = balance + %s WHERE id = %s", (amount, b))
                        c.execute("INSERT INTO transfers VALUES (%s, %s, %s, %s)", (tid, a, b, amount))
                    self.committed.append(tid)
                except psycopg.Error as e:
                    self.errors.append(f"transfer {tid}: {e.sqlstate} {e}")

    def reader(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as c:
            while not self.stop.is_set():
                try:
                    self.sums.append(c.execute("SELECT sum(balance) FROM accounts").fetchone()[0])
                except psycopg.Error as e:
                    self.errors.append(f"read: {e.sqlstate} {e}")

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(60)

    def wait_for(self, transfers: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        start = len(self.committed)
        while len(self.committed) < start + transfers:
            assert time.monotonic() < deadline, f"clients stalled: {self.errors[-3:]}"
            time.sleep(0.01)  # poll interval


def check_bank(conn, bank: Bank) -> None:
    total = ACCOUNTS * START_BALANCE
    assert conn.execute("SELECT sum(balance), count(*) FROM accounts").fetchone() == (total, ACCOUNTS)
    wrong = [s for s in bank.sums if s != total]
    assert not wrong, f"{len(wrong)} of {len(bank.sums)} reads saw a wrong total, e.g. {wrong[:3]}"
    ids = [r[0] for r in conn.execute(f"SELECT id FROM transfers WHERE id < {FILLER}").fetchall()]
    assert len(ids) == len(set(ids)), "a transfer row is there twice"
    assert sorted(ids) == sorted(bank.committed), "committed transfers and logged ones differ"


def test_moves_under_load_lose_nothing(grown):
    c = grown
    new = c.workers[2]
    with psycopg.connect(c.dsn, autocommit=True) as s:
        old = node_id(s, c.workers[0].rpc_port)
        target = node_id(s, new.rpc_port)
        with Bank(c.dsn) as bank:
            bank.wait_for(50)
            moved = []
            for _ in range(2):
                shard = a_shard_on(s, old)
                s.execute("SELECT quiver_move_shard_placement(%s, '127.0.0.1', %s, '127.0.0.1', %s)",
                          (shard, c.workers[0].rpc_port, new.rpc_port))
                moved.append(shard)
                bank.wait_for(50)
        print(f"transfers committed {len(bank.committed)}, totals read {len(bank.sums)}")
        assert not bank.errors, bank.errors[:5]
        assert len(bank.committed) >= 100 and len(bank.sums) > 10
        check_bank(s, bank)
        where = placements(s)
        for shard in moved:
            assert where[shard] == [target], (shard, where[shard])
            # the co-located transfers shard went with it
            colocated = s.execute(
                "SELECT p.nodeid FROM pg_dist_shard a JOIN pg_dist_shard t ON t.logicalrelid = 'transfers' "
                "JOIN pg_dist_shard x ON x.shardid = %s "
                "JOIN pg_dist_placement p ON p.shardid = t.shardid "
                "WHERE a.shardid = x.shardid AND t.shardminvalue = x.shardminvalue", (shard,)).fetchall()
            assert colocated == [(target,)], colocated
        assert all(len(n) == 1 for n in where.values()), "a shard has two placements"
        jobs = s.execute("SELECT state, count(*) FROM quiver_shard_moves WHERE kind = 'move' "
                         "GROUP BY state").fetchall()
        assert jobs == [("done", 2)], jobs
        # the sources' copies are dropped after the grace period
        deadline = time.monotonic() + 30
        while s.execute("SELECT count(*) FROM pg_dist_cleanup").fetchone()[0]:
            assert time.monotonic() < deadline, s.execute("SELECT * FROM pg_dist_cleanup").fetchall()
            time.sleep(0.2)  # poll interval: the cleaner runs every second
        # writes keep going to the new home, and the reference table still answers
        s.execute("UPDATE accounts SET balance = balance WHERE id IN (SELECT id FROM accounts LIMIT 5)")
        assert s.execute("SELECT count(*) FROM accounts a JOIN branches b ON b.id = 1 + a.id % 2").fetchone()[0] == ACCOUNTS


def test_bad_moves_are_refused_and_change_nothing(grown):
    c = grown
    w0, w1, w2 = (w.rpc_port for w in c.workers)
    with psycopg.connect(c.dsn, autocommit=True) as s:
        before = placements(s)
        shard = a_shard_on(s, node_id(s, w0))
        move = "SELECT quiver_move_shard_placement(%s, '127.0.0.1', %s, '127.0.0.1', %s)"
        cases = [
            ((999999, w0, w2), "42704", "does not exist"),
            ((shard, w0, 1), "42704", "does not exist"),
            ((shard, w1, w2), "55000", "holds no active placement"),
            ((shard, w0, w0), "55000", "already"),
        ]
        ref = s.execute("SELECT shardid FROM pg_dist_shard WHERE logicalrelid = 'branches'").fetchone()[0]
        cases.append(((ref, w0, w2), "55000", "reference table"))
        for args, state, text in cases:
            with pytest.raises(psycopg.Error) as e:
                s.execute(move, args)
            assert e.value.sqlstate == state, (args, e.value.sqlstate, str(e.value))
            assert text in str(e.value), (args, str(e.value))
            assert s.execute("SELECT 1").fetchone() == (1,), "the session goes on"
        # nothing to cancel
        with pytest.raises(psycopg.Error) as e:
            s.execute("SELECT quiver_cancel_rebalance()")
        assert e.value.sqlstate == "55000" and "no rebalance" in str(e.value), str(e.value)
        # a draining target takes no shard
        s.execute("SELECT quiver_drain_node('127.0.0.1', %s)", (w2,))
        with pytest.raises(psycopg.Error) as e:
            s.execute(move, (shard, w0, w2))
        assert e.value.sqlstate == "55000" and "draining" in str(e.value), str(e.value)
        # a target that does not answer takes no shard
        c.workers[1].kill()
        deadline = time.monotonic() + 30
        while s.execute("SELECT health FROM pg_dist_node WHERE nodeport = %s", (w1,)).fetchone()[0] == "healthy":
            assert time.monotonic() < deadline, "the killed worker still looks healthy"
            time.sleep(0.1)  # poll interval: heartbeats
        ref_shard = a_shard_on(s, node_id(s, w0))
        with pytest.raises(psycopg.Error) as e:
            s.execute(move, (ref_shard, w0, w1))
        assert e.value.sqlstate == "55000" and "not answering" in str(e.value), str(e.value)
        c.workers[1].start()
        assert placements(s) == before
        assert s.execute("SELECT count(*) FROM quiver_shard_moves WHERE kind = 'move'").fetchone()[0] == 0


@pytest.mark.parametrize("point", ["move_started", "move_after_copy", "move_fenced",
                                   "move_before_switch", "move_switched"])
def test_coordinator_crash_at_each_step_resumes_or_rolls_back(grown, point):
    c = grown
    coord = c.coordinator
    with psycopg.connect(c.dsn, autocommit=True) as s:
        src = node_id(s, c.workers[0].rpc_port)
        target = node_id(s, c.workers[2].rpc_port)
        shard = a_shard_on(s, src)
        s.execute("INSERT INTO transfers SELECT v, v, v, 1 FROM generate_series(1, 3000) AS t(v)")
    restart_coordinator(c, {"QUIVER_FAILPOINTS": f"{point}=crash"})
    with psycopg.connect(c.dsn, autocommit=True) as s:
        with pytest.raises(psycopg.OperationalError):
            s.execute("SELECT quiver_move_shard_placement(%s, '127.0.0.1', %s, '127.0.0.1', %s)",
                      (shard, c.workers[0].rpc_port, c.workers[2].rpc_port))
    coord.proc.wait(30)
    coord.env = None
    coord.start()
    c.wait_workers(3)
    check_after_fault(c, shard, src, target)


def restart_coordinator(c: QuiverCluster, env: dict | None) -> None:
    c.coordinator.stop()
    c.coordinator.env = env
    c.coordinator.start()
    c.wait_workers(3)


def check_after_fault(c: QuiverCluster, shard: int, src: int, target: int) -> None:
    """The move ended (done or failed), nothing is left to clean up, every row is there
    exactly once, and the next move of the same shard group runs cleanly."""
    with psycopg.connect(c.dsn, autocommit=True) as s:
        # the leader resumes the job (or finds it ended) and cleans up after it
        deadline = time.monotonic() + 60
        while True:
            states = s.execute("SELECT state FROM quiver_shard_moves WHERE kind = 'move'").fetchall()
            cleanups = s.execute("SELECT count(*) FROM pg_dist_cleanup").fetchone()[0]
            if states and states[0][0] in ("done", "failed") and cleanups == 0:
                break
            assert time.monotonic() < deadline, (states, cleanups)
            time.sleep(0.2)  # poll interval: the leader's pass runs every second
        assert len(states) == 1
        where = placements(s)
        assert all(len(n) == 1 for n in where.values()), "a shard has two placements"
        assert where[shard] == ([target] if states[0][0] == "done" else [src])
        assert s.execute("SELECT count(*), sum(balance) FROM accounts").fetchone() == (
            ACCOUNTS, ACCOUNTS * START_BALANCE)
        assert s.execute("SELECT count(*), count(DISTINCT id) FROM transfers").fetchone() == (3000, 3000)
        # the next move of the same shard group runs cleanly
        now = where[shard][0]
        dest = c.workers[2] if now == src else c.workers[0]
        here = c.workers[0] if now == src else c.workers[2]
        s.execute("SELECT quiver_move_shard_placement(%s, '127.0.0.1', %s, '127.0.0.1', %s)",
                  (shard, here.rpc_port, dest.rpc_port))
        assert s.execute("SELECT count(*), count(DISTINCT id) FROM transfers").fetchone() == (3000, 3000)
        assert s.execute("SELECT count(*), sum(balance) FROM accounts").fetchone() == (
            ACCOUNTS, ACCOUNTS * START_BALANCE)


def wait_rebalance(conn, timeout: float = 90) -> list[tuple]:
    """Until no move of get_rebalance_progress() is waiting or running; its rows."""
    deadline = time.monotonic() + timeout
    while True:
        rows = conn.execute("SELECT shardid, sourceport, targetport, state, progress "
                            "FROM get_rebalance_progress()").fetchall()
        if all(r[4] in (2, 3) or r[3] == "cancelled" for r in rows):
            return rows
        assert time.monotonic() < deadline, rows
        time.sleep(0.2)  # poll interval


def spread(conn) -> dict[int, int]:
    """worker node id -> shards of `accounts` it holds."""
    rows = conn.execute("SELECT n.nodeid, count(p.shardid) FROM pg_dist_node n "
                        "LEFT JOIN pg_dist_placement p ON p.nodeid = n.nodeid AND p.shardid IN "
                        "(SELECT shardid FROM pg_dist_shard WHERE logicalrelid = 'accounts') "
                        "WHERE n.noderole = 'worker' GROUP BY n.nodeid").fetchall()
    return dict(rows)


def test_rebalance_then_drain_and_remove_under_load(grown):
    c = grown
    with psycopg.connect(c.dsn, autocommit=True) as s:
        new = node_id(s, c.workers[2].rpc_port)
        assert spread(s)[new] == 0
        s.execute(f"INSERT INTO transfers SELECT {FILLER} + v, v % {ACCOUNTS}, 1, v % 97 "
                  f"FROM generate_series(1, {FILLER_ROWS}) AS t(v)")
        filler = f"SELECT count(*), sum(amount) FROM transfers WHERE id >= {FILLER}"
        before = s.execute(filler).fetchone()
        plan = s.execute("SELECT rebalance_table_shards(dry_run => true)").fetchone()[0]
        assert plan.count("move shard") == 1, plan  # 4 shards on 3 workers: 2/1/1
        assert s.execute("SELECT count(*) FROM get_rebalance_progress()").fetchone()[0] == 0
        with Bank(c.dsn) as bank:
            bank.wait_for(30)
            started = s.execute("SELECT rebalance_table_shards()").fetchone()[0]
            assert "1 moves" in started, started
            with pytest.raises(psycopg.Error) as e:
                s.execute("SELECT rebalance_table_shards()")
            assert e.value.sqlstate == "55000" and "already running" in str(e.value)
            rows = wait_rebalance(s)
            assert [r[3] for r in rows] == ["done"], rows
            assert sorted(spread(s).values()) == [1, 1, 2]
            bank.wait_for(30)
            # scale-in of the worker that just joined: its shard goes back to
            # a worker whose old copy of it the cleaner may not have dropped yet
            gone = c.workers[2]
            moves = s.execute("SELECT quiver_drain_node('127.0.0.1', %s)", (gone.rpc_port,)).fetchone()[0]
            assert moves >= 1
            wait_rebalance(s)
            # new tables get no shard on the draining node
            s.execute("CREATE TABLE later (id int)")
            s.execute("SELECT create_distributed_table('later', 'id', shard_count => 4)")
            held = s.execute("SELECT count(*) FROM pg_dist_placement p JOIN pg_dist_shard x "
                             "ON x.shardid = p.shardid WHERE x.logicalrelid = 'later' "
                             "AND p.nodeid = %s", (node_id(s, gone.rpc_port),)).fetchone()[0]
            assert held == 0
            s.execute("DROP TABLE later")
            assert spread(s)[node_id(s, gone.rpc_port)] == 0
            assert s.execute("SELECT quiver_remove_node('127.0.0.1', %s)", (gone.rpc_port,)).fetchone()[0]
            bank.wait_for(30)
        print(f"transfers committed {len(bank.committed)}, totals read {len(bank.sums)}")
        assert not bank.errors, bank.errors[:5]
        check_bank(s, bank)
        assert sorted(spread(s).values()) == [2, 2]
        assert s.execute(filler).fetchone() == before, "the history rows moved whole"
        assert before[0] == FILLER_ROWS
        assert s.execute("SELECT count(*) FROM pg_dist_node WHERE nodeport = %s",
                         (c.workers[2].rpc_port,)).fetchone()[0] == 0
        # the reference table answers from the workers left
        assert s.execute("SELECT count(*) FROM accounts a JOIN branches b ON b.id = 1 + a.id % 2"
                         ).fetchone()[0] == ACCOUNTS


@pytest.mark.parametrize("victim", ["source", "target"])
@pytest.mark.parametrize("point", ["move_after_copy", "move_fenced", "move_before_switch"])
def test_worker_sigkill_during_a_move(grown, point, victim):
    """The move pauses at a step; meanwhile its source or target worker is SIGKILLed and
    started again on its data directory. The move completes or rolls back, and nothing is
    lost, doubled or left behind."""
    c = grown
    with psycopg.connect(c.dsn, autocommit=True) as s:
        src = node_id(s, c.workers[0].rpc_port)
        target = node_id(s, c.workers[2].rpc_port)
        shard = a_shard_on(s, src)
        s.execute("INSERT INTO transfers SELECT v, v, v, 1 FROM generate_series(1, 3000) AS t(v)")
    restart_coordinator(c, {"QUIVER_FAILPOINTS": f"{point}=pause:3000"})
    outcome: list[str] = []

    def move():
        try:
            with psycopg.connect(c.dsn, autocommit=True) as s:
                s.execute("SELECT quiver_move_shard_placement(%s, '127.0.0.1', %s, '127.0.0.1', %s)",
                          (shard, c.workers[0].rpc_port, c.workers[2].rpc_port))
            outcome.append("done")
        except psycopg.Error as e:
            outcome.append(f"{e.sqlstate}: {e}")

    t = threading.Thread(target=move)
    t.start()
    deadline = time.monotonic() + 30
    while "failpoint reached" not in c.coordinator.log_tail(200):
        assert time.monotonic() < deadline and t.is_alive(), (outcome, c.coordinator.log_tail(20))
        time.sleep(0.02)  # poll interval for the log line
    with psycopg.connect(c.dsn, autocommit=True) as s:
        # the moving tables' schema cannot change under the copy
        with pytest.raises(psycopg.Error) as e:
            s.execute("ALTER TABLE transfers ADD COLUMN note text")
        assert e.value.sqlstate == "55006", str(e.value)
        # and the shard group cannot start a second move
        with pytest.raises(psycopg.Error) as e:
            s.execute("SELECT quiver_move_shard_placement(%s, '127.0.0.1', %s, '127.0.0.1', %s)",
                      (shard, c.workers[0].rpc_port, c.workers[1].rpc_port))
        assert e.value.sqlstate == "55000" and "already being moved" in str(e.value), str(e.value)
    worker = c.workers[0] if victim == "source" else c.workers[2]
    worker.kill()
    worker.start()
    t.join(90)
    assert not t.is_alive(), "the move did not end"
    assert outcome, "the move thread ended without an outcome"
    print(f"{point} {victim}: {outcome[0][:120]}")
    restart_coordinator(c, None)
    check_after_fault(c, shard, src, target)
