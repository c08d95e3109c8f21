"""The chat profile over MCP: the ``profile`` argument of every tool that runs a backend (the
argv each fake CLI got)."""

from __future__ import annotations

import pytest

from clinvk_lib.mcp import protocol
from tests.conftest import records
from tests.test_mcp import mcp, start  # noqa: F401 (fixtures)

CHAT_FLAG = "--tools="          # what only claude's chat profile passes
RUNNING_TOOLS = ("clinvk_prompt", "clinvk_compare", "clinvk_parallel", "clinvk_chain")
CHAT_CALLS = [
    ("clinvk_prompt", {"backend": "claude", "prompt": "hi"}),
    ("clinvk_compare", {"prompt": "hi", "backends": ["claude"]}),
    ("clinvk_parallel", {"tasks": [{"backend": "claude", "prompt": "hi"}]}),
    ("clinvk_chain", {"steps": [{"backend": "claude", "prompt": "hi"}]}),
]


def tools_by_name(client):
    return {t["name"]: t for t in client.request("tools/list")["result"]["tools"]}


def test_every_tool_that_runs_a_backend_takes_an_optional_profile(mcp):
    tools = tools_by_name(mcp)
    for name in RUNNING_TOOLS:
        schema = tools[name]["inputSchema"]
        assert schema["properties"]["profile"]["enum"] == ["agent", "chat"], name
        assert "profile" not in schema.get("required", []), name
    assert "profile" not in tools["clinvk_sessions"]["inputSchema"]["properties"]


@pytest.mark.parametrize("tool, arguments", CHAT_CALLS)
def test_profile_chat_runs_the_backend_with_its_chat_flags(mcp, record, tool, arguments):
    result = mcp.call(tool, dict(arguments, profile="chat"))["result"]
    assert result["isError"] is False, result
    assert CHAT_FLAG in records(record)[-1]["argv"]


@pytest.mark.parametrize("tool, arguments", CHAT_CALLS)
def test_without_the_argument_the_backend_runs_the_agent_profile(mcp, record, tool,
                                                                  arguments):
    assert mcp.call(tool, arguments)["result"]["isError"] is False
    assert CHAT_FLAG not in records(record)[-1]["argv"]


def test_without_the_argument_the_configured_default_profile_applies(start, record):
    client = start({"server.default_profile": "chat"})
    client.initialize()
    assert client.call("clinvk_prompt", {"backend": "claude", "prompt": "hi"})[
        "result"]["isError"] is False
    assert CHAT_FLAG in records(record)[-1]["argv"]
    assert client.call("clinvk_prompt", {"backend": "claude", "prompt": "hi",
                                         "profile": "agent"})["result"]["isError"] is False
    assert CHAT_FLAG not in records(record)[-1]["argv"]


@pytest.mark.parametrize("tool, arguments", CHAT_CALLS)
def test_an_unknown_profile_is_invalid_params_naming_the_argument(mcp, record, tool,
                                                                  arguments):
    msg = mcp.call(tool, dict(arguments, profile="lean"))
    assert msg["error"]["code"] == protocol.INVALID_PARAMS
    assert msg["error"]["message"].startswith("invalid arguments for %s: profile: " % tool)
    assert "agent, chat" in msg["error"]["message"]
    assert records(record) == []
