"""Issue 14 benchmark: what the OpenAI Responses route costs (run: python3
bench/bench_responses.py).

On one `clinvk serve` with the zero-work fake claude, on keep-alive connections, median of
PAIRS alternating pairs, target at most 1.05x:
- `POST /openai/v1/responses` with `store: false` (no response kept, no session) against
  `POST /api/v1/prompt` with `"ephemeral": true`: the same work, like for like;
- `POST /openai/v1/responses` as clients send it (`store` left to its default, true: a session
  and a stored response) against `POST /api/v1/prompt` saving a session: the Responses side
  also writes its response file (one atomic write, no directory fsync).
Before timing, a server whose fake records every run (FAKE_CLI_RECORD) checks that both routes
spawn the very same command (argv, stdin, workdir).
"""

from __future__ import annotations

import http.client
import os
import sys
from typing import Callable, Tuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (Server, Timed, check_same_command, need_pyz, paired,  # noqa: E402
                    reply_text, report)

ISSUE = "14"
PAIRS = 200
PROMPT = "hi"

# (label, path, body, whether it keeps a session, the reply text from the answer)
NATIVE_EPHEMERAL = ("native", "/api/v1/prompt",
                    {"backend": "claude", "prompt": PROMPT, "ephemeral": True}, False,
                    lambda answer: answer["output"])
NATIVE_SESSION = ("native", "/api/v1/prompt", {"backend": "claude", "prompt": PROMPT}, True,
                  lambda answer: answer["output"])
RESPONSES_UNSTORED = ("responses", "/openai/v1/responses",
                      {"model": "claude", "input": PROMPT, "store": False}, False,
                      lambda answer: answer["output"][0]["content"][0]["text"])
RESPONSES_STORED = ("responses", "/openai/v1/responses", {"model": "claude", "input": PROMPT},
                    True, lambda answer: answer["output"][0]["content"][0]["text"])


def call(conn: http.client.HTTPConnection, route) -> Tuple[float, str]:
    """(seconds, reply text) of one request; raises unless it is a 200 with a reply that kept
    a session exactly when the route should."""
    label, path, body, keeps_session, reply_of = route
    timed = Timed(conn, path, body)
    if not timed.ok() or bool(timed.session) != keeps_session:
        raise RuntimeError("%s answered %d (expected a 200 %s a session): %s"
                           % (path, timed.status, "with" if keeps_session else "without",
                              timed.raw[:500]))
    return timed.took, reply_text(timed, path, reply_of)


def timer(conn: http.client.HTTPConnection, route) -> Callable[[], float]:
    return lambda: call(conn, route)[0]


def main() -> None:
    need_pyz()
    for name in [k for k in os.environ if k.startswith("CLINVK_")]:
        del os.environ[name]                 # the server must not pick up the caller's settings
    check_same_command("clinvk-bench-responses-", [
        lambda conn, route=route: call(conn, route)[1]
        for route in (NATIVE_EPHEMERAL, RESPONSES_UNSTORED, NATIVE_SESSION, RESPONSES_STORED)],
        [(0, 1, "responses (store: false)"), (2, 3, "responses (stored)")])
    with Server() as server:
        native, responses = server.connect(), server.connect()
        for ours, theirs, what in ((RESPONSES_UNSTORED, NATIVE_EPHEMERAL,
                                    "store: false vs ephemeral"),
                                   (RESPONSES_STORED, NATIVE_SESSION,
                                    "stored (default) vs session saved")):
            r = paired(timer(responses, ours), timer(native, theirs), PAIRS)
            report(ISSUE, "POST /openai/v1/responses vs POST /api/v1/prompt, %s" % what, r,
                   1.05, "responses", "native")
            print("difference of the medians: %+.2f ms" % r["diff_ms"])
        native.close()
        responses.close()


if __name__ == "__main__":
    main()
