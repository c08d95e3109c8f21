"""The OpenAI-compatible API (/openai/v1) driven by the official ``openai`` Python SDK (and
once by the JS SDK under node) against an in-process server with the fake CLIs."""

from __future__ import annotations

import http.client
import json

import pytest

from clinvk_lib.backends import base
from tests.conftest import records
from tests.nodeutil import run_script
from tests.serverutil import (  # noqa: F401 (fixtures)
    pid_alive, read_pid, server, start_server, stream_until, wait_for)

openai = pytest.importorskip("openai")
pytestmark = pytest.mark.sdk

BACKENDS = ["claude", "codex", "gemini"]
HI = [{"role": "user", "content": "hi"}]


def client(srv, **kw):
    kw.setdefault("max_retries", 0)
    return openai.OpenAI(base_url=srv.url + "/openai/v1", api_key="unused", **kw)


def chat(srv, messages=HI, model="claude", headers=None, **kw):
    """(completion, response headers)."""
    raw = client(srv).chat.completions.with_raw_response.create(
        model=model, messages=messages, extra_headers=headers, **kw)
    return raw.parse(), raw.headers


def stream_chat(srv, messages=HI, model="claude", headers=None, **kw):
    """(chunks, response headers)."""
    with client(srv).chat.completions.with_streaming_response.create(
            model=model, messages=messages, stream=True, extra_headers=headers, **kw) as resp:
        return list(resp.parse()), resp.headers


# -- replies -------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_chat_completion_on_each_backend(server, backend):
    completion, headers = chat(server, model=backend)
    assert completion.object == "chat.completion" and completion.id.startswith("chatcmpl-")
    assert completion.model == backend and completion.created > 0
    choice = completion.choices[0]
    assert (choice.index, choice.message.role, choice.message.content, choice.finish_reason) \
        == (0, "assistant", "echo: hi", "stop")
    usage = completion.usage
    assert usage.prompt_tokens > 0 and usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert headers["x-clinvk-session-id"] and headers["x-request-id"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_streamed_chat_completion_on_each_backend(server, backend):
    chunks, headers = stream_chat(server, model=backend)
    assert all(c.object == "chat.completion.chunk" and c.model == backend for c in chunks)
    assert len({c.id for c in chunks}) == 1 and chunks[0].id.startswith("chatcmpl-")
    assert chunks[0].choices[0].delta.role == "assistant"
    deltas = [c.choices[0].delta.content for c in chunks[1:-1]]
    assert "".join(deltas) == "echo: hi"
    if backend != "codex":        # codex prints its message whole
        assert len(deltas) > 1
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.choices[0].finish_reason is None for c in chunks[:-1])
    assert all(c.usage is None for c in chunks)
    assert headers["content-type"].startswith("text/event-stream")
    assert headers["cache-control"] == "no-cache" and headers["x-accel-buffering"] == "no"
    assert headers["x-clinvk-session-id"] and headers["x-request-id"]


def test_stream_with_include_usage_ends_with_a_usage_chunk(server):
    chunks, _ = stream_chat(server, model="gemini", stream_options={"include_usage": True})
    last = chunks[-1]
    assert last.choices == [] and last.usage.completion_tokens > 0
    assert last.usage.total_tokens == last.usage.prompt_tokens + last.usage.completion_tokens
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert all(c.usage is None for c in chunks[:-1])


def test_stream_ends_with_done(server):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.request("POST", "/openai/v1/chat/completions", json.dumps(
        {"model": "claude", "messages": HI, "stream": True}),
        {"Content-Type": "application/json"})
    body = conn.getresponse().read().decode()
    assert body.endswith("data: [DONE]\n\n")
    assert all(block.startswith("data: ") for block in body.strip().split("\n\n"))


def test_every_field_a_client_sends_is_accepted(server):
    completion, _ = chat(
        server, messages=[{"role": "user", "content": "hi", "name": "ann"}],
        max_tokens=100, max_completion_tokens=100, stop="\n\n", temperature=0.2, top_p=0.9,
        n=1, user="u-1", metadata={"ticket": "T-1"}, response_format={"type": "text"},
        presence_penalty=0, frequency_penalty=0, seed=7, logit_bias={"50256": -100},
        tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}],
        tool_choice="none", extra_body={"some_future_field": {"x": 1}})
    assert completion.choices[0].message.content == "echo: hi"


def test_stop_as_a_list_and_null_content_are_accepted(server):
    completion, _ = chat(server, stop=["END", "STOP"], messages=[
        {"role": "user", "content": "a"}, {"role": "assistant", "content": None},
        {"role": "user", "content": "b"}])
    assert completion.choices[0].finish_reason == "stop"


# -- what the backend receives -------------------------------------------------------------------


def test_array_content_parts_become_one_prompt(server, record):
    chat(server, messages=[{"role": "user", "content": [
        {"type": "text", "text": "part one"}, {"type": "text", "text": "part two"}]}])
    assert records(record)[-1]["stdin"] == "part one\npart two"


def test_multi_turn_history_becomes_one_tagged_prompt(server, record):
    completion, _ = chat(server, model="codex", messages=[
        {"role": "user", "content": "first"}, {"role": "assistant", "content": "answer"},
        {"role": "tool", "tool_call_id": "c1", "content": "42"},
        {"role": "user", "content": "second"}])
    expected = ("<conversation_history>\n<user>\nfirst\n</user>\n<assistant>\nanswer\n"
                "</assistant>\n<tool>\n42\n</tool>\n</conversation_history>\n\nsecond")
    assert records(record)[-1]["stdin"] == expected
    assert completion.choices[0].message.content == "echo: " + expected


def test_system_and_developer_messages_go_to_claudes_system_prompt(server, record):
    chat(server, messages=[{"role": "system", "content": "Be brief."},
                           {"role": "developer", "content": "Use English."},
                           {"role": "user", "content": "hi"}])
    run = records(record)[-1]
    assert "--system-prompt=Be brief.\n\nUse English." in run["argv"]
    assert run["stdin"] == "hi"


def test_system_message_goes_to_codex_developer_instructions(server, record):
    chat(server, model="codex", messages=[{"role": "system", "content": "Be brief."}] + HI)
    argv = records(record)[-1]["argv"]
    assert argv[argv.index("-c") + 1] == 'developer_instructions="Be brief."'


def test_system_message_opens_the_prompt_on_gemini(server, record):
    chat(server, model="gemini", messages=[{"role": "system", "content": "Be brief."}] + HI)
    assert records(record)[-1]["stdin"] == "<system>\nBe brief.\n</system>\n\nhi"


def test_backend_slash_model_passes_the_model_to_the_cli(server, record):
    completion, _ = chat(server, model="claude/claude-sonnet-4-5")
    assert "--model=claude-sonnet-4-5" in records(record)[-1]["argv"]
    assert completion.model == "claude/claude-sonnet-4-5"


def test_vendor_model_id_is_mapped_by_prefix(server, record):
    chat(server, model="gpt-5")
    assert (records(record)[-1]["backend"] == "codex"
            and "--model=gpt-5" in records(record)[-1]["argv"])


# -- sessions ------------------------------------------------------------------------------------


def test_session_header_continues_with_only_the_newest_user_turn(server, record):
    first, headers = chat(server, messages=[{"role": "user", "content": "first"}])
    session = headers["x-clinvk-session-id"]
    second, again = chat(server, headers={"X-Clinvk-Session-Id": session}, messages=[
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": first.choices[0].message.content},
        {"role": "user", "content": "second"}])
    assert second.choices[0].message.content == "[history: 1 turns] echo: second"
    assert records(record)[-1]["stdin"] == "second"
    assert again["x-clinvk-session-id"] == session


@pytest.mark.parametrize("backend", BACKENDS)
def test_streamed_reply_continues_a_session_and_names_it(server, backend):
    _, headers = stream_chat(server, model=backend)
    session = headers["x-clinvk-session-id"]
    chunks, again = stream_chat(server, model=backend,
                                headers={"X-Clinvk-Session-Id": session})
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "[history: 1 turns] echo: hi"
    assert again["x-clinvk-session-id"] == session


def test_every_call_creates_a_session_tagged_openai(server):
    _, headers = chat(server, metadata={"ticket": "T-1"})
    session = server.get("/api/v1/sessions/" + headers["x-clinvk-session-id"]).json()
    assert "openai" in session["tags"] and session["turn_count"] == 1


def test_ephemeral_header_runs_without_a_session(server):
    _, headers = chat(server, headers={"X-Clinvk-Ephemeral": "true"})
    assert "x-clinvk-session-id" not in headers
    assert server.get("/api/v1/sessions").json()["total"] == 0


def test_unknown_session_is_not_found(server):
    with pytest.raises(openai.NotFoundError) as info:
        chat(server, headers={"X-Clinvk-Session-Id": "nosuchsession"})
    assert info.value.code == "session_not_found"


def test_session_of_another_backend_is_a_bad_request(server):
    _, headers = chat(server, model="claude")
    with pytest.raises(openai.BadRequestError) as info:
        chat(server, model="codex",
             headers={"X-Clinvk-Session-Id": headers["x-clinvk-session-id"]})
    assert "belongs to backend claude" in info.value.message


# -- models --------------------------------------------------------------------------------------


def test_models_are_the_backends_with_their_vendors(start_server):
    srv = start_server(**{"backends.claude.model": "claude-sonnet-4-5"})
    models = {m.id: m.owned_by for m in client(srv).models.list()}
    assert models == dict({n: base.get(n).vendor for n in base.NAMES},
                          **{n + "-chat": base.get(n).vendor for n in base.NAMES},
                          **{"claude/claude-sonnet-4-5": "anthropic"})
    assert [models[n] for n in ("claude", "codex", "gemini", "qwen")] == [
        "anthropic", "openai", "google", "qwen"]


def test_model_can_be_retrieved_by_any_id_chat_accepts(server):
    c = client(server)
    assert c.models.retrieve("gemini").owned_by == "google"
    assert c.models.retrieve("claude/claude-sonnet-4-5").id == "claude/claude-sonnet-4-5"
    assert server.get("/openai/v1/models/codex/gpt-5").json()["owned_by"] == "openai"


def test_unknown_model_retrieval_is_not_found(server):
    with pytest.raises(openai.NotFoundError) as info:
        client(server).models.retrieve("llama-3")
    assert info.value.code == "model_not_found"


# -- errors --------------------------------------------------------------------------------------


def test_unknown_model_is_not_found_in_openai_shape(server):
    with pytest.raises(openai.NotFoundError) as info:
        chat(server, model="llama-3")
    body = info.value.body
    assert {k: body[k] for k in ("type", "param", "code")} == {
        "type": "invalid_request_error", "param": "model", "code": "model_not_found"}
    assert body["message"].startswith("model 'llama-3' not found: use a backend name")


def test_more_than_one_choice_is_a_bad_request(server):
    with pytest.raises(openai.BadRequestError) as info:
        chat(server, n=2)
    assert info.value.param == "n" and "only n=1" in info.value.message


def test_image_part_is_a_bad_request_naming_it(server):
    with pytest.raises(openai.BadRequestError) as info:
        chat(server, messages=[{"role": "user", "content": [
            {"type": "text", "text": "look"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}}]}])
    assert info.value.param == "messages[0].content[1].type"
    assert "'image_url'" in info.value.message


def test_trailing_assistant_message_is_a_bad_request(server):
    with pytest.raises(openai.BadRequestError) as info:
        chat(server, messages=HI + [{"role": "assistant", "content": "prefill"}])
    assert info.value.param == "messages[1].role"


def test_failed_backend_run_is_a_424_not_retried_by_the_sdk(server, record, monkeypatch):
    monkeypatch.setenv("FAKE_CLI_MODE", "fail")
    with pytest.raises(openai.APIStatusError) as info:
        client(server, max_retries=2).chat.completions.create(model="claude", messages=HI)
    assert info.value.status_code == 424 and info.value.code == "backend_failed"
    assert info.value.type == "server_error"
    assert "fake failure (FAKE_CLI_MODE=fail)" in info.value.message
    assert len(records(record)) == 1


def test_backend_error_reported_with_exit_code_0_is_still_a_424(server, monkeypatch):
    monkeypatch.setenv("FAKE_CLI_MODE", "error_exit0")
    with pytest.raises(openai.APIStatusError) as info:
        chat(server, model="codex")
    assert info.value.status_code == 424


def test_backend_not_installed_is_a_503(server, monkeypatch):
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    with pytest.raises(openai.InternalServerError) as info:
        chat(server)
    assert info.value.status_code == 503 and info.value.code == "backend_not_installed"


def test_run_over_the_request_timeout_is_a_424_not_a_retryable_504(start_server, monkeypatch):
    monkeypatch.setenv("FAKE_CLI_MODE", "hang")
    srv = start_server(**{"server.request_timeout_secs": 1})
    with pytest.raises(openai.APIStatusError) as info:
        chat(srv)
    assert info.value.status_code == 424 and info.value.code == "timeout"
    assert info.value.response.headers["x-should-retry"] == "false"


def test_body_over_the_size_limit_is_a_413(start_server):
    srv = start_server(**{"server.max_request_body_bytes": 1000})
    with pytest.raises(openai.APIStatusError) as info:
        chat(srv, messages=[{"role": "user", "content": "x" * 3000}])
    assert info.value.status_code == 413 and info.value.code == "request_too_large"


def test_missing_api_key_is_an_authentication_error(start_server):
    srv = start_server(**{"server.api_keys": ["k-123"]})
    with pytest.raises(openai.AuthenticationError) as info:
        chat(srv)
    assert info.value.body["type"] == "authentication_error"
    ok = openai.OpenAI(base_url=srv.url + "/openai/v1", api_key="k-123", max_retries=0)
    assert ok.chat.completions.create(model="claude", messages=HI).choices


def test_rate_limited_request_is_a_rate_limit_error(start_server):
    srv = start_server(**{"server.rate_limit_enabled": True, "server.rate_limit_rps": 0.01,
                          "server.rate_limit_burst": 1})
    client(srv).models.list()
    with pytest.raises(openai.RateLimitError) as info:
        client(srv).models.list()
    assert info.value.body["type"] == "rate_limit_error"
    assert int(info.value.response.headers["retry-after"]) > 0


def test_unknown_path_under_openai_answers_in_openai_shape(server):
    reply = server.post("/openai/v1/embeddings", {"model": "claude", "input": "x"})
    assert reply.status == 404
    assert set(reply.json()["error"]) == {"message", "type", "param", "code"}


def test_non_json_body_is_a_415_in_openai_shape(server):
    reply = server.post("/openai/v1/chat/completions", b"model=claude",
                        headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert reply.status == 415
    assert reply.json()["error"]["type"] == "invalid_request_error"


def test_failure_after_the_stream_started_raises_in_the_sdk(server, monkeypatch):
    monkeypatch.setenv("FAKE_CLI_MODE", "crash_midstream")
    with pytest.raises(openai.APIError) as info:
        stream_chat(server)
    assert "the claude backend failed" in info.value.message


def test_failed_stream_ends_with_an_error_event_then_done(server, monkeypatch):
    monkeypatch.setenv("FAKE_CLI_MODE", "fail")
    reply = server.post("/openai/v1/chat/completions",
                        {"model": "gemini", "messages": HI, "stream": True})
    blocks = reply.body.decode().strip().split("\n\n")
    error = json.loads(blocks[-2][len("data: "):])["error"]
    assert error["type"] == "server_error" and error["code"] == "backend_failed"
    assert "fake failure" in error["message"]
    assert blocks[-1] == "data: [DONE]"


def test_client_leaving_mid_stream_stops_the_backend(server, monkeypatch, tmp_path):
    monkeypatch.setenv("FAKE_CLI_MODE", "hang")
    monkeypatch.setenv("FAKE_CLI_PIDFILE", str(tmp_path / "fake.pid"))
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.request("POST", "/openai/v1/chat/completions", json.dumps(
        {"model": "claude", "messages": HI, "stream": True}),
        {"Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.readline().startswith(b"data: ")      # the role chunk
    pid = read_pid(str(tmp_path / "fake.pid"))
    conn.close()
    assert wait_for(lambda: not pid_alive(pid), 10)


# -- keep-alive ----------------------------------------------------------------------------------


def test_silent_backend_gets_keepalive_comments(start_server, monkeypatch):
    monkeypatch.setenv("FAKE_CLI_MODE", "hang")
    srv = start_server(**{"server.sse_keepalive_secs": 1})
    status, seen = stream_until(srv, "/openai/v1/chat/completions", {
        "model": "codex", "messages": HI, "stream": True}, b": keep-alive\n\n")
    assert status == 200
    assert b": keep-alive\n\n" in seen, "the stream ended before a keep-alive"


def test_sdk_reads_a_slow_stream_with_keepalives(start_server, monkeypatch):
    monkeypatch.setenv("FAKE_CLI_MODE", "slow")
    monkeypatch.setenv("FAKE_CLI_DELAY", "1.2")
    srv = start_server(**{"server.sse_keepalive_secs": 1})
    chunks, _ = stream_chat(srv, model="codex")
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "echo: hi"


# -- the JS SDK ----------------------------------------------------------------------------------

JS_CLIENT = """
const OpenAI = require('openai');
const client = new OpenAI({baseURL: process.argv[2], apiKey: 'unused', maxRetries: 0});
(async () => {
  const whole = await client.chat.completions.create(
    {model: 'claude', messages: [{role: 'user', content: 'from node'}]});
  const stream = await client.chat.completions.create(
    {model: 'gemini', messages: [{role: 'user', content: 'streamed'}], stream: true});
  let text = '';
  for await (const chunk of stream) text += chunk.choices[0]?.delta?.content || '';
  let status = 0;
  try { await client.chat.completions.create({model: 'nope', messages: []}); }
  catch (e) { status = e.status; }
  console.log(JSON.stringify({whole: whole.choices[0].message.content, text, status}));
})().catch((e) => { console.error(e); process.exit(1); });
"""


def test_openai_js_sdk_under_node(server, tmp_path):
    """Needs ``npm install --prefix ~/.cache/clinvk-test/npm-sdk openai`` (done by test.sh)."""
    out = run_script(tmp_path, "client.js", JS_CLIENT, [server.url + "/openai/v1"], ["openai"],
                     timeout=60)
    assert out == {"whole": "echo: from node", "text": "echo: streamed", "status": 400}
