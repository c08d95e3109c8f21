"""The shapes of the OpenAI Responses API (``/openai/v1/responses``): its request body and
every body it answers with, declared once for validation and for /openapi.json (built from
the vocabulary in ``schema.py``, as ``api_shapes.py`` is)."""

from __future__ import annotations

from typing import Optional

from ..schema import Any, Array, Boolean, Field, Integer, Map, Number, Obj, OneOf, String
from .api_shapes import TOKEN_COUNT

# The content parts and item types a Responses ``input`` may hold (what they become: the
# module docstring of server/responses.py).
RESPONSES_TEXT_PARTS = ("input_text", "output_text")
RESPONSES_ROLES = ("user", "assistant", "system", "developer")


def _responses_part_type(part_type: str) -> Optional[str]:
    if part_type in RESPONSES_TEXT_PARTS:
        return None
    return ("only text content parts are supported (%s): the backend CLIs take text only, "
            "got %r" % (", ".join(RESPONSES_TEXT_PARTS), part_type[:40]))


RESPONSES_ITEM_TYPES = ("message", "function_call", "function_call_output")


def _responses_item_type(item_type: str) -> Optional[str]:
    if item_type in RESPONSES_ITEM_TYPES:
        return None
    return ("only message, function_call and function_call_output items are supported, got "
            "%r: reasoning items and the calls of built-in tools cannot be replayed to an "
            "agent that runs its own tools" % item_type[:40])


ResponsesContentPart = Obj(
    Field("type", String(), required=True, check=_responses_part_type,
          description="input_text or output_text.", example="input_text"),
    Field("text", String(), required=True),
    name="ResponsesContentPart",
)

ResponsesInputItem = Obj(
    Field("type", String(), default="message", check=_responses_item_type,
          description="message (the default when absent), or a client tool's "
                      "function_call and its function_call_output (the tool bridge)."),
    Field("role", String(enum=RESPONSES_ROLES),
          description="A message's role (required): system and developer messages join the "
                      "system prompt."),
    Field("content", OneOf(String(), Array(ResponsesContentPart)),
          description="A message's content (required): a string or an array of text parts."),
    Field("call_id", String(min_length=1),
          description="function_call and function_call_output (required): the call's id."),
    Field("output", OneOf(String(), Array(Any())),
          description="function_call_output (required): the tool's result."),
    Field("name", String(), description="function_call: the tool's name."),
    Field("arguments", String(), description="function_call: the arguments, JSON text."),
    name="ResponsesInputItem",
)

_IGNORED = "Accepted and ignored."

ResponsesRequest = Obj(
    Field("model", String(min_length=1), required=True,
          description="A backend name (claude, codex, gemini), backend/model-id, or a vendor "
                      "model id mapped by prefix (claude-*, gpt-* and o*, gemini-*).",
          example="claude"),
    Field("input", OneOf(String(), Array(ResponsesInputItem, min_items=1)), required=True,
          description="A string (one user message) or a list of message items."),
    Field("instructions", String(), description="Goes to the backend's system prompt."),
    Field("previous_response_id", String(min_length=1),
          description="Continue the clinvk session of that stored response: only this "
                      "request's input is sent to the backend."),
    Field("store", Boolean(), default=True,
          description="Keep the response for GET, input_items and previous_response_id. "
                      "false: the run keeps no clinvk session either."),
    Field("stream", Boolean(), default=False, description="Answer with server-sent events."),
    Field("background", Boolean(), default=False,
          description="Answer at once (status in_progress); poll GET, or cancel. Needs store."),
    Field("metadata", Map(String()), description="Stored with the response and the clinvk "
                                                 "session."),
    Field("text", Map(Any()), description="format: {\"type\": \"text\"} (default)."),
    Field("temperature", Number(), description=_IGNORED),
    Field("top_p", Number(), description=_IGNORED),
    Field("max_output_tokens", Integer(minimum=1), description=_IGNORED),
    Field("reasoning", Map(Any()), description=_IGNORED),
    Field("tools", Array(Any()),
          description="Tools of type function are the client's own, bridged to the agent "
                      "(README \"Client tools\"): a reply that calls them ends with "
                      "function_call items. Other tool types are ignored."),
    Field("tool_choice", Any(), description="auto, none, required, or {\"type\": "
                                            "\"function\", \"name\": ...}."),
    Field("parallel_tool_calls", Boolean(), description=_IGNORED),
    Field("truncation", String(), description=_IGNORED),
    Field("include", Array(String()), description=_IGNORED),
    Field("user", String(), description=_IGNORED),
    name="ResponsesRequest",
    description="OpenAI Responses request. Fields not listed here (prompt_cache_key, "
                "safety_identifier, service_tier, stream_options, ...) are ignored; "
                "conversation and prompt are refused.",
    refuses={"conversation": "the Conversations API is not supported: continue a "
                             "conversation with previous_response_id",
             "prompt": "stored prompt templates are not supported: send the text as input "
                       "(and instructions)"},
    example={"model": "claude", "instructions": "Be brief.", "input": "Hello!"},
)

ResponsePath = Obj(
    # No example: no example value can name a response of the reader's.
    Field("id", String(min_length=1), required=True, description="Response id (resp_...)."),
    name="ResponsePath",
)

InputItemsQuery = Obj(
    Field("limit", Integer(minimum=1, maximum=100), default=20,
          description="At most this many items (1 to 100)."),
    Field("order", String(enum=("asc", "desc")), default="desc",
          description="desc: newest first (the default), asc: oldest first."),
    Field("after", String(min_length=1), description="List the items after this item id."),
    Field("include", Array(String()), description=_IGNORED),
    name="InputItemsQuery",
)

ResponseTextPart = Obj(
    Field("type", String(enum=("output_text", "input_text")), required=True),
    Field("text", String(), required=True),
    Field("annotations", Array(Any()), description="Always empty (output_text)."),
    name="ResponseTextPart",
)

ResponseMessageItem = Obj(
    Field("id", String(), required=True),
    Field("type", String(enum=RESPONSES_ITEM_TYPES), required=True),
    Field("role", String(enum=RESPONSES_ROLES), description="A message's role."),
    Field("status", String(enum=("in_progress", "completed", "incomplete")), required=True),
    Field("content", Array(ResponseTextPart), description="A message's text parts."),
    Field("call_id", String(), description="function_call, function_call_output: the id the "
                                            "client answers with."),
    Field("name", String(), description="function_call: the client tool called."),
    Field("arguments", String(), description="function_call: its arguments, JSON text."),
    Field("output", OneOf(String(), Array(Any())),
          description="function_call_output: the result."),
    name="ResponseMessageItem",
)

ResponseUsage = Obj(
    Field("input_tokens", TOKEN_COUNT, required=True),
    Field("input_tokens_details", Obj(Field("cached_tokens", TOKEN_COUNT, required=True),
                                      name="ResponseInputTokensDetails"), required=True),
    Field("output_tokens", TOKEN_COUNT, required=True),
    Field("output_tokens_details", Obj(Field("reasoning_tokens", TOKEN_COUNT, required=True),
                                       name="ResponseOutputTokensDetails"), required=True),
    Field("total_tokens", TOKEN_COUNT, required=True),
    name="ResponseUsage",
)

RESPONSE_STATUSES = ("completed", "failed", "in_progress", "cancelled", "queued")

OpenAIResponse = Obj(
    Field("id", String(), required=True),
    Field("object", String(enum=("response",)), required=True),
    Field("created_at", TOKEN_COUNT, required=True),
    Field("status", String(enum=RESPONSE_STATUSES), required=True),
    Field("model", String(), required=True, description="The request's model, echoed."),
    Field("output", Array(ResponseMessageItem), required=True,
          description="One assistant message with one output_text part, then the "
                      "function_call items of client tools the agent called; empty until "
                      "the run completes."),
    Field("usage", ResponseUsage, nullable=True, required=True),
    Field("error", Obj(Field("code", String(), required=True),
                       Field("message", String(), required=True), name="ResponseError"),
          nullable=True, required=True, description="Why a failed response failed."),
    Field("instructions", String(), nullable=True, required=True),
    Field("metadata", Map(String()), required=True),
    Field("previous_response_id", String(), nullable=True, required=True),
    Field("store", Boolean(), required=True),
    Field("background", Boolean(), required=True),
    Field("text", Map(Any()), required=True),
    Field("tools", Array(Any()), required=True,
          description="The request's function tools (bridged to the agent)."),
    name="OpenAIResponse",
    description="Also carries the fields the SDKs expect (incomplete_details, "
                "parallel_tool_calls, tool_choice, temperature, top_p, truncation, ...).",
    example={"id": "resp_0123456789abcdef01234567", "object": "response",
             "created_at": 1735689600, "status": "completed", "model": "claude",
             "output": [{"id": "msg_0123456789abcdef01234567", "type": "message",
                         "role": "assistant", "status": "completed",
                         "content": [{"type": "output_text", "text": "Hello!",
                                      "annotations": []}]}],
             "usage": {"input_tokens": 9, "input_tokens_details": {"cached_tokens": 0},
                       "output_tokens": 3, "output_tokens_details": {"reasoning_tokens": 0},
                       "total_tokens": 12},
             "error": None, "instructions": None, "metadata": {},
             "previous_response_id": None, "store": True, "background": False,
             "text": {"format": {"type": "text"}}, "tools": []},
)

ResponseDeleted = Obj(
    Field("id", String(), required=True),
    Field("object", String(enum=("response",)), required=True),
    Field("deleted", Boolean(), required=True),
    name="ResponseDeleted",
    example={"id": "resp_0123456789abcdef01234567", "object": "response", "deleted": True},
)

ResponseInputItemList = Obj(
    Field("object", String(enum=("list",)), required=True),
    Field("data", Array(ResponseMessageItem), required=True),
    Field("first_id", String(), nullable=True, required=True),
    Field("last_id", String(), nullable=True, required=True),
    Field("has_more", Boolean(), required=True),
    name="ResponseInputItemList",
)
