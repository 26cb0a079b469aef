#!/usr/bin/env python3
"""Online shard move under load: Quiver against Citus in the same run (issue 15).

`moving (id bigint PRIMARY KEY, v bigint, pad text)`, --rows rows (default 2,000,000) over 4
shards, on 1 coordinator + 2 workers of each system:
- Quiver (`create_distributed_table('moving', 'id', shard_count => 4)`), the release binary;
- Citus 13 (PostgreSQL 15), when built on the machine (../shared/peers/citus), moved with
  `citus_move_shard_placement(..., 'force_logical')`.
While a writer inserts single rows into every shard at about --rate rows/s (autocommit) and a
reader counts the table over and over, one shard group moves from the first worker to the
second. Reported per system:
- the move: seconds, on-disk bytes of the shard (Quiver: bytes copied; Citus: the shard's
  relation size), MB/s and rows/s (rows of the shard, counted after the move);
- write latency before the move and during it: p50, p99 and max, and client errors (writes
  and reads).
Results go to bench/RESULTS.md (section "move").
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time

import psycopg

import common
from common import log
from servers import running_cluster  # noqa: E402  (scripts/lib, put on sys.path by common)

SHARDS = 4
QUIVER = "Quiver 1+2 workers"


class Load:
    """A writer at `rate` single-row inserts/s and a reader, until stopped; latencies per phase."""

    def __init__(self, dsn: str, rows: int, rate: float) -> None:
        self.dsn, self.rate = dsn, rate
        self.next_id = rows + 1
        self.phase = "before"
        self.lat: dict[str, list[float]] = {"before": [], "during": [], "after": []}
        self.errors: list[str] = []
        self.reads = 0
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.writer), threading.Thread(target=self.reader)]

    def writer(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as c:
            period = 1.0 / self.rate
            due = time.monotonic()
            while not self.stop.is_set():
                i = self.next_id
                self.next_id += 1
                t0 = time.monotonic()
                try:
                    c.execute("INSERT INTO moving VALUES (%s, %s, 'new')", (i, i))
                    self.lat[self.phase].append(time.monotonic() - t0)
                except psycopg.Error as e:
                    self.errors.append(f"write {e.sqlstate}: {e}")
                due += period
                pause = due - time.monotonic()
                if pause > 0:
                    time.sleep(pause)  # the offered rate, not a readiness wait

    def reader(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as c:
            while not self.stop.is_set():
                try:
                    c.execute("SELECT count(*) FROM moving").fetchone()
                    self.reads += 1
                except psycopg.Error as e:
                    self.errors.append(f"read {e.sqlstate}: {e}")

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(60)


def pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))] * 1000


def load_table(conn, rows: int, citus: bool) -> None:
    conn.execute("DROP TABLE IF EXISTS moving")
    conn.execute("CREATE TABLE moving (id bigint PRIMARY KEY, v bigint, pad text)")
    if citus:
        conn.execute(f"SET citus.shard_count = {SHARDS}")
        conn.execute("SELECT create_distributed_table('moving', 'id')")
    else:
        conn.execute(f"SELECT create_distributed_table('moving', 'id', shard_count => {SHARDS})")
    step = 250_000
    for lo in range(1, rows + 1, step):
        hi = min(rows, lo + step - 1)
        conn.execute(f"INSERT INTO moving SELECT g, g * 7, 'row ' || g FROM generate_series({lo}, {hi}) AS s(g)")


def measure(dsn: str, rows: int, rate: float, settle: float, move, shard_rows) -> dict:
    """Runs the load, `move()` in the middle; returns the figures."""
    with Load(dsn, rows, rate) as load:
        time.sleep(settle)  # the "before" window of the writer's latencies
        load.phase = "during"
        t0 = time.monotonic()
        moved_bytes = move()
        seconds = time.monotonic() - t0
        load.phase = "after"
        time.sleep(1)  # a short "after" window: writes go to the new placement
    n = shard_rows()
    return {
        "seconds": seconds,
        "bytes": moved_bytes,
        "rows": n,
        "before": load.lat["before"],
        "during": load.lat["during"],
        "errors": load.errors,
        "reads": load.reads,
        "written": sum(len(v) for v in load.lat.values()),
    }


def run_quiver(args) -> dict:
    with running_cluster(workers=2) as c:
        with psycopg.connect(c.dsn, autocommit=True) as s:
            log(f"{QUIVER}: loading {args.rows:,} rows")
            load_table(s, args.rows, citus=False)
            src, dst = c.workers[0].rpc_port, c.workers[1].rpc_port
            shard = s.execute("SELECT min(x.shardid) FROM pg_dist_shard x JOIN pg_dist_placement p "
                              "ON p.shardid = x.shardid JOIN pg_dist_node n ON n.nodeid = p.nodeid "
                              "WHERE x.logicalrelid = 'moving' AND n.nodeport = %s", (src,)).fetchone()[0]

            def move() -> int:
                with psycopg.connect(c.dsn, autocommit=True) as m:
                    m.execute("SELECT quiver_move_shard_placement(%s, '127.0.0.1', %s, '127.0.0.1', %s)",
                              (shard, src, dst))
                    return m.execute("SELECT bytes_copied FROM quiver_shard_moves WHERE shardid = %s",
                                     (shard,)).fetchone()[0]

            def shard_rows() -> int:
                # rows of the table on the target minus those it had: by the shard's share
                total = s.execute("SELECT count(*) FROM moving").fetchone()[0]
                return round(total / SHARDS)

            log(f"{QUIVER}: moving shard {shard} under load")
            return measure(c.dsn, args.rows, args.rate, args.settle, move, shard_rows)


def run_citus(args) -> dict | None:
    citus = common.citus_or_none()
    if citus is None:
        return None
    with citus:
        with psycopg.connect(citus.dsn, autocommit=True) as s:
            log(f"{common.CITUS_LABEL}: loading {args.rows:,} rows")
            load_table(s, args.rows, citus=True)
            (h1, p1), (h2, p2) = s.execute("SELECT nodename, nodeport FROM pg_dist_node "
                                           "WHERE noderole = 'primary' AND groupid > 0 "
                                           "ORDER BY nodeport").fetchall()[:2]
            shard = s.execute("SELECT min(shardid) FROM citus_shards WHERE table_name = 'moving'::regclass "
                              "AND nodeport = %s", (p1,)).fetchone()[0]
            size = s.execute("SELECT shard_size FROM citus_shards WHERE shardid = %s", (shard,)).fetchone()[0]

            def move() -> int:
                with psycopg.connect(citus.dsn, autocommit=True) as m:
                    m.execute("SELECT citus_move_shard_placement(%s, %s, %s, %s, %s, 'force_logical')",
                              (shard, h1, p1, h2, p2))
                return int(size)

            def shard_rows() -> int:
                return s.execute("SELECT count(*) FROM moving WHERE get_shard_id_for_distribution_column("
                                 "'moving', id) = %s", (shard,)).fetchone()[0]

            log(f"{common.CITUS_LABEL}: moving shard {shard} under load")
            return measure(citus.dsn, args.rows, args.rate, args.settle, move, shard_rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=2_000_000)
    p.add_argument("--rate", type=float, default=200.0, help="single-row inserts per second")
    p.add_argument("--settle", type=float, default=5.0, help="seconds of load before the move")
    p.add_argument("--no-citus", action="store_true")
    args = p.parse_args(argv)
    results = {QUIVER: run_quiver(args)}
    if not args.no_citus:
        results[common.CITUS_LABEL] = run_citus(args)
    headers = ["system", "move s", "MB", "MB/s", "rows (shard)", "rows/s", "write p50 before/during ms",
               "p99 before/during ms", "max during ms", "client errors", "reads"]
    rows = []
    rc = 0
    for name, r in results.items():
        if r is None:
            continue
        mb = r["bytes"] / 1e6
        rows.append([
            name, f"{r['seconds']:.2f}", f"{mb:.1f}", f"{mb / r['seconds']:.1f}", f"{r['rows']:,}",
            f"{r['rows'] / r['seconds']:,.0f}",
            f"{pct(r['before'], 0.5):.1f} / {pct(r['during'], 0.5):.1f}",
            f"{pct(r['before'], 0.99):.1f} / {pct(r['during'], 0.99):.1f}",
            f"{max(r['during'], default=0) * 1000:.1f}", str(len(r["errors"])), str(r["reads"]),
        ])
        if r["errors"]:
            log(f"{name}: {len(r['errors'])} client errors, first: {r['errors'][0]}")
            if name == QUIVER:
                rc = 1
    table = common.fmt_table(headers, rows)
    print(table)
    q, ci = results.get(QUIVER), results.get(common.CITUS_LABEL)
    notes = [f"{args.rows:,} rows in {SHARDS} shards; one shard group moves between the two workers "
             f"while a client inserts single rows into every shard at {args.rate:.0f}/s and another "
             f"counts the table. Quiver's rows (shard) is the table's rows / {SHARDS}."]
    if q and ci:
        notes.append(f"Quiver vs Citus: move time {common.ratio(ci['seconds'], q['seconds'])} faster; "
                     f"write p99 during the move {pct(q['during'], 0.99):.1f} ms vs {pct(ci['during'], 0.99):.1f} ms; "
                     f"max {max(q['during'], default=0) * 1000:.1f} ms vs {max(ci['during'], default=0) * 1000:.1f} ms.")
    common.write_section("move", "Online shard move under load (bench/run.sh move)",
                         common.header_block() + "\n" + table + "\n\n" + "\n".join(notes) + "\n")
    return rc


if __name__ == "__main__":
    sys.exit(main())
