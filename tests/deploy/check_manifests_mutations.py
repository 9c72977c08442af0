#!/usr/bin/python3
"""Proves that check_manifests.py can fail: copies the deployment files
(deploy/, docker/, .dockerignore, scripts/) into a temporary directory,
checks that the copy passes, then breaks one thing at a time and expects the
checker to exit non-zero with a FAIL line naming that thing.

    /usr/bin/python3 tests/deploy/check_manifests_mutations.py <repo root>

Prints one line per mutation and `N passed, M failed`; exits 1 on failure.
"""

import os
import shutil
import subprocess
import sys
import tempfile

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
CHECKER = os.path.join(HERE, "check_manifests.py")
COPIED = ("deploy", "docker", "scripts", ".dockerignore")


def yaml_edit(rel, fn):
    """A mutation that edits the YAML documents of rel (comments are lost,
    which the checker does not mind)."""
    def apply(root):
        path = os.path.join(root, rel)
        with open(path, encoding="utf-8") as f:
            docs = [d for d in yaml.safe_load_all(f) if d is not None]
        fn(docs)
        with open(path, "w", encoding="utf-8") as f:
            yaml.safe_dump_all(docs, f, sort_keys=False)
    return apply


def text_edit(rel, old, new):
    def apply(root):
        path = os.path.join(root, rel)
        with open(path, encoding="utf-8") as f:
            text = f.read()
        if old not in text:
            raise AssertionError(f"{rel} no longer contains {old!r}: update "
                                 "this mutation")
        with open(path, "w", encoding="utf-8") as f:
            f.write(text.replace(old, new))
    return apply


def container(docs, kind="Deployment"):
    dep = next(d for d in docs if d["kind"] == kind)
    return dep["spec"]["template"]["spec"]["containers"][0]


def pod(docs, kind="Deployment"):
    return next(d for d in docs if d["kind"] == kind)[
        "spec"]["template"]["spec"]


def of_kind(kind, name=None):
    def get(docs):
        return next(d for d in docs if d["kind"] == kind and (
            name is None or d["metadata"]["name"] == name))
    return get


def drop_op(pred):
    """Removes the JSON-patch operations (of a patch file's only document)
    for which pred(op) holds; at least one must."""
    def edit(docs):
        ops = docs[0]
        keep = [op for op in ops if not pred(op)]
        if len(keep) == len(ops):
            raise AssertionError("no JSON-patch operation matched: update "
                                 "this mutation")
        ops[:] = keep
    return edit


def op_value(op):
    return op.get("value") if isinstance(op.get("value"), str) else None


def add_ops(*new_ops):
    def edit(docs):
        docs[0].extend(new_ops)
    return edit


def secret_items(docs, volume):
    """The `items` of the Secret volume a JSON patch adds."""
    op = next(op for op in docs[0] if isinstance(op.get("value"), dict)
              and op["value"].get("name") == volume and "secret" in
              op["value"])
    return op["value"]["secret"]["items"]


def sts_items(docs):
    return next(v for v in pod(docs, "StatefulSet")["volumes"]
                if v["name"] == "tls")["secret"]["items"]


DEP = "deploy/k8s/base/deployment.yaml"
SVC = "deploy/k8s/base/service.yaml"
CPU_PATCH = "deploy/k8s/overlays/cpu/deployment-patch.yaml"
STS = "deploy/k8s/overlays/etcd/etcd-statefulset.yaml"
ETCD_SVC = "deploy/k8s/overlays/etcd/etcd-service.yaml"
ETCD_PDB = "deploy/k8s/overlays/etcd/etcd-pdb.yaml"
ETCD_PATCH = "deploy/k8s/overlays/etcd/deployment-patch.yaml"
EXT_PATCH = "deploy/k8s/overlays/etcd-external/deployment-patch.yaml"
ARGS = "/spec/template/spec/containers/0/args/-"

# (description, mutation, text expected in a FAIL line)
MUTATIONS = [
    ("GPU limit removed from the base",
     yaml_edit(DEP, lambda d: container(d)["resources"]["limits"].pop(
         "nvidia.com/gpu")),
     "k8s/gpu: GPU limit"),
    ("the cpu overlay keeps the GPU limit",
     yaml_edit(CPU_PATCH, lambda d: container(d)["resources"]["limits"].pop(
         "nvidia.com/gpu")),
     "k8s/cpu: no GPU requested"),
    ("the cpu overlay keeps --device=cuda",
     text_edit(CPU_PATCH, "--device=cpu", "--device=cuda"),
     "k8s/cpu: --device=cpu"),
    ("grace period shorter than the drain",
     yaml_edit(DEP, lambda d: pod(d).update(terminationGracePeriodSeconds=30)),
     "terminationGracePeriodSeconds >="),
    ("drain longer than the grace period",
     text_edit(DEP, "--drain_timeout=30s", "--drain_timeout=1m"),
     "k8s/gpu: terminationGracePeriodSeconds >="),
    ("readiness probe on the wrong port",
     yaml_edit(DEP, lambda d: container(d)["readinessProbe"]["grpc"].update(
         port=9090)),
     "readinessProbe uses gRPC health"),
    ("liveness probe over HTTP",
     yaml_edit(DEP, lambda d: container(d).update(livenessProbe={
         "httpGet": {"path": "/metrics", "port": 9090}})),
     "livenessProbe uses gRPC health"),
    ("no startup probe",
     yaml_edit(DEP, lambda d: container(d).pop("startupProbe")),
     "startupProbe uses gRPC health"),
    ("startup probe too short for a 7B model",
     yaml_edit(DEP, lambda d: container(d)["startupProbe"].update(
         failureThreshold=3)),
     "startupProbe allows"),
    ("runAsNonRoot false",
     yaml_edit(DEP, lambda d: (container(d)["securityContext"].update(
         runAsNonRoot=False))),
     "runAsNonRoot"),
    ("writable root filesystem",
     yaml_edit(DEP, lambda d: container(d)["securityContext"].update(
         readOnlyRootFilesystem=False)),
     "readOnlyRootFilesystem"),
    ("privilege escalation allowed",
     yaml_edit(DEP, lambda d: container(d)["securityContext"].pop(
         "allowPrivilegeEscalation")),
     "allowPrivilegeEscalation false"),
    ("capabilities kept",
     yaml_edit(DEP, lambda d: container(d)["securityContext"].pop(
         "capabilities")),
     "capabilities drop ALL"),
    ("no cpu request",
     yaml_edit(DEP, lambda d: container(d)["resources"]["requests"].pop(
         "cpu")),
     "k8s/gpu: resource request cpu"),
    # (Leaving `memory` out of the patch keeps the base's request; null
    # deletes it.)
    ("the cpu overlay deletes the memory request",
     yaml_edit(CPU_PATCH, lambda d: container(d)["resources"]["requests"].update(
         memory=None)),
     "k8s/cpu: resource request memory"),
    ("no headless Service",
     yaml_edit(SVC, lambda d: of_kind("Service", "skipserve-headless")(d)[
         "spec"].pop("clusterIP")),
     "a headless Service"),
    ("Service without the metrics port",
     yaml_edit(SVC, lambda d: of_kind("Service", "skipserve")(d)["spec"][
         "ports"].pop()),
     "every Service exposes 9090"),
    ("Service selecting other pods",
     yaml_edit(SVC, lambda d: of_kind("Service", "skipserve")(d)["spec"][
         "selector"].update({"app.kubernetes.io/name": "other"})),
     "Service skipserve selects the pods"),
    ("HPA aimed at another Deployment",
     yaml_edit("deploy/k8s/base/hpa.yaml", lambda d: d[0]["spec"][
         "scaleTargetRef"].update(name="other")),
     "HPA targets Deployment"),
    ("HPA on a metric the adapter does not expose",
     text_edit("deploy/k8s/base/prometheus-adapter-rules.yaml",
               'as: "skipserve_waiting_sequences"', 'as: "queue"'),
     "adapter rule exposes skipserve_waiting_sequences"),
    ("PDB selecting no pod",
     yaml_edit("deploy/k8s/base/pdb.yaml", lambda d: d[0]["spec"][
         "selector"]["matchLabels"].update({"app.kubernetes.io/component":
                                            "other"})),
     "PDB selector matches the pod labels"),
    ("ServiceMonitor on a port the Service lacks",
     yaml_edit("deploy/k8s/base/servicemonitor.yaml", lambda d: d[0]["spec"][
         "endpoints"][0].update(port="http-metrics")),
     "ServiceMonitor port 'http-metrics'"),
    ("ServiceMonitor selecting both Services (double scrapes)",
     yaml_edit("deploy/k8s/base/servicemonitor.yaml", lambda d: d[0]["spec"][
         "selector"]["matchLabels"].pop("skipserve/metrics")),
     "ServiceMonitor selects exactly one Service"),
    ("policies ConfigMap drifting from deploy/policies.json",
     text_edit("deploy/k8s/base/policies.json", "attn:last=25%",
               "attn:last=20%"),
     "policies ConfigMap (policies.json) equals deploy/policies.json"),
    ("configMapGenerator reading outside the kustomization root",
     text_edit("deploy/k8s/base/kustomization.yaml", "      - policies.json",
               "      - policies.json=../../policies.json"),
     "k8s/gpu: renders"),
    ("model volume mounted read-write",
     yaml_edit(DEP, lambda d: container(d)["volumeMounts"][0].pop(
         "readOnly")),
     "is on a read-only PVC mount"),
    ("broken YAML",
     text_edit("deploy/k8s/base/pdb.yaml", "minAvailable: 1",
               "minAvailable: [1"),
     "parse deploy/k8s/base/pdb.yaml"),
    ("Dockerfile.cpu runs as root",
     text_edit("docker/Dockerfile.cpu", "USER 10001:10001", "USER root"),
     "docker/Dockerfile.cpu: final stage runs as a non-root USER"),
    ("Dockerfile.cuda without HEALTHCHECK",
     text_edit("docker/Dockerfile.cuda", "HEALTHCHECK ", "# HEALTHCHECK "),
     "docker/Dockerfile.cuda: HEALTHCHECK"),
    ("Dockerfile.cpu without EXPOSE 50051",
     text_edit("docker/Dockerfile.cpu", "EXPOSE 50051 9090", "EXPOSE 9090"),
     "docker/Dockerfile.cpu: EXPOSE 50051"),
    ("Dockerfile.cuda single-stage",
     text_edit("docker/Dockerfile.cuda",
               "FROM nvidia/cuda:${CUDA_VERSION}-devel", "# FROM x"),
     "docker/Dockerfile.cuda: multi-stage"),
    ("Dockerfile using a script that is not there",
     text_edit("docker/Dockerfile.cpu", "docker/list-runtime-packages.sh",
               "docker/list-packages.sh"),
     "RUN uses docker/list-packages.sh, which exists"),
    ("compose mounting a file that does not exist",
     text_edit("docker/docker-compose.yml",
               "../deploy/prometheus/rules:", "../deploy/prometheus/rule:"),
     "prometheus mounts ../deploy/prometheus/rule"),
    ("compose building from a missing Dockerfile",
     text_edit("docker/docker-compose.yml", "docker/Dockerfile.cpu",
               "docker/Dockerfile"),
     "skipserve Dockerfile docker/Dockerfile exists"),
    ("compose stopping skipserve before it drains",
     text_edit("docker/docker-compose.yml", "stop_grace_period: 45s",
               "stop_grace_period: 10s"),
     "stop_grace_period >="),
    ("compose CUDA override without a GPU",
     text_edit("docker/docker-compose.cuda.yml", "capabilities: [gpu]",
               "capabilities: [utility]"),
     "skipserve reserves a GPU"),
    ("grafana without anonymous viewers",
     text_edit("docker/docker-compose.yml",
               'GF_AUTH_ANONYMOUS_ENABLED: "true"',
               'GF_AUTH_ANONYMOUS_ENABLED: "false"'),
     "grafana anonymous Viewer access"),
    (".dockerignore letting build trees in",
     text_edit(".dockerignore", "\nbuild\nbuild-*\n", "\n"),
     ".dockerignore keeps build trees out"),

    # The policy registry in etcd (overlays etcd and etcd-external).
    ("a member dropped from --initial-cluster",
     text_edit(STS, ",skipserve-etcd-2=https://skipserve-etcd-2."
               "skipserve-etcd:2380", ""),
     "k8s/etcd: --initial-cluster has an odd number of members"),
    ("etcd scaled to 4 members",
     yaml_edit(STS, lambda d: d[0]["spec"].update(replicas=4)),
     "k8s/etcd: etcd member count is odd"),
    ("etcd scaled to 5 members, --initial-cluster still lists 3",
     yaml_edit(STS, lambda d: d[0]["spec"].update(replicas=5)),
     "k8s/etcd: --initial-cluster names the 5 StatefulSet pods"),
    ("a member's peer URL on another Service",
     text_edit(STS, "skipserve-etcd-1=https://skipserve-etcd-1."
               "skipserve-etcd:2380",
               "skipserve-etcd-1=https://skipserve-etcd-1.etcd:2380"),
     "k8s/etcd: --initial-cluster skipserve-etcd-1 is"),
    ("members advertising a peer URL on the wrong port",
     text_edit(STS, "--initial-advertise-peer-urls=https://$(POD_NAME)."
               "skipserve-etcd:2380", "--initial-advertise-peer-urls="
               "https://$(POD_NAME).skipserve-etcd:2390"),
     "k8s/etcd: --initial-advertise-peer-urls is https://"),
    ("every member advertising member 0's peer URL",
     text_edit(STS, "--initial-advertise-peer-urls=https://$(POD_NAME).",
               "--initial-advertise-peer-urls=https://skipserve-etcd-0."),
     "k8s/etcd: skipserve-etcd-1 advertises the peer URL"),
    ("etcd started one member at a time (OrderedReady)",
     yaml_edit(STS, lambda d: d[0]["spec"].pop("podManagementPolicy")),
     "k8s/etcd: etcd podManagementPolicy Parallel"),
    ("etcd without client certificate authentication",
     text_edit(STS, "--client-cert-auth=true", "--client-cert-auth=false"),
     "k8s/etcd: etcd --client-cert-auth"),
    ("etcd peer key not in the TLS Secret's items",
     yaml_edit(STS, lambda d: sts_items(d).pop()),
     "k8s/etcd: etcd --peer-key-file=/etc/etcd/tls/peer.key is mounted"),
    ("etcd without auto-compaction",
     text_edit(STS, "- --auto-compaction-retention=1h\n", ""),
     "k8s/etcd: etcd --auto-compaction-retention"),
    ("etcd members allowed on one node",
     yaml_edit(STS, lambda d: pod(d, "StatefulSet").pop("affinity")),
     "k8s/etcd: etcd members avoid sharing a node"),
    ("etcd without resource requests",
     yaml_edit(STS, lambda d: container(d, "StatefulSet")["resources"].pop(
         "requests")),
     "k8s/etcd: etcd resource request cpu"),
    ("etcd image not pinned",
     text_edit(STS, "quay.io/coreos/etcd:v3.5.17", "quay.io/coreos/etcd"),
     "k8s/etcd: etcd image pinned"),
    ("etcd headless Service hiding members that are not ready",
     yaml_edit(ETCD_SVC, lambda d: of_kind("Service", "skipserve-etcd")(d)[
         "spec"].update(publishNotReadyAddresses=False)),
     "k8s/etcd: etcd headless Service publishes members"),
    ("etcd PDB letting two members go",
     yaml_edit(ETCD_PDB, lambda d: d[0]["spec"].update(minAvailable=1)),
     "k8s/etcd: etcd PDB minAvailable 2"),
    ("--registry on the peer port",
     text_edit(ETCD_PATCH, "skipserve-etcd-client:2379/",
               "skipserve-etcd-client:2380/"),
     "k8s/etcd: --registry host skipserve-etcd-client:2380"),
    ("--registry naming a Service that does not exist",
     text_edit(ETCD_PATCH, "etcd://skipserve-etcd-client:", "etcd://etcd:"),
     "k8s/etcd: --registry host etcd:2379"),
    ("--registry without a prefix",
     text_edit(ETCD_PATCH, "skipserve-etcd-client:2379/skipserve",
               "skipserve-etcd-client:2379"),
     "k8s/etcd: --registry parses"),
    ("--state_file left in with etcd",
     yaml_edit(ETCD_PATCH, add_ops({
         "op": "add", "path": ARGS,
         "value": "--state_file=/var/lib/skipserve/registry.json"})),
     "k8s/etcd: no --state_file with the etcd registry"),
    ("a state-file PVC mounted read-write with etcd",
     yaml_edit(ETCD_PATCH, add_ops(
         {"op": "add", "path": "/spec/template/spec/volumes/-",
          "value": {"name": "state", "persistentVolumeClaim": {
              "claimName": "skipserve-state"}}},
         {"op": "add",
          "path": "/spec/template/spec/containers/0/volumeMounts/-",
          "value": {"name": "state", "mountPath": "/var/lib/skipserve"}})),
     "k8s/etcd: no writable PersistentVolumeClaim"),
    ("the etcd client Secret not mounted",
     yaml_edit(ETCD_PATCH, drop_op(lambda op: op["path"].endswith(
         "/volumeMounts/-") and op["value"]["name"] == "etcd-client")),
     "k8s/etcd: --etcd_ca=/etc/skipserve-etcd/ca.crt is mounted read-only "
     "from a Secret"),
    ("the etcd client Secret mounted read-write",
     yaml_edit(ETCD_PATCH, lambda d: next(
         op for op in d[0] if op["path"].endswith("/volumeMounts/-") and
         op["value"]["name"] == "etcd-client")["value"].pop("readOnly")),
     "k8s/etcd: --etcd_cert=/etc/skipserve-etcd/tls.crt is mounted"),
    ("--etcd_key not among the client Secret's items",
     yaml_edit(ETCD_PATCH, lambda d: secret_items(d, "etcd-client").pop()),
     "k8s/etcd: --etcd_key=/etc/skipserve-etcd/tls.key is mounted"),
    ("no client certificate for etcd's --client-cert-auth",
     yaml_edit(ETCD_PATCH, drop_op(lambda op: str(op_value(op)).startswith(
         ("--etcd_cert=", "--etcd_key=")))),
     "k8s/etcd: skipserve has a client certificate"),
    ("no admin token with the shared registry",
     yaml_edit(ETCD_PATCH, drop_op(lambda op: str(op_value(op)).startswith(
         "--admin_token_file="))),
     "k8s/etcd: --admin_token_file"),
    ("readiness on the registry's health service",
     yaml_edit(ETCD_PATCH, add_ops({
         "op": "add",
         "path": "/spec/template/spec/containers/0/readinessProbe/grpc/"
                 "service",
         "value": "skipserve.v1.Policies"})),
     "k8s/etcd: readinessProbe is not on skipserve.v1.Policies"),
    ("--registry_startup_timeout beyond the startup probe",
     text_edit(ETCD_PATCH, "--registry_startup_timeout=2m",
               "--registry_startup_timeout=20m"),
     "k8s/etcd: --registry_startup_timeout parses and fits"),
    ("external etcd without TLS",
     yaml_edit(EXT_PATCH, drop_op(lambda op: str(op_value(op)).startswith(
         "--etcd_ca="))),
     "k8s/etcd-external: TLS to etcd"),
    ("external etcd user without a password file",
     yaml_edit(EXT_PATCH, drop_op(lambda op: str(op_value(op)).startswith(
         "--etcd_password_file="))),
     "k8s/etcd-external: --etcd_user and --etcd_password_file together"),
    ("external etcd password not among the Secret's items",
     yaml_edit(EXT_PATCH, lambda d: secret_items(d, "etcd-client").pop()),
     "k8s/etcd-external: --etcd_password_file=/etc/skipserve-etcd/password "
     "is mounted"),
    ("external --registry with a bad endpoint list",
     text_edit(EXT_PATCH, "etcd-1.etcd.example.internal:2379,",
               "etcd-1.etcd.example.internal,"),
     "k8s/etcd-external: --registry parses"),
    ("an --etcd_* flag on the file-store cpu overlay",
     text_edit(CPU_PATCH, "            - --device=cpu\n",
               "            - --device=cpu\n            - --etcd_ca=/x\n"),
     "k8s/cpu: no --etcd_* flags without --registry=etcd://"),
]


def run_checker(root):
    env = dict(os.environ, SKIPSERVE_DEPLOY_NO_KUSTOMIZE="1")
    run = subprocess.run([sys.executable, CHECKER, root], capture_output=True,
                         text=True, env=env, timeout=120)
    return run.returncode, run.stdout + run.stderr


def copy_tree(src, dst):
    for name in COPIED:
        s = os.path.join(src, name)
        if os.path.isdir(s):
            shutil.copytree(s, os.path.join(dst, name),
                            ignore=shutil.ignore_patterns("__pycache__"))
        elif os.path.exists(s):
            shutil.copy2(s, os.path.join(dst, name))


def main(argv):
    if len(argv) != 2:
        print(__doc__)
        return 2
    src = os.path.realpath(argv[1])
    passed = failed = 0
    with tempfile.TemporaryDirectory(prefix="skipserve-deploy-") as tmp:
        pristine = os.path.join(tmp, "pristine")
        os.mkdir(pristine)
        copy_tree(src, pristine)
        rc, out = run_checker(pristine)
        if rc != 0:
            print("FAIL  the unmodified copy passes:")
            print("\n".join(l for l in out.splitlines()
                            if not l.startswith("PASS")))
            print("0 passed, 1 failed")
            return 1
        print("PASS  the unmodified copy passes")
        passed += 1
        for i, (what, mutate, expected) in enumerate(MUTATIONS):
            root = os.path.join(tmp, f"m{i}")
            shutil.copytree(pristine, root)
            try:
                mutate(root)
            except Exception as e:  # the mutation itself is stale
                print(f"FAIL  {what}: cannot apply: {type(e).__name__}: {e}")
                failed += 1
                continue
            rc, out = run_checker(root)
            fails = [l for l in out.splitlines() if l.startswith("FAIL")]
            if rc != 0 and any(expected in l for l in fails):
                print(f"PASS  {what} -> caught "
                      f"({len(fails)} FAIL line{'s' if len(fails) > 1 else ''})")
                passed += 1
            else:
                print(f"FAIL  {what}: rc={rc}, no FAIL line with "
                      f"{expected!r}; got {fails[:5]}")
                failed += 1
            shutil.rmtree(root)
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
