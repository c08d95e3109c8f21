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
import os
import sys
from typing import Callable, Tuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (Server, Timed, check_same_command, need_pyz, paired,  # noqa: E402
                    reply_text, report)

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
    timed = Timed(conn, path, body, headers)
    if not timed.ok() or timed.session:
        raise RuntimeError("%s answered %d (expected an ephemeral 200): %s"
                           % (path, timed.status, timed.raw[:500]))
    return timed.took, reply_text(timed, path, reply_of)


def timer(conn: http.client.HTTPConnection, route) -> Callable[[], float]:
    return lambda: call(conn, route)[0]


def main() -> None:
    need_pyz()
    for name in [k for k in os.environ if k.startswith("CLINVK_")]:
        del os.environ[name]                 # the server must not pick up the caller's settings
    check_same_command("clinvk-bench-compat-", [
        lambda conn, route=route: call(conn, route)[1] for route in (NATIVE, OPENAI, ANTHROPIC)],
        [(0, 1, OPENAI[0]), (0, 2, ANTHROPIC[0])])
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
