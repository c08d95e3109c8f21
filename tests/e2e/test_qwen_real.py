"""clinvk (the built zipapp) driving the REAL qwen-code 0.24.4 against the fake model API:
a prompt in each format, a fact carried from turn 1 to turn 2 by resume, an ephemeral run,
a planted workdir configuration that runs on the command line and not on the server, the
OpenAI- and Anthropic-compatible APIs and MCP answered by qwen, a rejected key, the doctor.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Dict, List

import pytest

from tests.e2e.conftest import PYZ, mcp_prompt, require_more_cli, user_texts

pytestmark = pytest.mark.usefixtures("built_pyz", "qwen_cli")


@pytest.fixture(scope="session")
def qwen_cli() -> str:
    return require_more_cli("qwen")


def clinvk(env: Dict[str, str], args: List[str], cwd: str = None,
           timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, PYZ] + args, capture_output=True, env=env, cwd=cwd,
                          timeout=timeout)


def post(port: int, path: str, body: Dict[str, object]) -> tuple:
    """(status, headers, JSON body) of a POST to the running server."""
    request = urllib.request.Request("http://127.0.0.1:%d%s" % (port, path),
                                     data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=240) as reply:
            return reply.status, reply.headers, json.loads(reply.read())
    except urllib.error.HTTPError as err:
        return err.code, err.headers, json.loads(err.read())


# -- the command line ------------------------------------------------------------------------

def test_json_prompt_is_answered_by_qwen(fake_api, clinvk_env, workdir):
    p = clinvk(clinvk_env, ["-b", "qwen", "-o", "json", "-w", workdir, "what is two plus two"])
    assert p.returncode == 0, p.stderr.decode()
    d = json.loads(p.stdout)
    assert d["content"] == "FAKE-REPLY: what is two plus two"
    assert d["backend"] == "qwen" and d["session_id"] and d["backend_session_id"]
    assert d["usage"]["input_tokens"] > 0 and d["usage"]["output_tokens"] > 0
    assert user_texts(fake_api, "qwen") == ["what is two plus two"]


def test_stream_prompt_gives_real_token_deltas(fake_api, clinvk_env, workdir):
    p = clinvk(clinvk_env, ["-b", "qwen", "-o", "stream-json", "-w", workdir, "stream please"])
    assert p.returncode == 0, p.stderr.decode()
    events = [json.loads(line) for line in p.stdout.decode().splitlines()]
    assert events[0]["type"] == "init" and events[-1]["type"] == "done"
    pieces = [e["content"]["text"] for e in events
              if e["type"] == "message" and e["content"]["is_partial"]]
    assert len(pieces) >= 2 and "".join(pieces) == "FAKE-REPLY: stream please"
    assert not [e for e in events if e["type"] == "message" and not e["content"]["is_partial"]]


def test_dash_leading_prompt_reaches_the_model_verbatim(fake_api, clinvk_env, workdir):
    p = clinvk(clinvk_env, ["-b", "qwen", "-w", workdir, "--ephemeral", "--", "--yolo -h"])
    assert p.returncode == 0, p.stderr.decode()
    assert p.stdout.decode().strip() == "FAKE-REPLY: --yolo -h"


def test_resume_carries_a_fact_from_turn_1_to_turn_2(fake_api, clinvk_env, workdir):
    first = clinvk(clinvk_env, ["-b", "qwen", "-o", "json", "-w", workdir,
                                "remember the code word PELICAN-42"])
    assert first.returncode == 0, first.stderr.decode()
    sid = json.loads(first.stdout)["session_id"]
    second = clinvk(clinvk_env, ["resume", "-o", "json", sid, "what was the code word?"],
                    cwd=workdir)
    assert second.returncode == 0, second.stderr.decode()
    assert json.loads(second.stdout)["backend_session_id"] == \
        json.loads(first.stdout)["backend_session_id"]
    turn_2 = fake_api.main_requests("chat")[-1]
    assert turn_2["user_text"] == "what was the code word?"
    assert "PELICAN-42" in json.dumps(turn_2["json"]["messages"])


def test_ephemeral_run_leaves_no_chat_and_no_session(fake_api, clinvk_env, workdir):
    p = clinvk(clinvk_env, ["-b", "qwen", "-o", "json", "-w", workdir, "--ephemeral", "hi"])
    assert p.returncode == 0, p.stderr.decode()
    assert json.loads(p.stdout)["session_id"] == ""
    assert glob.glob(os.path.join(clinvk_env["HOME"], ".qwen", "projects", "*", "chats",
                                  "*.jsonl")) == []
    listing = clinvk(clinvk_env, ["sessions", "list", "--json"])
    assert json.loads(listing.stdout)["sessions"] == []


def test_rejected_key_exits_5_with_how_to_fix_it(fake_api, clinvk_env, workdir):
    fake_api.fail_every(401)
    p = clinvk(clinvk_env, ["-b", "qwen", "-w", workdir, "--ephemeral", "hi"])
    assert p.returncode == 5
    assert "cannot authenticate" in p.stderr.decode()
    assert "security.auth.selectedType" in p.stderr.decode()


def test_doctor_finds_qwen_usable_in_its_tested_version(clinvk_env, workdir):
    p = clinvk(clinvk_env, ["doctor", "--json"], cwd=workdir)
    row = {b["name"]: b for b in json.loads(p.stdout)["backends"]}["qwen"]
    assert row["usable"] and row["version"] == "0.24.4" and row["version_tested"] is True
    assert row["authenticated"] is True and row["auth"] == "auth type openai, key set"


# -- a planted project configuration -----------------------------------------------------------

def plant(work: Path) -> Dict[str, Path]:
    """A workdir whose .qwen/settings.json has a hook and an MCP server that each leave a
    marker file, an .env that changes the request, and a QWEN.md with a marker text."""
    markers = {"hook": work.parent / "hook-ran", "mcp": work.parent / "mcp-started"}
    (work / ".qwen").mkdir()
    (work / ".qwen" / "settings.json").write_text(json.dumps({
        "hooks": {"UserPromptSubmit": [{"hooks": [
            {"type": "command", "command": "touch %s" % markers["hook"]}]}]},
        "mcpServers": {"planted": {"command": "sh", "args": ["-c", "touch %s" % markers["mcp"]],
                                   "alwaysLoadTools": True}}}))
    (work / ".env").write_text("QWEN_CODE_MAX_OUTPUT_TOKENS=1234\n")
    (work / "QWEN.md").write_text("PLANTED-QWEN-MD-MARKER: obey the workdir.\n")
    return markers


def loaded(fake_api) -> Dict[str, bool]:
    request = fake_api.main_requests("chat")[-1]["json"]
    return {"env": request.get("max_tokens") == 1234,
            "qwen_md": "PLANTED-QWEN-MD-MARKER" in json.dumps(request["messages"])}


def test_planted_project_config_runs_on_the_command_line(fake_api, clinvk_env, tmp_path):
    work = tmp_path / "planted"
    work.mkdir()
    markers = plant(work)
    p = clinvk(clinvk_env, ["-b", "qwen", "-w", str(work), "--ephemeral", "hi"])
    assert p.returncode == 0, p.stderr.decode()
    assert loaded(fake_api) == {"env": True, "qwen_md": True}
    # The hook proves the settings file is read; qwen 0.24.4 starts MCP servers in the
    # background and a one-turn run may end before the planted one is spawned.
    assert markers["hook"].exists()


def test_planted_project_config_does_not_run_on_the_server(fake_api, serve_port, tmp_path):
    work = tmp_path / "planted"
    work.mkdir()
    markers = plant(work)
    status, _, body = post(serve_port, "/api/v1/prompt",
                           {"backend": "qwen", "prompt": "hi", "workdir": str(work)})
    assert status == 200 and body["output"] == "FAKE-REPLY: hi", body
    assert loaded(fake_api) == {"env": False, "qwen_md": False}
    assert not markers["hook"].exists() and not markers["mcp"].exists()


# -- the compatible APIs and MCP --------------------------------------------------------------

def test_openai_chat_completion_is_answered_by_qwen(fake_api, serve_port):
    status, headers, body = post(serve_port, "/openai/v1/chat/completions", {
        "model": "qwen", "messages": [{"role": "system", "content": "Be brief."},
                                      {"role": "user", "content": "hello openai"}]})
    assert status == 200, body
    assert body["choices"][0]["message"]["content"] == "FAKE-REPLY: hello openai"
    assert body["usage"]["completion_tokens"] > 0 and headers["X-Clinvk-Session-Id"]
    system = fake_api.main_requests("chat")[-1]["json"]["messages"][0]
    assert system["role"] == "system" and system["content"].startswith("Be brief.")


def test_openai_stream_from_qwen_arrives_in_pieces(fake_api, serve_port):
    request = urllib.request.Request(
        "http://127.0.0.1:%d/openai/v1/chat/completions" % serve_port, method="POST",
        headers={"Content-Type": "application/json"},
        data=json.dumps({"model": "qwen/fake-model", "stream": True,
                         "messages": [{"role": "user", "content": "stream openai"}]}).encode())
    with urllib.request.urlopen(request, timeout=240) as reply:
        lines = reply.read().decode().splitlines()
    chunks = [json.loads(line[6:]) for line in lines if line.startswith("data: {")]
    pieces = [c["choices"][0]["delta"].get("content") for c in chunks if c["choices"]]
    pieces = [p for p in pieces if p]
    assert len(pieces) > 1 and "".join(pieces) == "FAKE-REPLY: stream openai"
    assert lines[-2:] == ["data: [DONE]", ""] or "data: [DONE]" in lines


def test_anthropic_message_is_answered_by_qwen(fake_api, serve_port):
    status, _, body = post(serve_port, "/anthropic/v1/messages", {
        "model": "qwen", "max_tokens": 256,
        "messages": [{"role": "user", "content": "hello anthropic"}]})
    assert status == 200, body
    assert body["content"][0]["text"] == "FAKE-REPLY: hello anthropic"
    assert body["stop_reason"] == "end_turn" and body["usage"]["output_tokens"] > 0
    assert user_texts(fake_api, "qwen") == ["hello anthropic"]


def test_rejected_key_is_a_401_of_the_backend_on_the_anthropic_api(fake_api, serve_port):
    fake_api.fail_every(401)
    status, headers, body = post(serve_port, "/anthropic/v1/messages", {
        "model": "qwen", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]})
    assert status == 401 and body["error"]["type"] == "authentication_error"
    assert "cannot authenticate" in body["error"]["message"]
    assert headers["X-Should-Retry"] == "false"


def test_mcp_prompt_is_answered_by_qwen(fake_api, clinvk_env, workdir):
    result = mcp_prompt(clinvk_env, {"backend": "qwen", "prompt": "hello mcp",
                                     "workdir": workdir}, cwd=workdir)
    assert not result.get("isError"), result
    assert result["structuredContent"]["content"] == "FAKE-REPLY: hello mcp"
