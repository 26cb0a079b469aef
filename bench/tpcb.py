#!/usr/bin/env python3
"""pgbench's TPC-B-like transaction: Quiver standalone, a Quiver cluster, PostgreSQL 15 and Citus.

The tables `pgbench -i -s 1` makes (made by hand: `pgbench -i` truncates several tables in one
statement), then `pgbench -n -b tpcb-like -c 4 -j 2 -T 20` on each system in turn:
- PostgreSQL 15 (reference);
- Quiver standalone;
- Quiver 1 coordinator + 2 workers, `pgbench_accounts` and `pgbench_history` distributed and
  `pgbench_branches` / `pgbench_tellers` reference tables (as Citus's docs set it up);
- Citus 13 (PostgreSQL 15), 1 coordinator + 2 workers with the same tables and distribution,
  when Citus is installed on the machine (../shared/peers/citus: build.sh once, then this script
  starts and stops it with cluster.sh on free ports); skipped with a log line otherwise.
All four clients update the one branch row in every transaction, so they queue on its lock.
Reports transactions/s, failed transactions, the ratios (goals: standalone >= 0.5x PostgreSQL,
cluster >= 1x Citus), and checks afterwards that the balances of the four tables agree.
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


def citus_tpcb_tables(conn, distribute: bool = True) -> None:
    """tpcb_tables for Citus: the same tables and the same create_distributed_table /
    create_reference_table calls (Citus's defaults: 32 shards, replication factor 1)."""
    tpcb_tables(conn, distribute=distribute)


def one(dsn: str, port: int, user: str, dbname: str, seconds: int, distribute: bool,
        vacuum: bool = False, tables=tpcb_tables) -> dict:
    with psycopg.connect(dsn, autocommit=True) as conn:
        tables(conn, distribute=distribute)
        if vacuum:
            conn.execute("VACUUM ANALYZE")
        done, failed, _ = run_tpcb(port, user, dbname, seconds)
        check_tpcb_balances(conn, done)
    return {"tps": done / seconds, "done": done, "failed": failed}


SYSTEMS = ["pg", "standalone", "cluster", "citus"]
CLUSTER = "Quiver 1+2 workers"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", "-T", type=int, default=20)
    p.add_argument("--sf", type=float, help=argparse.SUPPRESS)  # accepted from run.sh, unused here
    p.add_argument("--no-results", action="store_true", help="do not write bench/RESULTS.md")
    p.add_argument("--systems", default=",".join(SYSTEMS),
                   help="comma-separated subset of pg,standalone,cluster,citus (default: all; citus only when "
                        "installed). RESULTS.md is written only when pg, standalone and cluster all ran")
    p.add_argument("--no-citus", action="store_true", help="do not run the Citus peer even when installed")
    args = p.parse_args(argv)
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = [s for s in systems if s not in SYSTEMS]
    if unknown:
        p.error(f"unknown system(s) {unknown}: choose from {SYSTEMS}")
    if args.no_citus and "citus" in systems:
        systems.remove("citus")

    res = {}
    if "pg" in systems:
        pg = common.start_pg()
        try:
            log("PostgreSQL 15 (reference)")
            res["PostgreSQL 15"] = one(pg.dsn, pg.port, pg.user, pg.dbname, args.duration, False, vacuum=True)
        finally:
            pg.close()
    binary = common.find_quiver_bin(prefer_release=True)
    if "standalone" in systems or "cluster" in systems:
        os.environ["QUIVER_BIN"] = str(binary)  # the cluster's processes too
    if "standalone" in systems:
        with common.QuiverServer(binary=binary) as q:
            log(f"Quiver standalone ({binary})")
            res["Quiver standalone"] = one(q.dsn, q.port, q.user, q.dbname, args.duration, False)
    if "cluster" in systems:
        with running_cluster(workers=2) as c:
            log("Quiver 1 coordinator + 2 workers")
            co = c.coordinator
            res[CLUSTER] = one(c.dsn, co.port, co.user, co.dbname, args.duration, True)
    citus = common.citus_or_none() if "citus" in systems else None
    if citus:
        with citus:
            log(common.CITUS_LABEL)
            # VACUUM ANALYZE as for PostgreSQL: what `pgbench -i` does on a PostgreSQL-based system
            res[common.CITUS_LABEL] = one(citus.dsn, citus.port, citus.user, citus.dbname, args.duration,
                                          True, vacuum=True, tables=citus_tpcb_tables)

    pg_tps = res.get("PostgreSQL 15", {}).get("tps")
    citus_tps = res.get(common.CITUS_LABEL, {}).get("tps")
    headers = ["system", "transactions/s", "transactions", "failed", "vs PostgreSQL"]
    if citus_tps and CLUSTER in res:
        headers.append("cluster vs Citus")
    rows = []
    for name, r in res.items():
        row = [name, f"{r['tps']:,.1f}", r["done"], r["failed"], common.ratio(r["tps"], pg_tps)]
        if citus_tps and CLUSTER in res:
            row.append(common.ratio(r["tps"], citus_tps) if name == CLUSTER else "")
        rows.append(row)
    table = common.fmt_table(headers, rows)
    verdicts = []
    if pg_tps and "Quiver standalone" in res:
        ratio = res["Quiver standalone"]["tps"] / pg_tps
        verdicts.append(f"standalone/PostgreSQL = {ratio:.2f}x (goal >= 0.5x: {'met' if ratio >= 0.5 else 'NOT met'})")
    if citus_tps and CLUSTER in res:
        cr = res[CLUSTER]["tps"] / citus_tps
        verdicts.append(f"cluster/Citus = {cr:.2f}x (goal >= 1x: {'met' if cr >= 1 else 'NOT met'})")
    elif CLUSTER in res and not citus_tps:
        why = "not asked for" if "citus" not in systems else (common.citus_missing() or "?")
        verdicts.append(f"cluster/Citus: Citus not run ({why})")
    print()
    print(f"pgbench TPC-B-like, scale 1, -c 4 -j 2 -T {args.duration}")
    print(table)
    for v in verdicts:
        print(v)
    complete = all(k in res for k in ("PostgreSQL 15", "Quiver standalone", CLUSTER))
    if not args.no_results and not complete:
        log("not writing RESULTS.md: pg, standalone and cluster did not all run")
    elif not args.no_results:
        if citus:
            peer = (f"{citus.version.split(' on ')[0]} on PostgreSQL 15, 1 coordinator + 2 workers on loopback "
                    "(shared/peers/citus cluster.sh: trust auth, wal_level logical, max_connections 300, "
                    "otherwise initdb defaults), the same two reference and two distributed tables "
                    "(Citus's default 32 shards), VACUUM ANALYZE after loading as for PostgreSQL")
        else:
            peer = "Citus not run (" + ("not asked for" if "citus" not in systems
                                        else (common.citus_missing() or "?")) + ")"
        body = common.header_block({
            "target": f"Quiver ({binary})",
            "reference": f"{common.pg_version()}, initdb defaults",
            "peer": peer,
            "method": f"tables as `pgbench -i -s 1` makes them (by hand); `pgbench -n -b tpcb-like -c 4 -j 2 "
                      f"-T {args.duration}`; the Quiver cluster and Citus distribute accounts and history and "
                      "make branches and tellers reference tables; balances checked afterwards; systems run "
                      "one after the other on the same 2-core machine as pgbench.",
        })
        body += "\n\n" + table + "\n\n" + "".join(f"- {v}\n" for v in verdicts)
        common.write_section("tpcb", "pgbench TPC-B-like (row locks)", body)
    failed = any(r["failed"] for r in res.values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
