"""Durable jobs on disk: ``<home>/jobs/<id>.json`` (the record: what was asked, the status,
the result) beside ``<id>.events`` (the event log, ``job_events``), so a job outlives the
server process that accepted it and ``clinvk jobs`` can show what a server is doing.

Records are written as sessions are: atomically (temporary file, fsync, rename: a reader sees
the old record or the new, never half), each change under a lock per job (``filelock``), so a
server's status change and an operator's cancel never interleave. A job is scoped to the API
key that created it, as sessions are (``sessions.Access``): another key gets "not found".

Which server process runs a job is told by a runner lease (``job_lease``): a lock file the
process holds for as long as it lives (``jobs/runners/<id>.lock``, flock: the kernel lets go
when the process dies, even by SIGKILL). A job whose runner holds no lease was left by a server that is gone;
the next server that looks marks it ``interrupted`` (it was running) or adopts it (queued).
"""

from __future__ import annotations

import calendar
import os
import re
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from . import jsontext
from .filelock import locked
from .fsutil import read_json_record, unlink_quietly, write_atomically
from .job_events import EventCursor, EventWriter, count_events, job_event
from .job_index import JobIndex, Summary
from .job_lease import RunnerLease, runner_alive
from .sessions import EVERYTHING, Access
from .textutil import rfc3339

# What POST /api/v1/jobs runs (a synchronous route each); a response job is a Responses API
# request with background: true; a run job is one backend run an API node (server.role: api)
# hands a worker (server/remote_run.py).
KINDS = ("prompt", "parallel", "chain", "compare")
RESPONSE = "response"
RUN = "run"
ALL_KINDS = KINDS + (RESPONSE, RUN)
QUEUED, RUNNING = "queued", "running"
SUCCEEDED, FAILED, CANCELLED, INTERRUPTED = "succeeded", "failed", "cancelled", "interrupted"
FINAL = (SUCCEEDED, FAILED, CANCELLED, INTERRUPTED)
STATUSES = (QUEUED, RUNNING) + FINAL
LIST_LIMIT = 100
DEFAULT_EVENTS_MAX_BYTES = 8 * 1024 * 1024

# job_ + 24 lowercase hex digits: 13 of microseconds since the epoch (so ids sort by age) and
# 11 random. Anything else names no file, so an id from a URL never reaches outside the
# directory.
_ID = re.compile(r"job_[0-9a-f]{24}\Z")
_FILE = re.compile(r"(job_[0-9a-f]{24})\.json\Z")
_EVENTS = re.compile(r"(job_[0-9a-f]{24})\.events\Z")
_TEMP = re.compile(r"\.(job_[0-9a-f]{24}\.json|index)\.tmp-[0-9a-f]+\Z")
_STRAY_SECS = 60.0
LOCK_WAIT_SECS = 30.0

_id_lock = threading.Lock()
_last_micros = [0]


class JobStoreError(Exception):
    """The jobs directory cannot be read or written; the message says why without the
    server's paths."""


class JobNotFound(LookupError):
    def __init__(self, job_id: str) -> None:
        super().__init__("no job %r (or it belongs to another API key)" % job_id[:80])
        self.job_id = job_id


def new_job_id() -> str:
    """A new id; ids made by one process sort in the order they were made."""
    with _id_lock:
        micros = max(int(time.time() * 1e6), _last_micros[0] + 1)
        _last_micros[0] = micros
    return "job_%013x%s" % (micros & (16 ** 13 - 1), os.urandom(6).hex()[:11])


def is_job_id(text: str) -> bool:
    return bool(_ID.match(text))


def parse_rfc3339(text: str) -> float:
    """Seconds since the epoch of a timestamp ``textutil.rfc3339`` wrote."""
    return calendar.timegm(time.strptime(text[:19], "%Y-%m-%dT%H:%M:%S"))


class Job:
    """One job's record. The API shows ``public()``; the rest is the server's: ``owner`` (the
    API key id that created it, "" = nobody's) and ``owner_everything`` (whether its runs
    may use every session, as the key that created it could), ``runner`` (the lease id of the
    server process that queued or runs it), ``cancel_requested``, ``webhook_url`` (where the
    finished job is sent; ``webhook`` is the public record of that delivery), ``attempt`` (1, and
    one more each time a job whose worker died is run again: ``server.job_retries``), ``profile``
    (the run profile it was submitted with, ``backends.options.PROFILES``; "": the running
    server's ``server.default_profile``)."""

    __slots__ = ("id", "kind", "status", "created_at", "started_at", "finished_at", "request",
                 "result", "error", "metadata", "event_count", "owner", "owner_everything",
                 "runner", "cancel_requested", "webhook_url", "webhook", "attempt", "profile")

    def __init__(self, id: str, kind: str, request: Dict[str, Any], status: str = QUEUED,
                 created_at: str = "", started_at: Optional[str] = None,
                 finished_at: Optional[str] = None, result: Any = None,
                 error: Optional[Dict[str, Any]] = None,
                 metadata: Optional[Dict[str, str]] = None, event_count: int = 0,
                 owner: str = "", owner_everything: bool = True, runner: str = "",
                 cancel_requested: bool = False, webhook_url: str = "",
                 webhook: Optional[Dict[str, Any]] = None, attempt: int = 1,
                 profile: str = "") -> None:
        self.id = id
        self.kind = kind
        self.request = request
        self.status = status
        self.created_at = created_at or rfc3339()
        self.started_at = started_at
        self.finished_at = finished_at
        self.result = result
        self.error = error
        self.metadata = dict(metadata or {})
        self.event_count = event_count
        self.owner = owner
        self.owner_everything = owner_everything
        self.runner = runner
        self.cancel_requested = cancel_requested
        self.webhook_url = webhook_url
        self.webhook = webhook
        self.attempt = attempt
        self.profile = profile

    @property
    def final(self) -> bool:
        return self.status in FINAL

    @property
    def access(self) -> Access:
        """The sessions the job's runs may use: those of the key that created it."""
        return Access(self.owner, everything=self.owner_everything)

    def public(self, event_count: Optional[int] = None) -> Dict[str, Any]:
        """The job object of the API: id, kind, status, created_at, started_at, finished_at,
        request, result, error, metadata, event_count, attempt, and webhook and profile when it
        has them."""
        out = {"id": self.id, "kind": self.kind, "status": self.status,
               "created_at": self.created_at, "started_at": self.started_at,
               "finished_at": self.finished_at, "request": self.request,
               "result": self.result, "error": self.error, "metadata": self.metadata,
               "event_count": self.event_count if event_count is None else event_count,
               "attempt": self.attempt}
        if self.webhook is not None:
            out["webhook"] = self.webhook
        if self.profile:
            out["profile"] = self.profile
        return out

    def to_dict(self) -> Dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}

    def summary(self) -> Summary:
        """What the index keeps of the job (``job_index``)."""
        return {"id": self.id, "kind": self.kind, "owner": self.owner, "status": self.status,
                "runner": self.runner, "finished_at": self.finished_at,
                "hook": (self.webhook or {}).get("status", "")}

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "Job":
        return cls(**{name: data[name] for name in cls.__slots__ if name in data})


class JobStore:
    """Jobs under ``<home>/jobs/``; safe for many threads and processes at once. Nothing is
    created on disk until the first job."""

    def __init__(self, home: str, events_max_bytes: int = DEFAULT_EVENTS_MAX_BYTES) -> None:
        self.dir = os.path.join(home, "jobs")
        self.events_max_bytes = events_max_bytes
        self.index = JobIndex(self.dir)

    def _path(self, job_id: str, suffix: str) -> str:
        return os.path.join(self.dir, job_id + suffix)

    # -- records ------------------------------------------------------------------------------

    def create(self, job: Job) -> None:
        """Save a new job (durably: its name is fsynced into the directory before this
        returns, so an accepted job survives a crash)."""
        try:
            os.makedirs(self.dir, mode=0o700, exist_ok=True)
        except OSError as exc:
            raise _unavailable(exc, "written")
        self._write(job, sync_dir=True)

    def read(self, job_id: str) -> Optional[Job]:
        """The job, whoever owns it; None when there is none (or its record is damaged)."""
        if not is_job_id(job_id):
            return None
        try:
            data = read_json_record(self._path(job_id, ".json"))
        except OSError as exc:
            raise _unavailable(exc, "read")
        return Job.from_dict(data) if data is not None else None

    def get(self, job_id: str, access: Access = EVERYTHING) -> Job:
        """The job if ``access`` allows its owner; JobNotFound otherwise."""
        job = self.read(job_id)
        if job is None or not access.allows(job.owner):
            raise JobNotFound(job_id)
        return job

    def resolve(self, id_or_prefix: str) -> Job:
        """The job an id or a unique prefix of one names (for the command line)."""
        if is_job_id(id_or_prefix):
            return self.get(id_or_prefix)
        found = [i for i in self.ids() if i.startswith(id_or_prefix)] if id_or_prefix else []
        if len(found) != 1:
            raise JobNotFound(id_or_prefix) if not found else LookupError(
                "job prefix %r is ambiguous: %s" % (id_or_prefix, ", ".join(found[:5])))
        return self.get(found[0])

    def update(self, job_id: str, change: Callable[[Job], bool]) -> Optional[Job]:
        """Apply ``change`` to the job under its lock and save it when ``change`` returns
        True; returns the job as it is now (None when it is gone)."""
        with self._locked(job_id):
            job = self.read(job_id)
            if job is not None and change(job):
                self._write(job)
            return job

    def delete(self, job_id: str) -> None:
        """Remove a job's record and its events."""
        with self._locked(job_id):
            unlink_quietly(self._path(job_id, ".json"))
            unlink_quietly(self._path(job_id, ".events"))
            self._index_change(job_id, None)

    def ids(self) -> List[str]:
        """Every job's id, oldest first."""
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise _unavailable(exc, "listed")
        return sorted(m.group(1) for m in map(_FILE.match, names) if m)

    def list(self, access: Access = EVERYTHING, status: Optional[str] = None,
             kind: Optional[str] = None, limit: Optional[int] = None,
             offset: int = 0) -> Tuple[List[Job], int]:
        """The jobs ``access`` allows, newest first, with the status and kind given: at most
        ``limit`` (None = all) after skipping ``offset``, and how many matched in all. Only
        the page's records are read (the index tells which match)."""
        matched = sorted((job_id for job_id, s in self.summaries().items()
                          if access.allows(s.get("owner", "")) and
                          status in (None, s.get("status")) and kind in (None, s.get("kind"))),
                         reverse=True)
        end = None if limit is None else offset + limit
        page = [self.read(job_id) for job_id in matched[offset:end]]
        return [job for job in page if job is not None], len(matched)

    # -- the index ----------------------------------------------------------------------------

    def summaries(self) -> Dict[str, Summary]:
        """Every job's summary by id (``job_index``); the first time, in a directory older
        than the index, the index is built from the records (or, where it cannot be written,
        the summaries are read from them)."""
        try:
            found = self.index.entries()
        except OSError as exc:
            raise _unavailable(exc, "read")
        if found is not None or not os.path.isdir(self.dir):
            return found or {}
        try:
            self.rebuild_index()
            return self.index.entries() or {}
        except (JobStoreError, OSError):
            return {job.id: job.summary() for job in map(self.read, self.ids())
                    if job is not None}

    def rebuild_index(self) -> None:
        """Rewrite the index from the records (a server's start: the index may lag them by
        the change a crash interrupted). Nothing to do before the first job."""
        if not os.path.isdir(self.dir):
            return
        try:
            self.index.rewrite(lambda: (job.summary() for job in map(self.read, self.ids())
                                        if job is not None))
        except OSError as exc:
            raise _unavailable(exc, "written")

    def compact_index(self) -> None:
        """Rewrite the index as one line per job when it has grown many more lines."""
        if self.index.entries() is not None and self.index.needs_rewrite():
            try:
                self.index.rewrite(lambda: (self.index.entries() or {}).values())
            except OSError as exc:
                raise _unavailable(exc, "written")

    # -- status changes -------------------------------------------------------------------

    def start(self, job_id: str, runner: str, writer: EventWriter) -> Optional[Job]:
        """Mark a queued job running (its ``job`` event first); None when it is no longer
        queued by ``runner`` (cancelled meanwhile, or adopted by another server)."""
        def change(job: Job) -> bool:
            if job.status != QUEUED or job.runner != runner or job.cancel_requested:
                return False
            writer.append(job_event(RUNNING))
            job.status, job.started_at, job.event_count = RUNNING, rfc3339(), writer.count
            return True
        return self._changed(job_id, change)

    def finish(self, job_id: str, status: str, result: Any = None,
               error: Optional[Dict[str, Any]] = None,
               writer: Optional[EventWriter] = None) -> Optional[Job]:
        """End a job that has not ended: its final ``job`` event is appended, then the record
        says ``status`` (so a reader that sees the record final has every event). None when
        the job had already ended or is gone."""
        def change(job: Job) -> bool:
            if job.final:
                return False
            self._end(job, status, result, error, writer)
            return True
        return self._changed(job_id, change)

    def request_cancel(self, job_id: str) -> Optional[Job]:
        """Cancel a job: a queued one ends ``cancelled`` now; a running one is flagged for
        its runner to stop (``cancel_requested``). The job as it is now (None: gone)."""
        def change(job: Job) -> bool:
            if job.final or job.cancel_requested:
                return False
            job.cancel_requested = True
            if job.status == QUEUED:
                self._end(job, CANCELLED, None, cancelled_error(), None)
            return True
        return self.update(job_id, change)

    def claim(self, job_id: str, dead: str, runner: str) -> Optional[Job]:
        """Make ``runner`` the job's runner if it still is ``dead`` (whose server is gone);
        None when another server claimed it first."""
        def change(job: Job) -> bool:
            if job.runner != dead:
                return False
            job.runner = runner
            return True
        return self._changed(job_id, change)

    def _end(self, job: Job, status: str, result: Any, error: Optional[Dict[str, Any]],
             writer: Optional[EventWriter]) -> None:
        log = writer or self.writer(job.id)
        try:
            log.append(job_event(status), final=True)
        finally:
            if writer is None:
                log.close()
        job.status, job.finished_at = status, rfc3339()
        job.started_at = job.started_at or job.finished_at
        job.result, job.error, job.event_count = result, error, log.count

    def _changed(self, job_id: str, change: Callable[[Job], bool]) -> Optional[Job]:
        """``update``, returning the job only when ``change`` changed it."""
        changed: List[Job] = []

        def tracked(job: Job) -> bool:
            if change(job):
                changed.append(job)
                return True
            return False
        self.update(job_id, tracked)
        return changed[0] if changed else None

    # -- events -------------------------------------------------------------------------------

    def writer(self, job_id: str) -> EventWriter:
        """The appender of the job's events (repairs a log a crash cut short)."""
        return EventWriter(self._path(job_id, ".events"), self.events_max_bytes)

    def cursor(self, job_id: str, after: int = 0) -> EventCursor:
        return EventCursor(self._path(job_id, ".events"), after)

    def count_events(self, job_id: str) -> int:
        return count_events(self._path(job_id, ".events"))

    # -- bounds -------------------------------------------------------------------------------

    def prune(self, retention_secs: float, now: Optional[float] = None) -> List[str]:
        """Remove the jobs that finished more than ``retention_secs`` ago (0 = keep them),
        event logs without a record and temporary files a crash left; the ids removed."""
        now = time.time() if now is None else now
        removed = []
        for job_id in self._finished_before(now - retention_secs) if retention_secs > 0 else []:
            job = self.read(job_id)
            if job is not None and job.final and job.finished_at and \
                    now - parse_rfc3339(job.finished_at) > retention_secs:
                self.delete(job_id)
                removed.append(job_id)
        self._sweep_strays(now)
        return removed

    def _finished_before(self, when: float) -> List[str]:
        """The ids of the jobs the index says finished before ``when``, oldest first."""
        return sorted(job_id for job_id, s in self.summaries().items()
                      if s.get("status") in FINAL and s.get("finished_at") and
                      parse_rfc3339(s["finished_at"]) < when)

    def _sweep_strays(self, now: float) -> None:
        try:
            names = os.listdir(self.dir)
        except OSError:
            return
        records = set(m.group(1) for m in map(_FILE.match, names) if m)
        for name in names:
            events = _EVENTS.match(name)
            stray = (events is not None and events.group(1) not in records) or _TEMP.match(name)
            path = os.path.join(self.dir, name)
            try:
                if stray and now - os.stat(path).st_mtime > _STRAY_SECS:
                    os.unlink(path)
            except OSError:
                pass                    # removed meanwhile

    # -- runner leases --------------------------------------------------------------------

    def runner_alive(self, runner: str) -> bool:
        """True while the process holding lease ``runner`` lives (``job_lease``)."""
        return runner_alive(self.dir, runner)

    def lease(self) -> RunnerLease:
        """A new lease for a process that will queue and run jobs on this store."""
        return RunnerLease(self.dir)

    # -- files --------------------------------------------------------------------------------

    def _write(self, job: Job, sync_dir: bool = False) -> None:
        data = jsontext.dumps_compact(job.to_dict()).encode("utf-8")
        try:
            write_atomically(self._path(job.id, ".json"), data, sync_dir=sync_dir)
        except OSError as exc:
            raise _unavailable(exc, "written")
        self._index_change(job.id, job.summary())

    def _index_change(self, job_id: str, summary: Optional[Summary]) -> None:
        """Tell the index a record was written (``summary``) or removed (None); an index that
        is not there yet is built from the records instead, which it then holds whole."""
        try:
            if not os.path.exists(self.index.path):
                self.rebuild_index()
            elif summary is None:
                self.index.remove(job_id)
            else:
                self.index.add(summary)
        except OSError as exc:
            raise _unavailable(exc, "written")

    def _locked(self, job_id: str) -> Any:
        return _JobLock(self._path(job_id, ".lock"))


class _JobLock:
    """The lock of one job, held while its record changes."""

    def __init__(self, path: str) -> None:
        self._cm = locked(path, LOCK_WAIT_SECS)

    def __enter__(self) -> None:
        try:
            acquired = self._cm.__enter__()
        except OSError as exc:
            raise _unavailable(exc, "locked")
        if not acquired:
            self._cm.__exit__(None, None, None)
            raise lock_held_too_long()

    def __exit__(self, *exc: Any) -> None:
        self._cm.__exit__(*exc)


def lock_held_too_long() -> JobStoreError:
    return JobStoreError("a job's lock was held for over %ds; retry later" % LOCK_WAIT_SECS)


def cancelled_error() -> Dict[str, Any]:
    return {"error": "cancelled", "message": "the job was cancelled"}


def interrupted_error(why: str) -> Dict[str, Any]:
    return {"error": "interrupted", "message": "the job was stopped before it finished: %s; "
                                               "submit it again to run it" % why}


def _unavailable(exc: OSError, action: str) -> JobStoreError:
    return JobStoreError("the job store (the jobs directory under the server's CLINVK_HOME) "
                         "cannot be %s: %s; the server's operator must fix it"
                         % (action, exc.strerror or type(exc).__name__))
