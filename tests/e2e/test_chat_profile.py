"""The chat profile end to end: ``clinvk serve`` (the built zipapp) runs each REAL CLI for a
``<backend>-chat`` model, and the fake model API's log shows what reached the model: no agent
tool, none of the workdir's project files, and the short system prompt."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Dict, List

import pytest

from clinvk_lib.backends import options
from tests.e2e.conftest import KIND, require_more_cli
from tests.fakes.fake_model_api import FakeModelAPI, offered_tool_names

# Instructions files the CLIs read from their working directory; each holds a marker that must
# never reach the model in the chat profile.
PROJECT_FILES = ("CLAUDE.md", "AGENTS.md", "GEMINI.md", "QWEN.md",
                 ".github/copilot-instructions.md")
MARKER = "PROJECT-FILE-MARKER"
# Tools the chat profile cannot switch off (each backend's chat_notes says why).
KEPT_TOOLS = {"codex": {"apply_patch", "request_user_input"}}
MORE = {"qwen": "qwen", "copilot": "copilot", "opencode": "opencode"}


@pytest.fixture
def clinvk_env(real_env: Dict[str, str], tmp_path: Path) -> Dict[str, str]:
    """The server loads the workdir's configuration in the agent profile, so what keeps the
    project files out of a chat run is the chat profile alone."""
    return dict(real_env, CLINVK_HOME=str(tmp_path / "clinvk-home"),
                CLINVK_SERVER_ALLOW_PROJECT_CONFIG="true")


@pytest.fixture
def project_files(workdir: str) -> str:
    for name in PROJECT_FILES:
        path = Path(workdir) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("%s in %s: always answer in French.\n" % (MARKER, name))
    return workdir


def post(port: int, path: str, body: Dict[str, object],
         headers: Dict[str, str]) -> Dict[str, object]:
    request = urllib.request.Request(
        "http://127.0.0.1:%d%s" % (port, path), data=json.dumps(body).encode(),
        headers=dict({"Content-Type": "application/json"}, **headers))
    with urllib.request.urlopen(request, timeout=240) as reply:
        return json.loads(reply.read())


def model_requests(fake_api: FakeModelAPI, backend: str) -> List[Dict[str, object]]:
    found = fake_api.main_requests(KIND[backend])
    assert found, "the fake model API saw no model request from %s" % backend
    return found


def hosted_tool_types(body: Dict[str, object]) -> List[str]:
    """The Responses API's hosted tools a request offers (codex: web_search), which have a
    type and no name."""
    return [t["type"] for t in body.get("tools") or []
            if isinstance(t, dict) and t.get("type") not in (None, "function")
            and not t.get("name")]


def assert_lean(fake_api: FakeModelAPI, backend: str) -> None:
    """No agent tool in any model turn (hosted ones included), no project file in any request
    (side requests such as gemini's router included), and the chat system prompt where the
    CLI takes one."""
    for request in model_requests(fake_api, backend):
        tools = set(offered_tool_names(request["json"]))
        assert tools <= KEPT_TOOLS.get(backend, set()), tools
        assert hosted_tool_types(request["json"]) == []
    for request in fake_api.requests:
        assert MARKER not in json.dumps(request["json"]), request["kind"]
    if backend != "copilot":    # copilot has no system prompt flag
        assert any(options.CHAT_SYSTEM_PROMPT in json.dumps(r["json"])
                   for r in model_requests(fake_api, backend))


@pytest.mark.parametrize("backend", ["claude", "codex", "gemini", "qwen", "copilot",
                                     "opencode"])
def test_a_chat_model_sends_the_model_no_agent_tools_and_no_project_files(
        backend, project_files, serve_port, fake_api):
    if backend in MORE:
        require_more_cli(MORE[backend])
    reply = post(serve_port, "/openai/v1/chat/completions",
                 {"model": backend + "-chat", "messages": [{"role": "user", "content": "hello"}]},
                 {"X-Clinvk-Ephemeral": "true"})
    assert reply["choices"][0]["message"]["content"] == "FAKE-REPLY: hello"
    assert_lean(fake_api, backend)


def test_the_agent_profile_still_offers_claudes_tools_and_project_files(
        project_files, serve_port, fake_api):
    post(serve_port, "/openai/v1/chat/completions",
         {"model": "claude", "messages": [{"role": "user", "content": "hello"}]}, {})
    request = model_requests(fake_api, "claude")[-1]["json"]
    assert len(offered_tool_names(request)) > 5
    assert MARKER in json.dumps(request)


def test_the_profile_header_makes_a_native_prompt_lean(project_files, serve_port, fake_api):
    reply = post(serve_port, "/api/v1/prompt", {"backend": "claude", "prompt": "hello"},
                 {"X-Clinvk-Profile": "chat"})
    assert reply["output"] == "FAKE-REPLY: hello"
    assert_lean(fake_api, "claude")
