"""Client tools on the OpenAI Responses API (the tool bridge), driven by the official ``openai``
SDK against the fake claude and codex: function_call items out (whole and streamed),
function_call_output items in, with or without previous_response_id."""

from __future__ import annotations

import json

import pytest

from tests.serverutil import server, start_server  # noqa: F401 - fixtures

openai = pytest.importorskip("openai")

TOOLS = [{"type": "function", "name": "get_weather", "description": "The weather in a city.",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}},
         {"type": "function", "name": "get_time", "parameters": {"type": "object"}},
         {"type": "web_search"}]
ASK = 'CALL-TOOL: get_weather {"city": "Paris"}'
BACKENDS = ["claude", "codex"]


def client(srv):
    return openai.OpenAI(base_url=srv.url + "/openai/v1", api_key="unused", max_retries=0)


def calls_of(response):
    return [item for item in response.output if item.type == "function_call"]


def outputs(response, *results):
    return [{"type": "function_call_output", "call_id": call.call_id, "output": result}
            for call, result in zip(calls_of(response), results)]


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_call_ends_the_response_with_a_function_call_item_and_the_output_continues_it(
        server, backend):
    c = client(server)
    first = c.responses.create(model=backend, input=ASK, tools=TOOLS)
    assert first.status == "completed"
    call, = calls_of(first)
    assert [item.type for item in first.output] == ["function_call"]
    assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "Paris"}
    assert call.call_id.startswith("call_") and call.id.startswith("fc_")
    assert [t.name for t in first.tools] == ["get_weather", "get_time"]
    second = c.responses.create(model=backend, previous_response_id=first.id, tools=TOOLS,
                                input=outputs(first, "sunny, 21 C"))
    assert second.output_text == "TOOL-RESULT-SEEN: sunny, 21 C"
    assert calls_of(second) == []


def test_without_previous_response_id_the_whole_history_is_sent_back(server):
    c = client(server)
    history = [{"role": "user", "content": ASK + "\nCALL-TOOL: get_time {}"}]
    first = c.responses.create(model="claude", input=history, tools=TOOLS)
    assert sorted(call.name for call in calls_of(first)) == ["get_time", "get_weather"]
    history += [item.model_dump(exclude_none=True) for item in first.output]
    results = ["sunny" if call.name == "get_weather" else "noon" for call in calls_of(first)]
    second = c.responses.create(model="claude", input=history + outputs(first, *results),
                                tools=TOOLS)
    assert second.output_text == "TOOL-RESULT-SEEN: " + " | ".join(results)
    # The response's input items are the outputs it was given.
    listed = c.responses.input_items.list(second.id)
    assert sorted(item.call_id for item in listed.data) == sorted(
        call.call_id for call in calls_of(first))


def test_a_streamed_round_ends_with_function_call_items_the_sdk_assembles(server):
    c = client(server)
    with c.responses.stream(model="claude", input=ASK, tools=TOOLS) as stream:
        kinds = [event.type for event in stream]
        first = stream.get_final_response()
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[2:] == ["response.output_item.added", "response.function_call_arguments.delta",
                         "response.function_call_arguments.done",
                         "response.output_item.done", "response.completed"]
    call, = calls_of(first)
    assert json.loads(call.arguments) == {"city": "Paris"}
    events = list(c.responses.create(model="claude", previous_response_id=first.id,
                                     input=outputs(first, "cloudy"), tools=TOOLS, stream=True))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == "TOOL-RESULT-SEEN: cloudy"
    assert events[-1].type == "response.completed"


def test_a_result_for_an_unknown_call_is_a_404_the_sdk_raises(server):
    with pytest.raises(openai.NotFoundError) as caught:
        client(server).responses.create(model="claude", tools=TOOLS, input=[
            {"role": "user", "content": "hi"},
            {"type": "function_call_output", "call_id": "call_unknown", "output": "x"}])
    assert caught.value.body["code"] == "tool_call_not_found"
    assert caught.value.body["param"] == "input[1].call_id"


def test_a_named_tool_choice_must_name_a_function_tool(server):
    with pytest.raises(openai.BadRequestError) as caught:
        client(server).responses.create(model="claude", input=ASK, tools=TOOLS,
                                        tool_choice={"type": "function", "name": "nope"})
    assert caught.value.body["param"] == "tool_choice"


def test_tool_choice_none_and_tools_of_other_types_run_without_the_bridge(server):
    c = client(server)
    assert c.responses.create(model="claude", input="plain", tools=TOOLS,
                              tool_choice="none").output_text == "echo: plain"
    assert c.responses.create(model="claude", input="plain",
                              tools=[{"type": "web_search"}]).output_text == "echo: plain"


def test_client_tools_cannot_run_in_the_background(server):
    with pytest.raises(openai.BadRequestError) as caught:
        client(server).responses.create(model="claude", input=ASK, tools=TOOLS,
                                        background=True)
    assert caught.value.body["param"] == "background"


def test_a_backend_that_cannot_take_tools_ignores_them_unless_a_call_is_asked_for(server):
    # Codex CLI as a client sends its own tools with every turn: the agent uses its own.
    c = client(server)
    assert c.responses.create(model="qwen", input="plain",
                              tools=TOOLS).output_text == "echo: plain"
    with pytest.raises(openai.BadRequestError) as caught:
        c.responses.create(model="gemini", input=ASK, tools=TOOLS, tool_choice="required")
    assert caught.value.body["param"] == "tools" and "gemini" in caught.value.body["message"]


def test_an_earlier_rounds_calls_are_history_of_a_new_run(server):
    c = client(server)
    reply = c.responses.create(model="claude", tools=TOOLS, tool_choice="none", input=[
        {"role": "user", "content": "weather?"},
        {"type": "function_call", "call_id": "call_x", "name": "get_weather", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_x", "output": "sunny"},
        {"role": "assistant", "content": "It is sunny."},
        {"role": "user", "content": "thanks"}])
    prompt = reply.output_text
    assert prompt.endswith("\n\nthanks") and "<conversation_history>" in prompt
    assert "<assistant>\n(called the tool get_weather with the arguments {})" in prompt
    assert "<tool>\nsunny\n</tool>" in prompt


@pytest.mark.parametrize("missing", ["call_id", "output"])
def test_a_result_without_its_call_id_or_output_is_a_400_naming_it(server, missing):
    item = {"type": "function_call_output", "call_id": "call_x", "output": "x"}
    del item[missing]
    with pytest.raises(openai.BadRequestError) as caught:
        client(server).responses.create(model="claude", tools=TOOLS, input=[
            {"role": "user", "content": "hi"}, item])
    assert caught.value.body["param"] == "input[1].%s" % missing


def test_a_function_call_output_without_its_output_is_a_400_naming_the_field(server):
    with pytest.raises(openai.BadRequestError) as caught:
        client(server).responses.create(model="claude", tools=TOOLS, input=[
            {"role": "user", "content": "hi"},
            {"type": "function_call", "call_id": "call_x", "arguments": "{}"},
            {"role": "user", "content": "again"}])
    assert caught.value.body["param"] == "input[1].name"


def test_docs_describe_the_tool_flow_of_each_dialect_with_an_example(server):
    page = server.get("/docs").body.decode()
    for marker in ("role tool messages (tool_call_id)", "function_call_output items (call_id)",
                   "tool_result blocks (tool_use_id)"):
        assert marker in page
    assert page.count("Client tools: the agent (claude, codex; gemini") == 3
