"""Background responses (the Responses API's ``background: true``) run as durable jobs.

A background request is checked as a foreground one is (its input, its model, the session it
continues, the policy: ``prepare_run`` on the job's context, which prepares the run the job
will start with), stored ``queued``, and submitted as a job of kind ``response``
(``job_runner``): it waits in the FIFO queue with every other job, bounded by
``server.max_queued_jobs`` (503 past it), shares the run slots, and records its unified
events as any job does (``GET /api/v1/jobs/{id}/events``).

The stored response names its job (``job_id``). While the job has not ended the response
shows the job's status (``queued``, then ``in_progress``); the run stores it ``completed``, or
``failed`` with the run's error. Whatever else ends the job settles the response from the
job's end: a cancel (``POST .../cancel``, ``DELETE``, or the job's own routes: the job's process
group is killed) makes it ``cancelled``; a shutdown past its grace period or a server that died
(the job ends ``interrupted``) makes it ``failed``, saying so. The job's ``ended`` hook settles
it at once; a read settles it too, should that hook never have run (its process died first).
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional

from ..job_store import (CANCELLED, QUEUED, RESPONSE, SUCCEEDED, Job, JobStoreError,
                         new_job_id)
from ..sessions import EVERYTHING
from . import compat, errors
from .context import Context
from .http import Response, json_response
from .job_context import JobContext, Requeue
from .job_runner import JobRunner, Kind
from .profiles import requested_profile
from .response_object import IN_PROGRESS, RUNNING, Draft
from .response_store import ResponseStore, ResponseStoreError, StoredResponse, unavailable

# (ctx, Responses body, session id to continue ("" = none), ephemeral) -> the prepared run.
PrepareRun = Callable[[Context, Dict[str, Any], str, bool], compat.Run]


class BackgroundResponses:
    """The background responses of one server, over its response store and its jobs:
    ``start`` accepts one, ``current`` is a stored response as it stands now, ``cancel``
    stops one, ``forget`` stops the run of a deleted one."""

    def __init__(self, store: ResponseStore, jobs: JobRunner, prepare_run: PrepareRun) -> None:
        self.store = store
        self.jobs = jobs
        self.prepare_run = prepare_run
        jobs.add_kind(RESPONSE, Kind(self.run, _succeeded, self.ended))

    def start(self, ctx: Context, body: Dict[str, Any], record: StoredResponse,
              ephemeral: bool) -> Response:
        """Check the request, store ``record`` queued and submit its job; the answer is the
        queued response."""
        access = ctx.session_access()
        job = Job(new_job_id(), RESPONSE, {"response_id": record.id, "response": body,
                                           "session_id": record.session_id,
                                           "ephemeral": ephemeral},
                  metadata=body.get("metadata") or {}, owner=access.key_id,
                  owner_everything=access.everything,
                  profile=requested_profile(ctx.headers, ctx.app.cfg))
        run = self.prepare_run(JobContext(ctx.app, job), body, record.session_id, ephemeral)
        record.backend, record.job_id = run.backend, job.id
        record.response = dict(record.response, status=QUEUED)
        try:
            self.store.add(record)          # first: a GET right after the answer finds it
        except ResponseStoreError as exc:
            raise unavailable(exc)
        try:
            self.jobs.submit(job, run.prepared)
        except JobStoreError as exc:
            self._unstore(record)
            raise errors.ApiError(503, "job_store_unavailable", str(exc))
        except BaseException:
            self._unstore(record)
            raise
        return json_response(record.response, headers=compat.session_headers(record.session_id))

    def _unstore(self, record: StoredResponse) -> None:
        """Remove a response whose job was not submitted. Should the store fail too (one
        Redis holds both), the response stays queued with no job, and its first read settles
        it failed ("gone")."""
        try:
            self.store.delete(record.id)
        except ResponseStoreError:
            pass

    # -- the job ---------------------------------------------------------------------------

    def run(self, ctx: JobContext) -> Response:
        """A response job's run: the backend answers and the response is stored completed,
        or failed with the run's error (a cancel or a shutdown is settled by ``ended``)."""
        request = ctx.json_body()
        try:
            record = self.store.get(request["response_id"], EVERYTHING)
        except ResponseStoreError as exc:
            raise unavailable(exc)
        if record is None:
            raise errors.cancelled("response %s was deleted before it ran"
                                   % request["response_id"])
        draft = Draft.of(record.response)
        try:
            run = self.prepare_run(ctx, request["response"], request["session_id"],
                                   request["ephemeral"])
            reply = compat.complete(ctx, run)
        except Requeue:
            raise
        except Exception as exc:  # noqa: BLE001 - every failure ends the response
            err = ctx.app.error_for(ctx, exc)
            record.session_id = record.session_id or err.headers.get(
                compat.SESSION_HEADER, "") or err.extra.get("session_id", "")
            if not ctx.cancel.fired:
                record.response = draft.fail(err)
            self._save(ctx, record)
            raise err from exc
        record.response = draft.complete(reply.text, reply.usage)
        record.session_id = reply.session_id
        self._save(ctx, record)
        return json_response(record.response)

    def _save(self, ctx: Context, record: StoredResponse) -> None:
        try:
            self.store.update(record)
        except ResponseStoreError as exc:
            ctx.app.log.error("response %s not stored: %s" % (record.id, exc), ctx.request_id)

    def ended(self, job: Job) -> None:
        """The job has ended: settle its response if it still shows running."""
        record = self.store.get(job.request["response_id"], EVERYTHING)
        if record is not None and record.status in RUNNING:
            self._settle(record, job)

    # -- reads and cancels -----------------------------------------------------------------

    def current(self, record: StoredResponse) -> StoredResponse:
        """The response as it stands: a running one shows its job's status, and is settled
        (and stored so) once its job has ended or is gone."""
        if record.status not in RUNNING:
            return record
        job = self._job(record)
        if job is None or job.final:
            return self._settle(record, job)
        record.response = dict(record.response,
                               status=QUEUED if job.status == QUEUED else IN_PROGRESS)
        return record

    def cancel(self, record: StoredResponse) -> StoredResponse:
        """Cancel the response's job (its process group is killed; waits until it has
        stopped, a few seconds at most) and return the response as it is then."""
        try:
            self.jobs.cancel(record.job_id)
        except JobStoreError as exc:
            raise errors.ApiError(503, "job_store_unavailable", str(exc))
        now = self.current(self.store.get(record.id, EVERYTHING) or record)
        if now.status in RUNNING:               # still stopping: it will end cancelled
            now.response = dict(now.response, status="cancelled")
        return now

    def forget(self, record: StoredResponse) -> None:
        """Stop the run of a response that was deleted (nothing to store after it)."""
        if record.status in RUNNING and record.job_id:
            try:
                self.jobs.cancel(record.job_id)
            except JobStoreError as exc:
                raise errors.ApiError(503, "job_store_unavailable", str(exc))

    def _job(self, record: StoredResponse) -> Optional[Job]:
        if not record.job_id:
            return None
        try:
            return self.jobs.store.read(record.job_id)
        except JobStoreError as exc:
            raise errors.ApiError(503, "job_store_unavailable", str(exc))

    def _settle(self, record: StoredResponse, job: Optional[Job]) -> StoredResponse:
        """End a response whose job has ended (or is gone) as its job ended, and store it."""
        draft = Draft.of(record.response)
        if job is not None and job.status == SUCCEEDED and isinstance(job.result, dict):
            record.response = job.result
        elif job is not None and job.status == CANCELLED:
            record.response = draft.cancel()
        else:
            record.response = draft.fail(errors.ApiError(500, "server_error", _why(record,
                                                                                    job)))
        try:
            self.store.update(record)
        except ResponseStoreError as exc:
            raise unavailable(exc)
        return record


def _succeeded(result: Dict[str, Any]) -> Any:
    """A response job's run that answered completed (a failed run raised its error)."""
    return SUCCEEDED, None


def _why(record: StoredResponse, job: Optional[Job]) -> str:
    if job is None:
        return ("the job that ran it (%s) is gone: no server runs it any more; send the "
                "request again" % (record.job_id or "none"))
    if job.error:
        return job.error.get("message") or job.error.get("error") or job.status
    return "its job ended %s" % job.status
