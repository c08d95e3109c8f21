"""The HTTP side of the tool bridge, shared by every dialect: a request's tools and tool
results in dialect-neutral form, starting a bridged run, resuming a parked one with the
client's results, and one round of a run as compat reply pieces ending in ``ToolCalls``.

What a bridged run is (README "Client tools"): the CLI gets an MCP server of clinvk's that
offers exactly the client's tools, instead of its built-in tools (claude ``--tools=``; the
built-in tools codex and gemini cannot switch off are left to them, see the backend notes);
when the agent calls one, the response ends with the call in the client's dialect and the run
is parked, its MCP call waiting, until a request carrying the result continues it (its answer
is the next round) or ``server.tool_result_timeout_secs`` pass (the run is killed). A parked
run keeps its run slot. ``tool_choice`` ``none`` runs without the tools; ``required`` and a
named tool add an instruction to the prompt, and a named tool is the only one offered.
"""

from __future__ import annotations

import os
import re
import socket
import sys
import threading
import time
from typing import Any, Callable, Dict, Iterator, List, NamedTuple, Optional, Tuple, Union

from .. import events as ev
from .. import execute
from ..backends import base, options
from ..toolbridge.hub import Hub
from ..redisclient import Client
from ..toolbridge.peers import Peers
from ..toolbridge.peers_redis import SharedPeers
from ..redisclient import RedisError
from ..session_record import check_id
from ..toolbridge.job_calls import JobCalls
from ..toolbridge.runs import CANCELLED, TIMED_OUT, BridgedRun, ParkedRuns, ToolCall, ToolSpec
from . import compat, errors, guards, remote_run, remote_tools, toolforward
from .context import Context
from .http import Response, json_response
from .models import resolve_model

AUTO, NONE, REQUIRED = "auto", "none", "required"


class ToolRequest(NamedTuple):
    """The client's tools and its ``tool_choice``: auto, none, required or a tool's name."""

    tools: List[ToolSpec]
    choice: str = AUTO

    @property
    def bridged(self) -> bool:
        return bool(self.tools) and self.choice != NONE


class ToolCalls(NamedTuple):
    """The last piece of a round that ended on tool calls (instead of ``compat.Finished``)."""

    calls: List[ToolCall]
    text: str
    usage: ev.Usage


class Bridge:
    """What the server holds for bridged runs: the socket hub, the live runs, this instance's
    id (in every call id) and the timeouts. On shutdown, ``drain()`` stops the parked runs
    (their next request can no longer reach this server) while rounds being answered go on
    (a round that ends on calls then stops its run instead of parking it); ``close()``, once
    the requests in flight are done or cancelled, stops what is left and closes the hub."""

    def __init__(self, result_timeout: float) -> None:
        self.hub = Hub()
        self.runs = ParkedRuns()
        self.instance = os.urandom(4).hex()
        self.result_timeout = result_timeout
        self.draining = False
        # Where the other processes' calls wait (toolforward), once listening: the home's
        # registry of serving processes, or the shared store's.
        self.peers: Optional[Union[Peers, SharedPeers]] = None

    def listen_at(self, home: str, host: str, port: int, log: Any,
                  shared: Optional[Client] = None, forward_host: str = "") -> None:
        """Make this process reachable for the results of its calls that reach another one:
        through the ``shared`` store, on ``forward_host`` (default: the address it binds, or
        the host name when it binds every address); else through ``home``'s registry, on
        127.0.0.1 when it listens there (a loopback or wildcard ``host``)."""
        wildcard = host in ("", "0.0.0.0", "::")
        if shared is not None:
            self.peers = SharedPeers(shared, forward_host or (
                socket.gethostname() if wildcard else host))
            self.peers.register(self.instance, port)
            return
        if not wildcard and not guards.is_loopback_host(host):
            return
        peers = Peers(home)
        try:
            peers.register(self.instance, port)
        except OSError as exc:
            log.error("tool results for this server cannot be forwarded to it by the other "
                      "servers of %s: %s" % (home, exc))
            return
        self.peers = peers

    def parked(self, run: BridgedRun) -> None:
        """``run`` is parked on its round's calls: say where, for the other processes."""
        if self.peers is not None:
            # No timeout at all (0): the record lasts a day, the run's own bound does.
            self.peers.parked([c.id for c in run.round_calls], self.result_timeout or 86400)

    def drain(self) -> None:
        self.draining = True
        if self.peers is not None:
            self.peers.unregister()         # its listener is closed now
        self.runs.stop_all(SHUTDOWN, parked_only=True)

    def close(self) -> None:
        self.draining = True
        self.runs.stop_all(SHUTDOWN)
        self.hub.close()
        if self.peers is not None:
            self.peers.unregister()


SHUTDOWN = "the server is shutting down"


def self_command() -> List[str]:
    """The argv that starts this clinvk's ``tool-bridge``: the source tree's clinvk.py, else
    the zipapp that is running (its modules may have been imported from an unpacked copy)."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    script = os.path.join(root, "clinvk.py")
    if not os.path.isfile(script):
        main = getattr(sys.modules.get("__main__"), "__file__", "") or ""
        archive = os.path.dirname(os.path.abspath(main))
        script = archive if os.path.isfile(archive) else root
    return [sys.executable, script, "tool-bridge"]


# The prefixes of the ids the bridge gives calls: OpenAI's APIs, Anthropic's.
ID_PREFIXES = ("call_", "toolu_")
_BRIDGE_ID = re.compile(r"(call|toolu)_[0-9a-f]{8}_[0-9a-f]{20}\Z")


def is_bridge_id(call_id: str) -> bool:
    """Whether ``call_id`` has the form of the ids the bridge gives calls (an Anthropic
    history may hold tool_result blocks of calls made elsewhere: they stay history)."""
    return bool(_BRIDGE_ID.match(call_id))


def tool_spec(name: Any, description: Any, parameters: Any, field: str) -> ToolSpec:
    """A checked tool: a name the CLIs accept as an MCP tool name, a JSON Schema object."""
    if not isinstance(name, str) or not name or len(name) > 64 or not all(
            c.isascii() and (c.isalnum() or c in "_-") for c in name):
        raise errors.invalid("a tool name must be 1 to 64 letters, digits, _ or -, got %r"
                             % (name,), field + ".name")
    if parameters is not None and not isinstance(parameters, dict):
        raise errors.invalid("expected a JSON Schema object", field)
    return ToolSpec(name, description if isinstance(description, str) else "",
                    parameters or {"type": "object", "properties": {}})


def checked(tools: List[ToolSpec], choice: str, field: str) -> ToolRequest:
    names = [t.name for t in tools]
    if len(set(names)) != len(names):
        raise errors.invalid("two tools have the same name", field)
    if choice not in (AUTO, NONE, REQUIRED) and choice not in names:
        raise errors.invalid("names no tool in tools: %r (tools: %s)"
                             % (choice, ", ".join(names) or "none"), "tool_choice")
    if choice == REQUIRED and not tools:
        raise errors.invalid("required needs at least one tool in tools", "tool_choice")
    return ToolRequest(tools, choice)


def _instruction(request: ToolRequest) -> str:
    if request.choice == REQUIRED:
        return "Answer by calling one of the tools you were given."
    if request.choice not in (AUTO, NONE):
        return "Answer by calling the tool %s." % request.choice
    return ""


# -- starting and resuming ---------------------------------------------------------------------


def start(ctx: Context, api: str, model: str, conv: compat.Conversation, request: ToolRequest,
          id_prefix: str, metadata: Optional[Dict[str, str]] = None,
          session_id: Optional[str] = None, ephemeral: Optional[bool] = None,
          stream: bool = False) -> Tuple[Any, str]:
    """Start a bridged run (its first round is read with ``pieces``); returns it and the text
    it sent (for token estimates). ``session_id`` and ``ephemeral`` as ``compat.prepare``
    takes them. 400 naming the backend when its CLI cannot be given tools. A ``stream`` takes
    its run slot as ``Context.stream`` does (``Context.slot_waits_in_stream``). On an API
    node the run is a worker's (``remote_tools``)."""
    problem = _bridge_problem(ctx, model)
    if problem:
        raise errors.invalid(problem, "tools")
    names = [t.name for t in request.tools]
    forced = request.choice if request.choice in names else ""
    instruction = _instruction(request)
    if instruction:
        last = conv.turns[-1]
        conv = compat.Conversation(conv.system, conv.turns[:-1] + [
            compat.Turn(last.role, "%s\n\n%s" % (last.text, instruction), last.index)])
    if remote_run.is_api_node(ctx.app):
        prepared_run = compat.prepare(ctx, api, model, conv, stream=True, metadata=metadata,
                                      session_id=session_id, ephemeral=ephemeral)
        return (remote_tools.start(ctx, prepared_run.prepared, request.tools, forced,
                                   id_prefix), prepared_run.sent)
    sent: List[str] = []

    def prepare(tool_bridge: options.ToolBridge) -> execute.Prepared:
        prepared_run = compat.prepare(ctx, api, model, conv, stream=True, metadata=metadata,
                                      session_id=session_id, ephemeral=ephemeral,
                                      tool_bridge=tool_bridge)
        sent.append(prepared_run.sent)
        return prepared_run.prepared

    def hold_slot(run: BridgedRun, prepared: execute.Prepared) -> Callable[[], None]:
        release = ctx.hold_run_slot(outlive_request=True)
        if ctx.run_entry is not None:
            ctx.app.runs.outlives_request(ctx.run_entry, lambda: run.stop(
                "cancelled by an operator (DELETE /api/v1/runs)"), lambda: run.parked)
            ctx.app.runs.add_backend(ctx.run_entry, prepared.backend.name)
        return release
    run, _ = launch(ctx, request.tools, forced, id_prefix, _owner(ctx), prepare, hold_slot,
                    stream and ctx.slot_waits_in_stream(), [], listed=True)
    return run, sent[0]


def launch(ctx: Context, tools: List[ToolSpec], forced: str, id_prefix: str, owner: str,
           prepare: Callable[[options.ToolBridge], execute.Prepared],
           hold_slot: Callable[[BridgedRun, execute.Prepared], Callable[[], None]],
           slot_in_stream: bool, collected: List[execute.Outcome], listed: bool
           ) -> Tuple[BridgedRun, execute.Prepared]:
    """Start a BridgedRun of ``tools`` here: registered on the hub (and, when ``listed``,
    among this process's parked runs, which requests resume), its run prepared with the
    bridge (``prepare``), its run slot held (``hold_slot``: now, or once its events are
    first read when ``slot_in_stream``) until it ends; then it leaves the hub and the parked
    runs and is counted, and its Outcome is appended to ``collected``."""
    bridge: Bridge = ctx.app.tool_bridge
    run = BridgedRun(tools, owner, id_prefix, bridge.instance, forced=forced,
                     cancel=execute.Cancel())
    call_timeout = bridge.result_timeout + (ctx.app.request_timeout or 0) + 60
    tool_bridge = options.ToolBridge(self_command(), [t.name for t in tools],
                                     forced=run.forced, call_timeout=call_timeout,
                                     ticket=bridge.hub.register(run))
    held: List[Callable[[], None]] = []
    try:
        prepared = prepare(tool_bridge)
        # Rounds are timed by the bridge (request timeout while answering, tool result
        # timeout while parked), not the whole run.
        prepared.timeout = None
        if not slot_in_stream:
            held.append(hold_slot(run, prepared))
    except BaseException:
        bridge.hub.unregister(run)
        raise

    def ended() -> None:
        for release in held:
            release()
        bridge.runs.remove(run)
        bridge.hub.unregister(run)
        if collected:
            outcome = collected[0]
            ctx.app.record_run(prepared.backend.name, "cancelled" if run.stop_reason else (
                "success" if outcome.ok else "failure"), outcome.result.duration_ms,
                outcome.result.usage, ctx.key_id)

    def events() -> Iterator[ev.Event]:
        if slot_in_stream:
            held.append(hold_slot(run, prepared))
        yield from execute.stream(prepared, ctx.app.store, run.cancel, collected)
    run.backend = prepared.backend.name
    if listed:
        bridge.runs.add(run)
    run.start(events(), ended,
              prepared.session.id if prepared.session is not None else prepared.new_session_id)
    return run, prepared


def can_bridge(ctx: Context, model: str) -> bool:
    """Whether the backend ``model`` runs on can be given the client's tools."""
    return not _bridge_problem(ctx, model)


def _bridge_problem(ctx: Context, model: str) -> str:
    backend = base.get(resolve_model(model, ctx.app.cfg)[0])
    return backend.tool_bridge_problem(ctx.app.policy.allow_project_config)


def _owner(ctx: Context) -> str:
    return ctx.api_key.key_id if ctx.api_key is not None else ""


def elsewhere(ctx: Context, results: Dict[str, Tuple[str, bool]]) -> Any:
    """The answer of the instance of this CLINVK_HOME (or node of this store) that made the
    calls, when another one did (``toolforward``); None: ``resume`` here (a worker's run of
    a job, whose calls have no forward record, is followed from any node)."""
    return toolforward.forward(ctx, list(results))


def answer_results(ctx: Context, results: Dict[str, Tuple[str, bool]], field: str,
                   answer: Callable[[BridgedRun], Any]) -> Any:
    """The answer to a request carrying tool results: the other instance's when it made the
    calls (``elsewhere``), else ``answer`` of the parked run here, resumed with them."""
    forwarded = elsewhere(ctx, results)
    if forwarded is not None:
        return forwarded
    return answer(resume(ctx, results, field))


def resume(ctx: Context, results: Dict[str, Tuple[str, bool]], field: str) -> Any:
    """The parked run the results are for, resumed with them (with a shared store, a
    worker's run of a job: ``remote_tools``). 404 ``tool_call_not_found`` for an id no
    parked run (of this API key) waits for; 400 when results of the round are missing or
    belong to two runs; 409 when another request resumed it first."""
    bridge: Bridge = ctx.app.tool_bridge

    def not_found(call_id: str) -> errors.ApiError:
        return errors.ApiError(404, "tool_call_not_found", "no run is waiting for the result "
                               "of tool call %s: the id is unknown, was answered already, "
                               "or its run ended (a parked run is stopped after "
                               "server.tool_result_timeout_secs, %gs here); send the "
                               "conversation again without it to start a new run"
                               % (call_id, bridge.result_timeout), field)
    if ctx.app.shared_store is not None:
        remote = remote_tools.resume(ctx, results, field, _owner(ctx), not_found,
                                     bridge.result_timeout)
        if remote is not None:
            return remote
    found = {call_id: bridge.runs.find(call_id) for call_id in results}
    unknown = [i for i, run in found.items() if run is None or run.owner != _owner(ctx)]
    if unknown:
        raise not_found(unknown[0])
    runs = set(found.values())
    if len(runs) != 1:
        raise errors.invalid("the tool results belong to different runs: send each run's "
                             "results in a request of their own", field)
    run = runs.pop()
    try:
        run.resume(results)
    except ValueError as exc:
        raise errors.invalid("results are missing for tool calls %s of the same turn: send "
                             "every call's result in one request" % exc, field)
    except LookupError:
        raise errors.ApiError(409, "tool_call_in_progress", "another request is already "
                              "continuing the run of tool call %s" % next(iter(results)),
                              field)
    return run


# -- rounds ------------------------------------------------------------------------------------


def pieces(ctx: Context, run: Any, sent: str) -> Iterator[Any]:
    """One round as compat pieces: Delta..., then ToolCalls (the run is parked, its timer
    started) or Finished, or Failed."""
    ctx.watch_client()
    ctx.on_finish(ctx.unwatch_client)
    backend = run.backend
    timer = None
    if ctx.app.request_timeout:
        timer = threading.Timer(ctx.app.request_timeout, run.stop, args=(
            "%s timed out after %gs and was stopped" % (backend, ctx.app.request_timeout),
            TIMED_OUT))
        timer.daemon = True
        timer.start()

    def describe(exc: BaseException) -> errors.ApiError:
        return ctx.app.error_for(ctx, exc)
    events = run.round_events(lambda: ctx.cancel.fired)
    try:
        for piece in compat.reply_pieces(events, backend, sent, describe):
            if isinstance(piece, compat.Failed) and run.stop_reason:
                piece = compat.Failed(errors.timeout(run.stop_reason)
                                      if run.stop_kind == TIMED_OUT
                                      else errors.cancelled(run.stop_reason))
            elif isinstance(piece, compat.Finished) and run.round_calls:
                bridge: Bridge = ctx.app.tool_bridge
                run.park_for(bridge.result_timeout)
                # A worker's run (an API node's) waits on its worker, for any node of the
                # store (its calls are routed by ``toolbridge.job_calls``, not forwarded).
                if isinstance(run, BridgedRun):
                    bridge.parked(run)
                    if bridge.draining:
                        run.stop(SHUTDOWN)
                piece = ToolCalls(list(run.round_calls), piece.reply, piece.usage)
            yield piece
    finally:
        if timer is not None:
            timer.cancel()


class Round(NamedTuple):
    text: str
    calls: List[ToolCall]
    usage: ev.Usage


def complete(ctx: Context, run: Any, sent: str) -> Round:
    """A whole round (not streamed); a failed one raises its ApiError."""
    text: List[str] = []
    for piece in pieces(ctx, run, sent):
        if isinstance(piece, compat.Delta):
            text.append(piece.text)
        elif isinstance(piece, compat.Failed):
            piece.error.headers.update(dict([compat.NO_RETRY] +
                                            compat.session_headers(run.session_id)))
            if piece.error.status == 504:
                piece.error.status = compat.FAILED_RUN_STATUS
            raise piece.error
        elif isinstance(piece, ToolCalls):
            return Round(piece.text, piece.calls, piece.usage)
        else:
            return Round(piece.reply, [], piece.usage)
    return Round("".join(text), [], ev.Usage())


# -- a worker's bridged run (an API node's job: remote_tools) ----------------------------------

# How long a worker's parked run waits on the store at a time before it looks for a cancel.
WAIT_SLICE_SECS = 1.0
# How much longer than the run's own bound its calls stay routed in the store: the worker stops
# the run and deletes them itself; the records only outlive a worker that died.
ROUTED_MARGIN_SECS = 60.0


def run_job(ctx: Any) -> Response:
    """A ``run`` job on the worker that runs it: a plain run (``remote_run.run_job``), or
    one with the client's tools, run here as a single process runs it (prepared again with
    this worker's policy), its rounds recorded as the job's events. A round that ends on
    calls ends with a ``tool_calls`` event, once the calls are routed through the store; the
    run then waits for the results an API node hands over (``toolbridge.job_calls``), or is
    stopped after ``server.tool_result_timeout_secs`` or when the job is cancelled."""
    stored = ctx.job.request
    if "tools" not in stored:
        return remote_run.run_job(ctx)
    request = execute.Request.from_dict(stored)
    request.output_schema = None
    tools = checked([tool_spec(t.get("name"), t.get("description"), t.get("parameters"),
                               "tools[%d]" % i) for i, t in enumerate(stored["tools"])],
                    stored.get("forced") or AUTO, "tools").tools
    id_prefix = stored.get("id_prefix")
    if id_prefix not in ID_PREFIXES:
        raise errors.invalid("expected one of %s, got %r" % (", ".join(ID_PREFIXES),
                                                             id_prefix), "id_prefix")
    new_session_id = stored.get("new_session_id") or ""

    def prepare(tool_bridge: options.ToolBridge) -> execute.Prepared:
        request.tool_bridge = tool_bridge
        prepared = ctx.prepare(request, stream=True)
        if new_session_id and prepared.session is None and prepared.new_session_id:
            # The id the API node already answered with (X-Clinvk-Session-Id).
            prepared.new_session_id = check_id(new_session_id)
        return prepared
    collected: List[execute.Outcome] = []
    run, _ = launch(ctx, tools, stored.get("forced") or "", id_prefix,
                    ctx.job.owner or "", prepare, lambda run, prepared: ctx.hold_run_slot(),
                    False, collected, listed=False)
    try:
        followed = _rounds(ctx, run)
    except execute.ExecError as exc:
        raise errors.from_exception(exc) or exc
    return json_response(dict(remote_run.outcome_result(collected[0]),
                              stop_reason=run.stop_reason, stop_kind=run.stop_kind,
                              unfollowed=not followed))


def forget_unfollowed(store: Any, job: Any) -> None:
    """A bridged run's job that ended while parked, its round taken by no request: nobody
    follows it to delete it once answered (``remote_run.follow``), so it goes now."""
    if isinstance(job.result, dict) and job.result.get("unfollowed"):
        remote_run.forget(store, job.id)


def _rounds(ctx: Any, run: BridgedRun) -> bool:
    """Record the run's rounds until it ends, its calls forgotten in the store then; False
    when it ended while parked, its round taken by no request."""
    calls = JobCalls(ctx.app.shared_store)
    timeout = ctx.app.tool_bridge.result_timeout
    made: List[str] = []
    followed = True
    try:
        while True:
            for event in run.round_events(lambda: ctx.cancel.fired):
                ctx.record(event.to_dict())
            if not run.round_calls:
                return followed
            made += [c.id for c in run.round_calls]
            if not _park(ctx, calls, run, timeout):
                continue
            results, followed = _results(ctx, calls, run, timeout)
            if results is not None:
                run.resume(results)
    finally:
        _quietly(lambda: calls.forget(ctx.job.id, made))


def _park(ctx: Any, calls: JobCalls, run: BridgedRun, timeout: float) -> bool:
    """Route the round's calls through the store, then tell them (a ``tool_calls`` event):
    the request with their results may reach any API node. False (the run stopped) when
    the store cannot be written."""
    round_calls = run.round_calls
    try:
        calls.park(ctx.job.id, ctx.job.owner or "", ctx.writer.count + 1,
                   [c.id for c in round_calls], (timeout or 86400) + ROUTED_MARGIN_SECS,
                   run.backend, run.session_id)
    except RedisError as exc:
        run.stop("the tool calls cannot be routed through the job store: %s" % exc)
        return False
    ctx.record({"type": remote_tools.TOOL_CALLS, "backend": run.backend,
                "session_id": run.session_id, "content": {"calls": [
                    {"id": c.id, "name": c.name, "arguments": c.arguments}
                    for c in round_calls]}})
    return True


def _results(ctx: Any, calls: JobCalls, run: BridgedRun, timeout: float
             ) -> Tuple[Optional[Dict[str, Tuple[str, bool]]], bool]:
    """(the results a request handed over for the parked round, whether a request took
    it). No results (the run is stopped) when none came within ``timeout`` (0: no bound) or
    the job was cancelled first. Which came first is the store's to say: taking the round
    back (``unpark``) and handing results over exclude each other, and the results come
    with the taking, so a request that took the round in time continues the run."""
    deadline = time.monotonic() + timeout if timeout else None
    while not run.ended:
        expired = deadline is not None and time.monotonic() >= deadline
        if expired or ctx.cancel.fired:
            try:
                taken = not calls.unpark(ctx.job.id)
                results = calls.wait_results(ctx.job.id, WAIT_SLICE_SECS) if taken else None
            except RedisError:
                taken, results = False, None
            if results is not None and not ctx.cancel.fired:
                return results, True
            if expired:
                run.expire(timeout)
            else:
                run.stop("the job was cancelled", CANCELLED)
            return None, taken
        left = WAIT_SLICE_SECS if deadline is None else deadline - time.monotonic()
        try:
            results = calls.wait_results(ctx.job.id, min(WAIT_SLICE_SECS, max(left, 0.0)))
        except RedisError:
            time.sleep(WAIT_SLICE_SECS)     # Redis restarting: the run waits on
            continue
        if results is not None:
            return results, True
    return None, False


def _quietly(action: Callable[[], None]) -> None:
    try:
        action()
    except RedisError:
        pass                # the keys expire (ROUTED_MARGIN_SECS)
