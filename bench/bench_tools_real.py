"""The tool bridge's added latency on the real claude (run: python3 bench/bench_tools_real.py;
needs the e2e tier's CLIs, tests/e2e/realclis.py install): everything on 127.0.0.1, the fake
model API behind claude, no network.

Measured, median of 10 each:

- the CLI's own MCP round trip: claude with a trivial stdio MCP server that answers a call at
  once, from the moment that server writes its answer to the first text delta claude prints
  of the turn that follows (claude reads the answer, asks the model, streams);
- clinvk's: from the moment the client sends the request carrying the tool result to the
  first content delta of the streamed continuation (the request is parsed, the parked run
  resumed, the result goes over the Unix socket to ``clinvk tool-bridge``, over MCP to
  claude, which asks the model and streams, and clinvk relays the delta).

The difference is what the bridge adds to a tool call.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import record  # noqa: E402
from tests.e2e import realclis  # noqa: E402
from tests.fakes.fake_model_api import FakeModelAPI  # noqa: E402
from tests.serverutil import make_server  # noqa: E402

RUNS = 10
ASK = "CALL-TOOL: get_time {}"
TRIVIAL_MCP = r'''
import json, sys, time
tools = [{"name": "get_time", "description": "The time.", "inputSchema": {"type": "object"},
          "annotations": {"readOnlyHint": True}}]
for line in sys.stdin:
    msg = json.loads(line)
    if "id" not in msg:
        continue
    method = msg.get("method")
    if method == "initialize":
        result = {"protocolVersion": msg["params"]["protocolVersion"],
                  "capabilities": {"tools": {}}, "serverInfo": {"name": "trivial", "version": "1"}}
    elif method == "tools/list":
        result = {"tools": tools}
    elif method == "tools/call":
        result = {"content": [{"type": "text", "text": "noon"}], "isError": False}
    else:
        result = {}
    sys.stdout.write(json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": result}) + "\n")
    sys.stdout.flush()
    if method == "tools/call":
        with open(sys.argv[1], "a") as f:
            f.write("%f\n" % time.time())
'''


def cli_round_trip(env, workdir: str, tmp: str) -> float:
    """Seconds from the trivial MCP server's answer to claude's first text delta after it."""
    script, log = os.path.join(tmp, "trivial_mcp.py"), os.path.join(tmp, "answered.log")
    with open(script, "w") as f:
        f.write(TRIVIAL_MCP)
    if os.path.exists(log):
        os.unlink(log)
    config = {"mcpServers": {"t": {"type": "stdio", "command": sys.executable,
                                   "args": [script, log]}}}
    argv = realclis.CLAUDE_STREAM + ["--mcp-config=" + json.dumps(config), "--strict-mcp-config",
                                     "--tools=", "--allowedTools=mcp__t"]
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, env=env, cwd=workdir)
    proc.stdin.write(ASK.encode())
    proc.stdin.close()
    first_delta = 0.0
    for line in proc.stdout:
        if b'"text_delta"' in line and os.path.exists(log) and not first_delta:
            first_delta = time.time()
    proc.wait()
    with open(log) as f:
        answered = float(f.read().split()[0])
    return first_delta - answered


def clinvk_round_trip(srv) -> float:
    """Seconds from sending the tool result to the continuation's first content delta."""
    tools = [{"type": "function", "function": {"name": "get_time",
                                               "parameters": {"type": "object"}}}]
    ask = [{"role": "user", "content": ASK}]
    reply = srv.post("/openai/v1/chat/completions",
                     {"model": "claude", "messages": ask, "tools": tools}, timeout=240).json()
    message = reply["choices"][0]["message"]
    body = {"model": "claude", "stream": True, "tools": tools, "messages": ask + [
        message, {"role": "tool", "content": "noon",
                  "tool_call_id": message["tool_calls"][0]["id"]}]}
    conn = srv.connection(240)
    start = time.time()
    conn.request("POST", "/openai/v1/chat/completions", json.dumps(body),
                 {"Content-Type": "application/json"})
    resp = conn.getresponse()
    took = 0.0
    for line in resp:
        if b'"content"' in line and b'"content": ""' not in line and b'"content":""' not in line:
            took = time.time() - start
            break
    resp.read()
    conn.close()
    return took


def main() -> int:
    if realclis.bin_dir() is None:
        print("skipped: the real claude is not installed (python3 -m tests.e2e.realclis "
              "install)")
        return 0
    tmp = tempfile.mkdtemp()
    workdir = os.path.join(tmp, "work")
    os.makedirs(workdir)
    with FakeModelAPI() as api:
        env = realclis.no_egress_env(api.url, os.path.join(tmp, "home"))
        own = [cli_round_trip(env, workdir, tmp) for _ in range(RUNS)]
        os.environ.clear()
        os.environ.update(env, CLINVK_HOME=os.path.join(tmp, "clinvk-home"))
        srv = make_server({})
        try:
            bridged = [clinvk_round_trip(srv) for _ in range(RUNS)]
        finally:
            srv.stop()
    own_ms, bridged_ms = 1000 * statistics.median(own), 1000 * statistics.median(bridged)
    print("claude's own MCP round trip (answer to the next first token): median %.1f ms"
          % own_ms)
    print("through clinvk (tool result request to the continuation's first token): median "
          "%.1f ms" % bridged_ms)
    print("added by the bridge: %.1f ms" % (bridged_ms - own_ms))
    record("15", "tool round trip on the real claude, added by the bridge",
           "%.1f ms (clinvk %.1f ms vs claude's own MCP round trip %.1f ms)"
           % (bridged_ms - own_ms, bridged_ms, own_ms))
    return 0


if __name__ == "__main__":
    sys.exit(main())
