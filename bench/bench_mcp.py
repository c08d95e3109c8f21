"""Issue 9 benchmark: the MCP server (run: python3 bench/bench_mcp.py).

`tools/call clinvk_prompt` on the zero-work fake claude, sequential calls to one long-lived
`clinvk mcp` process, against `POST /api/v1/prompt` with the same arguments on a running
`clinvk serve` (keep-alive connection): per-call time, median of 60 pairs, target <= 1.1x.
Both runs are ephemeral and both servers start in the same directory, so they spawn the same
command.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import PY, PYZ, Server, fake_env, need_pyz, paired, post_ok, report  # noqa: E402

ISSUE = "9"
ARGS = {"backend": "claude", "prompt": "hi", "ephemeral": True}


class McpClient:
    """One `clinvk mcp` child spoken to over its stdin/stdout, one request at a time."""

    def __init__(self, env: Dict[str, str]) -> None:
        self.proc = subprocess.Popen([PY, PYZ, "mcp"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
                                     start_new_session=True)
        self.next_id = 0
        self.request("initialize", {"protocolVersion": "2025-06-18", "capabilities": {},
                                    "clientInfo": {"name": "clinvk-bench", "version": "1"}})
        self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})

    def send(self, msg: Dict[str, Any]) -> None:
        self.proc.stdin.write(json.dumps(msg).encode() + b"\n")
        self.proc.stdin.flush()

    def request(self, method: str, params: Dict[str, Any]) -> Dict[str, Any]:
        """Send a request and return its result (notifications in between are skipped)."""
        self.next_id += 1
        self.send({"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params})
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("clinvk mcp closed its output")
            msg = json.loads(line)
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError("%s failed: %r" % (method, msg["error"]))
                return msg["result"]

    def close(self) -> None:
        self.proc.stdin.close()          # end of input: the server returns
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()


def main() -> None:
    need_pyz()
    home = tempfile.mkdtemp(prefix="clinvk-bench-mcp-")
    client = McpClient(fake_env({"CLINVK_HOME": home}))
    try:
        with Server() as server:
            conn = server.connect()

            def mcp_call() -> float:
                start = time.perf_counter()
                result = client.request("tools/call", {"name": "clinvk_prompt",
                                                       "arguments": ARGS})
                took = time.perf_counter() - start
                if result.get("isError"):
                    raise RuntimeError("clinvk_prompt failed: %r" % result)
                return took

            def http_call() -> float:
                start = time.perf_counter()
                post_ok(conn, "/api/v1/prompt", ARGS)
                return time.perf_counter() - start

            r = paired(mcp_call, http_call, 60)
            conn.close()
    finally:
        client.close()
    report(ISSUE, "MCP tools/call clinvk_prompt vs POST /api/v1/prompt", r, 1.1,
           "mcp", "http")


if __name__ == "__main__":
    main()
