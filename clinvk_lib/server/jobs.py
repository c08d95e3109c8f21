"""The durable jobs API (``/api/v1/jobs``): start a run and walk away, come back for its result
and its events, cancel it, be called back when it ends.

``POST`` checks the request as its synchronous route would (the same shape, then what the
route checks before it runs: ``prepare`` for a prompt, ``plan_compare`` for a compare), so a job
that could not start is refused now with that route's error instead of failing later; then the
job is saved and queued (``job_runner``). Jobs are scoped to the API key that created them, as
sessions are: another key gets 404 for them, never 403.

The events route reads the job's event log (``job_events``): NDJSON lines by default, SSE
(``id:`` = seq) with ``Accept: text/event-stream``; ``?after=N`` or ``Last-Event-ID`` resumes
after event N.
"""

from __future__ import annotations

import contextlib
from typing import Any, Dict, Iterator, Optional
from urllib.parse import urlsplit

from .. import execute, orchestrate
from ..job_store import (Job, JobNotFound, JobStoreError, new_job_id)
from ..schema import ValidationError, validate, validate_query
from . import errors, native, ndjson, openapi, sse, webhooks
from .app import App
from .context import Context
from .http import Response, StreamResponse, dump_json, json_response
from .job_context import JobContext
from .profiles import requested_profile
from .jobs_shapes import KIND_ROUTES, JobEventsParams, JobPath, JobsQuery


def register(app: App) -> None:
    """Add the jobs routes (``app.jobs`` is the server's ``job_runner.JobRunner``)."""
    handlers = {"createJob": create_job, "listJobs": list_jobs, "getJob": get_job,
                "deleteJob": delete_job, "getJobEvents": job_events}
    for spec in openapi.DEFAULT_ROUTES:
        handler = handlers.get(spec.operation_id)
        if handler is not None:
            app.add_route(spec, handler)


@contextlib.contextmanager
def _store_errors() -> Iterator[None]:
    """The job store's failures as the API's: 404 for a job the caller cannot see, 503 when
    the store cannot be used."""
    try:
        yield
    except JobNotFound as exc:
        raise errors.ApiError(404, "job_not_found", str(exc), "id")
    except JobStoreError as exc:
        raise errors.ApiError(503, "job_store_unavailable", str(exc))


# -- POST /api/v1/jobs ----------------------------------------------------------------------------


def create_job(ctx: Context) -> Response:
    """Accept a job: 202 with Location and the job object (queued)."""
    body = ctx.json_body()
    kind = body["kind"]
    access = ctx.session_access()
    url = body.get("webhook_url") or ""
    if url:
        webhooks.check_url(url, ctx.app.cfg)
    job = Job(new_job_id(), kind, validate_request(kind, body["request"]),
              profile=requested_profile(ctx.headers, ctx.app.cfg),
              metadata=body["metadata"], owner=access.key_id,
              owner_everything=access.everything, webhook_url=url,
              webhook={"url": webhook_origin(url), "status": "pending", "delivery_id": "",
                       "attempts": []} if url else None)
    prepared = check_it_can_start(ctx.app, job)
    with _store_errors():
        ctx.app.jobs.submit(job, prepared)
    return json_response(job.public(), 202,
                         headers=[("Location", "/api/v1/jobs/" + job.id)])


def validate_request(kind: str, request: Dict[str, Any]) -> Dict[str, Any]:
    """``request`` checked against its synchronous route's shape, errors named from the job's
    body (``request.tasks[1].backend``)."""
    try:
        return validate(KIND_ROUTES[kind][1], request)
    except ValidationError as exc:
        where = "request" + ("" if not exc.path or exc.path.startswith("[") else ".") + exc.path
        raise ValidationError(where, exc.message)


def check_it_can_start(app: App, job: Job) -> Optional[execute.Prepared]:
    """What the synchronous route refuses before it runs anything, refused now with its
    error: a prompt's backend, workdir, session, flags and modes; a compare left with no
    backend, or refused by every backend alike. Parallel tasks and chain steps fail alone,
    as they do in the synchronous route's answer. Returns a prompt's prepared run."""
    ctx = JobContext(app, job)
    if job.kind == "prompt":
        return ctx.prepare(native.prompt_request(ctx.json_body()))
    if job.kind == "compare":
        try:
            orchestrate.plan_compare(**native.compare_plan(ctx, ctx.json_body()))
        except Exception as exc:
            raise errors.from_exception(exc) or exc
    return None


def webhook_origin(url: str) -> str:
    """``scheme://host[:port]`` of a webhook URL: what the job shows of it (its path and
    query may carry a token)."""
    parts = urlsplit(url)
    return "%s://%s" % (parts.scheme.lower(), parts.netloc.lower())


# -- GET /api/v1/jobs, GET and DELETE /api/v1/jobs/{id} -------------------------------------------


def job_object(ctx: Context, job: Job) -> Dict[str, Any]:
    return job.public(ctx.app.jobs.event_count(job))


def list_jobs(ctx: Context) -> Response:
    """The caller's jobs, newest first, without request and result."""
    q = validate_query(JobsQuery, ctx.query())
    with _store_errors():
        found, total = ctx.app.jobs.store.list(ctx.session_access(), q.get("status"),
                                               q.get("kind"), q["limit"] or None, q["offset"])
    summaries = []
    for job in found:
        item = job_object(ctx, job)
        del item["request"], item["result"]
        summaries.append(item)
    return json_response({"jobs": summaries, "total": total, "limit": q["limit"],
                          "offset": q["offset"]})


def _own_job(ctx: Context) -> Job:
    job_id = validate_query(JobPath, ctx.params)["id"]
    with _store_errors():
        return ctx.app.jobs.store.get(job_id, ctx.session_access())


def get_job(ctx: Context) -> Response:
    return json_response(job_object(ctx, _own_job(ctx)))


def delete_job(ctx: Context) -> Response:
    """Cancel a queued or running job (the job once stopped); remove a finished one."""
    job = _own_job(ctx)
    with _store_errors():
        if job.final:
            ctx.app.jobs.store.delete(job.id)
            return json_response({"id": job.id, "deleted": True})
        stopped = ctx.app.jobs.cancel(job.id)
    if stopped is None:
        raise errors.ApiError(404, "job_not_found", str(JobNotFound(job.id)), "id")
    return json_response(job_object(ctx, stopped))


# -- GET /api/v1/jobs/{id}/events ------------------------------------------------------------------


def job_events(ctx: Context) -> StreamResponse:
    """The job's events after ``after`` (or Last-Event-ID), as NDJSON or SSE."""
    params = validate_query(JobEventsParams, dict(ctx.query(), **ctx.params))
    job = _own_job(ctx)
    use_sse = "text/event-stream" in ctx.headers.get("Accept", "")
    after = params["after"]
    if use_sse:
        after = _last_event_id(ctx.headers.get("Last-Event-ID"), after)
    events = ctx.app.jobs.follow(job.id, after, lambda: ctx.app.draining)
    if use_sse:
        return sse.response((_sse_frame(e) for e in events), sse.COMMENT_KEEPALIVE,
                            ctx.app.cfg.get("server.sse_keepalive_secs"))
    return ndjson.response((dump_json(e) + b"\n" for e in events),
                           ctx.app.cfg.get("server.sse_keepalive_secs"))


def _last_event_id(header: Optional[str], default: int) -> int:
    """The seq an SSE client last saw (Last-Event-ID), else ``default``."""
    if header is None or not header.strip():
        return default
    value = header.strip()
    if not value.isdigit() or len(value) > 18:
        raise errors.invalid("expected the seq of an event (a whole number), got %r"
                             % value[:40], "Last-Event-ID")
    return int(value)


def _sse_frame(event: Dict[str, Any]) -> bytes:
    return b"id: %d\n" % event["seq"] + sse.frame(event, event["type"])
