"""The durable jobs of a process on a shared store (``server.store``: Redis): a ``JobRunner``
whose queue is the store's, so any node may accept a job and any node or ``clinvk worker``
with a free run slot runs it.

What changes from one process on its own disk:

- ``submit`` saves the job and pushes it on the shared queue (``job_queue_redis``); past
  ``server.max_queued_jobs`` jobs waiting there, 503.
- The dispatcher pulls one job at a time, and only once the job before it holds its run
  slots: a process takes a job only when it can run it, and the rest stay in Redis for the
  others. A ``clinvk serve`` on the store thus runs jobs too, unless ``server.role`` is
  ``api`` (``pulls`` False: it queues jobs and runs none); ``clinvk worker`` is the same
  without the HTTP listener.
- While a job runs, its queue entry is kept (``JobQueue.keep``) every third of
  ``server.job_visibility_timeout_secs``. An entry not kept that long (the process was killed
  or cut off) is reclaimed by another process, which ends the job ``interrupted`` if it was
  running, or runs it if it was still queued; the process that lost it stops the run at its
  next keep, so a job never runs in two places at once for longer than one keep interval.
- A job that ends is acknowledged (its entry leaves the queue). One given back at shutdown
  before it started stays pending, and is reclaimed after the visibility timeout.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Dict, Optional

from .. import execute
from ..backends import probe
from ..job_queue_redis import JobQueue, settle
from ..job_store import CANCELLED, RUN, Job, JobStoreError
from ..job_store_redis import RedisJobStore
from ..redisclient import RedisError
from . import errors
from . import remote_run
from .job_runner import JobRunner, Kind, RunningJob


class SharedJobRunner(JobRunner):
    """``JobRunner`` on a ``RedisJobStore``, pulling from the shared queue."""

    # Seconds between two log lines saying the queue cannot be read.
    WARN_EVERY_SECS = 60.0

    def __init__(self, app: Any, store: RedisJobStore, visibility_secs: float,
                 pulls: bool = True) -> None:
        store.describe_runner = self.describe
        super().__init__(app, store)
        # The runs API nodes hand the workers (server.role: api; remote_run).
        self.add_kind(RUN, Kind(remote_run.run_job, remote_run.judge_run))
        self.visibility_secs = visibility_secs
        self.pulls = pulls
        self.queue = JobQueue(store.client, self.lease.id, visibility_secs)
        self._entries: Dict[str, str] = {}       # job id -> the queue entry this process holds
        self._entries_lock = threading.Lock()
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
        """What this process advertises in its heartbeat: the backends it can run, its run
        slots for jobs (0 when it pulls none), and the jobs holding them."""
        installed = probe.availability()
        capacity = self.app.cfg.get("server.max_concurrent_runs") if self.pulls else 0
        return {"backends": ",".join(n for n, ok in installed.items() if ok),
                "capacity": str(capacity),
                "busy": str(self.counts()[1])}

    def submit(self, job: Job, prepared: Optional[execute.Prepared] = None) -> None:
        try:
            waiting = self.queue.waiting()
        except RedisError as exc:
            raise errors.ApiError(503, "job_store_unavailable", "the job store cannot be "
                                  "reached: %s; retry once it is back" % exc) from None
        if waiting >= self.max_queued:
            raise errors.ApiError(503, "job_queue_full", "%d jobs are waiting for a run slot "
                                  "(server.max_queued_jobs); retry later" % self.max_queued,
                                  headers={"Retry-After": "10"})
        super().submit(job, prepared)

    def _queue_job(self, job_id: str) -> None:
        self.queue.push(job_id)

    def enqueue(self, job_id: str) -> None:
        """Nothing to do: a queued job stays in the shared queue until a process pulls it."""

    def _next_queued(self) -> Optional[str]:
        if self._stopping or not self.pulls:
            with self._cond:
                self._cond.wait(self.POLL_SECS)
            return None
        try:
            deliveries = self.queue.pull(1, self.POLL_SECS)
        except RedisError as exc:
            self._warn_unreachable(exc)
            time.sleep(self.POLL_SECS)
            return None
        for delivery in deliveries:
            job = settle(self.store, self.queue, delivery, self.lease.id)
            if job is not None:
                with self._entries_lock:
                    self._entries[job.id] = delivery.entry
                return job.id
        return None

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
        lost = set(self.queue.keep(list(held.values())))
        for job_id in [j for j, entry in held.items() if entry in lost]:
            self.app.log.error("job %s was taken back from this process (it could not keep "
                               "it for server.job_visibility_timeout_secs): stopping its run"
                               % job_id)
            with self._entries_lock:
                self._entries.pop(job_id, None)
            run = self._running.get(job_id)
            if run is not None:
                self._stop(run, cancel=False)

    def _forget(self, run: RunningJob) -> None:
        super()._forget(run)
        with self._entries_lock:
            entry = self._entries.pop(run.job.id, None)
        if entry is None:
            return
        try:
            job = self.store.read(run.job.id)
            if job is None or job.final:
                self.queue.done(entry)
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
