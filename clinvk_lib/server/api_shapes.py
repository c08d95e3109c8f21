"""The shapes only the HTTP API speaks: the OpenAI and Anthropic request bodies, every
response body and the error bodies, declared once for validation and for /openapi.json.

They are built from the vocabulary in ``schema.py``; the request shapes every front end takes
(a prompt, a task, a chain step, a compare request, session queries) are in ``shapes.py``. Only
the server uses these, so they live beside it.
"""

from __future__ import annotations

from typing import Callable, Optional

from .. import events
from ..schema import Any, Array, Boolean, Field, Integer, Map, Number, Obj, OneOf, Problem, String
from ..shapes import SESSION_STATUSES, SESSIONS_LIMIT

# --- Value checks used by the shapes below -------------------------------------------------


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


# --- OpenAI-compatible requests ------------------------------------------------------------

ModelPath = Obj(
    Field("id", String(min_length=1), required=True,
          description="Model id: a backend name or backend/model.", example="claude"),
    name="ModelPath",
)

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
    Field("tool_call_id", String(), description="role tool: the id of the call it answers; "
                                                "a trailing run of tool messages continues "
                                                "the run parked on those calls."),
    Field("tool_calls", Array(Map(Any())), description="role assistant: the calls it made "
                                                       "(history; not replayed)."),
    name="OpenAIMessage",
)

OpenAITool = Obj(
    Field("type", String(enum=("function",)), required=True),
    Field("function", Obj(
        Field("name", String(), required=True),
        Field("description", String()),
        Field("parameters", Map(Any()), description="The JSON Schema of the arguments."),
        Field("strict", Boolean(), description="Accepted; the agent sees the schema."),
        name="OpenAIFunction"), required=True),
    name="OpenAITool",
)

ChatCompletionRequest = Obj(
    Field("model", String(min_length=1), required=True,
          description="A backend name (claude, codex, gemini, qwen, ...), backend/model-id, or "
                      "a vendor model id mapped by prefix (claude-*, gpt-* and o*, gemini-*, "
                      "qwen*).",
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
    Field("response_format", Obj(
        Field("type", String(enum=("text", "json_object", "json_schema")), required=True,
              description="json_schema: the reply is JSON valid against json_schema.schema; "
                          "json_object: any JSON object; text: plain text (as when absent)."),
        Field("json_schema", Obj(
            Field("name", String()),
            Field("description", String()),
            Field("schema", Map(Any()), description="The JSON Schema of the reply (absent: "
                                                    "any JSON object)."),
            Field("strict", Boolean(), description="Accepted; the reply is always checked."),
            name="OpenAIJsonSchemaFormat"), description="Required with type json_schema."),
        name="OpenAIResponseFormat"),
          description="Structured output: the reply's content is the JSON text, checked "
                      "against the schema."),
    Field("tools", Array(OpenAITool), description="The client's functions: the agent may "
                                                  "call them (README: Client tools); the "
                                                  "reply then ends with tool_calls."),
    Field("tool_choice", OneOf(String(enum=("auto", "none", "required")), Obj(
        Field("type", String(enum=("function",)), required=True),
        Field("function", Obj(Field("name", String(), required=True),
                              name="OpenAIToolChoiceFunction"), required=True),
        name="OpenAINamedToolChoice")),
          description="auto (default), none (the tools are not offered), required or a named "
                      "function (asked for in the prompt; a named one is the only one "
                      "offered)."),
    Field("parallel_tool_calls", Boolean(), description="Accepted; the agent decides."),
    name="ChatCompletionRequest",
    description="OpenAI Chat Completions request. Fields not listed here (seed, "
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

# The blocks a Messages history may hold; anthropic.py says what becomes of each.
ANTHROPIC_INPUT_BLOCKS = ("text", "tool_use", "tool_result", "thinking", "redacted_thinking")
# Fields a block of each type must carry (beyond ``type``), as the real API requires them.
_BLOCK_NEEDS = {"text": ("text",), "tool_use": ("id", "name"), "tool_result": ("tool_use_id",)}


def _input_block_type(block_type: str) -> Optional[str]:
    if block_type in ANTHROPIC_INPUT_BLOCKS:
        return None
    if block_type in ("image", "document"):
        return ("%s blocks are not supported: the backend CLIs take text only; send the %s's "
                "content as a text block" % (block_type, block_type))
    return "expected one of %s, got %r" % (", ".join(ANTHROPIC_INPUT_BLOCKS), block_type[:40])


def _blocks_complete(content: object) -> Problem:
    """Each block has the fields its type needs (``text`` for a text block, ...)."""
    if isinstance(content, str):
        return None
    for index, block in enumerate(content):
        for name in _BLOCK_NEEDS.get(block["type"], ()):
            if name not in block:
                return ("[%d].%s" % (index, name),
                        "field required (a %s block has %s)" % (block["type"], name))
    return None


AnthropicInputBlock = Obj(
    Field("type", String(), required=True, check=_input_block_type,
          description="text; tool_use and tool_result (rendered as text in the transcript); "
                      "thinking and redacted_thinking (dropped). image and document are "
                      "refused.", example="text"),
    Field("text", String(), description="text: the text."),
    Field("id", String(), description="tool_use: the call's id."),
    Field("name", String(), description="tool_use: the tool's name."),
    Field("input", Any(), description="tool_use: the tool's input."),
    Field("tool_use_id", String(), description="tool_result: the id of the call it answers."),
    Field("content", OneOf(String(), Array(AnthropicTextBlock)),
          description="tool_result: its output, a string or text blocks."),
    Field("is_error", Boolean(), description="tool_result: the tool failed."),
    name="AnthropicInputBlock",
    description="A content block of a request message. Other fields (cache_control, "
                "thinking, signature, data, citations, ...) are ignored.",
)

AnthropicMessage = Obj(
    Field("role", String(enum=("user", "assistant", "system")), required=True,
          description="system messages, anywhere in the list, join the system prompt."),
    Field("content", OneOf(String(), Array(AnthropicInputBlock)), required=True,
          check=_blocks_complete, description="A string or an array of content blocks."),
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
    Field("tools", Array(Obj(
        Field("name", String(), required=True),
        Field("description", String()),
        Field("input_schema", Map(Any()), description="The JSON Schema of the tool's input."),
        Field("type", String(), description="Server tools (web_search_..., bash_...) say "
                                            "their type; they are ignored."),
        name="AnthropicTool")),
          description="Ignored (the agent uses its own tools) unless tool_choice forces one."),
    Field("tool_choice", Obj(
        Field("type", String(enum=("auto", "any", "tool", "none")), required=True),
        Field("name", String(), description="type tool: the tool's name."),
        Field("disable_parallel_tool_use", Boolean(), description="Accepted and ignored."),
        name="AnthropicToolChoice"),
          description="Structured output: type tool (or any, with one tool) makes the reply "
                      "one tool_use block of that tool whose input is the backend's JSON "
                      "answer, valid against the tool's input_schema. auto, none: ignored."),
    name="MessagesRequest",
    description="Anthropic Messages request. Fields not listed here (thinking, ...) are "
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

TOKEN_COUNT = Integer(minimum=0)             # a count of tokens (or of anything)

TokenUsage = Obj(
    Field("input_tokens", TOKEN_COUNT, required=True),
    Field("output_tokens", TOKEN_COUNT, required=True),
    Field("cached_tokens", TOKEN_COUNT),
    Field("reasoning_tokens", TOKEN_COUNT),
    name="TokenUsage",
)

_RUN_RESULT_FIELDS = (
    Field("backend", String(), required=True),
    Field("exit_code", Integer(), required=True,
          description="The CLI's exit status; -1 when it was killed (timeout, cancel)."),
    Field("duration_ms", TOKEN_COUNT, required=True),
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

TaskResult = Obj(
    Field("id", String(), description="The task's id; absent when it was sent none."),
    Field("name", String(), description="The task's name; absent when it was sent none."),
    *_RUN_RESULT_FIELDS,
    name="TaskResult",
)

ParallelResponse = Obj(
    Field("total_tasks", TOKEN_COUNT, required=True),
    Field("completed", TOKEN_COUNT, required=True),
    Field("failed", TOKEN_COUNT, required=True),
    Field("cancelled", TOKEN_COUNT, required=True,
          description="Tasks stopped or never started (fail_fast, client gone); completed + "
                      "failed + cancelled = total_tasks."),
    Field("total_duration_ms", TOKEN_COUNT, required=True),
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
    Field("total_steps", TOKEN_COUNT, required=True),
    Field("completed_steps", TOKEN_COUNT, required=True),
    Field("failed_step", TOKEN_COUNT, required=True,
          description="Number of the first failed step; 0 when none failed."),
    Field("total_duration_ms", TOKEN_COUNT, required=True),
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
    Field("total_duration_ms", TOKEN_COUNT, required=True),
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

BackendDiagnosis = Obj(
    Field("name", String(), required=True),
    Field("available", Boolean(), required=True,
          description="The CLI is on the server's PATH and the configuration enables it."),
    Field("enabled", Boolean(), required=True, description="backends.<name>.enabled."),
    Field("installed", Boolean(), required=True, description="The CLI is on the server's PATH."),
    Field("command", String(), required=True, description="Its path (\"\" when not found)."),
    Field("version", String(), required=True,
          description="The first line of its --version (\"\" when not found or broken)."),
    Field("tested_versions", String(), required=True,
          description="The oldest - newest release the end-to-end tests passed on."),
    Field("version_tested", Boolean(), required=True, nullable=True,
          description="Whether the version is inside tested_versions (null: unknown)."),
    Field("authenticated", Boolean(), required=True, nullable=True,
          description="Whether the CLI can authenticate to its model API, from its own "
                      "status command or its settings; null when nothing but a model call "
                      "would tell (no model call is made)."),
    Field("auth", String(), required=True,
          description="How it authenticates, or why it cannot (no secret in it)."),
    Field("usable", Boolean(), required=True,
          description="Enabled, installed, working, not known to be unable to "
                      "authenticate, and its runs can be set up on this server."),
    Field("reason", String(), required=True,
          description="Why it is not usable, with the fix (\"\" when usable)."),
    Field("warnings", Array(String()), required=True,
          description="What does not stop it (a version outside the tested range)."),
    name="BackendDiagnosis",
)

_BACKEND_EXAMPLE = {"enabled": True, "installed": True, "version_tested": True,
                    "warnings": [], "reason": ""}

BackendsResponse = Obj(
    Field("backends", Array(BackendDiagnosis), required=True),
    name="BackendsResponse",
    example={"backends": [
        dict(_BACKEND_EXAMPLE, name="claude", available=True,
             command="/usr/local/bin/claude", version="2.1.197 (Claude Code)",
             tested_versions="2.1.197 - 2.1.332", authenticated=True,
             auth="logged in (ANTHROPIC_API_KEY)", usable=True),
        dict(_BACKEND_EXAMPLE, name="codex", available=True, command="/usr/local/bin/codex",
             version="codex-cli 0.169.0", tested_versions="0.169.0 - 0.171.0",
             authenticated=False, auth="not logged in (codex login status)", usable=False,
             reason="not authenticated: not logged in (codex login status); to fix: run "
                    "`codex login` as the account running clinvk, or set CODEX_API_KEY in "
                    "its environment"),
        dict(_BACKEND_EXAMPLE, name="gemini", available=False, installed=False, command="",
             version="", tested_versions="0.61.0 - 0.61.0", version_tested=None,
             authenticated=None, auth="", usable=False,
             reason="not installed: no 'gemini' on PATH (npm install -g @google/gemini-cli)")]},
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
    Field("turn_count", TOKEN_COUNT),
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
    Field("last_reply", String(),
          description="The backend's last reply, as the store keeps it (its end when long); "
                      "only here, never in lists."),
    name="SessionDetail",
    example=dict(Session.example, metadata={"project": "demo"},
                 last_reply="The auth changes look right; two nits below."),
)

SessionsList = Obj(
    Field("sessions", Array(Session), required=True, description="Most recently used first."),
    Field("total", TOKEN_COUNT, required=True, description="Matching sessions before limit/offset."),
    Field("limit", TOKEN_COUNT, required=True,
          description="The limit applied: the request's, else %d; 0 = none." % SESSIONS_LIMIT),
    Field("offset", TOKEN_COUNT, required=True),
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
          description="ok; degraded = some backend CLI missing, or server.store not "
                      "answering; unhealthy = session store unusable (HTTP 503)."),
    Field("version", String(), required=True),
    Field("uptime", String(), required=True, example="2m31s"),
    Field("uptime_millis", TOKEN_COUNT, required=True),
    Field("backends", Array(BackendStatus), required=True),
    Field("session_store", Obj(Field("available", Boolean(), required=True),
                               Field("session_count", TOKEN_COUNT, required=True),
                               Field("error", String(), required=True,
                                     description="Why the store cannot be used; \"\" when "
                                                 "it can."),
                               name="SessionStoreHealth"), required=True),
    Field("shared_store", Obj(
        Field("url", String(), required=True, description="server.store, without password."),
        Field("available", Boolean(), required=True),
        Field("error", String(), required=True,
              description="Why the store does not answer; \"\" when it does."),
        Field("runners", Array(Obj(
            Field("id", String(), required=True),
            Field("worker", String(), required=True,
                  description="server.worker_name (default: its host name): the sessions "
                              "whose turns it ran continue there."),
            Field("backends", Array(String()), required=True,
                  description="The backends whose CLI it has installed."),
            Field("capacity", TOKEN_COUNT, required=True, description="Its run slots for jobs (0: it runs none)."),
            Field("busy", TOKEN_COUNT, required=True, description="Jobs holding them."),
            Field("seen", TOKEN_COUNT, required=True,
                  description="Its last heartbeat, in seconds since the epoch."),
            name="StoreRunner")), required=True,
              description="The processes on the store: clinvk worker, clinvk serve."),
        name="SharedStoreHealth"),
          description="With server.store only; the status is degraded while it does not "
                      "answer."),
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
    Field("created", TOKEN_COUNT, required=True),
    Field("model", String(), required=True),
    Field("choices", Array(Obj(
        Field("index", TOKEN_COUNT, required=True),
        Field("message", Obj(Field("role", String(enum=("assistant",)), required=True),
                             Field("content", String(), required=True, nullable=True),
                             Field("tool_calls", Array(Obj(
                                 Field("id", String(), required=True),
                                 Field("type", String(enum=("function",)), required=True),
                                 Field("function", Obj(
                                     Field("name", String(), required=True),
                                     Field("arguments", String(), required=True),
                                     name="OpenAIFunctionCall"), required=True),
                                 name="OpenAIToolCall")),
                                   description="The client's tools the agent called (the "
                                               "run waits for their results)."),
                             name="OpenAIAssistantMessage"), required=True),
        Field("finish_reason", String(enum=("stop", "length", "content_filter",
                                            "tool_calls")), required=True),
        name="OpenAIChoice")), required=True),
    Field("usage", Obj(Field("prompt_tokens", TOKEN_COUNT, required=True),
                       Field("completion_tokens", TOKEN_COUNT, required=True),
                       Field("total_tokens", TOKEN_COUNT, required=True),
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
    Field("created", TOKEN_COUNT, required=True),
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
    Field("content", Array(Obj(
        Field("type", String(enum=("text", "tool_use")), required=True),
        Field("text", String(), description="text: the reply."),
        Field("id", String(), description="tool_use: toolu_..."),
        Field("name", String(), description="tool_use: the forced tool."),
        Field("input", Any(), description="tool_use: the reply, valid against the tool's "
                                          "input_schema."),
        name="AnthropicContentBlock")), required=True,
          description="One text block, or with a forced tool one tool_use block."),
    Field("model", String(), required=True),
    Field("stop_reason", String(enum=("end_turn", "tool_use", "max_tokens", "stop_sequence",
                                      "refusal")),
          required=True, nullable=True),
    Field("stop_sequence", String(), required=True, nullable=True),
    Field("usage", Obj(Field("input_tokens", TOKEN_COUNT, required=True),
                       Field("output_tokens", TOKEN_COUNT, required=True),
                       Field("cache_creation_input_tokens", TOKEN_COUNT, nullable=True),
                       Field("cache_read_input_tokens", TOKEN_COUNT, nullable=True),
                       name="AnthropicUsage"), required=True),
    name="AnthropicMessageResponse",
    example={"id": "msg_0123456789abcdef", "type": "message", "role": "assistant",
             "content": [{"type": "text", "text": "Hello!"}], "model": "claude",
             "stop_reason": "end_turn", "stop_sequence": None,
             "usage": {"input_tokens": 9, "output_tokens": 3}},
)

CountTokensResponse = Obj(
    Field("input_tokens", TOKEN_COUNT, required=True,
          description="An estimate: the backends expose no tokenizer."),
    name="CountTokensResponse",
    example={"input_tokens": 12},
)
