"""Claude Code as a client of the Anthropic-compatible API: its own request body (captured
from claude 2.1.197 in tests/fixtures/claude-code-client), system messages anywhere in
``messages``, and the history blocks a later turn carries, over raw HTTP and the ``anthropic``
SDK against an in-process server with the fake CLIs."""

from __future__ import annotations

import copy
import json
import math
import os

import pytest

from tests.conftest import ROOT, records
from tests.serverutil import server, start_server  # noqa: F401 (fixtures)

FIXTURE = os.path.join(ROOT, "tests", "fixtures", "claude-code-client", "request-2.1.197.json")
with open(FIXTURE, encoding="utf-8") as _f:
    CAPTURED = json.load(_f)
# Claude Code's base URL is clinvk's /anthropic; it requests /v1/messages?beta=true under it.
MESSAGES = "/anthropic" + CAPTURED["path"]
COUNT = "/anthropic/v1/messages/count_tokens?beta=true"
USER = {"role": "user", "content": "hi"}


def claude_code_body(**changes):
    """The captured body (a deep copy), with ``changes`` applied."""
    body = copy.deepcopy(CAPTURED["body"])
    body.update(changes)
    return body


def post(srv, body, path=MESSAGES, headers=None):
    return srv.post(path, body, headers=dict(CAPTURED["headers"], **(headers or {})))


def message(model="claude", **fields):
    return dict({"model": model, "max_tokens": 64}, **fields)


def sse_events(raw: bytes):
    """[(event name, data)] of an SSE body."""
    out = []
    for block in raw.decode().strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        out.append((lines["event"], json.loads(lines["data"])))
    return out


def streamed_text(events) -> str:
    return "".join(data["delta"]["text"] for name, data in events
                   if name == "content_block_delta")


def error_of(reply):
    body = reply.json()
    assert body["type"] == "error", body
    return body["error"]


def system_prompt(run) -> str:
    """The --system-prompt value a fake claude run was given ("" when none)."""
    flags = [a for a in run["argv"] if a.startswith("--system-prompt=")]
    return flags[0][len("--system-prompt="):] if flags else ""


# -- Claude Code's own request -------------------------------------------------------------------


def test_claude_code_request_gets_a_streamed_reply(server, record):
    reply = post(server, claude_code_body())
    assert reply.status == 200, reply
    assert reply.headers["Content-Type"].startswith("text/event-stream")
    events = sse_events(reply.body)
    assert [n for n, _ in events][:2] == ["message_start", "content_block_start"]
    assert [n for n, _ in events][-3:] == ["content_block_stop", "message_delta",
                                           "message_stop"]
    run = records(record)[-1]
    assert streamed_text(events) == "echo: " + run["stdin"]
    assert run["stdin"].endswith("\nsay hello")
    assert "--model=claude-opus-4-8" in run["argv"]


def test_claude_code_body_at_its_real_size_is_accepted(server):
    body = claude_code_body(stream=False)
    copies = 0
    while len(json.dumps(body)) < CAPTURED["full_body_bytes"] + 10000:
        copies += 1
        # Tool names are unique in a request (they become the agent's tools).
        body["tools"] += [dict(tool, name="%s%d" % (tool["name"], copies))
                          for tool in copy.deepcopy(CAPTURED["body"]["tools"])]
    reply = post(server, body)
    assert reply.status == 200, reply
    assert reply.json()["content"][0]["text"].endswith("say hello")


def test_claude_code_trailing_system_message_joins_the_system_prompt(server, record):
    post(server, claude_code_body(stream=False))
    top = "\n".join(block["text"] for block in CAPTURED["body"]["system"])
    trailing = CAPTURED["body"]["messages"][-1]["content"]
    assert system_prompt(records(record)[-1]) == top + "\n\n" + trailing


def test_claude_code_api_key_is_taken_from_x_api_key(start_server):
    srv = start_server(**{"server.api_keys": ["k-claude-code"]})
    refused = post(srv, claude_code_body(stream=False), headers={"x-api-key": "k-other"})
    assert refused.status == 401 and error_of(refused)["type"] == "authentication_error"
    accepted = post(srv, claude_code_body(stream=False), headers={"x-api-key": "k-claude-code"})
    assert accepted.status == 200, accepted


def test_count_tokens_takes_claude_codes_body(server):
    body = claude_code_body()
    for name in ("max_tokens", "stream"):
        del body[name]
    reply = post(server, body, path=COUNT)
    assert reply.status == 200, reply
    system = "\n".join(block["text"] for block in body["system"]) + "\n\n" + \
        body["messages"][1]["content"]
    user = "\n".join(block["text"] for block in body["messages"][0]["content"])
    assert reply.json() == {"input_tokens": math.ceil(len(system + user) / 4.0)}


# -- system messages anywhere --------------------------------------------------------------------


def test_system_message_after_the_user_message_is_accepted(server, record):
    reply = server.post("/anthropic/v1/messages", message(
        system="Top.", messages=[USER, {"role": "system", "content": "Trailing."}]))
    assert reply.status == 200, reply
    run = records(record)[-1]
    assert (system_prompt(run), run["stdin"]) == ("Top.\n\nTrailing.", "hi")


def test_system_messages_in_the_middle_join_the_system_prompt_in_order(server, record):
    reply = server.post("/anthropic/v1/messages", message(messages=[
        {"role": "user", "content": "first"},
        {"role": "system", "content": [{"type": "text", "text": "Middle one."}]},
        {"role": "assistant", "content": "answer"},
        {"role": "system", "content": "Middle two."},
        {"role": "user", "content": "second"}]))
    assert reply.status == 200, reply
    run = records(record)[-1]
    assert system_prompt(run) == "Middle one.\n\nMiddle two."
    assert run["stdin"] == ("<conversation_history>\n<user>\nfirst\n</user>\n"
                            "<assistant>\nanswer\n</assistant>\n</conversation_history>\n\n"
                            "second")


def test_system_messages_open_the_prompt_on_gemini(server, record):
    server.post("/anthropic/v1/messages", message(
        "gemini", system="Top.", messages=[USER, {"role": "system", "content": "Trailing."}]))
    assert records(record)[-1]["stdin"] == "<system>\nTop.\n\nTrailing.\n</system>\n\nhi"


def test_last_message_that_is_not_a_system_message_must_be_from_the_user(server, record):
    reply = server.post("/anthropic/v1/messages", message(messages=[
        USER, {"role": "assistant", "content": "Sure,"}, {"role": "system", "content": "x"}]))
    assert reply.status == 400
    assert error_of(reply)["message"].startswith("messages[1].role:")
    assert records(record) == []


def test_only_system_messages_is_a_bad_request(server):
    reply = server.post("/anthropic/v1/messages", message(messages=[
        {"role": "system", "content": "x"}]))
    assert reply.status == 400 and "no user message" in error_of(reply)["message"]


# -- history blocks ------------------------------------------------------------------------------


def test_tool_use_and_tool_result_history_becomes_text(server, record):
    reply = server.post("/anthropic/v1/messages", message(
        "gemini", messages=CAPTURED["messages_after_tool_use"] + [
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "toolu_2", "name": "Bash",
                 "input": {"command": "false"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_2", "is_error": True,
                 "content": [{"type": "text", "text": "exit 1"}]},
                {"type": "text", "text": "what happened?"}]}]))
    assert reply.status == 200, reply
    stdin = records(record)[-1]["stdin"]
    assert ('<assistant>\n<tool_use id="toolu_fake_1" name="Read">\n'
            '{"file_path": "/work/notes.txt"}\n</tool_use>\n</assistant>\n'
            '<user>\n<tool_result tool_use_id="toolu_fake_1">\n1\tthe notes say 42\n2\t\n'
            '</tool_result>\n</user>\n') in stdin
    assert stdin.endswith('</conversation_history>\n\n<tool_result tool_use_id="toolu_2" '
                          'is_error="true">\nexit 1\n</tool_result>\nwhat happened?')


def test_tag_attributes_cannot_be_closed_by_an_id(server, record):
    server.post("/anthropic/v1/messages", message(messages=[
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": 'x">',
                                      "content": "out"}]}]))
    assert records(record)[-1]["stdin"] == '<tool_result tool_use_id="x\\">">\nout\n</tool_result>'


def test_thinking_blocks_are_dropped_from_the_transcript(server, record):
    reply = server.post("/anthropic/v1/messages", message("gemini", messages=[
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "secret plan", "signature": "c2ln"},
            {"type": "redacted_thinking", "data": "ZW5j"},
            {"type": "text", "text": "answer", "citations": None}]},
        {"role": "user", "content": "second"}]))
    assert reply.status == 200, reply
    assert records(record)[-1]["stdin"] == (
        "<conversation_history>\n<user>\nfirst\n</user>\n<assistant>\nanswer\n</assistant>\n"
        "</conversation_history>\n\nsecond")


@pytest.mark.parametrize("kind", ["image", "document"])
def test_image_or_document_block_is_a_bad_request_naming_it(server, record, kind):
    messages = copy.deepcopy(CAPTURED["messages_after_tool_use"])
    messages[2]["content"].append({"type": kind, "source": {
        "type": "base64", "media_type": "image/png", "data": "AA=="}})
    reply = post(server, claude_code_body(messages=messages))
    assert reply.status == 400
    assert error_of(reply) == {"type": "invalid_request_error", "message": (
        "messages[2].content[1].type: %s blocks are not supported: the backend CLIs take text "
        "only; send the %s's content as a text block" % (kind, kind))}
    assert records(record) == []


def test_image_inside_a_tool_result_is_a_bad_request_naming_it(server):
    reply = server.post("/anthropic/v1/messages", message(messages=[
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": [
            {"type": "text", "text": "screenshot:"}, {"type": "image", "source": {}}]}]}]))
    assert reply.status == 400
    assert error_of(reply)["message"].startswith("messages[0].content[0].content[1].type:")


def test_unknown_block_type_is_a_bad_request_listing_the_known_ones(server):
    reply = server.post("/anthropic/v1/messages", message(messages=[
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "audio"}]}]))
    assert reply.status == 400
    assert error_of(reply)["message"] == (
        "messages[0].content[1].type: expected one of text, tool_use, tool_result, thinking, "
        "redacted_thinking, got 'audio'")


@pytest.mark.parametrize("block, missing", [
    ({"type": "text"}, "text"),
    ({"type": "tool_use", "id": "t", "input": {}}, "name"),
    ({"type": "tool_result", "content": "x"}, "tool_use_id")])
def test_block_missing_what_its_type_needs_is_a_bad_request_naming_it(server, block, missing):
    reply = server.post("/anthropic/v1/messages", message(messages=[
        {"role": "user", "content": [{"type": "text", "text": "a"}, block]}]))
    assert reply.status == 400
    assert error_of(reply)["message"] == "messages[0].content[1].%s: field required (a %s " \
        "block has %s)" % (missing, block["type"], missing)


# -- the official SDK ----------------------------------------------------------------------------


@pytest.fixture
def sdk():
    return pytest.importorskip("anthropic")


@pytest.mark.sdk
def test_sdk_stream_with_claude_codes_fields_and_a_trailing_system_message(server, record, sdk):
    client = sdk.Anthropic(base_url=server.url + "/anthropic", api_key="unused", max_retries=0)
    with client.beta.messages.stream(
            model="claude-opus-4-8", max_tokens=64000, betas=["claude-code-20250219"],
            system=[{"type": "text", "text": "Top.", "cache_control": {"type": "ephemeral"}}],
            messages=[{"role": "user", "content": [{"type": "text", "text": "hi",
                                                    "cache_control": {"type": "ephemeral"}}]},
                      {"role": "system", "content": "Trailing."}],
            thinking={"type": "adaptive"}, tools=CAPTURED["body"]["tools"][:2],
            metadata={"user_id": "u-1"},
            extra_body={"context_management": CAPTURED["body"]["context_management"],
                        "output_config": {"effort": "high"}}) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "echo: hi" and final.stop_reason == "end_turn"
    assert system_prompt(records(record)[-1]) == "Top.\n\nTrailing."


@pytest.mark.sdk
def test_sdk_count_tokens_with_a_system_message(server, sdk):
    client = sdk.Anthropic(base_url=server.url + "/anthropic", api_key="unused", max_retries=0)
    counted = client.messages.count_tokens(
        model="claude", system="12345678",
        messages=[{"role": "user", "content": "abc"}, {"role": "system", "content": "xyz"}])
    assert counted.input_tokens == math.ceil(len("12345678\n\nxyz" + "abc") / 4.0)
