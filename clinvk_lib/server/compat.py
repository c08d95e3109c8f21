"""What the OpenAI- and Anthropic-compatible APIs share: how a
conversation becomes one prompt, sessions by header, token estimates, and running the backend
(whole or as a stream of reply pieces) with failures as errors the SDKs raise.

The prompt (``render_prompt``): system (and OpenAI developer) messages, joined by a blank
line, go to the backend's system prompt mechanism (claude ``--system-prompt``, codex
``developer_instructions``); gemini has none, so there they open the prompt as
``<system>...</system>``. The last message must be a user message: with nothing before it,
the prompt is its text alone. Earlier user, assistant and tool turns come first, oldest first,
each in a tag named after its role, inside ``<conversation_history>``; the newest user
message follows after a blank line::

    <conversation_history>
    <user>
    first question
    </user>
    <assistant>
    first answer
    </assistant>
    </conversation_history>

    second question

Text parts (OpenAI) or text blocks (Anthropic) of one message are joined by a newline.

Sessions: every call creates a clinvk session and the reply carries its id in the
``X-Clinvk-Session-Id`` header (streams included). A request that sends that header back
continues the session with only its newest user message as the prompt (the backend has the
rest; a gemini system prompt is not repeated). ``X-Clinvk-Ephemeral: true`` runs without a
session (and the reply has no session header).

A backend that runs and fails is not a 200: it is a 424 carrying the backend's error text,
and so is a run over ``server.request_timeout_secs`` (code ``timeout``); a CLI that cannot
authenticate is a 401 ``backend_not_authenticated``, a model API's rate limit a 429
``backend_rate_limited`` (with Retry-After when the CLI said); all also say
``X-Should-Retry: false``. Not 502 / 504: clients retry those by themselves (the Vercel AI SDK
ignores X-Should-Retry), and a retry is a second agent run. A stream starts before its backend
does (``stream``), so there the same error ends the stream in the API's error event.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any, Callable, Dict, Iterable, Iterator, List, NamedTuple, Optional, Tuple

from .. import events as ev
from .. import execute
from ..backends import base, options, parsing
from . import errors, structured
from .models import resolve_model
from .profiles import split_chat_model
from .context import Context
from .http import close_iterator

SESSION_HEADER = "X-Clinvk-Session-Id"
EPHEMERAL_HEADER = "X-Clinvk-Ephemeral"
# A non-standard header both official SDKs obey before their own retry rules.
NO_RETRY = ("X-Should-Retry", "false")
# A run that failed or timed out: 424 Failed Dependency (RFC 4918 11.4), "the method could not
# be performed because the requested action depended on another action and that action
# failed". Clients retry 408, 409, 429 and every 5xx by themselves (the Vercel AI SDK's
# APICallError.isRetryable, the official SDKs), and a retry is a whole second agent run.
FAILED_RUN_STATUS = 424
# The run failures whose ApiError (from Context.run) a compat reply passes on with the
# session header and X-Should-Retry: false (a timeout as a 424, above).
_RUN_FAILURES = ("timeout", "backend_not_authenticated", "backend_rate_limited")

# -- the conversation ----------------------------------------------------------------------------


class Turn(NamedTuple):
    """One non-system message: ``role`` (user, assistant or tool), its text, and its index in
    the request's ``messages`` (for error messages)."""

    role: str
    text: str
    index: int


class Conversation(NamedTuple):
    system: str
    turns: List[Turn]


def content_text(content: Any) -> str:
    """The text of a message content: a string, a list of text parts or blocks (joined by a
    newline; the schemas have already refused other kinds), or None."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "\n".join(part["text"] for part in content)


def check_conversation(conv: Conversation) -> None:
    """400 unless the conversation ends with a user message that has text."""
    if not conv.turns:
        raise errors.invalid("no user message: send at least one message with role user",
                             "messages")
    last = conv.turns[-1]
    if last.role != "user":
        raise errors.invalid("the last message must have role user, got %r: clinvk answers "
                             "the newest user message with one backend run (a trailing "
                             "assistant message is not supported)" % last.role,
                             "messages[%d].role" % last.index)
    if not last.text.strip():
        raise errors.invalid("the last user message has no text", "messages[%d].content"
                             % last.index)


def render_prompt(conv: Conversation, system_in_prompt: bool) -> str:
    """The one prompt for a new session (format in the module docstring)."""
    *history, newest = conv.turns
    sections = []
    if system_in_prompt and conv.system.strip():
        sections.append(_tagged("system", conv.system))
    earlier = [_tagged(t.role, t.text) for t in history if t.text.strip()]
    if earlier:
        sections.append("<conversation_history>\n%s\n</conversation_history>"
                        % "\n".join(earlier))
    sections.append(newest.text)
    return "\n\n".join(sections)


def _tagged(name: str, text: str) -> str:
    return "<%s>\n%s\n</%s>" % (name, text, name)


def honours_system_prompt(backend: base.Backend) -> bool:
    """Whether the backend's CLI takes a system prompt (gemini 0.61.0 has no flag for one);
    the backend says so by listing a set system prompt among the options it ignores."""
    return not backend.ignored_options(options.Options(system_prompt="x"))


# -- tokens --------------------------------------------------------------------------------------


def estimate_tokens(*texts: str) -> int:
    """ceil(characters / 4) over ``texts``: the usual rule of thumb for English text, used
    where a backend reports no usage (the CLIs expose no tokenizer)."""
    return int(math.ceil(sum(len(t) for t in texts) / 4.0))


def counted_usage(reported: ev.Usage, sent: str, reply: str) -> ev.Usage:
    """The backend's usage, or estimates of input and output tokens when it reported none."""
    if reported:
        return reported
    return ev.Usage(input_tokens=estimate_tokens(sent), output_tokens=estimate_tokens(reply))


# -- running -------------------------------------------------------------------------------------


def new_id(prefix: str) -> str:
    """A unique response id: ``chatcmpl-`` or ``msg_`` plus 24 random hex digits."""
    return prefix + os.urandom(12).hex()


def created_now() -> int:
    return int(time.time())


class Run:
    """A compat request, prepared: the backend run, the text it sends (the prompt and a
    system prompt) for token estimates, and the structured output the client asked for
    (None: plain text)."""

    def __init__(self, prepared: execute.Prepared, sent: str, output: Any = None) -> None:
        self.prepared = prepared
        self.sent = sent
        self.output = output

    @property
    def backend(self) -> str:
        return self.prepared.backend.name


def prepare(ctx: Context, api: str, model: str, conv: Conversation, stream: bool,
            metadata: Optional[Dict[str, str]] = None, session_id: Optional[str] = None,
            ephemeral: Optional[bool] = None, output: Any = None,
            tool_bridge: Any = None) -> Run:
    """Resolve the model, check the conversation, build the prompt and prepare the run:
    a new session, or the one named by ``session_id`` (default: the X-Clinvk-Session-Id
    request header). ``ephemeral`` None reads the X-Clinvk-Ephemeral header. ``output`` is
    the structured output asked for (None: plain text); ``tool_bridge`` the client's tools
    (a ``backends.options.ToolBridge``; None: none)."""
    backend_name, cli_model = resolve_model(model, ctx.app.cfg)
    check_conversation(conv)
    backend = base.get(backend_name)
    structured.check_backend(output, backend)
    if session_id is None:
        session_id = ctx.headers.get(SESSION_HEADER, "").strip()
    if ephemeral is None:
        ephemeral = asks_ephemeral(ctx)
    native_system = honours_system_prompt(backend)
    if session_id:
        prompt = conv.turns[-1].text
    else:
        prompt = render_prompt(conv, system_in_prompt=not native_system)
    system = conv.system if native_system else ""
    request = execute.Request(
        backend=backend_name, prompt=prompt, model=cli_model, system_prompt=system,
        session_id=session_id, ephemeral=ephemeral,
        dry_run=False, metadata=metadata, tags=[api],
        output_schema=output.schema if output is not None else None, tool_bridge=tool_bridge,
        profile=split_chat_model(model)[1])
    return Run(ctx.prepare(request, stream=stream), prompt + system, output)


def asks_ephemeral(ctx: Context) -> bool:
    """Whether the request's X-Clinvk-Ephemeral header asks for a run without a session."""
    return ctx.headers.get(EPHEMERAL_HEADER, "").strip().lower() in ("1", "true", "yes")


def session_headers(session_id: str) -> List[Tuple[str, str]]:
    return [(SESSION_HEADER, session_id)] if session_id else []


class Reply(NamedTuple):
    text: str
    usage: ev.Usage             # with estimates when the backend reported none
    session_id: str


def complete(ctx: Context, run: Run) -> Reply:
    """Run to completion. A failed run raises a 424 ApiError (``backend_failed``), as does a
    run over the request timeout (``timeout``): neither is a gateway error a retry could fix.

    With structured output (``run.output``) the reply is the JSON text, checked against the
    schema (``structured.reply_json``); a backend that takes the schema in its prompt gets
    one corrective turn in the same session, and a reply that still does not match fails
    as a failed run does, naming the first schema error."""
    outcome = _finished(ctx, run.prepared)
    result = outcome.result
    if run.output is None:
        return Reply(result.text, counted_usage(result.usage, run.sent, result.text),
                     outcome.session_id)
    text, problem = _structured_reply(run.output, result)
    usage = result.usage
    if problem and _correctable(run, outcome.session_id):
        again = _finished(ctx, _correction(ctx, run, outcome.session_id, problem,
                                           stream=False)).result
        usage = _added(usage, again.usage)
        text, problem = _structured_reply(run.output, again)
    if problem:
        raise backend_failed(run.backend, problem, outcome.session_id)
    return Reply(text, counted_usage(usage, run.sent, text), outcome.session_id)


def _finished(ctx: Context, prepared: execute.Prepared) -> execute.Outcome:
    """The outcome of a run that succeeded; the ApiError of one that did not."""
    try:
        outcome = ctx.run(prepared)
    except errors.ApiError as err:
        if err.code in _RUN_FAILURES:
            headers = dict([NO_RETRY] + session_headers(err.extra.get("session_id", "")))
            if err.status == 504:
                raise errors.ApiError(FAILED_RUN_STATUS, err.code, err.message,
                                      headers=headers) from None
            err.headers.update(headers)
        raise
    result = outcome.result
    if not result.ok:
        raise backend_failed(prepared.backend.name, result.error or parsing.failure_message(
            prepared.backend.name, result.exit_code, ""), outcome.session_id)
    return outcome


def _structured_reply(output: structured.OutputSpec, result: parsing.Result
                      ) -> Tuple[str, str]:
    return structured.reply_json(output, answer_text(result.events), result.structured)


def answer_text(events: Iterable[ev.Event]) -> str:
    """The reply text after the last tool call: an agent may narrate its work before its
    answer, and only the answer is held to an output schema."""
    reading = _Reading("")
    for event in events:
        reading.add(event)
    return reading.answer.text


def _correctable(run: Run, session_id: str) -> bool:
    """Whether an invalid structured reply gets one more turn: the backend only read the
    schema in its prompt, and the run has a session to continue."""
    return bool(run.output is not None and session_id
                and run.prepared.backend.output_schema_route(run.output.schema)
                == options.SCHEMA_IN_PROMPT)


def _correction(ctx: Context, run: Run, session_id: str, problem: str,
                stream: bool) -> execute.Prepared:
    """The follow-up turn, in session ``session_id``, that says what was wrong with the
    reply and asks again (the backend adds the schema to the prompt as before)."""
    first = run.prepared.request
    return ctx.prepare(execute.Request(
        backend=first.backend, prompt=structured.correction_prompt(problem), model=first.model,
        system_prompt=first.system_prompt, session_id=session_id, dry_run=False,
        tags=first.tags, output_schema=first.output_schema, profile=first.profile),
        stream=stream)


def _added(a: ev.Usage, b: ev.Usage) -> ev.Usage:
    cost = None if a.cost_usd is None and b.cost_usd is None else \
        (a.cost_usd or 0.0) + (b.cost_usd or 0.0)
    return ev.Usage(a.input_tokens + b.input_tokens, a.output_tokens + b.output_tokens,
                    a.cached_tokens + b.cached_tokens, a.reasoning_tokens + b.reasoning_tokens,
                    cost)


def backend_failed(backend: str, message: str, session_id: str = "") -> errors.ApiError:
    """424: the backend CLI ran and failed; the message is its own error text."""
    return errors.ApiError(FAILED_RUN_STATUS, "backend_failed", "the %s backend failed: %s"
                           % (backend, message),
                           headers=dict([NO_RETRY] + session_headers(session_id)))


class Delta(NamedTuple):
    """A piece of reply text, as the backend produced it."""
    text: str


class Finished(NamedTuple):
    reply: str
    usage: ev.Usage             # with estimates when the backend reported none


class Failed(NamedTuple):
    error: errors.ApiError


def stream(ctx: Context, run: Run) -> Tuple[str, Iterator[Any]]:
    """(session id, the reply as Delta pieces then one Finished or Failed).

    Nothing waits here for the backend, so the response's headers go out at once: the
    session id is the continued session's, or the one the new session will be saved under
    (``execute.Prepared.new_session_id``; "" when ephemeral). The run slot is waited for and
    the backend started when the pieces are first read, and a failure from then on is a
    Failed piece (the stream's error event). Structured output (``run.output``) is checked
    and corrected as by ``complete``, and comes as one Delta at the end (``reply_pieces``).
    """
    def describe(exc: BaseException) -> errors.ApiError:
        return ctx.app.error_for(ctx, exc)
    p = run.prepared
    session_id = p.session.id if p.session is not None else p.new_session_id

    def correct(problem: str) -> Iterator[ev.Event]:
        return ctx.stream(_correction(ctx, run, session_id, problem, stream=True))
    return session_id, reply_pieces(ctx.stream(p), run.backend, run.sent, describe, run.output,
                                    correct if _correctable(run, session_id) else None)


def reply_pieces(events: Iterator[ev.Event], backend: str, sent: str,
                 describe: Callable[[BaseException], errors.ApiError],
                 output: Optional[structured.OutputSpec] = None,
                 correct: Optional[Callable[[str], Iterator[ev.Event]]] = None
                 ) -> Iterator[Any]:
    """Delta pieces of ``backend``'s reply as it produces them (text sent both as deltas and
    whole is sent once: ``events.ReplyText``), then Finished (usage estimated from ``sent``
    and the reply when none was reported), or Failed at the first fatal error (the events
    after it are still read, so the session records the turn). ``describe`` turns an
    exception of the event source into the ApiError to report.

    With structured output (``output``) the text is held back, because partial JSON from an
    agent that may also narrate is of no use: the JSON text comes as one Delta once it is
    checked. When it does not match and ``correct`` is given, ``correct(problem)`` gives the
    events of one follow-up run whose reply is checked instead."""
    reading = _Reading(backend)
    pieces = reading.pieces(events, describe)
    try:
        for piece in pieces:
            if output is None:
                yield Delta(piece)
    finally:
        close_iterator(pieces)
    if reading.failure is not None:
        yield Failed(reading.failure)
    elif output is None:
        yield Finished(reading.reply.text, counted_usage(reading.usage, sent,
                                                         reading.reply.text))
    else:
        for piece in _structured_end(reading, sent, describe, output, correct):
            yield piece


class _Reading:
    """One run's events read as a reply: its text (``reply``), the text after its last tool
    call (``answer``), the value reported apart (``structured``), ``usage`` and the first
    ``failure`` (an ApiError; None while there is none)."""

    def __init__(self, backend: str) -> None:
        self.backend = backend
        self.reply = ev.ReplyText()
        self.answer = ev.ReplyText()
        self.structured: Any = None
        self.usage = ev.Usage()
        self.failure: Optional[errors.ApiError] = None

    def pieces(self, events: Iterator[ev.Event],
               describe: Callable[[BaseException], errors.ApiError]) -> Iterator[str]:
        """Read ``events`` to their end (and close them), yielding each piece of reply text
        until a failure is seen."""
        exit_code = 0
        try:
            for event in events:
                if event.type == ev.ERROR and event.content.get("fatal", True):
                    self.failure = self.failure or _stream_failure(self.backend, event)
                elif event.type == ev.DONE:
                    self.usage = ev.Usage.from_dict(event.content.get("usage"))
                    self.structured = event.content.get("structured_output")
                    exit_code = event.content.get("exit_code") or 0
                elif self.failure is None:
                    piece = self.add(event)
                    if piece:
                        yield piece
        except Exception as exc:  # noqa: BLE001 - a broken event source still ends the stream
            self.failure = self.failure or describe(exc)
        finally:
            close_iterator(events)
        if self.failure is None and exit_code != 0:
            self.failure = backend_failed(self.backend, parsing.failure_message(
                self.backend, exit_code, ""))

    def add(self, event: ev.Event) -> str:
        """Take one text or tool event; the piece of reply text it adds ("" for none)."""
        if event.type in (ev.TOOL_USE, ev.TOOL_RESULT):
            self.answer = ev.ReplyText()
        self.answer.add(event)
        return self.reply.add(event)


def _structured_end(reading: _Reading, sent: str,
                    describe: Callable[[BaseException], errors.ApiError],
                    output: structured.OutputSpec,
                    correct: Optional[Callable[[str], Iterator[ev.Event]]]) -> List[Any]:
    """The last pieces of a structured reply: the JSON text as one Delta and Finished, or
    Failed naming the first schema error (after the one correction ``correct`` allows)."""
    text, problem = structured.reply_json(output, reading.answer.text, reading.structured)
    usage = reading.usage
    if problem and correct is not None:
        again = _Reading(reading.backend)
        try:
            for _ in again.pieces(correct(problem), describe):
                pass
        except Exception as exc:  # noqa: BLE001 - the follow-up could not start
            again.failure = describe(exc)
        if again.failure is not None:
            return [Failed(again.failure)]
        usage = _added(usage, again.usage)
        text, problem = structured.reply_json(output, again.answer.text, again.structured)
    if problem:
        return [Failed(backend_failed(reading.backend, problem))]
    return [Delta(text), Finished(text, counted_usage(usage, sent, text))]


def _stream_failure(backend: str, event: ev.Event) -> errors.ApiError:
    message = event.content.get("message", "")
    code = event.content.get("code", "")
    if code == "timeout":
        return errors.timeout(message)
    if code == "cancelled":
        return errors.cancelled(message)
    if code == parsing.NOT_AUTHENTICATED:
        return errors.backend_not_authenticated(backend, message)
    if code == parsing.RATE_LIMITED:
        return errors.backend_rate_limited(backend, message, event.content.get("retry_after"))
    return backend_failed(backend, message)


def keepalive_secs(ctx: Context) -> float:
    return float(ctx.app.cfg.get("server.sse_keepalive_secs") or 0)
