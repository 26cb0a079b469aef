#!/usr/bin/env python3
"""Point lookups by primary key over pgwire: pgbench against Quiver and PostgreSQL 15.

A table `point_kv (id INTEGER PRIMARY KEY, v TEXT, n BIGINT)` with --rows rows (default 1M),
loaded with COPY, identical on both systems. Then
    pgbench -n -f lookup.sql -c 8 -j 2 -T 20
with `\\set k random(1, N)` and `SELECT v, n FROM point_kv WHERE id = :k;`, in the simple
query protocol (pgbench's default) and with -M prepared (extended protocol, prepared
statements). Systems run one after the other. Reports TPS and target/PostgreSQL (goal >= 0.5x).
"""

from __future__ import annotations

import argparse
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common
from common import log


def expected_row(i: int) -> tuple[str, int]:
    return (f"value-{i:08d}-{(i * 2654435761) % 1000003:07d}", i * 7 - 3)


def load(dsn: str, rows: int, analyze: bool, setup: list[str] | tuple = ()) -> float:
    """Create and fill point_kv (running `setup`, e.g. distributing it, before the COPY)."""
    import psycopg
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("DROP TABLE IF EXISTS point_kv")
        c.execute("CREATE TABLE point_kv (id INTEGER PRIMARY KEY, v TEXT NOT NULL, n BIGINT NOT NULL)")
        for stmt in setup:
            c.execute(stmt)
        t0 = time.perf_counter()
        cur = c.cursor()
        with cur.copy("COPY point_kv (id, v, n) FROM STDIN") as cp:
            buf = []
            for i in range(1, rows + 1):
                v, n = expected_row(i)
                buf.append(f"{i}\t{v}\t{n}\n")
                if len(buf) == 20000:
                    cp.write("".join(buf).encode())
                    buf = []
            if buf:
                cp.write("".join(buf).encode())
        el = time.perf_counter() - t0
        if analyze:
            c.execute("VACUUM ANALYZE point_kv")
        got = c.execute("SELECT count(*) FROM point_kv").fetchone()[0]
        if got != rows:
            raise SystemExit(f"point_kv has {got} rows, expected {rows}")
        # the lookups return the right rows, text and binary, simple and extended
        rnd = random.Random(42)
        for k in [1, rows] + [rnd.randint(1, rows) for _ in range(20)]:
            assert c.execute(f"SELECT v, n FROM point_kv WHERE id = {k}").fetchone() == expected_row(k), k
            assert c.execute("SELECT v, n FROM point_kv WHERE id = %s", (k,)).fetchone() == expected_row(k), k
        assert c.execute("SELECT v FROM point_kv WHERE id = %s", (rows + 1,)).fetchall() == []
    return el


def pgbench(port: int, script: Path, mode: str, clients: int, threads: int, duration: int) -> dict:
    cmd = ["pgbench", "-n", "-h", "127.0.0.1", "-p", str(port), "-U", "quiver", "-f", str(script),
           "-c", str(clients), "-j", str(threads), "-T", str(duration), "-M", mode, "quiver"]
    log("  " + " ".join(cmd))
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 120,
                       env=dict(os.environ, PGCONNECT_TIMEOUT="30"))
    out = r.stdout + r.stderr
    res = {"cmd": " ".join(cmd), "rc": r.returncode, "tps": None, "lat_ms": None, "failed": None, "tx": None}
    m = re.search(r"tps = ([\d.]+) \(without initial connection time\)", out)
    if m:
        res["tps"] = float(m.group(1))
    m = re.search(r"latency average = ([\d.]+) ms", out)
    if m:
        res["lat_ms"] = float(m.group(1))
    m = re.search(r"number of failed transactions: (\d+)", out)
    if m:
        res["failed"] = int(m.group(1))
    m = re.search(r"number of transactions actually processed: (\d+)", out)
    if m:
        res["tx"] = int(m.group(1))
    if r.returncode != 0 or res["tps"] is None or res["failed"]:
        res["error"] = "\n".join(out.strip().splitlines()[-6:])
        log(f"  pgbench FAILED (rc {r.returncode}): {res['error']}")
    else:
        log(f"  tps {res['tps']:,.0f}, latency {res['lat_ms']} ms, {res['tx']:,} transactions")
    return res


def bench_system(dsn: str, port: int, args, script: Path, analyze: bool) -> dict:
    load_s = load(dsn, args.rows, analyze)
    log(f"  loaded {args.rows:,} rows in {load_s:.1f}s")
    return {mode: pgbench(port, script, mode, args.clients, args.jobs, args.duration) for mode in args.modes}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--clients", "-c", type=int, default=8)
    p.add_argument("--jobs", "-j", type=int, default=2)
    p.add_argument("--duration", "-T", type=int, default=20)
    p.add_argument("--modes", nargs="+", default=["simple", "prepared"], choices=["simple", "extended", "prepared"])
    p.add_argument("--sf", type=float, help=argparse.SUPPRESS)  # accepted from run.sh, unused here
    common.add_target_args(p)
    args = p.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="quiver-point."))
    script = tmp / "lookup.sql"
    script.write_text(f"\\set k random(1, {args.rows})\nSELECT v, n FROM point_kv WHERE id = :k;\n")

    res = {}
    target = common.Target(args)
    try:
        dsn = target.start()
        port = target.server.port if target.server else int(re.search(r"port=(\d+)", dsn).group(1))
        log(f"target: {target.label}")
        res["target"] = bench_system(dsn, port, args, script, analyze=(args.target == "pg"))
    finally:
        target.close()
    pg = common.start_pg()
    try:
        log("PostgreSQL 15 (reference)")
        res["pg"] = bench_system(pg.dsn, pg.port, args, script, analyze=True)
    finally:
        pg.close()

    rows, verdicts, failed = [], [], False
    for mode in args.modes:
        t, g = res["target"][mode], res["pg"][mode]
        for label, r in [(target.label, t), (common.pg_version() + " (reference)", g)]:
            rows.append([mode, label, f"{r['tps']:,.0f}" if r["tps"] else "FAILED",
                         r["lat_ms"] if r["lat_ms"] is not None else "", r["failed"] if r["failed"] is not None else "",
                         r.get("error", "").replace("\n", " / ")[:160]])
        if t.get("error") or g.get("error"):
            failed = True
            verdicts.append(f"{mode}: FAILED (see errors)")
        else:
            rt = t["tps"] / g["tps"]
            verdicts.append(f"{mode}: target/PostgreSQL = {rt:.2f}x TPS (goal >= 0.5x: {'met' if rt >= 0.5 else 'NOT met'})")
    table = common.fmt_table(["protocol", "system", "TPS", "avg latency ms", "failed tx", "error"], rows)
    print()
    print(f"Point lookups by primary key: {args.rows:,} rows, pgbench -c {args.clients} -j {args.jobs} -T {args.duration}")
    print(table)
    print("\n".join(verdicts))

    if not args.no_results:
        body = common.header_block({
            "target": target.label,
            "reference": f"{common.pg_version()}, initdb defaults, VACUUM ANALYZE after load",
            "method": f"table point_kv (id INTEGER PRIMARY KEY, v TEXT, n BIGINT), {args.rows:,} rows loaded with COPY "
                      f"and spot-checked; `pgbench -n -f lookup.sql -c {args.clients} -j {args.jobs} -T {args.duration} "
                      f"-M MODE` with `\\set k random(1, {args.rows})` and `SELECT v, n FROM point_kv WHERE id = :k;`; "
                      "pgbench runs on the same 2-core machine as the server; systems run one after the other",
        })
        body += "\n\n" + table + "\n\n" + "\n".join(f"- {v}" for v in verdicts) + "\n"
        common.write_section(f"point-{target.key}", f"Point lookups (pgbench): {target.label}", body)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
