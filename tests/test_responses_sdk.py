"""The Responses API (/openai/v1/responses) driven by the official ``openai`` Python SDK (and
once by the JS SDK under node) against an in-process server with the fake CLIs."""

from __future__ import annotations

import time

import pytest

from tests.conftest import records
from tests.serverutil import (  # noqa: F401 (fixtures)
    pid_alive, read_pid, server, start_server, wait_for)
from tests.nodeutil import run_script

openai = pytest.importorskip("openai")
pytestmark = pytest.mark.sdk

BACKENDS = ["claude", "codex", "gemini"]
ALICE, BOB = "sk-alice-4f1d2c", "sk-bob-9a8e7d"


def client(srv, api_key="unused", **kw):
    kw.setdefault("max_retries", 0)
    return openai.OpenAI(base_url=srv.url + "/openai/v1", api_key=api_key, **kw)


def finished(c, response_id, seconds=30.0):
    """The response once polling shows it is no longer queued or in progress."""
    deadline = time.monotonic() + seconds
    while True:
        response = c.responses.retrieve(response_id)
        if response.status not in ("queued", "in_progress") or time.monotonic() > deadline:
            return response
        time.sleep(0.05)


# -- create --------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_create_with_a_string_on_each_backend(server, backend):
    raw = client(server).responses.with_raw_response.create(model=backend, input="hello")
    response = raw.parse()
    assert response.output_text == "echo: hello"
    assert response.status == "completed" and response.id.startswith("resp_")
    assert response.usage.total_tokens == \
        response.usage.input_tokens + response.usage.output_tokens
    assert response.usage.input_tokens_details.cached_tokens >= 0
    assert response.usage.output_tokens_details.reasoning_tokens == 0
    assert raw.headers["x-clinvk-session-id"]


def test_create_with_list_input_and_instructions(server, record):
    response = client(server).responses.create(
        model="claude", instructions="Be brief.",
        input=[{"role": "user", "content": "first"},
               {"role": "assistant", "content": "answer"},
               {"role": "user", "content": [{"type": "input_text", "text": "second"}]}])
    run = records(record)[-1]
    assert "--system-prompt=Be brief." in run["argv"]
    assert run["stdin"].endswith("</conversation_history>\n\nsecond")
    assert response.output_text == "echo: " + run["stdin"]
    assert response.instructions == "Be brief."


def test_every_parameter_a_client_sends_is_accepted(server):
    response = client(server).responses.create(
        model="claude", input="hi", temperature=0.2, top_p=0.9, max_output_tokens=100,
        reasoning={"effort": "low"}, tool_choice="auto", parallel_tool_calls=False,
        tools=[{"type": "function", "name": "f", "parameters": {}, "strict": False}],
        truncation="auto", include=["reasoning.encrypted_content"], prompt_cache_key="k",
        safety_identifier="u-1", user="u-1", service_tier="auto", metadata={"a": "b"},
        extra_body={"some_future_field": {"x": 1}})
    assert response.output_text == "echo: hi" and response.metadata == {"a": "b"}


def test_previous_response_id_carries_a_fact_to_the_next_turn(server, record, monkeypatch):
    monkeypatch.setenv("FAKE_CLI_RECALL", "1")
    c = client(server)
    first = c.responses.create(model="gemini", input="my name is Ada")
    second = c.responses.create(model="gemini", input="what is my name?",
                                previous_response_id=first.id)
    assert records(record)[-1]["stdin"] == "what is my name?"
    assert "my name is Ada" in second.output_text
    assert second.previous_response_id == first.id


# -- the store -----------------------------------------------------------------------------------


def test_stored_response_is_retrieved_and_deleted(server):
    c = client(server)
    made = c.responses.create(model="codex", input="keep me")
    got = c.responses.retrieve(made.id)
    assert got.output_text == "echo: keep me" and got.id == made.id
    c.responses.delete(made.id)
    with pytest.raises(openai.NotFoundError):
        c.responses.retrieve(made.id)


def test_a_response_not_stored_cannot_be_retrieved(server):
    c = client(server)
    made = c.responses.create(model="claude", input="forget me", store=False)
    assert made.store is False
    with pytest.raises(openai.NotFoundError):
        c.responses.retrieve(made.id)


def test_input_items_are_listed_and_paged(server):
    c = client(server)
    made = c.responses.create(model="claude", input=[
        {"role": "user", "content": text} for text in ("one", "two", "three")])
    page = c.responses.input_items.list(made.id, limit=2, order="asc")
    assert [item.content[0].text for item in page.data] == ["one", "two"]
    assert page.has_more is True
    every = [item.content[0].text for item in c.responses.input_items.list(made.id, limit=1)]
    assert every == ["three", "two", "one"]          # auto-paging, newest first


# -- background ----------------------------------------------------------------------------------


def test_background_response_is_polled_until_completed(server, monkeypatch):
    monkeypatch.setenv("FAKE_CLI_MODE", "slow")
    monkeypatch.setenv("FAKE_CLI_DELAY", "0.3")
    c = client(server)
    made = c.responses.create(model="claude", input="later", background=True)
    assert made.status in ("queued", "in_progress") and made.background is True
    done = finished(c, made.id)
    assert done.status == "completed" and done.output_text == "echo: later"


def test_background_response_is_cancelled(server, monkeypatch, tmp_path):
    monkeypatch.setenv("FAKE_CLI_MODE", "hang")
    monkeypatch.setenv("FAKE_CLI_PIDFILE", str(tmp_path / "fake.pid"))
    c = client(server)
    made = c.responses.create(model="codex", input="forever", background=True)
    pid = read_pid(str(tmp_path / "fake.pid"))
    assert c.responses.cancel(made.id).status == "cancelled"
    assert wait_for(lambda: not pid_alive(pid), 10)
    assert finished(c, made.id).status == "cancelled"
    with pytest.raises(openai.BadRequestError):
        c.responses.cancel(made.id)


def test_background_without_store_is_a_bad_request(server):
    with pytest.raises(openai.BadRequestError) as info:
        client(server).responses.create(model="claude", input="x", background=True,
                                        store=False)
    assert info.value.param == "background"


# -- streaming -----------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_stream_helper_gives_text_deltas_and_the_final_response(server, backend):
    with client(server).responses.stream(model=backend, input="stream me") as stream:
        deltas = [event.delta for event in stream if event.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == "echo: stream me"
    if backend != "codex":        # codex prints its message whole
        assert len(deltas) > 1
    assert final.output_text == "echo: stream me" and final.status == "completed"
    assert final.usage.output_tokens > 0


def test_streamed_events_parse_as_the_sdk_event_types(server):
    events = list(client(server).responses.create(model="claude", input="hi", stream=True))
    types = [type(e).__name__ for e in events]
    assert types[:4] == ["ResponseCreatedEvent", "ResponseInProgressEvent",
                         "ResponseOutputItemAddedEvent", "ResponseContentPartAddedEvent"]
    assert types[-4:] == ["ResponseTextDoneEvent", "ResponseContentPartDoneEvent",
                          "ResponseOutputItemDoneEvent", "ResponseCompletedEvent"]
    assert [e.sequence_number for e in events] == list(range(len(events)))


def test_a_run_failing_mid_stream_ends_with_response_failed(server, monkeypatch):
    monkeypatch.setenv("FAKE_CLI_MODE", "crash_midstream")
    events = list(client(server).responses.create(model="claude", input="hi", stream=True))
    assert events[-1].type == "response.failed"
    assert events[-1].response.status == "failed"
    assert "the claude backend failed" in events[-1].response.error.message


# -- errors --------------------------------------------------------------------------------------


def test_an_image_part_is_a_bad_request_naming_it(server):
    with pytest.raises(openai.BadRequestError) as info:
        client(server).responses.create(model="claude", input=[
            {"role": "user", "content": [{"type": "input_text", "text": "look"},
                                         {"type": "input_image", "image_url": "https://x/y.png",
                                          "detail": "auto"}]}])
    assert info.value.param == "input[0].content[1].type"
    assert "'input_image'" in info.value.message


def test_unknown_model_is_not_found(server):
    with pytest.raises(openai.NotFoundError) as info:
        client(server).responses.create(model="llama-3", input="hi")
    assert info.value.code == "model_not_found" and info.value.param == "model"


def test_unknown_previous_response_id_is_not_found(server):
    with pytest.raises(openai.NotFoundError) as info:
        client(server).responses.create(model="claude", input="hi",
                                        previous_response_id="resp_" + "0" * 24)
    assert info.value.param == "previous_response_id"


def test_another_api_key_cannot_retrieve_delete_or_cancel(start_server, monkeypatch):
    monkeypatch.setenv("FAKE_CLI_MODE", "slow")
    srv = start_server(**{"server.api_keys": [ALICE, BOB]})
    alice, bob = client(srv, ALICE), client(srv, BOB)
    made = alice.responses.create(model="claude", input="mine", background=True)
    for attempt in (bob.responses.retrieve, bob.responses.delete, bob.responses.cancel,
                    bob.responses.input_items.list):
        with pytest.raises(openai.NotFoundError):
            attempt(made.id)
    assert finished(alice, made.id).output_text == "echo: mine"


# -- the JS SDK ----------------------------------------------------------------------------------

JS_CLIENT = """
const OpenAI = require('openai');
const client = new OpenAI({baseURL: process.argv[2], apiKey: 'unused', maxRetries: 0});
(async () => {
  const first = await client.responses.create({model: 'claude', input: 'from node'});
  const stream = client.responses.stream({model: 'gemini', input: 'streamed'});
  let text = '';
  stream.on('response.output_text.delta', (e) => { text += e.delta; });
  const final = await stream.finalResponse();
  const again = await client.responses.retrieve(first.id);
  console.log(JSON.stringify({whole: first.output_text, text,
                              final: final.output[0].content[0].text,
                              again: again.output_text}));
})().catch((e) => { console.error(e); process.exit(1); });
"""


def test_openai_js_sdk_under_node(server, tmp_path):
    """Needs ``npm install --prefix ~/.cache/clinvk-test/npm-sdk openai`` (done by test.sh)."""
    out = run_script(tmp_path, "client.js", JS_CLIENT, [server.url + "/openai/v1"], ["openai"],
                     timeout=60)
    assert out == {"whole": "echo: from node", "text": "echo: streamed",
                   "final": "echo: streamed", "again": "echo: from node"}
