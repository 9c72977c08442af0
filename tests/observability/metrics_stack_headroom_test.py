#!/usr/bin/env python3
"""/metrics keeps at least 1 KiB of stack to spare.

prometheus-cpp serves /metrics from civetweb threads with fixed 100 KiB
stacks, and glibc places every thread's static TLS (thread_local variables of
the program and of every linked library) inside that stack: OpenBLAS alone
takes 60 KiB. When the rest is too small, a scrape overflows the stack and
the server dies with SIGSEGV (a 2.5 KB thread_local std::mt19937_64 did it).
This test preloads a library with 1 KiB of TLS (tls_probe.c), serves one
request and scrapes /metrics twice: it fails when the headroom falls under
1 KiB, naming the likely cause, before a production scrape finds out.
(Measured when written: 1 KiB passes, 2 KiB crashes.)

Usage: metrics_stack_headroom_test.py --server BIN --client BIN --probe SO
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time
import urllib.request


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", required=True)
    parser.add_argument("--client", required=True)
    parser.add_argument("--probe", required=True)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as work:
        port_file = os.path.join(work, "port")
        log_path = os.path.join(work, "log")
        env = dict(os.environ, LD_PRELOAD=args.probe)
        with open(log_path, "wb") as log:
            server = subprocess.Popen(
                [args.server, "--host=127.0.0.1", "--port=0",
                 "--metrics_port=0", f"--port_file={port_file}"],
                stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            deadline = time.time() + 60
            while not (os.path.exists(port_file) and
                       os.path.getsize(port_file) > 0):
                if server.poll() is not None or time.time() > deadline:
                    print(open(log_path).read())
                    print("FAIL: the server did not start")
                    return 1
                time.sleep(0.1)
            port = int(open(port_file).read())
            log_text = open(log_path).read()
            metrics_port = int(log_text.split("metrics on port ")[1].split(",")[0])
            subprocess.run(
                [args.client, f"--target=127.0.0.1:{port}", "generate",
                 "--max_tokens=2", "hello"],
                check=True, stdout=subprocess.DEVNULL, timeout=60)
            for attempt in range(2):
                try:
                    body = urllib.request.urlopen(
                        f"http://127.0.0.1:{metrics_port}/metrics",
                        timeout=10).read().decode()
                    problem = ("" if "skipserve_requests_total" in body else
                               "/metrics lacks skipserve_requests_total")
                except OSError as error:
                    problem = str(error)
                if problem:
                    time.sleep(0.5)
                    code = server.poll()
                    print(open(log_path).read())
                    state = ("runs" if code is None else f"exited {code}")
                    print(f"FAIL: scrape {attempt + 1}: {problem}; the server "
                          f"{state}. A server that died with -11 (SIGSEGV) "
                          "overflowed a civetweb stack: less than 1 KiB of "
                          "static TLS headroom is left. Look for new "
                          "thread_local variables or newly linked libraries "
                          "with TLS (readelf -lW LIB | grep TLS).")
                    return 1
            print("PASS: two scrapes with 1 KiB of extra static TLS")
            return 0
        finally:
            if server.poll() is None:
                server.terminate()
                server.wait(timeout=30)


if __name__ == "__main__":
    sys.exit(main())
