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
