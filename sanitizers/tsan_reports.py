"""Sorts ThreadSanitizer report files (.ci/sanitizers) into reports that
involve skipserve's code, which fail the run, and reports wholly inside
Debian's uninstrumented gRPC and Abseil, which are printed and counted but
do not.

    /usr/bin/python3 sanitizers/tsan_reports.py ROOT FILE...

Why: gRPC's core is not built with ThreadSanitizer, so the ordering it
creates with its own atomics (reference counts, lock-free queues) is
invisible, and a report can come from two accesses that only gRPC's code
makes (seen once in about ten runs: a gRPC mutex destroyed after its last
unlock on another thread). Such a report says nothing about our code and
cannot be fixed here; a report with any frame in a file under ROOT (our
sources, and the code generated from our protos; not sanitizers/, which
only forwards Abseil's calls) is ours. Anything that is not a recognisable
report (a ThreadSanitizer CHECK failure, a crash) fails the run.

One exception: an access made by gRPC's own header code (the innermost
frame with a source file lies in /usr/include/grpcpp or /usr/include/grpc,
inlined into our binary) touches gRPC's objects, ordered by gRPC's atomics,
even when our code is further up its stack (seen: the fields of
ServerContext::DefaultReactor(), written by the handler and read by gRPC's
completion callback). Such an access is gRPC's. Inlined C++ standard
library and Abseil headers are not treated so: a race on our own vector
or mutex, reached through their headers, stays ours.

Exit status: 0 when no report is ours, 1 otherwise.
"""
import os
import re
import sys

FRAME = re.compile(r"^\s+#\d+ .* (/\S+):\d+")
# A section heading of a report ("  Previous write of size 8 at ...:").
SECTION = re.compile(r"^(WARNING: | {2}[A-Z])")
# The headings of the sections that are accesses.
ACCESS = re.compile(r"^(WARNING: | {2}(Previous |)(atomic |)"
                    r"(read|write|Read|Write|Atomic))")


GRPC_HEADERS = ("/usr/include/grpcpp/", "/usr/include/grpc/")


def is_ours(block, root):
    """Whether a frame of the report's accesses (not of where its threads
    were created or its memory allocated) lies in a file under `root`,
    leaving out accesses that gRPC's header code makes (see above)."""
    skip = os.path.join(root, "sanitizers") + os.sep
    access = False
    innermost = True  # no frame with a source file seen yet in this access
    grpcs = False     # this access is made by gRPC's header code
    for line in block:
        if SECTION.match(line):
            access = ACCESS.match(line) is not None
            innermost, grpcs = True, False
            continue
        m = FRAME.match(line)
        if not (access and m):
            continue
        path = m.group(1)
        if innermost and "/libsanitizer/" not in path and \
                not path.startswith(skip):
            innermost = False
            grpcs = path.startswith(GRPC_HEADERS)
        if not grpcs and path.startswith(root + os.sep) and \
                not path.startswith(skip):
            return True
    return False


def blocks(text):
    """The parts of one file between separator lines, as lists of lines."""
    for chunk in re.split(r"^={18}$", text, flags=re.M):
        lines = chunk.strip("\n").splitlines()
        if any(line.strip() for line in lines):
            yield lines


def main():
    root = os.path.realpath(sys.argv[1])
    ours = theirs = 0
    for path in sys.argv[2:]:
        with open(path, errors="replace") as f:
            text = f.read()
        for block in blocks(text):
            if not block[0].startswith("WARNING: ThreadSanitizer:"):
                if all(line.startswith("ThreadSanitizer: reported")
                       for line in block if line.strip()):
                    continue  # the count at exit
                print("===== %s: not a report ThreadSanitizer finished:" % path)
                print("\n".join(block))
                ours += 1
            elif is_ours(block, root):
                print("===== %s: a report in skipserve's code:" % path)
                print("\n".join(block))
                ours += 1
            else:
                print("===== %s: inside gRPC/Abseil only (not failing):"
                      % path)
                print("\n".join(block[:12]))
                theirs += 1
    print("tsan_reports: %d in skipserve's code, %d inside Debian's "
          "libraries only" % (ours, theirs))
    return 1 if ours else 0


if __name__ == "__main__":
    sys.exit(main())
