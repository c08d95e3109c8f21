"""The real claude CLI with ``clinvk mcp`` as its MCP server, offline against the fake model API.

The fake model asks claude to call the ``clinvk_prompt`` tool with backend codex; clinvk runs the
real codex against the same fake; codex's answer travels back through MCP into claude's turn,
and the next model request carries it as the tool result.
"""
from __future__ import annotations

import json
import os
import sys

from tests.e2e.realclis import CLAUDE_JSON, run_cli

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Claude Code names MCP tools mcp__<server>__<tool>.
TOOL = "mcp__clinvk__clinvk_prompt"
QUESTION = "Second opinion please: is 91 a prime number?"


def mcp_config(clinvk_home: str) -> dict:
    """claude's --mcp-config: clinvk mcp from the source tree. claude 2.1.197 starts MCP servers
    with its own environment plus this ``env``, so codex inherits the no-egress settings."""
    return {"mcpServers": {"clinvk": {
        "type": "stdio",
        "command": sys.executable,
        "args": [os.path.join(ROOT, "clinvk.py"), "mcp"],
        "env": {"CLINVK_HOME": clinvk_home},
    }}}


def test_claude_calls_clinvk_prompt_and_codex_answer_reaches_the_model(fake_api, real_env,
                                                                        workdir, tmp_path):
    clinvk_home = tmp_path / "clinvk-home"
    clinvk_home.mkdir()
    config_file = tmp_path / "mcp.json"
    config_file.write_text(json.dumps(mcp_config(str(clinvk_home))))
    fake_api.queue_tool_use(TOOL, {"backend": "codex", "prompt": QUESTION, "workdir": workdir})

    argv = CLAUDE_JSON + ["--mcp-config", str(config_file), "--strict-mcp-config",
                          "--allowedTools", TOOL]
    proc = run_cli(argv, "ask codex whether 91 is prime", real_env, workdir, timeout=180)

    assert proc.returncode == 0, proc.stderr
    codex_turns = [r for r in fake_api.main_requests("openai") if QUESTION in r["user_text"]]
    assert len(codex_turns) == 1, [r["user_text"] for r in fake_api.main_requests("openai")]
    codex_answer = "FAKE-REPLY: " + QUESTION[:60]
    after_tool = [r for r in fake_api.main_requests("anthropic") if r["tool_results"]]
    assert after_tool, "claude never sent the tool result back to the model"
    assert codex_answer in after_tool[-1]["tool_results"][0]
    assert codex_answer in json.loads(proc.stdout)["result"]


def test_claude_mcp_add_registers_clinvk_and_its_health_check_connects(real_env, workdir,
                                                                       tmp_path):
    # The registration the README documents: claude mcp add clinvk -- python3 .../clinvk mcp
    env = dict(real_env, CLINVK_HOME=str(tmp_path))
    added = run_cli(["claude", "mcp", "add", "clinvk", "--", sys.executable,
                     os.path.join(ROOT, "clinvk.py"), "mcp"], "", env, workdir, timeout=120)
    assert added.returncode == 0, added.stderr
    listed = run_cli(["claude", "mcp", "list"], "", env, workdir, timeout=120)
    assert listed.returncode == 0, listed.stderr
    rows = [row for row in listed.stdout.splitlines() if row.startswith("clinvk:")]
    assert rows and "Connected" in rows[0], listed.stdout
