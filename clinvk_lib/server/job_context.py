"""A durable job as the synchronous route's handler sees it: a ``Context`` whose body is the
job's stored request, whose caller is the API key that created the job, and whose runs are
recorded as the job's events (``job_runner`` explains what changes and why); and ``judge``,
what the route's answer makes of the job (succeeded or failed)."""

from __future__ import annotations

import math
import threading
from typing import Any, Callable, Dict, Optional, Tuple

from .. import execute
from ..job_events import EventWriter
from ..job_store import FAILED, SUCCEEDED, Job
from ..runslots import Abandoned
from ..session_record import Session, SessionBusy, SessionError
from ..sessions import Access
from ..textutil import rfc3339
from . import errors
from .context import Context
from .jobs_shapes import JOB_TARGETS
from .profiles import PROFILE_HEADER, requested_profile


class Requeue(Exception):
    """The job gave its place back before it started: the server is stopping. It stays
    queued on disk for the next server."""


class JobContext(Context):
    """The context a job's handler runs with (``runner`` and ``writer`` None: the check a job
    gets before it is accepted, which runs nothing)."""

    SESSION_POLL_SECS = 0.5     # how often a job waiting for its session looks for a stop

    def __init__(self, app: Any, job: Job, writer: Optional[EventWriter] = None,
                 runner: Any = None) -> None:
        super().__init__(app, None, "POST", JOB_TARGETS[job.kind], _stored_headers(job), "job")
        self.request_id = job.id
        self.job = job
        self.writer = writer
        self.runner = runner
        self._admitted = False

    def json_body(self) -> Dict[str, Any]:
        """The stored request; a prompt's answer is always the JSON one (its stream is the
        job's events)."""
        body = dict(self.job.request)
        if self.job.kind == "prompt":
            body["output_format"] = "json"
        return body

    def session_access(self) -> Access:
        return self.job.access

    @property
    def key_id(self) -> str:
        """The id of the key that submitted the job: its runs count under it."""
        return self.job.owner or ""

    def prepare(self, request: execute.Request, stream: bool = False) -> execute.Prepared:
        """``Context.prepare``, in streaming mode. A job that continues a session first waits,
        holding no run slot, until no other turn holds the session, then holds it for the rest
        of the job (jobs on one session run one after another; the run slot comes after). A
        job that starts right after it was accepted runs what the check before accepting
        prepared, unless its session has moved on meanwhile."""
        session = self._hold_session(request.session_id) if self.runner is not None and \
            request.session_id else None
        ready = self.runner.prepared_for(self.job.id) if self.runner is not None else None
        if ready is not None and (ready.session is None or ready.session == session):
            return ready
        if not request.timeout and self.app.request_timeout:
            request.timeout = self.app.request_timeout
        request.access = self.session_access()
        request.session_wait = None
        if not request.profile:
            request.profile = requested_profile(self.headers, self.app.cfg)
        # Checked before it is accepted, a job on a shared store (server.store) may run on
        # another worker: what only that worker can tell (its CLIs, its directories, that
        # it has the session's transcript) it checks itself.
        elsewhere = self.runner is None and self.app.shared_store is not None
        try:
            return execute.prepare(request, self.app.cfg, self.app.store, self.app.policy,
                                   stream=True, elsewhere=elsewhere)
        except Exception as exc:
            raise errors.from_exception(exc) or exc

    def _hold_session(self, id_or_prefix: str) -> Optional[Session]:
        """Wait until no other turn holds the session, then hold its lock until the job ends
        (the run takes it again: the lock is reentrant); the session as read under it. While
        it waits, the jobs behind it start (``runner.park``). None for a session the caller
        cannot continue: ``execute.prepare`` then says why."""
        store = self.app.store
        try:
            sid = store.resolve(id_or_prefix, self.session_access()).id
        except (SessionError, LookupError):
            return None
        parked = False
        while True:
            held = store.lock(sid, timeout=self.SESSION_POLL_SECS if parked else 0)
            try:
                session = held.__enter__()
            except SessionBusy:
                if not parked:
                    parked = True
                    self.runner.park(self)
                if self.cancel.fired:
                    raise errors.cancelled("the job was cancelled while it waited for its "
                                           "session")
                if self.runner.stopping and not self._admitted:
                    raise Requeue()
                continue
            self.on_finish(lambda: held.__exit__(None, None, None))
            return session

    def run_to_end(self, prepared: execute.Prepared) -> execute.Outcome:
        """The run, its unified events recorded as they come."""
        collected = []
        events = execute.stream(prepared, self.app.store, self.cancel, collected)
        try:
            for event in events:
                self.record(event.to_dict())
        finally:
            events.close()
        return collected[0]

    wants_item_events = True

    def fan_out_progress(self, kind: str, index: int, item: Any) -> None:
        """An ``item_started`` / ``item_finished`` / ``item_skipped`` event, or an item's
        unified event tagged with the item's ``index``."""
        if kind == "event":
            self.record(dict(item.to_dict(), index=index))
            return
        if kind == "started":
            content: Dict[str, Any] = {"index": index, "name": item.name}
        elif kind == "finished":
            content = dict(item.to_dict(), index=index)
        else:
            content = {"index": index, "reason": item.reason}
        self.record({"type": "item_" + kind, "backend": item.backend,
                     "timestamp": rfc3339(), "content": content})

    def record(self, event: Dict[str, Any]) -> None:
        """Append ``event`` to the job's log and wake those who follow it."""
        if self.writer is None:
            return
        self.writer.append(event)
        if self.runner is not None:
            self.runner.changed()

    def hold_run_slot(self, count: int = 1) -> Callable[[], None]:
        """Take ``count`` run slots, waiting in line as long as it takes; the first time, the
        job is then running. Cancelled while waiting: 503 cancelled; the server stopping
        before the job started: ``Requeue``."""
        def gave_up() -> bool:
            return self.cancel.fired or (self.runner is not None and self.runner.stopping)
        try:
            taken = self.app.limiter.acquire(count, abandoned=gave_up, timeout=math.inf)
        except Abandoned:
            if not self._admitted and self.runner is not None and self.runner.stopping:
                raise Requeue()
            raise errors.cancelled("the job was cancelled while it waited for a run slot")
        once = threading.Lock()

        def release() -> None:
            if once.acquire(blocking=False):
                self.app.limiter.release(taken)
        self.on_finish(release)
        if not self._admitted and self.runner is not None:
            self._admitted = True
            self.runner.admit(self)
        return release

    def watch_client(self) -> None:
        """Nothing to watch: a job has no client connection."""

    def unwatch_client(self) -> None:
        """See ``watch_client``."""


def _stored_headers(job: Job) -> Dict[str, str]:
    """The request headers a job keeps: X-Clinvk-Profile, the profile it was submitted with
    (none for a job stored before jobs kept one: the running server's default)."""
    return {PROFILE_HEADER: job.profile} if job.profile else {}


def judge(kind: str, result: Dict[str, Any]) -> Tuple[str, Optional[Dict[str, Any]]]:
    """(status, error) of a job whose route answered ``result``: succeeded when every run
    exited 0 (and a chain ran every step); else failed, with a run_failed error saying how
    many runs failed. A dry run succeeds; a compare's skipped backends do not count."""
    if kind == "prompt":
        if result["exit_code"] == 0:
            return SUCCEEDED, None
        return FAILED, _run_failed("the %s run exited with %d%s" % (
            result["backend"], result["exit_code"],
            ": " + result["error"] if result["error"] else ""))
    items = result["results"]
    bad = [r for r in items if r["exit_code"] != 0]
    missing = result["total_steps"] - len(items) if kind == "chain" else 0
    if not bad and not missing:
        return SUCCEEDED, None
    word = {"parallel": "task", "chain": "step", "compare": "backend"}[kind]
    total = result["total_steps"] if kind == "chain" else len(items)
    text = "%d of %d %ss failed or were cancelled" % (len(bad), total, word)
    if missing:
        text += "; %d did not run" % missing
    return FAILED, _run_failed(text)


def _run_failed(message: str) -> Dict[str, Any]:
    return {"error": "run_failed", "message": message}
