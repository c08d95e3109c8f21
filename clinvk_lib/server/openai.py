"""The OpenAI-compatible API (``/openai/v1``): models and Chat Completions, so the OpenAI SDKs
and the tools built on them work with ``base_url=http://HOST:PORT/openai/v1``.

What a request may carry and what happens to it:
- ``model`` picks the backend (``models.resolve_model``); the reply echoes it.
- ``messages`` become one prompt (``compat.render_prompt``); content is a string, an array of
  text parts (other part types are a 400 naming the part) or null.
- ``stream`` / ``stream_options.include_usage`` are honoured; ``n`` must be 1.
- ``metadata`` is stored with the clinvk session.
- ``response_format`` ``json_schema`` / ``json_object`` asks for structured output
  (``structured.from_chat``): the reply's content is the JSON text, checked against the
  schema (a reply that does not match is a failed run), so the SDKs' ``parse()`` helpers
  fill ``message.parsed``; streamed, it comes as one content chunk at the end. ``text``: as
  when absent.
- ``tools`` (functions) and ``tool_choice``: the client's tools, bridged to the agent
  (``toolcalls``): a reply that calls them has ``tool_calls`` and ``finish_reason:
  "tool_calls"``; a conversation that ends with ``tool`` messages answering those calls
  continues the parked run.
- Accepted and ignored (no backend CLI has a flag for them): ``max_tokens``,
  ``max_completion_tokens``, ``stop``, ``temperature``, ``top_p``, ``user``,
  ``parallel_tool_calls`` and every other field (``seed``, ``logit_bias``, ...).
Errors have OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import time
from typing import Any, Dict, Iterator, List, NamedTuple, Optional, Tuple

from .. import events as ev
from . import compat, errors, models, openapi, sse, structured, toolcalls
from .app import App
from .context import Context
from .http import Response, close_iterator, json_response
from .openapi import OPENAI

# OpenAI's error types by status (https://platform.openai.com/docs/guides/error-codes).
_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error",
                403: "permission_error", 404: "invalid_request_error",
                409: "invalid_request_error", 413: "invalid_request_error",
                415: "invalid_request_error", 422: "invalid_request_error",
                429: "rate_limit_error",
                # A backend run that failed (compat.FAILED_RUN_STATUS): the server's side.
                424: "server_error"}


def error_body(err: errors.ApiError) -> Dict[str, Any]:
    """``{"error": {"message", "type", "param", "code"}}`` as the OpenAI API writes it."""
    kind = _ERROR_TYPES.get(err.status, "server_error" if err.status >= 500
                            else "invalid_request_error")
    return {"error": {"message": err.message, "type": kind, "param": err.field or None,
                      "code": err.code}}


def register(app: App) -> None:
    """Add the /openai/v1 routes and OpenAI-shaped errors for every path under /openai/."""
    app.error_styles.register(OPENAI, error_body, "/openai/")
    handlers = {"openaiListModels": list_models, "openaiGetModel": get_model,
                "openaiChatCompletions": chat_completions}
    for spec in openapi.DEFAULT_ROUTES:
        if spec.operation_id in handlers:
            app.add_route(spec, handlers[spec.operation_id])
            if spec.operation_id == "openaiGetModel":
                # Older SDKs and curl users send backend/model unencoded: two segments.
                app.add_route(spec, get_model, path="/openai/v1/models/{backend}/{model}",
                              documented=False)


# -- models ---------------------------------------------------------------------------------


def model_entry(model_id: str, backend: str, created: int) -> Dict[str, Any]:
    return {"id": model_id, "object": "model", "created": created,
            "owned_by": models.vendor(backend)}


def _started(ctx: Context) -> int:
    """The server's start time (Unix seconds): the ``created`` of every listed model."""
    return int(time.time() - (time.monotonic() - ctx.app.started))


def list_models(ctx: Context) -> Response:
    created = _started(ctx)
    return json_response({"object": "list", "data": [
        model_entry(model_id, backend, created)
        for model_id, backend in models.listed_models(ctx.app.cfg)]})


def get_model(ctx: Context) -> Response:
    """Any id a chat completion accepts, listed or not; 404 ``model_not_found`` otherwise."""
    model_id = ctx.params.get("id") or "%s/%s" % (ctx.params["backend"], ctx.params["model"])
    backend, _ = models.resolve_model(model_id, ctx.app.cfg)
    return json_response(model_entry(model_id, backend, _started(ctx)))


# -- chat completions -----------------------------------------------------------------------


def conversation(messages: List[Dict[str, Any]]) -> compat.Conversation:
    """System and developer messages become the system prompt; the rest are turns (the
    deprecated ``function`` role counts as ``tool``)."""
    system: List[str] = []
    turns: List[compat.Turn] = []
    for index, message in enumerate(messages):
        role = message["role"]
        text = compat.content_text(message.get("content"))
        if role in ("system", "developer"):
            if text.strip():
                system.append(text)
        else:
            turns.append(compat.Turn("tool" if role == "function" else role, text, index))
    return compat.Conversation("\n\n".join(system), turns)


def chat_completions(ctx: Context) -> Any:
    body = ctx.json_body()
    results = tool_results(body["messages"])
    if results:
        return toolcalls.answer_results(
            ctx, results, "messages[%d].tool_call_id" % (len(body["messages"]) - 1),
            lambda run: _bridged(ctx, body, run, ""))
    conv = conversation(body["messages"])
    output = structured.from_chat(body)
    forced = output.tool if output is not None else ""
    tools = tool_request(body)
    if tools.bridged and not forced:
        run, sent = toolcalls.start(ctx, "openai", body["model"], conv, tools, "call_",
                                    body.get("metadata"), stream=body["stream"])
        return _bridged(ctx, body, run, sent)
    run = compat.prepare(ctx, "openai", body["model"], conv,
                         stream=body["stream"], metadata=body.get("metadata"),
                         output=output)
    if not body["stream"]:
        reply = compat.complete(ctx, run)
        if forced:
            return json_response(completion(body, "", [ForcedCall(forced, reply.text)],
                                            reply.usage),
                                 headers=compat.session_headers(reply.session_id))
        return json_response(completion(body, reply.text, [], reply.usage),
                             headers=compat.session_headers(reply.session_id))
    session_id, pieces = compat.stream(ctx, run)
    if forced:
        pieces = _as_forced_call(pieces, forced)
    return _streamed(ctx, body, pieces, session_id)


class ForcedCall(NamedTuple):
    """The reply to a forced function (``structured._forced_function``): its call, the JSON
    value as its arguments."""

    name: str
    arguments_json: str
    id: str = ""


def _as_forced_call(pieces: Iterator[Any], name: str) -> Iterator[Any]:
    """A structured stream's pieces with the JSON reply as the forced function's call (its
    text deltas are held back: the checked reply comes whole with Finished)."""
    try:
        for piece in pieces:
            if isinstance(piece, compat.Finished):
                yield toolcalls.ToolCalls([ForcedCall(name, piece.reply)], "", piece.usage)
            elif not isinstance(piece, compat.Delta):
                yield piece
    finally:
        close_iterator(pieces)


def _bridged(ctx: Context, body: Dict[str, Any], run: Any, sent: str) -> Any:
    """A round of a bridged run (toolcalls), whole or streamed."""
    if not body["stream"]:
        done = toolcalls.complete(ctx, run, sent)
        return json_response(completion(body, done.text, done.calls, done.usage),
                             headers=compat.session_headers(run.session_id))
    return _streamed(ctx, body, toolcalls.pieces(ctx, run, sent), run.session_id)


def _streamed(ctx: Context, body: Dict[str, Any], pieces: Iterator[Any],
              session_id: str) -> Any:
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    chunks = ChunkWriter(compat.new_id("chatcmpl-"), compat.created_now(), body["model"],
                         include_usage)
    return sse.response(chunks.stream(pieces), sse.COMMENT_KEEPALIVE,
                        compat.keepalive_secs(ctx), compat.session_headers(session_id))


def completion(body: Dict[str, Any], text: str, calls: List[Any],
               usage: ev.Usage) -> Dict[str, Any]:
    """A ``chat.completion`` object: the reply text, or the tool calls it ends with."""
    message: Dict[str, Any] = {"role": "assistant", "content": text or (None if calls else ""),
                               "refusal": None}
    if calls:
        message["tool_calls"] = [tool_call(c) for c in calls]
    return {"id": compat.new_id("chatcmpl-"), "object": "chat.completion",
            "created": compat.created_now(), "model": body["model"],
            "choices": [{"index": 0, "message": message, "logprobs": None,
                         "finish_reason": "tool_calls" if calls else "stop"}],
            "usage": usage_body(usage)}


def tool_call(call: Any) -> Dict[str, Any]:
    return {"id": call.id or compat.new_id("call_"), "type": "function",
            "function": {"name": call.name, "arguments": call.arguments_json}}


def tool_request(body: Dict[str, Any]) -> toolcalls.ToolRequest:
    """The request's ``tools`` and ``tool_choice``."""
    tools = [toolcalls.tool_spec(t["function"]["name"], t["function"].get("description"),
                                 t["function"].get("parameters"), "tools[%d].function" % i)
             for i, t in enumerate(body.get("tools") or [])]
    choice = body.get("tool_choice") or toolcalls.AUTO
    if isinstance(choice, dict):
        choice = choice["function"]["name"]
    return toolcalls.checked(tools, choice, "tools")


def tool_results(messages: List[Dict[str, Any]]) -> Dict[str, Tuple[str, bool]]:
    """The results of the trailing ``tool`` messages, by ``tool_call_id`` ({} when the
    conversation does not end with one)."""
    results: Dict[str, Tuple[str, bool]] = {}
    index = len(messages) - 1
    while index >= 0 and messages[index]["role"] == "tool":
        call_id = messages[index].get("tool_call_id")
        if not call_id:
            raise errors.invalid("field required: a tool message answers the call it names",
                                 "messages[%d].tool_call_id" % index)
        results[call_id] = (compat.content_text(messages[index].get("content")), False)
        index -= 1
    return results


def usage_body(usage: ev.Usage) -> Dict[str, Any]:
    """OpenAI's usage object; the details only when the backend reported them."""
    body: Dict[str, Any] = {"prompt_tokens": usage.input_tokens,
                            "completion_tokens": usage.output_tokens,
                            "total_tokens": usage.input_tokens + usage.output_tokens}
    if usage.cached_tokens:
        body["prompt_tokens_details"] = {"cached_tokens": usage.cached_tokens}
    if usage.reasoning_tokens:
        body["completion_tokens_details"] = {"reasoning_tokens": usage.reasoning_tokens}
    return body


class ChunkWriter:
    """The ``chat.completion.chunk`` events of one streamed completion."""

    def __init__(self, completion_id: str, created: int, model: str,
                 include_usage: bool) -> None:
        self.head = {"id": completion_id, "object": "chat.completion.chunk",
                     "created": created, "model": model}
        self.include_usage = include_usage

    def chunk(self, delta: Dict[str, Any], finish_reason: Optional[str] = None) -> bytes:
        body = dict(self.head, choices=[{"index": 0, "delta": delta, "logprobs": None,
                                         "finish_reason": finish_reason}])
        if self.include_usage:
            body["usage"] = None        # as OpenAI: null on every chunk but the last
        return sse.frame(body)

    def finish(self, reason: str, usage: ev.Usage) -> List[bytes]:
        """The finish_reason chunk, then the usage chunk (with include_usage)."""
        frames = [self.chunk({}, reason)]
        if self.include_usage:
            frames.append(sse.frame(dict(self.head, choices=[], usage=usage_body(usage))))
        return frames

    def stream(self, pieces: Iterator[Any]) -> Iterator[bytes]:
        """Role first, then each piece of content as the backend produced it, then the
        finish_reason chunk, the usage chunk (with include_usage) and ``[DONE]``. A failure
        ends the stream with an error event and ``[DONE]`` (the SDKs raise APIError)."""
        try:
            yield self.chunk({"role": "assistant", "content": ""})
            for piece in pieces:
                if isinstance(piece, compat.Delta):
                    yield self.chunk({"content": piece.text})
                elif isinstance(piece, compat.Failed):
                    yield sse.frame(error_body(piece.error))
                elif isinstance(piece, toolcalls.ToolCalls):
                    yield self.chunk({"tool_calls": [dict(tool_call(c), index=i)
                                                     for i, c in enumerate(piece.calls)]})
                    for frame in self.finish("tool_calls", piece.usage):
                        yield frame
                else:
                    for frame in self.finish("stop", piece.usage):
                        yield frame
            yield sse.frame("[DONE]")
        finally:
            close_iterator(pieces)
