"""The Anthropic-compatible API (``/anthropic/v1``): Messages and token counting, so the
Anthropic SDKs work with ``base_url=http://HOST:PORT/anthropic``, and also with
``.../anthropic/v1`` (the SDK then requests ``/anthropic/v1/v1/messages``, served too).

What a request may carry and what happens to it:
- ``model`` picks the backend (``compat.resolve_model``); the reply echoes it.
- ``messages`` and ``system`` become the prompt and system prompt (``compat``); content is a
  string or text blocks (any other block type is a 400 naming the block).
- ``max_tokens`` is required (>= 1) as in the real API, and otherwise ignored.
- ``stream`` is honoured; ``metadata.user_id`` is stored with the clinvk session.
- Accepted and ignored: ``stop_sequences``, ``temperature``, ``top_p``, ``top_k``, the
  ``anthropic-version`` and ``anthropic-beta`` headers, and every other field (``tools``,
  ``tool_choice``, ``thinking``, ...). The reply is one text block; ``stop_reason`` is
  ``end_turn``.
Errors have Anthropic's shape: ``{"type": "error", "error": {"type", "message"}}``.
"""

from __future__ import annotations

from typing import Any, Dict, Iterator

from .. import events as ev
from . import compat, errors, openapi, sse
from .app import App
from .context import Context
from .http import Response, close_iterator, json_response
from .openapi import ANTHROPIC

# Anthropic's error types by status (https://docs.anthropic.com/en/api/errors).
_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error",
                403: "permission_error", 404: "not_found_error",
                409: "invalid_request_error", 413: "request_too_large",
                415: "invalid_request_error", 429: "rate_limit_error",
                503: "overloaded_error", 529: "overloaded_error"}

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
    turns = [compat.Turn(m["role"], compat.content_text(m["content"]), i)
             for i, m in enumerate(body["messages"])]
    return compat.Conversation(compat.content_text(body.get("system")), turns)


def count_tokens(ctx: Context) -> Response:
    """An estimate: ceil(characters / 4) over the system prompt and every message's text."""
    body = ctx.json_body()
    compat.resolve_model(body["model"], ctx.app.cfg)
    conv = conversation(body)
    return json_response({"input_tokens": compat.estimate_tokens(
        conv.system, *(t.text for t in conv.turns))})


def create_message(ctx: Context) -> Any:
    body = ctx.json_body()
    user_id = (body.get("metadata") or {}).get("user_id")
    run = compat.prepare(ctx, "anthropic", body["model"], conversation(body),
                         stream=body["stream"], metadata={"user_id": user_id} if user_id else None)
    message_id = compat.new_id("msg_")
    if not body["stream"]:
        reply = compat.complete(ctx, run)
        return json_response(dict(message_head(message_id, body["model"]),
                                  content=[{"type": "text", "text": reply.text}],
                                  stop_reason="end_turn", stop_sequence=None,
                                  usage=usage_body(reply.usage)),
                             headers=compat.session_headers(reply.session_id))
    session_id, pieces = compat.stream(ctx, run)
    return sse.response(message_events(message_id, body["model"], run, pieces),
                        sse.PING_KEEPALIVE, compat.keepalive_secs(ctx),
                        compat.session_headers(session_id))


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


def message_events(message_id: str, model: str, run: compat.Run,
                   pieces: Iterator[Any]) -> Iterator[bytes]:
    """message_start, content_block_start, a text_delta per piece as the backend produced it,
    content_block_stop, message_delta (stop_reason, usage), message_stop. A failure ends the
    stream with an ``error`` event (the SDKs raise APIStatusError)."""
    try:
        start_usage = {"input_tokens": compat.estimate_tokens(run.sent), "output_tokens": 0}
        yield _event({"type": "message_start", "message": dict(
            message_head(message_id, model), content=[], stop_reason=None, stop_sequence=None,
            usage=start_usage)})
        yield _event({"type": "content_block_start", "index": 0,
                      "content_block": {"type": "text", "text": ""}})
        for piece in pieces:
            if isinstance(piece, compat.Delta):
                yield _event({"type": "content_block_delta", "index": 0,
                              "delta": {"type": "text_delta", "text": piece.text}})
            elif isinstance(piece, compat.Failed):
                yield _event(error_body(piece.error))
            else:
                yield _event({"type": "content_block_stop", "index": 0})
                yield _event({"type": "message_delta",
                              "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                              "usage": usage_body(piece.usage)})
                yield _event({"type": "message_stop"})
    finally:
        close_iterator(pieces)
