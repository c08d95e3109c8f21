"""The durable jobs of one server process: the FIFO queue, the runs, the end of each job.

A job runs the synchronous route's own handler (``native.prompt``, ``parallel``, ``chain``,
``compare``; a front end may add a ``Kind`` of its own, as the Responses API does for
``background: true``) with a ``JobContext`` in place of the request's context, so its
``result`` is that route's answer and its errors are that route's errors. What the context
changes: the body is the stored request; runs are in streaming mode so that their unified
events are recorded as they come (a prompt's result is still the JSON answer); fan-out progress
is recorded as ``item_*`` events, each item's backend events between them; a run slot is waited
for as long as it takes (a job has no client on a connection to answer 503); a continued
session is waited for as long as it takes too, before the run slot.

Jobs start in the order they were accepted: one dispatcher thread hands the queue's head a
worker thread and waits until that worker holds its run slots (or has ended, or waits for its
session: ``park``) before the next, so at most one job waits in the run-slot queue, beside the
synchronous requests. A job is ``running`` once it holds its slots.

Shutdown (``serve.drain``): ``stop()`` starts nothing more (the job waiting for slots gives
its place back and stays queued on disk, for the next server); running jobs get the grace
period, then ``interrupt_all()`` stops them and they end ``interrupted``. At start, jobs left by
a server that died are marked ``interrupted`` (running) or adopted (queued), and pending
webhooks resumed (``job_upkeep``; ``job_webhooks`` sends each finished job's webhook).
"""

from __future__ import annotations

import collections
import functools
import threading
import time
import traceback
from typing import Any, Callable, Deque, Dict, Iterator, NamedTuple, Optional, Tuple

from .. import execute, jsontext
from ..job_events import JOB
from ..job_store import (CANCELLED, FAILED, FINAL, INTERRUPTED, QUEUED, SUCCEEDED, Job,
                         JobStore, JobStoreError, cancelled_error, interrupted_error)
from . import errors, native
from .job_context import JobContext, Requeue, judge
from .job_upkeep import Upkeep
from .job_webhooks import JobWebhooks
Verdict = Tuple[str, Optional[Dict[str, Any]]]


class Kind(NamedTuple):
    """How the jobs of one kind run: ``run(ctx)`` answers as the synchronous route would (the
    answer's JSON body is the job's result), ``judge(result)`` makes the job's (status, error)
    of that answer, and ``ended(job)``, when given, is told once the job has ended, whatever
    ended it (its run, a cancel, a shutdown, the server that took over from a dead one)."""
    run: Callable[[Any], Any]
    judge: Callable[[Dict[str, Any]], Verdict]
    ended: Optional[Callable[[Job], None]] = None


NATIVE_KINDS = {name: Kind(handler, functools.partial(judge, name)) for name, handler in (
    ("prompt", native.prompt), ("parallel", native.parallel), ("chain", native.chain),
    ("compare", native.compare))}


class RunningJob:
    """A job this process has handed a worker: its context (``ctx.cancel`` stops it), its
    event writer, and why it is being stopped, if it is."""

    __slots__ = ("job", "ctx", "thread", "admitted", "handed_on", "cancel_requested",
                 "interrupted")

    def __init__(self, job: Job, ctx: JobContext) -> None:
        self.job = job
        self.ctx = ctx
        self.thread: Optional[threading.Thread] = None
        self.admitted = threading.Event()     # it holds its slots, or it has ended
        # The next job may start: this one is admitted, has ended, or waits for its session.
        self.handed_on = threading.Event()
        self.cancel_requested = False
        self.interrupted = False


class JobRunner:
    """The jobs of one server process. ``open()``, then ``start()``; ``submit(job)`` accepts one (503 past
    ``server.max_queued_jobs``); ``cancel(job_id)``; ``follow(job_id, after)`` yields its
    events; ``event_count(job)``; ``stop()``, ``wait_idle()``, ``interrupt_all()`` and
    ``close()`` are for shutdown."""

    POLL_SECS = 0.5             # how often a cancel from another process is looked for
    CANCEL_WAIT_SECS = 10.0     # how long DELETE waits for a cancelled job to stop
    PREPARED_FRESH_SECS = 2.0   # how old a run prepared at submission may be to be used
    PREPARED_KEPT = 64          # how many such runs are kept at once

    def __init__(self, app: Any, store: JobStore) -> None:
        self.app = app
        self.store = store
        self.lease = store.lease()
        self.max_queued = app.cfg.get("server.max_queued_jobs")
        self.upkeep = Upkeep(self, app.cfg.get("server.job_retention_days") * 86400)
        self.webhooks = JobWebhooks(app, store)
        self.kinds: Dict[str, Kind] = dict(NATIVE_KINDS)
        if app.metrics is not None:
            app.metrics.watch_jobs(self.counts)
        self._queue: Deque[str] = collections.deque()
        self._reserved = 0
        self._running: Dict[str, RunningJob] = {}
        self._prepared: Dict[str, Tuple[float, execute.Prepared]] = {}
        self._cond = threading.Condition()
        self._generation = 0                  # bumped at every event and status change
        self._stopping = False
        self._thread: Optional[threading.Thread] = None
        self._open = False
        self._open_error = ""

    @property
    def stopping(self) -> bool:
        return self._stopping

    def add_kind(self, name: str, kind: Kind) -> None:
        """Run the jobs of kind ``name`` (a front end's own: a background Responses request)."""
        self.kinds[name] = kind

    def counts(self) -> Tuple[int, int]:
        """(queued, running): the jobs of this process waiting for run slots, and those
        holding them."""
        with self._cond:
            admitted = sum(1 for r in self._running.values() if r.admitted.is_set())
            return len(self._queue) + len(self._running) - admitted, admitted

    # -- start and the dispatcher ---------------------------------------------------------

    def open(self) -> None:
        """Take this process's lease: from now on jobs are accepted (they queue until
        ``start``). Quiet: a failure is told by ``start`` and by each refused job."""
        try:
            self.lease.take()
            self._open = True
        except OSError as exc:
            self._open_error = exc.strerror or str(exc)

    def start(self) -> None:
        """Start dispatching (once): the jobs dead servers left are taken over, then queued
        jobs start. ``serve`` calls it after the start-up line, so the lines about taken-over
        jobs come after it."""
        if not self._open:
            self.open()
        if not self._open:
            self.app.log.error("jobs cannot be run: the jobs directory under CLINVK_HOME "
                               "cannot be written (%s)" % self._open_error)
            return
        with self._cond:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._dispatch, name="clinvk-jobs",
                                            daemon=True)
        self._thread.start()

    def _dispatch(self) -> None:
        while not self._stopping:
            try:
                if self.upkeep.due():
                    self.upkeep.run()
                job_id = self._next_queued()
                if job_id is not None:
                    self._launch(job_id)
                self._look_for_cancels()
            except Exception:  # noqa: BLE001 - the dispatcher must outlive any one job
                self.app.log.error("job dispatcher error", "", traceback.format_exc())
                time.sleep(self.POLL_SECS)

    def _next_queued(self) -> Optional[str]:
        with self._cond:
            if not self._queue and not self._stopping:
                self._cond.wait(self.POLL_SECS)
            return self._queue.popleft() if self._queue and not self._stopping else None

    def _launch(self, job_id: str) -> None:
        """Start the job's worker and wait until it holds its run slots or has ended."""
        job = self.store.read(job_id)
        if job is None or job.status != QUEUED or job.runner != self.lease.id:
            if job is not None and job.final:
                if job.runner == self.lease.id:
                    self._ended(job)     # cancelled while it waited (clinvk jobs cancel)
                self.webhooks.deliver(job)
            return
        run = RunningJob(job, JobContext(self.app, job, self.store.writer(job_id), self))
        with self._cond:
            self._running[job_id] = run
        run.thread = threading.Thread(target=self._work, args=(run,), daemon=True,
                                      name="clinvk-job-%s" % job_id[-8:])
        try:
            run.thread.start()
        except BaseException:
            self._forget(run)
            raise
        while not run.handed_on.wait(self.POLL_SECS):
            self._look_for_cancels()

    def admit(self, ctx: JobContext) -> None:
        """Called by a job's context once it holds its run slots: the job is running. An
        ApiError (cancelled) when it was cancelled meanwhile from another process."""
        run = self._running.get(ctx.job.id)
        job = self.store.start(ctx.job.id, self.lease.id, ctx.writer)
        self.changed()
        if run is not None:
            run.admitted.set()
            run.handed_on.set()
        if job is None:
            raise errors.cancelled("the job was cancelled before it started")

    # -- a job's worker -------------------------------------------------------------------

    def _work(self, run: RunningJob) -> None:
        try:
            ending = self._outcome(run)
            if ending is not None:
                self.finish(run.job.id, *ending, writer=run.ctx.writer)
        except Exception:  # noqa: BLE001 - a thread has nobody to raise to: log it
            self.app.log.error("job failed", run.job.id, traceback.format_exc())
            self.finish(run.job.id, FAILED, None, dict(errors.native_body(
                errors.internal(run.job.id)), status=500), run.ctx.writer)
        finally:
            run.ctx.finish()
            run.ctx.writer.close()
            self._forget(run)

    def _outcome(self, run: RunningJob) -> Optional[Tuple[str, Any, Optional[Dict[str, Any]]]]:
        """(status, result, error) of the job's route handler; None when the job gave its
        place back (the server is stopping before it started)."""
        result = None
        try:
            kind = self.kinds[run.job.kind]
            answer = kind.run(run.ctx)
            result = jsontext.loads(answer.body)
            status, error = kind.judge(result)
        except Requeue:
            return None
        except Exception as exc:  # noqa: BLE001 - every failure is the job's error
            err = self.app.error_for(run.ctx, exc)
            status, error = FAILED, dict(errors.native_body(err), status=err.status)
        if status == SUCCEEDED:
            pass                        # it ended well before the stop could take effect
        elif run.cancel_requested:
            status, error = CANCELLED, cancelled_error()
        elif run.interrupted:
            status, error = INTERRUPTED, interrupted_error(
                "the server shut down and its grace period (server.shutdown_grace_secs) ended")
        return status, result, error

    def finish(self, job_id: str, status: str, result: Any, error: Optional[Dict[str, Any]],
                writer: Any = None) -> None:
        try:
            ended = self.store.finish(job_id, status, result, error, writer)
            # Already ended (a cancel that found it queued): its webhook is still owed.
            job = ended or self.store.read(job_id)
        except JobStoreError as exc:
            self.app.log.error("job %s: cannot record its end (%s): %s" % (job_id, status, exc))
            return
        self.changed()
        if ended is not None:
            self._ended(ended)
        if job is not None and job.final:
            self.webhooks.deliver(job)

    def _ended(self, job: Job) -> None:
        """A job has ended (here, once): logged, counted, told to its kind."""
        self._log_end(job)
        if self.app.metrics is not None:
            self.app.metrics.job_finished(job.kind, job.status)
        kind = self.kinds.get(job.kind)
        if kind is not None and kind.ended is not None:
            try:
                kind.ended(job)
            except Exception:  # noqa: BLE001 - the job has ended whatever its kind makes of it
                self.app.log.error("job %s: its end could not be told" % job.id, job.id,
                                   traceback.format_exc())

    def _log_end(self, job: Job) -> None:
        """One line per job that ends (its id, kind, status; never its request)."""
        if self.app.log.json:
            self.app.log.info("job ended", job_id=job.id, kind=job.kind, status=job.status,
                              events=job.event_count)
        else:
            self.app.log.info("job %s (%s) ended %s after %d events"
                              % (job.id, job.kind, job.status, job.event_count))

    def park(self, ctx: JobContext) -> None:
        """Called by a job's context that waits for its session (holding no run slot): the
        jobs behind it may start meanwhile. It stays queued until it holds its slots."""
        run = self._running.get(ctx.job.id)
        if run is not None:
            run.handed_on.set()

    def _forget(self, run: RunningJob) -> None:
        run.admitted.set()
        run.handed_on.set()
        with self._cond:
            self._running.pop(run.job.id, None)
            self._generation += 1
            self._cond.notify_all()

    # -- submitting and cancelling --------------------------------------------------------

    def submit(self, job: Job, prepared: Optional[execute.Prepared] = None) -> None:
        """Save ``job`` and queue it behind the others. 503 past server.max_queued_jobs, or
        while the server shuts down (or cannot run jobs at all). ``prepared``: the prompt's
        run as the check before accepting it prepared it (see ``prepared_for``)."""
        with self._cond:
            if self._stopping:
                raise errors.shutting_down()
            if not self._open:
                raise errors.ApiError(503, "job_store_unavailable", "this server cannot run "
                                      "jobs: the jobs directory under its CLINVK_HOME cannot "
                                      "be written; its operator must fix it")
            waiting = sum(1 for r in self._running.values() if not r.admitted.is_set())
            if len(self._queue) + self._reserved + waiting >= self.max_queued:
                raise errors.ApiError(503, "job_queue_full", "%d jobs are waiting for a run "
                                      "slot (server.max_queued_jobs); retry later"
                                      % self.max_queued, headers={"Retry-After": "10"})
            self._reserved += 1
        job.runner = self.lease.id
        try:
            self.store.create(job)
        except BaseException:
            with self._cond:
                self._reserved -= 1
            raise
        if self.app.metrics is not None:
            self.app.metrics.job_submitted(job.kind)
        with self._cond:
            self._reserved -= 1
            self._queue_job(job.id)
            if prepared is not None:
                self._keep_prepared(job.id, prepared)
            self._cond.notify_all()

    def _queue_job(self, job_id: str) -> None:
        """Put a saved job in the queue (self._cond held)."""
        self._queue.append(job_id)

    def _keep_prepared(self, job_id: str, prepared: execute.Prepared) -> None:
        """Keep a just-checked run for a job that may start at once (self._cond held)."""
        now = time.monotonic()
        for old in [k for k, (at, _) in self._prepared.items()
                    if now - at > self.PREPARED_FRESH_SECS]:
            del self._prepared[old]
        if len(self._prepared) < self.PREPARED_KEPT:
            self._prepared[job_id] = (now, prepared)

    def prepared_for(self, job_id: str) -> Optional[execute.Prepared]:
        """The run the check before accepting the job prepared, if it is still fresh: a job
        that starts at once is not prepared twice (``prepare`` is the costliest part of
        starting one: it asks git about the workdir). The caller checks that the session it
        continues, if any, has not moved on meanwhile."""
        with self._cond:
            at, prepared = self._prepared.pop(job_id, (0.0, None))
        return prepared if time.monotonic() - at <= self.PREPARED_FRESH_SECS else None

    def enqueue(self, job_id: str) -> None:
        """Queue a job this server adopted (its queued job was left by a dead server)."""
        with self._cond:
            self._queue.append(job_id)
            self._cond.notify_all()

    def cancel(self, job_id: str) -> Optional[Job]:
        """Cancel a queued or running job and wait (CANCEL_WAIT_SECS at most) until it has
        stopped; the job as it is then."""
        job = self.store.request_cancel(job_id)
        if job is None:
            return None
        with self._cond:
            queued_here = job_id in self._queue
            if queued_here:
                self._queue.remove(job_id)
            run = self._running.get(job_id)
        self.changed()
        if run is not None:
            self._stop(run, cancel=True)
            if run.thread is not None:
                run.thread.join(self.CANCEL_WAIT_SECS)
        elif job.final:
            if queued_here:
                self._ended(job)         # request_cancel ended it
            self.webhooks.deliver(job)
        elif not self.store.runner_alive(job.runner):
            self.finish(job_id, CANCELLED, None, cancelled_error())
        else:
            self._wait_final(job_id, self.CANCEL_WAIT_SECS)
        return self.store.read(job_id)

    def _stop(self, run: RunningJob, cancel: bool) -> None:
        if cancel:
            run.cancel_requested = True
        else:
            run.interrupted = True
        run.ctx.cancel.fire()

    def _wait_final(self, job_id: str, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            job = self.store.read(job_id)
            if job is None or job.final:
                return
            time.sleep(0.1)

    def _look_for_cancels(self) -> None:
        """Stop the running jobs another process (``clinvk jobs cancel``, another server's
        DELETE) flagged for cancelling."""
        with self._cond:
            runs = [r for r in self._running.values() if not r.cancel_requested]
        for run in runs:
            job = self.store.read(run.job.id)
            if job is not None and job.cancel_requested:
                self._stop(run, cancel=True)

    # -- events ---------------------------------------------------------------------------

    def changed(self) -> None:
        """Wake whoever follows a job: an event was recorded or a status changed."""
        with self._cond:
            self._generation += 1
            self._cond.notify_all()

    def event_count(self, job: Job) -> int:
        """The job's events so far: live for a job this process runs, counted in its log for
        one another process runs, as recorded for a finished one."""
        run = self._running.get(job.id)
        if run is not None:
            return run.ctx.writer.count
        return job.event_count if job.final else self.store.count_events(job.id)

    def follow(self, job_id: str, after: int, gone: Callable[[], bool]) -> Iterator[Dict]:
        """The job's events after seq ``after``: those recorded, then each as it comes, until
        the job's final ``job`` event, the job's removal, or ``gone()`` (the server is
        shutting down: the client reconnects elsewhere with the last seq it saw)."""
        cursor = self.store.cursor(job_id, after)
        try:
            while True:
                seen = self._generation
                for event in cursor.read():
                    yield event
                    if event.get("type") == JOB and event["content"].get("status") in FINAL:
                        return
                if gone() or not self._wait_events(job_id, cursor, seen):
                    job = self.store.read(job_id)
                    if job is None or gone() or (job.final and cursor.seq >= job.event_count):
                        return
        finally:
            cursor.close()

    def _wait_events(self, job_id: str, cursor: Any, seen: int) -> bool:
        """Wait for the job's next event (a subclass may wait on its store instead)."""
        return self._wait_change(seen)

    def _wait_change(self, seen: int) -> bool:
        """Wait for a change after generation ``seen``; False after POLL_SECS without one
        (a job another process runs changes without telling this one)."""
        with self._cond:
            if self._generation == seen:
                self._cond.wait(self.POLL_SECS)
            return self._generation != seen

    # -- shutdown -------------------------------------------------------------------------

    def stop(self) -> None:
        """Start no more jobs; the queued ones stay queued on disk."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()

    def wait_idle(self, seconds: float, interrupted: Callable[[], bool] = lambda: False) -> bool:
        """Wait until no job runs in this process; False after ``seconds`` or once
        ``interrupted()``."""
        deadline = time.monotonic() + seconds
        with self._cond:
            while self._running:
                left = deadline - time.monotonic()
                if left <= 0 or interrupted():
                    return False
                self._cond.wait(min(left, 0.1))
        return True

    def interrupt_all(self) -> int:
        """Stop every running job; each ends interrupted. Returns how many there were."""
        with self._cond:
            runs = list(self._running.values())
        for run in runs:
            self._stop(run, cancel=False)
        return len(runs)

    def close(self, timeout: float) -> None:
        """Give pending webhooks up to ``timeout`` seconds, then let go of the lease."""
        self.stop()
        if self._thread is not None:
            self._thread.join(timeout)
        self.webhooks.close(timeout)
        self.lease.release()
        self._open = False
