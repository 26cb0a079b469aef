"""Differential test: everyday statements give the same answers as PostgreSQL 15.

Each script of ``everyday_cases.SCRIPTS`` runs statement by statement on the
server under test and on a throwaway PostgreSQL 15 started by this module, and
every outcome is compared: column names, column types, rows (as the text the
server sent), command tags, and SQLSTATEs of errors. Rows of a statement
without ORDER BY are compared as a multiset.

The cluster variant runs the same scripts on a Quiver coordinator with two
workers, with the script's tables distributed (``everyday_cases.DISTRIBUTE``),
and compares with the same PostgreSQL.

``KNOWN_DIFFERENCES`` lists the statements whose outcome is known to differ
from PostgreSQL's; they must still differ (a strict expectation: when one is
fixed, its entry must go).
"""

from __future__ import annotations

import itertools
import re
import shutil
import subprocess

import psycopg
import pytest
from psycopg.adapt import Loader
from psycopg.postgres import types as pg_types

from everyday_cases import DISTRIBUTE, SCRIPTS
from servers import PgServer, running_cluster

# (script, statement index) -> why Quiver's answer differs from PostgreSQL's.
KNOWN_DIFFERENCES: dict[tuple[str, int], str] = {
    ("numerics", 0): "numeric division keeps a fixed scale (ADR 0010), not PostgreSQL's",
    ("numerics", 9): "numeric division keeps a fixed scale (ADR 0010), not PostgreSQL's",
    ("numerics", 14): "avg(numeric) keeps scale + 4 digits, PostgreSQL's scale depends on the value",
    ("numerics", 15): "avg(numeric) keeps scale + 4 digits, PostgreSQL's scale depends on the value",
}

# The cluster variant: the same, and what distributed tables refuse.
DIST_KNOWN_DIFFERENCES: dict[tuple[str, int], str] = {
    **KNOWN_DIFFERENCES,
    ("ddl_defaults", 12): "ADD COLUMN NOT NULL without a DEFAULT is refused (0A000) on a distributed table",
    ("dml", 6): "the distribution column cannot be updated (0A000), as in Citus",
}

_ids = itertools.count()


class RawText(Loader):
    """Keeps every value as the text the server sent."""

    def load(self, data):
        return bytes(data).decode()


def _raw_connect(dsn: str) -> psycopg.Connection:
    conn = psycopg.connect(dsn, autocommit=True, connect_timeout=10)
    for t in pg_types:
        conn.adapters.register_loader(t.oid, RawText)
        if t.array_oid:
            conn.adapters.register_loader(t.array_oid, RawText)
    conn.execute("SET TIME ZONE 'UTC'")
    return conn


def _type_name(oid: int) -> str:
    t = pg_types.get(oid)
    return t.name if t else str(oid)


def outcome(conn: psycopg.Connection, sql: str):
    """What a client can tell of one statement's result."""
    try:
        cur = conn.execute(sql)
    except psycopg.Error as e:
        return ("error", e.sqlstate)
    if cur.description is None:
        return ("status", cur.statusmessage)
    cols = [(d.name, _type_name(d.type_code)) for d in cur.description]
    rows = cur.fetchall()
    if not _ordered(sql):
        rows = sorted(rows, key=lambda r: tuple("\0" if v is None else v for v in r))
    return ("rows", cols, rows)


def _ordered(sql: str) -> bool:
    """True when the statement itself has an ORDER BY: one inside parentheses (an aggregate's,
    a window's, a subquery's) does not order the rows."""
    outer = sql
    while True:
        stripped = re.sub(r"\([^()]*\)", "", outer)
        if stripped == outer:
            break
        outer = stripped
    return re.search(r"\border\s+by\b", outer, re.I) is not None


def _render(script: str, t: str) -> list[str]:
    return [s.replace("{t}", t) for s in SCRIPTS[script]]


@pytest.fixture(scope="module")
def postgres(target):
    """The reference PostgreSQL 15 (the server under test itself with --target=pg)."""
    pg = PgServer()
    pg.start()
    yield pg
    pg.close()


def run_and_compare(script: str, dsn: str, pg_dsn: str, known_differences: dict[tuple[str, int], str],
                    distribute: dict[str, str] | None = None):
    t = f"ev_{script}_{next(_ids)}"
    ours, theirs = _raw_connect(dsn), _raw_connect(pg_dsn)
    dist_stmts = {}
    for table, column in (distribute or {}).items():
        dist_stmts[table.replace("{t}", t)] = f"SELECT create_distributed_table('{table.replace('{t}', t)}', '{column}')"
    same, differ = [], []
    try:
        for i, sql in enumerate(_render(script, t)):
            got, want = outcome(ours, sql), outcome(theirs, sql)
            m = re.match(r"\s*CREATE TABLE (\S+)", sql, re.I)
            if m and m.group(1) in dist_stmts:
                extra = outcome(ours, dist_stmts[m.group(1)])
                assert extra[0] == "rows", f"distributing {m.group(1)}: {extra}"
            known = known_differences.get((script, i))
            if got == want:
                same.append(i)
                if known:
                    differ.append(f"[{i}] {sql}\n    listed as a known difference ({known}) but now matches")
            elif not known:
                differ.append(f"[{i}] {sql}\n    quiver:     {got}\n    postgresql: {want}")
    finally:
        ours.close()
        theirs.close()
    assert not differ, f"{len(differ)} of {len(SCRIPTS[script])} statements differ from PostgreSQL:\n" + "\n".join(differ)


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_same_as_postgres(script, server, postgres, target):
    # With --target=pg both sides are PostgreSQL: nothing is known to differ.
    known = KNOWN_DIFFERENCES if target == "quiver" else {}
    run_and_compare(script, server.dsn, postgres.dsn, known)


@pytest.fixture(scope="module")
def small_cluster(target):
    if target != "quiver":
        pytest.skip("a Quiver cluster has no PostgreSQL counterpart")
    with running_cluster(workers=2) as c:
        yield c


@pytest.mark.parametrize("script", sorted(DISTRIBUTE))
def test_distributed_same_as_postgres(script, small_cluster, postgres):
    run_and_compare(script, small_cluster.dsn, postgres.dsn, DIST_KNOWN_DIFFERENCES, DISTRIBUTE[script])


COPY_TABLE = ("(id int PRIMARY KEY, s text, n numeric(12,3), f float8, d date, ts timestamp, "
              "b boolean, iv interval, j json, bin bytea)")
COPY_ROWS = [
    "1\thello\t1.500\t0.1\t2024-01-02\t2024-01-02 03:04:05\tt\t1 day\t{\"a\": 1}\t\\\\x0102",
    "2\t\\N\t\\N\t\\N\t\\N\t\\N\t\\N\t\\N\t\\N\t\\N",
    "3\ttab\\there\\nline\t-0.001\t-1e+20\t1999-12-31\t2000-01-01 00:00:00.5\tf\t-01:30:00\t[]\t\\\\x",
    "4\t\t0.000\t-0\t2024-02-29\t2024-02-29 23:59:59.999999\tt\t1 year 2 mons\tnull\t\\\\x41",
]


def _copy_round_trip(dsn: str, table: str) -> dict[str, list[bytes]]:
    """Loads COPY_ROWS with psycopg's COPY FROM STDIN (text), then reads the table back with
    COPY TO STDOUT in text and CSV: every CopyData message, as psycopg receives it."""
    out = {}
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("SET TIME ZONE 'UTC'")
        c.execute(f"CREATE TABLE {table} {COPY_TABLE}")
        cur = c.cursor()
        with cur.copy(f"COPY {table} FROM STDIN") as cp:
            for line in COPY_ROWS:
                cp.write(line + "\n")
        out["in_rowcount"] = [str(cur.rowcount).encode()]
        for name, opts in [("text", ""), ("csv", " WITH (FORMAT csv, HEADER true)"),
                           ("csv_quoted", " WITH (FORMAT csv, FORCE_QUOTE (s, d, j), NULL 'NULL')")]:
            with cur.copy(f"COPY (SELECT * FROM {table} ORDER BY id) TO STDOUT{opts}") as cp:
                out[name] = [bytes(b) for b in cp]
        with cur.copy(f"COPY (SELECT id, s, n FROM {table} ORDER BY id) TO STDOUT") as cp:
            cp.set_types(["int4", "text", "numeric"])
            out["rows"] = [repr(r).encode() for r in cp.rows()]
    return out


def _psql_copy_out(dsn: str, table: str) -> str:
    """psql's \\copy ... to stdout, as a user's shell script runs it."""
    psql = shutil.which("psql") or "/usr/lib/postgresql/15/bin/psql"
    r = subprocess.run([psql, dsn, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c",
                        f"\\copy (SELECT id, s, n, d FROM {table} ORDER BY id) to stdout with (format csv)"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_copy_in_and_out_same_as_postgres(server, postgres):
    table = f"ev_copy_{next(_ids)}"
    ours, theirs = _copy_round_trip(server.dsn, table), _copy_round_trip(postgres.dsn, table)
    for key in theirs:
        assert ours[key] == theirs[key], f"{key}:\n quiver:     {ours[key]}\n postgresql: {theirs[key]}"
    assert _psql_copy_out(server.dsn, table) == _psql_copy_out(postgres.dsn, table)
