#!/usr/bin/env bash
# End-to-end test on a real Kubernetes cluster (kind), for users' CI.
#
#   1. create a kind cluster (or reuse KIND_CLUSTER if it exists)
#   2. build the image if it is missing, `kind load docker-image` it
#   3. helm install charts/quiver-operator (2 replicas, leader election)
#   4. apply manifests/minimal.yaml, wait for condition Ready
#   5. SQL checks with psql through the client Service (port-forward)
#   6. kubectl scale qdb to 3 workers, wait, check again
#   7. delete a worker pod, wait for it to come back, check no row was lost
#   8. kubectl patch one more worker in: wait for the rebalance the operator
#      starts onto it to complete (Rebalancing false, movesDone ==
#      movesTotal), check again
#   9. patch it back out: the operator drains the worker and removes it from
#      the metadata before the StatefulSet shrinks; wait for that, check again
#
# Skips (exit 0, with a message saying why) when kind, docker, kubectl,
# helm or psql is missing or no Docker engine answers. Needs registry access
# for kind's node image.
#
# Env: QUIVER_IMAGE (default quiver:e2e), KIND_CLUSTER (default quiver-e2e),
#      KEEP_CLUSTER=1 to keep the cluster, E2E_TIMEOUT (default 600s),
#      E2E_SQL: a SQL file to run as extra checks after the shared ones
#      (e2e/sql/checks.sh, the same as the container run's).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
IMAGE="${QUIVER_IMAGE:-quiver:e2e}"
CLUSTER="${KIND_CLUSTER:-quiver-e2e}"
TIMEOUT="${E2E_TIMEOUT:-600s}"
OPERATOR_NS="quiver-system"
DB_NS="quiver-e2e"
DB="demo"
LOCAL_PORT="${E2E_LOCAL_PORT:-15432}"
EXTRA_SQL="${E2E_SQL:-}"

log() { printf '==> %s\n' "$*"; }
skip() { printf 'SKIP: e2e/kind.sh: %s\n' "$*"; exit 0; }
fail() { printf 'FAIL: e2e/kind.sh: %s\n' "$*" >&2; exit 1; }

for tool in kind docker kubectl helm psql; do
  command -v "${tool}" > /dev/null 2>&1 || skip "'${tool}' is not installed (this test needs kind, docker, kubectl, helm and psql)"
done
docker info > /dev/null 2>&1 || skip "no Docker engine answers 'docker info'"

created_cluster=0
port_forward_pid=""
cleanup() {
  local status=$?
  if [[ -n "${port_forward_pid}" ]]; then
    kill "${port_forward_pid}" 2> /dev/null || true
  fi
  if [[ ${status} -ne 0 ]]; then
    log "diagnostics after failure"
    kubectl get qdb,statefulsets,pods,services,pdb -n "${DB_NS}" -o wide || true
    kubectl describe qdb "${DB}" -n "${DB_NS}" || true
    kubectl logs -n "${OPERATOR_NS}" -l app.kubernetes.io/name=quiver-operator --tail=200 --prefix || true
    kubectl get events -n "${DB_NS}" --sort-by=.lastTimestamp || true
  fi
  if [[ ${created_cluster} -eq 1 && "${KEEP_CLUSTER:-0}" != "1" ]]; then
    log "deleting kind cluster ${CLUSTER}"
    kind delete cluster --name "${CLUSTER}" || true
  fi
  exit "${status}"
}
trap cleanup EXIT

# --- cluster and image -------------------------------------------------------
if kind get clusters 2> /dev/null | grep -qx "${CLUSTER}"; then
  log "reusing kind cluster ${CLUSTER}"
else
  log "creating kind cluster ${CLUSTER}"
  kind create cluster --name "${CLUSTER}" --wait 120s
  created_cluster=1
fi
kubectl config use-context "kind-${CLUSTER}" > /dev/null

if ! docker image inspect "${IMAGE}" > /dev/null 2>&1; then
  [[ -f "${ROOT}/Dockerfile" ]] || fail "image ${IMAGE} is missing and there is no Dockerfile to build it"
  log "building ${IMAGE}"
  docker build -t "${IMAGE}" "${ROOT}"
fi
log "loading ${IMAGE} into the cluster"
kind load docker-image "${IMAGE}" --name "${CLUSTER}"

# --- operator ----------------------------------------------------------------
log "installing the operator with helm"
helm upgrade --install quiver-operator "${ROOT}/charts/quiver-operator" \
  --namespace "${OPERATOR_NS}" --create-namespace \
  --set image.repository="${IMAGE%:*}" --set image.tag="${IMAGE##*:}" \
  --set image.pullPolicy=Never --set replicaCount=2 \
  --wait --timeout "${TIMEOUT}"
kubectl wait --for=condition=Established crd/distributeddatabases.quiver.dev --timeout=60s

# --- database ----------------------------------------------------------------
kubectl create namespace "${DB_NS}" --dry-run=client -o yaml | kubectl apply -f -
log "applying manifests/minimal.yaml with image ${IMAGE}"
sed -e "s|^\(  image:\).*|\1 ${IMAGE}|" -e "s|^\(  imagePullPolicy:\).*|\1 Never|" \
  "${ROOT}/manifests/minimal.yaml" | kubectl apply -n "${DB_NS}" -f -

# The HA sample asks for three zones' worth of nodes and resources a CI
# cluster does not have: the API server validates it (schema and CEL rules)
# without creating it.
log "server-side dry run of manifests/ha.yaml"
kubectl apply -n "${DB_NS}" --dry-run=server -f "${ROOT}/manifests/ha.yaml"

wait_ready() {
  log "waiting for DistributedDatabase ${DB} to be Ready"
  kubectl wait "qdb/${DB}" -n "${DB_NS}" --for=condition=Ready --timeout="${TIMEOUT}"
}
wait_ready
kubectl get qdb -n "${DB_NS}"

PGPASSWORD="$(kubectl get secret "${DB}-superuser" -n "${DB_NS}" -o jsonpath='{.data.password}' | base64 -d)"
export PGPASSWORD
PSQL=(psql "host=127.0.0.1 port=${LOCAL_PORT} user=quiver dbname=quiver connect_timeout=5" -v ON_ERROR_STOP=1 -X -q -t -A)

start_port_forward() {
  if [[ -n "${port_forward_pid}" ]]; then
    kill "${port_forward_pid}" 2> /dev/null || true
    wait "${port_forward_pid}" 2> /dev/null || true
  fi
  kubectl port-forward -n "${DB_NS}" "svc/${DB}" "${LOCAL_PORT}:5432" > /dev/null 2>&1 &
  port_forward_pid=$!
  # Poll until the forwarded port answers a query (bounded).
  local attempt
  for attempt in $(seq 1 60); do
    if "${PSQL[@]}" -c 'SELECT 1' > /dev/null 2>&1; then
      return 0
    fi
    kill -0 "${port_forward_pid}" 2> /dev/null || fail "kubectl port-forward exited"
    sleep 1
  done
  fail "the client Service did not answer SQL through port-forward (attempt ${attempt})"
}

sql() { "${PSQL[@]}" -c "$1"; }

# The same SQL checks as the container run (e2e/containers.sh).
# shellcheck source=e2e/sql/checks.sh
source "${ROOT}/e2e/sql/checks.sh"

run_checks() {
  e2e_sql_verify
  if [[ -n "${EXTRA_SQL}" && -f "${EXTRA_SQL}" ]]; then
    log "running ${EXTRA_SQL}"
    "${PSQL[@]}" -f "${EXTRA_SQL}"
  fi
}

start_port_forward
e2e_sql_load
run_checks

# --- scale -------------------------------------------------------------------
log "scaling workers to 3 per group"
kubectl scale "qdb/${DB}" -n "${DB_NS}" --replicas 3
kubectl wait "qdb/${DB}" -n "${DB_NS}" --for=jsonpath='{.status.workers.readyReplicas}'=3 --timeout="${TIMEOUT}"
kubectl wait "qdb/${DB}" -n "${DB_NS}" --for=jsonpath='{.status.workers.registered}'=3 --timeout="${TIMEOUT}"
wait_ready
run_checks

# --- lose a pod ----------------------------------------------------------------
log "deleting pod ${DB}-worker-a-0"
old_uid="$(kubectl get pod "${DB}-worker-a-0" -n "${DB_NS}" -o jsonpath='{.metadata.uid}')"
kubectl delete pod "${DB}-worker-a-0" -n "${DB_NS}" --wait=true
kubectl wait pod "${DB}-worker-a-0" -n "${DB_NS}" --for=create --timeout="${TIMEOUT}"
new_uid="$(kubectl get pod "${DB}-worker-a-0" -n "${DB_NS}" -o jsonpath='{.metadata.uid}')"
[[ "${new_uid}" != "${old_uid}" ]] || fail "pod ${DB}-worker-a-0 was not replaced"
kubectl wait pod "${DB}-worker-a-0" -n "${DB_NS}" --for=condition=Ready --timeout="${TIMEOUT}"
wait_ready
start_port_forward
run_checks

# --- rebalance onto a new worker, drain before removing it -------------------
case "${TIMEOUT}" in
  *m) TIMEOUT_SECONDS=$(( ${TIMEOUT%m} * 60 )) ;;
  *s) TIMEOUT_SECONDS="${TIMEOUT%s}" ;;
  *) TIMEOUT_SECONDS="${TIMEOUT}" ;;
esac

qdb_field() { kubectl get "qdb/${DB}" -n "${DB_NS}" -o jsonpath="$1"; }

# Polls "$@" until it succeeds, for at most E2E_TIMEOUT.
wait_until() {
  local what="$1"
  shift
  local deadline=$((SECONDS + TIMEOUT_SECONDS))
  until "$@"; do
    (( SECONDS < deadline )) || fail "timed out after ${TIMEOUT} waiting for ${what}"
    sleep 2
  done
}

# Succeeds once a rebalance other than $1 has completed and the status says
# so everywhere; fails the run if it failed or was cancelled.
rebalance_completed_after() {
  local before="$1" id state
  id="$(qdb_field '{.status.rebalance.id}')"
  state="$(qdb_field '{.status.rebalance.state}')"
  [[ -n "${id}" && "${id}" != "${before}" ]] || return 1
  case "${state}" in
    Completed) ;;
    Failed | Cancelled) fail "rebalance ${id} ended ${state}: $(qdb_field '{.status.rebalance.error}')" ;;
    *) return 1 ;;
  esac
  [[ "$(qdb_field '{.status.conditions[?(@.type=="Rebalancing")].status}')" == "False" ]] || return 1
  [[ "$(qdb_field '{.status.rebalance.movesDone}')" == "$(qdb_field '{.status.rebalance.movesTotal}')" ]]
}

workers="$(qdb_field '{.spec.workerReplicas}')"
more=$((workers + 1))
# A rebalance started by the scale above must end first.
kubectl wait "qdb/${DB}" -n "${DB_NS}" --for=condition=Rebalancing=false --timeout="${TIMEOUT}"
before="$(qdb_field '{.status.rebalance.id}')"

log "adding a worker (${workers} -> ${more}): the operator rebalances onto it"
kubectl patch "qdb/${DB}" -n "${DB_NS}" --type merge -p "{\"spec\":{\"workerReplicas\":${more}}}"
kubectl wait "qdb/${DB}" -n "${DB_NS}" --for=jsonpath='{.status.workers.registered}'="${more}" --timeout="${TIMEOUT}"
wait_until "a rebalance onto the new worker to complete" rebalance_completed_after "${before}"
kubectl get qdb -n "${DB_NS}"
wait_ready
run_checks

log "removing that worker (${more} -> ${workers}): drained, then removed, then its pod goes"
kubectl patch "qdb/${DB}" -n "${DB_NS}" --type merge -p "{\"spec\":{\"workerReplicas\":${workers}}}"
kubectl wait "statefulset/${DB}-worker-a" -n "${DB_NS}" --for=jsonpath='{.spec.replicas}'="${workers}" --timeout="${TIMEOUT}"
kubectl wait "statefulset/${DB}-worker-a" -n "${DB_NS}" --for=jsonpath='{.status.replicas}'="${workers}" --timeout="${TIMEOUT}"
kubectl wait "pod/${DB}-worker-a-${workers}" -n "${DB_NS}" --for=delete --timeout="${TIMEOUT}"
kubectl wait "qdb/${DB}" -n "${DB_NS}" --for=jsonpath='{.status.workers.registered}'="${workers}" --timeout="${TIMEOUT}"
wait_ready
kubectl get qdb -n "${DB_NS}"
start_port_forward
run_checks

log "kind end-to-end passed"
