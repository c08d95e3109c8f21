"""Structured output through the official SDKs, with the fake CLIs: the ``openai`` SDK's
``chat.completions.parse(response_format=Model)`` and ``chat.completions.stream`` give
``message.parsed``; an ``anthropic`` forced tool gives a ``tool_use`` block whose input
validates against the model it came from."""

from __future__ import annotations

from typing import List, Optional

import pytest

from clinvk_lib.server import compat
from tests.serverutil import server, start_server  # noqa: F401 (fixtures)

openai = pytest.importorskip("openai")
anthropic = pytest.importorskip("anthropic")
pydantic = pytest.importorskip("pydantic")
pytestmark = pytest.mark.sdk

BACKENDS = ["claude", "codex", "gemini"]
HI = [{"role": "user", "content": "Describe a pet."}]


class Owner(pydantic.BaseModel):
    name: str
    phone: Optional[str]


class Pet(pydantic.BaseModel):
    name: str
    legs: int = pydantic.Field(ge=0)
    species: str
    tags: List[str]
    owner: Owner


def openai_client(srv):
    return openai.OpenAI(base_url=srv.url + "/openai/v1", api_key="unused", max_retries=0)


def anthropic_client(srv):
    return anthropic.Anthropic(base_url=srv.url + "/anthropic", api_key="unused",
                               max_retries=0)


def pet_tool():
    return {"name": "record_pet", "description": "Record the pet.",
            "input_schema": Pet.model_json_schema()}


@pytest.mark.parametrize("backend", BACKENDS)
def test_openai_parse_gives_the_parsed_model_on_each_backend(server, backend):
    completion = openai_client(server).chat.completions.parse(
        model=backend, messages=HI, response_format=Pet)
    message = completion.choices[0].message
    assert isinstance(message.parsed, Pet)
    assert Pet.model_validate_json(message.content) == message.parsed
    assert message.refusal is None and completion.choices[0].finish_reason == "stop"


@pytest.mark.parametrize("backend", BACKENDS)
def test_openai_stream_helper_gives_the_parsed_model(server, backend):
    with openai_client(server).chat.completions.stream(
            model=backend, messages=HI, response_format=Pet) as stream:
        chunks = [e for e in stream if e.type == "content.delta" and e.delta]
        final = stream.get_final_completion()
    assert len(chunks) == 1          # the JSON comes whole, once it was checked
    assert isinstance(final.choices[0].message.parsed, Pet)


def test_openai_json_object_mode_gives_a_json_object(server):
    completion = openai_client(server).chat.completions.create(
        model="gemini", messages=HI, response_format={"type": "json_object"})
    assert completion.choices[0].message.content.startswith("{")


@pytest.mark.parametrize("backend", BACKENDS)
def test_responses_parse_gives_the_parsed_model_on_each_backend(server, backend):
    response = openai_client(server).responses.parse(model=backend, input="Describe a pet.",
                                                     text_format=Pet)
    assert isinstance(response.output_parsed, Pet)
    assert Pet.model_validate_json(response.output_text) == response.output_parsed
    assert response.text.format.type == "json_schema"


@pytest.mark.parametrize("backend", BACKENDS)
def test_responses_stream_helper_gives_the_parsed_model(server, backend):
    with openai_client(server).responses.stream(model=backend, input="Describe a pet.",
                                                text_format=Pet) as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert len(deltas) == 1          # the JSON comes whole, once it was checked
    assert isinstance(final.output_parsed, Pet)


def test_responses_json_object_format_gives_a_json_object(server):
    response = openai_client(server).responses.create(
        model="gemini", input="Describe a pet.", text={"format": {"type": "json_object"}})
    assert response.output_text.startswith("{")


def test_responses_reply_that_does_not_match_raises_in_the_sdk(server, monkeypatch):
    monkeypatch.setenv("FAKE_CLI_JSON", '{"name": "Rex"}')
    with pytest.raises(openai.APIStatusError) as info:
        openai_client(server).responses.parse(model="codex", input="x", text_format=Pet)
    assert info.value.status_code == compat.backend_failed("x", "y").status
    assert "legs" in info.value.message


def test_openai_reply_that_does_not_match_raises_in_the_sdk(server, monkeypatch):
    monkeypatch.setenv("FAKE_CLI_JSON", '{"name": "Rex"}')
    with pytest.raises(openai.APIStatusError) as info:
        openai_client(server).chat.completions.parse(model="codex", messages=HI,
                                                     response_format=Pet)
    assert info.value.status_code == compat.backend_failed("x", "y").status
    assert 'missing required property "legs"' in info.value.message


@pytest.mark.parametrize("backend", BACKENDS)
def test_anthropic_forced_tool_gives_a_tool_use_block_whose_input_validates(server, backend):
    message = anthropic_client(server).messages.create(
        model=backend, max_tokens=1024, messages=HI, tools=[pet_tool()],
        tool_choice={"type": "tool", "name": "record_pet"})
    assert message.stop_reason == "tool_use"
    [block] = message.content
    assert isinstance(block, anthropic.types.ToolUseBlock) and block.name == "record_pet"
    assert isinstance(Pet.model_validate(block.input), Pet)


def test_anthropic_streamed_forced_tool_accumulates_the_input(server):
    with anthropic_client(server).messages.stream(
            model="claude", max_tokens=1024, messages=HI, tools=[pet_tool()],
            tool_choice={"type": "any"}) as stream:
        final = stream.get_final_message()
    [block] = final.content
    assert block.type == "tool_use" and final.stop_reason == "tool_use"
    assert isinstance(Pet.model_validate(block.input), Pet)


def test_anthropic_forced_tool_input_that_does_not_match_raises_in_the_sdk(server,
                                                                         monkeypatch):
    monkeypatch.setenv("FAKE_CLI_JSON", '{"name": "Rex", "legs": -1, "species": "dog", '
                                        '"tags": [], "owner": {"name": "A", "phone": null}}')
    with pytest.raises(anthropic.APIStatusError) as info:
        anthropic_client(server).messages.create(
            model="gemini", max_tokens=1024, messages=HI, tools=[pet_tool()],
            tool_choice={"type": "tool", "name": "record_pet"})
    assert "$.legs: expected a number >= 0, got -1" in info.value.message
