"""clinvk mcp: JSON-RPC framing, the MCP lifecycle, the tools against the fake CLIs,
cancellation and progress. The server runs in-process on a pair of pipes."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from typing import Any, Dict, List, Optional

import pytest

from clinvk_lib import config
from clinvk_lib.backends.options import APPROVAL_MODES
from clinvk_lib.mcp import protocol
from clinvk_lib.mcp.protocol import Server, Tool
from clinvk_lib.mcp.tools import ToolContext, all_tools, plain_json_schema
from clinvk_lib.shapes import PromptRequest
from clinvk_lib.sessions import SessionStore
from tests.serverutil import pid_alive

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WAIT = 15.0          # upper bound for anything to arrive; tests never wait this long when green
TOOL_NAMES = ["clinvk_prompt", "clinvk_compare", "clinvk_parallel", "clinvk_chain",
              "clinvk_backends", "clinvk_sessions"]


class Client:
    """The test's end of the pipes: writes lines to the server, reads its messages."""

    def __init__(self, server_factory) -> None:
        in_r, in_w = os.pipe()
        out_r, out_w = os.pipe()
        self._to_server = os.fdopen(in_w, "wb")
        self.server: Server = server_factory(os.fdopen(out_w, "wb"))
        self._server_in = os.fdopen(in_r, "rb")
        self._from_server = os.fdopen(out_r, "rb")
        self.messages: "queue.Queue[Dict[str, Any]]" = queue.Queue()
        self.raw_lines: List[bytes] = []
        self.notifications: List[Dict[str, Any]] = []
        self._next_id = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()
        threading.Thread(target=self._read, daemon=True).start()

    def _serve(self) -> None:
        try:
            self.server.serve(self._server_in)
        finally:
            self.server.out.close()

    def _read(self) -> None:
        for line in self._from_server:
            self.raw_lines.append(line)
            self.messages.put(json.loads(line))

    def send_line(self, line: bytes) -> None:
        self._to_server.write(line if line.endswith(b"\n") else line + b"\n")
        self._to_server.flush()

    def send(self, msg: Dict[str, Any]) -> None:
        self.send_line(json.dumps(msg).encode())

    def notify(self, method: str, params: Optional[Dict[str, Any]] = None) -> None:
        msg: Dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            msg["params"] = params
        self.send(msg)

    def start_request(self, method: str, params: Optional[Dict[str, Any]] = None) -> int:
        self._next_id += 1
        msg: Dict[str, Any] = {"jsonrpc": "2.0", "id": self._next_id, "method": method}
        if params is not None:
            msg["params"] = params
        self.send(msg)
        return self._next_id

    def recv(self) -> Dict[str, Any]:
        try:
            return self.messages.get(timeout=WAIT)
        except queue.Empty:
            raise AssertionError("no message from the server within %ss" % WAIT)

    def response(self, request_id: Any) -> Dict[str, Any]:
        """The response to ``request_id``; notifications seen meanwhile are kept."""
        while True:
            msg = self.recv()
            if "method" in msg:
                self.notifications.append(msg)
            elif msg.get("id") == request_id:
                return msg
            else:
                raise AssertionError("unexpected message %r while waiting for %r"
                                     % (msg, request_id))

    def request(self, method: str, params: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        return self.response(self.start_request(method, params))

    def initialize(self, version: str = "2025-06-18") -> Dict[str, Any]:
        reply = self.request("initialize", {"protocolVersion": version, "capabilities": {},
                                            "clientInfo": {"name": "test", "version": "1"}})
        self.notify("notifications/initialized")
        return reply

    def call(self, name: str, arguments: Optional[Dict[str, Any]] = None,
             token: Any = None) -> Dict[str, Any]:
        return self.response(self.start_call(name, arguments, token))

    def start_call(self, name: str, arguments: Optional[Dict[str, Any]] = None,
                   token: Any = None) -> int:
        params: Dict[str, Any] = {"name": name, "arguments": arguments or {}}
        if token is not None:
            params["_meta"] = {"progressToken": token}
        return self.start_request("tools/call", params)

    def close(self) -> None:
        if not self._to_server.closed:
            self._to_server.close()
        self.thread.join(WAIT)


@pytest.fixture
def start(clinvk_home, fake_path):
    """start(flags=None, progress_interval=60) -> a Client talking to a fresh server."""
    clients: List[Client] = []

    def make(flags: Optional[Dict[str, Any]] = None, progress_interval: float = 60.0,
             tools: Optional[List[Tool]] = None) -> Client:
        cfg = config.load(flags=flags or {})
        ctx = ToolContext(cfg, SessionStore(cfg.home))
        client = Client(lambda out: Server(tools if tools is not None else all_tools(ctx), out,
                                           name="clinvk", version="9.9",
                                           progress_interval=progress_interval))
        clients.append(client)
        return client

    yield make
    for c in clients:
        c.close()


@pytest.fixture
def mcp(start):
    client = start()
    client.initialize()
    return client


def text_of(result: Dict[str, Any]) -> str:
    return "".join(c["text"] for c in result["content"] if c["type"] == "text")


def wait_for(predicate, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError("timed out waiting for " + what)


def read_pid(path) -> int:
    wait_for(lambda: os.path.exists(str(path)) and open(str(path)).read().strip(),
             "the fake CLI to write its pid")
    return int(open(str(path)).read().strip())


# -- framing -------------------------------------------------------------------------------------


def test_unparsable_json_is_a_parse_error_with_null_id(start):
    client = start()
    client.send_line(b'{"jsonrpc": "2.0", "id": 1, "method": ')
    msg = client.recv()
    assert msg["id"] is None
    assert msg["error"]["code"] == protocol.PARSE_ERROR


def test_invalid_utf8_is_a_parse_error(start):
    client = start()
    client.send_line(b'{"jsonrpc": "2.0", "id": 1, "method": "ping\xff"}')
    assert client.recv()["error"]["code"] == protocol.PARSE_ERROR


def test_object_without_jsonrpc_2_0_is_an_invalid_request(start):
    client = start()
    client.send({"id": 7, "method": "ping"})
    msg = client.recv()
    assert msg["id"] == 7
    assert msg["error"]["code"] == protocol.INVALID_REQUEST


def test_batch_is_refused_as_an_invalid_request(start):
    client = start()
    client.send_line(json.dumps([{"jsonrpc": "2.0", "id": 1, "method": "ping"}]).encode())
    msg = client.recv()
    assert msg["id"] is None
    assert msg["error"]["code"] == protocol.INVALID_REQUEST
    assert "batches" in msg["error"]["message"]


def test_null_request_id_is_an_invalid_request(start):
    client = start()
    client.send({"jsonrpc": "2.0", "id": None, "method": "ping"})
    assert client.recv()["error"]["code"] == protocol.INVALID_REQUEST


def test_notifications_and_blank_lines_get_no_response(start):
    client = start()
    client.send_line(b"   ")
    client.notify("notifications/something_unknown", {"x": 1})
    reply = client.request("ping")
    assert reply == {"jsonrpc": "2.0", "id": 1, "result": {}}
    assert client.notifications == []


def test_every_message_is_one_compact_line(mcp):
    mcp.call("clinvk_prompt", {"backend": "claude", "prompt": "line one\nline two"})
    assert mcp.raw_lines
    for line in mcp.raw_lines:
        assert line.endswith(b"\n") and line.count(b"\n") == 1
        json.loads(line)


# -- lifecycle -----------------------------------------------------------------------------------


def test_request_before_initialize_is_refused(start):
    client = start()
    msg = client.request("tools/list")
    assert msg["error"]["code"] == protocol.INVALID_REQUEST
    assert "initialize" in msg["error"]["message"]


def test_ping_is_answered_before_initialize(start):
    assert start().request("ping")["result"] == {}


@pytest.mark.parametrize("version", ["2025-06-18", "2025-03-26", "2024-11-05"])
def test_initialize_answers_the_clients_version_when_supported(start, version):
    assert start().initialize(version)["result"]["protocolVersion"] == version


def test_initialize_answers_the_latest_version_for_an_unknown_one(start):
    assert start().initialize("2030-01-01")["result"]["protocolVersion"] == "2025-06-18"


def test_initialize_announces_tools_and_server_info(start):
    result = start().initialize()["result"]
    assert result["capabilities"] == {"tools": {"listChanged": False}}
    assert result["serverInfo"] == {"name": "clinvk", "version": "9.9"}


def test_initialize_without_protocol_version_is_invalid_params(start):
    msg = start().request("initialize", {"capabilities": {}})
    assert msg["error"]["code"] == protocol.INVALID_PARAMS
    assert "protocolVersion" in msg["error"]["message"]


def test_second_initialize_is_refused(mcp):
    assert mcp.initialize()["error"]["code"] == protocol.INVALID_REQUEST


def test_unknown_method_is_method_not_found(mcp):
    msg = mcp.request("resources/list")
    assert msg["error"]["code"] == protocol.METHOD_NOT_FOUND
    assert "resources/list" in msg["error"]["message"]


def test_end_of_input_ends_the_server(start):
    client = start()
    client.close()
    assert not client.thread.is_alive()


# -- tools/list ----------------------------------------------------------------------------------


def test_tools_list_offers_the_six_tools(mcp):
    tools = mcp.request("tools/list")["result"]["tools"]
    assert [t["name"] for t in tools] == TOOL_NAMES
    assert all(t["description"] for t in tools)


def test_input_schemas_are_plain_json_schema_objects(mcp):
    for tool in mcp.request("tools/list")["result"]["tools"]:
        schema = tool["inputSchema"]
        assert schema["type"] == "object", tool["name"]
        assert set(schema.get("required", [])) <= set(schema["properties"]), tool["name"]
        text = json.dumps(schema)
        assert '"nullable"' not in text and '"example"' not in text, tool["name"]


def test_input_schemas_pass_the_json_schema_metaschema(mcp):
    jsonschema = pytest.importorskip("jsonschema")
    for tool in mcp.request("tools/list")["result"]["tools"]:
        jsonschema.Draft202012Validator.check_schema(tool["inputSchema"])


def test_prompt_schema_is_cut_from_the_http_schema_table(mcp):
    tools = {t["name"]: t for t in mcp.request("tools/list")["result"]["tools"]}
    schema = tools["clinvk_prompt"]["inputSchema"]
    assert sorted(schema["properties"]) == sorted(
        ["backend", "prompt", "model", "workdir", "approval_mode", "sandbox_mode", "session_id",
         "ephemeral", "profile"])
    assert schema["required"] == ["backend", "prompt"]
    assert schema["properties"]["approval_mode"]["enum"] == list(APPROVAL_MODES)
    assert schema["properties"]["workdir"]["description"] == \
        PromptRequest.field("workdir").description


def test_openapi_example_becomes_json_schema_examples():
    converted = plain_json_schema({"type": "object", "properties": {
        "example": {"type": "string", "example": "x"},
        "maybe": {"type": "string", "nullable": True}}})
    assert converted["properties"]["example"] == {"type": "string", "examples": ["x"]}
    assert converted["properties"]["maybe"] == {"anyOf": [{"type": "string"}, {"type": "null"}]}


# -- tools/call: arguments -----------------------------------------------------------------------


def test_unknown_tool_is_invalid_params_naming_it(mcp):
    msg = mcp.call("clinvk_nope")
    assert msg["error"]["code"] == protocol.INVALID_PARAMS
    assert '"clinvk_nope"' in msg["error"]["message"]
    assert "clinvk_prompt" in msg["error"]["message"]


def test_missing_argument_is_invalid_params_naming_the_field(mcp):
    msg = mcp.call("clinvk_prompt", {"backend": "codex"})
    assert msg["error"]["code"] == protocol.INVALID_PARAMS
    assert msg["error"]["message"] == "invalid arguments for clinvk_prompt: prompt: field required"


def test_bad_nested_argument_names_its_path(mcp):
    msg = mcp.call("clinvk_parallel", {"tasks": [{"backend": "claude", "prompt": "a"},
                                                 {"backend": "cobol", "prompt": "b"}]})
    assert msg["error"]["code"] == protocol.INVALID_PARAMS
    assert ("tasks[1].backend: expected one of claude, codex, gemini, qwen, copilot, "
            "opencode") in msg["error"]["message"]


def test_arguments_that_are_not_an_object_are_invalid_params(mcp):
    msg = mcp.request("tools/call", {"name": "clinvk_backends", "arguments": [1]})
    assert msg["error"]["code"] == protocol.INVALID_PARAMS


def test_previous_in_the_first_chain_step_is_invalid_params(mcp):
    msg = mcp.call("clinvk_chain", {"steps": [{"backend": "claude", "prompt": "{{previous}}"}]})
    assert msg["error"]["code"] == protocol.INVALID_PARAMS
    assert "steps[0].prompt" in msg["error"]["message"]


def test_sessions_show_without_id_is_invalid_params(mcp):
    msg = mcp.call("clinvk_sessions", {"action": "show"})
    assert msg["error"]["code"] == protocol.INVALID_PARAMS
    assert "id: required when action is show" in msg["error"]["message"]


# -- tools/call: results -------------------------------------------------------------------------


def test_prompt_returns_the_reply_with_session_facts(mcp):
    result = mcp.call("clinvk_prompt", {"backend": "codex", "prompt": "hello"})["result"]
    assert result["isError"] is False
    assert text_of(result) == "echo: hello"
    facts = result["structuredContent"]
    assert facts["backend"] == "codex"
    assert facts["exit_code"] == 0
    assert facts["session_id"]
    assert facts["usage"]["output_tokens"] > 0


def test_prompt_with_session_id_continues_that_conversation(mcp):
    first = mcp.call("clinvk_prompt", {"backend": "gemini", "prompt": "one"})["result"]
    sid = first["structuredContent"]["session_id"]
    second = mcp.call("clinvk_prompt", {"backend": "gemini", "prompt": "two",
                                        "session_id": sid})["result"]
    assert text_of(second) == "[history: 1 turns] echo: two"
    assert second["structuredContent"]["session_id"] == sid


def test_ephemeral_prompt_stores_no_session(mcp, clinvk_home):
    result = mcp.call("clinvk_prompt", {"backend": "claude", "prompt": "hi",
                                        "ephemeral": True})["result"]
    assert result["structuredContent"]["session_id"] == ""
    assert SessionStore(str(clinvk_home)).list()[1] == 0


def test_failing_backend_is_an_error_result_with_its_message(mcp, monkeypatch):
    monkeypatch.setenv("FAKE_CLI_MODE", "fail")
    result = mcp.call("clinvk_prompt", {"backend": "codex", "prompt": "hi"})["result"]
    assert result["isError"] is True
    assert "fake failure" in text_of(result)
    assert result["structuredContent"]["exit_code"] != 0


def test_backend_not_installed_is_an_error_result(mcp, monkeypatch):
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    result = mcp.call("clinvk_prompt", {"backend": "gemini", "prompt": "hi"})["result"]
    assert result["isError"] is True
    assert "not installed" in text_of(result)


def test_workdir_in_a_blocked_prefix_is_an_error_result(mcp):
    result = mcp.call("clinvk_prompt", {"backend": "claude", "prompt": "hi",
                                        "workdir": "/etc"})["result"]
    assert result["isError"] is True
    assert "blocked prefix /etc" in text_of(result)


def test_relative_workdir_is_an_error_result(mcp):
    result = mcp.call("clinvk_prompt", {"backend": "claude", "prompt": "hi",
                                        "workdir": "src"})["result"]
    assert result["isError"] is True
    assert "must be an absolute path" in text_of(result)


def test_dangerous_approval_mode_is_refused_by_default(mcp):
    result = mcp.call("clinvk_prompt", {"backend": "claude", "prompt": "hi",
                                        "approval_mode": "none"})["result"]
    assert result["isError"] is True
    assert "allow_dangerous_modes" in text_of(result)


def test_dangerous_approval_mode_runs_when_configured(start):
    client = start(flags={"server.allow_dangerous_modes": True})
    client.initialize()
    result = client.call("clinvk_prompt", {"backend": "gemini", "prompt": "hi",
                                           "approval_mode": "none"})["result"]
    assert result["isError"] is False


def test_configured_dry_run_describes_the_command_and_runs_nothing(start, record):
    client = start(flags={"unified_flags.dry_run": True})
    client.initialize()
    result = client.call("clinvk_prompt", {"backend": "codex", "prompt": "hi"})["result"]
    assert result["isError"] is False
    assert result["structuredContent"]["command"][1:3] == ["exec", "--json"]
    assert not record.exists()


def test_compare_returns_each_backends_answer(mcp):
    result = mcp.call("clinvk_compare", {"prompt": "same question",
                                         "backends": ["claude", "codex", "gemini"]})["result"]
    assert result["isError"] is False
    answers = [(r["backend"], r["output"]) for r in result["structuredContent"]["results"]]
    assert answers == [("claude", "echo: same question"), ("codex", "echo: same question"),
                       ("gemini", "echo: same question")]
    assert text_of(result).count("echo: same question") == 3


def test_parallel_returns_results_in_task_order(mcp):
    result = mcp.call("clinvk_parallel", {"tasks": [
        {"backend": "gemini", "prompt": "first"}, {"backend": "claude", "prompt": "second"}]})
    summary = result["result"]["structuredContent"]
    assert [r["output"] for r in summary["results"]] == ["echo: first", "echo: second"]
    assert summary["completed"] == 2


def test_parallel_with_a_failed_task_is_an_error_result(mcp):
    result = mcp.call("clinvk_parallel", {"tasks": [
        {"backend": "codex", "prompt": "fine"},
        {"backend": "codex", "prompt": "nowhere", "workdir": "/proc"}]})["result"]
    assert result["isError"] is True
    assert result["structuredContent"]["failed"] == 1
    assert "echo: fine" in text_of(result)


def test_parallel_task_with_a_flag_outside_the_allowlist_fails_alone(mcp):
    result = mcp.call("clinvk_parallel", {"tasks": [
        {"backend": "claude", "prompt": "fine"},
        {"backend": "claude", "prompt": "sneaky", "extra": ["--dangerously-skip-permissions"]}]})
    results = result["result"]["structuredContent"]["results"]
    assert [r["status"] for r in results] == ["completed", "failed"]
    assert "extra[0]" in results[1]["error"] and "not allowed" in results[1]["error"]


def test_chain_passes_the_previous_output_on(mcp):
    result = mcp.call("clinvk_chain", {"steps": [
        {"backend": "claude", "prompt": "draft"},
        {"backend": "codex", "prompt": "review: {{previous}}"}]})["result"]
    assert result["isError"] is False
    assert result["structuredContent"]["results"][1]["output"] == "echo: review: echo: draft"


def test_backends_lists_what_is_installed(mcp, monkeypatch, tmp_path):
    only_codex = tmp_path / "bin"
    only_codex.mkdir()
    os.symlink(os.path.join(ROOT, "tests", "fakes", "bin", "codex"), str(only_codex / "codex"))
    monkeypatch.setenv("PATH", str(only_codex) + os.pathsep + "/usr/bin:/bin")
    result = mcp.call("clinvk_backends")["result"]
    found = {b["name"]: b["available"] for b in result["structuredContent"]["backends"]}
    assert found == {"claude": False, "codex": True, "gemini": False, "qwen": False,
                     "copilot": False, "opencode": False}
    assert "codex: installed" in text_of(result)


def test_sessions_lists_and_shows_sessions(mcp):
    sid = mcp.call("clinvk_prompt", {"backend": "codex", "prompt": "remember me"})[
        "result"]["structuredContent"]["session_id"]
    listed = mcp.call("clinvk_sessions", {"action": "list"})["result"]
    assert [s["id"] for s in listed["structuredContent"]["sessions"]] == [sid]
    shown = mcp.call("clinvk_sessions", {"action": "show", "id": sid[:8]})["result"]
    assert shown["structuredContent"]["initial_prompt"] == "remember me"
    assert sid in text_of(shown)


def test_showing_an_unknown_session_is_an_error_result(mcp):
    result = mcp.call("clinvk_sessions", {"action": "show", "id": "abcdef"})["result"]
    assert result["isError"] is True
    assert "abcdef" in text_of(result)


def test_a_crashing_tool_is_an_error_result_and_the_server_lives_on(start):
    def bind(arguments):
        def run(call):
            raise RuntimeError("boom")
        return run
    client = start(tools=[Tool("broken", "always fails", {"type": "object"}, bind)])
    client.initialize()
    result = client.call("broken")["result"]
    assert result["isError"] is True
    assert "boom" in text_of(result)
    assert client.request("ping")["result"] == {}


# -- concurrency, cancellation, shutdown ---------------------------------------------------------


def test_reader_keeps_answering_while_a_call_runs(mcp, monkeypatch, tmp_path):
    monkeypatch.setenv("FAKE_CLI_MODE", "hang")
    monkeypatch.setenv("FAKE_CLI_PIDFILE", str(tmp_path / "pid"))
    call_id = mcp.start_call("clinvk_prompt", {"backend": "codex", "prompt": "wait"})
    read_pid(tmp_path / "pid")
    assert mcp.request("ping")["result"] == {}
    mcp.notify("notifications/cancelled", {"requestId": call_id})


def test_cancelled_call_kills_the_backend_and_gets_no_response(mcp, monkeypatch, tmp_path):
    monkeypatch.setenv("FAKE_CLI_MODE", "hang")
    monkeypatch.setenv("FAKE_CLI_PIDFILE", str(tmp_path / "pid"))
    call_id = mcp.start_call("clinvk_prompt", {"backend": "codex", "prompt": "wait"})
    pid = read_pid(tmp_path / "pid")
    mcp.notify("notifications/cancelled", {"requestId": call_id, "reason": "user stop"})
    wait_for(lambda: not pid_alive(pid), "the cancelled backend to die")
    wait_for(lambda: not mcp.server._calls, "the cancelled call to end")
    assert mcp.request("ping") == {"jsonrpc": "2.0", "id": call_id + 1, "result": {}}


def test_cancelling_a_parallel_call_kills_every_task(mcp, monkeypatch, tmp_path):
    monkeypatch.setenv("FAKE_CLI_MODE", "hang")
    pids = []
    call_ids = []
    for name in ("a", "b"):
        monkeypatch.setenv("FAKE_CLI_PIDFILE", str(tmp_path / name))
        call_ids.append(mcp.start_call("clinvk_parallel", {"tasks": [
            {"backend": "claude", "prompt": name}]}))
        pids.append(read_pid(tmp_path / name))
    mcp.notify("notifications/cancelled", {"requestId": call_ids[0]})
    wait_for(lambda: not pid_alive(pids[0]), "the cancelled task to die")
    assert pid_alive(pids[1])
    mcp.notify("notifications/cancelled", {"requestId": call_ids[1]})
    wait_for(lambda: not pid_alive(pids[1]), "the second task to die")


def test_end_of_input_kills_running_backends(mcp, monkeypatch, tmp_path):
    monkeypatch.setenv("FAKE_CLI_MODE", "hang")
    monkeypatch.setenv("FAKE_CLI_PIDFILE", str(tmp_path / "pid"))
    mcp.start_call("clinvk_prompt", {"backend": "gemini", "prompt": "wait"})
    pid = read_pid(tmp_path / "pid")
    mcp.close()
    assert not mcp.thread.is_alive()
    wait_for(lambda: not pid_alive(pid), "the backend to die after end of input")


def test_cancel_for_an_unknown_request_is_ignored(mcp):
    mcp.notify("notifications/cancelled", {"requestId": 999})
    assert mcp.request("ping")["result"] == {}


# -- progress ------------------------------------------------------------------------------------


def test_progress_token_gets_notifications_while_the_call_runs(start, monkeypatch):
    monkeypatch.setenv("FAKE_CLI_MODE", "slow")
    monkeypatch.setenv("FAKE_CLI_DELAY", "0.1")
    client = start(progress_interval=0.05)
    client.initialize()
    result = client.call("clinvk_prompt", {"backend": "codex", "prompt": "slowly"},
                         token="tok-1")
    assert result["result"]["isError"] is False
    progress = [n["params"] for n in client.notifications
                if n["method"] == "notifications/progress"]
    assert len(progress) >= 2
    assert all(p["progressToken"] == "tok-1" for p in progress)
    # The ticker may beat once before the tool names its backend ("running (0s)" on a busy
    # host); the tool's own report always comes before the result.
    assert any("codex" in p["message"] for p in progress)


def test_progress_values_only_grow_and_count_finished_tasks(start, monkeypatch):
    monkeypatch.setenv("FAKE_CLI_MODE", "slow")
    monkeypatch.setenv("FAKE_CLI_DELAY", "0.05")
    client = start(progress_interval=0.02)
    client.initialize()
    client.call("clinvk_parallel", {"max_parallel": 1, "tasks": [
        {"backend": "claude", "prompt": "a"}, {"backend": "gemini", "prompt": "b"},
        {"backend": "codex", "prompt": "c"}]}, token=7)
    progress = [n["params"] for n in client.notifications
                if n["method"] == "notifications/progress"]
    values = [p["progress"] for p in progress]
    assert values == sorted(values) and len(set(values)) == len(values)
    finished = [p for p in progress if p["progress"] in (1, 2, 3)]
    assert [(p["progress"], p["total"]) for p in finished] == [(1, 3), (2, 3), (3, 3)]


def test_no_progress_notifications_without_a_token(start, monkeypatch):
    monkeypatch.setenv("FAKE_CLI_MODE", "slow")
    monkeypatch.setenv("FAKE_CLI_DELAY", "0.1")
    client = start(progress_interval=0.02)
    client.initialize()
    client.call("clinvk_prompt", {"backend": "codex", "prompt": "quiet"})
    assert client.notifications == []


# -- the command ---------------------------------------------------------------------------------


def test_clinvk_mcp_keeps_stdout_for_protocol_and_exits_0_at_end_of_input(clinvk_home,
                                                                            fake_path):
    lines = [{"jsonrpc": "2.0", "id": 1, "method": "initialize",
              "params": {"protocolVersion": "2025-03-26", "capabilities": {},
                         "clientInfo": {"name": "test", "version": "1"}}},
             {"jsonrpc": "2.0", "method": "notifications/initialized"},
             {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}]
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "clinvk.py"), "mcp"],
                          input="".join(json.dumps(m) + "\n" for m in lines),
                          capture_output=True, text=True, timeout=WAIT)
    assert proc.returncode == 0
    replies = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["id"] for r in replies] == [1, 2]
    assert "initialize" in proc.stderr


def test_clinvk_mcp_serves_without_loading_the_terminal_cli(clinvk_home, fake_path):
    script = ("import sys; from clinvk_lib.mcp.command import mcp_command; mcp_command([]); "
              "sys.stderr.write(' '.join(sys.modules))")
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, input="",
                          capture_output=True, text=True, timeout=WAIT)
    loaded = proc.stderr.split()
    assert "clinvk_lib.mcp.tools" in loaded, proc.stderr
    assert [m for m in loaded if m.startswith("clinvk_lib.cli")] == []


def test_a_bad_config_file_for_clinvk_mcp_exits_2_naming_it(clinvk_home, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("server:\n  port: many\n")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "clinvk.py"), "mcp", "--config",
                           str(bad)], input="", capture_output=True, text=True, timeout=WAIT)
    assert proc.returncode == 2
    assert str(bad) in proc.stderr and "server.port" in proc.stderr
