#!/usr/bin/env python3
"""Fails when a folder of engine/, server/ or client/ includes, directly or
through other folders, a folder that includes it back (issue #10: the layout
follows the data flow). Test files and engine/testing/ are left out: a test
may use what lies above its folder. Prints the folder graph either way.

Usage: folder_cycles.py REPO_ROOT
"""
import os
import re
import subprocess
import sys


def folder_graph(root):
    files = subprocess.check_output(
        ["git", "ls-files", "*.cc", "*.h", "*.cu"], cwd=root, text=True
    ).split()
    include = re.compile(r'#include "((?:engine|server|client)/[^"]+)"')
    edges = {}
    for f in files:
        if f.endswith("_test.cc") or "/testing/" in f:
            continue
        src = os.path.dirname(f)
        with open(os.path.join(root, f), errors="replace") as text:
            for m in include.finditer(text.read()):
                dst = os.path.dirname(m.group(1))
                if dst != src:
                    edges.setdefault(src, set()).add(dst)
    return edges


def reaches(edges, start, goal):
    stack, seen = [start], {start}
    while stack:
        for n in edges.get(stack.pop(), ()):
            if n == goal:
                return True
            if n not in seen:
                seen.add(n)
                stack.append(n)
    return False


def main():
    edges = folder_graph(sys.argv[1])
    for src in sorted(edges):
        print(src, "->", " ".join(sorted(edges[src])))
    cycles = sorted(
        (a, b) for a in edges for b in edges[a] if reaches(edges, b, a)
    )
    for a, b in cycles:
        print(f"CYCLE: {a} includes {b}, which reaches {a} again")
    print(f"folder_cycles: {len(edges)} folders, {len(cycles)} cycle edges")
    return 1 if cycles else 0


if __name__ == "__main__":
    sys.exit(main())
