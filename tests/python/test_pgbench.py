"""pgbench with custom scripts against the server: many concurrent clients on
both query protocols, then the data is checked against what pgbench reports."""

from __future__ import annotations

import re
import subprocess

import pytest


def _pgbench(server, script: str, tmp_path, mode: str, clients: int = 4, transactions: int = 200):
    path = tmp_path / "script.sql"
    path.write_text(script)
    cmd = ["pgbench", "-n", "-h", "127.0.0.1", "-p", str(server.port), "-U", server.user,
           "-M", mode, "-c", str(clients), "-j", "2", "-t", str(transactions), "-f", str(path), server.dbname]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, f"pgbench failed:\n{r.stdout}\n{r.stderr}"
    done = int(re.search(r"number of transactions actually processed: (\d+)", r.stdout).group(1))
    failed = re.search(r"number of failed transactions: (\d+)", r.stdout)
    assert failed is None or int(failed.group(1)) == 0, r.stdout
    return done


@pytest.mark.parametrize("mode", ["simple", "extended", "prepared"])
def test_pgbench_custom_script(server, conn, tname, tmp_path, mode):
    conn.execute(f"CREATE TABLE {tname} (id BIGINT PRIMARY KEY, client INT NOT NULL, v INT NOT NULL)")
    conn.execute(f"CREATE TABLE {tname}_kv (k INT PRIMARY KEY, v INT NOT NULL)")
    conn.execute(f"INSERT INTO {tname}_kv SELECT g, 0 FROM generate_series(1, 10) AS s(g)")
    script = f"""
\\set k random(1, 10)
\\set id random(1, 1000000000000)
BEGIN;
INSERT INTO {tname} VALUES (:id::bigint * 100 + :client_id, :client_id, :k);
SELECT v FROM {tname}_kv WHERE k = :k;
COMMIT;
"""
    done = _pgbench(server, script, tmp_path, mode)
    assert done == 4 * 200
    rows, clients, total = conn.execute(
        f"SELECT count(*), count(DISTINCT client), sum(v) FROM {tname}").fetchone()
    assert rows == done, "every committed pgbench transaction left exactly one row"
    assert clients == 4
    assert 1 * done <= total <= 10 * done


TPCB_TABLES = [
    "CREATE TABLE pgbench_branches (bid int PRIMARY KEY, bbalance int NOT NULL, filler char(88))",
    "CREATE TABLE pgbench_tellers (tid int PRIMARY KEY, bid int NOT NULL, tbalance int NOT NULL, filler char(84))",
    "CREATE TABLE pgbench_accounts (aid int PRIMARY KEY, bid int NOT NULL, abalance int NOT NULL, filler char(84))",
    "CREATE TABLE pgbench_history (tid int, bid int, aid int, delta int, mtime timestamp, filler char(22))",
]


def tpcb_tables(conn, distribute: bool = False) -> None:
    """The tables `pgbench -i -s 1` makes (by hand: pgbench -i truncates several tables in one
    statement), as Citus's docs distribute them when `distribute` is set."""
    for t in ("pgbench_history", "pgbench_accounts", "pgbench_tellers", "pgbench_branches"):
        conn.execute(f"DROP TABLE IF EXISTS {t}")
    for ddl in TPCB_TABLES:
        conn.execute(ddl)
    if distribute:
        conn.execute("SELECT create_reference_table('pgbench_branches')")
        conn.execute("SELECT create_reference_table('pgbench_tellers')")
        conn.execute("SELECT create_distributed_table('pgbench_accounts', 'aid')")
        conn.execute("SELECT create_distributed_table('pgbench_history', 'aid')")
    conn.execute("INSERT INTO pgbench_branches SELECT 1, 0, ''")
    conn.execute("INSERT INTO pgbench_tellers SELECT g, 1, 0, '' FROM generate_series(1, 10) AS s(g)")
    conn.execute("INSERT INTO pgbench_accounts SELECT g, 1, 0, '' FROM generate_series(1, 100000) AS s(g)")


def run_tpcb(port: int, user: str, dbname: str, seconds: int) -> tuple[int, int, str]:
    """pgbench's built-in TPC-B-like script; (transactions, failed, output)."""
    cmd = ["pgbench", "-n", "-h", "127.0.0.1", "-p", str(port), "-U", user, "-b", "tpcb-like",
           "-c", "4", "-j", "2", "-T", str(seconds), dbname]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 120)
    out = r.stdout + r.stderr
    assert r.returncode == 0, f"pgbench failed:\n{out}"
    done = int(re.search(r"number of transactions actually processed: (\d+)", out).group(1))
    failed = re.search(r"number of failed transactions: (\d+)", out)
    return done, int(failed.group(1)) if failed else 0, out


def check_tpcb_balances(conn, done: int) -> None:
    """Every committed transaction moved one delta through all four tables."""
    a = conn.execute("SELECT sum(abalance) FROM pgbench_accounts").fetchone()[0]
    t = conn.execute("SELECT sum(tbalance) FROM pgbench_tellers").fetchone()[0]
    b = conn.execute("SELECT sum(bbalance) FROM pgbench_branches").fetchone()[0]
    h, n = conn.execute("SELECT sum(delta), count(*) FROM pgbench_history").fetchone()
    assert n == done, f"{n} history rows for {done} committed transactions"
    assert a == t == b == (h or 0), (a, t, b, h)


def test_pgbench_tpcb_like_no_failures(server, conn):
    """Four clients on one branch row: they queue on its row lock, none fails."""
    tpcb_tables(conn)
    done, failed, out = run_tpcb(server.port, server.user, server.dbname, 6)
    assert failed == 0, out
    assert done >= 20, out
    check_tpcb_balances(conn, done)
