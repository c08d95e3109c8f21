"""Client tools benchmark (run: python3 bench/bench_tools.py [BACKEND...], default claude codex
gemini): the tool bridge's round trip on the zero-work fake CLIs (tests/fakes), in one process
with the server (gemini's runs load the workdir's configuration: it takes MCP servers only so).

Measured, median of 30: the continuation's time to first token (the request carrying the tool
result, until the first content delta of the streamed answer: the result goes over the Unix
socket to `clinvk tool-bridge`, over MCP to the CLI, which answers) against a plain streamed
request's time to first token (a whole new CLI process). Recorded, not judged: the bridge has no
target of its own yet.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tests.serverutil import make_server  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import record  # noqa: E402

TOOLS = [{"type": "function", "function": {"name": "get_time",
                                           "parameters": {"type": "object"}}}]


def first_token(srv, body) -> float:
    conn = srv.connection(60)
    start = time.perf_counter()
    conn.request("POST", "/openai/v1/chat/completions", json.dumps(body),
                 {"Content-Type": "application/json"})
    resp = conn.getresponse()
    while True:
        line = resp.readline()
        if not line or (b'"content"' in line and b'"content": ""' not in line
                        and b'"content":""' not in line):
            break
    took = time.perf_counter() - start
    resp.read()
    conn.close()
    return took


def measure(srv, backend: str):
    """(plain streamed first tokens, continuation first tokens), 30 of each."""
    plain, resumed = [], []
    for _ in range(30):
        plain.append(first_token(srv, {"model": backend, "stream": True, "messages": [
            {"role": "user", "content": "hi"}], "tools": TOOLS, "tool_choice": "none"}))
        ask = [{"role": "user", "content": "CALL-TOOL: get_time {}"}]
        reply = srv.post("/openai/v1/chat/completions",
                         {"model": backend, "messages": ask, "tools": TOOLS}).json()
        message = reply["choices"][0]["message"]
        resumed.append(first_token(srv, {"model": backend, "stream": True, "tools": TOOLS,
                                         "messages": ask + [message, {
                                             "role": "tool", "content": "noon",
                                             "tool_call_id": message["tool_calls"][0]["id"]}]}))
    return plain, resumed


def main(backends) -> int:
    os.environ["PATH"] = os.path.join(ROOT, "tests", "fakes", "bin") + os.pathsep + os.environ["PATH"]
    os.environ["CLINVK_HOME"] = tempfile.mkdtemp()
    os.environ["FAKE_CLI_STATE_DIR"] = tempfile.mkdtemp()
    srv = make_server({"server.allow_project_config": True})
    try:
        for backend in backends:
            plain, resumed = measure(srv, backend)
            record("15", "tool result to the continuation's first token, fake %s" % backend,
                   "median %.1f ms (a plain streamed request's first token: %.1f ms)"
                   % (1000 * statistics.median(resumed), 1000 * statistics.median(plain)))
    finally:
        srv.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["claude", "codex", "gemini"]))
