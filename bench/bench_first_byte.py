"""Issue 20 benchmark: the first byte of every streaming route while the backend says nothing
(run: python3 bench/bench_first_byte.py).

On one `clinvk serve` whose fake CLIs stay silent (FAKE_CLI_GATE names a file that never
exists), each streaming route is requested on a fresh connection: the time from sending the
request to its response headers, and to the first byte of its body (the dialect's first
event: the OpenAI role chunk, Anthropic's message_start, Responses' response.created; the
native NDJSON stream has none before the backend's init). The client then hangs up, which
stops the backend, and the next request waits until it is gone. Each route alternates with a
`GET /health` on a fresh connection (the baseline: a request that does no work), median of
ROUNDS pairs; target: headers within 5 ms of the request. Measured with the runs' workdir
outside a git repository and inside one (preparing such a run reads the repository's git
configuration first, or only stats its files when they did not change since the last run).
``--before OTHER.pyz``: the in-repository figures of another build beside this one instead.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import sys
import tempfile
import time
from typing import Any, Dict, Optional, Tuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import ROOT, Server, machine, need_pyz, record, report_value  # noqa: E402

ISSUE = "20"
ROUNDS = 20
TARGET_MS = 5.0
HI = [{"role": "user", "content": "hi"}]

# (label, path, body)
ROUTES = [
    ("POST /openai/v1/chat/completions", "/openai/v1/chat/completions",
     {"model": "claude", "messages": HI, "stream": True}),
    ("POST /anthropic/v1/messages", "/anthropic/v1/messages",
     {"model": "claude", "max_tokens": 64, "messages": HI, "stream": True}),
    ("POST /openai/v1/responses", "/openai/v1/responses",
     {"model": "claude", "input": "hi", "stream": True}),
    ("POST /api/v1/prompt (stream-json)", "/api/v1/prompt",
     {"backend": "claude", "prompt": "hi", "output_format": "stream-json"}),
]


def request_bytes(port: int, method: str, path: str, body: Optional[Dict[str, Any]]) -> bytes:
    data = json.dumps(body).encode() if body is not None else b""
    head = "%s %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n" % (method, path, port)
    if body is not None:
        head += "Content-Type: application/json\r\nContent-Length: %d\r\n" % len(data)
    return (head + "\r\n").encode() + data


def first_bytes(port: int, method: str, path: str, body: Optional[Dict[str, Any]],
                want_body: bool) -> Tuple[float, float, bytes]:
    """(seconds to the end of the headers, seconds to the first body byte or 0, the status
    line) of one request on a fresh connection, closed afterwards."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        data = request_bytes(port, method, path, body)
        got = b""
        start = time.perf_counter()
        sock.sendall(data)
        while b"\r\n\r\n" not in got:
            chunk = sock.recv(65536)
            if not chunk:
                raise RuntimeError("%s closed before its headers: %r" % (path, got[:300]))
            got += chunk
        headers_at = time.perf_counter() - start
        body_at = 0.0
        if want_body:
            while len(got) <= got.index(b"\r\n\r\n") + 4:
                chunk = sock.recv(65536)
                if not chunk:
                    raise RuntimeError("%s ended before its first event" % path)
                got += chunk
            body_at = time.perf_counter() - start
        return headers_at, body_at, got.split(b"\r\n", 1)[0]
    finally:
        sock.close()


def wait_until_no_children(server: Server) -> None:
    deadline = time.monotonic() + 30
    while server.running_children() and time.monotonic() < deadline:
        time.sleep(0.01)


def measure(server: Server, where: str, target: bool) -> bool:
    """Every route's first byte on ``server``: RESULT lines against the target when
    ``target``, else RECORD lines; True when all are within it."""
    ok = True
    for label, path, body in ROUTES:
        sse = path != "/api/v1/prompt"
        heads, firsts, bases = [], [], []
        for _ in range(ROUNDS):
            bases.append(first_bytes(server.port, "GET", "/health", None, False)[0])
            head, first, status = first_bytes(server.port, "POST", path, body, sse)
            if b" 200 " not in status:
                raise RuntimeError("%s answered %r" % (path, status))
            heads.append(head)
            firsts.append(first)
            wait_until_no_children(server)
        head_ms = statistics.median(heads) * 1000
        base_ms = statistics.median(bases) * 1000
        figures = "headers %.2f ms vs GET /health %.2f ms (%.2fx), median of %d pairs" % (
            head_ms, base_ms, head_ms / base_ms, ROUNDS)
        if sse:
            figures += "; first event %.2f ms" % (statistics.median(firsts) * 1000)
        name = "first byte of %s, silent backend, %s" % (label, where)
        if target:
            ok = report_value(ISSUE, name, figures, head_ms, "ms", TARGET_MS, fmt="%.2f") and ok
        else:
            record(ISSUE, name, figures)
    return ok


def compare(before: str) -> None:
    """Every route's first byte with the runs' workdir in this git repository, on a server of
    ``before`` and one of dist/clinvk.pyz side by side: each round requests the route from
    both, in turn (RECORD lines)."""
    never = os.path.join(tempfile.mkdtemp(prefix="clinvk-bench-first-byte-"), "never")
    os.chdir(ROOT)
    servers = [("before", Server({"FAKE_CLI_GATE": never}, pyz=before)),
               ("after", Server({"FAKE_CLI_GATE": never}))]
    try:
        for label, path, body in ROUTES:
            heads: Dict[str, list] = {name: [] for name, _ in servers}
            for _ in range(ROUNDS):
                for name, server in servers:
                    head, _, status = first_bytes(server.port, "POST", path, body,
                                                  path != "/api/v1/prompt")
                    if b" 200 " not in status:
                        raise RuntimeError("%s answered %r" % (path, status))
                    heads[name].append(head)
                    wait_until_no_children(server)
            record(ISSUE, "first byte of %s, workdir in a git repository, before/after" % label,
                   "headers %s, median of %d interleaved rounds" % (
                       " vs ".join("%s %.2f ms" % (name, statistics.median(heads[name]) * 1000)
                                   for name, _ in servers), ROUNDS))
    finally:
        for _, server in servers:
            server.stop()


def main() -> None:
    need_pyz()
    if sys.argv[1:2] == ["--before"]:
        print(machine())
        compare(os.path.abspath(sys.argv[2]))
        return
    for name in [k for k in os.environ if k.startswith("CLINVK_")]:
        del os.environ[name]
    outside = tempfile.mkdtemp(prefix="clinvk-bench-first-byte-")
    never = os.path.join(outside, "never")
    print(machine())
    ok = True
    # The server's own directory is the runs' workdir. In a git repository, preparing a run
    # reads the repository's configuration (backends/gitenv.py: 2-4 git calls, or stat calls
    # only while its files are unchanged) before the headers, since what it finds can refuse
    # the run; outside one it calls no git.
    for where, workdir, target in (("workdir outside a git repository", outside, True),
                                   ("workdir in a git repository", ROOT, True)):
        os.chdir(workdir)
        with Server({"FAKE_CLI_GATE": never}) as server:
            ok = measure(server, where, target) and ok
            record(ISSUE, "server (%s)" % where, "peak RSS %.1f MiB" % server.peak_rss_mb())
    if not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
