"""The row-lock and isolation tests of `test_row_locks.py`, on a distributed table of a cluster.

One coordinator and two workers of the quiver binary. The table is distributed so that rows 1
and 2 live on different workers: a transaction that holds one and waits for the other waits on
two workers, so the deadlock test is a deadlock between workers, which no worker sees alone
(the coordinator's detector must find it, ADR 0012).
"""

from __future__ import annotations

import re

import pytest
from test_row_locks import (  # noqa: F401  (the tests, collected here again)
    test_deadlock_is_detected_and_one_side_goes_on,
    test_isolation_levels_are_shown_and_set_as_in_postgres,
    test_no_lost_update_under_concurrent_increments,
    test_read_skew_is_prevented_under_repeatable_read,
    test_repeatable_read_update_of_a_changed_row_fails,
    test_select_for_update_locks_rows_and_reads_the_newest,
    test_waiting_delete_after_rollback_deletes,
    test_waiting_update_applies_to_the_newest_row,
    test_write_skew_is_allowed_under_repeatable_read,
)

pytestmark = pytest.mark.usefixtures("quiver_only")


@pytest.fixture
def server(two_workers):
    """The cluster's coordinator stands in for the shared server: conftest's `connect` then
    connects to it."""
    return two_workers.coordinator


def _node_of(conn, table: str, key: int) -> str:
    plan = "\n".join(r[-1] for r in conn.execute(f"EXPLAIN SELECT * FROM {table} WHERE id = {key}"))
    nodes = set(re.findall(r"@node(\d+)", plan))
    assert len(nodes) == 1, plan
    return nodes.pop()


@pytest.fixture
def make_table():
    """Creates the table, distributed with a shard count that puts rows 1 and 2 on different
    workers (placement is deterministic, so this is the same count on every run)."""

    def make(conn, tname, rows=((1, 100), (2, 100))):
        for shards in range(2, 17):
            conn.execute(f"DROP TABLE IF EXISTS {tname}")
            conn.execute(f"CREATE TABLE {tname} (id int PRIMARY KEY, v int NOT NULL)")
            conn.execute(f"SELECT create_distributed_table('{tname}', 'id', shard_count => {shards})")
            if _node_of(conn, tname, 1) != _node_of(conn, tname, 2):
                break
        else:
            pytest.fail("no shard count up to 16 puts rows 1 and 2 on different workers")
        for r in rows:
            conn.execute(f"INSERT INTO {tname} VALUES (%s, %s)", r)

    return make
