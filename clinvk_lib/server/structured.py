"""Structured output: what each compatible API's request asks the reply to be (an
``OutputSpec``), and the check that a backend's reply is that.

How each API asks:
- Chat Completions ``response_format``: ``{"type": "json_schema", "json_schema": {"name",
  "schema", "strict"}}``, ``{"type": "json_object"}`` (any JSON object) or ``{"type":
  "text"}`` (plain text, as when absent) — ``from_chat``;
- Responses ``text.format``: ``{"type": "json_schema", "name", "schema", "strict"}``,
  ``{"type": "json_object"}`` or ``{"type": "text"}`` — ``from_responses``;
- Anthropic Messages: a forced ``tool_choice`` (``{"type": "tool", "name"}``, or ``{"type":
  "any"}`` with exactly one tool) of a tool in ``tools`` whose ``input_schema`` is the schema,
  as LangChain's and instructor's Anthropic structured output ask — ``from_anthropic``.
  ``auto``, ``none`` or no ``tool_choice``: plain text (the agent uses its own tools).

A schema this validator cannot use (``schemacheck``) or a backend cannot take
(``check_backend``) is a 400 naming the field. The reply (``reply_json``) is the JSON value
the backend reported apart (claude's ``structured_output``) or its answer text: the whole
text, else its last Markdown code block, else its last paragraph, whichever is JSON; it must
satisfy the schema. What the client gets is that value as compact JSON text.
"""

from __future__ import annotations

import json
import re
from typing import Any, Dict, List, Optional, Tuple

from .. import schemacheck
from ..backends import base
from . import errors

JSON_SCHEMA = "json_schema"
JSON_OBJECT = "json_object"
ANY_OBJECT: Dict[str, Any] = {"type": "object"}
_FORMATS = ("text", JSON_OBJECT, JSON_SCHEMA)
_CODE_BLOCK = re.compile(r"```[A-Za-z0-9_-]*[ \t]*\n(.*?)```", re.S)


class OutputSpec:
    """What the reply must be: ``schema`` (a JSON Schema), ``kind`` (JSON_SCHEMA, or
    JSON_OBJECT for any object), ``name`` (the schema's or tool's name), ``field`` (the
    request field holding the schema, for errors) and ``tool`` (the forced Anthropic tool's
    or Chat Completions function's name; "" for a response format)."""

    __slots__ = ("kind", "schema", "name", "field", "tool")

    def __init__(self, kind: str, schema: Dict[str, Any], name: str = "", field: str = "",
                 tool: str = "") -> None:
        self.kind = kind
        self.schema = schema
        self.name = name
        self.field = field
        self.tool = tool

    def __repr__(self) -> str:
        return "OutputSpec(%s, %r, field=%r, tool=%r)" % (self.kind, self.name, self.field,
                                                         self.tool)


# -- reading a request -----------------------------------------------------------------------


def from_chat(body: Dict[str, Any]) -> Optional[OutputSpec]:
    """The structured output of a Chat Completions body (``response_format``, else a forced
    single function: ``_forced_function``); None for plain text. 400 naming the field when it
    is malformed."""
    fmt = body.get("response_format")
    if fmt is not None:
        return _from_format(fmt, "response_format", nested=True)
    return _forced_function(body)


def _forced_function(body: Dict[str, Any]) -> Optional[OutputSpec]:
    """A ``tool_choice`` that forces one function (named, or ``required`` with exactly one
    tool), as instructor's TOOLS mode and LangChain's ``with_structured_output`` send it: the
    reply is that function's call, its arguments the JSON value (the function's
    ``parameters`` is the schema), as for a forced Anthropic tool. A run that waited for the
    client to run the function could never be resumed: such clients do not answer it."""
    choice = body.get("tool_choice")
    tools = [t.get("function") or {} for t in body.get("tools") or []]
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
    elif choice == "required" and len(tools) == 1:
        name = tools[0].get("name")
    else:
        return None
    for index, function in enumerate(tools):
        if function.get("name") == name:
            field = "tools[%d].function.parameters" % index
            spec = _json_schema(function.get("parameters"), name, field, schema_field=field)
            spec.tool = str(name)
            return spec
    known = ", ".join(repr(f.get("name")) for f in tools[:10]) or "none"
    raise errors.invalid("names no tool in tools: %r (tools: %s)" % (name, known),
                         "tool_choice")


def from_responses(body: Dict[str, Any]) -> Optional[OutputSpec]:
    """The structured output of a Responses body (``text.format``); None for plain text.
    400 naming the field (``text.format.schema``) when it is malformed."""
    text = body.get("text")
    if text is None:
        return None
    _need_object(text, "text")
    fmt = text.get("format")
    return None if fmt is None else _from_format(fmt, "text.format", nested=False)


def _from_format(fmt: Any, field: str, nested: bool) -> Optional[OutputSpec]:
    """The spec of a format object at ``field`` ({type: text | json_object | json_schema});
    Chat Completions ``nest`` the name and schema in ``json_schema``, Responses do not."""
    _need_object(fmt, field)
    kind = _format_type(fmt, field + ".type")
    if kind == JSON_OBJECT:
        return OutputSpec(JSON_OBJECT, ANY_OBJECT, field=field)
    if kind != JSON_SCHEMA:
        return None
    spec = fmt
    if nested:
        field += ".json_schema"
        spec = fmt.get("json_schema")
        if spec is None:
            raise errors.invalid('field required when type is json_schema: {"name": ..., '
                                 '"schema": {...}}', field)
        _need_object(spec, field)
    return _json_schema(spec.get("schema"), spec.get("name"), field)


def from_anthropic(body: Dict[str, Any]) -> Optional[OutputSpec]:
    """The structured output of a Messages body: the forced tool's ``input_schema``; None
    when no single tool is forced. 400 naming the field when the tool cannot be used."""
    choice = body.get("tool_choice")
    if not isinstance(choice, dict) or choice.get("type") not in ("tool", "any"):
        return None
    tools = body.get("tools") or []
    if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
        raise errors.invalid("expected an array of tool objects", "tools")
    index = _forced_tool(choice, tools)
    tool = tools[index]
    field = "tools[%d].input_schema" % index
    if tool.get("input_schema") is None:
        raise errors.invalid("field required: the forced tool's input_schema is the schema "
                             "of the reply", field)
    spec = _json_schema(tool["input_schema"], tool.get("name"), field, schema_field=field)
    spec.tool = str(tool.get("name") or "")
    return spec


def _forced_tool(choice: Dict[str, Any], tools: List[Dict[str, Any]]) -> int:
    """The index in ``tools`` of the tool ``choice`` forces."""
    if choice["type"] == "any":
        if len(tools) != 1:
            raise errors.invalid("clinvk answers a forced tool with the reply as that tool's "
                                 "input, so type any needs exactly one tool in tools, got %d; "
                                 'name the tool instead: {"type": "tool", "name": ...}'
                                 % len(tools), "tool_choice.type")
        return 0
    name = choice.get("name")
    for index, tool in enumerate(tools):
        if tool.get("name") == name:
            return index
    known = ", ".join(repr(t.get("name")) for t in tools[:10]) or "none"
    raise errors.invalid("no tool named %r in tools (tools: %s)" % (name, known),
                         "tool_choice.name")


def _format_type(fmt: Dict[str, Any], field: str) -> str:
    kind = fmt.get("type")
    if kind not in _FORMATS:
        raise errors.invalid("expected one of %s, got %s"
                             % (", ".join(_FORMATS), json.dumps(kind)[:60]), field)
    return kind


def _json_schema(schema: Any, name: Any, field: str, schema_field: str = "") -> OutputSpec:
    """A JSON_SCHEMA spec for ``schema`` (absent: any object), checked; ``field`` names the
    format object, ``schema_field`` the schema itself (default ``field`` + ".schema")."""
    schema_field = schema_field or field + ".schema"
    if schema is None:
        return OutputSpec(JSON_OBJECT, ANY_OBJECT, str(name or ""), field)
    _need_object(schema, schema_field)
    try:
        schemacheck.check_schema(schema)
    except schemacheck.SchemaError as exc:
        raise errors.invalid(exc.message, _subfield(schema_field, exc.path))
    return OutputSpec(JSON_SCHEMA, schema, str(name or ""), schema_field)


def _subfield(field: str, path: str) -> str:
    if not path:
        return field
    return field + path if path.startswith("[") else field + "." + path


def _need_object(value: Any, field: str) -> None:
    if not isinstance(value, dict):
        raise errors.invalid("expected an object, got %s" % json.dumps(value)[:60], field)


def check_backend(spec: Optional[OutputSpec], backend: base.Backend) -> None:
    """400 naming the field when ``backend`` cannot be held to the spec's schema."""
    if spec is None:
        return
    problem = backend.output_schema_problem(spec.schema)
    if problem:
        raise errors.invalid("%s (model backend: %s)" % (problem, backend.name), spec.field)


# -- checking a reply ------------------------------------------------------------------------


def reply_json(spec: OutputSpec, text: str, structured: Any = None) -> Tuple[str, str]:
    """(the reply as compact JSON text, "") when it satisfies the spec, else ("", what is
    wrong). ``structured`` is a value the backend reported apart from ``text`` (None: none,
    the value is read from ``text``)."""
    value = structured
    if value is None:
        found = _json_in(text)
        if not found:
            shown = text.strip()
            return "", ("the reply is not JSON: %s" % json.dumps(shown[:80] + (
                "..." if len(shown) > 80 else ""), ensure_ascii=False) if shown
                else "the reply is empty, not JSON")
        value = found[0]
    try:
        problem = schemacheck.first_error(value, spec.schema)
    except schemacheck.SchemaError as exc:
        problem = "the schema cannot be used: %s" % exc
    if problem:
        return "", "the reply does not match the schema in %s: %s" % (spec.field, problem)
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")), ""


def _json_in(text: str) -> List[Any]:
    """[the JSON value in ``text``] (the whole text, its last code block, its last
    paragraph: the first of these that is JSON), or [] when none is."""
    blocks = _CODE_BLOCK.findall(text)
    candidates = [text] + blocks[-1:] + [text.strip().rsplit("\n\n", 1)[-1]]
    for candidate in candidates:
        try:
            return [json.loads(candidate, parse_constant=_no_constant)]
        except (ValueError, RecursionError):
            continue
    return []


def _no_constant(name: str) -> Any:
    raise ValueError("%s is not JSON" % name)


def correction_prompt(problem: str) -> str:
    """The prompt of the one follow-up turn that asks a backend holding the schema only in
    its prompt to answer again (the schema is added after it, as to the first prompt)."""
    return ("Your previous reply cannot be used: %s. Answer again with only the JSON value."
            % problem)
