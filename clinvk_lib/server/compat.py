"""What the OpenAI- and Anthropic-compatible APIs share: which backend a model id names, how a
conversation becomes one prompt, sessions by header, token estimates, and running the backend
(whole or as a stream of reply pieces) with failures as errors the SDKs raise.

Model ids (``resolve_model``), in this order:
- a backend name (``claude``, ``codex``, ``gemini``): that backend with its configured model;
- ``backend/model-id`` (``claude/claude-sonnet-4-5``): that backend, ``model-id`` passed to
  the CLI as its model;
- a vendor model id, by prefix: ``claude-*`` -> claude, ``gpt-*``, ``o<digit>*`` (o3,
  o4-mini) and ``codex-*`` -> codex, ``gemini-*`` -> gemini, ``qwen*`` (qwen-max,
  qwen3-coder-plus) -> qwen, the id passed to the CLI;
- anything else, or a backend disabled in the configuration: 404 ``model_not_found``.

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

A backend that runs and fails is not a 200: it is a 502 carrying the backend's error text,
a run over ``server.request_timeout_secs`` a 504, a CLI that cannot authenticate a 401
``backend_not_authenticated``, a model API's rate limit a 429 ``backend_rate_limited`` (with
Retry-After when the CLI said); all with ``X-Should-Retry: false`` so the SDKs do not re-run a
whole agent turn by themselves. In a stream that has started, the same error ends the stream
in the API's error event.
"""

from __future__ import annotations

import math
import os
import re
import time
from typing import Any, Callable, Dict, Iterator, List, NamedTuple, Optional, Tuple

from .. import events as ev
from .. import execute
from ..backends import base, options, parsing
from ..config import Config
from . import errors
from .context import Context
from .http import close_iterator

SESSION_HEADER = "X-Clinvk-Session-Id"
EPHEMERAL_HEADER = "X-Clinvk-Ephemeral"
# A non-standard header both official SDKs obey before their own retry rules.
NO_RETRY = ("X-Should-Retry", "false")

_VENDOR_PREFIXES = (("claude-", "claude"), ("gpt-", "codex"), ("codex-", "codex"),
                    ("gemini-", "gemini"), ("qwen", "qwen"))
# The run failures whose ApiError (from Context.run) a compat reply passes on with the
# session header and X-Should-Retry: false.
_RUN_FAILURES = ("timeout", "backend_not_authenticated", "backend_rate_limited")
_OPENAI_REASONING_MODEL = re.compile(r"o[0-9]")           # o1, o3-mini, o4-mini, ...


# -- models --------------------------------------------------------------------------------------


def resolve_model(model: str, cfg: Config) -> Tuple[str, str]:
    """(backend name, model for the CLI: "" = the configured one) for a request's ``model``;
    a 404 ``model_not_found`` ApiError when no enabled backend serves it."""
    names = base.NAMES
    backend, cli_model = "", ""
    if model in names:
        backend = model
    elif "/" in model:
        prefix, _, rest = model.partition("/")
        if prefix in names and rest:
            backend, cli_model = prefix, rest
    else:
        lowered = model.lower()
        for prefix, name in _VENDOR_PREFIXES:
            if lowered.startswith(prefix):
                backend = name
        if _OPENAI_REASONING_MODEL.match(lowered):
            backend = "codex"
        cli_model = model
    if not backend:
        raise model_not_found(model, "use a backend name (%s), backend/model-id "
                                     "(claude/claude-sonnet-4-5), or a model id starting with "
                                     "claude-, gpt-, o<digit>, codex-, gemini- or qwen"
                              % ", ".join(names))
    if not cfg.backend_enabled(backend):
        raise model_not_found(model, "its backend %r is disabled in the configuration "
                                     "(backends.%s.enabled: false)" % (backend, backend))
    return backend, cli_model


def model_not_found(model: str, hint: str) -> errors.ApiError:
    return errors.ApiError(404, "model_not_found", "model %r not found: %s"
                           % (model[:100], hint), field="model")


def listed_models(cfg: Config) -> List[Tuple[str, str]]:
    """(model id, backend) of every enabled backend, followed by ``backend/model`` when
    ``backends.<name>.model`` is configured."""
    out: List[Tuple[str, str]] = []
    for name in base.NAMES:
        if not cfg.backend_enabled(name):
            continue
        out.append((name, name))
        configured = cfg.get("backends.%s.model" % name)
        if configured:
            out.append(("%s/%s" % (name, configured), name))
    return out


def vendor(backend: str) -> str:
    """Who makes the backend's models (OpenAI's ``owned_by``): anthropic, openai, google."""
    return base.get(backend).vendor


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
    """A compat request, prepared: the backend run, and the text it sends (the prompt and a
    system prompt) for token estimates."""

    def __init__(self, prepared: execute.Prepared, sent: str) -> None:
        self.prepared = prepared
        self.sent = sent

    @property
    def backend(self) -> str:
        return self.prepared.backend.name


def prepare(ctx: Context, api: str, model: str, conv: Conversation, stream: bool,
            metadata: Optional[Dict[str, str]] = None) -> Run:
    """Resolve the model, check the conversation, build the prompt and prepare the run:
    a new session, or the one named by the X-Clinvk-Session-Id request header."""
    backend_name, cli_model = resolve_model(model, ctx.app.cfg)
    check_conversation(conv)
    backend = base.get(backend_name)
    session_id = ctx.headers.get(SESSION_HEADER, "").strip()
    native_system = honours_system_prompt(backend)
    if session_id:
        prompt = conv.turns[-1].text
    else:
        prompt = render_prompt(conv, system_in_prompt=not native_system)
    system = conv.system if native_system else ""
    request = execute.Request(
        backend=backend_name, prompt=prompt, model=cli_model, system_prompt=system,
        session_id=session_id, ephemeral=_is_true(ctx.headers.get(EPHEMERAL_HEADER, "")),
        dry_run=False, metadata=metadata, tags=[api])
    return Run(ctx.prepare(request, stream=stream), prompt + system)


def _is_true(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes")


def session_headers(session_id: str) -> List[Tuple[str, str]]:
    return [(SESSION_HEADER, session_id)] if session_id else []


class Reply(NamedTuple):
    text: str
    usage: ev.Usage             # with estimates when the backend reported none
    session_id: str


def complete(ctx: Context, run: Run) -> Reply:
    """Run to completion. A failed run raises a 502 (504 on timeout) ApiError."""
    try:
        outcome = ctx.run(run.prepared)
    except errors.ApiError as err:
        if err.code in _RUN_FAILURES:
            err.headers.update(dict([NO_RETRY] + session_headers(err.extra.get("session_id",
                                                                               ""))))
        raise
    result = outcome.result
    if not result.ok:
        raise backend_failed(run.backend, result.error or parsing.failure_message(
            run.backend, result.exit_code, ""), outcome.session_id)
    return Reply(result.text, counted_usage(result.usage, run.sent, result.text),
                 outcome.session_id)


def backend_failed(backend: str, message: str, session_id: str = "") -> errors.ApiError:
    """502: the backend CLI ran and failed; the message is its own error text."""
    return errors.ApiError(502, "backend_failed", "the %s backend failed: %s"
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

    A new session exists only once the run starts, so then the backend is started here and
    its first event awaited, for the session id the response header needs (and a failure
    to start is an HTTP error). A continued session is known already: its run starts with
    the stream, because the session's lock must be taken and released by the one thread
    that writes the stream.
    """
    def describe(exc: BaseException) -> errors.ApiError:
        return ctx.app.error_for(ctx, exc)
    events = ctx.stream(run.prepared)
    p = run.prepared
    if p.session is not None or p.request.ephemeral:
        return (p.session.id if p.session else ""), reply_pieces(events, run.backend, run.sent,
                                                                 describe)
    first = next(events)
    return first.session_id, reply_pieces(_chain(first, events), run.backend, run.sent,
                                          describe)


def _chain(first: ev.Event, rest: Iterator[ev.Event]) -> Iterator[ev.Event]:
    try:
        yield first
        for event in rest:
            yield event
    finally:
        close_iterator(rest)


def reply_pieces(events: Iterator[ev.Event], backend: str, sent: str,
                 describe: Callable[[BaseException], errors.ApiError]) -> Iterator[Any]:
    """Delta pieces of ``backend``'s reply as it produces them (text sent both as deltas and
    whole is sent once: ``events.ReplyText``), then Finished (usage estimated from ``sent``
    and the reply when none was reported), or Failed at the first fatal error (the events
    after it are still read, so the session records the turn). ``describe`` turns an
    exception of the event source into the ApiError to report."""
    reply = ev.ReplyText()
    failure: Optional[errors.ApiError] = None
    usage, exit_code = ev.Usage(), 0
    try:
        for event in events:
            if event.type == ev.ERROR and event.content.get("fatal", True):
                failure = failure or _stream_failure(backend, event)
            elif event.type == ev.DONE:
                usage = ev.Usage.from_dict(event.content.get("usage"))
                exit_code = event.content.get("exit_code") or 0
            elif failure is None:
                piece = reply.add(event)
                if piece:
                    yield Delta(piece)
    except Exception as exc:  # noqa: BLE001 - a broken event source still ends the stream
        failure = failure or describe(exc)
    finally:
        close_iterator(events)
    if failure is None and exit_code != 0:
        failure = backend_failed(backend, parsing.failure_message(backend, exit_code, ""))
    if failure is not None:
        yield Failed(failure)
    else:
        yield Finished(reply.text, counted_usage(usage, sent, reply.text))


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
