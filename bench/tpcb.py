#!/usr/bin/env python3
"""pgbench's TPC-B-like transaction: Quiver standalone, a Quiver cluster and PostgreSQL 15.

The tables `pgbench -i -s 1` makes (made by hand: `pgbench -i` truncates several tables in one
statement), then `pgbench -n -b tpcb-like -c 4 -j 2 -T 20` on each system in turn:
- PostgreSQL 15 (reference);
- Quiver standalone;
- Quiver 1 coordinator + 2 workers, `pgbench_accounts` and `pgbench_history` distributed and
  `pgbench_branches` / `pgbench_tellers` reference tables (as Citus's docs set it up).
All four clients update the one branch row in every transaction, so they queue on its lock.
Reports transactions/s, failed transactions, the ratios (goal: standalone >= 0.5x PostgreSQL),
and checks afterwards that the balances of the four tables agree.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import psycopg

import common
from common import log

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "python"))
from test_pgbench import check_tpcb_balances, run_tpcb, tpcb_tables  # noqa: E402
from servers import running_cluster  # noqa: E402


def one(dsn: str, port: int, user: str, dbname: str, seconds: int, distribute: bool,
        vacuum: bool = False) -> dict:
    with psycopg.connect(dsn, autocommit=True) as conn:
        tpcb_tables(conn, distribute=distribute)
        if vacuum:
            conn.execute("VACUUM ANALYZE")
        done, failed, _ = run_tpcb(port, user, dbname, seconds)
        check_tpcb_balances(conn, done)
    return {"tps": done / seconds, "done": done, "failed": failed}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", "-T", type=int, default=20)
    p.add_argument("--sf", type=float, help=argparse.SUPPRESS)  # accepted from run.sh, unused here
    p.add_argument("--no-results", action="store_true", help="do not write bench/RESULTS.md")
    args = p.parse_args(argv)

    res = {}
    pg = common.start_pg()
    try:
        log("PostgreSQL 15 (reference)")
        res["PostgreSQL 15"] = one(pg.dsn, pg.port, pg.user, pg.dbname, args.duration, False, vacuum=True)
    finally:
        pg.close()
    binary = common.find_quiver_bin(prefer_release=True)
    os.environ["QUIVER_BIN"] = str(binary)  # the cluster's processes too
    with common.QuiverServer(binary=binary) as q:
        log(f"Quiver standalone ({binary})")
        res["Quiver standalone"] = one(q.dsn, q.port, q.user, q.dbname, args.duration, False)
    with running_cluster(workers=2) as c:
        log("Quiver 1 coordinator + 2 workers")
        co = c.coordinator
        res["Quiver 1+2 workers"] = one(c.dsn, co.port, co.user, co.dbname, args.duration, True)

    pg_tps = res["PostgreSQL 15"]["tps"]
    rows = [[name, f"{r['tps']:,.1f}", r["done"], r["failed"], f"{r['tps'] / pg_tps:.2f}x"]
            for name, r in res.items()]
    table = common.fmt_table(["system", "transactions/s", "transactions", "failed", "vs PostgreSQL"], rows)
    ratio = res["Quiver standalone"]["tps"] / pg_tps
    verdict = f"standalone/PostgreSQL = {ratio:.2f}x (goal >= 0.5x: {'met' if ratio >= 0.5 else 'NOT met'})"
    print()
    print(f"pgbench TPC-B-like, scale 1, -c 4 -j 2 -T {args.duration}")
    print(table)
    print(verdict)
    if not args.no_results:
        body = common.header_block({
            "target": f"Quiver ({binary})",
            "reference": f"{common.pg_version()}, initdb defaults",
            "method": f"tables as `pgbench -i -s 1` makes them (by hand); `pgbench -n -b tpcb-like -c 4 -j 2 "
                      f"-T {args.duration}`; the cluster distributes accounts and history and makes branches "
                      "and tellers reference tables; balances checked afterwards; systems run one after the "
                      "other on the same 2-core machine as pgbench. Citus not run here.",
        })
        body += "\n\n" + table + "\n\n- " + verdict + "\n"
        common.write_section("tpcb", "pgbench TPC-B-like (row locks)", body)
    failed = any(r["failed"] for r in res.values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
