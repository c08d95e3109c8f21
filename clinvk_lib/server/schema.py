"""Request and response shapes of the HTTP API, declared once.

Each body is one table built from a small vocabulary (``String``, ``Integer``, ``Number``,
``Boolean``, ``Array``, ``Obj`` of ``Field``s, ``Map``, ``OneOf``, ``Any``). The same table
drives validation (``validate``), the OpenAPI document (``to_json_schema``, used by
``openapi.py``) and any other JSON Schema consumer, so a request shape is never described twice.

Validation rules, the same for every body: unknown fields are dropped, not fatal; an optional
field sent as ``null`` counts as absent (unless the field is ``nullable``); absent fields get
their default; booleans are not numbers; the first problem found is reported with the field's
path (``tasks[1].backend``) and what was expected.
"""

from __future__ import annotations

import copy
import json
import math
import re
from typing import Any as AnyValue
from typing import Callable, Dict, Mapping, Optional, Sequence

from .. import events
from ..backends.base import APPROVAL_MODES, SANDBOX_MODES

# The backend registry loads the backend modules lazily; the schemas need the names at import
# time. tests/test_schema.py checks that this tuple matches the registry.
BACKENDS = ("claude", "codex", "gemini")
OUTPUT_FORMATS = ("default", "text", "json", "stream-json")
SESSION_STATUSES = ("active", "completed", "error", "paused")
SESSIONS_LIMIT = 100        # sessions a list shows unless the request says otherwise

_MISSING = object()
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class ValidationError(ValueError):
    """A request value that does not fit its schema: ``path`` names the field
    (``tasks[1].backend``; ``""`` for the whole body), ``message`` says what was expected."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__("%s: %s" % (path or "request body", message))
        self.path = path
        self.message = message


def _describe(value: AnyValue) -> str:
    """A short rendering of a received value for error messages (long strings are cut so an
    error never echoes a whole prompt)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return repr(value if len(value) <= 40 else value[:37] + "...")
    if isinstance(value, list):
        return "an array" if value else "an empty array"
    if isinstance(value, dict):
        return "an object" if value else "an empty object"
    return type(value).__name__


def _child(path: str, name: str) -> str:
    if _IDENTIFIER.match(name):
        return name if not path else path + "." + name
    return path + "[" + json.dumps(name) + "]"


def _bounds_phrase(minimum: Optional[float], maximum: Optional[float]) -> str:
    if minimum is not None and maximum is not None:
        return " between %s and %s" % (minimum, maximum)
    if minimum is not None:
        return " >= %s" % (minimum,)
    if maximum is not None:
        return " <= %s" % (maximum,)
    return ""


class Node:
    """One JSON type. ``clean`` returns the validated value or raises ValidationError."""

    def matches_kind(self, value: AnyValue) -> bool:
        raise NotImplementedError

    def expected(self) -> str:
        raise NotImplementedError

    def clean(self, value: AnyValue, path: str) -> AnyValue:
        raise NotImplementedError

    def json_schema(self, refs: Optional[Dict[str, dict]]) -> dict:
        raise NotImplementedError

    def _fail(self, value: AnyValue, path: str) -> ValidationError:
        return ValidationError(path, "expected %s, got %s" % (self.expected(), _describe(value)))


class Any(Node):
    """Any JSON value, kept as sent."""

    def matches_kind(self, value: AnyValue) -> bool:
        return True

    def expected(self) -> str:
        return "any value"

    def clean(self, value: AnyValue, path: str) -> AnyValue:
        return value

    def json_schema(self, refs: Optional[Dict[str, dict]]) -> dict:
        return {}


class String(Node):
    def __init__(self, enum: Sequence[str] = (), min_length: int = 0) -> None:
        self.enum = tuple(enum)
        self.min_length = min_length

    def matches_kind(self, value: AnyValue) -> bool:
        return isinstance(value, str)

    def expected(self) -> str:
        if self.enum:
            return "one of " + ", ".join(self.enum)
        if self.min_length == 1:
            return "a non-empty string"
        if self.min_length:
            return "a string of at least %d characters" % self.min_length
        return "a string"

    def clean(self, value: AnyValue, path: str) -> AnyValue:
        if not isinstance(value, str) or len(value) < self.min_length:
            raise self._fail(value, path)
        if self.enum and value not in self.enum:
            raise self._fail(value, path)
        return value

    def json_schema(self, refs: Optional[Dict[str, dict]]) -> dict:
        schema: Dict[str, AnyValue] = {"type": "string"}
        if self.enum:
            schema["enum"] = list(self.enum)
        if self.min_length:
            schema["minLength"] = self.min_length
        return schema


class Number(Node):
    """A JSON number (integer or fraction; never a boolean, NaN or infinity)."""

    json_type = "number"
    noun = "a number"

    def __init__(self, minimum: Optional[float] = None, maximum: Optional[float] = None) -> None:
        self.minimum = minimum
        self.maximum = maximum

    def matches_kind(self, value: AnyValue) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool)

    def expected(self) -> str:
        return self.noun + _bounds_phrase(self.minimum, self.maximum)

    def _convert(self, value: AnyValue) -> AnyValue:
        if not self.matches_kind(value) or not math.isfinite(value):
            return _MISSING
        return value

    def clean(self, value: AnyValue, path: str) -> AnyValue:
        number = self._convert(value)
        if number is _MISSING:
            raise self._fail(value, path)
        if self.minimum is not None and number < self.minimum:
            raise self._fail(value, path)
        if self.maximum is not None and number > self.maximum:
            raise self._fail(value, path)
        return number

    def json_schema(self, refs: Optional[Dict[str, dict]]) -> dict:
        schema: Dict[str, AnyValue] = {"type": self.json_type}
        if self.minimum is not None:
            schema["minimum"] = self.minimum
        if self.maximum is not None:
            schema["maximum"] = self.maximum
        return schema


class Integer(Number):
    """A whole number; ``3.0`` is accepted as 3 (some JSON encoders write integers that way)."""

    json_type = "integer"
    noun = "an integer"

    def _convert(self, value: AnyValue) -> AnyValue:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            return int(value)
        return _MISSING


class Boolean(Node):
    def matches_kind(self, value: AnyValue) -> bool:
        return isinstance(value, bool)

    def expected(self) -> str:
        return "true or false"

    def clean(self, value: AnyValue, path: str) -> AnyValue:
        if not isinstance(value, bool):
            raise self._fail(value, path)
        return value

    def json_schema(self, refs: Optional[Dict[str, dict]]) -> dict:
        return {"type": "boolean"}


class Array(Node):
    def __init__(self, items: Node, min_items: int = 0) -> None:
        self.items = items
        self.min_items = min_items

    def matches_kind(self, value: AnyValue) -> bool:
        return isinstance(value, list)

    def expected(self) -> str:
        if self.min_items == 1:
            return "a non-empty array"
        if self.min_items:
            return "an array of at least %d items" % self.min_items
        return "an array"

    def clean(self, value: AnyValue, path: str) -> AnyValue:
        if not isinstance(value, list) or len(value) < self.min_items:
            raise self._fail(value, path)
        return [self.items.clean(item, "%s[%d]" % (path, i)) for i, item in enumerate(value)]

    def json_schema(self, refs: Optional[Dict[str, dict]]) -> dict:
        schema: Dict[str, AnyValue] = {"type": "array", "items": self.items.json_schema(refs)}
        if self.min_items:
            schema["minItems"] = self.min_items
        return schema


class Map(Node):
    """An object with free-form keys whose values all have one type (e.g. ``metadata``)."""

    def __init__(self, values: Node) -> None:
        self.values = values

    def matches_kind(self, value: AnyValue) -> bool:
        return isinstance(value, dict)

    def expected(self) -> str:
        return "an object"

    def clean(self, value: AnyValue, path: str) -> AnyValue:
        if not isinstance(value, dict):
            raise self._fail(value, path)
        return {k: self.values.clean(v, _child(path, k)) for k, v in value.items()}

    def json_schema(self, refs: Optional[Dict[str, dict]]) -> dict:
        return {"type": "object", "additionalProperties": self.values.json_schema(refs)}


class OneOf(Node):
    """One of several alternatives that differ in JSON kind (string, array, object, ...).

    The alternative whose kind matches the value validates it, so an error inside an array
    alternative names the bad element rather than saying "expected a string or an array".
    """

    def __init__(self, *alternatives: Node) -> None:
        self.alternatives = alternatives

    def matches_kind(self, value: AnyValue) -> bool:
        return any(alt.matches_kind(value) for alt in self.alternatives)

    def expected(self) -> str:
        return " or ".join(alt.expected() for alt in self.alternatives)

    def clean(self, value: AnyValue, path: str) -> AnyValue:
        for alt in self.alternatives:
            if alt.matches_kind(value):
                return alt.clean(value, path)
        raise self._fail(value, path)

    def json_schema(self, refs: Optional[Dict[str, dict]]) -> dict:
        return {"oneOf": [alt.json_schema(refs) for alt in self.alternatives]}


class Field:
    """A named member of an ``Obj``.

    ``check(value) -> message or None`` runs after the type check, for rules the type cannot
    say (``n`` must be 1, no ``{{session}}`` in a chain step). ``nullable`` keeps an explicit
    ``null`` instead of treating it as absent.
    """

    __slots__ = ("name", "node", "required", "default", "nullable", "check", "description",
                 "example")

    def __init__(self, name: str, node: Node, required: bool = False,
                 default: AnyValue = _MISSING, nullable: bool = False,
                 check: Optional[Callable[[AnyValue], Optional[str]]] = None,
                 description: str = "", example: AnyValue = None) -> None:
        self.name = name
        self.node = node
        self.required = required
        self.default = default
        self.nullable = nullable
        self.check = check
        self.description = description
        self.example = example

    def json_schema(self, refs: Optional[Dict[str, dict]]) -> dict:
        schema = self.node.json_schema(refs)
        if "$ref" in schema and (self.description or self.nullable):
            # OpenAPI 3.0 ignores siblings of $ref; allOf carries them.
            schema = {"allOf": [schema]}
        if self.description:
            schema["description"] = self.description
        if self.nullable:
            schema["nullable"] = True
        if self.default is not _MISSING:
            schema["default"] = self.default
        if self.example is not None:
            schema["example"] = self.example
        return schema


class Obj(Node):
    """An object with declared fields. A ``name`` makes it a reusable component
    (``#/components/schemas/<name>``) in the OpenAPI document."""

    def __init__(self, *fields: Field, name: str = "", description: str = "",
                 example: AnyValue = None) -> None:
        self.fields = fields
        self.name = name
        self.description = description
        self.example = example

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(name)

    def matches_kind(self, value: AnyValue) -> bool:
        return isinstance(value, dict)

    def expected(self) -> str:
        return "an object"

    def clean(self, value: AnyValue, path: str) -> AnyValue:
        if not isinstance(value, dict):
            raise self._fail(value, path)
        out: Dict[str, AnyValue] = {}
        for f in self.fields:
            fpath = _child(path, f.name)
            item = value.get(f.name, _MISSING)
            if item is None and f.nullable:
                out[f.name] = None
                continue
            if item is _MISSING or (item is None and not f.required):
                if f.required:
                    raise ValidationError(fpath, "field required")
                if f.default is not _MISSING:
                    out[f.name] = copy.deepcopy(f.default)
                continue
            item = f.node.clean(item, fpath)
            problem = f.check(item) if f.check else None
            if problem:
                raise ValidationError(fpath, problem)
            out[f.name] = item
        return out

    def json_schema(self, refs: Optional[Dict[str, dict]]) -> dict:
        if refs is not None and self.name:
            if self.name not in refs:
                refs[self.name] = self._inline(refs)
            return {"$ref": "#/components/schemas/" + self.name}
        return self._inline(refs)

    def _inline(self, refs: Optional[Dict[str, dict]]) -> dict:
        schema: Dict[str, AnyValue] = {"type": "object"}
        if self.description:
            schema["description"] = self.description
        schema["properties"] = {f.name: f.json_schema(refs) for f in self.fields}
        required = [f.name for f in self.fields if f.required]
        if required:
            schema["required"] = required
        if self.example is not None:
            schema["example"] = self.example
        return schema


def validate(schema: Node, data: AnyValue) -> AnyValue:
    """``data`` checked against ``schema``: the cleaned value (unknown fields dropped,
    defaults filled in). Raises ValidationError naming the first bad field."""
    return schema.clean(data, "")


def validate_query(schema: Obj, params: Mapping[str, str]) -> Dict[str, AnyValue]:
    """Query-string (or path) parameters checked against ``schema``. Values arrive as strings;
    integer and boolean fields are converted first, so ``limit=abc`` reports
    "limit: expected an integer >= 0, got 'abc'"."""
    converted: Dict[str, AnyValue] = {}
    for f in schema.fields:
        if f.name not in params:
            continue
        raw = params[f.name]
        # ASCII digits only (\d also takes "٣"), and few enough that int() is cheap and never
        # refuses (Python 3.11+ raises past 4300 digits); anything else stays a string and
        # is reported as "expected an integer".
        if isinstance(f.node, Integer) and re.match(r"[+-]?[0-9]{1,18}\Z", raw.strip()):
            converted[f.name] = int(raw)
        elif isinstance(f.node, Boolean) and raw.lower() in ("true", "false", "1", "0"):
            converted[f.name] = raw.lower() in ("true", "1")
        else:
            converted[f.name] = raw
    return schema.clean(converted, "")


def to_json_schema(schema: Node, refs: Optional[Dict[str, dict]] = None) -> dict:
    """The JSON Schema (OpenAPI 3.0 dialect: ``nullable``, ``example``) of ``schema``.

    Without ``refs`` everything is inline (for a standalone consumer such as an MCP tool).
    With a ``refs`` dict, every named ``Obj`` becomes a ``$ref`` to
    ``#/components/schemas/<name>`` and its schema is added to ``refs``.
    """
    return schema.json_schema(refs)


# --- Value checks used by the tables below ------------------------------------------------


def _reject_true(value: bool) -> Optional[str]:
    if value:
        return ("not supported: chains are always ephemeral, so pass_session_id and "
                "persist_sessions must be false or absent")
    return None


def _no_session_placeholder(prompt: str) -> Optional[str]:
    if "{{session}}" in prompt:
        return ("the {{session}} placeholder is not supported: chain steps are always "
                "ephemeral (use {{previous}} for the previous step's output)")
    return None


def _only_one_choice(n: int) -> Optional[str]:
    if n != 1:
        return "only n=1 is supported (one backend run gives one choice), got %d" % n
    return None


def _text_only(kind: str) -> Callable[[str], Optional[str]]:
    def check(block_type: str) -> Optional[str]:
        if block_type != "text":
            return "only text %s are supported, got %r" % (kind, block_type)
        return None
    return check


# --- Native API requests -------------------------------------------------------------------

_BACKEND = Field("backend", String(enum=BACKENDS), required=True,
                 description="Backend CLI that runs the prompt.", example="claude")
_PROMPT = Field("prompt", String(min_length=1), required=True,
                description="The prompt (given to the CLI on stdin, never in argv).",
                example="explain this code")
def _no_nul(value: AnyValue) -> Optional[str]:
    """Values that reach a command line (argv) cannot hold NUL bytes."""
    return "must not contain NUL bytes" if "\x00" in value else None


_MODEL = Field("model", String(), default="", check=_no_nul,
               description="Model override; empty = the backend's configured model.")
_WORKDIR = Field("workdir", String(), default="", check=_no_nul,
                 description="Working directory: an absolute path inside the server's allowed "
                             "prefixes, outside its blocked ones and not containing one; empty = "
                             "the server's server.default_workdir, checked the same way.")
_APPROVAL = Field("approval_mode", String(enum=APPROVAL_MODES), default="default",
                  description="When the agent asks before acting. 'none' (never asks) is refused "
                              "unless the server sets allow_dangerous_modes.")
_SANDBOX = Field("sandbox_mode", String(enum=SANDBOX_MODES), default="default",
                 description="What the agent may touch. 'full' is refused unless the server "
                             "sets allow_dangerous_modes.")
_OUTPUT_FORMAT = Field("output_format", String(enum=OUTPUT_FORMATS), default="default",
                       description="'stream-json' answers application/x-ndjson, one unified event "
                                   "per line; anything else answers one JSON object.")
_MAX_TOKENS = Field("max_tokens", Integer(minimum=0), default=0,
                    description="Accepted for compatibility; no backend CLI has a flag for it.")
_MAX_TURNS = Field("max_turns", Integer(minimum=0), default=0,
                   description="Maximum agentic turns (claude only); 0 = the CLI's default.")
_SYSTEM_PROMPT = Field("system_prompt", String(), default="", check=_no_nul,
                       description="System prompt, passed by the backend's own mechanism.")
_VERBOSE = Field("verbose", Boolean(), default=False, description="Ask the CLI for verbose output.")
_DRY_RUN = Field("dry_run", Boolean(), default=False,
                 description="Return the exact command that would run (in output); run nothing.")
_EPHEMERAL = Field("ephemeral", Boolean(), default=False,
                   description="Run without creating or continuing a session.")
_EXTRA = Field("extra", Array(String()), default=[],
               description="Extra CLI flags, each checked against the backend's allowlist.")
_METADATA = Field("metadata", Map(String()), default={},
                  description="String key/value pairs stored with the session.")
_SESSION_ID = Field("session_id", String(), default="",
                    description="Continue this session (its id or a unique prefix) instead of "
                                "starting a new one.")

_PROMPT_FIELDS = (_BACKEND, _PROMPT, _MODEL, _WORKDIR, _EPHEMERAL, _APPROVAL, _SANDBOX,
                  _OUTPUT_FORMAT, _MAX_TOKENS, _MAX_TURNS, _SYSTEM_PROMPT, _VERBOSE, _DRY_RUN,
                  _EXTRA, _METADATA, _SESSION_ID)

PromptRequest = Obj(
    *_PROMPT_FIELDS,
    name="PromptRequest",
    description="Run one prompt on one backend.",
    # No workdir: the example runs as written in server.default_workdir (a made-up path
    # would be refused); extra holds a flag that needs no path for the same reason.
    example={"backend": "claude", "prompt": "explain this code",
             "model": "claude-opus-4-5-20251101", "approval_mode": "auto",
             "sandbox_mode": "workspace", "output_format": "json", "max_turns": 10,
             "system_prompt": "You are a helpful assistant.", "extra": ["--effort", "high"],
             "metadata": {"project": "demo"}},
)

ParallelTask = Obj(
    *[f for f in _PROMPT_FIELDS if f.name not in ("ephemeral", "dry_run", "metadata",
                                                   "session_id")],
    name="ParallelTask",
    description="One task of a parallel run: the fields of a prompt request. Tasks are always "
                "ephemeral; dry_run is set for the whole request.",
)

ParallelRequest = Obj(
    Field("tasks", Array(ParallelTask, min_items=1), required=True,
          description="The tasks; results come back in this order."),
    Field("max_parallel", Integer(minimum=1),
          description="How many tasks run at once; default: the server's parallel.max_workers."),
    Field("fail_fast", Boolean(), default=False,
          description="Cancel the remaining tasks after the first failure."),
    _DRY_RUN,
    name="ParallelRequest",
    description="Run several prompts at once.",
    example={"tasks": [{"backend": "claude", "prompt": "review the auth module"},
                       {"backend": "codex", "prompt": "optimise the parser"}],
             "max_parallel": 3, "fail_fast": False},
)

ChainStep = Obj(
    Field("name", String(), default="", description="A label echoed in the step's result."),
    _BACKEND,
    Field("prompt", String(min_length=1), required=True, check=_no_session_placeholder,
          description="The step's prompt; {{previous}} is replaced by the previous step's output.",
          example="improve based on: {{previous}}"),
    _MODEL, _WORKDIR, _APPROVAL, _SANDBOX, _MAX_TURNS, _SYSTEM_PROMPT,
    name="ChainStep",
)

ChainRequest = Obj(
    Field("steps", Array(ChainStep, min_items=1), required=True,
          description="The steps, run one after another."),
    Field("stop_on_failure", Boolean(), default=False,
          description="Stop at the first failed step."),
    Field("pass_working_dir", Boolean(), default=False,
          description="A step without workdir uses the previous step's."),
    _DRY_RUN,
    Field("pass_session_id", Boolean(), check=_reject_true,
          description="Not supported (chains are always ephemeral): true is rejected."),
    Field("persist_sessions", Boolean(), check=_reject_true,
          description="Not supported (chains are always ephemeral): true is rejected."),
    name="ChainRequest",
    description="Run steps in sequence, each seeing the previous step's output.",
    example={"steps": [{"name": "analyze", "backend": "claude", "prompt": "analyze the code"},
                       {"name": "improve", "backend": "codex",
                        "prompt": "improve based on: {{previous}}"}],
             "stop_on_failure": False, "pass_working_dir": False},
)

CompareRequest = Obj(
    _PROMPT,
    Field("backends", Array(String(enum=BACKENDS), min_items=1), required=True,
          description="Backends to run the prompt on.", example=["claude", "codex", "gemini"]),
    _MODEL, _WORKDIR,
    Field("sequential", Boolean(), default=False,
          description="Run the backends one after another instead of at once."),
    _DRY_RUN,
    name="CompareRequest",
    description="Run one prompt on several backends.",
    example={"prompt": "explain this algorithm", "backends": ["claude", "codex", "gemini"],
             "sequential": False},
)

SessionsQuery = Obj(
    Field("backend", String(enum=BACKENDS), description="Only sessions of this backend."),
    Field("status", String(enum=SESSION_STATUSES), description="Only sessions in this status."),
    Field("limit", Integer(minimum=0), default=SESSIONS_LIMIT,
          description="At most this many sessions; 0 = all."),
    Field("offset", Integer(minimum=0), default=0, description="Skip this many sessions first."),
    name="SessionsQuery",
)

SessionPath = Obj(
    # No example: no example value can name a session of the reader's, and /docs turns a
    # path parameter without one into a placeholder it tells the reader to replace.
    Field("id", String(min_length=1), required=True,
          description="Session id, or a unique prefix of one."),
    name="SessionPath",
)

ModelPath = Obj(
    Field("id", String(min_length=1), required=True,
          description="Model id: a backend name or backend/model.", example="claude"),
    name="ModelPath",
)

# --- OpenAI-compatible requests ------------------------------------------------------------

OpenAITextPart = Obj(
    Field("type", String(), required=True, check=_text_only("content parts"),
          description="Only \"text\" is supported.", example="text"),
    Field("text", String(), required=True),
    name="OpenAITextPart",
)

OpenAIMessage = Obj(
    Field("role", String(enum=("system", "developer", "user", "assistant", "tool", "function")),
          required=True),
    Field("content", OneOf(String(), Array(OpenAITextPart)), nullable=True,
          description="A string, an array of text parts, or null."),
    Field("name", String()),
    Field("tool_call_id", String()),
    name="OpenAIMessage",
)

ChatCompletionRequest = Obj(
    Field("model", String(min_length=1), required=True,
          description="A backend name (claude, codex, gemini), backend/model-id, or a vendor "
                      "model id mapped by prefix (claude-*, gpt-* and o*, gemini-*).",
          example="claude"),
    Field("messages", Array(OpenAIMessage, min_items=1), required=True),
    Field("stream", Boolean(), default=False, description="Answer with server-sent events."),
    Field("stream_options", Obj(Field("include_usage", Boolean(), default=False),
                                name="OpenAIStreamOptions"),
          description="include_usage: send a usage chunk before [DONE]."),
    Field("max_tokens", Integer(minimum=1), description="Accepted; no backend CLI honours it."),
    Field("max_completion_tokens", Integer(minimum=1),
          description="Accepted; no backend CLI honours it."),
    Field("stop", OneOf(String(), Array(String())), description="Accepted and ignored."),
    Field("temperature", Number(), description="Accepted and ignored."),
    Field("top_p", Number(), description="Accepted and ignored."),
    Field("n", Integer(), check=_only_one_choice, description="Only 1 is supported."),
    Field("user", String(), description="Accepted and ignored."),
    Field("metadata", Map(String()), description="Stored with the clinvk session."),
    Field("response_format", Obj(Field("type", String(), required=True),
                                 name="OpenAIResponseFormat"),
          description="Accepted and ignored."),
    name="ChatCompletionRequest",
    description="OpenAI Chat Completions request. Fields not listed here (tools, seed, "
                "logit_bias, ...) are ignored.",
    example={"model": "claude", "messages": [{"role": "system", "content": "Be brief."},
                                             {"role": "user", "content": "Hello!"}]},
)

# --- Anthropic-compatible requests ---------------------------------------------------------

AnthropicTextBlock = Obj(
    Field("type", String(), required=True, check=_text_only("content blocks"),
          description="Only \"text\" is supported.", example="text"),
    Field("text", String(), required=True),
    name="AnthropicTextBlock",
)

AnthropicMessage = Obj(
    Field("role", String(enum=("user", "assistant")), required=True),
    Field("content", OneOf(String(), Array(AnthropicTextBlock)), required=True,
          description="A string or an array of text blocks."),
    name="AnthropicMessage",
)

_ANTHROPIC_MODEL = Field("model", String(min_length=1), required=True,
                         description="A backend name, backend/model-id, or a vendor model id "
                                     "mapped by prefix.", example="claude")
_ANTHROPIC_MESSAGES = Field("messages", Array(AnthropicMessage, min_items=1), required=True)
_ANTHROPIC_SYSTEM = Field("system", OneOf(String(), Array(AnthropicTextBlock)),
                          description="System prompt: a string or an array of text blocks.")

MessagesRequest = Obj(
    _ANTHROPIC_MODEL,
    Field("max_tokens", Integer(minimum=1), required=True,
          description="Required as in the real API; no backend CLI honours it."),
    _ANTHROPIC_MESSAGES,
    _ANTHROPIC_SYSTEM,
    Field("stream", Boolean(), default=False, description="Answer with server-sent events."),
    Field("metadata", Obj(Field("user_id", String(), nullable=True), name="AnthropicMetadata"),
          description="user_id is stored with the clinvk session."),
    Field("stop_sequences", Array(String()), description="Accepted and ignored."),
    Field("temperature", Number(), description="Accepted and ignored."),
    Field("top_p", Number(), description="Accepted and ignored."),
    Field("top_k", Integer(minimum=0), description="Accepted and ignored."),
    name="MessagesRequest",
    description="Anthropic Messages request. Fields not listed here (tools, thinking, ...) are "
                "ignored.",
    example={"model": "claude", "max_tokens": 1024,
             "messages": [{"role": "user", "content": "Hello!"}]},
)

CountTokensRequest = Obj(
    _ANTHROPIC_MODEL, _ANTHROPIC_MESSAGES, _ANTHROPIC_SYSTEM,
    name="CountTokensRequest",
    example={"model": "claude", "messages": [{"role": "user", "content": "Hello!"}]},
)

# --- Responses (documentation only) --------------------------------------------------------

_INT = Integer(minimum=0)

TokenUsage = Obj(
    Field("input_tokens", _INT, required=True),
    Field("output_tokens", _INT, required=True),
    Field("cached_tokens", _INT),
    Field("reasoning_tokens", _INT),
    name="TokenUsage",
)

_RUN_RESULT_FIELDS = (
    Field("backend", String(), required=True),
    Field("exit_code", Integer(), required=True,
          description="The CLI's exit status; -1 when it was killed (timeout, cancel)."),
    Field("duration_ms", _INT, required=True),
    Field("output", String(), required=True,
          description="The reply (or, for a dry run, the command); \"\" when there is none."),
    Field("error", String(), required=True, description="Why the run failed; \"\" on success."),
    Field("token_usage", TokenUsage),
)

PromptResponse = Obj(
    Field("session_id", String(), description="Absent for ephemeral runs."),
    *_RUN_RESULT_FIELDS,
    name="PromptResponse",
    example={"session_id": "abc123", "backend": "claude", "exit_code": 0, "duration_ms": 2500,
             "output": "The code explanation...", "error": "",
             "token_usage": {"input_tokens": 123, "output_tokens": 456, "cached_tokens": 0,
                             "reasoning_tokens": 0}},
)

TaskResult = Obj(*_RUN_RESULT_FIELDS, name="TaskResult")

ParallelResponse = Obj(
    Field("total_tasks", _INT, required=True),
    Field("completed", _INT, required=True),
    Field("failed", _INT, required=True),
    Field("cancelled", _INT, required=True,
          description="Tasks stopped or never started (fail_fast, client gone); completed + "
                      "failed + cancelled = total_tasks."),
    Field("total_duration_ms", _INT, required=True),
    Field("results", Array(TaskResult), required=True, description="In request order."),
    name="ParallelResponse",
    example={"total_tasks": 2, "completed": 2, "failed": 0, "cancelled": 0,
             "total_duration_ms": 2000,
             "results": [{"backend": "claude", "exit_code": 0, "duration_ms": 2000,
                          "output": "result 1", "error": ""},
                         {"backend": "codex", "exit_code": 0, "duration_ms": 1800,
                          "output": "result 2", "error": ""}]},
)

ChainStepResult = Obj(
    Field("step", Integer(minimum=1), required=True, description="1-based step number."),
    Field("name", String()),
    *_RUN_RESULT_FIELDS,
    name="ChainStepResult",
)

ChainResponse = Obj(
    Field("total_steps", _INT, required=True),
    Field("completed_steps", _INT, required=True),
    Field("failed_step", _INT, required=True,
          description="Number of the first failed step; 0 when none failed."),
    Field("total_duration_ms", _INT, required=True),
    Field("results", Array(ChainStepResult), required=True),
    name="ChainResponse",
    example={"total_steps": 2, "completed_steps": 2, "failed_step": 0,
             "total_duration_ms": 3500,
             "results": [{"step": 1, "name": "analyze", "backend": "claude", "exit_code": 0,
                          "duration_ms": 2000, "output": "analysis result", "error": ""},
                         {"step": 2, "name": "improve", "backend": "codex", "exit_code": 0,
                          "duration_ms": 1500, "output": "improved code", "error": ""}]},
)

CompareResult = Obj(
    Field("backend", String(), required=True),
    Field("model", String()),
    *_RUN_RESULT_FIELDS[1:],
    name="CompareResult",
)

CompareResponse = Obj(
    Field("prompt", String(), required=True),
    Field("backends", Array(String()), required=True),
    Field("total_duration_ms", _INT, required=True),
    Field("results", Array(CompareResult), required=True, description="In request order."),
    name="CompareResponse",
    example={"prompt": "explain this algorithm", "backends": ["claude", "codex"],
             "total_duration_ms": 3200,
             "results": [{"backend": "claude", "exit_code": 0, "duration_ms": 2500,
                          "output": "explanation from claude", "error": ""},
                         {"backend": "codex", "exit_code": 0, "duration_ms": 3100,
                          "output": "explanation from codex", "error": ""}]},
)

BackendStatus = Obj(
    Field("name", String(), required=True),
    Field("available", Boolean(), required=True, description="The CLI is on the server's PATH."),
    name="BackendStatus",
)

BackendsResponse = Obj(
    Field("backends", Array(BackendStatus), required=True),
    name="BackendsResponse",
    example={"backends": [{"name": "claude", "available": True},
                          {"name": "codex", "available": True},
                          {"name": "gemini", "available": False}]},
)

Session = Obj(
    Field("id", String(), required=True),
    Field("backend", String(), required=True),
    Field("created_at", String(), required=True, description="RFC 3339 time."),
    Field("last_used", String(), required=True, description="RFC 3339 time."),
    Field("working_dir", String()),
    Field("model", String()),
    Field("initial_prompt", String()),
    Field("status", String(enum=SESSION_STATUSES)),
    Field("turn_count", _INT),
    Field("token_usage", TokenUsage),
    Field("tags", Array(String())),
    Field("title", String()),
    name="Session",
    example={"id": "abc123", "backend": "claude", "created_at": "2025-01-27T10:00:00Z",
             "last_used": "2025-01-27T11:30:00Z", "working_dir": "/projects/myapp",
             "model": "claude-opus-4-5-20251101", "initial_prompt": "Review auth changes",
             "status": "active", "turn_count": 3,
             "token_usage": {"input_tokens": 123, "output_tokens": 456}, "tags": ["api"],
             "title": "Review auth changes"},
)

SessionDetail = Obj(
    *Session.fields,
    Field("metadata", Map(String()), required=True,
          description="The metadata the session was created with ({} when none)."),
    name="SessionDetail",
    example=dict(Session.example, metadata={"project": "demo"}),
)

SessionsList = Obj(
    Field("sessions", Array(Session), required=True, description="Most recently used first."),
    Field("total", _INT, required=True, description="Matching sessions before limit/offset."),
    Field("limit", _INT, required=True,
          description="The limit applied: the request's, else %d; 0 = none." % SESSIONS_LIMIT),
    Field("offset", _INT, required=True),
    name="SessionsList",
)

SessionDeleted = Obj(
    Field("deleted", Boolean(), required=True),
    Field("id", String(), required=True),
    name="SessionDeleted",
    example={"deleted": True, "id": "abc123"},
)

Health = Obj(
    Field("status", String(enum=("ok", "degraded", "unhealthy")), required=True,
          description="ok; degraded = some backend CLI missing; unhealthy = session store "
                      "unusable (HTTP 503)."),
    Field("version", String(), required=True),
    Field("uptime", String(), required=True, example="2m31s"),
    Field("uptime_millis", _INT, required=True),
    Field("backends", Array(BackendStatus), required=True),
    Field("session_store", Obj(Field("available", Boolean(), required=True),
                               Field("session_count", _INT, required=True),
                               Field("error", String(), required=True,
                                     description="Why the store cannot be used; \"\" when "
                                                 "it can."),
                               name="SessionStoreHealth"), required=True),
    name="Health",
    example={"status": "ok", "version": "0.1.0", "uptime": "2m31s", "uptime_millis": 151000,
             "backends": [{"name": "claude", "available": True}],
             "session_store": {"available": True, "session_count": 15, "error": ""}},
)

Event = Obj(
    Field("type", String(enum=events.TYPES), required=True),
    Field("backend", String(), required=True),
    Field("session_id", String()),
    Field("timestamp", String(), required=True),
    Field("content", Map(Any()), required=True, description="Keys depend on type."),
    name="Event",
    description="One line of an application/x-ndjson stream: init first, done last.",
)

NativeError = Obj(
    Field("error", String(), required=True, description="A stable code.", example="unauthorized"),
    Field("message", String(), required=True, description="What went wrong and how to fix it."),
    Field("field", String(), description="The request field concerned, when there is one.",
          example="tasks[1].backend"),
    name="Error",
    example={"error": "unauthorized", "message": "missing API key"},
)

OpenAIError = Obj(
    Field("error", Obj(Field("message", String(), required=True),
                       Field("type", String(), required=True),
                       Field("param", String(), nullable=True),
                       Field("code", String(), nullable=True),
                       name="OpenAIErrorDetail"), required=True),
    name="OpenAIError",
    example={"error": {"message": "model 'x' not found", "type": "invalid_request_error",
                       "param": "model", "code": "model_not_found"}},
)

AnthropicError = Obj(
    Field("type", String(enum=("error",)), required=True),
    Field("error", Obj(Field("type", String(), required=True),
                       Field("message", String(), required=True),
                       name="AnthropicErrorDetail"), required=True),
    name="AnthropicError",
    example={"type": "error", "error": {"type": "invalid_request_error",
                                        "message": "max_tokens: field required"}},
)

OpenAIChatCompletion = Obj(
    Field("id", String(), required=True),
    Field("object", String(enum=("chat.completion",)), required=True),
    Field("created", _INT, required=True),
    Field("model", String(), required=True),
    Field("choices", Array(Obj(
        Field("index", _INT, required=True),
        Field("message", Obj(Field("role", String(enum=("assistant",)), required=True),
                             Field("content", String(), required=True, nullable=True),
                             name="OpenAIAssistantMessage"), required=True),
        Field("finish_reason", String(enum=("stop", "length", "content_filter")), required=True),
        name="OpenAIChoice")), required=True),
    Field("usage", Obj(Field("prompt_tokens", _INT, required=True),
                       Field("completion_tokens", _INT, required=True),
                       Field("total_tokens", _INT, required=True),
                       name="OpenAIUsage"), required=True),
    name="OpenAIChatCompletion",
    example={"id": "chatcmpl-0123456789abcdef", "object": "chat.completion",
             "created": 1735689600, "model": "claude",
             "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello!"},
                          "finish_reason": "stop"}],
             "usage": {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}},
)

OpenAIModel = Obj(
    Field("id", String(), required=True),
    Field("object", String(enum=("model",)), required=True),
    Field("created", _INT, required=True),
    Field("owned_by", String(), required=True),
    name="OpenAIModel",
    example={"id": "claude", "object": "model", "created": 1735689600, "owned_by": "anthropic"},
)

OpenAIModelList = Obj(
    Field("object", String(enum=("list",)), required=True),
    Field("data", Array(OpenAIModel), required=True),
    name="OpenAIModelList",
    example={"object": "list", "data": [
        {"id": "claude", "object": "model", "created": 1735689600, "owned_by": "anthropic"},
        {"id": "codex", "object": "model", "created": 1735689600, "owned_by": "openai"},
        {"id": "gemini", "object": "model", "created": 1735689600, "owned_by": "google"}]},
)

AnthropicMessageResponse = Obj(
    Field("id", String(), required=True),
    Field("type", String(enum=("message",)), required=True),
    Field("role", String(enum=("assistant",)), required=True),
    Field("content", Array(AnthropicTextBlock), required=True),
    Field("model", String(), required=True),
    Field("stop_reason", String(enum=("end_turn", "max_tokens", "stop_sequence", "refusal")),
          required=True, nullable=True),
    Field("stop_sequence", String(), required=True, nullable=True),
    Field("usage", Obj(Field("input_tokens", _INT, required=True),
                       Field("output_tokens", _INT, required=True),
                       Field("cache_creation_input_tokens", _INT, nullable=True),
                       Field("cache_read_input_tokens", _INT, nullable=True),
                       name="AnthropicUsage"), required=True),
    name="AnthropicMessageResponse",
    example={"id": "msg_0123456789abcdef", "type": "message", "role": "assistant",
             "content": [{"type": "text", "text": "Hello!"}], "model": "claude",
             "stop_reason": "end_turn", "stop_sequence": None,
             "usage": {"input_tokens": 9, "output_tokens": 3}},
)

CountTokensResponse = Obj(
    Field("input_tokens", _INT, required=True,
          description="An estimate: the backends expose no tokenizer."),
    name="CountTokensResponse",
    example={"input_tokens": 12},
)
