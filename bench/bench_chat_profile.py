"""The chat profile against the agent profile and the bare CLI, per backend, on the real CLIs
(run: python3 bench/bench_chat_profile.py; needs the e2e tier's CLIs, tests/e2e/realclis.py
install and install-more): everything on 127.0.0.1, the fake model API behind each CLI.

For one "hello" turn, measured in interleaved rounds (chat, agent, bare; the order rotates):

- bytes the CLI sent to the model API (every request of the turn: the model call and any side
  request such as gemini's router or claude's token count; Content-Length as received);
- tool definitions offered in the model call (the most offered by one request of the turn);
- wall time: for clinvk, from sending ``POST /openai/v1/chat/completions`` (``<backend>-chat``
  or ``<backend>``) to the whole reply; for the bare CLI, its run (``claude -p --output-format
  json`` etc., prompt on stdin) from start to exit. Both keep a session, as a bare CLI does:
  ``X-Clinvk-Ephemeral`` would add gemini's two session-deleting runs (and qwen's, copilot's,
  opencode's clean-ups) to clinvk's side.

Medians of ROUNDS rounds. Targets (claude): chat bytes <= 10% of the agent profile's, chat turn
<= 0.85x the bare CLI's.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import machine, record, report, report_value  # noqa: E402
from tests.e2e import realclis  # noqa: E402
from tests.fakes.fake_model_api import FakeModelAPI, classify, offered_tool_names  # noqa: E402
from tests.serverutil import make_server  # noqa: E402

ROUNDS = int(os.environ.get("CLINVK_BENCH_ROUNDS", "20"))
BARE = {"claude": realclis.CLAUDE_JSON, "codex": realclis.CODEX_JSON,
        "gemini": realclis.GEMINI_JSON, "qwen": realclis.QWEN_JSON,
        "copilot": realclis.COPILOT_JSON, "opencode": realclis.OPENCODE_JSON}
MAIN_KINDS = ("anthropic", "openai", "gemini", "chat")
VARIANTS = ("chat", "agent", "bare")
Turn = Tuple[float, int, int]           # seconds, bytes sent, tool definitions offered


def through_clinvk(port: int, model: str) -> float:
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "hello"}]})
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    start = time.perf_counter()
    conn.request("POST", "/openai/v1/chat/completions", body=body,
                 headers={"Content-Type": "application/json"})
    reply = conn.getresponse()
    data = reply.read()
    elapsed = time.perf_counter() - start
    conn.close()
    if reply.status != 200:
        raise RuntimeError("%s: %d %s" % (model, reply.status, data[:300]))
    return elapsed


def bare(argv: List[str], env: Dict[str, str], workdir: str) -> float:
    exe = shutil.which(argv[0], path=env["PATH"])
    start = time.perf_counter()
    done = subprocess.run([exe] + argv[1:], input=b"hello", stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL, env=env, cwd=workdir, timeout=300)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError("%s exited %d" % (argv[0], done.returncode))
    return elapsed


def body_bytes(request: Dict[str, object]) -> int:
    """The request body's size as sent (Content-Length, in whatever case the CLI spells it)."""
    sizes = [v for k, v in request["headers"].items() if k.lower() == "content-length"]
    return int(sizes[0]) if sizes else len(json.dumps(request["json"]).encode())


def turn(api: FakeModelAPI, run) -> Turn:
    """One turn by ``run()`` and what the fake received meanwhile."""
    first = len(api.requests)
    elapsed = run()
    requests = api.requests[first:]
    sent = sum(body_bytes(r) for r in requests)
    tools = max([len(offered_tool_names(r["json"])) for r in requests
                 if classify("POST", r["path"].split("?")[0], r["json"]) in MAIN_KINDS] or [0])
    return elapsed, sent, tools


def measure(backend: str, api: FakeModelAPI, port: int, env: Dict[str, str],
            workdir: str) -> Dict[str, List[Turn]]:
    runs = {"chat": lambda: through_clinvk(port, backend + "-chat"),
            "agent": lambda: through_clinvk(port, backend),
            "bare": lambda: bare(BARE[backend], env, workdir)}
    for name in VARIANTS:
        turn(api, runs[name])                   # warm-up: page cache, first-run set-up
    turns: Dict[str, List[Turn]] = {name: [] for name in VARIANTS}
    for i in range(ROUNDS):
        for name in VARIANTS[i % 3:] + VARIANTS[:i % 3]:
            turns[name].append(turn(api, runs[name]))
    return turns


def medians(turns: List[Turn]) -> Tuple[float, float, float]:
    return (statistics.median(t[0] for t in turns) * 1000,
            statistics.median(t[1] for t in turns), statistics.median(t[2] for t in turns))


def installed(env: Dict[str, str]) -> List[str]:
    return [name for name, argv in BARE.items() if shutil.which(argv[0], path=env["PATH"])]


def summary(backend: str, turns: Dict[str, List[Turn]]) -> Dict[str, Tuple[float, float, float]]:
    figures = {name: medians(turns[name]) for name in VARIANTS}
    for name in VARIANTS:
        ms, sent, tools = figures[name]
        print("%-8s %-5s %8.0f ms %9.0f bytes %4.0f tools" % (backend, name, ms, sent, tools))
    return figures


def publish(backend: str, figures: Dict[str, Tuple[float, float, float]]) -> bool:
    (chat_ms, chat_b, chat_t), (agent_ms, agent_b, agent_t), (bare_ms, bare_b, bare_t) = (
        figures["chat"], figures["agent"], figures["bare"])
    if backend != "claude":
        record("20", "chat profile on %s" % backend,
               "bytes %d chat / %d agent / %d bare (%.0f%% of agent); tools %d / %d / %d; "
               "turn %.0f / %.0f / %.0f ms (chat %.2fx bare, %.2fx agent)"
               % (chat_b, agent_b, bare_b, 100.0 * chat_b / agent_b, chat_t, agent_t, bare_t,
                  chat_ms, agent_ms, bare_ms, chat_ms / bare_ms, chat_ms / agent_ms))
        return True
    ok = report_value("20", "claude chat profile: bytes to the model per hello, % of agent",
                      "chat %d bytes, %d tools vs agent %d bytes, %d tools (bare CLI %d bytes, "
                      "%d tools)" % (chat_b, chat_t, agent_b, agent_t, bare_b, bare_t),
                      100.0 * chat_b / agent_b, "%", 10.0)
    pair = {"a_ms": chat_ms, "b_ms": bare_ms, "ratio": chat_ms / bare_ms, "pairs": ROUNDS}
    ok = report("20", "claude chat profile turn vs bare claude -p --output-format json", pair,
                0.85, "chat", "bare") and ok
    record("20", "claude agent profile turn", "%.0f ms (%.2fx bare)"
           % (agent_ms, agent_ms / bare_ms))
    return ok


def main(argv: Optional[List[str]] = None) -> int:
    if realclis.bin_dir() is None:
        print("skipped: the real CLIs are not installed (python3 -m tests.e2e.realclis install)")
        return 0
    print(machine())
    tmp = tempfile.mkdtemp()
    workdir = os.path.join(tmp, "work")
    os.makedirs(workdir)
    ok = True
    with FakeModelAPI() as api:
        env = realclis.no_egress_env(api.url, os.path.join(tmp, "home"))
        backends = (argv or sys.argv[1:]) or installed(env)
        saved = dict(os.environ)
        os.environ.clear()
        os.environ.update(env, CLINVK_HOME=os.path.join(tmp, "clinvk-home"))
        srv = make_server({"server.default_workdir": workdir})
        try:
            for backend in backends:
                turns = measure(backend, api, srv.port, env, workdir)
                ok = publish(backend, summary(backend, turns)) and ok
        finally:
            srv.stop()
            os.environ.clear()
            os.environ.update(saved)
    shutil.rmtree(tmp, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
