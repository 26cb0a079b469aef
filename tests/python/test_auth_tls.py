"""Authentication (SCRAM-SHA-256), TLS and external tables, on their own
servers started with the matching options."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts" / "lib"))
from servers import QuiverServer  # noqa: E402


@pytest.fixture
def quiver_with(target, tmp_path):
    if target != "quiver":
        pytest.skip("starts quiver with its own options")
    servers = []

    def start(extra_args, env=None):
        s = QuiverServer(extra_args=extra_args, env=env)
        servers.append(s)
        s.start()
        return s

    yield start
    for s in servers:
        s.close()


def _dsn(s, **kw):
    parts = [f"host=127.0.0.1 port={s.port} dbname=quiver connect_timeout=10"]
    parts += [f"{k}={v}" for k, v in kw.items()]
    return " ".join(parts)


def test_scram_password(quiver_with):
    s = quiver_with([], env={"QUIVER_PASSWORD": "s3cret-pw"})
    with psycopg.connect(_dsn(s, user="quiver", password="s3cret-pw"), autocommit=True) as c:
        assert c.execute("SELECT 1").fetchone() == (1,)
    errors = []
    for user, pw in [("quiver", "wrong"), ("nosuchuser", "s3cret-pw"), ("nosuchuser", "wrong")]:
        with pytest.raises(psycopg.OperationalError) as e:
            psycopg.connect(_dsn(s, user=user, password=pw))
        errors.append(str(e.value))
    # A wrong password and an unknown user look the same to the client.
    texts = {e.split("FATAL:", 1)[-1].replace("nosuchuser", "U").replace("quiver", "U").strip() for e in errors}
    assert len(texts) == 1, errors
    assert "password authentication failed" in errors[0].lower()
    # Without a password the server refuses too.
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(_dsn(s, user="quiver"))


def test_tls(quiver_with, tmp_path):
    cert, key = tmp_path / "server.crt", tmp_path / "server.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    s = quiver_with(["--tls-cert", str(cert), "--tls-key", str(key)])
    with psycopg.connect(_dsn(s, user="quiver", sslmode="require"), autocommit=True) as c:
        assert c.execute("SELECT 41 + 1").fetchone() == (42,)
        assert c.pgconn.ssl_in_use
    with psycopg.connect(_dsn(s, user="quiver", sslmode="disable"), autocommit=True) as c:
        assert not c.pgconn.ssl_in_use


def test_external_tables_from_config(quiver_with, tmp_path):
    csv = tmp_path / "trips.csv"
    csv.write_text("id,city,km\n1,Oslo,12.5\n2,Rome,7.25\n3,Oslo,1.0\n")
    cfg = tmp_path / "quiver.toml"
    cfg.write_text(f'[[tables]]\nname = "trips"\npath = "{csv}"\nformat = "csv"\n')
    s = quiver_with(["--config", str(cfg)])
    with psycopg.connect(_dsn(s, user="quiver"), autocommit=True) as c:
        rows = c.execute("SELECT city, sum(km) FROM trips GROUP BY city ORDER BY city").fetchall()
        assert [(r[0], float(r[1])) for r in rows] == [("Oslo", 13.5), ("Rome", 7.25)]
        # A stored table can join the file-backed one.
        c.execute("CREATE TABLE cities (name TEXT PRIMARY KEY, country TEXT)")
        c.execute("INSERT INTO cities VALUES ('Oslo', 'NO'), ('Rome', 'IT')")
        assert c.execute("SELECT country, count(*) FROM trips JOIN cities ON city = name "
                         "GROUP BY country ORDER BY country").fetchall() == [("IT", 1), ("NO", 2)]
