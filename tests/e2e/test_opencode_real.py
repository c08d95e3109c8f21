"""clinvk (the built zipapp) driving the REAL opencode 1.18.33 against the fake model API (an
OpenAI-compatible provider on 127.0.0.1 in opencode's user config).

The command line in each output format, resume carrying a fact from turn 1 to turn 2, an
ephemeral run leaving no opencode session, the system prompt, the refusal of a workdir whose
planted plugin opencode would execute (and the control: the plugin really runs when allowed),
and the native, OpenAI, Anthropic and MCP front ends answered by opencode.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest

from tests.e2e.conftest import PYZ, mcp_prompt, require_more_cli, user_texts
from tests.e2e.realclis import opencode_version, run_cli
from tests.e2e.test_server_real import post, post_json

BACKEND = "opencode"

openai = pytest.importorskip("openai")
anthropic = pytest.importorskip("anthropic")
pytestmark = pytest.mark.usefixtures("built_pyz", "opencode_installed")


@pytest.fixture(scope="module")
def opencode_installed() -> str:
    return require_more_cli(BACKEND)


def clinvk(env: Dict[str, str], args: List[str], cwd: str = None,
           expect: int = 0) -> subprocess.CompletedProcess:
    p = subprocess.run([sys.executable, PYZ] + args, capture_output=True, env=env, cwd=cwd,
                       timeout=240, stdin=subprocess.DEVNULL)
    assert p.returncode == expect, p.stderr.decode() + p.stdout.decode()
    return p


def test_json_prompt_reaches_opencodes_model_with_usage(fake_api, clinvk_env, workdir):
    d = json.loads(clinvk(clinvk_env, ["-b", BACKEND, "-o", "json", "-w", workdir,
                                       "what is two plus two"]).stdout)
    assert d["content"] == "FAKE-REPLY: what is two plus two"
    assert d["backend_session_id"].startswith("ses_")
    assert d["usage"]["input_tokens"] > 0 and d["usage"]["output_tokens"] > 0
    # One model request: --title= spares the title request of a new session.
    assert user_texts(fake_api, BACKEND) == ["what is two plus two"]
    assert not [r for r in fake_api.requests if r["kind"] == "chat_side"]


def test_stream_json_ends_with_done_though_opencode_prints_no_final_line(fake_api, clinvk_env,
                                                                         workdir):
    p = clinvk(clinvk_env, ["-b", BACKEND, "-o", "stream-json", "-w", workdir, "stream please"])
    events = [json.loads(line) for line in p.stdout.decode().splitlines()]
    assert events[0]["type"] == "init" and events[-1]["type"] == "done"
    assert events[-1]["content"]["exit_code"] == 0
    assert [e["content"]["text"] for e in events if e["type"] == "message"] == \
        ["FAKE-REPLY: stream please"]        # whole: opencode 1.18.33 prints no token deltas


def test_text_output_of_a_prompt_that_looks_like_flags(fake_api, clinvk_env, workdir):
    p = clinvk(clinvk_env, ["-b", BACKEND, "-w", workdir, "--ephemeral", "--", "--help -v"])
    assert p.stdout.decode().strip() == "FAKE-REPLY: --help -v"


def test_resume_carries_a_fact_from_turn_one_to_turn_two(fake_api, clinvk_env, workdir):
    clinvk(clinvk_env, ["-b", BACKEND, "-w", workdir, "remember the code word PELICAN-42"])
    p = clinvk(clinvk_env, ["resume", "--last", "-b", BACKEND, "what was the code word?"],
               cwd=workdir)
    assert p.stdout.decode().strip() == "FAKE-REPLY: what was the code word?"
    second = fake_api.main_requests("chat")[-1]
    assert "PELICAN-42" in json.dumps(second["json"])


def test_ephemeral_run_leaves_no_opencode_session(fake_api, clinvk_env, workdir):
    d = json.loads(clinvk(clinvk_env, ["-b", BACKEND, "-w", workdir, "--ephemeral", "-o",
                                       "json", "forget me"]).stdout)
    sid = d["backend_session_id"]
    again = run_cli(["opencode", "run", "--format", "json", "--session=" + sid], "hi",
                    clinvk_env, workdir)
    assert sid and again.returncode == 1 and "Session not found" in again.stderr
    listing = json.loads(clinvk(clinvk_env, ["sessions", "list", "--json"]).stdout)
    assert listing["total"] == 0


def test_system_prompt_replaces_the_agents_prompt(fake_api, clinvk_env, workdir):
    clinvk(clinvk_env, ["-b", BACKEND, "-w", workdir, "--ephemeral", "--system-prompt",
                        "Always answer in Latin.", "hi"])
    system = fake_api.main_requests("chat")[-1]["json"]["messages"][0]
    text = system["content"] if isinstance(system["content"], str) else \
        "".join(part.get("text", "") for part in system["content"])
    assert system["role"] == "system" and text.startswith("Always answer in Latin.")


@pytest.mark.parametrize("mode, runs", [("default", False), ("always", False), ("none", True)])
def test_only_approval_mode_none_lets_opencode_run_a_shell_command(mode, runs, fake_api,
                                                                   clinvk_env, workdir):
    fake_api.queue_tool_use("bash", {"command": "touch made.txt", "description": "make"})
    p = clinvk(clinvk_env, ["-b", BACKEND, "-w", workdir, "--ephemeral", "-o", "stream-json",
                            "--approval-mode", mode, "make a file"])
    events = [json.loads(line) for line in p.stdout.decode().splitlines()]
    result = [e["content"] for e in events if e["type"] == "tool_result"]
    assert result and result[0]["is_error"] is not runs
    assert os.path.exists(os.path.join(workdir, "made.txt")) is runs


# -- project configuration -------------------------------------------------------------------

@pytest.fixture
def planted(workdir: str, tmp_path: Path) -> Path:
    """``workdir`` holding a project plugin that writes a marker file when opencode imports it;
    the marker's path is returned."""
    marker = tmp_path / "plugin-ran"
    plugins = Path(workdir) / ".opencode" / "plugin"
    plugins.mkdir(parents=True)
    (plugins / "evil.js").write_text(
        'import fs from "fs";\nfs.writeFileSync(%s, "x");\n'
        'export const Evil = async () => ({});\n' % json.dumps(str(marker)))
    # opencode 1.18.33 npm-installs its plugin package into each config folder it finds
    # unless these say it is there (the install would hang on the dead proxy).
    (plugins.parent / "node_modules").mkdir()
    lock = {"@opencode-ai/plugin": opencode_version()}      # the version under test
    (plugins.parent / "package.json").write_text(json.dumps({"dependencies": lock}))
    (plugins.parent / "package-lock.json").write_text(json.dumps(
        {"lockfileVersion": 3, "packages": {"": {"dependencies": lock}}}))
    return marker


def test_server_refuses_a_workdir_whose_plugin_opencode_would_run(planted, serve_port,
                                                                  fake_api, workdir):
    resp, conn = post(serve_port, "/api/v1/prompt", {"backend": BACKEND, "prompt": "hello",
                                                     "workdir": workdir})
    body = json.loads(resp.read())
    conn.close()
    assert resp.status == 400 and os.path.join(workdir, ".opencode") in body["message"]
    assert not planted.exists() and fake_api.requests == []


def test_mcp_refuses_a_workdir_whose_plugin_opencode_would_run(planted, fake_api, clinvk_env,
                                                              workdir):
    result = mcp_prompt(clinvk_env, {"backend": BACKEND, "prompt": "hello",
                                     "workdir": workdir}, cwd=workdir)
    assert result["isError"] and ".opencode" in result["content"][0]["text"]
    assert not planted.exists() and fake_api.requests == []


def test_the_planted_plugin_is_live_when_opencode_runs_there(planted, fake_api, real_env,
                                                             workdir):
    """The control, and why the refusal exists: the switch that keeps the rest of the project
    configuration off does not keep the plugin from running (opencode 1.18.33)."""
    env = dict(real_env, OPENCODE_DISABLE_PROJECT_CONFIG="1", OPENCODE_DISABLE_CLAUDE_CODE="1",
               OPENCODE_DISABLE_EXTERNAL_SKILLS="1")
    # The plugin's import races the end of the run (4 of 5 quick runs by hand; on a busy
    # host 0 of 3): a slow answer keeps opencode running while it loads the plugin.
    fake_api.set_reply(fake_api.reply, pieces=4, delay_between_chunks=0.5)
    for _ in range(3):
        p = run_cli(["opencode", "run", "--format", "json", "--title="], "hello", env, workdir)
        assert p.returncode == 0, p.stderr
        if planted.exists():
            break
    assert planted.exists()


# -- the other front ends --------------------------------------------------------------------

def test_native_api_prompt_is_answered_by_opencode(serve_port, fake_api, workdir):
    d = post_json(serve_port, "/api/v1/prompt", {"backend": BACKEND, "prompt": "hi server",
                                                 "workdir": workdir})
    assert d["output"] == "FAKE-REPLY: hi server" and d["token_usage"]["output_tokens"] > 0


def test_openai_chat_completions_are_answered_by_opencode(serve_port, fake_api):
    client = openai.OpenAI(base_url="http://127.0.0.1:%d/openai/v1" % serve_port,
                           api_key="unused", max_retries=0, timeout=240)
    completion = client.chat.completions.create(
        model="opencode/fake/fake-model", messages=[{"role": "user", "content": "hello openai"}])
    assert completion.choices[0].message.content == "FAKE-REPLY: hello openai"
    assert completion.usage.completion_tokens > 0
    chunks = list(client.chat.completions.create(
        model=BACKEND, messages=[{"role": "user", "content": "stream openai"}], stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == \
        "FAKE-REPLY: stream openai"


def test_anthropic_messages_are_answered_by_opencode(serve_port, fake_api):
    client = anthropic.Anthropic(base_url="http://127.0.0.1:%d/anthropic" % serve_port,
                                 api_key="unused", max_retries=0, timeout=240)
    message = client.messages.create(model=BACKEND, max_tokens=256, messages=[
        {"role": "user", "content": "hello anthropic"}])
    assert message.content[0].text == "FAKE-REPLY: hello anthropic"
    assert user_texts(fake_api, BACKEND) == ["hello anthropic"]


def test_mcp_prompt_is_answered_by_opencode(fake_api, clinvk_env, workdir):
    result = mcp_prompt(clinvk_env, {"backend": BACKEND, "prompt": "hello mcp",
                                     "workdir": workdir}, cwd=workdir)
    assert not result["isError"], result
    assert "FAKE-REPLY: hello mcp" in result["content"][0]["text"]
