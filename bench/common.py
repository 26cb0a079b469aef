"""Shared helpers for Quiver's benchmarks: targets, TPC-H data, tables, RESULTS.md."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO / "scripts" / "lib"))

from servers import PgServer, QuiverServer, find_quiver_bin, machine_info  # noqa: E402,F401

RESULTS = BENCH / "RESULTS.md"
DATA = BENCH / "data"
def _tpch_queries() -> Path:
    """The TPC-H query texts: $TPCH_QUERIES, else shared/tpch/queries next to the checkout,
    else the workplace's /work/shared (a clean clone elsewhere, as CI makes, still finds them)."""
    if os.environ.get("TPCH_QUERIES"):
        return Path(os.environ["TPCH_QUERIES"])
    for cand in [REPO.parent / "shared" / "tpch" / "queries", Path("/work/shared/tpch/queries")]:
        if (cand / "q1.sql").exists():
            return cand
    return REPO.parent / "shared" / "tpch" / "queries"


QUERIES = _tpch_queries()

TPCH_TABLES = ["region", "nation", "supplier", "customer", "part", "partsupp", "orders", "lineitem"]

# TPC-H schema with the spec's types (PostgreSQL spelling).
TPCH_DDL = {
    "region": """CREATE TABLE region (
        r_regionkey INTEGER NOT NULL, r_name CHAR(25) NOT NULL, r_comment VARCHAR(152))""",
    "nation": """CREATE TABLE nation (
        n_nationkey INTEGER NOT NULL, n_name CHAR(25) NOT NULL, n_regionkey INTEGER NOT NULL,
        n_comment VARCHAR(152))""",
    "supplier": """CREATE TABLE supplier (
        s_suppkey BIGINT NOT NULL, s_name CHAR(25) NOT NULL, s_address VARCHAR(40) NOT NULL,
        s_nationkey INTEGER NOT NULL, s_phone CHAR(15) NOT NULL, s_acctbal DECIMAL(15,2) NOT NULL,
        s_comment VARCHAR(101) NOT NULL)""",
    "customer": """CREATE TABLE customer (
        c_custkey BIGINT NOT NULL, c_name VARCHAR(25) NOT NULL, c_address VARCHAR(40) NOT NULL,
        c_nationkey INTEGER NOT NULL, c_phone CHAR(15) NOT NULL, c_acctbal DECIMAL(15,2) NOT NULL,
        c_mktsegment CHAR(10) NOT NULL, c_comment VARCHAR(117) NOT NULL)""",
    "part": """CREATE TABLE part (
        p_partkey BIGINT NOT NULL, p_name VARCHAR(55) NOT NULL, p_mfgr CHAR(25) NOT NULL,
        p_brand CHAR(10) NOT NULL, p_type VARCHAR(25) NOT NULL, p_size INTEGER NOT NULL,
        p_container CHAR(10) NOT NULL, p_retailprice DECIMAL(15,2) NOT NULL, p_comment VARCHAR(23) NOT NULL)""",
    "partsupp": """CREATE TABLE partsupp (
        ps_partkey BIGINT NOT NULL, ps_suppkey BIGINT NOT NULL, ps_availqty INTEGER NOT NULL,
        ps_supplycost DECIMAL(15,2) NOT NULL, ps_comment VARCHAR(199) NOT NULL)""",
    "orders": """CREATE TABLE orders (
        o_orderkey BIGINT NOT NULL, o_custkey BIGINT NOT NULL, o_orderstatus CHAR(1) NOT NULL,
        o_totalprice DECIMAL(15,2) NOT NULL, o_orderdate DATE NOT NULL, o_orderpriority CHAR(15) NOT NULL,
        o_clerk CHAR(15) NOT NULL, o_shippriority INTEGER NOT NULL, o_comment VARCHAR(79) NOT NULL)""",
    "lineitem": """CREATE TABLE lineitem (
        l_orderkey BIGINT NOT NULL, l_partkey BIGINT NOT NULL, l_suppkey BIGINT NOT NULL,
        l_linenumber INTEGER NOT NULL, l_quantity DECIMAL(15,2) NOT NULL,
        l_extendedprice DECIMAL(15,2) NOT NULL, l_discount DECIMAL(15,2) NOT NULL,
        l_tax DECIMAL(15,2) NOT NULL, l_returnflag CHAR(1) NOT NULL, l_linestatus CHAR(1) NOT NULL,
        l_shipdate DATE NOT NULL, l_commitdate DATE NOT NULL, l_receiptdate DATE NOT NULL,
        l_shipinstruct CHAR(25) NOT NULL, l_shipmode CHAR(10) NOT NULL, l_comment VARCHAR(44) NOT NULL)""",
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --- targets -----------------------------------------------------------------

def add_target_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target", choices=["quiver", "pg"], default="quiver",
                   help="what to benchmark as 'Quiver': the quiver binary (default), or a throwaway PostgreSQL 15 "
                        "standing in for it to check the harness")
    p.add_argument("--target-dsn", help="use an already running server at this libpq DSN instead of starting one")
    p.add_argument("--quiver-bin", help="quiver binary (default: QUIVER_BIN, else release build if present, else debug)")
    p.add_argument("--no-results", action="store_true", help="do not write bench/RESULTS.md")


class Target:
    """The system under test: started here (quiver or PG stand-in) or given by DSN."""

    def __init__(self, args, pg_opts: dict | None = None):
        self.server = None
        if args.target_dsn:
            self.dsn = args.target_dsn
            self.label = f"external server ({args.target_dsn})"
            self.is_standin = True
            self.key = "external"
        elif args.target == "pg":
            self.server = PgServer(extra_opts=pg_opts)
            self.label = "PostgreSQL 15 standing in for Quiver (harness check, not a Quiver result)"
            self.is_standin = True
            self.key = "pg-standin"
        else:
            binary = Path(args.quiver_bin) if args.quiver_bin else find_quiver_bin(prefer_release=True)
            self.server = QuiverServer(binary=binary)
            profile = binary.parent.name if binary.parent.name in ("debug", "release") else str(binary)
            self.label = f"Quiver ({profile} build: {binary})"
            self.is_standin = False
            self.key = "quiver"
            if profile == "debug":
                self.label += " -- DEBUG build, numbers are not representative"

    def start(self) -> str:
        if self.server:
            log(f"starting {self.label}")
            self.server.start(timeout=300)
            self.dsn = self.server.dsn
        return self.dsn

    def close(self) -> None:
        if self.server:
            self.server.close()


def start_pg(pg_opts: dict | None = None) -> PgServer:
    s = PgServer(extra_opts=pg_opts)
    log("starting PostgreSQL 15 (reference)")
    s.start(timeout=300)
    return s


# --- Citus peer ----------------------------------------------------------------
# Citus is never part of this repository: it is built once on the machine from the workplace's
# shared recipe (../shared/peers/citus/README.md: build.sh, cluster.sh), and a benchmark only
# calls its cluster.sh at run time when it is installed.

CITUS_DIR = Path(os.environ.get("CITUS_PEER_DIR", Path(__file__).resolve().parents[2] / "shared" / "peers" / "citus"))
CITUS_LABEL = "Citus 13 (1+2 workers)"


def citus_missing() -> str | None:
    """Why the Citus peer cannot run here (None when it can): the shared cluster script and
    citus.so in PostgreSQL 15's pkglibdir."""
    if not (CITUS_DIR / "cluster.sh").exists():
        return f"no Citus cluster script at {CITUS_DIR / 'cluster.sh'}"
    libdirs = [Path(os.environ.get("PG_BIN_DIR", "/usr/lib/postgresql/15/bin")).parent / "lib"]
    for pg_config in [str(Path(os.environ.get("PG_BIN_DIR", "/usr/lib/postgresql/15/bin")) / "pg_config"),
                      shutil.which("pg_config")]:
        if pg_config and Path(pg_config).exists():
            r = subprocess.run([pg_config, "--pkglibdir"], capture_output=True, text=True)
            if r.returncode == 0 and r.stdout.strip():
                libdirs.append(Path(r.stdout.strip()))
    if not any((d / "citus.so").exists() for d in libdirs):
        return (f"citus.so not found in {', '.join(sorted({str(d) for d in libdirs}))} "
                f"(build it: see {CITUS_DIR / 'README.md'})")
    return None


def _free_port_run(n: int) -> int:
    """A base port with `n` consecutive bindable loopback ports, below the ephemeral range."""
    import random
    import socket
    from servers import _ephemeral_range

    hi = min(_ephemeral_range()[0], 65536) - n - 1
    for _ in range(500):
        base = random.randint(15000, hi)
        ok = True
        for port in range(base, base + n):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError(f"no {n} consecutive free ports found")


class CitusCluster:
    """Citus 1 coordinator + 2 workers (PostgreSQL 15) started with the shared cluster.sh on a
    free base port and a fresh data dir; stopped and removed on close. User and database postgres."""

    user = "postgres"
    dbname = "postgres"

    def __init__(self) -> None:
        self.port = _free_port_run(3)
        self.dir = Path(tempfile.mkdtemp(prefix="quiver-bench-citus."))
        self.version = "?"

    @property
    def dsn(self) -> str:
        return f"host=127.0.0.1 port={self.port} user={self.user} dbname={self.dbname}"

    def _script(self, cmd: str, timeout: float) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", str(CITUS_DIR / "cluster.sh"), cmd, str(self.port), str(self.dir)],
                              capture_output=True, text=True, timeout=timeout)

    def start(self) -> None:
        log(f"starting {CITUS_LABEL}: {CITUS_DIR / 'cluster.sh'} start {self.port} {self.dir}")
        try:
            r = self._script("start", 300)
        except subprocess.TimeoutExpired:
            self.close()
            raise
        if r.returncode != 0:
            tail = "\n".join((self.dir / f"n{i}.log").read_text(errors="replace")[-2000:]
                             for i in range(3) if (self.dir / f"n{i}.log").exists())
            self.close()
            raise RuntimeError(f"Citus cluster.sh start failed ({r.returncode}):\n{r.stdout}\n{r.stderr}\n{tail}")
        import psycopg

        with psycopg.connect(self.dsn, autocommit=True) as c:
            self.version = c.execute("SELECT citus_version()").fetchone()[0]
            workers = c.execute("SELECT count(*) FROM citus_get_active_worker_nodes()").fetchone()[0]
        if workers != 2:
            self.close()
            raise RuntimeError(f"Citus cluster has {workers} active workers, expected 2")
        log(f"Citus up on ports {self.port}-{self.port + 2}: {self.version}")

    def close(self) -> None:
        try:
            self._script("stop", 120)
        finally:
            if not os.environ.get("QUIVER_KEEP_DATA"):
                shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.close()


def citus_or_none() -> CitusCluster | None:
    """A (not yet started) CitusCluster when Citus is installed, else None with a log line."""
    why = citus_missing()
    if why:
        log(f"skipping {CITUS_LABEL}: {why}")
        return None
    return CitusCluster()


def pg_version() -> str:
    r = subprocess.run([str(Path(os.environ.get("PG_BIN_DIR", "/usr/lib/postgresql/15/bin")) / "postgres"),
                        "--version"], capture_output=True, text=True)
    return r.stdout.strip()


# --- TPC-H data --------------------------------------------------------------

def tpchgen_bin() -> str:
    for cand in [str(Path(sys.executable).parent / "tpchgen-cli"), shutil.which("tpchgen-cli"), str(Path(os.environ.get("CARGO_HOME", Path.home() / ".cargo")) / "bin" / "tpchgen-cli")]:
        if cand and Path(cand).exists():
            return cand
    raise SystemExit("tpchgen-cli not found: run scripts/install-test-deps.sh (cargo install --locked tpchgen-cli)")


def sf_name(sf: float) -> str:
    return f"sf{sf:g}"


def tpch_data(sf: float, fmt: str, tables: list[str] | None = None) -> Path:
    """Generate (once) TPC-H data in `fmt` (parquet or csv) under bench/data/sf{N}/{fmt}; return the dir."""
    tables = tables or TPCH_TABLES
    out = DATA / sf_name(sf) / fmt
    ext = {"parquet": "parquet", "csv": "csv", "tbl": "tbl"}[fmt]
    missing = [t for t in tables if not (out / f"{t}.{ext}").exists()]
    if not missing:
        return out
    out.mkdir(parents=True, exist_ok=True)
    for t in missing:
        log(f"generating TPC-H {sf_name(sf)} {t} as {fmt} with tpchgen-cli")
        tmp = out / f".tmp-{t}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        subprocess.run([tpchgen_bin(), fmt, "-s", f"{sf:g}", "-T", t, "-o", str(tmp)], check=True)
        produced = tmp / f"{t}.{ext}"
        if not produced.exists():
            raise SystemExit(f"tpchgen-cli did not produce {produced}: {list(tmp.iterdir())}")
        produced.rename(out / f"{t}.{ext}")
        shutil.rmtree(tmp)
    return out


def csv_has_header(path: Path) -> bool:
    with open(path, "rb") as f:
        first = f.readline().decode(errors="replace")
    return bool(re.match(r"^[a-z]_[a-z]+", first)) or first.startswith(("r_", "n_", "s_", "c_", "p_", "ps_", "o_", "l_"))


def copy_file(conn, table: str, path: Path, columns: str = "", chunk: int = 1 << 20) -> int:
    """Stream a CSV file into `table` with COPY FROM STDIN; returns rows per the command tag."""
    skip_header = csv_has_header(path)
    cur = conn.cursor()
    # the header line is dropped here rather than with HEADER, so only plain CSV COPY is needed
    with open(path, "rb") as f, cur.copy(f"COPY {table}{columns} FROM STDIN WITH (FORMAT csv)") as cp:
        if skip_header:
            f.readline()
        while True:
            block = f.read(chunk)
            if not block:
                break
            cp.write(block)
    return cur.rowcount


def count_lines(path: Path) -> int:
    n = 0
    with open(path, "rb") as f:
        while True:
            b = f.read(1 << 24)
            if not b:
                break
            n += b.count(b"\n")
    return n


# --- reporting ---------------------------------------------------------------

def fmt_table(headers: list[str], rows: list[list]) -> str:
    """A Markdown table (also readable on a terminal)."""
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    def line(r):
        return "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"
    out = [line(cells[0]), "| " + " | ".join("-" * w for w in widths) + " |"]
    out += [line(r) for r in cells[1:]]
    return "\n".join(out)


def header_block(extra: dict | None = None) -> str:
    m = machine_info()
    lines = [
        f"- date: {dt.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}",
        f"- machine: {m.get('nproc')} cores ({m.get('cpu', '?')}), {m.get('ram_gib')} GiB RAM",
        f"- git commit: {m.get('commit')}",
        "- load average at the end (1/5/15 min, other work on the machine skews numbers): "
        + " / ".join(f"{x:.2f}" for x in os.getloadavg()),
    ]
    for k, v in (extra or {}).items():
        lines.append(f"- {k}: {v}")
    return "\n".join(lines)


def write_section(key: str, title: str, body: str) -> None:
    """Append or refresh the section `key` of bench/RESULTS.md."""
    begin, end = f"<!-- BEGIN {key} -->", f"<!-- END {key} -->"
    section = f"{begin}\n## {title}\n\n{body.rstrip()}\n{end}\n"
    if RESULTS.exists():
        text = RESULTS.read_text()
    else:
        text = ("# Quiver benchmark results\n\n"
                "Written by `bench/run.sh` (see `bench/README.md`). Each section is refreshed by its own\n"
                "benchmark; numbers are from the machine and commit named in the section.\n\n")
    pat = re.compile(re.escape(begin) + r".*?" + re.escape(end) + r"\n?", re.S)
    if pat.search(text):
        text = pat.sub(lambda _: section, text)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    RESULTS.write_text(text)
    log(f"wrote section '{key}' of {RESULTS}")


def ratio(a: float | None, b: float | None) -> str:
    if not a or not b:
        return "n/a"
    return f"{a / b:.2f}x"
