"""Runs on an API node (``server.role: api`` with ``server.store``): it executes nothing
itself. Every backend run a route asks for becomes a job on the shared queue, which a
``clinvk worker`` (or a ``clinvk serve`` of role ``all``) runs; the API node waits on the job
and follows its events in the store, so every dialect renders what it would have rendered
from a local run.

- A single run (the native prompt, Chat Completions, Messages, Responses: whatever goes
  through ``Context.run`` / ``Context.stream``) is a job of the internal kind ``run``: its
  request is the route's ``execute.Request`` as the client's fields made it, its events are
  the run's unified events, its result the run's ``execute.Outcome``. The worker prepares
  the request again with its own policy, backends and sessions: it trusts nothing the API
  node checked.
- A fan-out (parallel, chain, compare) is a job of the route's own kind: its result is the
  route's answer.
- A job no worker starts within ``server.queue_timeout_secs`` is cancelled and the request
  gets 503 ``no_worker``; a client that hangs up cancels its job (the worker kills the run's
  process group); an error the worker's route answered is answered with its status.

- A bridged run (client tools, ``toolcalls``) is a ``run`` job whose request also carries the
  tools: the worker runs the bridge and parks between rounds; the API nodes follow the job a
  round at a time (``remote_tools``).
"""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, Iterator, List, Optional

from .. import events as ev
from .. import execute
from ..backends import parsing
from ..job_events import JOB
from ..job_store import (FAILED, FINAL, RUN, RUNNING, SUCCEEDED, Job, JobStoreError,
                         new_job_id)
from . import errors
from .http import Response, json_response
from .profiles import requested_profile

# How long the record of a job whose final event was read may take to say it ended.
RECORD_WAIT_SECS = 5.0
# How often a request following its run on a worker tries the store again while it cannot
# be reached.
OUTAGE_RETRY_SECS = 0.2
# The execute.Request fields a run job carries (what the client's request made them).
_REQUEST_FIELDS = execute.Request.FIELDS + ("output_schema",)


def is_api_node(app: Any) -> bool:
    """Whether ``app`` runs nothing itself: its jobs are a shared runner that pulls none."""
    jobs = getattr(app, "jobs", None)
    return jobs is not None and getattr(jobs, "pulls", True) is False


# -- the API node ---------------------------------------------------------------------------


def run_request(request: execute.Request) -> Dict[str, Any]:
    """The job request of a run: the ``execute.Request`` fields, as JSON."""
    return {k: getattr(request, k) for k in _REQUEST_FIELDS}


def events(ctx: Any, prepared: execute.Prepared,
           outcome: Optional[List[execute.Outcome]] = None) -> Iterator[ev.Event]:
    """The unified events of ``prepared`` run as a job on a worker, as ``execute.stream``
    yields them; the final Outcome appended to ``outcome``. ApiError when the run could not
    start there (the worker's error, or 503 when no worker took it in time)."""
    job = submit(ctx, RUN, run_request(prepared.request))
    seen: List[ev.Event] = []
    final: List[Job] = []
    for data in follow(ctx, job.id, final):
        event = event_of(data)
        seen.append(event)
        yield event
    result = ended(final)
    if outcome is not None:
        outcome.append(outcome_of(result, seen))


def event_of(data: Dict[str, Any]) -> ev.Event:
    """The unified event a job event of a run holds."""
    return ev.Event(data["type"], data.get("backend", ""), data.get("content"),
                    data.get("session_id", ""), data.get("timestamp", ""))


def run(ctx: Any, prepared: execute.Prepared) -> execute.Outcome:
    """``prepared`` run to its end on a worker: its Outcome."""
    collected: List[execute.Outcome] = []
    for event in events(ctx, prepared, collected):
        ctx.record_run_event(event.to_dict())
    return collected[0]


def fan_out(kind: str) -> Callable[[Any], Response]:
    """The handler of a fan-out route on an API node: the request runs as a job of ``kind``
    and the job's result is the answer."""
    def handler(ctx: Any) -> Response:
        body = ctx.json_body()
        release = ctx.hold_run_slot()
        try:
            final: List[Job] = []
            for _ in follow(ctx, submit(ctx, kind, body).id, final):
                pass
            answer = ended(final)
        finally:
            release()
        if not body.get("dry_run"):
            count_items(ctx, answer)
        return json_response(answer)
    return handler


def count_items(ctx: Any, answer: Dict[str, Any]) -> None:
    """Count each finished item of a fan-out's answer in this node's metrics, as a local
    fan-out does (a cancelled one, exit code -1, is not counted)."""
    for item in answer["results"]:
        if item["exit_code"] == -1:
            continue
        ctx.app.record_run(item["backend"], "success" if item["exit_code"] == 0 and
                           not item["error"] else "failure", item["duration_ms"],
                           ev.Usage.from_dict(item.get("token_usage")), ctx.key_id)


def submit(ctx: Any, kind: str, request: Dict[str, Any]) -> Job:
    """Queue a job of ``kind`` owned by the caller's key, in the run profile the caller asked
    for (the shared runner routes it)."""
    access = ctx.session_access()
    job = Job(new_job_id(), kind, request, owner=access.key_id,
              owner_everything=access.everything,
              profile=requested_profile(ctx.headers, ctx.app.cfg),
              metadata={"request_id": ctx.request_id, "route": ctx.route_template})
    ctx.app.jobs.submit(job)
    return job


def follow(ctx: Any, job_id: str, final: List[Job], after: int = 0,
           pause: Optional[Callable[[Dict[str, Any]], bool]] = None
           ) -> Iterator[Dict[str, Any]]:
    """The job's events after seq ``after`` but its ``job`` ones, until it ends (then the job
    as it ended is appended to ``final``), or until an event ``pause`` is true of (the job
    goes on: another request follows it on from there). Not started by any worker within
    ``server.queue_timeout_secs``: cancelled, and 503 ``no_worker``. The client gone or the
    follower closed before the job ended or paused: the job is cancelled."""
    runner = ctx.app.jobs
    wait = ctx.app.cfg.get("server.queue_timeout_secs")
    deadline = time.monotonic() + wait
    started = [after > 0]
    paused = False

    # A shutdown does not stop following: in-flight requests get the grace period, then
    # ``app.cancel_all`` fires their cancel.
    def gone() -> bool:
        return ctx.cancel.fired or (not started[0] and time.monotonic() >= deadline)
    finished = False
    try:
        ending = False
        for event in through_outages(ctx, job_id, gone, after):
            if event["type"] != JOB:
                yield event
                if pause is not None and pause(event):
                    paused = True
                    return
                continue
            status = event["content"].get("status")
            started[0] = started[0] or status == RUNNING
            ending = status in FINAL
        try:
            last = ended_record(runner.store, job_id, ending)
        except JobStoreError as exc:
            raise store_unavailable(exc) from None
        finished = last is not None and last.final
        if finished:
            final.append(last)
        elif not started[0] and not ctx.cancel.fired:
            raise errors.ApiError(
                503, "no_worker", "no worker started the run within %gs "
                "(server.queue_timeout_secs): this API node (server.role: api) runs nothing "
                "itself; start a clinvk worker on the same server.store" % wait,
                headers={"Retry-After": "10"})
    finally:
        if not finished and not paused:
            final.append(cancel(runner, job_id))
        if final and final[0] is not None and final[0].final:
            ctx.on_finish(lambda: forget(runner.store, job_id))


def through_outages(ctx: Any, job_id: str, gone: Callable[[], bool], after: int = 0
                    ) -> Iterator[Dict[str, Any]]:
    """The job's events after seq ``after`` as ``runner.follow`` yields them, followed on
    after the last one seen when the store cannot be reached (Redis restarting: the run goes
    on on its worker meanwhile). Unreachable for ``server.job_visibility_timeout_secs`` since
    the last event: 503 ``job_store_unavailable``."""
    runner = ctx.app.jobs
    patience = ctx.app.cfg.get("server.job_visibility_timeout_secs")
    seq = after
    last_heard = time.monotonic()
    while True:
        try:
            for event in runner.follow(job_id, seq, gone):
                seq = event.get("seq", seq)
                last_heard = time.monotonic()
                yield event
            return
        except (JobStoreError, OSError) as exc:
            if gone() or time.monotonic() - last_heard >= patience:
                raise store_unavailable(exc) from None
            time.sleep(OUTAGE_RETRY_SECS)


def store_unavailable(exc: Exception) -> errors.ApiError:
    return errors.ApiError(503, "job_store_unavailable", "the run's job cannot be followed: "
                           "%s" % exc, headers={"Retry-After": "1"})


def cancel(runner: Any, job_id: str) -> Optional[Job]:
    """Cancel the job; None when the store cannot be reached (the job then ends on its
    worker, and its record goes with server.job_retention_days)."""
    try:
        return runner.cancel(job_id)
    except JobStoreError:
        return None


def forget(store: Any, job_id: str) -> None:
    """Delete an answered job (once the answer is written): a synchronous request leaves
    nothing in the store. One that cannot be deleted now goes with the retention."""
    try:
        store.delete(job_id)
    except JobStoreError:
        pass


def ended_record(store: Any, job_id: str, ending: bool) -> Optional[Job]:
    """The job's record; once its final event is written (``ending``), the record that says
    so (written right after the event: waited for, RECORD_WAIT_SECS at most)."""
    until = time.monotonic() + RECORD_WAIT_SECS
    job = store.read(job_id)
    while ending and (job is None or not job.final) and time.monotonic() < until:
        time.sleep(0.002)
        job = store.read(job_id)
    return job


def ended(final: List[Optional[Job]]) -> Any:
    """The result of the job ``follow`` followed, or the ApiError its route answered (503
    cancelled when it was stopped before it answered)."""
    job = final[0] if final else None
    if job is not None and job.result is not None:
        return job.result
    error = (job.error if job is not None else None) or {}
    extra = {k: v for k, v in error.items() if k not in ("error", "message", "status", "field")}
    raise errors.ApiError(int(error.get("status") or 503), error.get("error") or "cancelled",
                          error.get("message") or "the run was stopped before it ended",
                          error.get("field") or "", extra=extra)


def outcome_of(result: Dict[str, Any], seen: List[ev.Event]) -> execute.Outcome:
    """The ``execute.Outcome`` a run job's result describes (its events: ``seen``)."""
    r = parsing.Result(result["backend"], result["text"], result["backend_session_id"],
                       result["model"], ev.Usage.from_dict(result["usage"]), result["error"],
                       result["exit_code"], result["duration_ms"], seen, result["structured"])
    return execute.Outcome(r, result["session_id"], result["timed_out"], result["cancelled"],
                           result["timeout"], result["error_kind"], result["retry_after"])


# -- the worker ------------------------------------------------------------------------------


def run_job(ctx: Any) -> Response:
    """A ``run`` job, on the node that runs it: the stored request prepared with this node's
    policy and run in one of its run slots; its result the Outcome (a run that failed is a
    result too: the API node answers it as a local run's failure)."""
    stored = ctx.job.request
    request = execute.Request.from_dict(stored)
    request.output_schema = stored.get("output_schema")
    prepared = ctx.prepare(request, stream=True)
    release = ctx.hold_run_slot()
    try:
        outcome = ctx.run_to_end(prepared)
    except execute.ExecError as exc:
        raise errors.from_exception(exc) or exc
    finally:
        release()
    # Counted here, where it ran (the shared usage counters); the API node that waits on it
    # counts it in its own metrics only.
    ctx.count_run(outcome.result.backend, outcome)
    return json_response(outcome_result(outcome))


def outcome_result(outcome: execute.Outcome) -> Dict[str, Any]:
    """A run job's result: its Outcome as JSON (``outcome_of`` reads it back)."""
    r = outcome.result
    return {
        "backend": r.backend, "text": r.text, "backend_session_id": r.backend_session_id,
        "model": r.model, "usage": r.usage.to_dict(), "error": r.error,
        "exit_code": r.exit_code, "duration_ms": r.duration_ms, "structured": r.structured,
        "session_id": outcome.session_id, "timed_out": outcome.timed_out,
        "cancelled": outcome.cancelled, "timeout": outcome.timeout,
        "error_kind": outcome.error_kind, "retry_after": outcome.retry_after}


def judge_run(result: Dict[str, Any]) -> Any:
    """(status, error) of a run job: succeeded when the run did."""
    if result["exit_code"] == 0 and not result["error"] and not result["timed_out"] \
            and not result["cancelled"]:
        return SUCCEEDED, None
    return FAILED, {"error": "run_failed", "message": result["error"] or
                    "the %s run exited with %d" % (result["backend"], result["exit_code"])}
