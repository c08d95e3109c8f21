"""The durable jobs of a process on a shared store (``server.store``: Redis): a ``JobRunner``
whose queue is the store's, so any node may accept a job and any node or ``clinvk worker``
with a free run slot runs it.

What changes from one process on its own disk:

- ``submit`` saves the job and pushes it where the processes that can run it pull
  (``job_routes_redis.RoutedQueues``; ``route`` decides): a job continuing a session goes to
  the queue of the worker that ran the session's last turn (its CLI's transcript is there),
  409 ``session_worker_gone`` if no process of that worker is alive, unless
  ``server.shared_cli_homes``; any other job goes to the queue of the backends it names (a
  warning is logged while no live process that pulls jobs has them all: it waits for one, as
  jobs wait for workers that restart); a job whose backends cannot be told (a kind of a
  front end's own without a prepared run) goes to the shared queue. Past
  ``server.max_queued_jobs`` jobs waiting in all queues, 503.
- The dispatcher pulls one job at a time, and only once the job before it holds its run
  slots: a process takes a job only when it can run it, and the rest stay in Redis for the
  others. A ``clinvk serve`` on the store thus runs jobs too, unless ``server.role`` is
  ``api`` (``pulls`` False: it queues jobs and runs none); ``clinvk worker`` is the same
  without the HTTP listener.
- While a job runs, its queue entry is kept (``JobQueue.keep``) every third of
  ``server.job_visibility_timeout_secs``. An entry not kept that long (the process was killed
  or cut off) is reclaimed by another process, which ends the job ``interrupted`` if it was
  running (or queues it again for another attempt, ``server.job_retries``), or runs it if it
  was still queued; the process that lost it stops the run at its next keep, so a job never
  runs in two places at once for longer than one keep interval (and what the lost run still
  writes is refused: its next event's id is taken by the requeue's).
- Every ``server.job_visibility_timeout_secs`` every process (an API node too) also deletes
  from the consumer groups the consumers of processes long gone (``forget_dead_consumers``),
  and settles the jobs queued for workers that are gone (``gone_workers``: they fail with
  ``session_worker_gone``, or move to their backends' queue with
  ``server.shared_cli_homes``), then removes those workers' queues.
- A job that ends is acknowledged (its entry leaves the queue). One given back at shutdown
  before it started stays pending, and is reclaimed after the visibility timeout.
"""

from __future__ import annotations

import functools
import threading
import time
from typing import Any, Dict, List, NamedTuple, Optional, Set, Tuple

from .. import execute
from ..backends import probe
from ..job_queue_redis import forget_dead_consumers, list_runners, settle
from ..job_routes_redis import RoutedQueues
from ..job_store import CANCELLED, RUN, Job, JobStoreError
from ..job_store_redis import RedisJobStore
from ..redisclient import RedisError, ReplyError
from ..session_record import SessionError
from ..shared_store import worker_name
from ..sessions_redis import RedisSessionStore
from . import errors
from . import remote_run, toolcalls
from .gone_workers import settle_gone_workers, worker_gone
from .job_runner import JobRunner, Kind, RunningJob


class SharedJobRunner(JobRunner):
    """``JobRunner`` on a ``RedisJobStore``, pulling from the shared queue."""

    # Seconds between two log lines saying the queue cannot be read.
    WARN_EVERY_SECS = 60.0

    # A consumer idle this many visibility timeouts, holding nothing, without a heartbeat, is
    # a process long gone.
    DEAD_AFTER_TIMEOUTS = 3

    def __init__(self, app: Any, store: RedisJobStore, visibility_secs: float,
                 pulls: bool = True, retries: int = 0) -> None:
        store.describe_runner = self.describe
        super().__init__(app, store)
        # The runs API nodes hand the workers (server.role: api; remote_run), bridged ones
        # too (toolcalls).
        self.add_kind(RUN, Kind(toolcalls.run_job, remote_run.judge_run,
                                functools.partial(toolcalls.forget_unfollowed, store)))
        self.visibility_secs = visibility_secs
        self.pulls = pulls
        self.retries = retries
        self.worker = worker_name(app.cfg)
        self.queues = RoutedQueues(store.client, self.lease.id, visibility_secs, self.worker,
                                   self._installed)
        self._routes: Dict[str, Route] = {}      # job id -> where submit queues it
        # job id -> (queue name, entry) of the queue entry this process holds
        self._entries: Dict[str, Tuple[str, str]] = {}
        self._swept_at = time.monotonic()
        self._entries_lock = threading.Lock()
        self._taken_back: Set[str] = set()       # jobs whose run here is no longer theirs
        self._kept_at = 0.0
        self._warned_at = -self.WARN_EVERY_SECS

    def open(self) -> None:
        """Take this process's heartbeat. Redis down is no reason not to run jobs later: the
        heartbeat and the queue are retried until it is back."""
        super().open()
        if not self._open:
            self.app.log.error("jobs: %s; jobs run once it is back" % self._open_error)
            self._open = True

    def describe(self) -> Dict[str, str]:
        """What this process advertises in its heartbeat: its worker name, the backends it
        can run, its run slots for jobs (0 when it pulls none), and the jobs holding them."""
        capacity = self.app.cfg.get("server.max_concurrent_runs") if self.pulls else 0
        return {"worker": self.worker, "backends": ",".join(self._installed()),
                "capacity": str(capacity), "busy": str(self.counts()[1])}

    @staticmethod
    def _installed() -> List[str]:
        return [name for name, ok in probe.availability().items() if ok]

    def submit(self, job: Job, prepared: Optional[execute.Prepared] = None) -> None:
        """``JobRunner.submit``, the job queued where a process that can run it pulls (the
        module docstring says where and when it is refused instead)."""
        try:
            route = self.route(job, prepared)
            warning = check_route(route, list_runners(self.store.client))
            waiting = self.queues.waiting()
        except RedisError as exc:
            raise errors.ApiError(503, "job_store_unavailable", "the job store cannot be "
                                  "reached: %s; retry once it is back" % exc) from None
        if waiting >= self.max_queued:
            raise errors.ApiError(503, "job_queue_full", "%d jobs are waiting for a run slot "
                                  "(server.max_queued_jobs); retry later" % self.max_queued,
                                  headers={"Retry-After": "10"})
        if warning:
            self.app.log.error("job %s: %s" % (job.id, warning))
        self._routes[job.id] = route
        try:
            super().submit(job, prepared)
        finally:
            self._routes.pop(job.id, None)

    def route(self, job: Job, prepared: Optional[execute.Prepared] = None) -> "Route":
        """Where ``job`` is queued: the worker that ran the last turn of the session it
        continues (unless ``server.shared_cli_homes``), and the backends it needs."""
        cfg = self.app.cfg
        session_id = prepared.session.id if prepared is not None and \
            prepared.session is not None else job.request.get("session_id") or ""
        worker, backend = "", ""
        if session_id and isinstance(self.app.store, RedisSessionStore):
            try:
                session = self.app.store.resolve(session_id, job.access)
                backend = session.backend
                if not cfg.get("server.shared_cli_homes"):
                    worker = self.app.store.worker_of(session.id)
            except SessionError:
                pass                    # the run says why it cannot continue it
        if prepared is not None:
            return Route(worker, (prepared.backend.name,))
        return Route(worker, job_backends(job.kind, job.request, backend or
                                          cfg.get("default_backend")))

    def _queue_job(self, job_id: str) -> None:
        route = self._routes.get(job_id, Route("", ()))
        self.queues.push(job_id, route.backends, route.worker)

    def enqueue(self, job_id: str) -> None:
        """Nothing to do: a queued job stays in the shared queue until a process pulls it."""

    def _next_queued(self) -> Optional[str]:
        if not self._stopping:
            self._sweep_queues()
        if self._stopping or not self.pulls:
            with self._cond:
                self._cond.wait(self.POLL_SECS)
            return None
        try:
            deliveries = self.queues.pull(self.POLL_SECS)
        except RedisError as exc:
            self._warn_unreachable(exc)
            time.sleep(self.POLL_SECS)
            return None
        for delivery in deliveries:
            job = settle(self.store, self.queues.queue(delivery.queue), delivery,
                         self.lease.id, self.retries)
            if job is not None:
                with self._entries_lock:
                    self._entries[job.id] = (delivery.queue, delivery.entry)
                return job.id
        return None

    def _sweep_queues(self) -> None:
        """Every visibility timeout: forget the consumers of processes long gone, settle
        the jobs of workers that are gone."""
        now = time.monotonic()
        if now - self._swept_at < self.visibility_secs:
            return
        self._swept_at = now
        gone: List[str] = []
        try:
            settle_gone_workers(self)
            for name in self.queues.names():
                try:
                    gone += forget_dead_consumers(
                        self.queues.queue(name), self.visibility_secs * self.DEAD_AFTER_TIMEOUTS)
                except ReplyError:
                    pass            # a queue no process has pulled from yet: no group
        except (RedisError, JobStoreError) as exc:
            self._warn_unreachable(exc)
            return
        if gone:
            self.app.log.info("jobs: forgot the queue consumers of %d processes long gone: %s"
                              % (len(gone), ", ".join(gone)))

    def _warn_unreachable(self, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._warned_at >= self.WARN_EVERY_SECS:
            self._warned_at = now
            self.app.log.error("jobs: the shared queue cannot be read (%s); retrying" % exc)

    def _look_for_cancels(self) -> None:
        super()._look_for_cancels()
        if time.monotonic() - self._kept_at >= self.visibility_secs / 3:
            self._keep_held()

    def _keep_held(self) -> None:
        """Renew this process's hold on the jobs it runs; stop those reclaimed from it."""
        self._kept_at = time.monotonic()
        with self._entries_lock:
            held = dict(self._entries)
        lost = set()
        for name in {queue for queue, _ in held.values()}:
            entries = [entry for queue, entry in held.values() if queue == name]
            lost.update((name, entry) for entry in self.queues.queue(name).keep(entries))
        for job_id in [j for j, held_entry in held.items() if held_entry in lost]:
            self.app.log.error("job %s was taken back from this process (it could not keep "
                               "it for server.job_visibility_timeout_secs): stopping its run"
                               % job_id)
            with self._entries_lock:
                self._entries.pop(job_id, None)
                self._taken_back.add(job_id)
            run = self._running.get(job_id)
            if run is not None:
                self._stop(run, cancel=False)

    def finish(self, job_id: str, status: str, result: Any, error: Optional[Dict[str, Any]],
               writer: Any = None) -> None:
        """End the job, unless it was taken back from this process: then another process
        has it (ended, or queued for another attempt), and this run's end is not its end.
        A run that ends before this process learns it lost the job cannot write its end
        either: the event id it would take is the requeue's (OSError, logged)."""
        with self._entries_lock:
            if job_id in self._taken_back:
                self._taken_back.discard(job_id)
                return
        try:
            super().finish(job_id, status, result, error, writer)
        except OSError as exc:
            self.app.log.error("job %s: its end (%s) was not recorded: %s" % (job_id, status, exc))

    def _forget(self, run: RunningJob) -> None:
        super()._forget(run)
        with self._entries_lock:
            held = self._entries.pop(run.job.id, None)
            self._taken_back.discard(run.job.id)
        if held is None:
            return
        try:
            job = self.store.read(run.job.id)
            if job is None or job.final:
                self.queues.queue(held[0]).done(held[1])
        except (JobStoreError, RedisError) as exc:
            # Left pending: reclaimed after the visibility timeout, and settled then.
            self._warn_unreachable(exc)

    def _wait_events(self, job_id: str, cursor: Any, seen: int) -> bool:
        """A job another process runs: wait on its event stream in Redis, so its events come
        as they are written there (not at the next poll)."""
        if job_id in self._running:
            return super()._wait_events(job_id, cursor, seen)
        return cursor.wait(self.POLL_SECS)

    def cancel(self, job_id: str) -> Optional[Job]:
        job = super().cancel(job_id)
        # Ended by the cancel before any process pulled it (its only event is the final
        # one): told here, as a job cancelled in a process's own queue is.
        if job is not None and job.status == CANCELLED and job.event_count == 1 and \
                job_id not in self._running:
            self._ended(job)
        return job


class Route(NamedTuple):
    """Where a job is queued: the worker whose own queue it goes to ("" = none), else the
    queue of the processes that have all of ``backends`` (none = the shared queue)."""

    worker: str
    backends: Tuple[str, ...]


def job_backends(kind: str, request: Dict[str, Any], default: str) -> Tuple[str, ...]:
    """The backends a job of ``kind`` runs, from its stored request (``default`` where it
    names none); () for a kind whose request does not say."""
    if kind == "prompt":
        names = [request.get("backend") or default]
    elif kind in ("parallel", "chain"):
        names = [item.get("backend") or default
                 for item in request.get("tasks" if kind == "parallel" else "steps") or ()]
    elif kind == "compare":
        names = list(request.get("backends") or ())
    else:
        names = []
    return tuple(sorted(set(names)))


def check_route(route: Route, runners: List[Dict[str, Any]]) -> str:
    """Whether a live process that pulls jobs can take a job so routed: an ApiError 409
    ``session_worker_gone`` naming the worker when none of the session's worker is alive;
    a warning to log ("" = none) when none has the backends the job needs (it stays queued
    until one that has them starts: workers may be restarting)."""
    pulling = [r for r in runners if r["capacity"] > 0]
    if route.worker:
        if not any(r["worker"] == route.worker for r in pulling):
            raise worker_gone(route.worker)
        return ""
    needed = set(route.backends)
    if not needed or any(needed <= set(r["backends"]) for r in pulling):
        return ""
    have = sorted({",".join(r["backends"]) or "none" for r in pulling})
    return ("no live clinvk worker has %s (the live ones have: %s); the job waits until one "
            "that has %s starts" % (" and ".join(sorted(needed)), "; ".join(have) or "none",
                                   "it" if len(needed) == 1 else "them"))
