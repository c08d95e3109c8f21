"""Structured output through `clinvk serve` (the built zipapp) with the REAL CLIs behind it,
against the fake model API: claude with --json-schema (the model is offered a StructuredOutput
tool and calls it), codex with --output-schema (the Responses request carries text.format
json_schema and the model answers JSON text), gemini with the schema in the prompt (and one
corrective turn in the same gemini session), all through the chat route's
``chat.completions.parse(response_format=Model)``, and a forced Anthropic tool.
"""

from __future__ import annotations

import json
from typing import List

import pytest

from tests.e2e.conftest import KIND
from tests.fakes.fake_model_api import STRUCTURED_TOOL, default_reply

openai = pytest.importorskip("openai")
anthropic = pytest.importorskip("anthropic")
pydantic = pytest.importorskip("pydantic")
pytestmark = pytest.mark.sdk

QUESTION = [{"role": "user", "content": "Describe a pet."}]


class Pet(pydantic.BaseModel):
    name: str
    legs: int
    tags: List[str]


@pytest.fixture
def client(serve_port: int):
    return openai.OpenAI(base_url="http://127.0.0.1:%d/openai/v1" % serve_port,
                         api_key="unused", max_retries=0, timeout=240)


def parsed_pet(client, backend: str) -> Pet:
    completion = client.chat.completions.parse(model=backend, messages=QUESTION,
                                               response_format=Pet)
    pet = completion.choices[0].message.parsed
    assert isinstance(pet, Pet), completion
    return pet


def main_requests(fake_api, backend: str):
    return fake_api.main_requests(KIND[backend])


def test_real_claude_is_held_to_the_schema_by_its_structured_output_tool(client, fake_api):
    parsed_pet(client, "claude")
    request = main_requests(fake_api, "claude")[0]     # the turn's first request
    tools = {t["name"]: t for t in request["json"]["tools"]}
    schema = tools[STRUCTURED_TOOL]["input_schema"]
    assert schema["required"] == ["name", "legs", "tags"]
    assert schema["additionalProperties"] is False          # what parse() sent, unchanged


def test_real_codex_sends_the_schema_file_as_text_format(client, fake_api):
    parsed_pet(client, "codex")
    request = main_requests(fake_api, "codex")[0]     # the turn's first request
    fmt = request["json"]["text"]["format"]
    assert (fmt["type"], fmt["strict"]) == ("json_schema", True)
    assert fmt["schema"]["required"] == ["name", "legs", "tags"]
    assert "<json_schema>" not in request["user_text"]


def test_real_gemini_reads_the_schema_in_its_prompt(client, fake_api):
    parsed_pet(client, "gemini")
    request = main_requests(fake_api, "gemini")[0]     # the turn's first request
    text = request["user_text"]
    assert text.startswith("Describe a pet.\n\nReply with only a JSON value")
    schema = json.loads(text.split("<json_schema>")[1].split("</json_schema>")[0])
    assert schema["required"] == ["name", "legs", "tags"]


def test_real_gemini_gets_one_corrective_turn_in_the_same_session(client, fake_api):
    correction = "Your previous reply cannot be used: the reply is not JSON"

    def question_gets_prose(request):
        if request["user_text"].startswith("Describe a pet."):
            return "Sure! Rex is a dog with four legs."
        return default_reply(request)
    fake_api.set_reply(question_gets_prose)
    pet = parsed_pet(client, "gemini")
    assert pet.legs == 1
    corrective = [r for r in main_requests(fake_api, "gemini")
                  if r["user_text"].startswith(correction)]
    assert corrective, [r["user_text"][:80] for r in main_requests(fake_api, "gemini")]
    second = corrective[0]
    # The same gemini session: the first turn and its reply are in the second request.
    history = json.dumps(second["json"]["contents"])
    assert "Sure! Rex is a dog" in history and "Describe a pet." in history


@pytest.mark.parametrize("backend", ["claude", "gemini"])
def test_real_cli_stream_sends_the_checked_json_once(client, fake_api, backend):
    with client.chat.completions.stream(model=backend, messages=QUESTION,
                                        response_format=Pet) as stream:
        deltas = [e.delta for e in stream if e.type == "content.delta" and e.delta]
        final = stream.get_final_completion()
    assert len(deltas) == 1
    assert isinstance(final.choices[0].message.parsed, Pet)


def test_real_claude_answers_a_forced_anthropic_tool(serve_port, fake_api):
    client = anthropic.Anthropic(base_url="http://127.0.0.1:%d/anthropic" % serve_port,
                                 api_key="unused", max_retries=0, timeout=240)
    message = client.messages.create(
        model="claude", max_tokens=1024, messages=QUESTION,
        tools=[{"name": "record_pet", "input_schema": Pet.model_json_schema()}],
        tool_choice={"type": "tool", "name": "record_pet"})
    [block] = message.content
    assert (block.type, block.name, message.stop_reason) == ("tool_use", "record_pet",
                                                             "tool_use")
    assert isinstance(Pet.model_validate(block.input), Pet)
