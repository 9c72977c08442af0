#!/usr/bin/python3
"""End-to-end test of skipserve-server from Python (grpcio).

    /usr/bin/python3 tests/python/client_test.py SERVER_BINARY INFERENCE_PROTO

Generates the Python stubs from the proto with grpc_tools.protoc into a
temporary directory, starts the server binary on 127.0.0.1 with an ephemeral
port (--port=0 --port_file), runs the unittest cases against it, then stops it
with SIGTERM and checks that it drains and exits 0. Exits non-zero on any
failure.

Needs Debian's python3-grpcio and python3-grpc-tools (/usr/bin/python3).
"""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

import grpc
from grpc_tools import protoc

SERVER_BINARY = None
PROTO_FILE = None

_tmpdir = None
_server = None
_server_log = None
_channel = None
pb = None
pb_grpc = None

START_TIMEOUT_S = 60
STOP_TIMEOUT_S = 60


def _server_stderr():
    if _server_log is None:
        return ""
    with open(_server_log.name, "r", errors="replace") as f:
        return f.read()


def _generate_stubs(out_dir):
    """Compiles the proto into out_dir and imports the generated modules."""
    global pb, pb_grpc
    # .../proto/skipserve/v1/inference.proto -> include root .../proto
    proto_root = os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(PROTO_FILE))))
    grpc_tools_include = os.path.join(
        os.path.dirname(os.path.abspath(protoc.__file__)), "_proto")
    args = [
        "grpc_tools.protoc",
        "-I" + proto_root,
        "-I" + grpc_tools_include,
        "--python_out=" + out_dir,
        "--grpc_python_out=" + out_dir,
        os.path.abspath(PROTO_FILE),
    ]
    os.makedirs(out_dir, exist_ok=True)
    if protoc.main(args) != 0:
        raise RuntimeError("grpc_tools.protoc failed on " + PROTO_FILE)
    sys.path.insert(0, out_dir)
    from skipserve.v1 import inference_pb2, inference_pb2_grpc
    pb, pb_grpc = inference_pb2, inference_pb2_grpc


def _start_server():
    global _server, _server_log, _channel
    port_file = os.path.join(_tmpdir, "port")
    _server_log = open(os.path.join(_tmpdir, "server.log"), "w+b")
    _server = subprocess.Popen(
        [SERVER_BINARY, "--host=127.0.0.1", "--port=0",
         "--port_file=" + port_file, "--metrics_port=-1"],
        stdin=subprocess.DEVNULL, stdout=_server_log, stderr=_server_log)
    deadline = time.monotonic() + START_TIMEOUT_S
    while not os.path.exists(port_file):
        if _server.poll() is not None:
            raise RuntimeError("server exited with %d before serving:\n%s" %
                               (_server.returncode, _server_stderr()))
        if time.monotonic() > deadline:
            _server.kill()
            _server.wait()
            raise RuntimeError("server did not serve within %ds:\n%s" %
                               (START_TIMEOUT_S, _server_stderr()))
        time.sleep(0.02)
    with open(port_file) as f:
        port = int(f.read().strip())
    _channel = grpc.insecure_channel("127.0.0.1:%d" % port)
    grpc.channel_ready_future(_channel).result(timeout=20)


def setUpModule():
    global _tmpdir
    _tmpdir = tempfile.mkdtemp(prefix="skipserve-pytest-")
    _generate_stubs(os.path.join(_tmpdir, "stubs"))
    _start_server()


def tearDownModule():
    global _server
    try:
        if _channel is not None:
            _channel.close()
        if _server is not None and _server.poll() is None:
            _server.send_signal(signal.SIGTERM)
            try:
                code = _server.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                _server.kill()
                _server.wait()
                raise AssertionError("server ignored SIGTERM for %ds:\n%s" %
                                     (STOP_TIMEOUT_S, _server_stderr()))
            log = _server_stderr()
            if code != 0:
                raise AssertionError(
                    "server exited with %d after SIGTERM:\n%s" % (code, log))
            if "drained" not in log:
                raise AssertionError("no 'drained' in the server's stderr:\n"
                                     + log)
    finally:
        if _server is not None and _server.poll() is None:
            _server.kill()
            _server.wait()
        if _server_log is not None:
            _server_log.close()
        shutil.rmtree(_tmpdir, ignore_errors=True)


def _request(prompt, max_tokens, spec=None):
    request = pb.GenerateRequest(
        prompt=prompt, sampling=pb.SamplingParams(max_tokens=max_tokens))
    if spec is not None:
        request.policy.spec = spec
    return request


class ClientTest(unittest.TestCase):

    def setUp(self):
        self.stub = pb_grpc.InferenceStub(_channel)

    def test_generate(self):
        response = self.stub.Generate(
            _request("Hello from Python", 16, "attn:last=33%"), timeout=60)
        self.assertEqual(len(response.tokens), 16)
        self.assertEqual(response.usage.completion_tokens, 16)
        self.assertEqual(response.finish_reason, pb.FINISH_REASON_LENGTH)
        # attn:last=33% on 8 layers: round(2.64) = 3 -> layers 5..7.
        self.assertEqual(response.policy, "attn:5-7")
        self.assertEqual(response.text,
                         "".join(t.text for t in response.tokens))
        for token in response.tokens:
            self.assertLess(token.id, 1024)
        # Greedy decoding is deterministic.
        again = self.stub.Generate(
            _request("Hello from Python", 16, "attn:last=33%"), timeout=60)
        self.assertEqual([t.id for t in again.tokens],
                         [t.id for t in response.tokens])

    def test_generate_stream_matches_generate(self):
        request = _request("Streaming from Python", 24)
        request.logprobs = True
        unary = self.stub.Generate(request, timeout=60)
        chunks = list(self.stub.GenerateStream(request, timeout=60))
        self.assertGreater(len(chunks), 0)
        self.assertEqual("".join(c.text for c in chunks), unary.text)
        self.assertEqual([t.id for c in chunks for t in c.tokens],
                         [t.id for t in unary.tokens])
        self.assertEqual([t.logprob for c in chunks for t in c.tokens],
                         [t.logprob for t in unary.tokens])
        for chunk in chunks[:-1]:
            self.assertEqual(chunk.finish_reason,
                             pb.FINISH_REASON_UNSPECIFIED)
        last = chunks[-1]
        self.assertEqual(last.finish_reason, pb.FINISH_REASON_LENGTH)
        self.assertEqual(last.usage.completion_tokens, 24)
        self.assertEqual(last.policy, "none")
        for token in unary.tokens:
            self.assertLessEqual(token.logprob, 0.0)

    def test_bad_request_is_invalid_argument_naming_the_field(self):
        request = _request("A fine prompt", 8)
        request.sampling.top_p = 1.5
        with self.assertRaises(grpc.RpcError) as caught:
            self.stub.Generate(request, timeout=60)
        self.assertEqual(caught.exception.code(),
                         grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("top_p", caught.exception.details())

        with self.assertRaises(grpc.RpcError) as caught:
            list(self.stub.GenerateStream(_request("", 8), timeout=60))
        self.assertEqual(caught.exception.code(),
                         grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("prompt", caught.exception.details())

        with self.assertRaises(grpc.RpcError) as caught:
            self.stub.Generate(
                pb.GenerateRequest(prompt="x",
                                   policy=pb.PolicySelector(name="nope")),
                timeout=60)
        self.assertEqual(caught.exception.code(), grpc.StatusCode.NOT_FOUND)
        self.assertIn("policy.name", caught.exception.details())
        # The server still serves.
        self.assertEqual(
            len(self.stub.Generate(_request("Still fine", 4),
                                   timeout=60).tokens), 4)

    def test_health_check_serving(self):
        check = _channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=lambda raw: raw,
            response_deserializer=lambda raw: raw)
        # Empty HealthCheckRequest -> HealthCheckResponse{status: SERVING}.
        self.assertEqual(check(b"", timeout=20), b"\x08\x01")

    def test_model_info(self):
        info = self.stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=20)
        self.assertEqual(info.num_layers, 8)
        self.assertEqual(info.vocab_size, 1024)
        self.assertEqual(info.max_context, 1024)


def main():
    global SERVER_BINARY, PROTO_FILE
    if len(sys.argv) < 3:
        sys.stderr.write(__doc__)
        return 2
    SERVER_BINARY, PROTO_FILE = sys.argv[1], sys.argv[2]
    program = unittest.main(argv=[sys.argv[0], "-v"] + sys.argv[3:],
                            exit=False)
    result = program.result
    return 0 if result.wasSuccessful() and result.testsRun > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
