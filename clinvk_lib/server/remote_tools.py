"""Bridged runs (client tools, ``toolcalls``) on an API node (``server.role: api``): the run is
a ``run`` job whose request carries the client's tools, run by a worker, followed here one
round at a time.

The worker runs the bridge as a single process does (``toolcalls.run_job``); a round that ends
on calls ends, in the job's events, with a ``tool_calls`` event, and the worker parks: the
calls are routed through the store (``toolbridge.job_calls``), so the request carrying their
results may reach any API node. That node finds the calls' job, hands the results over and
follows the job from the ``tool_calls`` event on: the next round. Where the worker waits
(``server.tool_result_timeout_secs``, the run's process group, its session) and how a round
reads stay the worker's; an API node holds nothing between rounds.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from .. import events as ev
from .. import execute
from ..job_store import RUN
from ..redisclient import RedisError
from ..toolbridge.job_calls import JobCalls
from ..toolbridge.runs import CANCELLED, ToolCall, ToolSpec
from . import errors, remote_run

# The job event that ends a round on calls: {"calls": [{"id", "name", "arguments"}]}.
TOOL_CALLS = "tool_calls"

Results = Dict[str, Tuple[str, bool]]


class RemoteBridgedRun:
    """A bridged run on a worker as ``toolcalls.pieces`` and ``complete`` read it here: the
    same attributes as ``BridgedRun`` (``backend``, ``session_id``, ``round_calls``,
    ``stop_reason``, ``stop_kind``) and methods (``round_events``, ``park_for``, ``stop``),
    for the request ``ctx`` answers (one round)."""

    def __init__(self, ctx: Any, job_id: str, backend: str, session_id: str,
                 after: int = 0) -> None:
        self.ctx = ctx
        self.job_id = job_id
        self.backend = backend
        self.session_id = session_id
        self.after = after
        self.round_calls: List[ToolCall] = []
        self.parked = False
        self.stop_reason = ""
        self.stop_kind = ""

    def round_events(self, abandoned: Callable[[], bool]) -> Iterator[ev.Event]:
        """The round's events, as the worker's run gave them; it ends at the job's
        ``tool_calls`` event (``round_calls`` then holds them: the run waits on the worker)
        or when the job ends (the ApiError the worker answered, when the run did not start).
        The client hanging up (``ctx.cancel``, which ``abandoned`` reads too) cancels it."""
        self.round_calls = []
        final: List[Any] = []
        for data in remote_run.follow(self.ctx, self.job_id, final, self.after,
                                      lambda data: data["type"] == TOOL_CALLS):
            if data["type"] == TOOL_CALLS:      # the last one: ``follow`` pauses there
                self.round_calls = [ToolCall(c["id"], c["name"], c["arguments"])
                                    for c in data["content"]["calls"]]
                self.parked = True
            else:
                yield remote_run.event_of(data)
        if self.round_calls:
            return
        result = remote_run.ended(final)
        # Counted in this node's metrics too, as a run it followed to its end.
        self.ctx.count_run(self.backend, remote_run.outcome_of(result, []))
        if not self.stop_reason:
            self.stop_reason = result.get("stop_reason") or ""
            self.stop_kind = result.get("stop_kind") or ""

    def park_for(self, seconds: float) -> None:
        """Nothing to do: the worker stops its run when no result comes in time."""

    def stop(self, reason: str, kind: str = CANCELLED) -> None:
        """Stop the run (its job is cancelled); the first stop's reason and kind are kept."""
        if not self.stop_reason:
            self.stop_reason, self.stop_kind = reason, kind
        remote_run.cancel(self.ctx.app.jobs, self.job_id)


def start(ctx: Any, prepared: execute.Prepared, tools: List[ToolSpec], forced: str,
          id_prefix: str) -> RemoteBridgedRun:
    """Hand ``prepared`` (prepared here without the bridge: the worker prepares it again
    with its own) to a worker as a bridged run of ``tools``; its first round is read with
    ``toolcalls.pieces``. The session is the one prepared here: the worker uses its id."""
    session_id = prepared.session.id if prepared.session is not None else \
        prepared.new_session_id
    request = dict(remote_run.run_request(prepared.request),
                   tools=[dict(t._asdict()) for t in tools], forced=forced,
                   id_prefix=id_prefix, new_session_id=prepared.new_session_id)
    ctx.hold_run_slot()
    job = remote_run.submit(ctx, RUN, request)
    return RemoteBridgedRun(ctx, job.id, prepared.backend.name, session_id)


def resume(ctx: Any, results: Results, field: str, owner: str,
           not_found: Callable[[str], errors.ApiError], result_timeout: float
           ) -> Optional[RemoteBridgedRun]:
    """The job run the results are for, handed them and followed from its parked round on;
    None when no call is a job run's (the caller looks for a run of its own). The errors as
    ``toolcalls.resume`` answers them: ``not_found(call_id)`` for a call no run of ``owner``
    waits for, 400 for results of two runs or missing ones, 409 when another request took
    the round first."""
    calls = JobCalls(ctx.app.shared_store)
    try:
        found = {call_id: calls.find(call_id) for call_id in results}
        if not any(found.values()):
            return None
        jobs = {f.job for f in found.values() if f is not None}
        parked = calls.round_of(jobs.pop()) if len(jobs) == 1 else None
    except RedisError as exc:
        raise unavailable(exc) from None
    unknown = [i for i, f in found.items() if f is None or f.owner != owner or (
        parked is not None and i not in parked.calls)]
    if unknown:
        raise not_found(unknown[0])
    if len({f.job for f in found.values() if f is not None}) != 1:
        raise errors.invalid("the tool results belong to different runs: send each run's "
                             "results in a request of their own", field)
    job_id = next(iter(found.values())).job
    if parked is None:
        raise not_found(next(iter(results)))
    missing = [c for c in parked.calls if c not in results]
    if missing:
        raise errors.invalid("results are missing for tool calls %s of the same turn: send "
                             "every call's result in one request" % ", ".join(missing), field)
    ctx.hold_run_slot()
    try:
        taken = calls.hand_over(job_id, parked, results, result_timeout or 86400)
    except RedisError as exc:
        raise unavailable(exc) from None
    if not taken:
        raise errors.ApiError(409, "tool_call_in_progress", "another request is already "
                              "continuing the run of tool call %s" % next(iter(results)),
                              field)
    return RemoteBridgedRun(ctx, job_id, parked.backend, parked.session_id, parked.seq)


def unavailable(exc: Exception) -> errors.ApiError:
    return errors.ApiError(503, "job_store_unavailable", "the tool calls' run cannot be "
                           "reached through the job store: %s" % exc,
                           headers={"Retry-After": "1"})
