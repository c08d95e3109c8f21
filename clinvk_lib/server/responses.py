"""The OpenAI Responses API (``/openai/v1/responses``), so the clients that default to it (the
OpenAI Agents SDK, the Vercel AI SDK, pydantic-ai, LangChain for codex models, Codex CLI with a
custom provider) work with ``base_url=http://HOST:PORT/openai/v1``.

What a request may carry and what happens to it:
- ``model`` picks the backend as in chat (``models.resolve_model``); the response echoes it.
- ``input``: a string (one user message) or a list of message items (``type: "message"`` or
  no type) with role user, assistant, system or developer and content a string or a list of
  ``input_text`` / ``output_text`` parts, and the ``function_call`` / ``function_call_output``
  items of client tools (``responses_tools``). Other part types are a 400 naming the part
  (``input[1].content[0].type``), other item types one naming the item (reasoning items
  cannot be replayed to an agent).
- ``tools`` of type function and ``tool_choice``: the client's tools, bridged to the agent
  (``responses_tools``, ``toolcalls``).
- ``instructions`` and system/developer messages, in that order, joined by a blank line, go
  to the backend's system prompt, as a chat's system messages do; the other messages become
  the prompt as in chat (``compat.render_prompt``). The last message must be a user message.
- ``previous_response_id``: continues the clinvk session that response ran in; only this
  request's input is sent (several messages become one prompt, the earlier ones as history).
  Without it, the ``X-Clinvk-Session-Id`` request header continues a session as in chat.
- ``store`` (default true): the response is kept (``response_store``) for ``GET``,
  ``DELETE``, ``input_items`` and ``previous_response_id``, scoped to the caller's API key.
  ``store: false``: nothing is kept, and a new conversation runs without a clinvk session
  (ephemeral), so it can never be continued; sending ``X-Clinvk-Session-Id`` or
  ``previous_response_id`` still continues that session.
- ``stream``: server-sent events (``responses_stream``).
- ``background`` (needs ``store``, not with ``stream``): checked as any request, then run as
  a durable job (``background``): the response comes back at once, ``queued`` (503 past
  ``server.max_queued_jobs``); ``GET`` polls it, ``POST .../cancel`` stops it.
- ``metadata``: stored with the response and with a new clinvk session.
- ``text``: ``format`` ``text`` (structured output formats: ``structured.py``).
- Accepted and ignored: everything else (``temperature``, ``top_p``, ``max_output_tokens``,
  ``reasoning``, tools of other types, ``parallel_tool_calls``, ``truncation``,
  ``include``, ``prompt_cache_key``, ``safety_identifier``, ``user``, ``service_tier``,
  ``stream_options``, ...). Refused: ``conversation`` and ``prompt`` (state kept elsewhere,
  which ignoring would silently lose).
A run that fails is an HTTP error as in chat (``compat.complete``); streamed, it ends the
stream with ``response.failed`` (a stream starts before its backend does: ``compat.stream``).
A failed background run ends ``failed`` with its ``error``, as does one its server stopped or
lost.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from ..schema import validate_query
from ..shared_store import open_response_store
from . import compat, errors, models, openapi, responses_tools, sse, structured, toolcalls
from .responses_shapes import InputItemsQuery
from .app import App
from .background import BackgroundResponses
from .context import Context
from .http import Response, json_response
from .response_object import RUNNING, Draft, input_message
from .response_store import ResponseStore, ResponseStoreError, StoredResponse
from .response_store import unavailable as store_unavailable
from .responses_stream import EventWriter

_ROUTES = ("openaiCreateResponse", "openaiGetResponse", "openaiDeleteResponse",
           "openaiCancelResponse", "openaiListInputItems")


def register(app: App) -> None:
    """Add the /openai/v1/responses routes (their errors are OpenAI's: ``openai.register``
    claims /openai/)."""
    store = open_response_store(app.cfg, app.shared_store, app.store.home)
    api = ResponsesApi(store, BackgroundResponses(store, app.jobs, prepare_run))
    handlers = dict(zip(_ROUTES, (api.create, api.retrieve, api.delete, api.cancel,
                                  api.input_items)))
    for spec in openapi.DEFAULT_ROUTES:
        if spec.operation_id in handlers:
            app.add_route(spec, handlers[spec.operation_id])


# -- the input -----------------------------------------------------------------------------


def read_input(body: Dict[str, Any]) -> Tuple[compat.Conversation, List[Dict[str, Any]]]:
    """The conversation to run and the input items to store (each with a ``msg_`` id)."""
    raw = body["input"]
    messages = [{"role": "user", "content": raw}] if isinstance(raw, str) else raw
    system = [body["instructions"]] if (body.get("instructions") or "").strip() else []
    turns: List[compat.Turn] = []
    items = []
    for index, message in enumerate(messages):
        if message.get("type", "message") != "message":
            items.append(tool_item(message, index))
            turns.append(responses_tools.history_turn(message, index))
            continue
        for name in ("role", "content"):
            if name not in message:
                raise errors.invalid("field required", "input[%d].%s" % (index, name))
        content = message["content"]
        parts = [{"type": "input_text", "text": content}] if isinstance(content, str) \
            else content
        role = message["role"]
        items.append(input_message(compat.new_id("msg_"), role, parts))
        text = compat.content_text(parts)
        if role in ("system", "developer"):
            if text.strip():
                system.append(text)
        else:
            turns.append(compat.Turn(role, text, index))
    conv = compat.Conversation("\n\n".join(system), turns)
    check_input(conv, isinstance(raw, str))
    return conv, items


def tool_item(item: Dict[str, Any], index: int) -> Dict[str, Any]:
    """A function_call or function_call_output input item as stored (400 naming a missing
    field)."""
    needed = ("call_id", "name") if item["type"] == "function_call" else ("call_id", "output")
    for name in needed:
        if name not in item:
            raise errors.invalid("field required", "input[%d].%s" % (index, name))
    kept = dict((k, v) for k, v in item.items() if k in ("type",) + needed + ("arguments",))
    return dict(kept, id=compat.new_id("fc_" if item["type"] == "function_call" else "fco_"),
                status="completed")


def check_input(conv: compat.Conversation, is_string: bool) -> None:
    """400 naming the input item unless the last message is a user message with text
    (``compat.check_conversation``'s rule, with the Responses API's field names)."""
    def where(index: int, name: str) -> str:
        return "input" if is_string else "input[%d].%s" % (index, name)
    if not conv.turns:
        raise errors.invalid("no user message: send input as a string, or at least one "
                             "message item with role user", "input")
    last = conv.turns[-1]
    if last.role != "user":
        raise errors.invalid("the last message must have role user, got %r: clinvk answers "
                             "the newest user message with one backend run" % last.role,
                             where(last.index, "role"))
    if not last.text.strip():
        raise errors.invalid("the last user message has no text", where(last.index, "content"))


def prepare_run(ctx: Context, body: Dict[str, Any], session_id: str,
                ephemeral: Optional[bool]) -> compat.Run:
    """The backend run of a validated request: its input as a conversation (only this
    request's messages when it continues session ``session_id``), prepared by
    ``compat.prepare`` (``ephemeral`` None: as the X-Clinvk-Ephemeral header says)."""
    conv, _ = read_input(body)
    if session_id:
        conv = new_turns_only(conv)
    return compat.prepare(ctx, "openai", body["model"], conv, stream=body["stream"],
                          metadata=body.get("metadata"), session_id=session_id,
                          ephemeral=ephemeral, output=structured.from_responses(body))


def new_turns_only(conv: compat.Conversation) -> compat.Conversation:
    """For a continued session: every message of this request in one user turn (the earlier
    ones as history), since ``compat.prepare`` sends only the last turn of a session."""
    if len(conv.turns) < 2:
        return conv
    text = compat.render_prompt(compat.Conversation("", conv.turns), system_in_prompt=False)
    return compat.Conversation(conv.system, [compat.Turn("user", text, conv.turns[-1].index)])


# -- errors --------------------------------------------------------------------------------


def not_found(response_id: str, field: str = "") -> errors.ApiError:
    code = "previous_response_not_found" if field else "response_not_found"
    return errors.ApiError(404, code, "no response with id %r: it does not exist, was deleted "
                           "or not stored (store: false), or another API key created it"
                           % response_id[:100], field=field)


def already_ended(record: StoredResponse) -> errors.ApiError:
    return errors.invalid("cannot cancel response %s: it has already ended (status %s)"
                          % (record.id, record.status), "")


# -- the API -------------------------------------------------------------------------------


class ResponsesApi:
    """The route handlers, over one response store and the server's background responses."""

    def __init__(self, store: ResponseStore, background: BackgroundResponses) -> None:
        self.store = store
        self.background = background

    def create(self, ctx: Context) -> Any:
        body = ctx.json_body()
        if body["background"] and not body["store"]:
            raise errors.invalid("background responses must be stored: send store: true "
                                 "(or leave it out)", "background")
        if body["background"] and body["stream"]:
            raise errors.invalid("streaming a background response is not supported: send "
                                 "stream: false and poll GET /openai/v1/responses/{id}",
                                 "stream")
        results, last = responses_tools.tool_results(body["input"])
        if results:
            return self._resume(ctx, body, results, last)
        conv, items = read_input(body)
        previous = self._previous(ctx, body)
        session_id = previous.session_id if previous else \
            ctx.headers.get(compat.SESSION_HEADER, "").strip()
        tools = responses_tools.tool_request(body)
        if tools.bridged and (body.get("tool_choice") not in (None, toolcalls.AUTO) or
                              toolcalls.can_bridge(ctx, body["model"])):
            if session_id:
                conv = new_turns_only(conv)
            return self._bridged_start(ctx, body, conv, items, tools, session_id)
        draft = Draft(compat.new_id("resp_"), body)
        record = StoredResponse(draft.snapshot(), items, ctx.session_access().key_id,
                                session_id)
        if body["background"]:
            return self.background.start(ctx, body, record, compat.asks_ephemeral(ctx))
        # store: false keeps nothing: a new conversation gets no session either.
        ephemeral = True if not body["store"] and not session_id else None
        run = prepare_run(ctx, body, session_id, ephemeral)
        record.backend = run.backend
        if body["stream"]:
            return self._stream(ctx, run, draft, record)
        reply = compat.complete(ctx, run)
        record.response = draft.complete(reply.text, reply.usage)
        record.session_id = reply.session_id
        self._keep(ctx, record)
        return json_response(record.response, headers=compat.session_headers(reply.session_id))

    # -- client tools (responses_tools) ---------------------------------------------------------

    def _bridged_start(self, ctx: Context, body: Dict[str, Any], conv: compat.Conversation,
                       items: List[Dict[str, Any]], tools: toolcalls.ToolRequest,
                       session_id: str) -> Any:
        if body["background"]:
            raise errors.invalid("client tools (tools of type function) cannot run in the "
                                 "background: send background: false", "background")
        ephemeral = True if not body["store"] and not session_id else None
        run, sent = toolcalls.start(ctx, "openai", body["model"], conv, tools, "call_",
                                    body.get("metadata"), session_id=session_id,
                                    ephemeral=ephemeral, stream=body["stream"])
        return self._bridged_round(ctx, body, run, sent, items)

    def _resume(self, ctx: Context, body: Dict[str, Any],
                results: Dict[str, Any], last: int) -> Any:
        """The input carries client tool results: the parked run they answer continues as
        this response."""
        if body["background"]:
            raise errors.invalid("client tool results cannot be sent in the background: "
                                 "send background: false", "background")
        forwarded = toolcalls.elsewhere(ctx, results)
        if forwarded is not None:
            return forwarded
        if body.get("previous_response_id"):
            self._load(ctx, body["previous_response_id"], "previous_response_id")
        items = [tool_item(item, index) for index, item in enumerate(body["input"])
                 if item["type"] == "function_call_output"]
        run = toolcalls.resume(ctx, results, "input[%d].call_id" % last)
        return self._bridged_round(ctx, body, run, "", items)

    def _bridged_round(self, ctx: Context, body: Dict[str, Any], run: Any, sent: str,
                       items: List[Dict[str, Any]]) -> Any:
        draft = Draft(compat.new_id("resp_"), body)
        record = StoredResponse(draft.snapshot(), items, ctx.session_access().key_id,
                                run.session_id, run.backend)
        if body["stream"]:
            def on_end(final: Dict[str, Any]) -> None:
                record.response = final
                self._keep(ctx, record)
            writer = EventWriter(draft, on_end, bridged=True)
            return sse.response(writer.stream(toolcalls.pieces(ctx, run, sent)),
                                sse.COMMENT_KEEPALIVE, compat.keepalive_secs(ctx),
                                compat.session_headers(run.session_id))
        done = toolcalls.complete(ctx, run, sent)
        record.response = draft.complete(done.text, done.usage,
                                         responses_tools.call_items(done.calls))
        self._keep(ctx, record)
        return json_response(record.response, headers=compat.session_headers(run.session_id))

    def _previous(self, ctx: Context, body: Dict[str, Any]) -> Optional[StoredResponse]:
        """The stored response ``previous_response_id`` names (None when absent): 404 if the
        caller has none by that id, 400 if it cannot be continued (yet) or by this model."""
        response_id = body.get("previous_response_id")
        if not response_id:
            return None
        field = "previous_response_id"
        previous = self._load(ctx, response_id, field)
        if previous.status in RUNNING:
            raise errors.invalid("response %s is still %s: wait until it has finished (poll "
                                 "GET /openai/v1/responses/%s)"
                                 % (response_id, previous.status, response_id), field)
        if not previous.session_id:
            raise errors.invalid("response %s ran without a clinvk session (X-Clinvk-Ephemeral),"
                                 " so it cannot be continued" % response_id, field)
        backend, _ = models.resolve_model(body["model"], ctx.app.cfg)
        if backend != previous.backend:
            raise errors.invalid("response %s ran on the %s backend, which holds its "
                                 "conversation: continue it with a %s model, not %r"
                                 % (response_id, previous.backend, previous.backend,
                                    body["model"][:100]), "model")
        return previous

    def _stream(self, ctx: Context, run: compat.Run, draft: Draft,
                record: StoredResponse) -> Any:
        session_id, pieces = compat.stream(ctx, run)
        record.session_id = session_id

        def on_end(final: Dict[str, Any]) -> None:
            record.response = final
            self._keep(ctx, record)
        writer = EventWriter(draft, on_end)
        return sse.response(writer.stream(pieces), sse.COMMENT_KEEPALIVE,
                            compat.keepalive_secs(ctx), compat.session_headers(session_id))

    def _keep(self, ctx: Context, record: StoredResponse) -> None:
        """Store a finished response when asked to; a store that cannot be written is logged
        (the turn has run and its answer goes out; only later reads of it will 404)."""
        if not record.response["store"]:
            return
        try:
            self.store.add(record)
        except ResponseStoreError as exc:
            ctx.app.log.error("response %s not stored: %s" % (record.id, exc), ctx.request_id)

    # -- stored responses ----------------------------------------------------------------------

    def _load(self, ctx: Context, response_id: str, field: str = "") -> StoredResponse:
        """The caller's stored response ``response_id`` (404 otherwise), as it stands now
        (a background one as its job stands)."""
        try:
            record = self.store.get(response_id, ctx.session_access())
            if record is None:
                raise not_found(response_id, field)
            return self.background.current(record)
        except ResponseStoreError as exc:
            raise store_unavailable(exc)

    def retrieve(self, ctx: Context) -> Response:
        record = self._load(ctx, ctx.params["id"])
        return json_response(record.response, headers=compat.session_headers(
            record.session_id))

    def delete(self, ctx: Context) -> Response:
        """Remove the response (a background run of it is stopped first)."""
        record = self._load(ctx, ctx.params["id"])
        try:
            self.store.delete(record.id)
        except ResponseStoreError as exc:
            raise store_unavailable(exc)
        self.background.forget(record)
        return json_response({"id": record.id, "object": "response", "deleted": True})

    def cancel(self, ctx: Context) -> Response:
        """Stop a background response that is still running; 400 for any other."""
        record = self._load(ctx, ctx.params["id"])
        if not record.response.get("background"):
            raise errors.invalid("only background responses can be cancelled: %s was not "
                                 "created with background: true" % record.id, "")
        if record.status not in RUNNING:
            raise already_ended(record)
        return json_response(self.background.cancel(record).response)

    def input_items(self, ctx: Context) -> Response:
        """The response's input items, OpenAI's list: ``limit`` (20), ``order`` (desc: newest
        first), ``after`` (an item id: the items that follow it in that order)."""
        query = validate_query(InputItemsQuery, ctx.query())
        record = self._load(ctx, ctx.params["id"])
        items = list(record.input_items)
        if query["order"] == "desc":
            items.reverse()
        after = query.get("after")
        if after:
            ids = [item["id"] for item in items]
            if after not in ids:
                raise errors.invalid("no input item %r in response %s" % (after[:100],
                                                                          record.id), "after")
            items = items[ids.index(after) + 1:]
        page = items[:query["limit"]]
        return json_response({"object": "list", "data": page,
                              "first_id": page[0]["id"] if page else None,
                              "last_id": page[-1]["id"] if page else None,
                              "has_more": len(items) > len(page)})
