"""Validation and JSON Schema generation from the shape tables (``schema.py``, ``shapes.py``,
``server/api_shapes.py``)."""

from __future__ import annotations

import pytest

from clinvk_lib import schema, shapes
from clinvk_lib.backends import base
from clinvk_lib.schema import Obj, ValidationError, to_json_schema, validate, validate_query
from clinvk_lib.server import api_shapes as api


def error_of(schema, data) -> str:
    with pytest.raises(ValidationError) as info:
        validate(schema, data)
    return str(info.value)


def prompt(**fields):
    return dict({"backend": "claude", "prompt": "hello"}, **fields)


# --- error classes and field paths -----------------------------------------------------------


def test_missing_required_field_is_named():
    assert error_of(shapes.PromptRequest, {"backend": "claude"}) == "prompt: field required"


def test_unknown_enum_value_names_the_nested_array_path_and_the_choices():
    body = {"tasks": [prompt(), prompt(backend="foo")]}
    assert error_of(shapes.ParallelRequest, body) == \
        ("tasks[1].backend: expected one of claude, codex, gemini, qwen, copilot, opencode, "
         "got 'foo'")


def test_integer_below_minimum_names_the_bound_and_the_value():
    body = {"tasks": [prompt()], "max_parallel": 0}
    assert error_of(shapes.ParallelRequest, body) == "max_parallel: expected an integer >= 1, got 0"


def test_wrong_item_type_in_an_array_names_the_index():
    assert error_of(shapes.PromptRequest, prompt(extra=["--a", "b", 3])) == \
        "extra[2]: expected a string, got 3"


def test_error_carries_path_and_message_separately():
    with pytest.raises(ValidationError) as info:
        validate(shapes.ParallelRequest, {"tasks": [prompt(max_turns="x")]})
    assert (info.value.path, info.value.message) == \
        ("tasks[0].max_turns", "expected an integer >= 0, got 'x'")


def test_boolean_is_not_accepted_as_an_integer():
    assert error_of(shapes.PromptRequest, prompt(max_turns=True)) == \
        "max_turns: expected an integer >= 0, got true"


def test_integer_is_not_accepted_as_a_boolean():
    assert error_of(shapes.PromptRequest, prompt(dry_run=1)) == "dry_run: expected true or false, got 1"


def test_integral_float_is_accepted_as_an_integer():
    cleaned = validate(shapes.PromptRequest, prompt(max_turns=3.0))
    assert cleaned["max_turns"] == 3 and isinstance(cleaned["max_turns"], int)


def test_fractional_float_is_rejected_as_an_integer():
    assert error_of(shapes.PromptRequest, prompt(max_turns=2.5)) == \
        "max_turns: expected an integer >= 0, got 2.5"


def test_number_rejects_non_finite_values():
    body = {"model": "claude", "messages": [{"role": "user", "content": "hi"}],
            "temperature": float("nan")}
    assert error_of(api.ChatCompletionRequest, body) == "temperature: expected a number, got nan"


def test_body_that_is_not_an_object_is_rejected_as_a_whole():
    with pytest.raises(ValidationError) as info:
        validate(shapes.PromptRequest, ["claude"])
    assert info.value.path == ""
    assert str(info.value) == "request body: expected an object, got an array"


def test_empty_prompt_is_rejected():
    assert error_of(shapes.PromptRequest, prompt(prompt="")) == \
        "prompt: expected a non-empty string, got ''"


def test_empty_tasks_array_is_rejected():
    assert error_of(shapes.ParallelRequest, {"tasks": []}) == \
        "tasks: expected a non-empty array, got an empty array"


def test_map_values_are_checked_with_the_key_in_the_path():
    assert error_of(shapes.PromptRequest, prompt(metadata={"project": 7})) == \
        "metadata.project: expected a string, got 7"


def test_map_key_that_is_not_an_identifier_is_quoted_in_the_path():
    assert error_of(shapes.PromptRequest, prompt(metadata={"a b": None})) == \
        'metadata["a b"]: expected a string, got null'


def test_null_for_a_required_field_is_a_type_error():
    assert error_of(shapes.PromptRequest, prompt(prompt=None)) == \
        "prompt: expected a non-empty string, got null"


def test_long_string_values_are_cut_in_error_messages():
    message = error_of(shapes.PromptRequest, prompt(backend="x" * 500))
    assert "'" + "x" * 37 + "...'" in message and "x" * 41 not in message


# --- cleaning: unknown fields, defaults, nulls ----------------------------------------------


def test_unknown_fields_are_dropped_not_fatal():
    cleaned = validate(shapes.PromptRequest, prompt(colour="blue", tools=[{"x": 1}]))
    assert "colour" not in cleaned and "tools" not in cleaned


def test_defaults_are_filled_in():
    cleaned = validate(shapes.PromptRequest, prompt())
    assert cleaned == {
        "backend": "claude", "prompt": "hello", "model": "", "workdir": "", "ephemeral": False,
        "approval_mode": "default", "sandbox_mode": "default", "output_format": "default",
        "max_tokens": 0, "max_turns": 0, "system_prompt": "", "verbose": False,
        "dry_run": False, "extra": [], "metadata": {}, "session_id": "",
    }


def test_default_containers_are_fresh_copies():
    first = validate(shapes.PromptRequest, prompt())
    first["extra"].append("--x")
    first["metadata"]["k"] = "v"
    second = validate(shapes.PromptRequest, prompt())
    assert second["extra"] == [] and second["metadata"] == {}


def test_optional_field_without_default_is_absent_when_not_sent():
    cleaned = validate(shapes.ParallelRequest, {"tasks": [prompt()]})
    assert "max_parallel" not in cleaned


def test_null_for_an_optional_field_counts_as_absent():
    cleaned = validate(shapes.PromptRequest, prompt(model=None, extra=None))
    assert cleaned["model"] == "" and cleaned["extra"] == []


def test_parallel_task_gets_prompt_defaults():
    cleaned = validate(shapes.ParallelRequest, {"tasks": [prompt()]})
    assert cleaned["tasks"][0]["approval_mode"] == "default"
    assert cleaned["fail_fast"] is False and cleaned["dry_run"] is False


# --- chain rules ------------------------------------------------------------------------------


@pytest.mark.parametrize("flag", ["pass_session_id", "persist_sessions"])
def test_chain_rejects_session_passing(flag):
    body = {"steps": [prompt()], flag: True}
    assert error_of(shapes.ChainRequest, body).startswith(
        flag + ": not supported: chains are always ephemeral")


def test_chain_accepts_session_flags_set_to_false():
    cleaned = validate(shapes.ChainRequest, {"steps": [prompt()], "pass_session_id": False})
    assert cleaned["pass_session_id"] is False


def test_chain_rejects_session_placeholder_naming_the_step():
    body = {"steps": [prompt(), prompt(prompt="continue {{session}}")]}
    assert error_of(shapes.ChainRequest, body).startswith(
        "steps[1].prompt: the {{session}} placeholder is not supported")


def test_chain_accepts_previous_placeholder_and_defaults_stop_on_failure_to_false():
    cleaned = validate(shapes.ChainRequest, {"steps": [prompt(), prompt(prompt="fix: {{previous}}")]})
    assert cleaned["steps"][1]["prompt"] == "fix: {{previous}}"
    assert cleaned["stop_on_failure"] is False


def test_compare_backends_are_checked_one_by_one():
    assert error_of(shapes.CompareRequest, {"prompt": "p", "backends": ["claude", "gpt"]}) == \
        ("backends[1]: expected one of claude, codex, gemini, qwen, copilot, opencode, "
         "got 'gpt'")


# --- OpenAI requests --------------------------------------------------------------------------


def chat(*messages, **fields):
    return dict({"model": "claude", "messages": list(messages)}, **fields)


def test_openai_content_may_be_a_string_text_parts_or_null():
    cleaned = validate(api.ChatCompletionRequest, chat(
        {"role": "user", "content": "a"},
        {"role": "user", "content": [{"type": "text", "text": "b"}]},
        {"role": "assistant", "content": None, "tool_calls": []}))
    assert [m["content"] for m in cleaned["messages"]] == ["a", [{"type": "text", "text": "b"}],
                                                           None]


def test_openai_non_text_part_is_rejected_naming_its_index():
    body = chat({"role": "user", "content": [{"type": "text", "text": "see"},
                                             {"type": "image_url", "image_url": {}}]})
    assert error_of(api.ChatCompletionRequest, body) == \
        "messages[0].content[1].type: only text content parts are supported, got 'image_url'"


def test_openai_content_of_another_kind_names_both_accepted_kinds():
    assert error_of(api.ChatCompletionRequest, chat({"role": "user", "content": 5})) == \
        "messages[0].content: expected a string or an array, got 5"


@pytest.mark.parametrize("role", ["system", "developer", "user", "assistant", "tool", "function"])
def test_openai_accepts_every_chat_role(role):
    validate(api.ChatCompletionRequest, chat({"role": role, "content": "x"}))


def test_openai_n_other_than_one_is_rejected():
    assert error_of(api.ChatCompletionRequest, chat({"role": "user", "content": "x"}, n=2)) == \
        "n: only n=1 is supported (one backend run gives one choice), got 2"


def test_openai_stop_may_be_a_string_or_a_list():
    one = validate(api.ChatCompletionRequest, chat({"role": "user", "content": "x"}, stop="\n"))
    many = validate(api.ChatCompletionRequest, chat({"role": "user", "content": "x"}, stop=["a"]))
    assert (one["stop"], many["stop"]) == ("\n", ["a"])


def test_openai_include_usage_is_kept_and_unknown_fields_ignored():
    cleaned = validate(api.ChatCompletionRequest, chat(
        {"role": "user", "content": "x"}, stream=True, stream_options={"include_usage": True},
        logit_bias={"1": 2}, seed=1, max_completion_tokens=50))
    assert cleaned["stream_options"] == {"include_usage": True}
    assert cleaned["max_completion_tokens"] == 50
    assert "logit_bias" not in cleaned and "seed" not in cleaned


def test_openai_tools_are_kept_and_each_names_its_function():
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    assert validate(api.ChatCompletionRequest, chat(
        {"role": "user", "content": "x"}, tools=tools))["tools"] == tools
    assert error_of(api.ChatCompletionRequest, chat(
        {"role": "user", "content": "x"}, tools=[{"type": "function"}])) == \
        "tools[0].function: field required"


def test_openai_messages_must_not_be_empty():
    assert error_of(api.ChatCompletionRequest, chat()) == \
        "messages: expected a non-empty array, got an empty array"


# --- Anthropic requests -----------------------------------------------------------------------


def anthropic(*messages, **fields):
    return dict({"model": "claude", "max_tokens": 64, "messages": list(messages)}, **fields)


def test_anthropic_max_tokens_is_required():
    body = anthropic({"role": "user", "content": "x"})
    del body["max_tokens"]
    assert error_of(api.MessagesRequest, body) == "max_tokens: field required"


def test_anthropic_max_tokens_must_be_positive():
    body = anthropic({"role": "user", "content": "x"}, max_tokens=0)
    assert error_of(api.MessagesRequest, body) == "max_tokens: expected an integer >= 1, got 0"


def test_anthropic_non_text_block_is_rejected_naming_its_index():
    body = anthropic({"role": "user", "content": [{"type": "text", "text": "look"},
                                                  {"type": "image", "source": {}}]})
    assert error_of(api.MessagesRequest, body) == \
        "messages[0].content[1].type: image blocks are not supported: the backend CLIs take " \
        "text only; send the image's content as a text block"


def test_anthropic_system_may_be_text_blocks():
    cleaned = validate(api.MessagesRequest, anthropic(
        {"role": "user", "content": "x"},
        system=[{"type": "text", "text": "be brief", "cache_control": {"type": "ephemeral"}}]))
    assert cleaned["system"] == [{"type": "text", "text": "be brief"}]


def test_anthropic_system_role_inside_messages_is_accepted():
    cleaned = validate(api.MessagesRequest, anthropic({"role": "user", "content": "x"},
                                                      {"role": "system", "content": "y"}))
    assert cleaned["messages"][1] == {"role": "system", "content": "y"}


def test_anthropic_message_role_outside_the_three_is_rejected():
    assert error_of(api.MessagesRequest, anthropic({"role": "tool", "content": "x"})) == \
        "messages[0].role: expected one of user, assistant, system, got 'tool'"


def test_count_tokens_needs_no_max_tokens():
    cleaned = validate(api.CountTokensRequest, {"model": "claude",
                                              "messages": [{"role": "user", "content": "x"}]})
    assert cleaned["messages"][0]["content"] == "x"


# --- query parameters -------------------------------------------------------------------------


def test_query_integers_are_parsed_from_strings():
    cleaned = validate_query(shapes.SessionsQuery, {"limit": "5", "backend": "codex"})
    assert cleaned == {"backend": "codex", "limit": 5, "offset": 0}


def test_query_value_that_is_not_an_integer_is_named():
    with pytest.raises(ValidationError) as info:
        validate_query(shapes.SessionsQuery, {"offset": "abc"})
    assert str(info.value) == "offset: expected an integer >= 0, got 'abc'"


# --- examples and JSON Schema -----------------------------------------------------------------

NAMED = [v for module in (shapes, api) for v in vars(module).values()
         if isinstance(v, Obj) and v.name]


@pytest.mark.parametrize("obj", [o for o in NAMED if o.example is not None],
                         ids=lambda o: o.name)
def test_every_example_passes_its_own_schema(obj):
    validate(obj, obj.example)


@pytest.mark.parametrize("obj", [o for o in NAMED if o.example is not None],
                         ids=lambda o: o.name)
def test_every_example_passes_the_generated_json_schema(obj):
    validator = pytest.importorskip("openapi_schema_validator")
    validator.validate(obj.example, to_json_schema(obj), cls=validator.OAS30Validator)


def test_schema_names_are_unique():
    names = [o.name for o in NAMED]
    assert len(names) == len(set(names))


def test_json_schema_lists_required_fields_enums_and_defaults():
    schema = to_json_schema(shapes.PromptRequest)
    assert schema["required"] == ["backend", "prompt"]
    assert schema["properties"]["backend"]["enum"] == ["claude", "codex", "gemini", "qwen",
                                                       "copilot", "opencode"]
    assert schema["properties"]["output_format"]["default"] == "default"
    assert schema["properties"]["extra"] == {
        "type": "array", "items": {"type": "string"}, "default": [],
        "description": "Extra CLI flags, each checked against the backend's allowlist."}


def test_inline_json_schema_has_no_references():
    assert "$ref" not in repr(to_json_schema(shapes.ChainRequest))


def test_json_schema_with_refs_collects_named_objects():
    refs = {}
    top = to_json_schema(shapes.ParallelRequest, refs)
    assert top == {"$ref": "#/components/schemas/ParallelRequest"}
    assert refs["ParallelRequest"]["properties"]["tasks"]["items"] == \
        {"$ref": "#/components/schemas/ParallelTask"}
    assert "ParallelTask" in refs


def test_nullable_field_is_marked_in_json_schema():
    schema = to_json_schema(api.OpenAIMessage)
    assert schema["properties"]["content"]["nullable"] is True


def test_backend_fields_take_exactly_the_registered_backends():
    assert list(shapes.PromptRequest.field("backend").node.enum) == list(base.NAMES)
    assert list(shapes.CompareRequest.field("backends").node.items.enum) == list(base.NAMES)


# --- strict reading (files), refused fields, derived fields -----------------------------------

TASK_WITH = dict(prompt(), id="t1")


def test_strict_validation_refuses_an_unknown_field_naming_the_fields_it_takes():
    with pytest.raises(ValidationError) as info:
        validate(shapes.ParallelFile, {"tasks": [dict(TASK_WITH, promt="x")]}, strict=True)
    assert info.value.path == "tasks[0].promt"
    assert info.value.message.startswith("unknown field (expected one of backend, prompt,")


def test_a_refused_field_is_refused_with_or_without_strict_but_null_is_absent():
    body = {"tasks": [dict(TASK_WITH, tags=["a"])]}
    for strict in (False, True):
        with pytest.raises(ValidationError) as info:
            validate(shapes.ParallelRequest, body, strict=strict)
        assert info.value.path == "tasks[0].tags"
    cleaned = validate(shapes.ParallelFile, {"tasks": [dict(TASK_WITH, tags=None)]}, strict=True)
    assert "tags" not in cleaned["tasks"][0]


def test_a_derived_field_changes_only_what_it_is_told():
    field = shapes.ParallelRequest.field("fail_fast")
    derived = field.but(default=schema.NO_DEFAULT)
    assert (derived.name, derived.node, derived.description) == \
        (field.name, field.node, field.description)
    assert "fail_fast" not in validate(Obj(derived), {})
    assert validate(Obj(field), {}) == {"fail_fast": False}
