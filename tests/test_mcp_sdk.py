"""clinvk mcp with the official ``mcp`` Python SDK as the client: ``python3 clinvk.py mcp`` is
started over stdio with the fake CLIs on PATH, and every tool is called through the SDK."""

from __future__ import annotations

import importlib.metadata
import os
import sys
import time
from datetime import timedelta
from typing import Any, Awaitable, Callable, Dict, List

import pytest

pytestmark = pytest.mark.sdk
pytest.importorskip("mcp")
if int(importlib.metadata.version("mcp").split(".")[0]) >= 2:
    pytest.skip("written for the mcp 1.x client API (tests/requirements-dev.txt pins mcp<2)",
                allow_module_level=True)

import anyio  # noqa: E402  (installed with mcp)
from mcp import ClientSession, StdioServerParameters, types  # noqa: E402
from mcp.client.stdio import stdio_client  # noqa: E402
from mcp.shared.exceptions import McpError  # noqa: E402

from tests.serverutil import pid_alive  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAKE_BIN = os.path.join(ROOT, "tests", "fakes", "bin")
WAIT = 20.0     # bound on any one call; the fakes answer in well under a second


@pytest.fixture
def server_env(tmp_path) -> Dict[str, str]:
    """The server's environment: the fake CLIs first on PATH, a private CLINVK_HOME."""
    home = tmp_path / "clinvk-home"
    home.mkdir()
    return {"PATH": FAKE_BIN + os.pathsep + "/usr/local/bin:/usr/bin:/bin",
            "HOME": str(tmp_path), "CLINVK_HOME": str(home),
            "FAKE_CLI_STATE_DIR": str(tmp_path / "fake-state")}


def with_session(env: Dict[str, str], body: Callable[[ClientSession], Awaitable[Any]],
                 message_handler=None) -> Any:
    """Start ``clinvk mcp`` through the SDK, initialize, run ``body(session)``, close."""
    params = StdioServerParameters(command=sys.executable,
                                   args=[os.path.join(ROOT, "clinvk.py"), "mcp"], env=env)

    async def main() -> Any:
        with anyio.fail_after(WAIT * 2):
            async with stdio_client(params) as (read, write):
                kwargs = {"message_handler": message_handler} if message_handler else {}
                async with ClientSession(read, write, **kwargs) as session:
                    await session.initialize()
                    return await body(session)

    return anyio.run(main)


def call(env: Dict[str, str], name: str, arguments: Dict[str, Any]) -> types.CallToolResult:
    async def body(session: ClientSession) -> types.CallToolResult:
        return await session.call_tool(name, arguments,
                                       read_timeout_seconds=timedelta(seconds=WAIT))
    return with_session(env, body)


def text_of(result: types.CallToolResult) -> str:
    return "".join(c.text for c in result.content if isinstance(c, types.TextContent))


def test_sdk_negotiates_and_lists_the_tools(server_env):
    async def body(session: ClientSession):
        return await session.list_tools()
    tools = with_session(server_env, body).tools
    assert [t.name for t in tools] == ["clinvk_prompt", "clinvk_compare", "clinvk_parallel",
                                       "clinvk_chain", "clinvk_backends", "clinvk_sessions"]
    prompt = tools[0].inputSchema
    assert prompt["required"] == ["backend", "prompt"]


def test_sdk_clinvk_prompt_returns_the_reply_and_session(server_env):
    result = call(server_env, "clinvk_prompt", {"backend": "codex", "prompt": "hi from sdk"})
    assert result.isError is False
    assert text_of(result) == "echo: hi from sdk"
    assert result.structuredContent["backend"] == "codex"
    assert result.structuredContent["session_id"]


def test_sdk_clinvk_compare_returns_every_answer(server_env):
    result = call(server_env, "clinvk_compare", {"prompt": "q", "backends": ["gemini", "claude"]})
    assert [r["backend"] for r in result.structuredContent["results"]] == ["gemini", "claude"]
    assert text_of(result).count("echo: q") == 2


def test_sdk_clinvk_parallel_returns_the_summary(server_env):
    result = call(server_env, "clinvk_parallel", {"tasks": [
        {"backend": "claude", "prompt": "a"}, {"backend": "codex", "prompt": "b"}]})
    summary = result.structuredContent
    assert (summary["total_tasks"], summary["completed"], summary["failed"]) == (2, 2, 0)
    assert [r["output"] for r in summary["results"]] == ["echo: a", "echo: b"]


def test_sdk_clinvk_chain_returns_the_summary(server_env):
    result = call(server_env, "clinvk_chain", {"steps": [
        {"backend": "gemini", "prompt": "x"}, {"backend": "claude", "prompt": "y {{previous}}"}]})
    assert result.structuredContent["completed_steps"] == 2
    assert result.structuredContent["results"][-1]["output"] == "echo: y echo: x"


def test_sdk_clinvk_backends_reports_the_fakes(server_env):
    result = call(server_env, "clinvk_backends", {})
    rows = result.structuredContent["backends"]
    assert all(r["available"] and r["path"].startswith(FAKE_BIN) for r in rows)


def test_sdk_clinvk_sessions_lists_a_session_made_by_clinvk_prompt(server_env):
    async def body(session: ClientSession):
        made = await session.call_tool("clinvk_prompt", {"backend": "claude", "prompt": "keep"})
        listed = await session.call_tool("clinvk_sessions", {"action": "list"})
        return made, listed
    made, listed = with_session(server_env, body)
    assert [s["id"] for s in listed.structuredContent["sessions"]] == \
        [made.structuredContent["session_id"]]


def test_sdk_sees_bad_arguments_as_invalid_params(server_env):
    async def body(session: ClientSession):
        try:
            await session.call_tool("clinvk_prompt", {"backend": "codex"})
        except McpError as exc:
            return exc.error
        return None
    error = with_session(server_env, body)
    assert error is not None and error.code == -32602
    assert "prompt: field required" in error.message


def test_sdk_sees_a_failing_backend_as_an_error_result(server_env):
    result = call(dict(server_env, FAKE_CLI_MODE="fail"), "clinvk_prompt",
                  {"backend": "gemini", "prompt": "hi"})
    assert result.isError is True
    assert "fake failure" in text_of(result)


def test_sdk_progress_callback_hears_each_finished_task(server_env):
    heard: List[tuple] = []

    async def on_progress(progress: float, total: Any, message: Any) -> None:
        heard.append((progress, total))

    async def body(session: ClientSession):
        return await session.call_tool(
            "clinvk_parallel", {"tasks": [{"backend": "claude", "prompt": "a"},
                                          {"backend": "gemini", "prompt": "b"}]},
            read_timeout_seconds=timedelta(seconds=WAIT), progress_callback=on_progress)
    with_session(server_env, body)
    assert (2, 2) in heard


def test_sdk_cancelling_a_slow_call_kills_its_backend(server_env, tmp_path):
    pidfile = tmp_path / "pid"
    env = dict(server_env, FAKE_CLI_MODE="hang", FAKE_CLI_PIDFILE=str(pidfile))
    tokens: List[Any] = []

    async def on_message(message: Any) -> None:
        # The SDK uses the request id as the progress token: the first progress
        # notification tells us which request to cancel.
        root = getattr(message, "root", None)
        if isinstance(root, types.ProgressNotification):
            tokens.append(root.params.progressToken)

    async def on_progress(progress: float, total: Any, message: Any) -> None:
        pass

    async def body(session: ClientSession):
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: session.call_tool(
                "clinvk_prompt", {"backend": "codex", "prompt": "never ends"},
                progress_callback=on_progress))
            while not (tokens and pidfile.exists() and pidfile.read_text().strip()):
                await anyio.sleep(0.02)
            pid = int(pidfile.read_text())
            await session.send_notification(types.ClientNotification(types.CancelledNotification(
                params=types.CancelledNotificationParams(requestId=tokens[0],
                                                         reason="test cancels"))))
            while pid_alive(pid):
                await anyio.sleep(0.02)
            pong = await session.send_ping()
            tg.cancel_scope.cancel()     # the cancelled call never gets a response
        return pid, pong

    started = time.monotonic()
    pid, pong = with_session(env, body, message_handler=on_message)
    assert not pid_alive(pid)
    assert isinstance(pong, types.EmptyResult)
    assert time.monotonic() - started < WAIT * 2
