"""What GUI clients, ORMs and psql read to learn about a database: version(), the current user,
pg_catalog's keys, indexes and defaults, and information_schema. The same assertions hold on
PostgreSQL 15 (`pytest --target=pg tests/python/test_catalog.py`)."""

from __future__ import annotations

import re

from test_protocol import _psql


def _table(conn, tname):
    conn.execute(f"CREATE TABLE {tname} (id int PRIMARY KEY, name varchar(20) NOT NULL DEFAULT 'x', "
                 "price numeric(10,2), code char(3), UNIQUE (name, code))")


def test_version_and_user_read_as_postgres(conn):
    version = conn.execute("SELECT version()").fetchone()[0]
    # the pattern SQLAlchemy's PostgreSQL dialect parses
    assert re.match(r".*PostgreSQL (\d+)\.?(\d+)?", version), version
    assert conn.execute("SELECT current_user, session_user").fetchone() == ("quiver", "quiver")
    assert conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = 'quiver'").fetchone() == (True,)
    assert conn.execute("SELECT pg_typeof(1)::text, pg_typeof(1.5)::text, pg_typeof('a'::text)::text").fetchone() \
        == ("integer", "numeric", "text")
    assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (False,)
    assert conn.execute("SELECT pg_size_pretty(1000000::bigint)").fetchone() == ("977 kB",)


def test_keys_indexes_and_defaults_in_pg_catalog(conn, tname):
    _table(conn, tname)
    rows = conn.execute(
        "SELECT ic.relname, i.indisprimary, i.indisunique, i.indkey::text, pg_get_indexdef(i.indexrelid) "
        "FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_class t ON t.oid = i.indrelid "
        f"WHERE t.relname = '{tname}' ORDER BY ic.relname").fetchall()
    assert rows == [
        (f"{tname}_name_code_key", False, True, "2 4",
         f"CREATE UNIQUE INDEX {tname}_name_code_key ON public.{tname} USING btree (name, code)"),
        (f"{tname}_pkey", True, True, "1", f"CREATE UNIQUE INDEX {tname}_pkey ON public.{tname} USING btree (id)"),
    ], rows
    rows = conn.execute(
        "SELECT c.conname, c.contype::text, pg_get_constraintdef(c.oid), ic.relname "
        "FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid JOIN pg_class ic ON ic.oid = c.conindid "
        f"WHERE t.relname = '{tname}' ORDER BY c.contype").fetchall()
    assert rows == [(f"{tname}_pkey", "p", "PRIMARY KEY (id)", f"{tname}_pkey"),
                    (f"{tname}_name_code_key", "u", "UNIQUE (name, code)", f"{tname}_name_code_key")], rows
    assert conn.execute(f"SELECT relhasindex FROM pg_class WHERE relname = '{tname}'").fetchone() == (True,)
    rows = conn.execute(
        "SELECT a.attname, a.atthasdef, pg_get_expr(d.adbin, d.adrelid) FROM pg_attribute a "
        "JOIN pg_class t ON t.oid = a.attrelid LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid "
        f"AND d.adnum = a.attnum WHERE t.relname = '{tname}' AND a.attnum > 0 ORDER BY a.attnum").fetchall()
    assert [(n, h) for n, h, _ in rows] == [("id", False), ("name", True), ("price", False), ("code", False)]
    assert rows[1][2].startswith("'x'"), rows  # PostgreSQL adds ::character varying
    # a dropped table leaves nothing behind
    conn.execute(f"DROP TABLE {tname}")
    assert conn.execute(f"SELECT count(*) FROM pg_class WHERE relname LIKE '{tname}%'").fetchone() == (0,)


def test_information_schema_columns_and_keys(conn, tname):
    _table(conn, tname)
    rows = conn.execute(
        "SELECT column_name, ordinal_position, data_type, udt_name, is_nullable, character_maximum_length, "
        "numeric_precision, numeric_scale FROM information_schema.columns "
        f"WHERE table_schema = 'public' AND table_name = '{tname}' ORDER BY ordinal_position").fetchall()
    assert rows == [
        ("id", 1, "integer", "int4", "NO", None, 32, 0),
        ("name", 2, "character varying", "varchar", "NO", 20, None, None),
        ("price", 3, "numeric", "numeric", "YES", None, 10, 2),
        ("code", 4, "character", "bpchar", "YES", 3, None, None),
    ], rows
    default = conn.execute("SELECT column_default FROM information_schema.columns "
                           f"WHERE table_name = '{tname}' AND column_name = 'name'").fetchone()[0]
    assert default.startswith("'x'"), default
    rows = conn.execute(
        "SELECT tc.constraint_type, kcu.column_name, kcu.ordinal_position "
        "FROM information_schema.table_constraints tc JOIN information_schema.key_column_usage kcu "
        "ON tc.constraint_name = kcu.constraint_name AND tc.table_name = kcu.table_name "
        f"WHERE tc.table_name = '{tname}' ORDER BY tc.constraint_type, kcu.ordinal_position").fetchall()
    assert rows == [("PRIMARY KEY", "id", 1), ("UNIQUE", "name", 1), ("UNIQUE", "code", 2)], rows
    assert conn.execute("SELECT table_type FROM information_schema.tables "
                        f"WHERE table_schema = 'public' AND table_name = '{tname}'").fetchone() == ("BASE TABLE",)


def test_psql_describe_shows_indexes_and_defaults(server, conn, tname):
    _table(conn, tname)
    out = _psql(server, "-c", rf"\d {tname}").stdout
    assert re.search(rf'"{tname}_pkey" PRIMARY KEY, btree \(id\)', out), out
    assert re.search(rf'"{tname}_name_code_key" UNIQUE CONSTRAINT, btree \(name, code\)', out), out
    out = _psql(server, "-c", r"\di").stdout
    assert f"{tname}_pkey" in out and "index" in out, out
