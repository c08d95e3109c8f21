"""The Anthropic-compatible API (``/anthropic/v1``): Messages and token counting, so the
Anthropic SDKs work with ``base_url=http://HOST:PORT/anthropic``, and also with
``.../anthropic/v1`` (the SDK then requests ``/anthropic/v1/v1/messages``, served too).

What a request may carry and what happens to it:
- ``model`` picks the backend (``models.resolve_model``); the reply echoes it.
- ``messages`` and ``system`` become the prompt and system prompt (``compat``). A message
  with ``role: "system"`` (the real API takes them anywhere; Claude Code 2.1.x ends
  ``messages`` with one) joins the system prompt after the top-level ``system``, in order,
  each separated by a blank line: it instructs, it is not a turn of the transcript. The last
  message that is not a system message must be a user message.
- Content is a string or blocks. ``text`` is the text; ``tool_use`` and ``tool_result``
  (a history written by a model that used tools) become text in the transcript::

      <tool_use id="toolu_1" name="Read">
      {"file_path": "a.txt"}
      </tool_use>
      <tool_result tool_use_id="toolu_1">
      the file's text
      </tool_result>

  (``is_error="true"`` on a failed tool's result); ``thinking`` and ``redacted_thinking`` are
  dropped (a model's private reasoning, signed for Anthropic's models only). ``image`` and
  ``document`` blocks, also inside a ``tool_result``, are a 400 naming the block: the
  backend CLIs take text only. ``cache_control`` and ``citations`` on any block are ignored.
- ``max_tokens`` is required (>= 1) as in the real API, and otherwise ignored.
- ``stream`` is honoured; ``metadata.user_id`` is stored with the clinvk session.
- Accepted and ignored: ``stop_sequences``, ``temperature``, ``top_p``, ``top_k``, the
  ``anthropic-version`` and ``anthropic-beta`` headers, the ``?beta=true`` query Claude Code
  adds, and every other field (``thinking``, ``context_management``,
  ``output_config.effort``, ...).
- ``tools`` with ``tool_choice`` absent, ``auto`` or ``any`` (with several tools) are the
  client's tools, bridged to the agent (``toolcalls``): a reply that calls them ends with
  their ``tool_use`` blocks (``stop_reason: "tool_use"``), and a last user message whose
  ``tool_result`` blocks answer those calls continues the parked run. ``tool_result`` blocks of
  calls the bridge did not make are history, as below. ``none``: a plain run. Without a
  ``tool_choice``, on a backend the bridge cannot give tools (Claude Code as a client sends
  its tools with every turn), the tools are ignored and the agent uses its own.
- A forced tool (``tool_choice`` ``{"type": "tool", "name"}``, or ``{"type": "any"}`` with
  exactly one tool) asks for structured output (``structured.from_anthropic``), as
  LangChain's and instructor's Anthropic structured output do: the tool's ``input_schema``
  is the schema, and the reply is one ``tool_use`` block of that tool whose ``input`` is the
  backend's JSON answer, checked against it (one that does not match is a failed run);
  ``stop_reason`` is ``tool_use``.
- Claude Code's request body (~80 KB with its ~24 tool definitions) is well under
  ``server.max_request_body_bytes`` (10 MiB by default).
Errors have Anthropic's shape: ``{"type": "error", "error": {"type", "message"}}``.
"""

from __future__ import annotations

import json
from typing import Any, Dict, Iterator, List, Optional, Tuple

from .. import events as ev
from . import compat, errors, models, openapi, sse, structured, toolcalls
from .app import App
from .context import Context
from .http import Response, close_iterator, json_response
from .openapi import ANTHROPIC

# Anthropic's error types by status (https://docs.anthropic.com/en/api/errors).
_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error",
                403: "permission_error", 404: "not_found_error",
                409: "invalid_request_error", 413: "request_too_large",
                415: "invalid_request_error", 422: "invalid_request_error",
                429: "rate_limit_error", 503: "overloaded_error", 529: "overloaded_error",
                # A backend run that failed (compat.FAILED_RUN_STATUS): the server's side.
                424: "api_error"}

# The path the SDK requests when its base_url already ends in /v1 (as the seeds write it).
_DOUBLED_V1 = "/anthropic/v1/v1/"


def error_body(err: errors.ApiError) -> Dict[str, Any]:
    """``{"type": "error", "error": {"type", "message"}}`` as the Anthropic API writes it."""
    kind = _ERROR_TYPES.get(err.status, "api_error" if err.status >= 500
                            else "invalid_request_error")
    return {"type": "error", "error": {"type": kind, "message": err.message}}


def register(app: App) -> None:
    """Add the /anthropic/v1 routes (and their /anthropic/v1/v1 twins) and Anthropic-shaped
    errors for every path under /anthropic/."""
    app.error_styles.register(ANTHROPIC, error_body, "/anthropic/")
    handlers = {"anthropicCreateMessage": create_message,
                "anthropicCountTokens": count_tokens}
    for spec in openapi.DEFAULT_ROUTES:
        handler = handlers.get(spec.operation_id)
        if handler is not None:
            app.add_route(spec, handler)
            app.add_route(spec, handler, path=spec.path.replace("/anthropic/v1/", _DOUBLED_V1),
                          documented=False)


def conversation(body: Dict[str, Any]) -> compat.Conversation:
    """The system prompt (``system``, then each system message in order, joined by a blank
    line) and the other messages as turns, their blocks rendered as text."""
    system = [compat.content_text(body.get("system"))]
    turns: List[compat.Turn] = []
    for index, message in enumerate(body["messages"]):
        text = message_text(message["content"])
        if message["role"] == "system":
            system.append(text)
        else:
            turns.append(compat.Turn(message["role"], text, index))
    return compat.Conversation("\n\n".join(s for s in system if s.strip()), turns)


def message_text(content: Any) -> str:
    """A message's content as text: a string as is, blocks rendered (``block_text``) and
    joined by a newline; blocks that render to nothing leave no line."""
    if isinstance(content, str):
        return content
    return "\n".join(text for text in map(block_text, content) if text)


def block_text(block: Dict[str, Any]) -> str:
    """One block as the transcript shows it (format in the module docstring); "" for the
    blocks that are dropped (thinking, redacted_thinking)."""
    kind = block["type"]
    if kind == "text":
        return block["text"]
    if kind == "tool_use":
        return _tagged("tool_use", {"id": block["id"], "name": block["name"]},
                       json.dumps(block.get("input"), ensure_ascii=False, sort_keys=True))
    if kind == "tool_result":
        attributes = {"tool_use_id": block["tool_use_id"]}
        if block.get("is_error"):
            attributes["is_error"] = "true"
        return _tagged("tool_result", attributes, compat.content_text(block.get("content")))
    return ""


def _tagged(name: str, attributes: Dict[str, str], body: str) -> str:
    # Attribute values as JSON strings, so a quote or ">" in an id cannot end the tag early.
    attrs = "".join(' %s=%s' % (k, json.dumps(v, ensure_ascii=False))
                    for k, v in attributes.items())
    return "<%s%s>\n%s\n</%s>" % (name, attrs, body, name)


def count_tokens(ctx: Context) -> Response:
    """An estimate: ceil(characters / 4) over the system prompt (system messages included)
    and every message's text as ``conversation`` renders it. Tool definitions are not
    counted: the backend never receives them."""
    body = ctx.json_body()
    models.resolve_model(body["model"], ctx.app.cfg)
    conv = conversation(body)
    return json_response({"input_tokens": compat.estimate_tokens(
        conv.system, *(t.text for t in conv.turns))})


def create_message(ctx: Context) -> Any:
    body = ctx.json_body()
    user_id = (body.get("metadata") or {}).get("user_id")
    metadata = {"user_id": user_id} if user_id else None
    results = tool_results(body["messages"])
    if results:
        return toolcalls.answer_results(
            ctx, results, "messages[%d].content" % (len(body["messages"]) - 1),
            lambda run: _bridged(ctx, body, run, ""))
    output = structured.from_anthropic(body)
    tools = tool_request(body) if output is None else None
    if tools is not None and tools.bridged and (
            body.get("tool_choice") or toolcalls.can_bridge(ctx, body["model"])):
        run, sent = toolcalls.start(ctx, "anthropic", body["model"], conversation(body), tools,
                                    "toolu_", metadata, stream=body["stream"])
        return _bridged(ctx, body, run, sent)
    run = compat.prepare(ctx, "anthropic", body["model"], conversation(body),
                         stream=body["stream"], metadata=metadata, output=output)
    message_id = compat.new_id("msg_")
    if not body["stream"]:
        reply = compat.complete(ctx, run)
        if run.output is not None:
            content = [dict(_tool_use_block(run.output.tool), input=json.loads(reply.text))]
        else:
            content = [{"type": "text", "text": reply.text}]
        return json_response(dict(message_head(message_id, body["model"]), content=content,
                                  stop_reason=_stop_reason(run.output), stop_sequence=None,
                                  usage=usage_body(reply.usage)),
                             headers=compat.session_headers(reply.session_id))
    session_id, pieces = compat.stream(ctx, run)
    return sse.response(message_events(message_id, body["model"], run.output, run.sent,
                                       pieces),
                        sse.PING_KEEPALIVE, compat.keepalive_secs(ctx),
                        compat.session_headers(session_id))


def _bridged(ctx: Context, body: Dict[str, Any], run: Any, sent: str) -> Any:
    """A round of a bridged run (toolcalls): text, then the client's tools the agent called
    as ``tool_use`` blocks (``stop_reason: "tool_use"``), whole or streamed."""
    message_id = compat.new_id("msg_")
    if not body["stream"]:
        done = toolcalls.complete(ctx, run, sent)
        content = [{"type": "text", "text": done.text}] if done.text or not done.calls else []
        content += [_called(call) for call in done.calls]
        return json_response(dict(message_head(message_id, body["model"]), content=content,
                                  stop_reason="tool_use" if done.calls else "end_turn",
                                  stop_sequence=None, usage=usage_body(done.usage)),
                             headers=compat.session_headers(run.session_id))
    return sse.response(message_events(message_id, body["model"], None, sent,
                                       toolcalls.pieces(ctx, run, sent)),
                        sse.PING_KEEPALIVE, compat.keepalive_secs(ctx),
                        compat.session_headers(run.session_id))


def _called(call: Any) -> Dict[str, Any]:
    return {"type": "tool_use", "id": call.id, "name": call.name, "input": call.arguments}


def tool_request(body: Dict[str, Any]) -> toolcalls.ToolRequest:
    """The request's client tools (server tools, which say their ``type``, are left out) and
    ``tool_choice`` (any: required)."""
    tools = [toolcalls.tool_spec(t["name"], t.get("description"), t.get("input_schema"),
                                 "tools[%d]" % i)
             for i, t in enumerate(body.get("tools") or [])
             if t.get("type") in (None, "custom")]
    choice = (body.get("tool_choice") or {}).get("type") or toolcalls.AUTO
    return toolcalls.checked(tools, toolcalls.REQUIRED if choice == "any" else choice,
                             "tools")


def tool_results(messages: List[Dict[str, Any]]) -> Dict[str, Tuple[str, bool]]:
    """The ``tool_result`` blocks of the last message when it is a user message that answers
    calls the bridge made, by ``tool_use_id`` ({} otherwise: results of calls made elsewhere,
    such as a Claude Code history, are rendered as history)."""
    last = messages[-1]
    if last["role"] != "user" or isinstance(last["content"], str):
        return {}
    results = {block["tool_use_id"]: (compat.content_text(block.get("content")),
                                      bool(block.get("is_error")))
               for block in last["content"] if block["type"] == "tool_result"}
    return results if any(toolcalls.is_bridge_id(i) for i in results) else {}


def _tool_use_block(name: str) -> Dict[str, Any]:
    """The forced tool's call, its input still empty: the reply to a structured request."""
    return {"type": "tool_use", "id": compat.new_id("toolu_"), "name": name, "input": {}}


def _stop_reason(output: Optional[structured.OutputSpec]) -> str:
    return "tool_use" if output is not None else "end_turn"


def message_head(message_id: str, model: str) -> Dict[str, Any]:
    return {"id": message_id, "type": "message", "role": "assistant", "model": model}


def usage_body(usage: ev.Usage) -> Dict[str, Any]:
    """Anthropic's usage: input_tokens counts the uncached input only (cache reads are
    cache_read_input_tokens); cache writes are not reported apart by every backend."""
    cached = min(usage.cached_tokens, usage.input_tokens)
    return {"input_tokens": usage.input_tokens - cached, "output_tokens": usage.output_tokens,
            "cache_creation_input_tokens": None, "cache_read_input_tokens": cached}


def _event(data: Dict[str, Any]) -> bytes:
    return sse.frame(data, data["type"])


def message_events(message_id: str, model: str, output: Optional[structured.OutputSpec],
                   sent: str, pieces: Iterator[Any]) -> Iterator[bytes]:
    """message_start, content_block_start, a text_delta per piece as the backend produced it,
    content_block_stop, message_delta (stop_reason, usage), message_stop. A round of a
    bridged run that ends on tool calls (``toolcalls.ToolCalls``) adds a ``tool_use`` block
    per call, each input one ``input_json_delta``, and stop_reason ``tool_use``. With a forced tool
    (structured output) the block is that tool's ``tool_use``, started once its input is
    known and sent as one ``input_json_delta``, and stop_reason is ``tool_use``. A failure
    ends the stream with an ``error`` event (the SDKs raise APIStatusError)."""
    try:
        start_usage = {"input_tokens": compat.estimate_tokens(sent), "output_tokens": 0}
        yield _event({"type": "message_start", "message": dict(
            message_head(message_id, model), content=[], stop_reason=None, stop_sequence=None,
            usage=start_usage)})
        if output is None:
            yield _event({"type": "content_block_start", "index": 0,
                          "content_block": {"type": "text", "text": ""}})
        for piece in pieces:
            if isinstance(piece, compat.Delta) and output is not None:
                yield _event({"type": "content_block_start", "index": 0,
                              "content_block": _tool_use_block(output.tool)})
                yield _event({"type": "content_block_delta", "index": 0, "delta": {
                    "type": "input_json_delta", "partial_json": piece.text}})
            elif isinstance(piece, compat.Delta):
                yield _event({"type": "content_block_delta", "index": 0,
                              "delta": {"type": "text_delta", "text": piece.text}})
            elif isinstance(piece, compat.Failed):
                yield _event(error_body(piece.error))
            elif isinstance(piece, toolcalls.ToolCalls):
                yield _event({"type": "content_block_stop", "index": 0})
                for index, call in enumerate(piece.calls, 1):
                    yield _event({"type": "content_block_start", "index": index,
                                  "content_block": dict(_called(call), input={})})
                    yield _event({"type": "content_block_delta", "index": index, "delta": {
                        "type": "input_json_delta", "partial_json": call.arguments_json}})
                    yield _event({"type": "content_block_stop", "index": index})
                yield _event({"type": "message_delta",
                              "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                              "usage": usage_body(piece.usage)})
                yield _event({"type": "message_stop"})
            else:
                yield _event({"type": "content_block_stop", "index": 0})
                yield _event({"type": "message_delta",
                              "delta": {"stop_reason": _stop_reason(output), "stop_sequence": None},
                              "usage": usage_body(piece.usage)})
                yield _event({"type": "message_stop"})
    finally:
        close_iterator(pieces)
