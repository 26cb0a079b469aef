#!/usr/bin/env python3
"""Turns the objects `quiver-operator render` prints into `docker run` plans.

Used by e2e/containers.sh. One container per pod the StatefulSets would
create, with what the pod template says: image (or --image), command and
args, env (fieldRef, secretKeyRef and `$(VAR)` expansion as the kubelet does
them), ports, volumes (ConfigMap files, emptyDir as tmpfs, one docker volume
per volumeClaimTemplate), the securityContext, resource limits and the
termination grace period. DNS mirrors a headless Service: the container's
hostname is the pod name and it answers to `POD.SERVICE`, `POD.SERVICE.NS`,
`POD.SERVICE.NS.svc` and `...svc.cluster.local`, and to the name of every
Service whose selector matches its labels.

    pods.py RENDERED.yaml WORKDIR --run-id ID --network NET [--image IMAGE]

writes into WORKDIR:
    plan.sh       shell variables: SUPERUSER, PASSWORD, WORKER_REPLICAS,
                  COORDINATOR_PODS, WORKER_PODS, ALL_PODS, VOLUMES and
                  WORKER_ENDPOINTS (`POD.SERVICE|GRPC_PORT`, sorted)
    args/POD      the `docker run` arguments of POD, NUL-separated
    probes.tsv    POD KIND SCHEME PORT PATH, one line per HTTP probe
    ports.tsv     POD NAME PORT, one line per container port
    files/...     the ConfigMap files bind-mounted into the containers
Exits 2 with one line on stderr when the objects use something this
emulation cannot honour (so the test never silently runs something else).
"""

import argparse
import base64
import os
import re
import shlex
import sys

import yaml

COMPONENT = "app.kubernetes.io/component"
POD_INDEX = "apps.kubernetes.io/pod-index"
POD_NAME_LABEL = "statefulset.kubernetes.io/pod-name"
CLUSTER_DOMAIN = "cluster.local"


class Unsupported(Exception):
    """Something in the rendered objects that the emulation cannot honour."""


def load(path):
    with open(path, encoding="utf-8") as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    by_kind = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], []).append(doc)
    return by_kind


def find(objects, kind, name):
    for obj in objects.get(kind, []):
        if obj["metadata"]["name"] == name:
            return obj
    raise Unsupported(f"{kind} {name} is referenced but not among the rendered objects")


def secret_value(objects, ref):
    secret = find(objects, "Secret", ref["name"])
    key = ref["key"]
    if key in (secret.get("stringData") or {}):
        return secret["stringData"][key]
    if key in (secret.get("data") or {}):
        return base64.b64decode(secret["data"][key]).decode("utf-8")
    raise Unsupported(f"Secret {ref['name']} has no key {key!r}")


def config_map_value(objects, ref):
    data = find(objects, "ConfigMap", ref["name"]).get("data") or {}
    if ref["key"] not in data:
        raise Unsupported(f"ConfigMap {ref['name']} has no key {ref['key']!r}")
    return data[ref["key"]]


def field_value(path, pod):
    if path == "metadata.name":
        return pod["name"]
    if path == "metadata.namespace":
        return pod["namespace"]
    m = re.fullmatch(r"metadata\.labels\['([^']+)'\]", path)
    if m:
        if m.group(1) not in pod["labels"]:
            raise Unsupported(f"fieldRef {path}: the pod has no such label")
        return pod["labels"][m.group(1)]
    raise Unsupported(f"fieldRef {path} is not emulated")


def expand(text, env):
    """`$(VAR)` references to variables defined so far; `$$` escapes."""

    def sub(m):
        if m.group(0).startswith("$$"):
            return m.group(0)[1:]
        name = m.group(1)
        return env[name] if name in env else m.group(0)

    return re.sub(r"\$\$\([A-Za-z_][A-Za-z0-9_]*\)|\$\(([A-Za-z_][A-Za-z0-9_]*)\)", sub, text)


def resolve_env(container, pod, objects):
    env = {}
    for var in container.get("env") or []:
        name = var["name"]
        if "value" in var:
            env[name] = expand(var["value"], env)
            continue
        source = var.get("valueFrom") or {}
        if "fieldRef" in source:
            env[name] = field_value(source["fieldRef"]["fieldPath"], pod)
        elif "secretKeyRef" in source:
            env[name] = secret_value(objects, source["secretKeyRef"])
        elif "configMapKeyRef" in source:
            env[name] = config_map_value(objects, source["configMapKeyRef"])
        elif not source:
            env[name] = ""
        else:
            raise Unsupported(f"env {name}: valueFrom {sorted(source)} is not emulated")
    if container.get("envFrom"):
        raise Unsupported("envFrom is not emulated")
    return env


def quantity_bytes(text):
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
             "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
    m = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(text))
    if not m or (m.group(2) and m.group(2) not in units):
        raise Unsupported(f"memory quantity {text!r} is not understood")
    return int(float(m.group(1)) * units.get(m.group(2), 1))


def quantity_cpus(text):
    text = str(text)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def port_number(port, container):
    if isinstance(port, int):
        return port
    if str(port).isdigit():
        return int(port)
    for p in container.get("ports") or []:
        if p.get("name") == port:
            return p["containerPort"]
    raise Unsupported(f"probe port {port!r} names no container port")


def selects(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def service_aliases(objects, pod, namespace):
    """DNS names of the pod: its headless-Service name and every Service that selects it."""
    fqdn_tail = ["", f".{namespace}", f".{namespace}.svc", f".{namespace}.svc.{CLUSTER_DOMAIN}"]
    names = [f"{pod['name']}.{pod['service']}{t}" for t in fqdn_tail]
    for svc in objects.get("Service", []):
        if selects(svc["spec"].get("selector") or {}, pod["labels"]):
            names += [f"{svc['metadata']['name']}{t}" for t in fqdn_tail]
    return names


def security_args(pod_spec, container):
    pod_sc = pod_spec.get("securityContext") or {}
    sc = container.get("securityContext") or {}
    args = []
    user = sc.get("runAsUser", pod_sc.get("runAsUser"))
    group = sc.get("runAsGroup", pod_sc.get("runAsGroup"))
    non_root = sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot"))
    if user is not None:
        args += ["--user", f"{user}:{group}" if group is not None else str(user)]
    if non_root and (user is None or int(user) == 0):
        raise Unsupported("runAsNonRoot without a non-zero runAsUser is not emulated")
    if pod_sc.get("fsGroup") is not None:
        args += ["--group-add", str(pod_sc["fsGroup"])]
    for extra in pod_sc.get("supplementalGroups") or []:
        args += ["--group-add", str(extra)]
    if sc.get("readOnlyRootFilesystem"):
        args.append("--read-only")
    caps = sc.get("capabilities") or {}
    for cap in caps.get("drop") or []:
        args += ["--cap-drop", cap]
    for cap in caps.get("add") or []:
        args += ["--cap-add", cap]
    if sc.get("allowPrivilegeEscalation") is False:
        args += ["--security-opt", "no-new-privileges"]
    if sc.get("privileged"):
        raise Unsupported("privileged containers are not emulated")
    seccomp = (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type")
    if seccomp == "Unconfined":
        args += ["--security-opt", "seccomp=unconfined"]
    elif seccomp not in (None, "RuntimeDefault"):
        raise Unsupported(f"seccompProfile {seccomp} is not emulated")
    return args


def volume_args(sts, pod, pod_spec, container, objects, workdir, run_id):
    """Mount arguments, and the docker volumes to create first."""
    volumes = {v["name"]: v for v in pod_spec.get("volumes") or []}
    claims = {c["metadata"]["name"] for c in sts["spec"].get("volumeClaimTemplates") or []}
    args, docker_volumes = [], []
    for mount in container.get("volumeMounts") or []:
        name, path = mount["name"], mount["mountPath"]
        ro = bool(mount.get("readOnly"))
        if mount.get("subPath"):
            raise Unsupported(f"volumeMount {name} uses subPath (not emulated)")
        if name in claims:
            vol = f"{run_id}-{name}-{pod['name']}"
            docker_volumes.append(vol)
            args += ["--mount", f"type=volume,src={vol},dst={path}" + (",readonly" if ro else "")]
            continue
        vol = volumes.get(name)
        if vol is None:
            raise Unsupported(f"volumeMount {name} names no volume")
        if "emptyDir" in vol:
            args += ["--mount", f"type=tmpfs,dst={path},tmpfs-mode=1777"]
        elif "configMap" in vol or "secret" in vol:
            kind, source = ("ConfigMap", vol["configMap"]) if "configMap" in vol else ("Secret", vol["secret"])
            obj = find(objects, kind, source.get("name") or source.get("secretName"))
            data = dict(obj.get("data") or {})
            if kind == "Secret":
                data = {k: base64.b64decode(v).decode("utf-8") for k, v in data.items()}
                data.update(obj.get("stringData") or {})
            items = source.get("items") or [{"key": k, "path": k} for k in data]
            target = os.path.join(workdir, "files", pod["name"], name)
            os.makedirs(target, mode=0o755, exist_ok=True)
            for item in items:
                if item["key"] not in data:
                    raise Unsupported(f"{kind} {obj['metadata']['name']} has no key {item['key']!r}")
                file_path = os.path.join(target, item["path"])
                os.makedirs(os.path.dirname(file_path), mode=0o755, exist_ok=True)
                with open(file_path, "w", encoding="utf-8") as f:
                    f.write(data[item["key"]])
                os.chmod(file_path, 0o644)
            args += ["--mount", f"type=bind,src={target},dst={path},readonly"]
        else:
            raise Unsupported(f"volume {name}: {sorted(set(vol) - {'name'})} is not emulated")
    return args, docker_volumes


def pod_plan(sts, ordinal, objects, args):
    spec = sts["spec"]
    template = spec["template"]
    pod_spec = template["spec"]
    namespace = sts["metadata"].get("namespace", "default")
    pod_name = f"{sts['metadata']['name']}-{ordinal}"
    labels = dict(template["metadata"].get("labels") or {})
    labels[POD_INDEX] = str(ordinal)
    labels[POD_NAME_LABEL] = pod_name
    pod = {"name": pod_name, "namespace": namespace, "labels": labels,
           "service": spec["serviceName"]}
    if pod_spec.get("initContainers") or len(pod_spec["containers"]) != 1:
        raise Unsupported(f"{pod_name}: only pods with exactly one container are emulated")
    container = pod_spec["containers"][0]
    env = resolve_env(container, pod, objects)

    run = ["--detach", "--pull", "never",
           "--name", f"{args.run_id}-{pod_name}",
           "--label", f"quiver-e2e={args.run_id}",
           "--network", args.network,
           "--hostname", pod_name,
           "--domainname", f"{pod['service']}.{namespace}.svc.{CLUSTER_DOMAIN}"]
    for alias in service_aliases(objects, pod, namespace):
        run += ["--network-alias", alias]
    for key, value in env.items():
        run += ["--env", f"{key}={value}"]
    for port in container.get("ports") or []:
        run += ["--publish", f"127.0.0.1::{port['containerPort']}"]
    run += security_args(pod_spec, container)
    mounts, volumes = volume_args(sts, pod, pod_spec, container, objects, args.workdir, args.run_id)
    run += mounts
    limits = (container.get("resources") or {}).get("limits") or {}
    if "memory" in limits:
        run += ["--memory", str(quantity_bytes(limits["memory"]))]
    if "cpu" in limits:
        run += ["--cpus", f"{quantity_cpus(limits['cpu']):g}"]
    grace = pod_spec.get("terminationGracePeriodSeconds")
    if grace is not None:
        run += ["--stop-timeout", str(grace)]
    if container.get("workingDir"):
        run += ["--workdir", container["workingDir"]]
    command = [expand(c, env) for c in container.get("command") or []]
    if command:
        run += ["--entrypoint", command[0]]
    image = args.image or container["image"]
    run.append(image)
    run += command[1:]
    run += [expand(a, env) for a in container.get("args") or []]

    probes = []
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        probe = container.get(kind)
        if not probe:
            continue
        get = probe.get("httpGet")
        if not get:
            raise Unsupported(f"{pod_name}: {kind} is not an httpGet probe")
        probes.append((kind, get.get("scheme", "HTTP").lower(),
                       port_number(get["port"], container), get.get("path", "/")))
    ports = [(p.get("name", ""), p["containerPort"]) for p in container.get("ports") or []]
    return pod, run, volumes, probes, ports, container


def superuser(objects, container):
    """The superuser and password, from the Secret the pod's QUIVER_PASSWORD comes from."""
    for var in container.get("env") or []:
        ref = (var.get("valueFrom") or {}).get("secretKeyRef")
        if var["name"] == "QUIVER_PASSWORD" and ref:
            secret = find(objects, "Secret", ref["name"])
            has_user = "username" in (secret.get("data") or {}) or "username" in (secret.get("stringData") or {})
            name = secret_value(objects, {"name": ref["name"], "key": "username"}) if has_user else "quiver"
            return name, secret_value(objects, ref)
    raise Unsupported("the coordinator's QUIVER_PASSWORD does not come from a Secret")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rendered")
    parser.add_argument("workdir")
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--network", required=True)
    parser.add_argument("--image", help="run this image instead of the one in the pod template")
    args = parser.parse_args()
    objects = load(args.rendered)
    sets = objects.get("StatefulSet", [])
    if not sets:
        raise Unsupported("no StatefulSet among the rendered objects")

    os.makedirs(os.path.join(args.workdir, "args"), exist_ok=True)
    pods_by_role = {"coordinator": [], "worker": []}
    worker_replicas = 0
    volumes, probe_lines, port_lines, endpoints = [], [], [], []
    user = password = None
    for sts in sets:
        role = sts["spec"]["template"]["metadata"]["labels"].get(COMPONENT)
        if role not in pods_by_role:
            raise Unsupported(f"StatefulSet {sts['metadata']['name']} has no coordinator/worker component label")
        replicas = sts["spec"].get("replicas", 1)
        if role == "worker":
            worker_replicas += replicas
        for ordinal in range(replicas):
            pod, run, vols, probes, ports, container = pod_plan(sts, ordinal, objects, args)
            pods_by_role[role].append(pod["name"])
            volumes += vols
            with open(os.path.join(args.workdir, "args", pod["name"]), "wb") as f:
                f.write(b"".join(a.encode("utf-8") + b"\0" for a in run))
            probe_lines += ["\t".join([pod["name"], k, s, str(p), path]) for k, s, p, path in probes]
            port_lines += [f"{pod['name']}\t{name}\t{port}" for name, port in ports]
            if role == "worker":
                grpc = [port for name, port in ports if name == "grpc"]
                if len(grpc) != 1:
                    raise Unsupported(f"{pod['name']}: no single container port named grpc")
                endpoints.append(f"{pod['name']}.{pod['service']}|{grpc[0]}")
            if role == "coordinator" and password is None:
                user, password = superuser(objects, container)

    def array(values):
        return "(" + " ".join(shlex.quote(v) for v in values) + ")"

    with open(os.path.join(args.workdir, "plan.sh"), "w", encoding="utf-8") as f:
        f.write(f"SUPERUSER={shlex.quote(user)}\n")
        f.write(f"PASSWORD={shlex.quote(password)}\n")
        f.write(f"WORKER_REPLICAS={worker_replicas}\n")
        f.write(f"COORDINATOR_PODS={array(pods_by_role['coordinator'])}\n")
        f.write(f"WORKER_PODS={array(pods_by_role['worker'])}\n")
        f.write(f"ALL_PODS={array(pods_by_role['coordinator'] + pods_by_role['worker'])}\n")
        f.write(f"VOLUMES={array(volumes)}\n")
        f.write(f"WORKER_ENDPOINTS={array(sorted(endpoints))}\n")
    with open(os.path.join(args.workdir, "probes.tsv"), "w", encoding="utf-8") as f:
        f.write("".join(line + "\n" for line in probe_lines))
    with open(os.path.join(args.workdir, "ports.tsv"), "w", encoding="utf-8") as f:
        f.write("".join(line + "\n" for line in port_lines))


if __name__ == "__main__":
    try:
        main()
    except Unsupported as err:
        print(f"pods.py: {err}", file=sys.stderr)
        sys.exit(2)
