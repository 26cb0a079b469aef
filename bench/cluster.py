#!/usr/bin/env python3
"""Quiver as a cluster (1 coordinator + 2 workers on this machine) against Quiver standalone.

One run, one binary, both systems up side by side:
1. TPC-H (--sf, default 1): the standalone node gets plain tables; the cluster gets the
   distribution of bench/tpch.py's DISTRIBUTION (lineitem and orders co-located on the order
   key, nation and region as reference tables) with --shards shards each. Both are loaded with
   COPY (rows/s reported: COPY into distributed tables vs standalone), then the 22 queries run on
   DuckDB, DataFusion in-process, Quiver standalone and the cluster; every answer is checked
   against DuckDB. Goal: cluster total within 1.3x of standalone.
2. Router point queries: pgbench `SELECT v, n FROM point_kv WHERE id = :k` through the
   coordinator (point_kv distributed on id) vs standalone. Goal: at least 0.5x.
On 2 cores the cluster can only add overhead; these numbers measure it.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import common
import point
import tpch
from common import log
from servers import QuiverCluster, QuiverServer, find_quiver_bin


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sf", type=float, default=1.0)
    p.add_argument("--shards", type=int, default=8, help="shards per distributed table (default 8)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--queries", default="1-22")
    p.add_argument("--point-rows", type=int, default=1_000_000)
    p.add_argument("--point-seconds", type=int, default=20)
    p.add_argument("--skip", choices=["tpch", "point"], action="append", default=[])
    p.add_argument("--quiver-bin", help="quiver binary (default: QUIVER_BIN, else release, else debug)")
    p.add_argument("--no-results", action="store_true")
    args = p.parse_args(argv)
    binary = Path(args.quiver_bin) if args.quiver_bin else find_quiver_bin(prefer_release=True)
    profile = binary.parent.name
    label = f"Quiver {profile} build ({binary}); cluster = 1 coordinator + {args.workers} workers, {args.shards} shards per table"
    if profile == "debug":
        label += " -- DEBUG build, numbers are not representative"
    standalone = QuiverServer(binary=binary)
    cluster = QuiverCluster(workers=args.workers, binary=binary)
    sections = []
    failures = 0
    try:
        standalone.start(300)
        cluster.start(300)
        cluster.wait_workers()
        if "tpch" not in args.skip:
            f, body = run_tpch(args, standalone.dsn, cluster.dsn)
            failures += f
            sections.append(body)
        if "point" not in args.skip:
            sections.append(run_point(args, standalone, cluster))
    finally:
        cluster.close()
        standalone.close()
    text = "\n\n".join(sections)
    print(text)
    if not args.no_results:
        body = common.header_block({"target": label}) + "\n\n" + text + "\n"
        common.write_section(f"cluster-{common.sf_name(args.sf)}", f"Cluster vs standalone, TPC-H {common.sf_name(args.sf).upper()} and router lookups", body)
    return 1 if failures else 0


def run_tpch(args, standalone_dsn: str, cluster_dsn: str) -> tuple[int, str]:
    queries = tpch.parse_queries(args.queries)
    parquet = common.tpch_data(args.sf, "parquet")
    csv = common.tpch_data(args.sf, "csv")
    setup = [s.replace("')", f"', shard_count => {args.shards})")
             if "distributed" in s and "colocate" not in s else s for s in tpch.DISTRIBUTION]
    log("loading the standalone node")
    _, s_load, n = tpch.load_target(standalone_dsn, csv, parquet)
    log("loading the cluster (distributed tables)")
    _, c_load, _ = tpch.load_target(cluster_dsn, csv, parquet, setup=setup)
    engines = [("duckdb", tpch.DuckDB(parquet, args.threads)), ("datafusion", tpch.DataFusion(parquet, args.threads)),
               ("standalone", tpch.PgWire(standalone_dsn, 600)), ("cluster", tpch.PgWire(cluster_dsn, 600))]
    res = {q: {} for q in queries}
    for key, eng in engines:
        log(f"running {len(queries)} queries on {key}")
        for q in queries:
            stmts = tpch.load_query(q)
            ai = tpch.answer_index(stmts)
            res[q][key] = tpch.timed_runs(eng, stmts, ai, args.runs)
            s = res[q][key]
            log(f"  q{q:<2} {key:<10} {('%.3fs' % s[0]) if s[0] is not None else '-':>9} {s[2] or ''}")
    rows, failures = [], 0
    tot = dict.fromkeys(("cluster", "standalone", "datafusion", "duckdb"), 0.0)
    for q in queries:
        stmts = tpch.load_query(q)
        ordered = tpch.has_order_by(stmts[tpch.answer_index(stmts)])
        want = res[q]["duckdb"][1]
        checks = []
        for key in ("cluster", "standalone"):
            secs, got, err = res[q][key]
            diff = err or tpch.compare(got, want, ordered)
            checks.append(f"{key}: {'ok' if diff is None else diff}")
            if diff is not None:
                failures += 1
        for key in tot:
            tot[key] += res[q][key][0] or 0.0
        fmt = lambda s: f"{s:.3f}" if s is not None else "-"
        rows.append([f"q{q}", fmt(res[q]["cluster"][0]), fmt(res[q]["standalone"][0]), fmt(res[q]["datafusion"][0]),
                     fmt(res[q]["duckdb"][0]), common.ratio(res[q]["cluster"][0], res[q]["standalone"][0]), "; ".join(checks)])
    rows.append(["total", f"{tot['cluster']:.3f}", f"{tot['standalone']:.3f}", f"{tot['datafusion']:.3f}",
                 f"{tot['duckdb']:.3f}", common.ratio(tot["cluster"], tot["standalone"]), f"{failures} answers not ok"])
    r = tot["cluster"] / tot["standalone"] if tot["standalone"] else float("nan")
    body = (f"TPC-H {common.sf_name(args.sf)}, best of {args.runs} runs, answers checked against DuckDB:\n\n"
            + common.fmt_table(["query", "cluster s", "standalone s", "DataFusion s", "DuckDB s", "cluster/standalone", "answers"], rows)
            + f"\n\n- cluster/standalone = {r:.2f}x (goal <= 1.3x: {'met' if r <= 1.3 and not failures else 'NOT met'})"
            + f"\n- COPY of all 8 tables ({n:,} rows): standalone {n / s_load:,.0f} rows/s, "
              f"cluster (into distributed tables) {n / c_load:,.0f} rows/s = {s_load / c_load:.2f}x of standalone")
    return failures, body


def run_point(args, standalone: QuiverServer, cluster: QuiverCluster) -> str:
    script = Path(tempfile.mkdtemp()) / "lookup.sql"
    script.write_text(f"\\set k random(1, {args.point_rows})\nSELECT v, n FROM point_kv WHERE id = :k;\n")
    out = {}
    for key, srv, setup in [("standalone", standalone, ()),
                            ("cluster", cluster.coordinator,
                             (f"SELECT create_distributed_table('point_kv', 'id', shard_count => {args.shards})",))]:
        log(f"point lookups on {key}")
        point.load(srv.dsn, args.point_rows, False, setup=setup)
        out[key] = {m: point.pgbench(srv.port, script, m, 8, 2, args.point_seconds) for m in ("simple", "prepared")}
    rows = []
    for m in ("simple", "prepared"):
        c, s = out["cluster"][m]["tps"], out["standalone"][m]["tps"]
        rows.append([m, f"{c:,.0f}" if c else "failed", f"{s:,.0f}" if s else "failed", common.ratio(c, s),
                     "met" if c and s and c / s >= 0.5 else "NOT met"])
    return (f"Router point lookups, pgbench -c 8 -j 2 -T {args.point_seconds}, {args.point_rows:,} rows:\n\n"
            + common.fmt_table(["protocol", "cluster TPS", "standalone TPS", "cluster/standalone", "goal >= 0.5x"], rows))


if __name__ == "__main__":
    sys.exit(main())
