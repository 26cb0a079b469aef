#!/usr/bin/env python3
"""TPC-H over pgwire: Quiver vs DataFusion in-process vs DuckDB, answers checked against DuckDB.

1. Generate TPC-H data with tpchgen-cli (Parquet for DataFusion/DuckDB, CSV for COPY) in bench/data/sfN.
2. Start the target (quiver, or a PostgreSQL stand-in to check the harness), create the 8 tables with
   the spec's types, load them with COPY FROM STDIN (psycopg), check row counts.
3. Run the 22 queries from shared/tpch/queries on DuckDB and DataFusion (same Parquet files, same
   thread count) and on the target over pgwire; best of --runs per query.
4. Check every answer against DuckDB's (numbers rounded to 2 decimals; sorted multisets when the
   query has no ORDER BY); print a table and refresh a section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import re
import sys
import threading
import time
from decimal import Decimal
from pathlib import Path

import common
from common import QUERIES, TPCH_DDL, TPCH_TABLES, log


# --- queries -----------------------------------------------------------------

def load_query(n: int) -> list[str]:
    text = (QUERIES / f"q{n}.sql").read_text()
    text = "\n".join(line for line in text.splitlines() if not line.strip().startswith("--"))
    return [s.strip() for s in text.split(";") if s.strip()]


def answer_index(stmts: list[str]) -> int:
    """Index of the statement whose rows are the answer (the last SELECT)."""
    idx = [i for i, s in enumerate(stmts) if re.match(r"(?is)^\s*(select|with)\b", s)]
    return idx[-1]


def has_order_by(sql: str) -> bool:
    return re.search(r"(?is)\border\s+by\b", sql) is not None


# --- answer comparison -------------------------------------------------------

def norm(v):
    if v is None:
        return None
    if isinstance(v, bool):
        return v
    if isinstance(v, (int, float, Decimal)):
        return round(float(v), 2)
    if isinstance(v, dt.datetime):
        return v.isoformat(sep=" ")
    if isinstance(v, dt.date):
        return v.isoformat()
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v).decode(errors="replace").rstrip()
    return str(v).rstrip()  # CHAR(n) comes back blank-padded from PostgreSQL-typed columns


def close(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        # equal after rounding to 2 decimals, allowing the last digit to flip at a rounding boundary
        return a == b or abs(a - b) <= max(0.0100001, 1e-9 * abs(b))
    return a == b


def sort_key(row):
    return tuple((x is None, type(x).__name__, x if x is not None else 0) for x in row)


def compare(got: list[tuple], want: list[tuple], ordered: bool) -> str | None:
    """None if the answers match, else a short description of the first difference."""
    g = [tuple(norm(v) for v in r) for r in got]
    w = [tuple(norm(v) for v in r) for r in want]
    if len(g) != len(w):
        return f"{len(g)} rows, expected {len(w)}"
    if not ordered:
        g, w = sorted(g, key=sort_key), sorted(w, key=sort_key)
    for i, (a, b) in enumerate(zip(g, w)):
        if len(a) != len(b):
            return f"row {i}: {len(a)} columns, expected {len(b)}"
        if not all(close(x, y) for x, y in zip(a, b)):
            if ordered and compare(got, want, ordered=False) is None:
                return f"same rows, wrong order (row {i}: {a} vs {b})"
            return f"row {i}: {a} != expected {b}"
    return None


# --- engines -----------------------------------------------------------------

class DuckDB:
    name = "DuckDB"

    def __init__(self, parquet: Path, threads: int):
        import duckdb
        self.con = duckdb.connect()
        self.con.execute(f"SET threads = {threads}")
        for t in TPCH_TABLES:
            self.con.execute(f"CREATE VIEW {t} AS SELECT * FROM read_parquet('{parquet / (t + '.parquet')}')")
        self.version = duckdb.__version__

    def run(self, stmts, ai):
        rows = None
        for i, s in enumerate(stmts):
            r = self.con.execute(s)
            if i == ai:
                rows = r.fetchall()
        return rows


class DataFusion:
    name = "DataFusion"

    def __init__(self, parquet: Path, threads: int):
        import datafusion
        from datafusion import SessionConfig, SessionContext
        cfg = SessionConfig().with_target_partitions(threads)
        self.ctx = SessionContext(cfg)
        for t in TPCH_TABLES:
            self.ctx.register_parquet(t, str(parquet / f"{t}.parquet"))
        self.version = datafusion.__version__

    def run(self, stmts, ai):
        import pyarrow as pa
        batches = None
        for i, s in enumerate(stmts):
            df = self.ctx.sql(s)
            b = df.collect()
            if i == ai:
                batches = (b, df.schema())
        b, schema = batches
        tbl = pa.Table.from_batches(b, schema=schema) if b else schema.empty_table()
        return [tuple(r.values()) for r in tbl.to_pylist()]


class PgWire:
    """The target over pgwire with psycopg (simple query protocol: no parameters)."""

    def __init__(self, dsn: str, timeout: float):
        import psycopg
        self.psycopg = psycopg
        self.dsn = dsn
        self.timeout = timeout
        self.conn = psycopg.connect(dsn, autocommit=True, connect_timeout=30)

    def run(self, stmts, ai):
        timer = threading.Timer(self.timeout, self.conn.cancel)  # client-side timeout: works on any server
        timer.start()
        try:
            rows = None
            cur = self.conn.cursor()
            for i, s in enumerate(stmts):
                cur.execute(s)
                if i == ai:
                    rows = cur.fetchall()
            return rows
        except self.psycopg.errors.QueryCanceled:
            raise TimeoutError(f"cancelled after {self.timeout:g}s")
        finally:
            timer.cancel()

    def cleanup_after_error(self, stmts):
        # e.g. q15's view left behind by a failed select
        try:
            if self.conn.closed or self.conn.broken:
                self.conn = self.psycopg.connect(self.dsn, autocommit=True, connect_timeout=30)
            for s in stmts:
                m = re.match(r"(?is)^\s*create\s+view\s+(\w+)", s)
                if m:
                    self.conn.execute(f"DROP VIEW IF EXISTS {m.group(1)}")
        except Exception:
            pass


def timed_runs(engine, stmts, ai, runs):
    """(best seconds, rows of the first run, error string)."""
    best, rows = None, None
    for r in range(runs):
        t0 = time.perf_counter()
        try:
            out = engine.run(stmts, ai)
        except Exception as e:  # report, never hide
            msg = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
            if hasattr(engine, "cleanup_after_error"):
                engine.cleanup_after_error(stmts)
            return best, rows, msg[:200]
        el = time.perf_counter() - t0
        best = el if best is None else min(best, el)
        if r == 0:
            rows = out
    return best, rows, None


# --- loading -----------------------------------------------------------------

# How a cluster spreads the TPC-H tables: lineitem and orders co-located on the order key,
# the other big tables on their keys, nation and region copied to every worker.
DISTRIBUTION = [
    "SELECT create_distributed_table('orders', 'o_orderkey')",
    "SELECT create_distributed_table('lineitem', 'l_orderkey', colocate_with => 'orders')",
    "SELECT create_distributed_table('customer', 'c_custkey')",
    "SELECT create_distributed_table('part', 'p_partkey')",
    "SELECT create_distributed_table('partsupp', 'ps_partkey')",
    "SELECT create_distributed_table('supplier', 's_suppkey')",
    "SELECT create_reference_table('nation')",
    "SELECT create_reference_table('region')",
]


def load_target(dsn: str, csv_dir: Path, parquet_dir: Path,
                setup: list[str] | tuple = ()) -> tuple[list[list], float, int]:
    """Create the tables, run `setup` (e.g. DISTRIBUTION), COPY the CSV files in, check counts."""
    import psycopg
    import pyarrow.parquet as pq
    rows_out, total_s, total_rows = [], 0.0, 0
    with psycopg.connect(dsn, autocommit=True) as c:
        for t in TPCH_TABLES:
            c.execute(f"DROP TABLE IF EXISTS {t}")
            c.execute(TPCH_DDL[t])
        for stmt in setup:
            c.execute(stmt)
        for t in TPCH_TABLES:
            path = csv_dir / f"{t}.csv"
            t0 = time.perf_counter()
            n = common.copy_file(c, t, path)
            el = time.perf_counter() - t0
            want = pq.ParquetFile(parquet_dir / f"{t}.parquet").metadata.num_rows
            got = c.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
            ok = "ok" if got == want and n in (want, -1) else f"MISMATCH: COPY said {n}, count(*) {got}, expected {want}"
            rows_out.append([t, f"{got:,}", f"{el:.2f}", f"{got / el:,.0f}" if el else "", ok])
            log(f"loaded {t}: {got:,} rows in {el:.2f}s ({ok})")
            if got != want:
                raise SystemExit(f"load of {t} is wrong: {ok}")
            total_s += el
            total_rows += got
    return rows_out, total_s, total_rows


# --- main --------------------------------------------------------------------

def parse_queries(s: str) -> list[int]:
    out = []
    for part in s.split(","):
        if "-" in part:
            a, b = part.split("-")
            out += list(range(int(a), int(b) + 1))
        elif part:
            out.append(int(part))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sf", type=float, default=1.0, help="scale factor (default 1)")
    p.add_argument("--runs", type=int, default=3, help="runs per query and engine; the best counts (default 3)")
    p.add_argument("--queries", default="1-22", help="e.g. 1-22 or 1,3,6")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="threads for DataFusion and DuckDB (default nproc)")
    p.add_argument("--timeout", type=float, default=600, help="per-query timeout on the target, seconds")
    p.add_argument("--no-load", action="store_true", help="tables already loaded in --target-dsn")
    common.add_target_args(p)
    args = p.parse_args(argv)

    queries = parse_queries(args.queries)
    parquet = common.tpch_data(args.sf, "parquet")
    csv = common.tpch_data(args.sf, "csv")
    statements = {n: load_query(n) for n in queries}

    target = common.Target(args)
    results = {n: {} for n in queries}
    load_rows, load_s, load_n = [], 0.0, 0
    try:
        dsn = target.start()
        if not args.no_load:
            load_rows, load_s, load_n = load_target(dsn, csv, parquet)

        duck = DuckDB(parquet, args.threads)
        fusion = DataFusion(parquet, args.threads)
        pg = PgWire(dsn, args.timeout)
        engines = [("duckdb", duck), ("datafusion", fusion), ("target", pg)]
        for key, eng in engines:
            log(f"running {len(queries)} queries on {key}")
            for n in queries:
                stmts = statements[n]
                ai = answer_index(stmts)
                secs, rows, err = timed_runs(eng, stmts, ai, args.runs)
                results[n][key] = (secs, rows, err)
                log(f"  q{n:<2} {key:<10} {('%.3fs' % secs) if secs is not None else '-':>9} {err or ''}")
        pg.conn.close()
    finally:
        target.close()

    # --- check and report ---
    table, failures = [], 0
    tot = {"target": 0.0, "datafusion": 0.0, "duckdb": 0.0}
    counted = 0
    for n in queries:
        r = results[n]
        ordered = has_order_by(statements[n][answer_index(statements[n])])
        d_s, d_rows, d_err = r["duckdb"]
        f_s, f_rows, f_err = r["datafusion"]
        q_s, q_rows, q_err = r["target"]
        if d_err:
            check = f"NO REFERENCE: DuckDB failed: {d_err}"
        elif q_err:
            check = f"ERROR: {q_err}"
        else:
            diff = compare(q_rows, d_rows, ordered)
            check = "ok" if diff is None else f"MISMATCH: {diff}"
        df_check = "" if d_err or f_err else (compare(f_rows, d_rows, ordered) or "")
        if f_err:
            df_check = f"DataFusion error: {f_err}"
        if check != "ok":
            failures += 1
        if q_s is not None and f_s is not None and d_s is not None and not q_err and not f_err and not d_err:
            tot["target"] += q_s
            tot["datafusion"] += f_s
            tot["duckdb"] += d_s
            counted += 1
        fmt = lambda s: f"{s:.3f}" if s is not None else "-"
        table.append([f"q{n}", fmt(q_s), fmt(f_s), fmt(d_s), common.ratio(q_s, f_s) if not q_err else "n/a",
                      common.ratio(q_s, d_s) if not q_err else "n/a",
                      check + (f" (DataFusion vs DuckDB: {df_check})" if df_check else "")])
    table.append(["total", f"{tot['target']:.3f}", f"{tot['datafusion']:.3f}", f"{tot['duckdb']:.3f}",
                  common.ratio(tot["target"], tot["datafusion"]), common.ratio(tot["target"], tot["duckdb"]),
                  f"{counted} of {len(queries)} queries ran on all three engines; {failures} not ok"])
    headers = ["query", "target s", "DataFusion s", "DuckDB s", "target/DataFusion", "target/DuckDB", "answer vs DuckDB"]
    out = common.fmt_table(headers, table)
    print()
    print(f"TPC-H {common.sf_name(args.sf)}; target: {target.label}")
    if load_rows:
        print(common.fmt_table(["table", "rows", "COPY s", "rows/s", "count check"], load_rows))
        print(f"load total: {load_n:,} rows in {load_s:.1f}s ({load_n / load_s:,.0f} rows/s)")
    print(out)
    tr = tot["target"] / tot["datafusion"] if tot["datafusion"] else float("nan")
    verdict = (f"target/DataFusion = {tr:.2f}x (goal <= 1.2x: {'met' if tr <= 1.2 else 'NOT met'})"
               if counted == len(queries) and failures == 0 else
               f"target/DataFusion over {counted} queries = {tr:.2f}x; goal not assessable: {failures} queries not ok")
    ref_tot = {k: sum(results[n][k][0] for n in queries if results[n][k][0] is not None and not results[n][k][2])
               for k in ("datafusion", "duckdb")}
    ref_n = {k: sum(1 for n in queries if results[n][k][0] is not None and not results[n][k][2])
             for k in ("datafusion", "duckdb")}
    verdict += (f"\nreference totals over every query each ran: DataFusion {ref_tot['datafusion']:.3f}s "
                f"({ref_n['datafusion']} queries), DuckDB {ref_tot['duckdb']:.3f}s ({ref_n['duckdb']} queries)")
    print(verdict)
    if failures:
        print(f"\n*** {failures} QUERIES FAILED OR GAVE WRONG ANSWERS ***", file=sys.stderr)

    if not args.no_results:
        body = common.header_block({
            "target": target.label,
            "engines": f"DataFusion {fusion.version} (python, in-process, target_partitions={args.threads}); "
                       f"DuckDB {duck.version} (threads={args.threads}); both over the same Parquet files",
            "method": f"best of {args.runs} runs per query; target over pgwire with psycopg (simple protocol), "
                      f"client-side fetch included; DataFusion collect(); DuckDB fetchall()",
            "answers": "checked against DuckDB on the same data, numbers rounded to 2 decimals, "
                       "sorted multisets where the query has no ORDER BY",
        })
        if failures:
            body += f"\n\n**{failures} QUERIES FAILED OR GAVE WRONG ANSWERS (see the last column).**"
        if load_rows:
            body += "\n\nLoad (COPY FROM STDIN, CSV):\n\n" + common.fmt_table(
                ["table", "rows", "COPY s", "rows/s", "count check"], load_rows)
            body += f"\n\nload total: {load_n:,} rows in {load_s:.1f}s ({load_n / load_s:,.0f} rows/s)"
        body += "\n\nQueries:\n\n" + out + "\n\n" + "\n".join(f"- {v}" for v in verdict.splitlines()) + "\n"
        subset = "" if queries == list(range(1, 23)) else f"-q{args.queries}"
        common.write_section(f"tpch-{common.sf_name(args.sf)}-{target.key}{subset}",
                             f"TPC-H {common.sf_name(args.sf).upper()}"
                             f"{' (queries ' + args.queries + ' only)' if subset else ''}: {target.label}", body)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
