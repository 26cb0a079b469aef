"""Range-distributed (time-series) tables on a real cluster: one coordinator and three workers.

`create_distributed_table(t, col, partition_by => 'range', interval => ...)` makes a table whose
shards each hold one interval of the column; shards appear as rows arrive, scans read only the
shards a time filter can match, and `quiver_drop_old_shards` drops whole old ranges (retention).
"""

from __future__ import annotations

import datetime as dt
import threading

import psycopg
import pytest

from test_cluster import connect, explain

pytestmark = pytest.mark.usefixtures("quiver_only")

DAY0 = dt.datetime(2024, 1, 1)


def shard_bounds(c, table: str) -> list[tuple[str, str]]:
    return c.execute(
        "SELECT shardminvalue, shardmaxvalue FROM pg_dist_shard WHERE logicalrelid = %s "
        "ORDER BY shardminvalue", (table,)).fetchall()


def test_time_ranges_are_created_pruned_and_dropped(cluster):
    with connect(cluster) as c:
        c.execute("CREATE TABLE metrics (ts timestamp NOT NULL, device int NOT NULL, value float8)")
        # rows already there move into the first range shards
        c.execute("INSERT INTO metrics VALUES ('2024-01-01 10:00:00', 1, 1.5), ('2024-01-02 23:59:59', 2, 2.5)")
        c.execute("SELECT create_distributed_table('metrics', 'ts', partition_by => 'range', "
                  "interval => '1 day')")
        assert c.execute("SELECT partmethod, partkey FROM pg_dist_partition "
                         "WHERE logicalrelid = 'metrics'").fetchone() == ("r", "ts")
        assert shard_bounds(c, "metrics") == [
            ("2024-01-01 00:00:00", "2024-01-02 00:00:00"),
            ("2024-01-02 00:00:00", "2024-01-03 00:00:00"),
        ]
        assert c.execute("SELECT count(*) FROM metrics").fetchone()[0] == 2

        # COPY over five days: three new shards, spread over the workers
        expected: dict[int, float] = {}
        with c.cursor().copy("COPY metrics (ts, device, value) FROM STDIN") as cp:
            for i in range(5 * 24):
                ts = DAY0 + dt.timedelta(hours=i)
                device, value = i % 4, float(i)
                if ts >= dt.datetime(2024, 1, 3):
                    expected[device] = expected.get(device, 0.0) + value
                cp.write(f"{ts:%Y-%m-%d %H:%M:%S}\t{device}\t{value}\n")
        assert c.execute("SELECT count(*) FROM metrics").fetchone()[0] == 122
        assert len(shard_bounds(c, "metrics")) == 5
        nodes = c.execute(
            "SELECT count(DISTINCT p.nodeid) FROM pg_dist_placement p JOIN pg_dist_shard s "
            "ON p.shardid = s.shardid WHERE s.logicalrelid = 'metrics'").fetchone()[0]
        assert nodes == 3

        # a one-day filter reads one shard, an open range reads the shards it can match
        day = "ts >= '2024-01-03' AND ts < '2024-01-04'"
        assert "shards=1 " in explain(c, f"SELECT * FROM metrics WHERE {day}")
        assert c.execute(f"SELECT count(*) FROM metrics WHERE {day}").fetchone()[0] == 24
        plan = explain(c, "SELECT * FROM metrics WHERE ts >= '2024-01-04'")
        assert "shards=2 " in plan, plan
        assert "shards=1 " in explain(c, "SELECT * FROM metrics WHERE ts BETWEEN '2024-01-05 01:00:00' "
                                         "AND '2024-01-05 02:00:00'")
        # aggregates run in the shards, and answer the same as Python does
        rows = c.execute("SELECT device, sum(value) FROM metrics WHERE ts >= '2024-01-03' "
                         "GROUP BY device ORDER BY device").fetchall()
        assert rows == sorted(expected.items())
        per_day = c.execute("SELECT date_trunc('day', ts) AS d, count(*) FROM metrics "
                            "GROUP BY d ORDER BY d").fetchall()
        assert [n for _, n in per_day] == [25, 25, 24, 24, 24]
        # a filter that matches no shard still gives count's one row
        assert c.execute("SELECT count(*), sum(value) FROM metrics "
                         "WHERE ts < '2023-01-01'").fetchone() == (0, None)

        # UPDATE and DELETE reach the ranges they can touch
        assert c.execute("UPDATE metrics SET value = 0 WHERE ts >= '2024-01-05'").rowcount == 24
        assert c.execute("DELETE FROM metrics WHERE ts >= '2024-01-05 12:00:00'").rowcount == 12
        with pytest.raises(psycopg.errors.FeatureNotSupported):
            c.execute("UPDATE metrics SET ts = ts + interval '1 day'")

        # retention: whole days before Jan 3 go, partial ranges stay
        assert c.execute("SELECT quiver_drop_old_shards('metrics', older_than => '2024-01-03 06:00:00')"
                         ).fetchone() == ("2",)
        assert shard_bounds(c, "metrics")[0] == ("2024-01-03 00:00:00", "2024-01-04 00:00:00")
        assert c.execute("SELECT count(*), min(ts) FROM metrics").fetchone() == (60, DAY0 + dt.timedelta(days=2))
        assert c.execute("SELECT quiver_drop_old_shards('metrics', '2024-01-01')").fetchone() == ("0",)
        # a dropped range is created again when old rows arrive
        c.execute("INSERT INTO metrics VALUES ('2024-01-01 05:00:00', 9, 9)")
        assert c.execute("SELECT count(*) FROM metrics WHERE device = 9").fetchone()[0] == 1
        assert len(shard_bounds(c, "metrics")) == 4

        # a rolled-back transaction across ranges leaves no rows
        c.execute("BEGIN")
        c.execute("INSERT INTO metrics VALUES ('2024-02-01', 7, 1), ('2024-03-01', 7, 1)")
        assert c.execute("SELECT count(*) FROM metrics WHERE device = 7").fetchone()[0] == 2
        c.execute("ROLLBACK")
        assert c.execute("SELECT count(*) FROM metrics WHERE device = 7").fetchone()[0] == 0

        c.execute("DROP TABLE metrics")
        assert c.execute("SELECT count(*) FROM pg_dist_shard").fetchone()[0] == 0


def test_range_tables_by_date_and_integer(cluster):
    with connect(cluster) as c:
        c.execute("CREATE TABLE daily (d date PRIMARY KEY, n int)")
        c.execute("SELECT create_distributed_table('daily', 'd', partition_by => 'range', interval => '7 days')")
        c.execute("INSERT INTO daily SELECT DATE '2024-01-01' + v, v FROM generate_series(0, 27) AS t(v)")
        # 2024-01-01 is day 19723 since 1970-01-01, so weekly ranges are aligned to multiples of 7
        assert len(shard_bounds(c, "daily")) == 5
        with pytest.raises(psycopg.errors.UniqueViolation):
            c.execute("INSERT INTO daily VALUES ('2024-01-05', 0)")
        assert c.execute("SELECT n FROM daily WHERE d = '2024-01-05'").fetchone() == (4,)
        assert "shards=1 " in explain(c, "SELECT n FROM daily WHERE d = '2024-01-05'")

        c.execute("CREATE TABLE readings (seq bigint NOT NULL, v int)")
        c.execute("SELECT create_distributed_table('readings', 'seq', partition_by => 'range', interval => 1000)")
        c.execute("INSERT INTO readings SELECT v, v FROM generate_series(-500, 2499) AS t(v)")
        assert shard_bounds(c, "readings")[0] == ("-1000", "0")
        assert len(shard_bounds(c, "readings")) == 4
        assert c.execute("SELECT count(*), sum(v) FROM readings WHERE seq >= 1000").fetchone() == (1500, 2624250)
        assert "shards=2 " in explain(c, "SELECT * FROM readings WHERE seq IN (5, 1999)")


def test_concurrent_writers_share_a_new_range(cluster):
    with connect(cluster) as c:
        c.execute("CREATE TABLE ev (ts timestamptz NOT NULL, who int)")
        c.execute("SELECT create_distributed_table('ev', 'ts', partition_by => 'range', interval => '1 hour')")
    errors: list[BaseException] = []

    def writer(who: int) -> None:
        try:
            with connect(cluster) as w:
                for i in range(20):
                    w.execute("INSERT INTO ev VALUES (%s, %s)",
                              (dt.datetime(2025, 6, 1, 12, i, tzinfo=dt.timezone.utc), who))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    with connect(cluster) as c:
        assert c.execute("SELECT count(*), count(DISTINCT who) FROM ev").fetchone() == (80, 4)
        assert len(shard_bounds(c, "ev")) == 1


def test_range_distribution_errors(cluster):
    with connect(cluster) as c:
        c.execute("CREATE TABLE r (ts timestamp, name text)")
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="needs an interval"):
            c.execute("SELECT create_distributed_table('r', 'ts', partition_by => 'range')")
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="months"):
            c.execute("SELECT create_distributed_table('r', 'ts', partition_by => 'range', interval => '1 month')")
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="partition_by"):
            c.execute("SELECT create_distributed_table('r', 'ts', partition_by => 'list')")
        with pytest.raises(psycopg.errors.FeatureNotSupported, match="integer, date or timestamp"):
            c.execute("SELECT create_distributed_table('r', 'name', partition_by => 'range', interval => '1')")
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="shard_count"):
            c.execute("SELECT create_distributed_table('r', 'ts', partition_by => 'range', "
                      "interval => '1 day', shard_count => 4)")
        c.execute("SELECT create_distributed_table('r', 'ts', partition_by => 'range', interval => '1 day')")
        with pytest.raises(psycopg.errors.NotNullViolation, match="distribution column"):
            c.execute("INSERT INTO r VALUES (NULL, 'x')")
        with pytest.raises(psycopg.errors.InvalidDatetimeFormat):
            c.execute("SELECT quiver_drop_old_shards('r', older_than => 'yesterday-ish')")
        c.execute("CREATE TABLE h (k int)")
        c.execute("SELECT create_distributed_table('h', 'k')")
        with pytest.raises(psycopg.errors.FeatureNotSupported, match="not range-distributed"):
            c.execute("SELECT quiver_drop_old_shards('h', older_than => '1')")
        # the session goes on after every error
        c.execute("INSERT INTO r VALUES ('2024-01-01', 'ok')")
        assert c.execute("SELECT name FROM r").fetchall() == [("ok",)]
