"""backends/claude_dialect.py: the one parser for the Claude stream dialect that claude and
qwen both print, tolerant of what newer releases add (claude 2.1.2xx-3xx: mcp_server_errors on
init, progress lines, sub-agent messages with parent_tool_use_id; qwen's goal_state events)."""

from __future__ import annotations

import json

import pytest

from clinvk_lib import events as ev
from clinvk_lib.backends import base, claude_dialect, parsing

SID = "3f0c2a9e-8d41-4c1b-9a77-0e5f3b2d1c4a"
INIT = {"type": "system", "subtype": "init", "session_id": SID, "model": "m"}
RESULT = {"type": "result", "subtype": "success", "is_error": False, "session_id": SID,
          "result": "the answer", "usage": {"input_tokens": 3, "output_tokens": 2}}


def assistant(*blocks, parent=None, **extra):
    return dict({"type": "assistant", "session_id": SID, "parent_tool_use_id": parent,
                 "message": {"id": "msg_1", "role": "assistant", "content": list(blocks)}},
                **extra)


def text(t):
    return {"type": "text", "text": t}


def parse(backend, *lines, exit_code=0, stderr=""):
    """(events, Result) of ``lines`` (dicts or raw strings) fed to ``backend``'s stream parser."""
    parser = base.get(backend).new_stream_parser()
    events = []
    for line in lines:
        events += parser.feed(line if isinstance(line, str) else json.dumps(line))
    events += parser.finish(exit_code, stderr)
    return events, parser.result(exit_code)


@pytest.mark.parametrize("backend", ["claude", "qwen"])
def test_claude_and_qwen_read_their_lines_with_the_one_dialect_parser(backend):
    assert isinstance(base.get(backend).new_stream_parser(), claude_dialect.DialectParser)


@pytest.mark.parametrize("backend", ["claude", "qwen"])
def test_unknown_line_types_and_fields_are_skipped_and_the_run_still_succeeds(backend):
    events, result = parse(
        backend, dict(INIT, future_field={"x": 1}),
        {"type": "progress", "data": {"percent": 40}},
        {"type": "system", "subtype": "status", "status": "requesting"},
        {"type": "stream_event", "event": {"type": "goal_state", "goal_state": {"v": 2}}},
        {"type": "rate_limit_event", "rate_limit_info": {"status": "allowed"}},
        {"type": "some_type_from_2027", "payload": [1, 2]},
        assistant(dict(text("the answer"), citations=[]), new_top_level=True),
        dict(RESULT, brand_new_stats={"k": 1}))
    assert [e.type for e in events] == [ev.INIT, ev.MESSAGE, ev.DONE]
    assert result.ok and result.text == "the answer" and result.backend_session_id == SID


def test_mcp_server_errors_on_init_are_warnings_that_do_not_fail_the_run():
    events, result = parse("claude", dict(INIT, mcp_server_errors=[
        {"name": "weather", "error": "spawn ENOENT"}]), assistant(text("the answer")), RESULT)
    warnings = [e.content for e in events if e.type == ev.ERROR]
    assert warnings == [{"message": "MCP server 'weather': spawn ENOENT", "fatal": False,
                         "code": "mcp_server_error"}]
    assert result.ok


API_RETRY = {"type": "system", "subtype": "api_retry", "attempt": 2, "max_retries": 10,
             "retry_delay_ms": 1200, "error_status": 529, "error": "overloaded"}


@pytest.mark.parametrize("backend", ["claude", "qwen"])
def test_an_api_retry_line_is_a_warning_and_the_run_still_succeeds(backend):
    events, result = parse(backend, INIT, API_RETRY, dict(API_RETRY, attempt=3, error_status=None,
                                                          retry_delay_ms=None),
                           assistant(text("the answer")), RESULT)
    assert [e.content for e in events if e.type == ev.ERROR] == [
        {"message": "model API 529 overloaded; retrying (2 of 10) in 1.2s", "fatal": False,
         "code": "retry"},
        {"message": "model API overloaded; retrying (3 of 10)", "fatal": False, "code": "retry"}]
    assert result.ok and result.text == "the answer"


def test_a_run_that_gives_up_retrying_a_429_is_rate_limited():
    _, result = parse("claude", INIT, dict(API_RETRY, error_status=429, error="rate_limit"),
                      dict(RESULT, is_error=True, subtype="success",
                           result="API Error: Request failed after 10 retries"), exit_code=1)
    assert parsing.classified_failure(result)[0] == parsing.RATE_LIMITED


def test_mcp_server_errors_given_as_a_map_and_failed_servers_are_warned_about():
    events, _ = parse("qwen", dict(INIT, mcp_servers=[{"name": "ok", "status": "connected"},
                                                      {"name": "db", "status": "failed"}],
                                   mcp_server_errors={"git": "exited with code 1"}), RESULT)
    assert [e.content["message"] for e in events if e.type == ev.ERROR] == [
        "MCP server 'db': failed to start", "MCP server 'git': exited with code 1"]


def test_sub_agent_text_and_deltas_are_left_out_but_its_tool_calls_are_kept():
    events, result = parse(
        "claude", INIT,
        {"type": "stream_event", "parent_tool_use_id": "toolu_1", "event": {
            "type": "content_block_delta", "delta": {"type": "text_delta", "text": "inner"}}},
        assistant(text("inner thoughts"),
                  {"type": "tool_use", "id": "toolu_2", "name": "Grep", "input": {"q": "x"}},
                  parent="toolu_1"),
        assistant(text("the answer")), RESULT)
    assert [e.content.get("tool_name") for e in events if e.type == ev.TOOL_USE] == ["Grep"]
    assert result.text == "the answer"


def test_assistant_content_given_as_a_plain_string_is_read():
    events, _ = parse("claude", INIT, {"type": "assistant", "message": {"content": "plain"}},
                      RESULT)
    assert [e.content["text"] for e in events if e.type == ev.MESSAGE] == ["plain"]


@pytest.mark.parametrize("line", [
    {"type": "assistant", "message": None}, {"type": "assistant", "message": {"content": 7}},
    {"type": "user", "message": {"content": [None, 3]}},
    {"type": "stream_event", "event": {"type": "content_block_delta", "delta": "x"}},
    {"type": "stream_event", "event": {"type": "message_start", "message": []}},
    {"type": "result", "usage": None, "subtype": "success", "result": "the answer"},
    ["not", "an", "object"], 42,
])
def test_lines_of_an_unexpected_shape_are_never_a_crash(line):
    events, result = parse("claude", INIT, line, RESULT)
    assert events[-1].type == ev.DONE and result.ok


def test_result_error_given_as_an_object_is_the_error():
    events, result = parse("qwen", INIT, {"type": "result", "subtype": "error_during_execution",
                                          "is_error": True, "session_id": SID,
                                          "error": {"message": "boom"}}, exit_code=1)
    assert result.error == "boom"
    assert [e.content["message"] for e in events if e.type == ev.ERROR] == ["boom"]


def test_qwen_api_error_text_is_the_error_never_the_reply():
    _, result = parse("qwen", INIT, assistant(text("[API Error: 500 upstream]")),
                      {"type": "result", "subtype": "error_during_execution", "is_error": True,
                       "session_id": SID}, exit_code=1)
    assert result.text == "" and result.error == "[API Error: 500 upstream]"


def test_claude_text_starting_like_a_qwen_api_error_is_a_reply():
    _, result = parse("claude", INIT, assistant(text("[API Error: is a fine title]")), RESULT)
    assert "[API Error: is a fine title]" in result.text


def test_failed_run_with_no_error_on_stdout_takes_the_error_object_from_stderr():
    stderr = 'warning: x\n{\n  "error": {\n    "type": "FatalTurnLimitedError",\n' \
             '    "message": "Reached max session turns",\n    "code": 53\n  }\n}\n'
    events, result = parse("qwen", INIT, exit_code=53, stderr=stderr)
    assert result.error == "Reached max session turns"
    assert [e.content.get("code") for e in events if e.type == ev.ERROR] == [
        "FatalTurnLimitedError"]


def test_usage_counts_cached_input_once_on_qwen_and_adds_it_on_claude():
    usage = {"input_tokens": 10, "output_tokens": 2, "cache_read_input_tokens": 4}
    claude_usage = parse("claude", INIT, dict(RESULT, usage=usage))[1].usage
    qwen_usage = parse("qwen", INIT, dict(RESULT, usage=usage))[1].usage
    assert (claude_usage.input_tokens, qwen_usage.input_tokens) == (14, 10)
    assert claude_usage.cached_tokens == qwen_usage.cached_tokens == 4


@pytest.mark.parametrize("backend, result_line, kind", [
    ("claude", dict(RESULT, is_error=True, api_error_status=401,
                    result="Failed to authenticate. API Error: 401 invalid x-api-key"),
     parsing.NOT_AUTHENTICATED),
    ("claude", dict(RESULT, is_error=True, api_error_status=None,
                    result="Not logged in \u00b7 Please run /login"), parsing.NOT_AUTHENTICATED),
    ("claude", dict(RESULT, is_error=True, api_error_status=429,
                    result="API Error: Request rejected (429) \u00b7 slow down"),
     parsing.RATE_LIMITED),
    ("qwen", {"type": "result", "subtype": "error_during_execution", "is_error": True,
              "error": {"message": "No auth type is selected. Please configure an auth "
                                   "type"}}, parsing.NOT_AUTHENTICATED),
])
def test_failures_to_authenticate_and_rate_limits_get_their_class(backend, result_line, kind):
    _, result = parse(backend, INIT, result_line, exit_code=1)
    assert parsing.classified_failure(result)[0] == kind
