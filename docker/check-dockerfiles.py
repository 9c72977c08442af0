#!/usr/bin/python3
"""Lints docker/Dockerfile.cpu and docker/Dockerfile.cuda the way a builder
reads them, for what the image check cannot build.

    /usr/bin/python3 docker/check-dockerfiles.py [repo root]

The CPU image is built and run by .ci/image-check; the CUDA image cannot be
built here (its bases come from NVIDIA's registry), and buildah stops at its
first FROM without reading further than the FROM lines. So this script checks
each Dockerfile's instructions, and then that Dockerfile.cuda differs from
Dockerfile.cpu only where it has to:

  - every instruction is one a builder knows; only ARG comes before the
    first FROM; every FROM expands with the global ARG defaults;
  - stage names are unique; COPY --from names an earlier stage;
  - every ${NAME} a RUN uses is an ARG or ENV of its stage (a global ARG is
    not visible inside a stage unless the stage declares it again);
  - every shell-form RUN parses with `sh -n`; every JSON-form ENTRYPOINT,
    CMD and HEALTHCHECK CMD is a JSON array of strings;
  - stage by stage, the instructions of Dockerfile.cuda are those of
    Dockerfile.cpu except FROM lines, global ARGs and instructions that name
    CUDA or NVIDIA. The CPU image runs every shared instruction; the others
    are printed: they are what has not run anywhere.

Prints one line per check and `N passed, M failed`; exits 1 on any failure.
Python's standard library only.
"""

import difflib
import json
import os
import re
import subprocess
import sys

INSTRUCTIONS = {
    "ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM",
    "HEALTHCHECK", "LABEL", "MAINTAINER", "ONBUILD", "RUN", "SHELL",
    "STOPSIGNAL", "USER", "VOLUME", "WORKDIR",
}

CUDA_WORDS = re.compile(r"cuda|nvidia", re.IGNORECASE)


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


def instructions(path):
    """[(line number, INSTRUCTION, arguments)]: comments dropped, backslash
    continuations joined (comment lines inside a continuation are skipped,
    as builders do)."""
    out, current, start = [], "", None
    with open(path, encoding="utf-8") as f:
        for number, raw in enumerate(f, 1):
            line = raw.rstrip("\n")
            if line.lstrip().startswith("#"):
                continue
            if start is None:
                if not line.strip():
                    continue
                start = number
            if line.rstrip().endswith("\\"):
                current += line.rstrip()[:-1] + " "
                continue
            current += line
            word, _, rest = current.strip().partition(" ")
            out.append((start, word.upper(), rest.strip()))
            current, start = "", None
    if current.strip():
        word, _, rest = current.strip().partition(" ")
        out.append((start, word.upper(), rest.strip()))
    return out


def expand(text, values):
    """${NAME}, ${NAME:-default} and $NAME with values; None when a name has
    no value."""
    missing = []

    def sub(m):
        name = m.group(1) or m.group(3)
        default = m.group(2)
        if name in values and values[name] != "":
            return values[name]
        if default is not None:
            return default
        missing.append(name)
        return ""

    result = re.sub(r"\$\{(\w+)(?::-([^}]*))?\}|\$(\w+)", sub, text)
    return None if missing else result


def arg_decl(rest):
    name, eq, default = rest.partition("=")
    return name.strip(), (default.strip().strip('"') if eq else None)


def json_form_ok(text):
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return False
    return isinstance(value, list) and value and all(
        isinstance(v, str) for v in value)


def stages_of(instrs):
    """[(name, [(line, word, rest)...])] from the first FROM on."""
    stages = []
    for line, word, rest in instrs:
        if word == "FROM":
            m = re.search(r"\s+AS\s+(\S+)\s*$", rest, re.IGNORECASE)
            stages.append((m.group(1) if m else str(len(stages)), []))
        if stages:
            stages[-1][1].append((line, word, rest))
    return stages


def check_file(c, root, rel):
    tag = rel
    path = os.path.join(root, rel)
    instrs = instructions(path)
    unknown = [(l, w) for l, w, _ in instrs if w not in INSTRUCTIONS]
    c.check(f"{tag}: every instruction is a Dockerfile instruction",
            not unknown, ", ".join(f"line {l}: {w}" for l, w in unknown))
    first_from = next((i for i, (_, w, _) in enumerate(instrs)
                       if w == "FROM"), None)
    if not c.check(f"{tag}: has a FROM", first_from is not None):
        return None
    before = [w for _, w, _ in instrs[:first_from]]
    c.check(f"{tag}: only ARG before the first FROM",
            all(w == "ARG" for w in before), f"{before}")
    global_args = dict(arg_decl(r) for _, w, r in instrs[:first_from]
                       if w == "ARG")

    stages = stages_of(instrs)
    names = [n for n, _ in stages]
    c.check(f"{tag}: stage names are unique", len(set(names)) == len(names),
            f"{names}")
    bases = []
    for i, (name, body) in enumerate(stages):
        line, _, rest = body[0]
        ref = re.sub(r"\s+AS\s+\S+\s*$", "", rest, flags=re.IGNORECASE)
        ref = re.sub(r"^--platform=\S+\s+", "", ref)
        resolved = expand(ref, global_args)
        c.check(f"{tag}: stage {name}: FROM {ref} expands with the global "
                f"ARG defaults", resolved is not None and resolved.strip(),
                f"line {line}")
        bases.append(resolved)
        declared = set()
        for line, word, rest in body[1:]:
            if word == "ARG":
                declared.add(arg_decl(rest)[0])
            elif word == "ENV":
                for m in re.finditer(r"(\w+)=", rest):
                    declared.add(m.group(1))
                if "=" not in rest.split()[0]:
                    declared.add(rest.split()[0])
            elif word in ("COPY", "ADD"):
                m = re.search(r"--from=(\S+)", rest)
                if m:
                    c.check(f"{tag}: line {line}: COPY --from={m.group(1)} "
                            "names an earlier stage",
                            m.group(1) in names[:i] or
                            (m.group(1).isdigit() and int(m.group(1)) < i),
                            f"earlier stages {names[:i]}")
            elif word == "RUN":
                if rest.startswith("["):
                    c.check(f"{tag}: line {line}: RUN exec form is JSON",
                            json_form_ok(rest))
                    continue
                used = set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", rest)) | \
                    set(re.findall(r"\$([A-Z_][A-Z0-9_]*)", rest))
                undeclared = sorted(used - declared - {"PATH", "HOME"})
                c.check(f"{tag}: line {line}: RUN uses only ARG/ENV of stage "
                        f"{name}", not undeclared,
                        f"undeclared {undeclared} (a global ARG needs "
                        "ARG NAME again inside the stage)")
                run = subprocess.run(["sh", "-n", "-c", rest],
                                     capture_output=True, text=True)
                c.check(f"{tag}: line {line}: RUN parses with sh -n",
                        run.returncode == 0, run.stderr.strip())
            elif word in ("ENTRYPOINT", "CMD") and rest.startswith("["):
                c.check(f"{tag}: line {line}: {word} is a JSON array of "
                        "strings", json_form_ok(rest))
            elif word == "HEALTHCHECK" and not rest.upper().startswith("NONE"):
                cmd = re.split(r"\bCMD\b", rest, maxsplit=1)
                ok = len(cmd) == 2 and (
                    not cmd[1].strip().startswith("[") or
                    json_form_ok(cmd[1].strip()))
                c.check(f"{tag}: line {line}: HEALTHCHECK CMD is well-formed",
                        ok, rest)
    return stages, bases


def normalized(body):
    return [f"{w} {' '.join(r.split())}" for _, w, r in body]


def compare(c, cpu, cuda):
    """Dockerfile.cuda against Dockerfile.cpu, stage by stage."""
    cpu_stages, cuda_stages = cpu[0], cuda[0]
    c.check("Dockerfile.cuda has the stages of Dockerfile.cpu",
            [n for n, _ in cpu_stages] == [n for n, _ in cuda_stages],
            f"{[n for n, _ in cpu_stages]} vs {[n for n, _ in cuda_stages]}")
    shared_total = cuda_total = 0
    for (name, cpu_body), (_, cuda_body) in zip(cpu_stages, cuda_stages):
        a, b = normalized(cpu_body[1:]), normalized(cuda_body[1:])
        cuda_total += len(b) + 1
        matcher = difflib.SequenceMatcher(a=a, b=b, autojunk=False)
        unexplained, not_run, cuda_words = [], [], []
        for op, i1, i2, j1, j2 in matcher.get_opcodes():
            if op == "equal":
                shared_total += i2 - i1
                continue
            cpu_side = [(f"Dockerfile.cpu line {cpu_body[1 + i][0]}", a[i])
                        for i in range(i1, i2)]
            cuda_side = [(f"Dockerfile.cuda line {cuda_body[1 + j][0]}", b[j])
                         for j in range(j1, j2)]
            if op == "replace" and len(cpu_side) == len(cuda_side):
                # The same instruction plus CUDA arguments (a module to
                # install): shared once the words naming CUDA are removed.
                for (_, t_cpu), (l_cuda, t_cuda) in zip(cpu_side, cuda_side):
                    extra = [w for w in t_cuda.split()
                             if CUDA_WORDS.search(w)]
                    if extra and " ".join(w for w in t_cuda.split()
                                          if not CUDA_WORDS.search(w)) \
                            == t_cpu:
                        shared_total += 1
                        cuda_words.append((l_cuda, extra))
                    else:
                        unexplained.append((l_cuda, t_cuda))
                continue
            unexplained += [(l, t) for l, t in cpu_side]  # only in .cpu
            for l, t in cuda_side:  # only in .cuda
                (not_run if CUDA_WORDS.search(t) else unexplained).append(
                    (l, t))
        c.check(f"stage {name}: Dockerfile.cuda is Dockerfile.cpu plus "
                "instructions and arguments that name CUDA or NVIDIA",
                not unexplained,
                "; ".join(f"{l}: {t[:100]}" for l, t in unexplained) +
                " (keep the two files in step, or name CUDA in what must "
                "differ)")
        for line, text in not_run:
            print(f"      not run anywhere: {line}: {text[:110]}")
        for line, words in cuda_words:
            print(f"      not run anywhere: {line}: the CUDA arguments "
                  f"{' '.join(words)}")
    print(f"      Dockerfile.cuda: {shared_total} of its {cuda_total} "
          "instructions after the global ARGs are Dockerfile.cpu's (some "
          "with CUDA arguments added), which the CPU image build runs on "
          "Debian bookworm, not on Ubuntu 24.04; its bases "
          f"{', '.join(cuda[1])} are not pulled here")


def main(argv):
    root = os.path.realpath(argv[1] if len(argv) > 1 else
                            os.path.join(os.path.dirname(__file__), ".."))
    c = Checks()
    cpu = check_file(c, root, "docker/Dockerfile.cpu")
    cuda = check_file(c, root, "docker/Dockerfile.cuda")
    if cpu and cuda:
        compare(c, cpu, cuda)
    print(f"{c.passed} passed, {c.failed} failed")
    return 1 if c.failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
