#!/usr/bin/env python3
"""COPY ingest: TPC-H lineitem (SF1: 6,001,215 rows) into Quiver vs into PostgreSQL 15.

The same CSV file (tpchgen-cli) is streamed with psycopg `cursor.copy` (COPY ... FROM STDIN,
CSV) into an unindexed table with the spec's column types, on each system in turn (never
both at once). Time runs from the COPY command to its acknowledgement (the COPY commits on
its own). Reports rows/s and MB/s and the ratio target/PostgreSQL (goal: >= 2x).
"""

from __future__ import annotations

import argparse
import sys
import time

import common
from common import TPCH_DDL, log


def ingest(dsn: str, csv, expected: int, runs: int) -> dict:
    import psycopg
    ddl = TPCH_DDL["lineitem"].replace("CREATE TABLE lineitem", "CREATE TABLE lineitem_ingest", 1)
    best = None
    with psycopg.connect(dsn, autocommit=True) as c:
        for r in range(runs):
            c.execute("DROP TABLE IF EXISTS lineitem_ingest")
            c.execute(ddl)
            t0 = time.perf_counter()
            n = common.copy_file(c, "lineitem_ingest", csv)
            el = time.perf_counter() - t0
            got = c.execute("SELECT count(*) FROM lineitem_ingest").fetchone()[0]
            if got != expected:
                raise SystemExit(f"COPY loaded {got} rows (command tag said {n}), expected {expected}")
            chk = c.execute("SELECT sum(l_quantity), min(l_shipdate)::text, max(l_comment) FROM lineitem_ingest").fetchone()
            log(f"  run {r + 1}: {got:,} rows in {el:.2f}s = {got / el:,.0f} rows/s")
            best = el if best is None else min(best, el)
        c.execute("DROP TABLE IF EXISTS lineitem_ingest")
    return {"seconds": best, "rows": expected, "check": chk}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sf", type=float, default=1.0, help="scale factor of lineitem (default 1: 6M rows)")
    p.add_argument("--runs", type=int, default=1, help="COPY runs per system; the best counts (default 1)")
    common.add_target_args(p)
    args = p.parse_args(argv)

    csv = common.tpch_data(args.sf, "csv", ["lineitem"]) / "lineitem.csv"
    size = csv.stat().st_size
    expected = common.count_lines(csv) - (1 if common.csv_has_header(csv) else 0)
    log(f"{csv}: {expected:,} rows, {size / 1e6:.0f} MB")

    res = {}
    target = common.Target(args)
    try:
        dsn = target.start()
        log(f"COPY into target: {target.label}")
        res["target"] = ingest(dsn, csv, expected, args.runs)
    finally:
        target.close()
    pg = common.start_pg()
    try:
        log("COPY into PostgreSQL 15 (reference)")
        res["pg"] = ingest(pg.dsn, csv, expected, args.runs)
    finally:
        pg.close()

    if res["target"]["check"] != res["pg"]["check"]:
        print(f"*** CONTENT CHECK MISMATCH: target {res['target']['check']} vs PostgreSQL {res['pg']['check']}",
              file=sys.stderr)
    rows = []
    for key, label in [("target", target.label), ("pg", common.pg_version() + " (reference)")]:
        r = res[key]
        rows.append([label, f"{r['rows']:,}", f"{r['seconds']:.2f}", f"{r['rows'] / r['seconds']:,.0f}",
                     f"{size / r['seconds'] / 1e6:.1f}"])
    rt = (res["target"]["rows"] / res["target"]["seconds"]) / (res["pg"]["rows"] / res["pg"]["seconds"])
    content_ok = res["target"]["check"] == res["pg"]["check"]
    verdict = f"target/PostgreSQL = {rt:.2f}x rows/s (goal >= 2x: {'met' if rt >= 2 else 'NOT met'})"
    if not content_ok:
        verdict += " -- CONTENT CHECK MISMATCH between target and PostgreSQL"
    table = common.fmt_table(["system", "rows", "seconds", "rows/s", "MB/s"], rows)
    print()
    print(f"COPY ingest of lineitem {common.sf_name(args.sf)} ({size / 1e6:.0f} MB CSV)")
    print(table)
    print(verdict)

    if not args.no_results:
        body = common.header_block({
            "target": target.label,
            "reference": f"{common.pg_version()}, initdb defaults (fsync on, synchronous_commit on, "
                         "shared_buffers 128MB, wal_level replica), unindexed table",
            "method": f"psycopg cursor.copy streaming the same {size / 1e6:.0f} MB CSV (tpchgen-cli, "
                      f"{common.sf_name(args.sf)}) in 1 MiB writes, COPY ... FROM STDIN WITH (FORMAT csv); "
                      f"best of {args.runs}; systems run one after the other",
            "content check": "count(*), sum(l_quantity), min(l_shipdate), max(l_comment) equal on both"
                             if content_ok else "**MISMATCH** " + repr((res["target"]["check"], res["pg"]["check"])),
        })
        body += "\n\n" + table + "\n\n" + verdict + "\n"
        common.write_section(f"copy-{common.sf_name(args.sf)}-{target.key}",
                             f"COPY ingest, lineitem {common.sf_name(args.sf).upper()}: {target.label}", body)
    return 0 if content_ok else 1


if __name__ == "__main__":
    sys.exit(main())
