"""Claude Code (the real claude 2.1.197) as a CLIENT of clinvk: ``claude -p`` with
``ANTHROPIC_BASE_URL=http://127.0.0.1:PORT/anthropic`` completes a text-only turn answered by a
clinvk backend, in the no-egress environment (proxies at 127.0.0.1:9).

Claude Code's request ends ``messages`` with a ``role: "system"`` entry and carries ~24 tool
definitions, ``thinking``, ``context_management``, ``output_config`` and ``cache_control``;
in print mode it makes exactly one request, ``POST /v1/messages?beta=true`` (no
count_tokens, models or other start-up calls), checked here from clinvk's access log.

The backends are the fake CLIs (``clinvk.py serve`` as a child process, tests/serveproc.py),
so the answer is known exactly; one test puts the real codex and gemini behind clinvk too.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List

import pytest

from tests.conftest import records
from tests.e2e import realclis
from tests.serveproc import ServeProcess

PROMPT = "say hello to clinvk"


@pytest.fixture
def record(tmp_path) -> str:
    """The FAKE_CLI_RECORD file the server's fake CLIs append their runs to."""
    return str(tmp_path / "record.jsonl")


@pytest.fixture
def clinvk(tmp_path, record):
    """``clinvk(config=None)`` -> a started ServeProcess driving the fake CLIs; all stopped
    afterwards."""
    started: List[ServeProcess] = []

    def start(config: Any = None) -> ServeProcess:
        srv = ServeProcess(str(tmp_path / ("clinvk-home-%d" % len(started))),
                           env={"FAKE_CLI_RECORD": record}, config=config)
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.stop()


def claude_code(real_clis: str, home: str, workdir: str, base_url: str, api_key: str,
                *flags: str) -> Dict[str, Any]:
    """One ``claude -p --output-format json`` turn against ``base_url``; its JSON result."""
    env = realclis.no_egress_env(base_url, home, {"ANTHROPIC_API_KEY": api_key})
    assert env["ANTHROPIC_BASE_URL"] == base_url and env["HTTPS_PROXY"] == realclis.DEAD_PROXY
    done = realclis.run_cli(realclis.CLAUDE_JSON + list(flags), PROMPT, env, workdir)
    assert done.stdout.strip(), "claude printed nothing; stderr: %s" % done.stderr[-2000:]
    return json.loads(done.stdout)


def system_prompt(run: Dict[str, Any]) -> str:
    flags = [a for a in run["argv"] if a.startswith("--system-prompt=")]
    return flags[0][len("--system-prompt="):] if flags else ""


def requests_seen(srv: ServeProcess) -> List[str]:
    """The 'METHOD path' of every request in the server's access log."""
    seen = []
    for line in srv.log_lines:
        for method in ("GET ", "POST ", "HEAD ", "PUT ", "DELETE ", "OPTIONS "):
            at = line.find(method)
            if at >= 0:
                seen.append(" ".join(line[at:].split()[:2]))
    return seen


def test_claude_code_turn_is_answered_by_a_clinvk_backend(real_clis, real_home, workdir,
                                                          clinvk, record):
    srv = clinvk()
    result = claude_code(real_clis, real_home, workdir, srv.url + "/anthropic", "anything")
    runs = records(record)
    assert len(runs) == 1 and runs[0]["backend"] == "claude"
    assert result["is_error"] is False and result["subtype"] == "success"
    assert result["result"] == "echo: " + runs[0]["stdin"]
    assert runs[0]["stdin"].endswith("\n" + PROMPT)
    # The system entry Claude Code puts after the user message joined the system prompt.
    assert "Available agent types" in system_prompt(runs[0])
    assert requests_seen(srv) == ["POST /anthropic/v1/messages"], srv.log_lines


def test_claude_code_sends_the_api_key_clinvk_requires(real_clis, real_home, workdir, clinvk,
                                                       record):
    srv = clinvk({"server": {"api_keys": ["k-claude-code-e2e"]}})
    base = srv.url + "/anthropic"
    refused = claude_code(real_clis, real_home, workdir, base, "k-wrong")
    assert refused["is_error"] is True and records(record) == []
    result = claude_code(real_clis, real_home, workdir, base, "k-claude-code-e2e")
    assert result["is_error"] is False
    assert result["result"] == "echo: " + records(record)[-1]["stdin"]


def test_claude_code_model_flag_picks_the_clinvk_backend(real_clis, real_home, workdir,
                                                         clinvk, record):
    srv = clinvk()
    result = claude_code(real_clis, real_home, workdir, srv.url + "/anthropic", "anything",
                         "--model", "gemini")
    runs = records(record)
    assert [r["backend"] for r in runs] == ["gemini"]
    assert result["is_error"] is False
    assert result["result"] == "echo: " + runs[0]["stdin"]
    # gemini has no system prompt flag: Claude Code's system text opens the prompt.
    assert runs[0]["stdin"].startswith("<system>\n") and "Available agent types" in \
        runs[0]["stdin"]


@pytest.mark.parametrize("backend", ["codex", "gemini"])
def test_claude_code_with_a_real_cli_behind_clinvk(backend, real_clis, serve_port, fake_api,
                                                   tmp_path, workdir):
    client_home = str(tmp_path / "client-home")
    os.makedirs(client_home)
    result = claude_code(real_clis, client_home, workdir,
                         "http://127.0.0.1:%d/anthropic" % serve_port, "anything",
                         "--model", backend)
    turns = fake_api.main_requests({"codex": "openai", "gemini": "gemini"}[backend])
    assert result["is_error"] is False, result
    assert turns and result["result"] == turns[-1]["reply"]
    assert turns[-1]["user_text"].endswith("\n" + PROMPT)
