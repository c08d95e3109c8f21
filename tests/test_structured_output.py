"""Structured output on the compatible APIs, with the fake CLIs: what each request asks for
(structured.py), how each backend is given the schema (claude --json-schema, codex
--output-schema file, gemini the prompt), the reply checked against the schema (one corrective
turn where the schema was only in the prompt), streams, and the errors."""

from __future__ import annotations

import json
import os
import stat

import pytest

from clinvk_lib import config, execute
from clinvk_lib.backends import base, options
from clinvk_lib.server import compat, errors, structured
from tests.conftest import records
from tests.serverutil import server, sse_events, start_server  # noqa: F401 (fixtures)

CHAT = "/openai/v1/chat/completions"
MESSAGES = "/anthropic/v1/messages"
BACKENDS = ["claude", "codex", "gemini"]
PERSON = {"type": "object",
          "properties": {"name": {"type": "string"}, "age": {"type": "integer"},
                         "kind": {"enum": ["zebra", "yak"]}},
          "required": ["name", "age", "kind"], "additionalProperties": False}
# What the fakes answer for PERSON (tests/fakes/fake_model_api.py schema_example).
INSTANCE = {"name": "fake", "age": 1, "kind": "zebra"}
FAILED_STATUS = compat.backend_failed("x", "y").status


def chat_body(model="claude", prompt="hi", schema=PERSON, stream=False, **kw):
    body = {"model": model, "messages": [{"role": "user", "content": prompt}],
            "response_format": {"type": "json_schema",
                                "json_schema": {"name": "Person", "schema": schema,
                                                "strict": True}}, "stream": stream}
    body.update(kw)
    return body


def messages_body(model="claude", prompt="hi", schema=PERSON, stream=False,
                  choice=None, tools=None):
    return {"model": model, "max_tokens": 100, "stream": stream,
            "messages": [{"role": "user", "content": prompt}],
            "tools": tools if tools is not None else [
                {"name": "record_person", "description": "Record a person.",
                 "input_schema": schema}],
            "tool_choice": choice or {"type": "tool", "name": "record_person"}}


def content_of(reply):
    assert reply.status == 200, reply
    return reply.json()["choices"][0]["message"]["content"]


def error_of(reply):
    """(status, message, param) of an OpenAI error reply."""
    error = reply.json()["error"]
    return reply.status, error["message"], error["param"]


def streamed_content(reply):
    """The content deltas of a chat completion stream, in order."""
    assert reply.status == 200, reply
    return [data["choices"][0]["delta"]["content"] for _, data in sse_events(reply.body)
            if isinstance(data, dict) and data.get("choices")
            and data["choices"][0]["delta"].get("content")]


# -- each backend --------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_chat_reply_is_json_valid_against_the_schema_on_each_backend(server, backend, stream):
    reply = server.post(CHAT, chat_body(backend, stream=stream))
    text = streamed_content(reply)[0] if stream else content_of(reply)
    assert json.loads(text) == INSTANCE


def test_claude_gets_the_schema_as_its_json_schema_flag(server, record):
    content_of(server.post(CHAT, chat_body("claude")))
    argv = records(record)[0]["argv"]
    assert "--json-schema=" + json.dumps(PERSON, separators=(",", ":")) in argv
    assert records(record)[0]["stdin"] == "hi"


def test_claude_structured_output_wins_over_its_result_text(server):
    # FAKE_JSON makes the fake model call StructuredOutput with that value.
    reply = server.post(CHAT, chat_body("claude", 'FAKE_JSON: {"name": "Ann", "age": 7, '
                                                  '"kind": "yak"}'))
    assert json.loads(content_of(reply)) == {"name": "Ann", "age": 7, "kind": "yak"}


def test_codex_reads_the_schema_from_a_private_file_removed_after_the_run(server, record):
    content_of(server.post(CHAT, chat_body("codex")))
    entry = records(record)[0]
    seen = entry["output_schema_file"]
    assert json.loads(seen["text"]) == PERSON
    assert (seen["mode"], seen["dir_mode"]) == (0o600, 0o700)
    assert "--output-schema=" + seen["path"] in entry["argv"]
    assert not os.path.exists(seen["path"])
    assert entry["stdin"] == "hi"


def test_codex_schema_file_is_removed_when_the_run_fails(server, record, monkeypatch):
    monkeypatch.setenv("FAKE_CLI_MODE", "fail")
    reply = server.post(CHAT, chat_body("codex"))
    assert reply.status == FAILED_STATUS
    path = records(record)[0]["output_schema_file"]["path"]
    assert not os.path.exists(path)


def test_codex_continued_session_passes_the_schema_file_before_resume(server, record):
    first = server.post(CHAT, chat_body("codex"))
    session = first.headers["X-Clinvk-Session-Id"]
    content_of(server.post(CHAT, chat_body("codex"), headers={"X-Clinvk-Session-Id": session}))
    argv = records(record)[1]["argv"]
    schema_flag = [i for i, a in enumerate(argv) if a.startswith("--output-schema=")]
    assert schema_flag and schema_flag[0] < argv.index("resume")


def test_gemini_gets_the_schema_at_the_end_of_its_prompt(server, record):
    content_of(server.post(CHAT, chat_body("gemini")))
    stdin = records(record)[0]["stdin"]
    assert stdin == options.with_output_schema("hi", PERSON)
    assert stdin.startswith("hi\n\n" + options.SCHEMA_INSTRUCTION)
    assert json.loads(stdin.split("<json_schema>")[1].split("</json_schema>")[0]) == PERSON


def test_json_object_on_codex_goes_into_the_prompt_not_a_schema_file(server, record):
    # OpenAI's strict mode, which codex always asks for, cannot express "any object".
    reply = server.post(CHAT, {"model": "codex", "messages": [{"role": "user", "content": "hi"}],
                               "response_format": {"type": "json_object"}})
    assert isinstance(json.loads(content_of(reply)), dict)
    entry = records(record)[0]
    assert "output_schema_file" not in entry
    assert entry["stdin"] == options.with_output_schema("hi", structured.ANY_OBJECT)


def test_json_object_on_claude_is_a_permissive_object_schema(server, record):
    server.post(CHAT, {"model": "claude", "messages": [{"role": "user", "content": "hi"}],
                       "response_format": {"type": "json_object"}})
    assert '--json-schema={"type":"object"}' in records(record)[0]["argv"]


def test_json_object_reply_must_be_an_object(server, monkeypatch):
    monkeypatch.setenv("FAKE_CLI_JSON", "[1, 2]")
    reply = server.post(CHAT, {"model": "claude", "messages": [{"role": "user", "content": "hi"}],
                               "response_format": {"type": "json_object"}})
    status, message, _ = error_of(reply)
    assert status == FAILED_STATUS
    assert message.endswith("the reply does not match the schema in response_format: "
                            "$: expected object, got [1, 2]")


def test_text_format_is_plain_text(server, record):
    reply = server.post(CHAT, {"model": "claude", "messages": [{"role": "user", "content": "hi"}],
                               "response_format": {"type": "text"}})
    assert content_of(reply) == "echo: hi"
    assert not any(a.startswith("--json-schema") for a in records(record)[0]["argv"])


# -- replies that do not match -------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["claude", "codex"])
def test_reply_that_does_not_match_fails_naming_the_first_schema_error(server, backend,
                                                                       monkeypatch):
    monkeypatch.setenv("FAKE_CLI_JSON", '{"name": 42, "age": 1, "kind": "yak"}')
    status, message, _ = error_of(server.post(CHAT, chat_body(backend)))
    assert status == FAILED_STATUS
    assert message == ("the %s backend failed: the reply does not match the schema in "
                       "response_format.json_schema.schema: $.name: expected string, got 42"
                       % backend)


def test_claude_reply_without_structured_output_is_not_json(server, monkeypatch):
    # claude 2.1.197 gives up and prints the model's text when it never calls the tool.
    monkeypatch.setenv("FAKE_CLI_JSON", "I would rather chat.")
    status, message, _ = error_of(server.post(CHAT, chat_body("claude")))
    assert status == FAILED_STATUS
    assert message == 'the claude backend failed: the reply is not JSON: "I would rather chat."'


def test_failed_structured_reply_is_not_retried_by_clients(server, monkeypatch):
    monkeypatch.setenv("FAKE_CLI_JSON", "{}")
    reply = server.post(CHAT, chat_body("codex"))
    assert reply.status == FAILED_STATUS and reply.headers["X-Should-Retry"] == "false"


def test_stream_with_a_reply_that_does_not_match_ends_with_an_error_event(server,
                                                                          monkeypatch):
    monkeypatch.setenv("FAKE_CLI_JSON", '{"name": "a"}')
    reply = server.post(CHAT, chat_body("claude", stream=True))
    events = [data for _, data in sse_events(reply.body)]
    assert events[-1] == "[DONE]"
    assert events[-2]["error"]["message"].endswith('$: missing required property "age"')
    assert streamed_content(reply) == []


def test_stream_holds_the_text_back_and_sends_the_json_as_one_delta(server, monkeypatch):
    monkeypatch.setenv("FAKE_CLI_CHUNKS", "5")
    monkeypatch.setenv("FAKE_CLI_TOOL", "1")      # the agent works, then answers
    reply = server.post(CHAT, chat_body("gemini", stream=True))
    assert [json.loads(t) for t in streamed_content(reply)] == [INSTANCE]


def test_gemini_answer_after_narration_is_the_text_after_its_last_tool_call():
    events = [compat.ev.message("gemini", "Let me look."),
              compat.ev.tool_use("gemini", "t1", "read_file", {}),
              compat.ev.tool_result("gemini", "t1", "data"),
              compat.ev.message("gemini", '{"a": 1}')]
    assert compat.answer_text(events) == '{"a": 1}'


@pytest.mark.parametrize("text, value", [
    ('{"a": 1}', {"a": 1}),
    ('  \n{"a": 1}\n', {"a": 1}),
    ('Here it is:\n```json\n{"a": 1}\n```\n', {"a": 1}),
    ('I read the file.\n\n{"a": 1}', {"a": 1}),
])
def test_the_json_is_read_from_the_whole_text_a_code_block_or_the_last_paragraph(text, value):
    spec = structured.OutputSpec(structured.JSON_OBJECT, structured.ANY_OBJECT,
                                 field="response_format")
    assert structured.reply_json(spec, text) == (json.dumps(value, separators=(",", ":")), "")


@pytest.mark.parametrize("text", ["", "NaN", '{"a": Infinity}', "{'a': 1}"])
def test_text_that_is_not_json_is_not_accepted(text):
    spec = structured.OutputSpec(structured.JSON_OBJECT, structured.ANY_OBJECT,
                                 field="response_format")
    json_text, problem = structured.reply_json(spec, text)
    assert json_text == "" and problem.startswith("the reply is")


# -- gemini's corrective turn --------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_gemini_invalid_reply_gets_one_corrective_turn_in_the_same_session(server, record,
                                                                          stream):
    reply = server.post(CHAT, chat_body("gemini", "hi\nFAKE_JSON: not json", stream=stream))
    text = streamed_content(reply)[0] if stream else content_of(reply)
    assert json.loads(text) == INSTANCE
    first, second = records(record)
    session = second["argv"][second["argv"].index("--output-format=" + (
        "stream-json" if stream else "json")) + 1]
    assert session.startswith("--resume=")
    assert second["stdin"].startswith("Your previous reply cannot be used: the reply is not "
                                      'JSON: "not json". Answer again with only the JSON value.')
    assert second["stdin"].endswith("<json_schema>\n%s\n</json_schema>"
                                    % json.dumps(PERSON))
    listed = server.get("/api/v1/sessions").json()["sessions"]
    assert len(listed) == 1 and listed[0]["turn_count"] == 2


def test_gemini_reply_still_invalid_after_the_correction_fails(server, record, monkeypatch):
    monkeypatch.setenv("FAKE_CLI_JSON", '{"name": "a"}')
    status, message, _ = error_of(server.post(CHAT, chat_body("gemini")))
    assert status == FAILED_STATUS
    assert message.endswith('$: missing required property "age"')
    assert len(records(record)) == 2


def test_gemini_ephemeral_run_has_no_session_to_correct_in_and_fails_at_once(server, record):
    reply = server.post(CHAT, chat_body("gemini", "hi\nFAKE_JSON: not json"),
                        headers={"X-Clinvk-Ephemeral": "true"})
    assert reply.status == FAILED_STATUS
    assert [r["argv"][0] for r in records(record) if "--list-sessions" not in r["argv"]
            and "--delete-session" not in r["argv"]] == ["gemini"]


@pytest.mark.parametrize("backend", ["claude", "codex"])
def test_backends_that_enforce_the_schema_get_no_corrective_turn(server, record, backend,
                                                                 monkeypatch):
    monkeypatch.setenv("FAKE_CLI_JSON", "{}")
    assert server.post(CHAT, chat_body(backend)).status == FAILED_STATUS
    assert len(records(record)) == 1


# -- Anthropic: a forced tool --------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_forced_tool_reply_is_one_tool_use_block_of_that_tool(server, backend):
    reply = server.post(MESSAGES, messages_body(backend))
    assert reply.status == 200, reply
    body = reply.json()
    assert body["stop_reason"] == "tool_use"
    [block] = body["content"]
    assert block["type"] == "tool_use" and block["name"] == "record_person"
    assert block["id"].startswith("toolu_") and len(block["id"]) == len("toolu_") + 24
    assert block["input"] == INSTANCE


def test_forced_tool_stream_is_a_tool_use_block_with_one_input_json_delta(server):
    reply = server.post(MESSAGES, messages_body("claude", stream=True))
    events = sse_events(reply.body)
    assert [name for name, _ in events] == [
        "message_start", "content_block_start", "content_block_delta", "content_block_stop",
        "message_delta", "message_stop"]
    block = events[1][1]["content_block"]
    assert (block["type"], block["name"], block["input"]) == ("tool_use", "record_person", {})
    delta = events[2][1]["delta"]
    assert delta["type"] == "input_json_delta" and json.loads(delta["partial_json"]) == INSTANCE
    assert events[4][1]["delta"]["stop_reason"] == "tool_use"


def test_tool_choice_any_with_one_tool_forces_it(server):
    reply = server.post(MESSAGES, messages_body("codex", choice={"type": "any"}))
    assert reply.json()["content"][0]["input"] == INSTANCE


def test_tool_choice_auto_leaves_the_tools_to_the_agent_and_replies_with_text(server, record):
    reply = server.post(MESSAGES, messages_body("claude", choice={"type": "auto"}))
    assert reply.json()["content"] == [{"type": "text", "text": "echo: hi"}]
    assert reply.json()["stop_reason"] == "end_turn"
    assert not any(a.startswith("--json-schema") for a in records(record)[0]["argv"])


def test_forced_tool_input_that_does_not_match_is_an_anthropic_error(server, monkeypatch):
    monkeypatch.setenv("FAKE_CLI_JSON", '{"name": "a", "age": "old", "kind": "yak"}')
    reply = server.post(MESSAGES, messages_body("claude"))
    assert reply.status == FAILED_STATUS
    assert reply.json()["error"]["message"].endswith(
        'tools[0].input_schema: $.age: expected integer, got "old"')


# -- requests that cannot be answered ------------------------------------------------------------


def assert_refused(server, record, path, body, param, words):
    reply = server.post(path, body)
    assert reply.status == 400, reply
    if path == CHAT:
        _, message, got = error_of(reply)
        assert got == param
    else:
        message = reply.json()["error"]["message"]
    assert message.startswith(param + ":") and words in message, message
    assert records(record) == []


@pytest.mark.parametrize("fmt, param, words", [
    ({"type": "xml"}, "response_format.type", "expected one of text, json_object, json_schema"),
    ({"type": "json_schema"}, "response_format.json_schema", "field required"),
    ({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "int"}}},
     "response_format.json_schema.schema.type", 'unknown type "int"'),
    ({"type": "json_schema", "json_schema": {"name": "x", "schema": {
        "type": "object", "properties": {"a": {"$ref": "#/$defs/Gone"}}}}},
     "response_format.json_schema.schema.properties.a.$ref", "does not resolve"),
    ({"type": "json_schema", "json_schema": {"name": "x", "schema": "object"}},
     "response_format.json_schema.schema", "expected an object"),
])
def test_bad_response_format_is_a_400_naming_the_field(server, record, fmt, param, words):
    body = {"model": "gemini", "messages": [{"role": "user", "content": "hi"}],
            "response_format": fmt}
    assert_refused(server, record, CHAT, body, param, words)


@pytest.mark.parametrize("backend", ["claude", "codex"])
def test_schema_without_an_object_root_is_a_400_naming_the_backend(server, record, backend):
    body = chat_body(backend, schema={"type": "array", "items": {"type": "string"}})
    assert_refused(server, record, CHAT, body, "response_format.json_schema.schema",
                   "(model backend: %s)" % backend)


def test_gemini_takes_a_schema_with_any_root(server):
    text = content_of(server.post(CHAT, chat_body("gemini", schema={
        "type": "array", "items": {"type": "integer"}, "minItems": 2})))
    assert json.loads(text) == [1, 1]


def test_claude_schema_too_long_for_one_argv_word_is_a_400(server, record):
    schema = {"type": "object", "description": "x" * 100001}
    assert_refused(server, record, CHAT, chat_body("claude", schema=schema),
                   "response_format.json_schema.schema", "too long")


@pytest.mark.parametrize("choice, tools, param, words", [
    ({"type": "tool", "name": "nope"}, None, "tool_choice.name", "no tool named 'nope'"),
    ({"type": "any"}, [{"name": "a", "input_schema": PERSON},
                       {"name": "b", "input_schema": PERSON}], "tool_choice.type",
     "exactly one tool"),
    ({"type": "tool", "name": "a"}, [{"name": "a"}], "tools[0].input_schema",
     "field required"),
    ({"type": "tool", "name": "b"}, [{"name": "a", "input_schema": PERSON},
                                     {"name": "b", "input_schema": {"type": "object",
                                                                    "required": "x"}}],
     "tools[1].input_schema.required", "expected an array of property names"),
])
def test_unusable_forced_tool_is_a_400_naming_the_field(server, record, choice, tools, param,
                                                        words):
    assert_refused(server, record, MESSAGES, messages_body("claude", choice=choice,
                                                           tools=tools), param, words)


# -- the Responses API's text.format (structured.from_responses) --------------------------------


def test_responses_json_schema_format_is_read_from_text_format():
    spec = structured.from_responses({"text": {"format": {
        "type": "json_schema", "name": "Person", "schema": PERSON, "strict": True}}})
    assert (spec.kind, spec.schema, spec.name, spec.field, spec.tool) == (
        structured.JSON_SCHEMA, PERSON, "Person", "text.format.schema", "")


@pytest.mark.parametrize("body", [{}, {"text": {}}, {"text": {"format": {"type": "text"}}},
                                  {"text": {"verbosity": "low"}}])
def test_responses_without_a_json_format_is_plain_text(body):
    assert structured.from_responses(body) is None


def test_responses_json_object_format_is_any_object():
    spec = structured.from_responses({"text": {"format": {"type": "json_object"}}})
    assert (spec.kind, spec.schema, spec.field) == (structured.JSON_OBJECT, {"type": "object"},
                                                    "text.format")


@pytest.mark.parametrize("body, field", [
    ({"text": "json"}, "text"),
    ({"text": {"format": "json"}}, "text.format"),
    ({"text": {"format": {"type": "yaml"}}}, "text.format.type"),
    ({"text": {"format": {"type": "json_schema", "schema": []}}}, "text.format.schema"),
    ({"text": {"format": {"type": "json_schema", "schema": {"properties": {"a": 1}}}}},
     "text.format.schema.properties.a"),
])
def test_responses_bad_text_format_is_a_400_naming_the_field(body, field):
    with pytest.raises(errors.ApiError) as info:
        structured.from_responses(body)
    assert (info.value.status, info.value.field) == (400, field)


# -- run files -----------------------------------------------------------------------------------


def prepared_codex(**kw):
    request = execute.Request(backend="codex", prompt="hi", output_schema=PERSON, **kw)
    return execute.prepare(request, config.load(None, env={}, flags={}))


def test_run_file_is_written_only_while_the_cli_runs(clinvk_home, fake_path, record):
    prepared = prepared_codex()
    [path] = prepared.files.paths.values()
    assert not os.path.exists(path)
    directory = os.stat(os.path.dirname(path))
    assert stat.S_IMODE(directory.st_mode) == 0o700 and directory.st_uid == os.geteuid()
    assert execute.run(prepared).ok
    assert records(record)[0]["output_schema_file"]["mode"] == 0o600
    assert not os.path.exists(path)


def test_dry_run_names_the_file_and_writes_nothing(clinvk_home, fake_path):
    prepared = prepared_codex(dry_run=True)
    [path] = prepared.files.paths.values()
    assert "--output-schema=" + path in prepared.describe()["command"]
    assert not os.path.exists(path)


def test_run_file_whose_directory_is_no_longer_private_is_not_written(clinvk_home, fake_path,
                                                                      record):
    prepared = prepared_codex()
    [path] = prepared.files.paths.values()
    os.chmod(os.path.dirname(path), 0o755)
    try:
        with pytest.raises(execute.ExecError) as info:
            execute.run(prepared)
    finally:
        os.chmod(os.path.dirname(path), 0o700)
    assert info.value.kind == execute.ErrorKind.START
    assert "no longer a directory private to this user" in str(info.value)
    assert records(record) == [] and not os.path.exists(path)


def test_only_codex_writes_a_file_and_only_for_a_schema_it_enforces():
    with_schema = options.Options(output_schema=PERSON)
    assert base.get("codex").run_files(with_schema) == {"output-schema.json": json.dumps(PERSON)}
    assert base.get("codex").run_files(options.Options(output_schema={"type": "object"})) == {}
    assert base.get("codex").run_files(options.Options()) == {}
    assert base.get("claude").run_files(with_schema) == {}
    assert base.get("gemini").run_files(with_schema) == {}


def test_claude_structured_output_reaches_the_result_and_the_done_event():
    # The result line of claude 2.1.197 -p --json-schema (trimmed), after a StructuredOutput call.
    line = json.dumps({"type": "result", "subtype": "success", "is_error": False,
                       "num_turns": 2, "result": '{"name":"Ann","age":3}',
                       "stop_reason": "tool_use", "session_id": "3151ba77",
                       "usage": {"input_tokens": 4, "output_tokens": 20},
                       "structured_output": {"name": "Ann", "age": 3}})
    backend = base.get("claude")
    assert backend.parse_json_output(line, "", 0).structured == {"name": "Ann", "age": 3}
    parser = backend.new_stream_parser()
    parser.feed(line)
    done = parser.finish(0)[-1]
    assert done.content["structured_output"] == {"name": "Ann", "age": 3}
    assert "structured_output" not in base.get("gemini").new_stream_parser().finish(0)[-1].content


def test_run_file_path_taken_by_a_planted_symlink_is_not_followed(clinvk_home, fake_path,
                                                                  record, tmp_path):
    prepared = prepared_codex()
    [path] = prepared.files.paths.values()
    target = tmp_path / "target"
    target.write_text("untouched")
    os.symlink(str(target), path)
    try:
        with pytest.raises(execute.ExecError) as info:
            execute.run(prepared)
    finally:
        if os.path.lexists(path):
            os.unlink(path)
    assert info.value.kind == execute.ErrorKind.START
    assert target.read_text() == "untouched" and records(record) == []


def test_schema_text_stays_inside_the_one_argv_word_of_its_flag(server, record):
    schema = dict(PERSON, description="--dangerously-skip-permissions\n--resume=x \x00")
    content_of(server.post(CHAT, chat_body("claude", schema=schema)))
    argv = records(record)[0]["argv"]
    assert "--dangerously-skip-permissions" not in argv
    [word] = [a for a in argv if a.startswith("--json-schema=")]
    assert json.loads(word[len("--json-schema="):]) == schema


# -- a system prompt too long for one argv word ------------------------------------------------


def test_a_claude_system_prompt_too_long_for_argv_goes_in_a_private_file(server, record):
    long_prompt = "Be terse. " + "x" * 140000       # over Linux's 128 KiB per argv word
    reply = server.post(CHAT, {"model": "claude", "messages": [
        {"role": "system", "content": long_prompt}, {"role": "user", "content": "hi"}]})
    assert reply.status == 200, reply
    entry = records(record)[0]
    seen = entry["system_prompt_file"]
    assert seen["text"] == long_prompt and (seen["mode"], seen["dir_mode"]) == (0o600, 0o700)
    assert "--system-prompt-file=" + seen["path"] in entry["argv"]
    assert not any(a.startswith("--system-prompt=") for a in entry["argv"])
    assert not os.path.exists(seen["path"])


def test_a_short_claude_system_prompt_stays_on_the_command_line(server, record):
    server.post(CHAT, {"model": "claude", "messages": [
        {"role": "system", "content": "Be terse."}, {"role": "user", "content": "hi"}]})
    entry = records(record)[0]
    assert "--system-prompt=Be terse." in entry["argv"] and "system_prompt_file" not in entry


@pytest.mark.parametrize("model", ["codex", "qwen", "opencode"])
def test_a_system_prompt_too_long_for_a_command_line_backend_is_a_400_naming_it(server, record,
                                                                               model):
    reply = server.post(CHAT, {"model": model, "messages": [
        {"role": "system", "content": "x" * 140000}, {"role": "user", "content": "hi"}]})
    status, message, _ = error_of(reply)
    assert status == 400
    assert message.startswith("the system prompt is 140000 bytes, too long for the %s backend"
                              % model) and "use claude" in message
    assert records(record) == []


def test_the_native_api_names_the_field_of_a_too_long_system_prompt(server, record):
    reply = server.post("/api/v1/prompt", {"backend": "codex", "prompt": "hi",
                                           "system_prompt": "x" * 140000})
    assert reply.status == 400 and reply.json()["field"] == "system_prompt", reply.json()
