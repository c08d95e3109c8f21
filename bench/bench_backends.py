"""Issue 17 benchmark: clinvk's added time per run, per backend (run: python3 bench/bench_backends.py).

For each of the six backends, `POST /api/v1/prompt` on its zero-work fake CLI against spawning
the very command the server runs (its argv and workdir from a ``dry_run`` request, the
environment the backend module gives a server run, e.g. gemini's untrusted-folder defaults, the
prompt on stdin, a session of its own like clinvk's runner), alternating, median of PAIRS pairs; once with
``ephemeral: true`` and once the default way (a session saved). Target: at most 1.5x, the
target of the same measure on claude (issue 5). The difference in milliseconds is what clinvk
adds to a run of that backend: its argv and environment, the parser of the CLI's output, the
session bookkeeping, and the backend's own after-run work: an ephemeral run of a CLI that
saves its session anyway removes it (gemini: ``--list-sessions`` then ``--delete-session``,
two more runs of the CLI; copilot: one short Python process; opencode: ``opencode session
delete``, one more run of the CLI).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Dict, List

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import ROOT, Server, dry_run_command, need_pyz, paired, post_ok, report  # noqa: E402

sys.path.insert(0, ROOT)
from clinvk_lib.backends import base, options  # noqa: E402

ISSUE = "17"
PROMPT = "hi"
PAIRS = 30
BACKENDS = ("claude", "codex", "gemini", "qwen", "copilot", "opencode")


def spawn(command: List[str], workdir: str, env: Dict[str, str]) -> None:
    """Run ``command`` the way the server's runner does; raise if it fails."""
    subprocess.run(command, input=PROMPT.encode(), stdout=subprocess.PIPE,
                   stderr=subprocess.PIPE, cwd=workdir, env=env, check=True,
                   start_new_session=True)


def run_env(backend: str, env: Dict[str, str], workdir: str) -> Dict[str, str]:
    """The environment a server run of ``backend`` gets (no project configuration)."""
    return base.get(backend).child_env(env, options.Options(project_config=False,
                                                            workdir=workdir))


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    need_pyz()
    with Server() as server:
        conn = server.connect()
        for backend in BACKENDS:
            for label, body in (("ephemeral", {"backend": backend, "prompt": PROMPT,
                                               "ephemeral": True}),
                                ("with session", {"backend": backend, "prompt": PROMPT})):
                command, workdir = dry_run_command(conn, body)
                env = run_env(backend, server.env, workdir)
                r = paired(lambda: timed(lambda: post_ok(conn, "/api/v1/prompt", body)),
                           lambda: timed(lambda: spawn(command, workdir, env)), PAIRS)
                report(ISSUE, "%s: POST /api/v1/prompt (%s) vs its fake direct, +%.1f ms"
                       % (backend, label, r["diff_ms"]), r, 1.5, "server", "fake direct")
        conn.close()


if __name__ == "__main__":
    main()
