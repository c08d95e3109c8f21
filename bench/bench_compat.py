"""Issue 6 benchmark: what the OpenAI- and Anthropic-compatible routes cost (run: python3
bench/bench_compat.py).

On one `clinvk serve` with the zero-work fake claude, on keep-alive connections:
`POST /openai/v1/chat/completions` (non-streaming, model "claude", one user message) against
`POST /api/v1/prompt` with the same prompt, median of PAIRS alternating pairs, target at most
1.1x; then `POST /anthropic/v1/messages` the same way. Both sides do the same session work:
none (`X-Clinvk-Ephemeral: true` on the compat requests, ``"ephemeral": true`` on the native
ones). Before timing, a server whose fake records every run (FAKE_CLI_RECORD) checks that the
three requests spawn the very same command (argv, stdin, workdir).
"""

from __future__ import annotations

import http.client
import json
import os
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Tuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import Server, need_pyz, paired, report  # noqa: E402

ISSUE = "6"
PAIRS = 200
PROMPT = "hi"
JSON = {"Content-Type": "application/json"}
COMPAT = dict(JSON, **{"X-Clinvk-Ephemeral": "true"})

# (label, path, body, headers, the reply text from the answer)
NATIVE = ("native", "/api/v1/prompt",
          {"backend": "claude", "prompt": PROMPT, "ephemeral": True}, JSON,
          lambda answer: answer["output"])
OPENAI = ("openai", "/openai/v1/chat/completions",
          {"model": "claude", "messages": [{"role": "user", "content": PROMPT}]}, COMPAT,
          lambda answer: answer["choices"][0]["message"]["content"])
ANTHROPIC = ("anthropic", "/anthropic/v1/messages",
             {"model": "claude", "max_tokens": 1024,
              "messages": [{"role": "user", "content": PROMPT}]},
             dict(COMPAT, **{"anthropic-version": "2023-06-01"}),
             lambda answer: answer["content"][0]["text"])


def call(conn: http.client.HTTPConnection, route) -> Tuple[float, str]:
    """(seconds, reply text) of one request; raises unless it is a 200 with a reply and no
    session (the compat routes name a session in X-Clinvk-Session-Id)."""
    label, path, body, headers, reply_of = route
    data = json.dumps(body).encode()
    start = time.perf_counter()
    conn.request("POST", path, body=data, headers=headers)
    resp = conn.getresponse()
    raw = resp.read()
    took = time.perf_counter() - start
    answer: Dict[str, Any] = json.loads(raw)
    if resp.status != 200 or answer.get("exit_code") or resp.getheader("X-Clinvk-Session-Id") \
            or answer.get("session_id"):
        raise RuntimeError("%s answered %d (expected an ephemeral 200): %s"
                           % (path, resp.status, raw[:500]))
    text = reply_of(answer)
    if not text:
        raise RuntimeError("%s answered without a reply: %s" % (path, raw[:500]))
    return took, text


def timer(conn: http.client.HTTPConnection, route) -> Callable[[], float]:
    return lambda: call(conn, route)[0]


def check_same_command() -> None:
    """Each route, once, on a server whose fake records its runs: the three runs must be
    identical (argv, stdin, workdir), or the comparison would not be like for like."""
    record = os.path.join(tempfile.mkdtemp(prefix="clinvk-bench-compat-"), "runs.jsonl")
    with Server({"FAKE_CLI_RECORD": record}) as server:
        conn = server.connect()
        replies = [call(conn, route)[1] for route in (NATIVE, OPENAI, ANTHROPIC)]
        conn.close()
    with open(record) as f:
        runs: List[Dict[str, Any]] = [json.loads(line) for line in f]
    if len(runs) != 3:
        raise RuntimeError("expected 3 recorded runs, got %d" % len(runs))
    for run, route in zip(runs[1:], (OPENAI, ANTHROPIC)):
        for key in ("argv", "stdin", "cwd"):
            if run[key] != runs[0][key]:
                raise RuntimeError("%s runs a different %s than the native route: %r vs %r"
                                   % (route[0], key, run[key], runs[0][key]))
    if len(set(replies)) != 1:
        raise RuntimeError("the routes answered different texts: %r" % replies)
    print("same command on all three routes: %s (stdin %r)" % (" ".join(runs[0]["argv"]),
                                                                runs[0]["stdin"]))


def main() -> None:
    need_pyz()
    for name in [k for k in os.environ if k.startswith("CLINVK_")]:
        del os.environ[name]                 # the server must not pick up the caller's settings
    check_same_command()
    with Server() as server:
        native, compat = server.connect(), server.connect()
        for route in (OPENAI, ANTHROPIC):
            r = paired(timer(compat, route), timer(native, NATIVE), PAIRS)
            report(ISSUE, "POST %s vs POST /api/v1/prompt (ephemeral)" % route[1], r, 1.1,
                   route[0], "native")
            print("difference of the medians: %+.2f ms" % r["diff_ms"])
        native.close()
        compat.close()


if __name__ == "__main__":
    main()
