"""Prometheus /metrics reflects real work: statements, errors, rows written,
WAL fsyncs."""

from __future__ import annotations

import re
import time
import urllib.request

import psycopg
import pytest
from psycopg import errors


def _metrics(server) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{server.http_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = re.match(r"^([a-z_]+)(\{[^}]*\})?\s+([0-9.eE+-]+)$", line)
        if m:
            key = m.group(1) + (m.group(2) or "")
            out[key] = float(m.group(3))
    return out


def test_metrics_count_real_work(target, make_server, tname):
    if target != "quiver":
        pytest.skip("Quiver's /metrics endpoint")
    # A server of its own: rows that other tests wrote just before would be published
    # (once a second) between the two readings.
    server = make_server()
    server.start()
    conn = psycopg.connect(server.dsn, autocommit=True, connect_timeout=10)
    before = _metrics(server)
    conn.execute(f"CREATE TABLE {tname} (id INT PRIMARY KEY)")
    conn.execute(f"INSERT INTO {tname} SELECT g FROM generate_series(1, 250) AS s(g)")
    with pytest.raises(errors.UniqueViolation):
        conn.execute(f"INSERT INTO {tname} VALUES (1)")
    # Rows written are published by a once-a-second task: poll with a deadline.
    deadline = time.monotonic() + 10
    while True:
        after = _metrics(server)
        rows = after.get("quiver_rows_written_total", 0) - before.get("quiver_rows_written_total", 0)
        if rows >= 250 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert rows == 250
    assert after.get("quiver_wal_fsyncs_total", 0) > before.get("quiver_wal_fsyncs_total", 0)
    assert after.get('quiver_query_errors_total{sqlstate="23"}', 0) >= 1
    insert_key = 'quiver_queries_total{kind="insert"}'
    assert after.get(insert_key, 0) - before.get(insert_key, 0) >= 2
    conn.close()
