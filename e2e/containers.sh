#!/usr/bin/env bash
# Container end-to-end test: the pods the operator renders, run as Docker
# containers on a private network (stands in for kind where no cluster can
# run; see e2e/README.md).
#
#   1. `quiver-operator render` (from the image) for manifests/minimal.yaml
#   2. e2e/pods.py turns the rendered StatefulSets, ConfigMap and Secret into
#      one `docker run` per pod: same command, args, env, ports, config files,
#      securityContext (uid 65532, read-only root, no capabilities), a tmpfs
#      for each emptyDir and a docker volume for each volumeClaimTemplate;
#      hostnames and network aliases mirror the headless Services' pod DNS
#   3. waits (deadline, polling) for the readiness probe of every container
#   4. every startup/readiness/liveness probe path and port answers 200, the
#      gRPC port speaks gRPC
#   5. psql as the superuser (password from the rendered Secret): a wrong
#      password is refused; pg_dist_node lists exactly the workers the sample
#      asks for, at their pod DNS names, all healthy; a table round-trips
#   6. SIGKILL one worker: its health turns suspect/failed while the
#      coordinator keeps answering; restart it: same node id, healthy again
#   7. scale out: a third worker container, rendered from the manifest with
#      one more replica, joins and gets the reference table; a rebalance
#      moves shards onto it; then a drain empties it, it is removed from the
#      metadata and stopped; the shared SQL checks pass after each step
#   8. `docker stop` (SIGTERM) of every container exits 0
#
# Usage: e2e/containers.sh   (needs docker, psql, curl and python3 with PyYAML)
# Env:   QUIVER_IMAGE (default quiver:dev; build it with
#        PROFILE=debug scripts/build-image.sh quiver:dev),
#        E2E_MANIFEST (default manifests/minimal.yaml), E2E_EXTRA_OBJECTS (a
#        YAML file of objects the manifest references, e.g. its Secret),
#        E2E_TIMEOUT seconds per wait (default 120), KEEP=1 keeps the
#        containers, network and volumes after the run,
#        PYTHON (default ~/.cache/quiver-venv/bin/python, else python3).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
IMAGE="${QUIVER_IMAGE:-quiver:dev}"
MANIFEST="${E2E_MANIFEST:-${ROOT}/manifests/minimal.yaml}"
TIMEOUT="${E2E_TIMEOUT:-120}"
NAMESPACE="e2e"
RUN_ID="qe2e-$(date +%s)-$$"
NETWORK="${RUN_ID}"
LABEL="quiver-e2e=${RUN_ID}"
STARTED_AT=${SECONDS}

log() { printf '==> [%3ds] %s\n' "$((SECONDS - STARTED_AT))" "$*"; }
ok() { printf '    ok: %s\n' "$*"; }
fail() { printf 'FAIL: e2e/containers.sh: %s\n' "$*" >&2; exit 1; }

PYTHON="${PYTHON:-${HOME}/.cache/quiver-venv/bin/python}"
[[ -x "${PYTHON}" ]] || PYTHON="python3"
for tool in docker psql curl; do
  command -v "${tool}" > /dev/null 2>&1 || fail "'${tool}' is not installed"
done
"${PYTHON}" -c 'import yaml' 2> /dev/null || fail "${PYTHON} cannot import yaml (pip install pyyaml)"
docker info > /dev/null 2>&1 || fail "no Docker engine answers 'docker info'"
docker image inspect "${IMAGE}" > /dev/null 2>&1 \
  || fail "image ${IMAGE} not found; build it: PROFILE=debug scripts/build-image.sh ${IMAGE}"

WORK="$(mktemp -d)"
cleanup() {
  local status=$?
  set +e
  if [[ ${status} -ne 0 ]]; then
    log "diagnostics after failure"
    docker ps -a --filter "label=${LABEL}" --format '{{.Names}}\t{{.Status}}'
    local name
    for name in $(docker ps -aq --filter "label=${LABEL}"); do
      printf -- '--- logs of %s (last 60 lines)\n' "$(docker inspect -f '{{.Name}}' "${name}")"
      docker logs --tail 60 "${name}" 2>&1
    done
  fi
  if [[ "${KEEP:-0}" == "1" ]]; then
    log "KEEP=1: leaving containers, volumes and network ${NETWORK}; files in ${WORK}"
  else
    docker ps -aq --filter "label=${LABEL}" | xargs -r docker rm -f > /dev/null
    docker volume ls -q --filter "label=${LABEL}" | xargs -r docker volume rm > /dev/null
    docker network rm "${NETWORK}" > /dev/null 2>&1
    rm -rf "${WORK}"
  fi
  exit "${status}"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- 1-2. render and plan ------------------------------------------------------
# plan_pods MANIFEST DIR: renders MANIFEST with quiver-operator and writes the
# pods' `docker run` plan into DIR (plan.sh, args/, probes.tsv, ports.tsv).
plan_pods() {
  docker run --rm -i --network none --read-only --cap-drop ALL --entrypoint quiver-operator \
    "${IMAGE}" render -f /dev/stdin --namespace "${NAMESPACE}" < "$1" > "$2/rendered.yaml" \
    || fail "quiver-operator render of $1 failed"
  if [[ -n "${E2E_EXTRA_OBJECTS:-}" ]]; then
    # Objects a user creates beside the manifest, e.g. a superuserSecretRef Secret.
    { printf -- '---\n'; cat "${E2E_EXTRA_OBJECTS}"; } >> "$2/rendered.yaml"
  fi
  "${PYTHON}" "${ROOT}/e2e/pods.py" "$2/rendered.yaml" "$2" \
    --run-id "${RUN_ID}" --network "${NETWORK}" --image "${IMAGE}"
}
log "rendering ${MANIFEST#"${ROOT}"/} with quiver-operator from ${IMAGE}"
plan_pods "${MANIFEST}" "${WORK}"
# shellcheck source=/dev/null
source "${WORK}/plan.sh"
ok "${#COORDINATOR_PODS[@]} coordinator(s), ${WORKER_REPLICAS} worker(s): ${ALL_PODS[*]}"
[[ ${#COORDINATOR_PODS[@]} -ge 1 && ${WORKER_REPLICAS} -ge 1 ]] || fail "the sample renders no coordinator or no worker"

# --- helpers -------------------------------------------------------------------
container() { printf '%s-%s' "${RUN_ID}" "$1"; }

# host_port POD PORT: the 127.0.0.1 port Docker published for PORT of POD.
host_port() {
  local mapped
  mapped="$(docker port "$(container "$1")" "$2/tcp" 2> /dev/null | head -1)"
  [[ -n "${mapped}" ]] || fail "$1: container port $2 is not published (is the container running?)"
  printf '%s' "${mapped##*:}"
}

running() { [[ "$(docker inspect -f '{{.State.Running}}' "$(container "$1")" 2> /dev/null)" == "true" ]]; }

probe() { # probe POD KIND: "SCHEME PORT PATH" of the pod's probe of that kind
  awk -F'\t' -v pod="$1" -v kind="$2" '$1 == pod && $2 == kind { print $3, $4, $5 }' "${WORK}/probes.tsv"
}

# wait_ready POD: polls the pod's readiness probe until it answers 200.
wait_ready() {
  local pod="$1" scheme port path deadline=$((SECONDS + TIMEOUT)) code=""
  read -r scheme port path <<< "$(probe "${pod}" readinessProbe)"
  [[ -n "${path}" ]] || fail "${pod} has no readiness probe"
  while ((SECONDS < deadline)); do
    running "${pod}" || fail "${pod} exited: $(docker inspect -f '{{.State.Status}} code {{.State.ExitCode}}' "$(container "${pod}")")"
    code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "${scheme}://127.0.0.1:$(host_port "${pod}" "${port}")${path}" || true)"
    [[ "${code}" == "200" ]] && return 0
    sleep 0.25
  done
  fail "${pod} not ready after ${TIMEOUT}s (last ${path} answer: ${code:-none})"
}

COORDINATOR="${COORDINATOR_PODS[0]}"
sql() { # sql QUERY: one unaligned, tuples-only result from the coordinator
  PGPASSWORD="${PASSWORD}" PGCONNECT_TIMEOUT=5 psql -X -q -v ON_ERROR_STOP=1 -t -A \
    -h 127.0.0.1 -p "$(host_port "${COORDINATOR}" 5432)" -U "${SUPERUSER}" -d quiver -c "$1"
}

# wait_sql QUERY EXPECTED WHAT: polls until QUERY returns a value matching
# the extended regular expression EXPECTED (whole answer).
wait_sql() {
  local deadline=$((SECONDS + TIMEOUT)) got=""
  while ((SECONDS < deadline)); do
    got="$(sql "$1" 2>&1)" || fail "the coordinator did not answer ($3): ${got}"
    [[ "${got}" =~ ^($2)$ ]] && return 0
    sleep 0.25
  done
  fail "$3: expected '$2' within ${TIMEOUT}s, last answer '${got}'"
}

# --- 3. start the pods ----------------------------------------------------------
log "network ${NETWORK}, volumes, ${#ALL_PODS[@]} containers"
docker network create --label "${LABEL}" "${NETWORK}" > /dev/null
for volume in "${VOLUMES[@]}"; do
  docker volume create --label "${LABEL}" "${volume}" > /dev/null
done
for pod in "${ALL_PODS[@]}"; do
  mapfile -d '' -t run_args < "${WORK}/args/${pod}"
  docker run "${run_args[@]}" > /dev/null || fail "docker run of ${pod} failed"
done
for pod in "${ALL_PODS[@]}"; do
  wait_ready "${pod}"
  ok "${pod} ready"
done
for pod in "${ALL_PODS[@]}"; do
  read -r user read_only caps <<< "$(docker inspect -f '{{.Config.User}} {{.HostConfig.ReadonlyRootfs}} {{.HostConfig.CapDrop}}' "$(container "${pod}")")"
  [[ "${user}" == 65532* && "${read_only}" == "true" && "${caps}" == "[ALL]" ]] \
    || fail "${pod} runs as '${user}', read-only ${read_only}, dropped ${caps}"
  uids="$(docker top "$(container "${pod}")" -o pid,uid | awk 'NR > 1 { print $2 }' | sort -u)"
  [[ "${uids}" == "65532" ]] || fail "${pod}: processes run as uid(s) ${uids//$'\n'/ }, not 65532"
done
ok "every container runs as uid 65532 with a read-only root and no capabilities"

# --- 4. probes and ports ----------------------------------------------------------
log "probe paths and ports of the StatefulSets"
while IFS=$'\t' read -r pod kind scheme port path; do
  code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "${scheme}://127.0.0.1:$(host_port "${pod}" "${port}")${path}" || true)"
  [[ "${code}" == "200" ]] || fail "${pod} ${kind} ${path} on port ${port} answered ${code:-nothing}"
  ok "${pod} ${kind} ${scheme}://:${port}${path} -> 200"
done < "${WORK}/probes.tsv"
while IFS=$'\t' read -r pod name port; do
  [[ "${name}" == "grpc" ]] || continue
  # An unknown method on a gRPC server answers grpc-status 12 (UNIMPLEMENTED).
  headers="$(curl -s --http2-prior-knowledge --max-time 5 -o /dev/null -D - -X POST \
    -H 'content-type: application/grpc' --data-binary '' \
    "http://127.0.0.1:$(host_port "${pod}" "${port}")/quiver.e2e.v1.Nothing/Probe" || true)"
  grep -qi '^grpc-status: *12' <<< "${headers}" || fail "${pod} port ${port} (grpc) does not speak gRPC: ${headers:-no answer}"
  ok "${pod} port ${port} (grpc) answers gRPC"
done < "${WORK}/ports.tsv"

# --- 5. SQL as the superuser --------------------------------------------------------
log "psql as ${SUPERUSER} on ${COORDINATOR}"
if PGPASSWORD="wrong-${PASSWORD}" PGCONNECT_TIMEOUT=5 psql -X -h 127.0.0.1 -p "$(host_port "${COORDINATOR}" 5432)" \
  -U "${SUPERUSER}" -d quiver -c 'SELECT 1' > /dev/null 2>&1; then
  fail "the coordinator accepted a wrong password"
fi
ok "a wrong password is refused"
workers="$(sql "SELECT count(*) FROM pg_dist_node WHERE noderole = 'worker'")" \
  || fail "cannot query pg_dist_node: ${workers}"
[[ "${workers}" == "${WORKER_REPLICAS}" ]] || fail "pg_dist_node has ${workers} workers, the sample asks for ${WORKER_REPLICAS}"
ok "pg_dist_node lists ${workers} workers"
endpoints="$(sql "SELECT nodename || '|' || nodeport FROM pg_dist_node WHERE noderole = 'worker' ORDER BY 1")"
expected="$(printf '%s\n' "${WORKER_ENDPOINTS[@]}")"
[[ "${endpoints}" == "${expected}" ]] || fail "workers registered as
${endpoints}
expected their pod DNS names
${expected}"
ok "workers registered at their pod DNS names: ${WORKER_ENDPOINTS[*]}"
wait_sql "SELECT count(*) FROM pg_dist_node WHERE noderole = 'worker' AND health = 'healthy'" \
  "${WORKER_REPLICAS}" "every worker healthy"
ok "every worker healthy"
sql "CREATE TABLE e2e_rows (id bigint PRIMARY KEY, note text NOT NULL)" > /dev/null
sql "INSERT INTO e2e_rows VALUES (1, 'one'), (2, 'two'), (3, 'three')" > /dev/null
[[ "$(sql "SELECT sum(id) || ':' || count(*) FROM e2e_rows")" == "6:3" ]] || fail "e2e_rows does not read back"
ok "a table written on the read-only-root coordinator reads back"
# shellcheck source=e2e/sql/checks.sh
source "${ROOT}/e2e/sql/checks.sh"
e2e_sql_load
e2e_sql_verify
ok "a distributed table loaded with COPY reads back, joined with a reference table"

# --- 6. SIGKILL a worker -------------------------------------------------------------
victim="${WORKER_PODS[${#WORKER_PODS[@]} - 1]}"
victim_host=""
for endpoint in "${WORKER_ENDPOINTS[@]}"; do
  [[ "${endpoint}" == "${victim}."* ]] && victim_host="${endpoint%%|*}"
done
node_id="$(sql "SELECT nodeid FROM pg_dist_node WHERE nodename = '${victim_host}'")"
[[ -n "${node_id}" ]] || fail "no pg_dist_node row for ${victim_host}"
log "docker kill -s KILL ${victim} (node ${node_id})"
docker kill -s KILL "$(container "${victim}")" > /dev/null
exit_code="$(timeout "${TIMEOUT}" docker wait "$(container "${victim}")")" || fail "${victim} did not stop after SIGKILL"
[[ "${exit_code}" == "137" ]] || fail "${victim} exited ${exit_code} after SIGKILL (expected 137)"
wait_sql "SELECT health FROM pg_dist_node WHERE nodeid = ${node_id}" "suspect|failed" \
  "${victim} turns suspect or failed"
ok "${victim} is $(sql "SELECT health FROM pg_dist_node WHERE nodeid = ${node_id}") in pg_dist_node"
[[ "$(sql "SELECT count(*) FROM e2e_rows")" == "3" ]] || fail "the coordinator lost e2e_rows while a worker was down"
e2e_sql_worker_down "${victim_host}"
ok "a query over ${victim}'s shards fails naming it, or reads their other copies; the session goes on"
survivors=$((WORKER_REPLICAS - 1))
wait_sql "SELECT count(*) FROM pg_dist_node WHERE noderole = 'worker' AND health = 'healthy'" \
  "${survivors}" "the other workers stay healthy"
ok "the coordinator keeps answering; the other ${survivors} worker(s) stay healthy"

log "restarting ${victim}"
docker start "$(container "${victim}")" > /dev/null
wait_ready "${victim}"
wait_sql "SELECT health FROM pg_dist_node WHERE nodeid = ${node_id}" "healthy" "${victim} healthy again"
[[ "$(sql "SELECT count(*) FROM pg_dist_node WHERE noderole = 'worker'")" == "${WORKER_REPLICAS}" ]] \
  || fail "the restarted worker registered as a new node"
ok "${victim} is healthy again as node ${node_id}, still ${WORKER_REPLICAS} workers"
e2e_sql_verify
ok "no row was lost: every answer is the same after the restart"

# --- 7. scale out and in -------------------------------------------------------------
# As the operator does on a scale-out: one more worker pod (rendered from the
# manifest with one more replica), a rebalance onto it; then, as on a
# scale-in, a drain of that worker, its removal from the metadata, and the
# pod stopped. The rebalance and the drain go through the same metadata API
# calls as the operator's Rebalance and DrainNode, here from SQL.
log "scale-out: rendering one more worker replica"
mkdir -p "${WORK}/scaled"
"${PYTHON}" - "${MANIFEST}" "${WORK}/scaled.yaml" << 'PY'
import sys
import yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
for d in docs:
    if d.get("kind") == "DistributedDatabase":
        spec = d["spec"]
        group = spec["workerGroups"][0]
        # only the first group grows (workerReplicas is every group's default)
        group["replicas"] = group.get("replicas", spec.get("workerReplicas", 1)) + 1
yaml.safe_dump_all(docs, open(sys.argv[2], "w"))
PY
plan_pods "${WORK}/scaled.yaml" "${WORK}/scaled"
scaled() { # scaled ARRAY: one element per line of the scaled plan's ARRAY
  bash -c "source '${WORK}/scaled/plan.sh'; printf '%s\n' \"\${$1[@]}\""
}
new_pod="$(comm -13 <(printf '%s\n' "${WORKER_PODS[@]}" | sort) <(scaled WORKER_PODS | sort))"
[[ -n "${new_pod}" && "${new_pod}" != *$'\n'* ]] || fail "the scaled plan adds not exactly one worker: '${new_pod}'"
while read -r volume; do
  [[ -n "${volume}" ]] && docker volume create --label "${LABEL}" "${volume}" > /dev/null
done < <(comm -13 <(printf '%s\n' "${VOLUMES[@]}" | sort) <(scaled VOLUMES | sort))
new_endpoint="$(scaled WORKER_ENDPOINTS | grep "^${new_pod}\.")"
new_host="${new_endpoint%%|*}"
new_port="${new_endpoint##*|}"
grep -P "^${new_pod}\t" "${WORK}/scaled/probes.tsv" >> "${WORK}/probes.tsv"
mapfile -d '' -t run_args < "${WORK}/scaled/args/${new_pod}"
docker run "${run_args[@]}" > /dev/null || fail "docker run of ${new_pod} failed"
wait_ready "${new_pod}"
wait_sql "SELECT count(*) FROM pg_dist_node WHERE noderole = 'worker' AND health = 'healthy'" \
  "$((WORKER_REPLICAS + 1))" "${new_pod} registers and is healthy"
wait_sql "SELECT count(*) FROM pg_dist_placement p JOIN pg_dist_shard s ON s.shardid = p.shardid
          WHERE s.logicalrelid = 'e2e_tenants'" "$((WORKER_REPLICAS + 1))" \
  "the reference table is copied to ${new_pod}"
ok "${new_pod} joined as ${new_host}:${new_port} and holds a copy of the reference table"
new_shards="SELECT count(*) FROM pg_dist_placement p JOIN pg_dist_node n ON n.nodeid = p.nodeid
            JOIN pg_dist_shard s ON s.shardid = p.shardid
            WHERE s.logicalrelid = 'e2e_events' AND n.nodename = '${new_host}'"
log "rebalance: $(sql "SELECT rebalance_table_shards()")"
wait_sql "SELECT count(*) FROM get_rebalance_progress() WHERE progress < 2" "0" "the rebalance ends"
[[ "$(sql "SELECT count(*) FROM get_rebalance_progress() WHERE state <> 'done'")" == "0" ]] \
  || fail "a move of the rebalance did not finish: $(sql "SELECT * FROM get_rebalance_progress()")"
moved="$(sql "${new_shards}")"
((moved > 0)) || fail "the rebalance moved no shard onto ${new_pod}"
ok "the rebalance moved ${moved} shard(s) of e2e_events onto ${new_pod}"
e2e_sql_verify
ok "every answer is the same after the rebalance"

log "scale-in: drain and remove ${new_pod}"
sql "SELECT quiver_drain_node('${new_host}', ${new_port})" > /dev/null
wait_sql "SELECT count(*) FROM get_rebalance_progress() WHERE progress < 2" "0" "the drain ends"
wait_sql "${new_shards}" "0" "${new_pod} holds no shard"
sql "SELECT quiver_remove_node('${new_host}', ${new_port})" > /dev/null
[[ "$(sql "SELECT count(*) FROM pg_dist_node WHERE noderole = 'worker'")" == "${WORKER_REPLICAS}" ]] \
  || fail "${new_pod} is still in pg_dist_node after its removal"
docker stop "$(container "${new_pod}")" > /dev/null
e2e_sql_verify
ok "${new_pod} drained, removed and stopped; every answer is the same"

# --- 8. SIGTERM ----------------------------------------------------------------------
log "docker stop (SIGTERM) every container"
for pod in "${WORKER_PODS[@]}" "${COORDINATOR_PODS[@]}"; do
  docker stop "$(container "${pod}")" > /dev/null
  code="$(docker inspect -f '{{.State.ExitCode}}' "$(container "${pod}")")"
  [[ "${code}" == "0" ]] || fail "${pod} exited ${code} on SIGTERM (expected 0)"
done
ok "every node exits 0 on SIGTERM"

log "container end-to-end test passed in $((SECONDS - STARTED_AT))s"
