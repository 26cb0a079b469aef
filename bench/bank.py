#!/usr/bin/env python3
"""The bank workload: transfer throughput and consistent reads, Quiver against Citus.

`accounts (id int PRIMARY KEY, balance bigint NOT NULL)`, 1000 accounts of 1000 each (total
1,000,000), distributed by id over 8 shards on the clusters. On each system in turn:
- Quiver standalone (a plain table);
- Quiver 1 coordinator + 2 workers (`create_distributed_table('accounts', 'id', shard_count => 8)`);
- Citus 13 (PostgreSQL 15), 1 coordinator + 2 workers (`SET citus.shard_count = 8`, then
  `create_distributed_table('accounts', 'id')`), when Citus is installed on the machine
  (../shared/peers/citus: build.sh once; this script starts and stops it with cluster.sh on free
  ports); skipped with a log line otherwise.
4 client threads (psycopg, autocommit, parameters over the extended protocol) each loop for
--duration seconds: two random distinct accounts a and b, an amount x in 1..100,
`BEGIN; UPDATE accounts SET balance = balance - x WHERE id = a;
UPDATE accounts SET balance = balance + x WHERE id = b; COMMIT`. A transaction that fails is
counted by SQLSTATE, rolled back and the loop goes on. A 5th thread runs
`SELECT sum(balance) FROM accounts` over and over and counts the reads whose total is not
1,000,000 ("wrong sums": the read saw part of a transfer).

Reports transfers/s (committed transfers over the measured time), failed transfers, reads, wrong
sums, and the ratio cluster vs Citus. Exits non-zero when the final total is not 1,000,000 on
any system, when a Quiver read saw a wrong sum (Quiver promises reads that see each transaction
whole, ADR 0011; Citus makes no such promise, its wrong sums are reported, not failed), or when
a transfer failed with an SQLSTATE outside class 40 (serialization failure, deadlock) and 55P03
(lock not available).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import threading
import time
from collections import Counter

import psycopg

import common
from common import log
from servers import running_cluster  # noqa: E402  (scripts/lib, put on sys.path by common)

ACCOUNTS = 1000
START = 1000
TOTAL = ACCOUNTS * START
SHARDS = 8
CLIENTS = 4
EXPECTED = ("40", "55P03")
JOIN_GRACE = 120  # seconds a client may take past the end (a statement in flight, a lock wait)
BARRIER = 120  # seconds to open every connection  # SQLSTATE class 40 (rollback: 40001, 40P01, ...) and lock_not_available

STANDALONE = "Quiver standalone"
CLUSTER = "Quiver 1+2 workers"
SYSTEMS = {"standalone": STANDALONE, "cluster": CLUSTER, "citus": common.CITUS_LABEL}


def setup(conn, kind: str) -> None:
    conn.execute("DROP TABLE IF EXISTS accounts")
    conn.execute("CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL)")
    if kind == "cluster":
        conn.execute(f"SELECT create_distributed_table('accounts', 'id', shard_count => {SHARDS})")
    elif kind == "citus":
        conn.execute(f"SET citus.shard_count = {SHARDS}")
        conn.execute("SELECT create_distributed_table('accounts', 'id')")
    conn.execute(f"INSERT INTO accounts SELECT g, {START} FROM generate_series(1, {ACCOUNTS}) AS s(g)")
    if kind in ("cluster", "citus"):
        # logicalrelid: a regclass on Citus, the table's name on Quiver
        rel = "'accounts'::regclass" if kind == "citus" else "'accounts'"
        shards = conn.execute(f"SELECT count(*) FROM pg_dist_shard WHERE logicalrelid = {rel}").fetchone()[0]
        if shards != SHARDS:
            raise RuntimeError(f"accounts has {shards} shards on {kind}, expected {SHARDS}")
    n, total = conn.execute("SELECT count(*), sum(balance) FROM accounts").fetchone()
    if n != ACCOUNTS or int(total) != TOTAL:
        raise RuntimeError(f"after loading: {n} accounts, total {total}")


class Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.committed = 0
        self.failed: Counter = Counter()  # SQLSTATE -> transfers
        self.messages: dict[str, str] = {}  # SQLSTATE -> first error text
        self.reads = 0
        self.wrong = 0
        self.wrong_examples: list[int] = []
        self.read_errors: Counter = Counter()

    def fail(self, e: Exception, counter: Counter) -> str:
        state = getattr(e, "sqlstate", None) or type(e).__name__
        with self.lock:
            counter[state] += 1
            self.messages.setdefault(state, str(e).strip().splitlines()[0] if str(e).strip() else repr(e))
        return state


def _rollback(conn, dsn: str):
    """ROLLBACK after a failed transfer; a new connection when the old one is gone."""
    try:
        if not conn.closed:
            conn.execute("ROLLBACK")
            return conn
    except psycopg.Error:
        pass
    try:
        conn.close()
    except Exception:
        pass
    return psycopg.connect(dsn, autocommit=True)


def transfers(dsn: str, seed: int, start: threading.Barrier, deadline: list, stats: Stats) -> None:
    rng = random.Random(seed)
    conn = psycopg.connect(dsn, autocommit=True)
    try:
        start.wait(BARRIER)
        while time.monotonic() < deadline[0]:
            a, b = rng.sample(range(1, ACCOUNTS + 1), 2)
            x = rng.randint(1, 100)
            try:
                conn.execute("BEGIN")
                conn.execute("UPDATE accounts SET balance = balance - %s WHERE id = %s", (x, a))
                conn.execute("UPDATE accounts SET balance = balance + %s WHERE id = %s", (x, b))
                cur = conn.execute("COMMIT")
                if cur.statusmessage != "COMMIT":  # PostgreSQL answers ROLLBACK for an aborted block
                    raise RuntimeError(f"COMMIT answered {cur.statusmessage!r}")
                with stats.lock:
                    stats.committed += 1
            except (psycopg.Error, RuntimeError) as e:
                stats.fail(e, stats.failed)
                conn = _rollback(conn, dsn)
    finally:
        conn.close()


def reader(dsn: str, start: threading.Barrier, deadline: list, stats: Stats) -> None:
    conn = psycopg.connect(dsn, autocommit=True)
    try:
        start.wait(BARRIER)
        while time.monotonic() < deadline[0]:
            try:
                total = conn.execute("SELECT sum(balance) FROM accounts").fetchone()[0]
            except psycopg.Error as e:
                stats.fail(e, stats.read_errors)
                if conn.closed:
                    conn = psycopg.connect(dsn, autocommit=True)
                continue
            with stats.lock:
                stats.reads += 1
                if total is None or int(total) != TOTAL:
                    stats.wrong += 1
                    if len(stats.wrong_examples) < 5:
                        stats.wrong_examples.append(None if total is None else int(total))
    finally:
        conn.close()


def run_bank(dsn: str, kind: str, seconds: float) -> dict:
    with psycopg.connect(dsn, autocommit=True) as conn:
        setup(conn, kind)
    stats = Stats()
    start = threading.Barrier(CLIENTS + 2)
    deadline = [float("inf")]
    threads = [threading.Thread(target=transfers, args=(dsn, 1000 * (i + 1), start, deadline, stats), daemon=True)
               for i in range(CLIENTS)]
    threads.append(threading.Thread(target=reader, args=(dsn, start, deadline, stats), daemon=True))
    for t in threads:
        t.start()
    start.wait(BARRIER)  # every connection is open: the clock starts now
    t0 = time.monotonic()
    deadline[0] = t0 + seconds
    for t in threads:
        t.join(seconds + JOIN_GRACE)
    elapsed = time.monotonic() - t0
    hung = [t.name for t in threads if t.is_alive()]
    with psycopg.connect(dsn, autocommit=True) as conn:
        n, total = conn.execute("SELECT count(*), sum(balance) FROM accounts").fetchone()
    total = None if total is None else int(total)
    unexpected = {s: c for s, c in stats.failed.items() if not s.startswith(EXPECTED)}
    return {"tps": stats.committed / elapsed, "committed": stats.committed, "elapsed": elapsed,
            "failed": sum(stats.failed.values()), "by_state": dict(stats.failed), "messages": stats.messages,
            "unexpected": unexpected, "reads": stats.reads, "wrong": stats.wrong,
            "wrong_examples": stats.wrong_examples, "read_errors": dict(stats.read_errors),
            "final_total": total, "final_rows": n, "hung": hung}


def main(argv=None) -> int:
    global ACCOUNTS, TOTAL
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", "-T", type=int, default=20, help="seconds per system (default 20)")
    p.add_argument("--sf", type=float, help=argparse.SUPPRESS)  # accepted from run.sh, unused here
    p.add_argument("--systems", default=",".join(SYSTEMS),
                   help="comma-separated subset of standalone,cluster,citus (default: all; citus only when "
                        "installed). RESULTS.md is written only when standalone and cluster both ran")
    p.add_argument("--no-citus", action="store_true", help="do not run the Citus peer even when installed")
    p.add_argument("--no-results", action="store_true", help="do not write bench/RESULTS.md")
    p.add_argument("--accounts", type=int, default=ACCOUNTS,
                   help=f"number of accounts (default {ACCOUNTS}; fewer = more conflicts; RESULTS.md only "
                        f"with the default)")
    args = p.parse_args(argv)
    if args.accounts != ACCOUNTS:
        if args.accounts < 2:
            p.error("--accounts must be at least 2")
        ACCOUNTS, TOTAL = args.accounts, args.accounts * START
        if not args.no_results:
            log(f"--accounts {ACCOUNTS}: not the standard workload, RESULTS.md not written")
            args.no_results = True
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = [s for s in systems if s not in SYSTEMS]
    if unknown:
        p.error(f"unknown system(s) {unknown}: choose from {list(SYSTEMS)}")
    if args.no_citus and "citus" in systems:
        systems.remove("citus")

    res: dict[str, dict] = {}
    binary = common.find_quiver_bin(prefer_release=True)
    profile = binary.parent.name
    if "standalone" in systems or "cluster" in systems:
        os.environ["QUIVER_BIN"] = str(binary)  # the cluster's processes too
    if "standalone" in systems:
        with common.QuiverServer(binary=binary) as q:
            log(f"{STANDALONE} ({binary})")
            res[STANDALONE] = run_bank(q.dsn, "standalone", args.duration)
    if "cluster" in systems:
        with running_cluster(workers=2) as c:
            log("Quiver 1 coordinator + 2 workers")
            res[CLUSTER] = run_bank(c.dsn, "cluster", args.duration)
    citus = common.citus_or_none() if "citus" in systems else None
    if citus:
        with citus:
            log(common.CITUS_LABEL)
            res[common.CITUS_LABEL] = run_bank(citus.dsn, "citus", args.duration)

    citus_tps = res.get(common.CITUS_LABEL, {}).get("tps")
    headers = ["system", "transfers/s", "transfers", "failed", "reads", "wrong sums"]
    if citus_tps and CLUSTER in res:
        headers.append("cluster vs Citus")
    rows = []
    for name, r in res.items():
        row = [name, f"{r['tps']:,.1f}", r["committed"], r["failed"], r["reads"], r["wrong"]]
        if citus_tps and CLUSTER in res:
            row.append(common.ratio(r["tps"], citus_tps) if name == CLUSTER else "")
        rows.append(row)
    table = common.fmt_table(headers, rows)

    notes, problems = [], []
    for name, r in res.items():
        if r["by_state"]:
            notes.append(f"{name}: failed transfers by SQLSTATE: "
                         + ", ".join(f"{s} x{c} ({r['messages'][s]})" for s, c in sorted(r["by_state"].items())))
        if r["read_errors"]:
            notes.append(f"{name}: failed reads by SQLSTATE: "
                         + ", ".join(f"{s} x{c} ({r['messages'][s]})" for s, c in sorted(r["read_errors"].items())))
        if r["wrong"]:
            notes.append(f"{name}: {r['wrong']} of {r['reads']} reads saw a total other than {TOTAL:,} "
                         f"(e.g. {', '.join(str(x) for x in r['wrong_examples'])})")
        if r["final_total"] != TOTAL or r["final_rows"] != ACCOUNTS:
            problems.append(f"{name}: final total {r['final_total']} over {r['final_rows']} accounts "
                            f"(expected {TOTAL:,} over {ACCOUNTS})")
        if r["unexpected"]:
            problems.append(f"{name}: transfers failed with unexpected SQLSTATEs "
                            + ", ".join(f"{s} x{c}: {r['messages'][s]}" for s, c in r["unexpected"].items()))
        if r["wrong"] and name != common.CITUS_LABEL:
            problems.append(f"{name}: {r['wrong']} reads saw part of a transfer (Quiver promises whole transactions)")
        if r["hung"]:
            problems.append(f"{name}: threads still running {JOIN_GRACE} s after the end: {r['hung']}")
        if r["committed"] == 0:
            problems.append(f"{name}: no transfer committed")
    verdicts = []
    if citus_tps and CLUSTER in res:
        cr = res[CLUSTER]["tps"] / citus_tps
        verdicts.append(f"cluster/Citus = {cr:.2f}x transfers/s (goal >= 1x: {'met' if cr >= 1 else 'NOT met'})")
    elif CLUSTER in res:
        why = "not asked for" if "citus" not in systems else (common.citus_missing() or "?")
        verdicts.append(f"cluster/Citus: Citus not run ({why})")
    for name, r in res.items():
        verdicts.append(f"{name}: final total {r['final_total']:,} ({'ok' if r['final_total'] == TOTAL else 'WRONG'})"
                        if r["final_total"] is not None else f"{name}: final total NULL (WRONG)")

    title = (f"bank: {ACCOUNTS} accounts, {SHARDS} shards on the clusters, {CLIENTS} transfer clients + 1 "
             f"summing reader, {args.duration} s per system")
    if profile == "debug" and (STANDALONE in res or CLUSTER in res):
        title += " -- Quiver DEBUG build, numbers are not representative"
    print()
    print(title)
    print(table)
    for v in verdicts + notes:
        print(v)
    for pr in problems:
        print(f"PROBLEM: {pr}")

    complete = STANDALONE in res and CLUSTER in res
    if not args.no_results and not complete:
        log("not writing RESULTS.md: standalone and cluster did not both run")
    elif not args.no_results:
        if citus:
            peer = (f"{citus.version.split(' on ')[0]} on PostgreSQL 15, 1 coordinator + 2 workers on loopback "
                    "(shared/peers/citus cluster.sh: trust auth, wal_level logical, max_connections 300, "
                    "otherwise initdb defaults)")
        else:
            peer = "Citus not run (" + ("not asked for" if "citus" not in systems
                                        else (common.citus_missing() or "?")) + ")"
        body = common.header_block({
            "target": f"Quiver ({binary})",
            "peer": peer,
            "method": f"`accounts (id int PRIMARY KEY, balance bigint NOT NULL)`, {ACCOUNTS} accounts of {START}; "
                      f"the clusters distribute it by id over {SHARDS} shards; {CLIENTS} psycopg clients "
                      "(autocommit, extended protocol) loop `BEGIN; UPDATE ... balance - x WHERE id = a; "
                      "UPDATE ... balance + x WHERE id = b; COMMIT` on random distinct accounts for "
                      f"{args.duration} s, failures counted by SQLSTATE, rolled back and the loop goes on; a 5th "
                      "client sums all balances over and over and counts totals other than "
                      f"{TOTAL:,} (wrong sums); final total checked; systems run one after the other on "
                      "the same 2-core machine as the clients.",
        })
        body += "\n\n" + table + "\n\n" + "".join(f"- {v}\n" for v in verdicts + notes)
        body += "".join(f"- **PROBLEM**: {pr}\n" for pr in problems)
        common.write_section("bank", "Bank workload (transfers across shards, summing reader)", body)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
