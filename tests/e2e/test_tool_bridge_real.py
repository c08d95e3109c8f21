"""Client tools through the real claude, codex and gemini (the built zipapp serving, the fake
model API behind the CLI; gemini in a server whose runs load the workdir's configuration): the
official openai SDK's function calling on Chat Completions and the Responses API and the
anthropic SDK's tool use, whole and streamed, two calls in one turn, two rounds, an unknown id,
a parked run that times out; and third-party clients: the OpenAI Agents SDK's function_tool,
instructor's TOOLS mode, LangChain's ChatAnthropic.with_structured_output."""

from __future__ import annotations

import json
import time
from typing import Any, Dict, List

import pytest

from tests.e2e.conftest import serving
from tests.fakes.fake_model_api import offered_tool_names

openai = pytest.importorskip("openai")

TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}},
    {"type": "function", "function": {"name": "get_time", "description": "The time.",
                                      "parameters": {"type": "object", "properties": {}}}}]
ASK = 'CALL-TOOL: get_weather {"city": "Paris"}'


def client(port: int) -> Any:
    return openai.OpenAI(base_url="http://127.0.0.1:%d/openai/v1" % port, api_key="unused",
                         max_retries=0, timeout=240)


def answered(messages: List[Dict[str, Any]], message: Any, *results: str) -> List[Dict[str, Any]]:
    return messages + [message.model_dump(exclude_none=True)] + [
        {"role": "tool", "tool_call_id": call.id, "content": result}
        for call, result in zip(message.tool_calls, results)]


def test_openai_sdk_function_call_round_trip_on_the_real_claude(serve_port, fake_api):
    c = client(serve_port)
    messages = [{"role": "user", "content": ASK}]
    first = c.chat.completions.create(model="claude", messages=messages, tools=TOOLS)
    assert first.choices[0].finish_reason == "tool_calls"
    call, = first.choices[0].message.tool_calls
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {
        "city": "Paris"}
    # The model saw the client's tool as claude names an MCP tool, and no built-in tool.
    offered = [t["name"] for t in fake_api.main_requests("anthropic")[0]["json"]["tools"]]
    assert offered == ["mcp__clinvk__get_time", "mcp__clinvk__get_weather"]
    second = c.chat.completions.create(
        model="claude", messages=answered(messages, first.choices[0].message, "sunny, 21 C"),
        tools=TOOLS)
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.content == "TOOL-RESULT-SEEN: sunny, 21 C"


def test_openai_sdk_streamed_rounds_on_the_real_claude(serve_port, fake_api):
    c = client(serve_port)
    messages = [{"role": "user", "content": ASK}]
    with c.chat.completions.stream(model="claude", messages=messages, tools=TOOLS) as stream:
        first = stream.get_final_completion()
    assert first.choices[0].finish_reason == "tool_calls"
    message = first.choices[0].message
    chunks = c.chat.completions.create(
        model="claude", messages=answered(messages, message, "cloudy"), tools=TOOLS,
        stream=True)
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == "TOOL-RESULT-SEEN: cloudy"


@pytest.mark.parametrize("backend", ["claude", "codex", "gemini"])
def test_two_calls_in_one_turn_and_a_second_round(backend, project_config_port, fake_api):
    c = client(project_config_port)
    messages = [{"role": "user", "content": ASK + "\nCALL-TOOL: get_time {}"}]
    first = c.chat.completions.create(model=backend, messages=messages, tools=TOOLS)
    calls = first.choices[0].message.tool_calls
    assert sorted(call.function.name for call in calls) == ["get_time", "get_weather"]
    results = ['CALL-TOOL: get_time {"again": 1}' if call.function.name == "get_weather"
               else "noon" for call in calls]
    messages = answered(messages, first.choices[0].message, *results)
    second = c.chat.completions.create(model=backend, messages=messages, tools=TOOLS)
    call, = second.choices[0].message.tool_calls
    assert call.function.name == "get_time"
    third = c.chat.completions.create(
        model=backend, messages=answered(messages, second.choices[0].message, "late noon"),
        tools=TOOLS)
    assert third.choices[0].message.content == "TOOL-RESULT-SEEN: late noon"


def test_gemini_in_an_untrusted_folder_is_refused_naming_why(serve_port):
    with pytest.raises(openai.BadRequestError) as caught:
        client(serve_port).chat.completions.create(
            model="gemini", messages=[{"role": "user", "content": ASK}], tools=TOOLS)
    assert "untrusted" in caught.value.body["message"]


def test_an_unknown_call_id_is_a_404_the_sdk_raises(serve_port):
    c = client(serve_port)
    with pytest.raises(openai.NotFoundError) as caught:
        c.chat.completions.create(model="claude", tools=TOOLS, messages=[
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": None, "tool_calls": [{
                "id": "call_unknown", "type": "function",
                "function": {"name": "get_time", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "call_unknown", "content": "x"}])
    assert caught.value.body["code"] == "tool_call_not_found"


@pytest.fixture
def short_timeout_port(built_pyz, clinvk_env, tmp_path, workdir):
    env = dict(clinvk_env, CLINVK_SERVER_TOOL_RESULT_TIMEOUT_SECS="2")
    for port in serving(built_pyz, env, str(tmp_path / "serve.log"), workdir):
        yield port


@pytest.fixture
def project_config_port(built_pyz, clinvk_env, tmp_path, workdir):
    """A server whose runs load the workdir's configuration (gemini runs trusted)."""
    env = dict(clinvk_env, CLINVK_SERVER_ALLOW_PROJECT_CONFIG="true")
    for port in serving(built_pyz, env, str(tmp_path / "serve.log"), workdir):
        yield port


def test_a_parked_run_times_out_and_its_id_is_then_unknown(short_timeout_port, fake_api):
    c = client(short_timeout_port)
    messages = [{"role": "user", "content": ASK}]
    first = c.chat.completions.create(model="claude", messages=messages, tools=TOOLS)
    time.sleep(4)       # past server.tool_result_timeout_secs: the run was killed
    with pytest.raises(openai.NotFoundError):
        c.chat.completions.create(model="claude", tools=TOOLS,
                                  messages=answered(messages, first.choices[0].message, "x"))


@pytest.mark.parametrize("backend", ["claude", "codex", "gemini"])
def test_anthropic_sdk_tool_use_round_trip(backend, project_config_port, fake_api):
    anthropic = pytest.importorskip("anthropic")
    c = anthropic.Anthropic(base_url="http://127.0.0.1:%d/anthropic" % project_config_port,
                            api_key="unused", max_retries=0, timeout=240)
    tools = [{"name": t["function"]["name"], "description": t["function"]["description"],
              "input_schema": t["function"]["parameters"]} for t in TOOLS]
    messages = [{"role": "user", "content": ASK}]
    first = c.messages.create(model=backend, max_tokens=100, messages=messages, tools=tools)
    assert first.stop_reason == "tool_use"
    use, = [b for b in first.content if b.type == "tool_use"]
    assert use.name == "get_weather" and use.input == {"city": "Paris"}
    messages += [{"role": "assistant", "content": [b.model_dump() for b in first.content]},
                 {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id,
                                               "content": "windy"}]}]
    with c.messages.stream(model=backend, max_tokens=100, messages=messages,
                           tools=tools) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "end_turn"
    assert final.content[0].text == "TOOL-RESULT-SEEN: windy"


# codex and gemini: the same round trips (claude's are above); gemini only where its runs load
# the workdir's configuration: gemini 0.61.0 starts no MCP server in an untrusted folder.
OTHER_BACKENDS = ["codex", "gemini"]


# How the model sees the client's get_weather: codex 0.169.0 defers MCP tools behind its
# tool_search tool (the fake searches first, then the namespace mcp__clinvk holds the tool).
BRIDGED_NAMES = {"codex": "mcp__clinvk/get_weather", "gemini": "mcp_clinvk_get_weather"}


def offered_names(fake_api: Any, backend: str) -> List[str]:
    kind = {"codex": "openai", "gemini": "gemini"}[backend]
    return [n for r in fake_api.main_requests(kind) for n in offered_tool_names(r["json"])]


@pytest.mark.parametrize("backend", OTHER_BACKENDS)
def test_openai_sdk_round_trip_on_codex_and_gemini(backend, project_config_port, fake_api):
    c = client(project_config_port)
    messages = [{"role": "user", "content": ASK}]
    first = c.chat.completions.create(model=backend, messages=messages, tools=TOOLS)
    assert first.choices[0].finish_reason == "tool_calls", first.choices[0].message.content
    call, = first.choices[0].message.tool_calls
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {
        "city": "Paris"}
    assert BRIDGED_NAMES[backend] in offered_names(fake_api, backend)
    second = c.chat.completions.create(
        model=backend, messages=answered(messages, first.choices[0].message, "sunny, 21 C"),
        tools=TOOLS)
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.content == "TOOL-RESULT-SEEN: sunny, 21 C"



RESPONSES_TOOLS = [dict(t["function"], type="function") for t in TOOLS]


@pytest.mark.parametrize("backend", ["claude", "codex", "gemini"])
def test_responses_function_call_rounds_whole_and_streamed(backend, project_config_port,
                                                           fake_api):
    c = client(project_config_port)
    first = c.responses.create(model=backend, input=ASK, tools=RESPONSES_TOOLS)
    call, = [item for item in first.output if item.type == "function_call"]
    assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "Paris"}
    with c.responses.stream(model=backend, previous_response_id=first.id, tools=RESPONSES_TOOLS,
                            input=[{"type": "function_call_output", "call_id": call.call_id,
                                    "output": "misty"}]) as stream:
        second = stream.get_final_response()
    assert second.output_text == "TOOL-RESULT-SEEN: misty"


# -- third-party clients (everything on 127.0.0.1; the Agents SDK's tracing off) ---------------


@pytest.mark.parametrize("backend", ["claude", "codex", "gemini"])
def test_openai_agents_sdk_function_tool_on_the_real_cli(backend, project_config_port, fake_api):
    from tests.test_tool_bridge_clients import run_weather_agent
    seen, result = run_weather_agent("http://127.0.0.1:%d/openai/v1" % project_config_port,
                                     backend)
    assert seen == ["Paris"]
    assert result.final_output == "TOOL-RESULT-SEEN: sunny in Paris"


def test_instructor_and_langchain_structured_output_on_the_real_claude(serve_port, fake_api):
    from tests.test_tool_bridge_clients import Person, instructor_person, langchain_person
    url = "http://127.0.0.1:%d" % serve_port
    assert isinstance(instructor_person(url, "claude"), Person)
    assert isinstance(langchain_person(url, "claude"), Person)
