"""The Anthropic-compatible API (/anthropic/v1) driven by the official ``anthropic`` Python SDK
against an in-process server with the fake CLIs."""

from __future__ import annotations

import json

import pytest

from tests.conftest import records
from tests.serverutil import server, start_server, stream_until  # noqa: F401 (fixtures)

anthropic = pytest.importorskip("anthropic")
pytestmark = pytest.mark.sdk

BACKENDS = ["claude", "codex", "gemini"]
HI = [{"role": "user", "content": "hi"}]
# The base URL as the README writes it, and as the seeds do (the SDK then adds another /v1).
BASE_PATHS = ["/anthropic", "/anthropic/v1"]


def client(srv, base="/anthropic", **kw):
    kw.setdefault("max_retries", 0)
    kw.setdefault("api_key", "unused")
    return anthropic.Anthropic(base_url=srv.url + base, **kw)


def create(srv, messages=HI, model="claude", headers=None, base="/anthropic", **kw):
    """(message, response headers)."""
    kw.setdefault("max_tokens", 1024)
    raw = client(srv, base).messages.with_raw_response.create(
        model=model, messages=messages, extra_headers=headers, **kw)
    return raw.parse(), raw.headers


def stream(srv, messages=HI, model="claude", headers=None, base="/anthropic", **kw):
    """(events, final message, text, response headers)."""
    kw.setdefault("max_tokens", 1024)
    with client(srv, base).messages.stream(model=model, messages=messages,
                                           extra_headers=headers, **kw) as s:
        events = list(s)
        return events, s.get_final_message(), "".join(
            e.delta.text for e in events if e.type == "content_block_delta"), s.response.headers


def sse_events(body: bytes):
    """[(event name, data)] of a raw SSE body."""
    out = []
    for block in body.decode().strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        out.append((lines.get("event"), json.loads(lines["data"])))
    return out


# -- replies -------------------------------------------------------------------------------------


@pytest.mark.parametrize("base", BASE_PATHS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_message_on_each_backend(server, backend, base):
    message, headers = create(server, model=backend, base=base)
    assert message.type == "message" and message.role == "assistant"
    assert message.id.startswith("msg_") and message.model == backend
    assert [(b.type, b.text) for b in message.content] == [("text", "echo: hi")]
    assert message.stop_reason == "end_turn" and message.stop_sequence is None
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
    assert headers["x-clinvk-session-id"] and headers["x-request-id"]


@pytest.mark.parametrize("base", BASE_PATHS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_streamed_message_on_each_backend(server, backend, base):
    events, final, text, headers = stream(server, model=backend, base=base)
    kinds = [e.type for e in events]
    assert kinds[:2] == ["message_start", "content_block_start"]
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert text == "echo: hi" and final.content[0].text == "echo: hi"
    if backend != "codex":        # codex prints its message whole
        assert kinds.count("content_block_delta") > 1
    assert final.stop_reason == "end_turn" and final.usage.output_tokens > 0
    assert final.id.startswith("msg_") and final.model == backend
    assert headers["content-type"].startswith("text/event-stream")
    assert headers["cache-control"] == "no-cache" and headers["x-accel-buffering"] == "no"
    assert headers["x-clinvk-session-id"] and headers["x-request-id"]


def test_stream_event_sequence_on_the_wire(server):
    reply = server.post("/anthropic/v1/messages", {"model": "gemini", "max_tokens": 5,
                                                   "messages": HI, "stream": True})
    events = sse_events(reply.body)
    assert all(name == data["type"] for name, data in events)
    names = [name for name, _ in events]
    assert names == ["message_start", "content_block_start"] + ["content_block_delta"] * 3 + \
        ["content_block_stop", "message_delta", "message_stop"]
    start = events[0][1]["message"]
    assert (start["content"], start["stop_reason"]) == ([], None)
    delta = events[-2][1]
    assert delta["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert delta["usage"]["output_tokens"] > 0


def test_usage_separates_cache_reads_from_input(server):
    message, _ = create(server, model="codex")
    usage = message.usage
    assert usage.cache_read_input_tokens == 4      # the fake codex reports 4 cached tokens
    assert usage.input_tokens > 0


def test_every_field_a_client_sends_is_accepted(server):
    message, _ = create(
        server, system=[{"type": "text", "text": "Be brief.", "cache_control": {
            "type": "ephemeral"}}],
        metadata={"user_id": "u-1"}, stop_sequences=["END"], temperature=0.1, top_p=0.9,
        top_k=5, tools=[{"name": "f", "description": "d", "input_schema": {
            "type": "object"}}], tool_choice={"type": "auto"},
        headers={"anthropic-version": "2023-06-01", "anthropic-beta": "x"},
        extra_body={"some_future_field": True})
    assert message.content[0].text == "echo: hi"


# -- what the backend receives -------------------------------------------------------------------


def test_text_blocks_become_one_prompt(server, record):
    create(server, messages=[{"role": "user", "content": [
        {"type": "text", "text": "block one"}, {"type": "text", "text": "block two"}]}])
    assert records(record)[-1]["stdin"] == "block one\nblock two"


def test_multi_turn_history_becomes_one_tagged_prompt(server, record):
    create(server, model="gemini", messages=[
        {"role": "user", "content": "first"}, {"role": "assistant", "content": "answer"},
        {"role": "user", "content": "second"}])
    assert records(record)[-1]["stdin"] == ("<conversation_history>\n<user>\nfirst\n</user>\n"
                                   "<assistant>\nanswer\n</assistant>\n"
                                   "</conversation_history>\n\nsecond")


def test_system_goes_to_claudes_system_prompt(server, record):
    create(server, system="Be brief.")
    run = records(record)[-1]
    assert "--system-prompt=Be brief." in run["argv"] and run["stdin"] == "hi"


def test_system_blocks_open_the_prompt_on_gemini(server, record):
    create(server, model="gemini", system=[{"type": "text", "text": "Be brief."}])
    assert records(record)[-1]["stdin"] == "<system>\nBe brief.\n</system>\n\nhi"


def test_vendor_model_id_runs_claude_with_that_model(server, record):
    message, _ = create(server, model="claude-sonnet-4-5")
    assert "--model=claude-sonnet-4-5" in records(record)[-1]["argv"]
    assert message.model == "claude-sonnet-4-5"


# -- sessions ------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_session_header_continues_with_only_the_newest_user_turn(server, record, backend):
    first, headers = create(server, model=backend, messages=[{"role": "user",
                                                              "content": "first"}])
    session = headers["x-clinvk-session-id"]
    _, final, text, again = stream(server, model=backend,
                                   headers={"X-Clinvk-Session-Id": session}, messages=[
                                       {"role": "user", "content": "first"},
                                       {"role": "assistant", "content": first.content[0].text},
                                       {"role": "user", "content": "second"}])
    assert text == "[history: 1 turns] echo: second"
    assert records(record)[-1]["stdin"] == "second"
    assert again["x-clinvk-session-id"] == session


def test_every_call_creates_a_session_tagged_anthropic(server):
    _, headers = create(server, metadata={"user_id": "u-1"})
    session = server.get("/api/v1/sessions/" + headers["x-clinvk-session-id"]).json()
    assert "anthropic" in session["tags"] and session["turn_count"] == 1


def test_ephemeral_header_runs_without_a_session(server):
    _, headers = create(server, headers={"X-Clinvk-Ephemeral": "true"})
    assert "x-clinvk-session-id" not in headers
    assert server.get("/api/v1/sessions").json()["total"] == 0


# -- count_tokens --------------------------------------------------------------------------------


@pytest.mark.parametrize("base", BASE_PATHS)
def test_count_tokens_is_characters_over_four_rounded_up(server, base):
    count = client(server, base).messages.count_tokens(
        model="claude", system="12345678", messages=[{"role": "user", "content": "abc"}])
    assert count.input_tokens == 3          # ceil((8 + 3) / 4)


def test_count_tokens_of_an_unknown_model_is_not_found(server):
    with pytest.raises(anthropic.NotFoundError):
        client(server).messages.count_tokens(model="llama-3", messages=HI)


# -- errors --------------------------------------------------------------------------------------


def error_of(info):
    return info.value.body["error"]


def test_unknown_model_is_not_found_in_anthropic_shape(server):
    with pytest.raises(anthropic.NotFoundError) as info:
        create(server, model="llama-3")
    assert info.value.body["type"] == "error"
    assert error_of(info)["type"] == "not_found_error"
    assert error_of(info)["message"].startswith("model 'llama-3' not found")


def test_max_tokens_is_required(server):
    reply = server.post("/anthropic/v1/messages", {"model": "claude", "messages": HI})
    assert reply.status == 400
    assert reply.json() == {"type": "error", "error": {
        "type": "invalid_request_error", "message": "max_tokens: field required"}}


def test_zero_max_tokens_is_a_bad_request(server):
    with pytest.raises(anthropic.BadRequestError) as info:
        create(server, max_tokens=0)
    assert error_of(info)["type"] == "invalid_request_error"
    assert error_of(info)["message"].startswith("max_tokens:")


def test_image_block_is_a_bad_request_naming_it(server):
    with pytest.raises(anthropic.BadRequestError) as info:
        create(server, messages=[{"role": "user", "content": [
            {"type": "text", "text": "look"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                         "data": "AA=="}}]}])
    assert error_of(info)["message"].startswith("messages[0].content[1].type:")
    assert "image blocks are not supported" in error_of(info)["message"]


def test_trailing_assistant_prefill_is_a_bad_request(server):
    with pytest.raises(anthropic.BadRequestError) as info:
        create(server, messages=HI + [{"role": "assistant", "content": "Sure,"}])
    assert "messages[1].role" in error_of(info)["message"]


def test_failed_backend_run_is_a_424_not_retried_by_the_sdk(server, record, monkeypatch):
    monkeypatch.setenv("FAKE_CLI_MODE", "fail")
    with pytest.raises(anthropic.APIStatusError) as info:
        client(server, max_retries=2).messages.create(model="gemini", max_tokens=5,
                                                      messages=HI)
    assert info.value.status_code == 424
    assert error_of(info)["type"] == "api_error"
    assert "fake failure (FAKE_CLI_MODE=fail)" in error_of(info)["message"]
    assert len(records(record)) == 1


def test_backend_not_installed_is_an_overloaded_503(server, monkeypatch):
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    with pytest.raises(anthropic.InternalServerError) as info:
        create(server)
    assert info.value.status_code == 503
    assert error_of(info)["type"] == "overloaded_error"


def test_run_over_the_request_timeout_is_a_424_not_a_retryable_504(start_server, monkeypatch):
    monkeypatch.setenv("FAKE_CLI_MODE", "hang")
    srv = start_server(**{"server.request_timeout_secs": 1})
    with pytest.raises(anthropic.APIStatusError) as info:
        create(srv)
    assert info.value.status_code == 424 and error_of(info)["type"] == "api_error"
    assert info.value.response.headers["x-should-retry"] == "false"


def test_body_over_the_size_limit_is_request_too_large(start_server):
    srv = start_server(**{"server.max_request_body_bytes": 1000})
    with pytest.raises(anthropic.RequestTooLargeError) as info:
        create(srv, messages=[{"role": "user", "content": "x" * 3000}])
    assert error_of(info)["type"] == "request_too_large"


def test_missing_api_key_is_an_authentication_error(start_server):
    srv = start_server(**{"server.api_keys": ["k-123"]})
    with pytest.raises(anthropic.AuthenticationError) as info:
        create(srv)
    assert error_of(info)["type"] == "authentication_error"
    message = client(srv, api_key="k-123").messages.create(model="claude", max_tokens=5,
                                                           messages=HI)
    assert message.content[0].text == "echo: hi"


def test_rate_limited_request_is_a_rate_limit_error(start_server):
    srv = start_server(**{"server.rate_limit_enabled": True, "server.rate_limit_rps": 0.01,
                          "server.rate_limit_burst": 1})
    client(srv).messages.count_tokens(model="claude", messages=HI)
    with pytest.raises(anthropic.RateLimitError) as info:
        client(srv).messages.count_tokens(model="claude", messages=HI)
    assert error_of(info)["type"] == "rate_limit_error"


def test_unknown_path_under_anthropic_answers_in_anthropic_shape(server):
    reply = server.post("/anthropic/v1/complete", {"model": "claude"})
    assert reply.status == 404
    assert reply.json()["type"] == "error"
    assert reply.json()["error"]["type"] == "not_found_error"


def test_failure_after_the_stream_started_raises_in_the_sdk(server, monkeypatch):
    monkeypatch.setenv("FAKE_CLI_MODE", "crash_midstream")
    with pytest.raises(anthropic.APIStatusError) as info:
        stream(server)
    assert info.value.body["error"]["type"] == "api_error"
    assert "the claude backend failed" in info.value.body["error"]["message"]


def test_failed_stream_ends_with_an_error_event(server, monkeypatch):
    monkeypatch.setenv("FAKE_CLI_MODE", "fail")
    reply = server.post("/anthropic/v1/messages", {"model": "codex", "max_tokens": 5,
                                                   "messages": HI, "stream": True})
    name, data = sse_events(reply.body)[-1]
    assert name == "error" and data["type"] == "error"
    assert data["error"]["type"] == "api_error" and "fake failure" in data["error"]["message"]


# -- keep-alive ----------------------------------------------------------------------------------


def test_silent_backend_gets_ping_events(start_server, monkeypatch):
    monkeypatch.setenv("FAKE_CLI_MODE", "hang")
    srv = start_server(**{"server.sse_keepalive_secs": 1})
    ping = b'event: ping\ndata: {"type":"ping"}\n\n'
    status, seen = stream_until(srv, "/anthropic/v1/messages", {
        "model": "codex", "max_tokens": 5, "messages": HI, "stream": True}, ping)
    assert status == 200
    assert ping in seen, "the stream ended before a ping"


def test_sdk_reads_a_slow_stream_with_pings(start_server, monkeypatch):
    monkeypatch.setenv("FAKE_CLI_MODE", "slow")
    monkeypatch.setenv("FAKE_CLI_DELAY", "1.2")
    srv = start_server(**{"server.sse_keepalive_secs": 1})
    _, final, text, _ = stream(srv, model="codex")
    assert text == "echo: hi" and final.stop_reason == "end_turn"
