# shellcheck shell=bash
# SQL checks shared by e2e/containers.sh (containers here) and e2e/kind.sh
# (a kind cluster in users' CI), so both prove the same things.
#
# Source this file after defining:
#   sql QUERY   one unaligned, tuples-only answer from the coordinator (its
#               stdin feeds COPY ... FROM STDIN); fails on an SQL error
#   fail MSG    stop the run
#   log MSG     progress line
#
# e2e_sql_load          creates a distributed table (COPY, 3000 rows) and a
#                       reference table
# e2e_sql_verify        checks every answer (call it again after a restart:
#                       nothing may be lost)
# e2e_sql_worker_down   with a worker down: a query over every shard fails
#                       fast with an error naming the worker (or, when every
#                       shard has another copy, answers in full), and the
#                       session goes on

E2E_ROWS=3000

# e2e_expect QUERY EXPECTED: the whole answer must equal EXPECTED.
e2e_expect() {
  local got
  got="$(sql "$1" 2>&1)" || fail "$1 failed: ${got}"
  [[ "${got}" == "$2" ]] || fail "$1: expected '$2', got '${got}'"
  log "ok: $1 = ${got}"
}

e2e_sql_load() {
  log "a distributed and a reference table, loaded with COPY"
  sql "DROP TABLE IF EXISTS e2e_events" > /dev/null
  sql "DROP TABLE IF EXISTS e2e_tenants" > /dev/null
  sql "CREATE TABLE e2e_events (tenant_id int NOT NULL, id bigint NOT NULL, amount bigint,
       PRIMARY KEY (tenant_id, id))" > /dev/null
  sql "SELECT create_distributed_table('e2e_events', 'tenant_id')" > /dev/null
  sql "CREATE TABLE e2e_tenants (tenant_id int PRIMARY KEY, name text NOT NULL)" > /dev/null
  sql "SELECT create_reference_table('e2e_tenants')" > /dev/null
  seq 0 9 | awk '{ print $1 ",tenant " $1 }' \
    | sql "COPY e2e_tenants FROM STDIN WITH (FORMAT csv)" > /dev/null
  seq 1 "${E2E_ROWS}" | awk '{ print $1 % 10 "," $1 "," $1 }' \
    | sql "COPY e2e_events FROM STDIN WITH (FORMAT csv)" > /dev/null
  local shards
  shards="$(sql "SELECT count(*) FROM pg_dist_shard WHERE logicalrelid = 'e2e_events'")"
  ((shards > 1)) || fail "e2e_events has ${shards} shard(s)"
  log "ok: e2e_events has ${shards} shards"
}

e2e_sql_verify() {
  # ids 1..3000: sum 4501500; tenant 3 holds 3, 13, ..., 2993: 300 rows, sum 449400
  e2e_expect "SELECT count(*) || ':' || sum(amount) FROM e2e_events" "${E2E_ROWS}:4501500"
  e2e_expect "SELECT count(*) || ':' || sum(amount) FROM e2e_events WHERE tenant_id = 3" "300:449400"
  e2e_expect "SELECT t.name || ':' || count(*) FROM e2e_events e JOIN e2e_tenants t
              ON e.tenant_id = t.tenant_id WHERE t.name = 'tenant 7' GROUP BY t.name" "tenant 7:300"
  e2e_expect "SELECT amount FROM e2e_events WHERE tenant_id = 4 AND id = 1234" "1234"
}

# e2e_sql_worker_down HOST: HOST's worker is down. Where it held the only
# copy of a shard, a query over every shard fails fast with an error naming
# it; where every shard has another copy, the query still answers in full.
e2e_sql_worker_down() {
  local out only started=${SECONDS}
  only="$(sql "SELECT count(*) FROM pg_dist_placement p JOIN pg_dist_node n ON n.nodeid = p.nodeid
               JOIN (SELECT p1.shardid FROM pg_dist_placement p1 JOIN pg_dist_shard s ON s.shardid = p1.shardid
                     WHERE s.logicalrelid = 'e2e_events' GROUP BY p1.shardid HAVING count(*) = 1) single
               ON single.shardid = p.shardid
               WHERE n.nodename = '$1'")" || fail "cannot read the placements: ${only}"
  if ((only == 0)); then
    e2e_expect "SELECT count(*) || ':' || sum(amount) FROM e2e_events" "${E2E_ROWS}:4501500"
    log "ok: with $1 down, every shard is read from another copy"
  else
    if out="$(sql "SELECT count(*) FROM e2e_events" 2>&1)"; then
      fail "a query over every shard answered '${out}' with worker $1 (sole copy of ${only} shard(s)) down"
    fi
    [[ "${out}" == *"worker $1"* && "${out}" =~ (unreachable|failed) ]] \
      || fail "the error does not name worker $1 as unreachable: ${out}"
    ((SECONDS - started < 30)) || fail "the error took $((SECONDS - started))s"
    log "ok: with $1 down (sole copy of ${only} shard(s)), a query over every shard fails in $((SECONDS - started))s: ${out}"
  fi
  e2e_expect "SELECT count(*) FROM e2e_tenants" "10"
}
