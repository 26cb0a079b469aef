"""The wire protocol as drivers use it: simple and extended queries, prepared statements,
errors with SQLSTATE, cancellation, SET/SHOW, bad protocol messages, psql."""

import os
import socket
import struct
import subprocess
import threading
import time

import psycopg
import pytest
from psycopg import errors


def test_simple_query_multiple_statements(conn, tname):
    # no parameters -> psycopg sends a simple Query message; several statements in one
    cur = conn.cursor()
    cur.execute(f"CREATE TABLE {tname} (a INT); INSERT INTO {tname} VALUES (1), (2); SELECT count(*) FROM {tname}")
    # three results: CREATE TABLE, INSERT 0 2, then the rows
    assert cur.statusmessage == "CREATE TABLE"
    assert cur.nextset() and cur.rowcount == 2
    assert cur.nextset()
    assert cur.fetchall() == [(2,)]
    assert not cur.nextset()
    cur.execute("SELECT 1 AS one; SELECT 'two' AS two")
    assert cur.fetchall() == [(1,)]
    assert cur.nextset()
    assert cur.fetchall() == [("two",)]
    assert [d.name for d in cur.description] == ["two"]


def test_parameters(conn, tname):
    conn.execute(f"CREATE TABLE {tname} (id INT PRIMARY KEY, name TEXT, v BIGINT)")
    cur = conn.cursor()
    cur.executemany(f"INSERT INTO {tname} VALUES (%s, %s, %s)", [(i, f"n{i}", i * 100) for i in range(1, 51)])
    assert cur.execute(f"SELECT name, v FROM {tname} WHERE id = %s", (7,)).fetchall() == [("n7", 700)]
    assert cur.execute(f"SELECT count(*) FROM {tname} WHERE id BETWEEN %s AND %s AND name LIKE %s",
                       (10, 19, "n1%")).fetchone() == (10,)
    # NULL parameter, and parameters in expressions and the select list
    assert cur.execute("SELECT %s::int IS NULL, %s::int + 1, %s::text || 'x'", (None, 41, "y")).fetchone() == (True, 42, "yx")
    # quotes and backslashes travel as data, not SQL
    evil = "it's a \\ 'quoted'; DROP TABLE x; --"
    cur.execute(f"INSERT INTO {tname} VALUES (%s, %s, %s)", (1000, evil, 0))
    assert cur.execute(f"SELECT name FROM {tname} WHERE id = %s", (1000,)).fetchone() == (evil,)


@pytest.mark.parametrize("binary", [False, True], ids=["text", "binary"])
def test_prepared_statement_reused(connect, tname, binary):
    conn = connect(prepare_threshold=0)  # every parameterized statement is a named prepared statement
    conn.execute(f"CREATE TABLE {tname} (id INT PRIMARY KEY, v TEXT)")
    cur = conn.cursor(binary=binary)
    ph = "%b" if binary else "%s"
    for i in range(20):
        cur.execute(f"INSERT INTO {tname} VALUES ({ph}, {ph})", (i, f"v{i}"), prepare=True)
    for i in [3, 19, 0, 3, 7]:
        cur.execute(f"SELECT v FROM {tname} WHERE id = {ph}", (i,), prepare=True)
        assert cur.fetchall() == [(f"v{i}",)]
    cur.execute(f"SELECT v FROM {tname} WHERE id = {ph}", (999,), prepare=True)
    assert cur.fetchall() == []
    # the prepared statement still works after the table changed
    conn.execute(f"UPDATE {tname} SET v = 'new' WHERE id = 3")
    cur.execute(f"SELECT v FROM {tname} WHERE id = {ph}", (3,), prepare=True)
    assert cur.fetchall() == [("new",)]


def test_sql_prepare_execute(conn, tname):
    conn.execute(f"CREATE TABLE {tname} (id INT PRIMARY KEY, v TEXT)")
    conn.execute(f"INSERT INTO {tname} VALUES (1, 'a'), (2, 'b')")
    conn.execute(f"PREPARE q_{tname} (int) AS SELECT v FROM {tname} WHERE id = $1")
    assert conn.execute(f"EXECUTE q_{tname} (2)").fetchall() == [("b",)]
    assert conn.execute(f"EXECUTE q_{tname} (1)").fetchall() == [("a",)]
    conn.execute(f"DEALLOCATE q_{tname}")


def test_describe_before_fetch(conn, tname):
    conn.execute(f"CREATE TABLE {tname} (id BIGINT, label VARCHAR(10), at DATE)")
    cur = conn.cursor()
    cur.execute(f"SELECT id, label, at FROM {tname} WHERE id = %s", (1,))
    assert [(d.name, d.type_code) for d in cur.description] == [("id", 20), ("label", 1043), ("at", 1082)]
    assert cur.fetchall() == []


def _sqlstate_then_alive(conn, sql, sqlstate, params=None):
    with pytest.raises(psycopg.Error) as e:
        conn.execute(sql, params)
    assert e.value.sqlstate == sqlstate, f"{sql!r}: got SQLSTATE {e.value.sqlstate} ({e.value}), expected {sqlstate}"
    # the session goes on
    assert conn.execute("SELECT 1").fetchone() == (1,)
    return e.value


def test_error_sqlstates_and_session_continues(conn, tname):
    conn.execute(f"CREATE TABLE {tname} (id INT PRIMARY KEY, name TEXT NOT NULL, n INT)")
    conn.execute(f"INSERT INTO {tname} VALUES (1, 'a', 1)")
    _sqlstate_then_alive(conn, "SELEC 1", "42601")
    _sqlstate_then_alive(conn, f"SELECT * FROM {tname} WHERE", "42601")
    _sqlstate_then_alive(conn, "SELECT * FROM no_such_table_anywhere", "42P01")
    _sqlstate_then_alive(conn, f"SELECT no_such_column FROM {tname}", "42703")
    _sqlstate_then_alive(conn, f"INSERT INTO {tname} VALUES (1, 'dup', 2)", "23505")
    _sqlstate_then_alive(conn, f"INSERT INTO {tname} VALUES (2, NULL, 2)", "23502")
    _sqlstate_then_alive(conn, f"INSERT INTO {tname} (id, n) VALUES (3, 3)", "23502")
    _sqlstate_then_alive(conn, f"INSERT INTO {tname} VALUES (4, 'x', 'abc')", "22P02")
    _sqlstate_then_alive(conn, "SELECT 'abc'::int", "22P02")
    _sqlstate_then_alive(conn, "SELECT 1 / 0", "22012")
    # the same errors on the extended protocol
    _sqlstate_then_alive(conn, f"SELECT * FROM no_such_table_anywhere WHERE id = %s", "42P01", (1,))
    _sqlstate_then_alive(conn, f"INSERT INTO {tname} VALUES (%s, %s, %s)", "23505", (1, "dup", 2))
    # nothing of the failed statements was written
    assert conn.execute(f"SELECT id, name, n FROM {tname}").fetchall() == [(1, "a", 1)]


def test_error_message_fields(conn):
    with pytest.raises(errors.UndefinedTable) as e:
        conn.execute("SELECT * FROM no_such_table_here")
    diag = e.value.diag
    assert diag.severity in ("ERROR", "FATAL")
    assert "no_such_table_here" in (diag.message_primary or "")


def test_other_sessions_unaffected_by_errors(connect):
    a, b = connect(), connect()
    with pytest.raises(errors.SyntaxError):
        a.execute("SELEC garbage")
    assert b.execute("SELECT 2").fetchone() == (2,)
    assert a.execute("SELECT 3").fetchone() == (3,)


def test_set_and_show(conn):
    conn.execute("SET application_name = 'quiver-tests'")
    assert conn.execute("SHOW application_name").fetchone() == ("quiver-tests",)
    conn.execute("SET TIME ZONE 'UTC'")
    assert conn.execute("SHOW TimeZone").fetchone()[0] in ("UTC", "Etc/UTC")
    conn.execute("SET quiver.shard_count = 8")  # the quiver.* namespace
    assert conn.execute("SHOW quiver.shard_count").fetchone() == ("8",)
    assert conn.execute("SHOW server_version").fetchone()[0][:1].isdigit()
    assert conn.execute("SHOW standard_conforming_strings").fetchone() == ("on",)
    assert conn.execute("SHOW client_encoding").fetchone() == ("UTF8",)
    assert conn.execute("SELECT current_setting('application_name')").fetchone() == ("quiver-tests",)
    with pytest.raises(errors.UndefinedObject) as e:
        conn.execute("SHOW no_such_setting")
    assert e.value.sqlstate == "42704"
    assert conn.execute("SELECT 1").fetchone() == (1,)


def test_timezone_setting_changes_timestamptz_text(conn):
    conn.execute("SET TIME ZONE 'UTC'")
    assert conn.execute("SELECT TIMESTAMPTZ '2024-06-01 12:00:00+00'::text").fetchone() == ("2024-06-01 12:00:00+00",)
    conn.execute("SET TIME ZONE 'Asia/Tokyo'")
    assert conn.execute("SELECT TIMESTAMPTZ '2024-06-01 12:00:00+00'::text").fetchone() == ("2024-06-01 21:00:00+09",)


def test_settings_are_per_session(connect):
    a, b = connect(), connect()
    a.execute("SET application_name = 'session-a'")
    b.execute("SET application_name = 'session-b'")
    assert a.execute("SHOW application_name").fetchone() == ("session-a",)
    assert b.execute("SHOW application_name").fetchone() == ("session-b",)


def test_server_parameters_reported_at_startup(conn):
    assert conn.info.parameter_status("server_version")
    assert conn.info.parameter_status("client_encoding") == "UTF8"
    assert conn.info.parameter_status("integer_datetimes") == "on"
    assert conn.info.parameter_status("standard_conforming_strings") == "on"
    assert conn.info.server_version >= 90000


def test_query_cancellation(connect):
    conn = connect()
    done = threading.Event()
    gave_up = []

    def canceller():
        # keep asking until the query is gone: a cancel that lands before the query starts is a no-op
        deadline = time.monotonic() + 60
        while not done.is_set() and time.monotonic() < deadline:
            conn.cancel()
            done.wait(0.2)
        if not done.is_set():
            # the cancel requests did nothing: cut the connection so the test ends instead of waiting
            gave_up.append(True)
            s = socket.socket(fileno=os.dup(conn.fileno()))
            s.shutdown(socket.SHUT_RDWR)
            s.close()

    t = threading.Thread(target=canceller, daemon=True)
    start = time.monotonic()
    t.start()
    try:
        with pytest.raises(errors.QueryCanceled) as e:
            conn.execute("SELECT count(*) FROM generate_series(1, 10000000000) AS s(g) WHERE g % 7 = 3")
    except BaseException:
        if gave_up:
            pytest.fail("the query was not cancelled within 60s of cancel requests")
        raise
    finally:
        done.set()
        t.join()
    assert not gave_up
    assert e.value.sqlstate == "57014"
    assert time.monotonic() - start < 60
    assert conn.execute("SELECT 1").fetchone() == (1,)


# --- raw protocol: malformed messages close that connection only -------------

def _startup(sock, user="quiver", db="quiver"):
    params = b"user\0" + user.encode() + b"\0database\0" + db.encode() + b"\0\0"
    body = struct.pack("!I", 196608) + params
    sock.sendall(struct.pack("!I", len(body) + 4) + body)


def _read_until_ready(sock):
    buf = b""
    while True:
        while len(buf) < 5:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed before ReadyForQuery")
            buf += chunk
        typ, ln = buf[0:1], struct.unpack("!I", buf[1:5])[0]
        while len(buf) < 1 + ln:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed mid-message")
            buf += chunk
        msg, buf = buf[: 1 + ln], buf[1 + ln:]
        if typ == b"E":
            raise RuntimeError(f"error during startup: {msg!r}")
        if typ == b"Z":
            return


def _closed_by_server(sock, timeout=20):
    """Read until EOF; True if the server closed the connection (ErrorResponse before it is fine)."""
    sock.settimeout(timeout)
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False


def _raw(server):
    s = socket.create_connection(("127.0.0.1", server.port), timeout=20)
    return s


@pytest.mark.parametrize("payload", [
    pytest.param(b"Q" + struct.pack("!I", 0x7FFFFFF0) + b"SELECT 1", id="oversized-length"),
    pytest.param(b"Q" + struct.pack("!I", 2), id="length-below-minimum"),
    # a well-formed query first: the check follows message boundaries
    pytest.param(b"Q" + struct.pack("!I", 14) + b"SELECT 1;\0" + b"Q" + struct.pack("!I", 0),
                 id="valid-then-zero-length"),
    pytest.param(b"\x00" + struct.pack("!I", 8) + b"abcd", id="unknown-message-type"),
])
def test_malformed_message_closes_only_that_connection(server, connect, payload):
    other = connect()
    s = _raw(server)
    try:
        _startup(s)
        _read_until_ready(s)
        s.sendall(payload)
        assert _closed_by_server(s), "server kept a connection open after a malformed message"
    finally:
        s.close()
    assert other.execute("SELECT 1").fetchone() == (1,)
    assert connect().execute("SELECT 2").fetchone() == (2,)


def test_garbage_startup_packet(server, connect):
    s = _raw(server)
    try:
        s.sendall(struct.pack("!I", 0x7FFFFFFF) + b"\x00\x03\x00\x00garbage")
        assert _closed_by_server(s)
    finally:
        s.close()
    s = _raw(server)
    try:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _closed_by_server(s)
    finally:
        s.close()
    assert connect().execute("SELECT 1").fetchone() == (1,)


def test_client_disconnect_mid_query_leaves_server_serving(server, connect, tname):
    c = connect()
    c.execute(f"CREATE TABLE {tname} (a INT)")
    s = _raw(server)
    _startup(s)
    _read_until_ready(s)
    q = b"SELECT count(*) FROM generate_series(1, 100000000)\0"
    s.sendall(b"Q" + struct.pack("!I", len(q) + 4) + q)
    s.close()  # go away without reading the answer or sending Terminate
    c.execute(f"INSERT INTO {tname} VALUES (1)")
    assert c.execute(f"SELECT count(*) FROM {tname}").fetchone() == (1,)


# --- psql --------------------------------------------------------------------

def _psql(server, *args, check=True):
    env = dict(os.environ, PGCONNECT_TIMEOUT="10")
    r = subprocess.run(["psql", "-X", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", str(server.port),
                        "-U", "quiver", "-d", "quiver", *args], capture_output=True, text=True, env=env, timeout=60)
    if check:
        assert r.returncode == 0, f"psql {args} failed ({r.returncode}): {r.stderr}"
    return r


def test_psql_query_and_describe(server, conn, tname):
    conn.execute(f"CREATE TABLE {tname} (id INTEGER PRIMARY KEY, name TEXT NOT NULL, price NUMERIC(10,2), "
                 "code CHAR(3), label VARCHAR(7), doc JSON, span INTERVAL)")
    conn.execute(f"INSERT INTO {tname} VALUES (1, 'widget', 9.99)")
    r = _psql(server, "-At", "-c", f"SELECT id, name, price FROM {tname}")
    assert r.stdout.strip() == "1|widget|9.99"
    r = _psql(server, "-c", r"\dt")
    assert tname in r.stdout
    r = _psql(server, "-c", rf"\d {tname}")
    out = r.stdout
    assert "id" in out and "integer" in out
    assert "name" in out and "text" in out and "not null" in out
    assert "price" in out and "numeric(10,2)" in out
    for col, ty in [("code", "character(3)"), ("label", "character varying(7)"), ("doc", "json"),
                    ("span", "interval")]:
        line = next(ln for ln in out.splitlines() if ln.strip().startswith(col + " "))
        assert ty in line, line
    r = _psql(server, "-c", r"\d no_such_relation_xyz", check=False)
    assert "Did not find any relation" in r.stderr


def test_psql_script_with_error_stops(server, tname):
    r = _psql(server, "-c", f"CREATE TABLE {tname} (a INT)", "-c", f"INSERT INTO {tname} VALUES (1)",
              "-c", "SELEC 1", "-c", f"INSERT INTO {tname} VALUES (2)", check=False)
    assert r.returncode == 3 or r.returncode == 1
    assert "syntax error" in r.stderr.lower()
    r = _psql(server, "-At", "-c", f"SELECT count(*) FROM {tname}")
    assert r.stdout.strip() == "1"
