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


def container(docs):
    dep = next(d for d in docs if d["kind"] == "Deployment")
    return dep["spec"]["template"]["spec"]["containers"][0]


def pod(docs):
    return next(d for d in docs if d["kind"] == "Deployment")[
        "spec"]["template"]["spec"]


def of_kind(kind, name=None):
    def get(docs):
        return next(d for d in docs if d["kind"] == kind and (
            name is None or d["metadata"]["name"] == name))
    return get


DEP = "deploy/k8s/base/deployment.yaml"
SVC = "deploy/k8s/base/service.yaml"
CPU_PATCH = "deploy/k8s/overlays/cpu/deployment-patch.yaml"

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
