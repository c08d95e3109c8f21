"""Runs that outlive the request that started them (a Responses ``background: true``).

Each runs in a thread of its own and holds the run slot its request took, so background work
counts against ``server.max_concurrent_runs`` like any run (and so its number is bounded).
A run can be cancelled by its key; and none outlives the server: ``serve.drain`` waits for them
within the shutdown grace period, then cancels them with the requests still in flight.
"""

from __future__ import annotations

import threading
import time
import traceback
from typing import Callable, Dict, Optional

from .context import Context


class DetachedContext(Context):
    """A request as its background run sees it once the request has been answered: the same
    App and caller (API key, request id, headers), no client connection to watch (the client
    has its answer and may go), and the run slot the request already took (``release`` gives
    it back; the run's ``ctx.run`` holds it through ``hold_run_slot``)."""

    def __init__(self, parent: Context, release: Callable[[], None]) -> None:
        super().__init__(parent.app, None, parent.method, parent.target, parent.headers,
                         parent.client)
        self.api_key = parent.api_key
        self.request_id = parent.request_id
        self.endpoint = parent.endpoint
        self.style = parent.style
        self._release = _once(release)
        self._slot_handed = threading.Lock()

    def hold_run_slot(self, count: int = 1) -> Callable[[], None]:
        """The slot the request took, for the first run; a later run of the same response
        (gemini's corrective structured-output turn) queues for a slot of its own."""
        if self._slot_handed.acquire(blocking=False):
            return self._release
        return super().hold_run_slot(count)

    def watch_client(self) -> None:
        """Nothing to watch: a background run does not end with its client's connection."""

    def unwatch_client(self) -> None:
        """See ``watch_client``."""

    def release_slot(self) -> None:
        self._release()


def _once(fn: Callable[[], None]) -> Callable[[], None]:
    lock = threading.Lock()

    def call() -> None:
        if lock.acquire(blocking=False):
            fn()
    return call


class BackgroundRun:
    """One running background job: its context (``ctx.cancel`` stops it), its thread, and
    whether a client asked to cancel it (a shutdown stops it without asking)."""

    __slots__ = ("key", "ctx", "thread", "cancel_requested")

    def __init__(self, key: str, ctx: DetachedContext) -> None:
        self.key = key
        self.ctx = ctx
        self.thread: Optional[threading.Thread] = None
        self.cancel_requested = False


class BackgroundRuns:
    """The background runs of one server, by key.

    ``register(key, ctx)`` makes a run known (so that ``get`` finds it before it starts),
    ``launch(run, work)`` runs ``work(run)`` in a new thread and gives the run slot back when
    it returns (``discard`` gives it back for a run that will not be launched); ``cancel(key)``
    stops one; ``cancel_all`` and ``wait_idle`` are for shutdown."""

    def __init__(self) -> None:
        self._runs: Dict[str, BackgroundRun] = {}
        self._idle = threading.Condition()

    def register(self, key: str, ctx: DetachedContext) -> BackgroundRun:
        run = BackgroundRun(key, ctx)
        with self._idle:
            self._runs[key] = run
        return run

    def launch(self, run: BackgroundRun, work: Callable[[BackgroundRun], None]) -> None:
        run.thread = threading.Thread(target=self._run, args=(run, work),
                                      name="clinvk-background-%s" % run.key[-8:], daemon=True)
        try:
            run.thread.start()
        except BaseException:
            self._finished(run)
            raise

    def discard(self, run: BackgroundRun) -> None:
        self._finished(run)

    def _run(self, run: BackgroundRun, work: Callable[[BackgroundRun], None]) -> None:
        try:
            work(run)
        except Exception:  # noqa: BLE001 - a thread has nobody to raise to: log it
            run.ctx.app.log.error("background run failed", run.ctx.request_id,
                                  traceback.format_exc())
        finally:
            self._finished(run)

    def _finished(self, run: BackgroundRun) -> None:
        run.ctx.release_slot()
        with self._idle:
            self._runs.pop(run.key, None)
            self._idle.notify_all()

    def get(self, key: str) -> Optional[BackgroundRun]:
        with self._idle:
            return self._runs.get(key)

    def cancel(self, key: str, wait: float) -> bool:
        """Ask the run ``key`` to stop and wait up to ``wait`` seconds for it to end; False
        when no such run is going on in this process."""
        run = self.get(key)
        if run is None:
            return False
        run.cancel_requested = True
        run.ctx.cancel.fire()
        if run.thread is not None and wait > 0:
            run.thread.join(wait)
        return True

    def cancel_all(self) -> int:
        """Stop every run (shutdown); returns how many there were."""
        with self._idle:
            runs = list(self._runs.values())
        for run in runs:
            run.ctx.cancel.fire()
        return len(runs)

    @property
    def running(self) -> int:
        return len(self._runs)

    def wait_idle(self, seconds: float, interrupted: Callable[[], bool] = lambda: False) -> bool:
        """Wait until no run is left; False after ``seconds`` or once ``interrupted()``."""
        deadline = time.monotonic() + seconds
        with self._idle:
            while self._runs:
                left = deadline - time.monotonic()
                if left <= 0 or interrupted():
                    return False
                self._idle.wait(min(left, 0.1))
        return True
