#!/usr/bin/python3
"""Checks skipserve's deployment files: deploy/ (Kubernetes, Prometheus,
Grafana, policies) and docker/ (Dockerfiles, docker-compose).

    /usr/bin/python3 tests/deploy/check_manifests.py <repo root>

No cluster, no docker engine: every YAML/JSON file is parsed, the kustomize
overlays under deploy/k8s/overlays/ are rendered here (resources, config map
generators, strategic-merge and JSON 6902 patches, images, namespace; any
other kustomization field is reported as unsupported rather than ignored),
and the rendered objects are checked against what the server needs
(server/server_main.cc): gRPC health probes on the gRPC port, a grace period
that covers the drain, a locked-down security context, resources, the GPU
only where --device=cuda, Services, HPA, PDB and ServiceMonitor that agree
with the pods. The overlays etcd and etcd-external (the policy registry in
etcd, issue #13) are also checked for what the etcd store needs: a
--registry=etcd://HOST:PORT,.../PREFIX that names the etcd client Service
(or a member) on its client port, no --state_file and no writable PVC, TLS
(--etcd_ca) and authentication, every file a flag names (--etcd_ca,
--etcd_cert, --etcd_key, --etcd_password_file, --admin_token_file) mounted
read-only from a Secret that lists it, no probe on the registry's health
service skipserve.v1.Policies; and the etcd cluster (objects labelled
app.kubernetes.io/name=etcd): 3 members started in parallel, an odd
--initial-cluster naming exactly the StatefulSet's pods at their peer URLs
in the headless Service, advertised URLs that agree with it, https on both
ports with client certificates required and TLS files from a Secret,
auto-compaction, a data volume per member, requests, anti-affinity, /health
probes on the plain-HTTP metrics port, and a PodDisruptionBudget that keeps
the quorum. When `kustomize` or `kubectl` is on PATH the overlays are also
rendered with it and must agree with the rendering here (set
SKIPSERVE_DEPLOY_NO_KUSTOMIZE=1 to skip that).

Prints one line per check and `N passed, M failed`; exits 1 on any failure.
Needs python3-yaml.
"""

import copy
import glob
import json
import os
import re
import shutil
import subprocess
import sys

try:
    import yaml
except ImportError:  # pragma: no cover
    print("check_manifests.py needs PyYAML (Debian: python3-yaml)")
    print("0 passed, 1 failed")
    sys.exit(1)


# The server's defaults (server/server_main.cc).
DEFAULT_GRPC_PORT = 50051
DEFAULT_METRICS_PORT = 9090
DEFAULT_DRAIN_SECONDS = 30.0
# Spare seconds between the end of the drain and SIGKILL.
GRACE_MARGIN_SECONDS = 5.0
# A startup probe must give a 7B checkpoint at least this long to load.
MIN_STARTUP_SECONDS = 300.0
IMAGE_UID = 10001


class Checks:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def check(self, name, ok, detail=""):
        if ok:
            self.passed += 1
            print(f"PASS  {name}")
        else:
            self.failed += 1
            print(f"FAIL  {name}" + (f": {detail}" if detail else ""))
        return bool(ok)

    def fail(self, name, detail):
        return self.check(name, False, detail)


# --------------------------------------------------------------------------
# Small parsers


_DURATION_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3,
                   "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def parse_duration(text):
    """absl / Go / compose durations: '30s', '1m30s', '500ms', '1.5m', '45'
    (bare numbers are seconds). Returns seconds or None."""
    if isinstance(text, (int, float)):
        return float(text)
    text = str(text).strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|µs|ns|h|m|s)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    return sum(float(n) * _DURATION_UNITS[u] for n, u in parts)


_BIN = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50,
        "Ei": 2**60}
_DEC = {"n": 1e-9, "u": 1e-6, "m": 1e-3, "": 1.0, "k": 1e3, "M": 1e6,
        "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18}


def parse_quantity(value):
    """Kubernetes resource quantities ('500m', '4', '16Gi', '1e9')."""
    if isinstance(value, (int, float)):
        return float(value)
    m = re.fullmatch(r"([+-]?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)"
                     r"(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?", str(value))
    if not m:
        return None
    number, suffix = float(m.group(1)), m.group(2) or ""
    return number * (_BIN.get(suffix) or _DEC[suffix])


def flag_value(args, name):
    """The value of --name=value / --name value in an argument list (the
    last one wins, as with absl flags)."""
    value = None
    for i, arg in enumerate(args):
        arg = str(arg)
        for prefix in ("--" + name, "-" + name):
            if arg.startswith(prefix + "="):
                value = arg[len(prefix) + 1:]
            elif arg == prefix and i + 1 < len(args):
                value = str(args[i + 1])
    return value


def labels_match(selector, labels):
    return bool(selector) and all(labels.get(k) == v
                                  for k, v in selector.items())


def load_yaml_docs(path):
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


# --------------------------------------------------------------------------
# A kustomize subset


class KustomizeError(Exception):
    pass


SUPPORTED_KUSTOMIZATION_FIELDS = {
    "apiVersion", "kind", "resources", "patches", "patchesStrategicMerge",
    "patchesJson6902", "configMapGenerator", "generatorOptions", "images",
    "namespace",
}

# Strategic-merge keys of the lists a Deployment patch touches.
MERGE_KEYS = {
    "containers": "name", "initContainers": "name",
    "ephemeralContainers": "name", "volumes": "name",
    "volumeMounts": "mountPath", "env": "name", "envFrom": None,
    "imagePullSecrets": "name", "ports": "containerPort",
}


def strategic_merge(base, patch, key=None):
    if isinstance(patch, dict):
        if not isinstance(base, dict):
            base = {}
        out = copy.deepcopy(base)
        for k, v in patch.items():
            if k.startswith("$"):
                continue
            if v is None:
                out.pop(k, None)
            elif k in out:
                out[k] = strategic_merge(out[k], v, k)
            else:
                out[k] = strategic_merge(None, v, k)
        return out
    if isinstance(patch, list):
        merge_key = MERGE_KEYS.get(key)
        if (merge_key and isinstance(base, list)
                and all(isinstance(x, dict) for x in patch)):
            out = copy.deepcopy(base)
            for item in patch:
                idx = next((i for i, b in enumerate(out)
                            if isinstance(b, dict)
                            and b.get(merge_key) == item.get(merge_key)),
                           None)
                if item.get("$patch") == "delete":
                    if idx is not None:
                        del out[idx]
                elif idx is not None:
                    out[idx] = strategic_merge(out[idx], item)
                else:
                    out.append(strategic_merge(None, item))
            return out
        return [strategic_merge(None, x) for x in patch]
    return copy.deepcopy(patch)


def _pointer(path):
    if not path.startswith("/"):
        raise KustomizeError(f"bad JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~")
            for p in path.split("/")[1:]]


def json6902(obj, ops):
    obj = copy.deepcopy(obj)
    for op in ops:
        parts = _pointer(op["path"])
        parent = obj
        for p in parts[:-1]:
            parent = parent[int(p)] if isinstance(parent, list) else parent[p]
        last = parts[-1]
        kind = op["op"]
        if isinstance(parent, list):
            index = len(parent) if last == "-" else int(last)
            if kind == "add":
                parent.insert(index, op["value"])
            elif kind == "replace":
                parent[index] = op["value"]
            elif kind == "remove":
                del parent[index]
            else:
                raise KustomizeError(f"unsupported JSON patch op {kind}")
        else:
            if kind in ("add", "replace"):
                if kind == "replace" and last not in parent:
                    raise KustomizeError(f"replace of missing {op['path']}")
                parent[last] = op["value"]
            elif kind == "remove":
                if last not in parent:
                    raise KustomizeError(f"remove of missing {op['path']}")
                del parent[last]
            else:
                raise KustomizeError(f"unsupported JSON patch op {kind}")
    return obj


def _inside(root, path):
    root = os.path.realpath(root)
    path = os.path.realpath(path)
    return path == root or path.startswith(root + os.sep)


def _target_matches(target, obj):
    api = obj.get("apiVersion", "")
    group, _, version = api.rpartition("/")
    meta = obj.get("metadata", {})
    if "kind" in target and target["kind"] != obj.get("kind"):
        return False
    if "name" in target and not re.fullmatch(target["name"],
                                             meta.get("name", "")):
        return False
    if "group" in target and target["group"] != group:
        return False
    if "version" in target and target["version"] != version:
        return False
    if "namespace" in target and target["namespace"] != meta.get("namespace"):
        return False
    if "labelSelector" in target:
        raise KustomizeError("patch target labelSelector is not supported")
    return True


def kustomize(directory, _stack=()):
    """Renders a kustomization directory. Returns (objects, generated), where
    generated maps each generated ConfigMap name to its object (names are
    left unhashed, and so are the references to them)."""
    directory = os.path.realpath(directory)
    if directory in _stack:
        raise KustomizeError(f"cycle through {directory}")
    for name in ("kustomization.yaml", "kustomization.yml", "Kustomization"):
        kfile = os.path.join(directory, name)
        if os.path.exists(kfile):
            break
    else:
        raise KustomizeError(f"no kustomization file in {directory}")
    with open(kfile, encoding="utf-8") as f:
        k = yaml.safe_load(f) or {}
    unsupported = sorted(set(k) - SUPPORTED_KUSTOMIZATION_FIELDS)
    if unsupported:
        raise KustomizeError(f"{kfile}: unsupported fields {unsupported}")

    def local(rel):
        path = os.path.normpath(os.path.join(directory, rel))
        if not _inside(directory, path):
            raise KustomizeError(
                f"{kfile}: {rel} is outside the kustomization root "
                "(kustomize's load restrictor rejects it)")
        if not os.path.exists(path):
            raise KustomizeError(f"{kfile}: {rel} does not exist")
        return path

    objects, generated = [], {}
    for res in k.get("resources", []) or []:
        path = os.path.normpath(os.path.join(directory, res))
        if os.path.isdir(path):
            sub_objects, sub_generated = kustomize(path, _stack + (directory,))
            objects += sub_objects
            generated.update(sub_generated)
        else:
            objects += load_yaml_docs(local(res))

    for gen in k.get("configMapGenerator", []) or []:
        data = {}
        for entry in gen.get("files", []) or []:
            key, _, rel = entry.rpartition("=")
            rel = rel or entry
            key = key or os.path.basename(rel)
            with open(local(rel), encoding="utf-8") as f:
                data[key] = f.read()
        for literal in gen.get("literals", []) or []:
            key, _, value = literal.partition("=")
            data[key] = value
        behavior = gen.get("behavior", "create")
        name = gen["name"]
        if behavior == "create":
            cm = {"apiVersion": "v1", "kind": "ConfigMap",
                  "metadata": {"name": name}, "data": data}
            objects.append(cm)
            generated[name] = cm
        else:
            if name not in generated:
                raise KustomizeError(f"{kfile}: {behavior} of unknown {name}")
            if behavior == "merge":
                generated[name]["data"].update(data)
            else:
                generated[name]["data"] = data

    patches = []
    for p in k.get("patches", []) or []:
        text = p.get("patch")
        if text is None:
            with open(local(p["path"]), encoding="utf-8") as f:
                text = f.read()
        patches.append((yaml.safe_load(text), p.get("target")))
    for rel in k.get("patchesStrategicMerge", []) or []:
        with open(local(rel), encoding="utf-8") as f:
            for doc in yaml.safe_load_all(f):
                patches.append((doc, None))
    for p in k.get("patchesJson6902", []) or []:
        with open(local(p["path"]), encoding="utf-8") as f:
            patches.append((yaml.safe_load(f), p["target"]))

    for body, target in patches:
        if target is None:
            if not isinstance(body, dict):
                raise KustomizeError(f"{kfile}: a JSON patch needs a target")
            target = {"kind": body.get("kind"),
                      "name": re.escape(body.get("metadata", {})["name"])}
        hits = [i for i, o in enumerate(objects) if _target_matches(target, o)]
        if not hits:
            raise KustomizeError(f"{kfile}: patch target {target} matches "
                                 "nothing")
        for i in hits:
            if isinstance(body, list):
                objects[i] = json6902(objects[i], body)
            else:
                objects[i] = strategic_merge(objects[i], body)

    for image in k.get("images", []) or []:
        for obj in objects:
            spec = obj.get("spec", {}).get("template", {}).get("spec", {})
            for c in spec.get("containers", []) + spec.get("initContainers",
                                                           []):
                ref = c.get("image", "")
                name = re.split(r"[@]", ref)[0]
                name = name if ":" not in name.rsplit("/", 1)[-1] else \
                    name.rsplit(":", 1)[0]
                if name != image["name"]:
                    continue
                new = image.get("newName", name)
                if "digest" in image:
                    new += "@" + image["digest"]
                elif "newTag" in image:
                    new += ":" + str(image["newTag"])
                elif ref != name:
                    new += ref[len(name):]
                c["image"] = new

    if "namespace" in k:
        for obj in objects:
            obj.setdefault("metadata", {})["namespace"] = k["namespace"]
    return objects, generated


def external_kustomize(directory):
    """Renders with kustomize or kubectl if present: (objects, tool) or
    (None, why)."""
    if os.environ.get("SKIPSERVE_DEPLOY_NO_KUSTOMIZE"):
        return None, "SKIPSERVE_DEPLOY_NO_KUSTOMIZE is set"
    if shutil.which("kustomize"):
        cmd = ["kustomize", "build", directory]
    elif shutil.which("kubectl"):
        cmd = ["kubectl", "kustomize", directory]
    else:
        return None, "neither kustomize nor kubectl is on PATH"
    try:
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise KustomizeError(f"{' '.join(cmd)}: {e}")
    if run.returncode != 0:
        raise KustomizeError(f"{' '.join(cmd)} failed: {run.stderr.strip()}")
    return [d for d in yaml.safe_load_all(run.stdout) if d], cmd[0]


def unhash_configmaps(objects, names):
    """Undoes kustomize's name hashing of generated ConfigMaps (and of the
    references to them), so that renderings compare equal."""
    def strip(name):
        for base in names:
            if re.fullmatch(re.escape(base) + r"-[a-z0-9]{10}", name or ""):
                return base
        return name

    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "configMap" and isinstance(value, dict) \
                        and "name" in value:
                    value["name"] = strip(value["name"])
                elif key in ("configMapRef", "configMapKeyRef") \
                        and isinstance(value, dict):
                    value["name"] = strip(value.get("name"))
                walk(value)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    objects = copy.deepcopy(objects)
    for obj in objects:
        if obj.get("kind") == "ConfigMap":
            obj["metadata"]["name"] = strip(obj["metadata"]["name"])
        walk(obj)
    return objects


def by_key(objects):
    return {(o.get("kind"), o.get("metadata", {}).get("name")): o
            for o in objects}


# --------------------------------------------------------------------------
# Kubernetes checks


def probe_budget(probe):
    return (probe.get("initialDelaySeconds", 0)
            + probe.get("periodSeconds", 10) * probe.get("failureThreshold", 3))


def prestop_seconds(container):
    pre = (container.get("lifecycle") or {}).get("preStop") or {}
    if "sleep" in pre:
        return float(pre["sleep"].get("seconds", 0))
    command = (pre.get("exec") or {}).get("command") or []
    if command and os.path.basename(str(command[0])) == "sleep" \
            and len(command) == 2:
        seconds = parse_duration(command[1])
        return seconds if seconds is not None else 0.0
    return 0.0


def check_overlay(c, root, name, objects, generated):
    tag = f"k8s/{name}"
    kinds = {}
    for o in objects:
        kinds.setdefault(o.get("kind"), []).append(o)

    deployments = kinds.get("Deployment", [])
    if not c.check(f"{tag}: exactly one Deployment", len(deployments) == 1,
                   f"found {len(deployments)}"):
        return
    dep = deployments[0]
    dep_name = dep["metadata"]["name"]
    tmpl = dep["spec"]["template"]
    pod = tmpl["spec"]
    pod_labels = tmpl.get("metadata", {}).get("labels", {})
    c.check(f"{tag}: Deployment selector matches its pod labels",
            labels_match(dep["spec"].get("selector", {}).get("matchLabels"),
                         pod_labels))

    containers = pod.get("containers", [])
    server = server_container(containers)
    if not c.check(f"{tag}: a server container", server is not None):
        return
    args = [str(a) for a in server.get("args", []) or []]
    ports = {p.get("name"): p.get("containerPort")
             for p in server.get("ports", []) or []}

    grpc_port = int(flag_value(args, "port") or DEFAULT_GRPC_PORT)
    metrics_port = int(flag_value(args, "metrics_port") or
                       DEFAULT_METRICS_PORT)
    c.check(f"{tag}: container port 'grpc' is --port ({grpc_port})",
            ports.get("grpc") == grpc_port, f"ports {ports}")
    c.check(f"{tag}: container port 'metrics' is --metrics_port "
            f"({metrics_port})", ports.get("metrics") == metrics_port,
            f"ports {ports}")
    host = flag_value(args, "host")
    c.check(f"{tag}: the server listens on all interfaces",
            host in (None, "0.0.0.0", "[::]", "::"), f"--host={host}")

    # Probes.
    for kind in ("livenessProbe", "readinessProbe", "startupProbe"):
        probe = server.get(kind)
        c.check(f"{tag}: {kind} uses gRPC health on port {grpc_port}",
                isinstance(probe, dict) and isinstance(probe.get("grpc"), dict)
                and probe["grpc"].get("port") == grpc_port
                and probe["grpc"].get("service", "") == "",
                f"{kind} = {probe}")
    startup = server.get("startupProbe") or {}
    c.check(f"{tag}: startupProbe allows >= {MIN_STARTUP_SECONDS:.0f}s to "
            "load the model", probe_budget(startup) >= MIN_STARTUP_SECONDS,
            f"{probe_budget(startup)}s")

    # Drain.
    drain_text = flag_value(args, "drain_timeout")
    drain = (parse_duration(drain_text) if drain_text is not None
             else DEFAULT_DRAIN_SECONDS)
    if not c.check(f"{tag}: --drain_timeout parses", drain is not None,
                   repr(drain_text)):
        drain = DEFAULT_DRAIN_SECONDS
    pre = prestop_seconds(server)
    grace = pod.get("terminationGracePeriodSeconds", 30)
    need = pre + drain + GRACE_MARGIN_SECONDS
    c.check(f"{tag}: terminationGracePeriodSeconds >= preStop {pre:g}s + "
            f"drain {drain:g}s + {GRACE_MARGIN_SECONDS:g}s",
            grace >= need, f"{grace} < {need:g}")
    live = server.get("livenessProbe") or {}
    c.check(f"{tag}: liveness tolerates a drain (failures x period >= "
            f"{drain:g}s)",
            live.get("periodSeconds", 10) * live.get("failureThreshold", 3)
            >= drain)

    # Security.
    psc = pod.get("securityContext", {}) or {}
    csc = server.get("securityContext", {}) or {}

    def effective(key):
        return csc.get(key, psc.get(key))

    c.check(f"{tag}: runAsNonRoot", effective("runAsNonRoot") is True)
    uid = effective("runAsUser")
    c.check(f"{tag}: runAsUser is the image's uid {IMAGE_UID}",
            uid == IMAGE_UID, f"runAsUser={uid}")
    c.check(f"{tag}: readOnlyRootFilesystem",
            csc.get("readOnlyRootFilesystem") is True)
    c.check(f"{tag}: allowPrivilegeEscalation false",
            csc.get("allowPrivilegeEscalation") is False)
    c.check(f"{tag}: privileged is not set", csc.get("privileged") in
            (None, False))
    c.check(f"{tag}: capabilities drop ALL",
            "ALL" in ((csc.get("capabilities") or {}).get("drop") or []))
    c.check(f"{tag}: seccompProfile RuntimeDefault",
            (effective("seccompProfile") or {}).get("type") ==
            "RuntimeDefault")

    # Resources.
    res = server.get("resources", {}) or {}
    requests, limits = res.get("requests", {}) or {}, res.get("limits",
                                                              {}) or {}
    for r in ("cpu", "memory"):
        c.check(f"{tag}: resource request {r}",
                parse_quantity(requests.get(r)) not in (None, 0),
                f"requests {requests}")
        c.check(f"{tag}: resource limit {r}",
                parse_quantity(limits.get(r)) not in (None, 0),
                f"limits {limits}")
        if r in requests and r in limits:
            rq, lm = parse_quantity(requests[r]), parse_quantity(limits[r])
            c.check(f"{tag}: {r} request <= limit",
                    rq is not None and lm is not None and rq <= lm,
                    f"{requests[r]} > {limits[r]}")
    threads = flag_value(args, "threads")
    if threads is not None and "cpu" in limits:
        c.check(f"{tag}: --threads <= cpu limit",
                int(threads) <= parse_quantity(limits["cpu"]),
                f"--threads={threads}, limit {limits['cpu']}")

    device = flag_value(args, "device") or "auto"
    gpu = parse_quantity(limits.get("nvidia.com/gpu", 0)) or 0
    gpu_requested = "nvidia.com/gpu" in requests
    if name.endswith("gpu") or device == "cuda":
        c.check(f"{tag}: GPU limit nvidia.com/gpu >= 1", gpu >= 1,
                f"limits {limits}")
        c.check(f"{tag}: --device=cuda", device == "cuda",
                f"--device={device}")
    if name.endswith("cpu") or device == "cpu":
        c.check(f"{tag}: no GPU requested or limited",
                gpu == 0 and not gpu_requested,
                f"limits {limits}, requests {requests}")
        c.check(f"{tag}: --device=cpu", device == "cpu",
                f"--device={device}")

    # Volumes and the files the flags name.
    volumes = {v["name"]: v for v in pod.get("volumes", []) or []}
    mounts = server.get("volumeMounts", []) or []
    for m in mounts:
        c.check(f"{tag}: volumeMount {m.get('name')} has a volume",
                m.get("name") in volumes)

    def mount_for(path):
        best = None
        for m in mounts:
            mp = m["mountPath"].rstrip("/")
            if path == mp or path.startswith(mp + "/"):
                if best is None or len(mp) > len(best["mountPath"]):
                    best = m
        return best

    model = flag_value(args, "model") or ""
    m = mount_for(model)
    ok = (m is not None and m.get("readOnly") is True
          and "persistentVolumeClaim" in volumes.get(m["name"], {}))
    c.check(f"{tag}: --model={model} is on a read-only PVC mount", ok,
            f"mount {m}")
    if ok:
        claim = volumes[m["name"]]["persistentVolumeClaim"]["claimName"]
        c.check(f"{tag}: PVC {claim} is part of the rendering",
                any(o.get("metadata", {}).get("name") == claim
                    for o in kinds.get("PersistentVolumeClaim", [])))
    tmp = mount_for("/tmp/x")
    c.check(f"{tag}: /tmp is a writable emptyDir (read-only root)",
            tmp is not None and not tmp.get("readOnly")
            and "emptyDir" in volumes.get(tmp["name"], {}))

    policies = flag_value(args, "policies_file")
    if c.check(f"{tag}: --policies_file is set", bool(policies)):
        m = mount_for(policies)
        vol = volumes.get(m["name"], {}) if m else {}
        cm_name = (vol.get("configMap") or {}).get("name")
        configmaps = {o["metadata"]["name"]: o
                      for o in kinds.get("ConfigMap", [])}
        cm = configmaps.get(cm_name)
        c.check(f"{tag}: --policies_file is on a mounted ConfigMap that "
                "exists", cm is not None,
                f"mount {m}, volume {vol}, configmaps {sorted(configmaps)}")
        if cm is not None:
            key = os.path.relpath(policies, m["mountPath"])
            text = (cm.get("data") or {}).get(key)
            try:
                parsed = json.loads(text) if text is not None else None
            except json.JSONDecodeError as e:
                parsed = None
                c.fail(f"{tag}: policies ConfigMap key {key} is JSON", str(e))
            with open(os.path.join(root, "deploy", "policies.json"),
                      encoding="utf-8") as f:
                reference = json.load(f)
            c.check(f"{tag}: policies ConfigMap ({key}) equals "
                    "deploy/policies.json", parsed == reference,
                    "differs (copy deploy/policies.json to "
                    "deploy/k8s/base/policies.json)")

    # Services.
    services = kinds.get("Service", [])
    for svc in services:
        sname = svc["metadata"]["name"]
        c.check(f"{tag}: Service {sname} selects the pods",
                labels_match(svc["spec"].get("selector"), pod_labels),
                f"selector {svc['spec'].get('selector')}")
        for p in svc["spec"].get("ports", []):
            target = p.get("targetPort", p.get("port"))
            c.check(f"{tag}: Service {sname} port {p.get('name')} targets "
                    "a container port",
                    target in ports or target in ports.values(),
                    f"targetPort {target}")
    for port in (grpc_port, metrics_port):
        c.check(f"{tag}: every Service exposes {port}", services and all(
            any(p.get("port") == port for p in s["spec"].get("ports", []))
            for s in services))
    headless = [s for s in services if s["spec"].get("clusterIP") == "None"]
    c.check(f"{tag}: a headless Service (clusterIP: None)", len(headless) >= 1)
    c.check(f"{tag}: a ClusterIP Service with a virtual IP", any(
        s["spec"].get("clusterIP") != "None" and
        s["spec"].get("type", "ClusterIP") == "ClusterIP" for s in services))

    # HPA.
    hpas = kinds.get("HorizontalPodAutoscaler", [])
    pdbs = kinds.get("PodDisruptionBudget", [])
    if c.check(f"{tag}: one HorizontalPodAutoscaler", len(hpas) == 1):
        hpa = hpas[0]
        ref = hpa["spec"].get("scaleTargetRef", {})
        c.check(f"{tag}: HPA is autoscaling/v2",
                hpa.get("apiVersion") == "autoscaling/v2")
        c.check(f"{tag}: HPA targets Deployment {dep_name}",
                ref.get("kind") == "Deployment" and
                ref.get("name") == dep_name and
                ref.get("apiVersion") == "apps/v1", f"scaleTargetRef {ref}")
        metrics = hpa["spec"].get("metrics", [])
        pods_metrics = [m["pods"]["metric"]["name"] for m in metrics
                        if m.get("type") == "Pods"]
        c.check(f"{tag}: HPA scales on the Pods metric "
                "skipserve_waiting_sequences",
                "skipserve_waiting_sequences" in pods_metrics,
                f"metrics {metrics}")
        lo, hi = hpa["spec"].get("minReplicas", 1), hpa["spec"].get(
            "maxReplicas", 0)
        c.check(f"{tag}: HPA 1 <= minReplicas <= maxReplicas", 1 <= lo <= hi)
        for pdb in pdbs:
            min_avail = pdb["spec"].get("minAvailable")
            if isinstance(min_avail, int):
                c.check(f"{tag}: HPA minReplicas > PDB minAvailable (or no "
                        "node could be drained)", lo > min_avail,
                        f"{lo} <= {min_avail}")
        c.check(f"{tag}: Deployment leaves replicas to the HPA",
                "replicas" not in dep["spec"],
                f"replicas: {dep['spec'].get('replicas')}")
        check_adapter_rules(c, root, tag, pods_metrics)

    # PDB.
    if c.check(f"{tag}: one PodDisruptionBudget", len(pdbs) == 1):
        pdb = pdbs[0]
        c.check(f"{tag}: PDB is policy/v1", pdb.get("apiVersion") ==
                "policy/v1")
        c.check(f"{tag}: PDB minAvailable 1",
                pdb["spec"].get("minAvailable") == 1)
        c.check(f"{tag}: PDB selector matches the pod labels",
                labels_match(pdb["spec"].get("selector", {}).get(
                    "matchLabels"), pod_labels),
                f"selector {pdb['spec'].get('selector')}")

    # ServiceMonitor.
    monitors = kinds.get("ServiceMonitor", [])
    if c.check(f"{tag}: one ServiceMonitor", len(monitors) == 1):
        sm = monitors[0]
        c.check(f"{tag}: ServiceMonitor is monitoring.coreos.com/v1",
                sm.get("apiVersion") == "monitoring.coreos.com/v1")
        selector = sm["spec"].get("selector", {}).get("matchLabels", {})
        selected = [s for s in services if labels_match(
            selector, s["metadata"].get("labels", {}))]
        c.check(f"{tag}: ServiceMonitor selects exactly one Service (each pod "
                "scraped once)", len(selected) == 1,
                f"selects {[s['metadata']['name'] for s in selected]}")
        for ep in sm["spec"].get("endpoints", []):
            for s in selected:
                sp = next((p for p in s["spec"].get("ports", [])
                           if p.get("name") == ep.get("port")), None)
                c.check(f"{tag}: ServiceMonitor port {ep.get('port')!r} is "
                        f"a port of Service {s['metadata']['name']} that "
                        f"reaches --metrics_port",
                        sp is not None and sp.get("targetPort") in (
                            "metrics", metrics_port) and
                        ports.get("metrics") == metrics_port,
                        f"service port {sp}")
            c.check(f"{tag}: ServiceMonitor path is /metrics",
                    ep.get("path", "/metrics") == "/metrics")


def check_adapter_rules(c, root, tag, metric_names):
    path = os.path.join(root, "deploy", "k8s", "base",
                        "prometheus-adapter-rules.yaml")
    if not c.check(f"{tag}: prometheus-adapter rules example exists",
                   os.path.exists(path)):
        return
    rules = []
    for doc in load_yaml_docs(path):
        if doc.get("kind") == "ConfigMap":
            for text in (doc.get("data") or {}).values():
                rules += (yaml.safe_load(text) or {}).get("rules", []) or []
        else:
            rules += doc.get("rules", []) or []
            rules += (doc.get("rules") or {}).get("custom", []) \
                if isinstance(doc.get("rules"), dict) else []
    for metric in metric_names:
        rule = next((r for r in rules if isinstance(r, dict) and (
            (r.get("name") or {}).get("as") == metric or
            (not (r.get("name") or {}).get("as") and
             metric in r.get("seriesQuery", "")))), None)
        overrides = ((rule or {}).get("resources") or {}).get(
            "overrides") or {}
        c.check(f"{tag}: adapter rule exposes {metric} per pod",
                rule is not None and metric in rule.get("seriesQuery", "")
                and (overrides.get("pod") or {}).get("resource") == "pod"
                and (overrides.get("namespace") or {}).get("resource") ==
                "namespace" and "<<.Series>>" in rule.get("metricsQuery", ""),
                f"rule {rule}")


# --------------------------------------------------------------------------
# The policy registry in etcd (overlays etcd, etcd-external; issue #13)


ETCD_NAME_LABEL = ("app.kubernetes.io/name", "etcd")
# The server's flags for the etcd store; any of them without
# --registry=etcd://... is a mistake.
ETCD_FLAGS = ("etcd_ca", "etcd_cert", "etcd_key", "etcd_user",
              "etcd_password_file")
# The named health service that reports the registry store; no probe may use
# it (a replica keeps serving inference while etcd is down).
REGISTRY_HEALTH_SERVICE = "skipserve.v1.Policies"
_HOST_PORT = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9]([A-Za-z0-9.-]*"
                        r"[A-Za-z0-9])?):(\d{1,5})\Z")


def split_etcd_objects(objects):
    """(skipserve's objects, the etcd cluster's objects): the etcd cluster
    is what carries app.kubernetes.io/name=etcd."""
    key, value = ETCD_NAME_LABEL
    mine, etcd = [], []
    for o in objects:
        labels = (o.get("metadata") or {}).get("labels") or {}
        (etcd if labels.get(key) == value else mine).append(o)
    return mine, etcd


def server_container(containers):
    """The container that runs skipserve-server (the one with --model)."""
    return next((x for x in containers if any(
        str(a).startswith("--model") for a in x.get("args", []) or [])),
        containers[0] if containers else None)


def parse_registry_url(text):
    """etcd://HOST:PORT[,HOST:PORT...]/PREFIX -> ([(host, port)], prefix),
    or None."""
    m = re.fullmatch(r"etcd://([^/]+)/(.+)", text or "")
    if not m:
        return None
    hosts = []
    for hp in m.group(1).split(","):
        hm = _HOST_PORT.match(hp)
        if not hm or not 0 < int(hm.group(3)) < 65536:
            return None
        hosts.append((hm.group(1), int(hm.group(3))))
    prefix = m.group(2)
    # The server's rule (server/admin/registry_store.h).
    if not re.fullmatch(r"[A-Za-z0-9_./-]+", prefix):
        return None
    return hosts, prefix


def bool_flag(args, name):
    """A Go-style boolean flag (--name, --name=true|false; the last one
    wins): True, False, or None when absent or not a boolean."""
    value = None
    for arg in args:
        for prefix in ("--" + name, "-" + name):
            if arg == prefix:
                value = True
            elif arg.startswith(prefix + "="):
                text = arg[len(prefix) + 1:].lower()
                value = {"true": True, "1": True, "t": True, "false": False,
                         "0": False, "f": False}.get(text)
    return value


def parse_url(text):
    """scheme://host:port -> (scheme, host, port) or None."""
    m = re.fullmatch(r"(https?)://([^/:]+|\[[^\]]+\]):(\d+)/?", text or "")
    return (m.group(1), m.group(2), int(m.group(3))) if m else None


def in_namespace_host(name, namespace):
    """A regex for the names a Service (or a pod of a headless Service)
    answers to from its own namespace: NAME, NAME.NS, NAME.NS.svc,
    NAME.NS.svc.cluster.local (NS: any namespace when the rendering sets
    none)."""
    ns = (re.escape(namespace) if namespace
          else r"[a-z0-9]([a-z0-9-]*[a-z0-9])?")
    return re.compile(re.escape(name) + r"(\." + ns +
                      r"(\.svc(\.cluster\.local)?)?)?\Z")


def mount_for_path(mounts, path):
    best = None
    for m in mounts:
        mp = str(m.get("mountPath", "")).rstrip("/")
        if path == mp or path.startswith(mp + "/"):
            if best is None or len(mp) > len(best["mountPath"].rstrip("/")):
                best = m
    return best


def secret_file(mounts, volumes, path):
    """Where a file named by a flag comes from: (secret name, key, None), or
    (None, None, why not) unless it is a read-only Secret mount holding that
    file (through `items` when the volume lists them)."""
    if not path or not path.startswith("/"):
        return None, None, f"{path!r} is not an absolute path"
    m = mount_for_path(mounts, path)
    if m is None:
        return None, None, f"nothing is mounted at {path}"
    vol = volumes.get(m.get("name"), {})
    secret = vol.get("secret")
    if not isinstance(secret, dict) or not secret.get("secretName"):
        return None, None, (f"{path} is on volume {m.get('name')!r}, which "
                            "is not a Secret")
    if m.get("readOnly") is not True:
        return None, None, f"the mount at {m['mountPath']} is not readOnly"
    if m.get("subPath"):
        return None, None, f"the mount at {m['mountPath']} uses subPath"
    rel = os.path.relpath(path, m["mountPath"])
    items = secret.get("items")
    if items:
        item = next((i for i in items if i.get("path") == rel), None)
        if item is None:
            return None, None, (f"Secret {secret['secretName']} mounted at "
                                f"{m['mountPath']} lists no item with path "
                                f"{rel!r} (items "
                                f"{[i.get('path') for i in items]})")
        return secret["secretName"], item.get("key"), None
    return secret["secretName"], rel, None


def check_registry(c, name, objects, etcd_objects):
    """The --registry flag of every overlay, and for etcd the flags, files,
    probes and (when the rendering has one) the etcd cluster."""
    tag = f"k8s/{name}"
    deployments = [o for o in objects if o.get("kind") == "Deployment"]
    if len(deployments) != 1:
        return  # check_overlay reported it
    dep = deployments[0]
    namespace = dep.get("metadata", {}).get("namespace")
    pod = dep["spec"]["template"]["spec"]
    server = server_container(pod.get("containers", []) or [])
    if server is None:
        return
    args = [str(a) for a in server.get("args", []) or []]
    registry = flag_value(args, "registry") or ""
    wants_etcd = name.startswith("etcd")
    if wants_etcd:
        c.check(f"{tag}: --registry=etcd://...", registry.startswith(
            "etcd://"), f"--registry={registry!r}")
    if not registry.startswith("etcd://"):
        set_flags = [f for f in ETCD_FLAGS if flag_value(args, f)]
        c.check(f"{tag}: no --etcd_* flags without --registry=etcd://",
                not set_flags, f"set: {set_flags}")
        if not wants_etcd:
            c.check(f"{tag}: no etcd cluster objects without "
                    "--registry=etcd://", not etcd_objects,
                    str([(o.get("kind"), o["metadata"].get("name"))
                         for o in etcd_objects]))
        return

    parsed = parse_registry_url(registry)
    c.check(f"{tag}: --registry parses as etcd://HOST:PORT[,...]/PREFIX",
            parsed is not None, f"--registry={registry!r}")
    hosts, prefix = parsed if parsed else ([], "")

    state_file = flag_value(args, "state_file")
    c.check(f"{tag}: no --state_file with the etcd registry (the server "
            "refuses both)", not state_file, f"--state_file={state_file}")
    volumes = {v["name"]: v for v in pod.get("volumes", []) or []}
    mounts = server.get("volumeMounts", []) or []
    writable_pvcs = [m.get("mountPath") for m in mounts
                     if "persistentVolumeClaim" in volumes.get(
                         m.get("name"), {}) and m.get("readOnly") is not True]
    c.check(f"{tag}: no writable PersistentVolumeClaim in the server pods "
            "(state is shared through etcd)", not writable_pvcs,
            f"writable PVC mounts {writable_pvcs}")

    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        probe = server.get(kind) or {}
        service = (probe.get("grpc") or {}).get("service", "")
        c.check(f"{tag}: {kind} is not on {REGISTRY_HEALTH_SERVICE} (a "
                "replica keeps serving inference while etcd is down)",
                service != REGISTRY_HEALTH_SERVICE,
                f"{kind}.grpc.service={service!r}")

    timeout_text = flag_value(args, "registry_startup_timeout")
    if timeout_text is not None:
        timeout = parse_duration(timeout_text)
        budget = probe_budget(server.get("startupProbe") or {})
        c.check(f"{tag}: --registry_startup_timeout parses and fits in the "
                f"startupProbe's {budget:g}s",
                timeout is not None and 0 < timeout < budget,
                f"--registry_startup_timeout={timeout_text}")

    # TLS and authentication, and where each file comes from.
    ca = flag_value(args, "etcd_ca")
    cert, key = flag_value(args, "etcd_cert"), flag_value(args, "etcd_key")
    user = flag_value(args, "etcd_user")
    password = flag_value(args, "etcd_password_file")
    c.check(f"{tag}: TLS to etcd (--etcd_ca)", bool(ca))
    c.check(f"{tag}: --etcd_cert and --etcd_key together",
            bool(cert) == bool(key), f"--etcd_cert={cert} --etcd_key={key}")
    c.check(f"{tag}: --etcd_user and --etcd_password_file together",
            bool(user) == bool(password),
            f"--etcd_user={user} --etcd_password_file={password}")
    c.check(f"{tag}: etcd authentication (a client certificate or a user "
            "and password)", bool(cert and key) or bool(user and password))
    admin = flag_value(args, "admin_token_file")
    c.check(f"{tag}: --admin_token_file (the admin API changes the shared "
            "registry; without it every call is refused)", bool(admin))
    for flag in ETCD_FLAGS + ("admin_token_file",):
        path = flag_value(args, flag)
        if not path or flag == "etcd_user":
            continue
        secret, _, why = secret_file(mounts, volumes, path)
        c.check(f"{tag}: --{flag}={path} is mounted read-only from a "
                "Secret", secret is not None, why)

    if not etcd_objects:
        c.check(f"{tag}: --registry lists at least one etcd endpoint",
                len(hosts) >= 1, registry)
        return
    check_etcd_cluster(c, tag, etcd_objects, namespace, hosts,
                       bool(cert and key))


def check_etcd_cluster(c, tag, objects, namespace, registry_hosts,
                       skipserve_has_client_cert):
    kinds = {}
    for o in objects:
        kinds.setdefault(o.get("kind"), []).append(o)
    sets = kinds.get("StatefulSet", [])
    if not c.check(f"{tag}: one etcd StatefulSet", len(sets) == 1,
                   f"found {len(sets)}"):
        return
    sts = sets[0]
    sts_name = sts["metadata"]["name"]
    spec = sts["spec"]
    replicas = spec.get("replicas", 1)
    c.check(f"{tag}: etcd StatefulSet has 3 replicas", replicas == 3,
            f"replicas: {replicas}")
    c.check(f"{tag}: etcd member count is odd", replicas % 2 == 1,
            f"replicas: {replicas}")
    c.check(f"{tag}: etcd podManagementPolicy Parallel (all members start "
            "together to form the first quorum)",
            spec.get("podManagementPolicy") == "Parallel",
            f"podManagementPolicy: {spec.get('podManagementPolicy')}")
    tmpl = spec["template"]
    pod = tmpl["spec"]
    pod_labels = tmpl.get("metadata", {}).get("labels", {})
    c.check(f"{tag}: etcd selector matches its pod labels",
            labels_match(spec.get("selector", {}).get("matchLabels"),
                         pod_labels))
    containers = pod.get("containers", []) or []
    etcd = next((x for x in containers if x.get("name") == "etcd"),
                containers[0] if containers else None)
    if not c.check(f"{tag}: an etcd container", etcd is not None):
        return
    args = [str(a) for a in (etcd.get("command", []) or [])[1:] +
            (etcd.get("args", []) or [])]
    ports = {p.get("name"): p.get("containerPort")
             for p in etcd.get("ports", []) or []}
    client_port, peer_port = ports.get("client"), ports.get("peer")
    c.check(f"{tag}: etcd container ports 'client' and 'peer'",
            client_port is not None and peer_port is not None,
            f"ports {ports}")
    image = str(etcd.get("image", ""))
    c.check(f"{tag}: etcd image pinned to a version",
            re.search(r"(:v?\d+\.\d+\.\d+|@sha256:[0-9a-f]{64})$", image)
            is not None, image)

    # Services.
    services = {s["metadata"]["name"]: s for s in kinds.get("Service", [])}
    headless_name = spec.get("serviceName")
    headless = services.get(headless_name)
    if c.check(f"{tag}: etcd serviceName {headless_name} is a headless "
               "Service of the rendering",
               headless is not None and
               headless["spec"].get("clusterIP") == "None"):
        c.check(f"{tag}: etcd headless Service publishes members before "
                "they are ready (they must find each other first)",
                headless["spec"].get("publishNotReadyAddresses") is True)
    for sname, svc in services.items():
        c.check(f"{tag}: Service {sname} selects the etcd pods",
                labels_match(svc["spec"].get("selector"), pod_labels),
                f"selector {svc['spec'].get('selector')}")
        for p in svc["spec"].get("ports", []):
            target = p.get("targetPort", p.get("port"))
            c.check(f"{tag}: Service {sname} port {p.get('name')} targets an "
                    "etcd container port",
                    target in ports or target in ports.values(),
                    f"targetPort {target}")

    def service_port_to(svc, container_port):
        for p in svc["spec"].get("ports", []):
            target = p.get("targetPort", p.get("port"))
            if ports.get(target, target) == container_port:
                return p.get("port")
        return None

    clients = {n: s for n, s in services.items()
               if s["spec"].get("clusterIP") != "None" and
               service_port_to(s, client_port) is not None}
    c.check(f"{tag}: an etcd client Service (ClusterIP) on the client port",
            len(clients) >= 1, f"services {sorted(services)}")

    # --initial-cluster and the URLs each member advertises.
    member_names = [f"{sts_name}-{i}" for i in range(replicas)]
    dns = {m: in_namespace_host(f"{m}.{headless_name}", namespace)
           for m in member_names}
    initial = flag_value(args, "initial-cluster") or ""
    entries = [e.partition("=") for e in initial.split(",") if e]
    members = {}
    for mname, _, url in entries:
        members.setdefault(mname, []).append(url)
    count = len(members)
    c.check(f"{tag}: --initial-cluster has an odd number of members",
            count % 2 == 1, f"{count} members: {sorted(members)}")
    c.check(f"{tag}: --initial-cluster names the {replicas} StatefulSet pods "
            f"{sts_name}-0..{replicas - 1}",
            sorted(members) == sorted(member_names),
            f"members {sorted(members)}")
    for mname, urls in sorted(members.items()):
        for url in urls:
            u = parse_url(url)
            c.check(f"{tag}: --initial-cluster {mname} is "
                    f"https://{mname}.{headless_name}:{peer_port}",
                    u is not None and u[0] == "https" and mname in dns and
                    dns[mname].match(u[1]) is not None and u[2] == peer_port,
                    url)

    def per_member(flag, want_port):
        value = flag_value(args, flag) or ""
        c.check(f"{tag}: --{flag} is https://$(POD_NAME).{headless_name}:"
                f"{want_port}",
                "$(POD_NAME)" in value and all(
                    (lambda u: u is not None and u[0] == "https" and
                     dns[m].match(u[1]) is not None and u[2] == want_port)(
                        parse_url(value.replace("$(POD_NAME)", m)))
                    for m in member_names), f"--{flag}={value}")
        return value

    advertised = per_member("initial-advertise-peer-urls", peer_port)
    for m in member_names:
        if m in members:
            c.check(f"{tag}: {m} advertises the peer URL --initial-cluster "
                    "gives it", advertised.replace("$(POD_NAME)", m) in
                    members[m], f"{advertised} vs {members[m]}")
    per_member("advertise-client-urls", client_port)
    env = {e.get("name"): e for e in etcd.get("env", []) or []}
    c.check(f"{tag}: --name=$(POD_NAME), POD_NAME from metadata.name",
            flag_value(args, "name") == "$(POD_NAME)" and
            ((env.get("POD_NAME") or {}).get("valueFrom") or {}).get(
                "fieldRef", {}).get("fieldPath") == "metadata.name",
            f"--name={flag_value(args, 'name')}")
    for flag, port in (("listen-peer-urls", peer_port),
                       ("listen-client-urls", client_port)):
        urls = [parse_url(u) for u in (flag_value(args, flag) or "").split(
            ",")]
        c.check(f"{tag}: --{flag} is https on port {port}",
                urls and all(u is not None and u[0] == "https" and
                             u[2] == port for u in urls),
                f"--{flag}={flag_value(args, flag)}")
    c.check(f"{tag}: --initial-cluster-state=new",
            flag_value(args, "initial-cluster-state") == "new")
    c.check(f"{tag}: --initial-cluster-token",
            bool(flag_value(args, "initial-cluster-token")))

    # The hosts skipserve's --registry names.
    allowed = []
    for sname, svc in clients.items():
        allowed.append((in_namespace_host(sname, namespace),
                        service_port_to(svc, client_port), sname))
    for m in member_names:
        allowed.append((dns[m], client_port, m))
    for host, port in registry_hosts:
        hit = next((a for a in allowed if a[0].match(host)), None)
        c.check(f"{tag}: --registry host {host}:{port} is the etcd client "
                "Service (or a member) on its client port",
                hit is not None and hit[1] == port,
                f"client Services {sorted(clients)} ports "
                f"{[service_port_to(s, client_port) for s in clients.values()]}"
                f", members {member_names} port {client_port}")
    c.check(f"{tag}: --registry lists at least one etcd endpoint",
            len(registry_hosts) >= 1)

    # TLS: both ports, client certificates required, files from a Secret.
    volumes = {v["name"]: v for v in pod.get("volumes", []) or []}
    mounts = etcd.get("volumeMounts", []) or []
    for flag in ("client-cert-auth", "peer-client-cert-auth"):
        value = bool_flag(args, flag)
        c.check(f"{tag}: etcd --{flag}", value is True,
                f"--{flag}: {value}")
    c.check(f"{tag}: skipserve has a client certificate for "
            "--client-cert-auth (--etcd_cert, --etcd_key)",
            skipserve_has_client_cert)
    for flag in ("trusted-ca-file", "cert-file", "key-file",
                 "peer-trusted-ca-file", "peer-cert-file", "peer-key-file"):
        path = flag_value(args, flag)
        if not c.check(f"{tag}: etcd --{flag}", bool(path)):
            continue
        secret, _, why = secret_file(mounts, volumes, path)
        c.check(f"{tag}: etcd --{flag}={path} is mounted read-only from a "
                "Secret", secret is not None, why)

    # Compaction, data, resources, placement, security, probes.
    mode = flag_value(args, "auto-compaction-mode") or "periodic"
    retention = flag_value(args, "auto-compaction-retention")
    if mode == "revision":
        ok = retention is not None and retention.isdigit() and \
            int(retention) > 0
    else:
        seconds = (float(retention) * 3600 if retention and
                   re.fullmatch(r"\d+(\.\d+)?", retention)
                   else parse_duration(retention) if retention else None)
        ok = mode == "periodic" and seconds is not None and seconds > 0
    c.check(f"{tag}: etcd --auto-compaction-retention (mode {mode})", ok,
            f"--auto-compaction-retention={retention}")
    data_dir = flag_value(args, "data-dir") or ""
    m = mount_for_path(mounts, data_dir)
    templates = {t["metadata"]["name"] for t in
                 spec.get("volumeClaimTemplates", []) or []}
    c.check(f"{tag}: etcd --data-dir is on a volumeClaimTemplate",
            m is not None and m.get("name") in templates and
            not m.get("readOnly"), f"--data-dir={data_dir}, mount {m}")
    res = etcd.get("resources", {}) or {}
    requests = res.get("requests", {}) or {}
    limits = res.get("limits", {}) or {}
    for r in ("cpu", "memory"):
        c.check(f"{tag}: etcd resource request {r}",
                parse_quantity(requests.get(r)) not in (None, 0),
                f"requests {requests}")
    c.check(f"{tag}: etcd memory limit >= request",
            parse_quantity(limits.get("memory")) not in (None, 0) and
            parse_quantity(limits["memory"]) >=
            (parse_quantity(requests.get("memory")) or 0), f"limits {limits}")
    anti = ((pod.get("affinity") or {}).get("podAntiAffinity") or {})
    terms = list(anti.get("requiredDuringSchedulingIgnoredDuringExecution")
                 or []) + [t.get("podAffinityTerm", {}) for t in anti.get(
                     "preferredDuringSchedulingIgnoredDuringExecution") or []]
    c.check(f"{tag}: etcd members avoid sharing a node (podAntiAffinity on "
            "kubernetes.io/hostname)", any(
                t.get("topologyKey") == "kubernetes.io/hostname" and
                labels_match((t.get("labelSelector") or {}).get(
                    "matchLabels"), pod_labels) for t in terms),
            f"podAntiAffinity {anti}")
    psc = pod.get("securityContext", {}) or {}
    csc = etcd.get("securityContext", {}) or {}
    c.check(f"{tag}: etcd runAsNonRoot",
            csc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True)
    c.check(f"{tag}: etcd readOnlyRootFilesystem",
            csc.get("readOnlyRootFilesystem") is True)
    c.check(f"{tag}: etcd allowPrivilegeEscalation false",
            csc.get("allowPrivilegeEscalation") is False)
    c.check(f"{tag}: etcd capabilities drop ALL",
            "ALL" in ((csc.get("capabilities") or {}).get("drop") or []))
    metrics = [parse_url(u) for u in (flag_value(args, "listen-metrics-urls")
                                      or "").split(",") if u]
    http_ports = {u[2] for u in metrics if u and u[0] == "http"}
    for kind in ("livenessProbe", "readinessProbe"):
        probe = etcd.get(kind) or {}
        port = (probe.get("httpGet") or {}).get("port")
        port = ports.get(port, port)
        c.check(f"{tag}: etcd {kind} asks /health over the plain-HTTP "
                "--listen-metrics-urls port",
                port in http_ports and str((probe.get("httpGet") or {}).get(
                    "path", "")).startswith("/health"),
                f"{kind} {probe}, metrics URLs {metrics}")

    # Disruptions: never below a quorum.
    pdbs = kinds.get("PodDisruptionBudget", [])
    quorum = replicas // 2 + 1
    if c.check(f"{tag}: one etcd PodDisruptionBudget", len(pdbs) == 1):
        pdb = pdbs[0]
        c.check(f"{tag}: etcd PDB is policy/v1",
                pdb.get("apiVersion") == "policy/v1")
        c.check(f"{tag}: etcd PDB minAvailable {quorum} (the quorum of "
                f"{replicas})", pdb["spec"].get("minAvailable") == quorum,
                f"minAvailable: {pdb['spec'].get('minAvailable')}")
        c.check(f"{tag}: etcd PDB selector matches the etcd pods",
                labels_match(pdb["spec"].get("selector", {}).get(
                    "matchLabels"), pod_labels))


def check_k8s(c, root):
    k8s = os.path.join(root, "deploy", "k8s")
    base_policies = os.path.join(k8s, "base", "policies.json")
    if os.path.exists(base_policies):
        with open(base_policies, encoding="utf-8") as f, \
                open(os.path.join(root, "deploy", "policies.json"),
                     encoding="utf-8") as g:
            c.check("k8s: base/policies.json equals deploy/policies.json",
                    json.load(f) == json.load(g))
    overlays_dir = os.path.join(k8s, "overlays")
    overlays = sorted(d for d in os.listdir(overlays_dir)
                      if os.path.isdir(os.path.join(overlays_dir, d))) \
        if os.path.isdir(overlays_dir) else []
    c.check("k8s: overlays cpu and gpu exist",
            {"cpu", "gpu"} <= set(overlays), f"overlays {overlays}")
    c.check("k8s: overlays etcd and etcd-external exist (the policy "
            "registry in etcd)", {"etcd", "etcd-external"} <= set(overlays),
            f"overlays {overlays}")
    for name in overlays:
        directory = os.path.join(overlays_dir, name)
        try:
            objects, generated = kustomize(directory)
        except (KustomizeError, KeyError, TypeError, ValueError, OSError,
                IndexError, yaml.YAMLError) as e:
            c.fail(f"k8s/{name}: renders", f"{type(e).__name__}: {e}")
            continue
        c.check(f"k8s/{name}: renders", True)
        try:
            external, tool = external_kustomize(directory)
        except KustomizeError as e:
            c.fail(f"k8s/{name}: renders with kustomize/kubectl", str(e))
            external, tool = None, None
        if external is not None:
            mine = by_key(objects)
            theirs = by_key(unhash_configmaps(external, generated))
            diff = sorted(f"{k[0]}/{k[1]}" for k in set(mine) | set(theirs)
                          if mine.get(k) != theirs.get(k))
            c.check(f"k8s/{name}: this rendering equals {tool}'s", not diff,
                    f"differs in {diff}")
        elif tool:
            print(f"SKIP  k8s/{name}: no external rendering ({tool})")
        try:
            mine, etcd_objects = split_etcd_objects(objects)
            check_overlay(c, root, name, mine, generated)
            check_registry(c, name, mine, etcd_objects)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            c.fail(f"k8s/{name}: well-formed objects",
                   f"{type(e).__name__}: {e}")


# --------------------------------------------------------------------------
# Dockerfiles


def dockerfile_instructions(path):
    """[(INSTRUCTION, text)] with continuations joined and comments
    dropped."""
    out, current = [], ""
    with open(path, encoding="utf-8") as f:
        for raw in f:
            line = raw.rstrip("\n")
            if line.lstrip().startswith("#"):
                continue
            if line.rstrip().endswith("\\"):
                current += line.rstrip()[:-1] + " "
                continue
            current += line
            if current.strip():
                word, _, rest = current.strip().partition(" ")
                out.append((word.upper(), rest.strip()))
            current = ""
    if current.strip():
        word, _, rest = current.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def exec_form(text):
    """A JSON exec form as a list, else the shell form split on spaces."""
    try:
        value = json.loads(text)
        if isinstance(value, list):
            return [str(v) for v in value]
    except json.JSONDecodeError:
        pass
    return text.split()


def dockerignore_patterns(root):
    path = os.path.join(root, ".dockerignore")
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [l.strip() for l in f if l.strip() and
                not l.strip().startswith("#")]


def _dockerignore_regex(pattern):
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r"\Z")


def ignored(rel, patterns):
    """Whether .dockerignore patterns exclude rel (or a folder above it)."""
    result = False
    parts = rel.strip("/").split("/")
    for p in patterns:
        negate = p.startswith("!")
        regex = _dockerignore_regex(p.lstrip("!").strip("/"))
        if any(regex.match("/".join(parts[:i + 1]))
               for i in range(len(parts))):
            result = not negate
    return result


def check_dockerfile(c, root, path):
    tag = os.path.relpath(path, root)
    try:
        instrs = dockerfile_instructions(path)
    except OSError as e:
        c.fail(f"{tag}: readable", str(e))
        return
    froms = [(i, rest) for i, (word, rest) in enumerate(instrs)
             if word == "FROM"]
    c.check(f"{tag}: multi-stage (2+ FROM)", len(froms) >= 2,
            f"{len(froms)} FROM")
    if not froms:
        return
    stages = [re.split(r"\s+[aA][sS]\s+", rest)[-1].strip()
              for _, rest in froms if re.search(r"\s[aA][sS]\s", rest)]
    final = instrs[froms[-1][0]:]

    def final_all(word):
        return [rest for w, rest in final if w == word]

    users = final_all("USER")
    user = users[-1].split(":")[0] if users else "root"
    c.check(f"{tag}: final stage runs as a non-root USER",
            user not in ("root", "0", ""), f"USER {user}")
    c.check(f"{tag}: USER is uid {IMAGE_UID} (the manifests' runAsUser)",
            user == str(IMAGE_UID), f"USER {user}")
    health = final_all("HEALTHCHECK")
    c.check(f"{tag}: HEALTHCHECK", bool(health) and
            not health[-1].upper().startswith("NONE"))
    if health:
        cmd = health[-1].split("CMD", 1)[-1]
        c.check(f"{tag}: HEALTHCHECK asks the server (skipserve info on "
                f"{DEFAULT_GRPC_PORT})",
                "info" in exec_form(cmd.strip()) and
                f":{DEFAULT_GRPC_PORT}" in cmd, cmd.strip())
    exposed = " ".join(final_all("EXPOSE")).split()
    exposed = {e.split("/")[0] for e in exposed}
    for port in (DEFAULT_GRPC_PORT, DEFAULT_METRICS_PORT):
        c.check(f"{tag}: EXPOSE {port}", str(port) in exposed,
                f"EXPOSE {sorted(exposed)}")
    entry = exec_form(final_all("ENTRYPOINT")[-1]) \
        if final_all("ENTRYPOINT") else []
    c.check(f"{tag}: ENTRYPOINT is skipserve-server --host=0.0.0.0",
            bool(entry) and entry[0].endswith("skipserve-server") and
            "--host=0.0.0.0" in entry, f"ENTRYPOINT {entry}")
    cmd = exec_form(final_all("CMD")[-1]) if final_all("CMD") else []
    model = flag_value(cmd, "model")
    c.check(f"{tag}: the default --model is the image's default model",
            model == "/opt/skipserve/models/default", f"CMD {cmd}")
    copies = [rest for w, rest in instrs if w == "COPY"]
    c.check(f"{tag}: the build's default model is copied into the image",
            any("models/default" in r for r in copies) or any(
                "build/models/default" in rest and
                "/opt/skipserve/models" in rest
                for w, rest in instrs if w == "RUN"))
    for rest in copies:
        m = re.search(r"--from=(\S+)", rest)
        if m:
            c.check(f"{tag}: COPY --from={m.group(1)} names a stage",
                    m.group(1) in stages or m.group(1).isdigit(),
                    f"stages {stages}")
            continue
        words = [w for w in exec_form(rest) if not w.startswith("--")]
        patterns = dockerignore_patterns(root)
        for src in words[:-1]:
            src = src.rstrip("/") or "."
            c.check(f"{tag}: COPY source {src} exists and is not "
                    ".dockerignored",
                    src == "." or (os.path.exists(os.path.join(root, src))
                                   and not ignored(src, patterns)))
    # Repository files that RUN steps use (docker/..., scripts/...).
    for w, rest in instrs:
        if w != "RUN":
            continue
        for ref in re.findall(r"(?<![\w/.-])((?:docker|scripts|deploy)/"
                              r"[\w./-]+)", rest):
            c.check(f"{tag}: RUN uses {ref}, which exists",
                    os.path.exists(os.path.join(root, ref)))
    if os.path.exists(os.path.join(root, ".dockerignore")):
        patterns = dockerignore_patterns(root)
        c.check(f"{tag}: .dockerignore keeps build trees out of the context",
                ignored("build", patterns) and ignored("build-x", patterns)
                and ignored(".git", patterns))
    else:
        c.fail(f"{tag}: .dockerignore exists", "missing")


# --------------------------------------------------------------------------
# docker-compose


def compose_binds(service, compose_dir):
    """[(host path, container path)] of a service's bind mounts."""
    out = []
    for v in service.get("volumes", []) or []:
        if isinstance(v, str):
            parts = v.split(":")
            if len(parts) >= 2 and (parts[0].startswith((".", "/", "~"))):
                out.append((os.path.normpath(os.path.join(compose_dir,
                                                          parts[0])),
                            parts[1]))
        elif isinstance(v, dict) and v.get("type") == "bind":
            out.append((os.path.normpath(os.path.join(compose_dir,
                                                      v["source"])),
                        v["target"]))
    return out


def host_path(binds, container_path):
    """The host path that a container path comes from, through binds."""
    best = None
    for host, target in binds:
        t = target.rstrip("/")
        if container_path == t or container_path.startswith(t + "/"):
            if best is None or len(t) > len(best[1]):
                best = (host, t)
    if best is None:
        return None
    return best[0] + container_path[len(best[1]):]


def check_compose_file(c, root, path, main):
    tag = os.path.relpath(path, root)
    compose_dir = os.path.dirname(path)
    with open(path, encoding="utf-8") as f:
        doc = yaml.safe_load(f) or {}
    services = doc.get("services", {}) or {}
    named_volumes = set((doc.get("volumes") or {}).keys())
    if main:
        for s in ("skipserve", "prometheus", "grafana"):
            c.check(f"{tag}: service {s}", s in services)

    for sname, svc in services.items():
        build = svc.get("build")
        if build is not None:
            if isinstance(build, str):
                build = {"context": build}
            context = os.path.normpath(os.path.join(compose_dir,
                                                    build.get("context", ".")))
            dockerfile = os.path.join(context, build.get("dockerfile",
                                                         "Dockerfile"))
            c.check(f"{tag}: {sname} build context exists",
                    os.path.isdir(context), context)
            c.check(f"{tag}: {sname} Dockerfile "
                    f"{os.path.relpath(dockerfile, root)} exists",
                    os.path.isfile(dockerfile))
        for v in svc.get("volumes", []) or []:
            source = v.split(":")[0] if isinstance(v, str) else v.get(
                "source", "")
            if isinstance(v, str) and ":" not in v:
                continue
            if source.startswith((".", "/", "~")):
                host = os.path.normpath(os.path.join(compose_dir, source))
                c.check(f"{tag}: {sname} mounts {source}, which exists",
                        os.path.exists(host) and _inside(root, host),
                        host)
            else:
                c.check(f"{tag}: {sname} volume {source} is declared",
                        source in named_volumes)

    if "skipserve" in services:
        svc = services["skipserve"]
        grace = parse_duration(svc.get("stop_grace_period", "10s"))
        command = [str(x) for x in (svc.get("command") or [])] \
            if isinstance(svc.get("command"), list) else \
            str(svc.get("command") or "").split()
        drain_text = flag_value(command, "drain_timeout")
        drain = parse_duration(drain_text) if drain_text else \
            DEFAULT_DRAIN_SECONDS
        if main or "stop_grace_period" in svc:
            c.check(f"{tag}: skipserve stop_grace_period >= drain "
                    f"{drain:g}s + {GRACE_MARGIN_SECONDS:g}s",
                    grace is not None and grace >= drain +
                    GRACE_MARGIN_SECONDS, f"{svc.get('stop_grace_period')}")
        if not main:
            devices = (((svc.get("deploy") or {}).get("resources") or {})
                       .get("reservations") or {}).get("devices") or []
            if "cuda" in os.path.basename(path):
                c.check(f"{tag}: skipserve reserves a GPU", any(
                    "gpu" in (d.get("capabilities") or []) for d in devices))
    if not main:
        return

    # Prometheus: its config and rules, as the container sees them.
    prom = services.get("prometheus", {})
    c.check(f"{tag}: prometheus image is prom/prometheus",
            str(prom.get("image", "")).startswith("prom/prometheus"))
    binds = compose_binds(prom, compose_dir)
    config = host_path(binds, "/etc/prometheus/prometheus.yml")
    if c.check(f"{tag}: prometheus gets /etc/prometheus/prometheus.yml from "
               "the repo", config and os.path.isfile(config), str(config)):
        with open(config, encoding="utf-8") as f:
            pconf = yaml.safe_load(f) or {}
        targets = [t for sc in pconf.get("scrape_configs", []) or []
                   for st in sc.get("static_configs", []) or []
                   for t in st.get("targets", []) or []]
        want = f"skipserve:{DEFAULT_METRICS_PORT}"
        c.check(f"{tag}: prometheus scrapes {want}", want in targets,
                f"targets {targets}")
        for rule in pconf.get("rule_files", []) or []:
            cpath = rule if rule.startswith("/") else \
                "/etc/prometheus/" + rule
            hpath = host_path(binds, cpath)
            c.check(f"{tag}: prometheus rule_files {rule} is mounted",
                    hpath is not None and bool(glob.glob(hpath)), str(hpath))

    # Grafana: provisioning, dashboards, anonymous viewers.
    graf = services.get("grafana", {})
    c.check(f"{tag}: grafana image is grafana/grafana-oss",
            str(graf.get("image", "")).startswith("grafana/grafana-oss"))
    env = graf.get("environment") or {}
    if isinstance(env, list):
        env = dict(e.split("=", 1) for e in env)
    c.check(f"{tag}: grafana anonymous Viewer access",
            str(env.get("GF_AUTH_ANONYMOUS_ENABLED")).lower() == "true" and
            env.get("GF_AUTH_ANONYMOUS_ORG_ROLE") == "Viewer")
    gbinds = compose_binds(graf, compose_dir)
    prov = host_path(gbinds, "/etc/grafana/provisioning")
    dash = host_path(gbinds, "/var/lib/grafana/dashboards")
    c.check(f"{tag}: grafana provisioning mounted at "
            "/etc/grafana/provisioning", prov and os.path.isdir(prov))
    c.check(f"{tag}: grafana dashboards mounted at "
            "/var/lib/grafana/dashboards", dash and os.path.isdir(dash))
    if prov and os.path.isdir(prov):
        urls = []
        for f in glob.glob(os.path.join(prov, "datasources", "*.y*ml")):
            for d in load_yaml_docs(f):
                urls += [ds.get("url", "") for ds in d.get("datasources", [])
                         or [] if ds.get("type") == "prometheus"]
        c.check(f"{tag}: a provisioned Prometheus data source reaches the "
                "prometheus service",
                any(re.match(r"https?://prometheus:9090/?$", u)
                    for u in urls), f"urls {urls}")
        paths = []
        for f in glob.glob(os.path.join(prov, "dashboards", "*.y*ml")):
            for d in load_yaml_docs(f):
                paths += [(p.get("options") or {}).get("path", "")
                          for p in d.get("providers", []) or []]
        found = [host_path(gbinds, p) for p in paths]
        c.check(f"{tag}: a dashboard provider reads mounted dashboard JSON",
                any(h and glob.glob(os.path.join(h, "**", "*.json"),
                                    recursive=True) for h in found),
                f"provider paths {paths}")
    home = env.get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
    if home:
        h = host_path(gbinds, home)
        c.check(f"{tag}: grafana home dashboard {home} is mounted",
                h is not None and os.path.isfile(h), str(h))


# --------------------------------------------------------------------------


def check_parse_all(c, root):
    for top in ("deploy", "docker"):
        for dirpath, dirnames, filenames in os.walk(os.path.join(root, top)):
            dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
            for fn in sorted(filenames):
                path = os.path.join(dirpath, fn)
                rel = os.path.relpath(path, root)
                try:
                    if fn.endswith((".yaml", ".yml")):
                        docs = load_yaml_docs(path)
                        c.check(f"parse {rel} ({len(docs)} YAML document"
                                f"{'' if len(docs) == 1 else 's'})",
                                len(docs) >= 1, "empty")
                    elif fn.endswith(".json"):
                        with open(path, encoding="utf-8") as f:
                            json.load(f)
                        c.check(f"parse {rel} (JSON)", True)
                except (yaml.YAMLError, json.JSONDecodeError,
                        UnicodeDecodeError) as e:
                    c.fail(f"parse {rel}", str(e).replace("\n", " "))


def main(argv):
    if len(argv) != 2:
        print(__doc__)
        return 2
    root = os.path.realpath(argv[1])
    c = Checks()
    check_parse_all(c, root)
    if c.failed:
        print(f"{c.passed} passed, {c.failed} failed")
        return 1
    check_k8s(c, root)
    dockerfiles = sorted(glob.glob(os.path.join(root, "docker",
                                                "Dockerfile*")))
    names = {os.path.basename(p) for p in dockerfiles}
    c.check("docker: Dockerfile.cpu and Dockerfile.cuda exist",
            {"Dockerfile.cpu", "Dockerfile.cuda"} <= names, f"{names}")
    for path in dockerfiles:
        check_dockerfile(c, root, path)
    compose = os.path.join(root, "docker", "docker-compose.yml")
    if c.check("docker: docker-compose.yml exists", os.path.exists(compose)):
        check_compose_file(c, root, compose, main=True)
    for extra in sorted(glob.glob(os.path.join(root, "docker",
                                               "docker-compose.*.yml"))):
        check_compose_file(c, root, extra, main=False)
    print(f"{c.passed} passed, {c.failed} failed")
    return 1 if c.failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
