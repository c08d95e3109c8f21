"""Issue 7 benchmark: what the guards cost (run: python3 bench/bench_hardening.py).

`POST /api/v1/prompt` on the zero-work fake claude (FAKE_CLI_MODE=ok), ephemeral, on a keep-alive
connection, against two `clinvk serve` processes side by side: one with API keys, rate limiting
(limits high enough that nothing is refused) and metrics all on, one with them all off. Both
get the same request, API key header included. Median of PAIRS alternating pairs: at most
1.1x.
"""

from __future__ import annotations

import http.client
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import Server, machine, need_pyz, paired, report  # noqa: E402

ISSUE = "7"
PAIRS = 300
KEY = "bench-key-0123456789abcdef"
BODY = json.dumps({"backend": "claude", "prompt": "hi", "ephemeral": True}).encode()
HEADERS = {"Content-Type": "application/json", "X-Api-Key": KEY}

GUARDED = {
    "CLINVK_API_KEYS": "other-key-1,other-key-2," + KEY,
    "CLINVK_SERVER_RATE_LIMIT_ENABLED": "true",
    "CLINVK_SERVER_RATE_LIMIT_RPS": "1000000",
    "CLINVK_SERVER_RATE_LIMIT_BURST": "1000000",
    "CLINVK_SERVER_METRICS_ENABLED": "true",
}


def timed_prompt(conn: http.client.HTTPConnection):
    def run() -> float:
        start = time.perf_counter()
        conn.request("POST", "/api/v1/prompt", body=BODY, headers=HEADERS)
        resp = conn.getresponse()
        data = resp.read()
        elapsed = time.perf_counter() - start
        if resp.status != 200 or json.loads(data).get("exit_code"):
            raise RuntimeError("prompt answered %d: %s" % (resp.status, data[:300]))
        return elapsed
    return run


def main() -> None:
    need_pyz()
    for name in [k for k in os.environ if k.startswith("CLINVK_")]:
        del os.environ[name]                 # neither server may pick up the caller's settings
    print("machine:", machine())
    with Server(GUARDED) as guarded, Server() as plain:
        on, off = guarded.connect(), plain.connect()
        result = paired(timed_prompt(on), timed_prompt(off), PAIRS)
        on.request("GET", "/metrics", headers={"X-Api-Key": KEY})
        metrics = on.getresponse().read().decode()
        if "clinvk_http_requests_total" not in metrics:
            raise RuntimeError("the guarded server serves no metrics: %s" % metrics[:300])
    report(ISSUE, "guards overhead (prompt)", result, 1.1, "auth+rate limit+metrics on",
           "all off")
    print("difference of the medians: %+.2f ms" % result["diff_ms"])


if __name__ == "__main__":
    main()
