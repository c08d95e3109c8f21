"""What one server does for the jobs on its store besides running its own, at start and then
every ``Upkeep.every_secs``: rebuild the index from the records (the first time: it may lag
them by the change a crash cut short), prune the jobs finished past
``server.job_retention_days``, compact the index, continue its own pending webhooks, and take
over the jobs of servers that are gone (``job_store`` tells how a dead server is known)."""

from __future__ import annotations

import time
from typing import Any

from ..job_store import (CANCELLED, FINAL, INTERRUPTED, QUEUED, RUNNING, Job,
                         cancelled_error, interrupted_error)


class Upkeep:
    """``due()`` says whether it is time; ``run()`` does the rounds. ``runner`` is the
    server's ``job_runner.JobRunner`` (its store, lease, queue, webhooks and ``finish``)."""

    every_secs = 60.0

    def __init__(self, runner: Any, retention_secs: float) -> None:
        self.runner = runner
        self.retention_secs = retention_secs
        self._next = 0.0

    def due(self) -> bool:
        return time.monotonic() >= self._next

    def run(self) -> None:
        first = not self._next
        self._next = time.monotonic() + self.every_secs
        store = self.runner.store
        if first:
            store.rebuild_index()
        if self.retention_secs:
            store.prune(self.retention_secs)
        store.compact_index()
        for job_id, summary in sorted(store.summaries().items()):
            if summary.get("status") in FINAL and summary.get("hook") != "pending":
                continue                # nothing left to do for it, whoever ran it
            job = store.read(job_id)
            if job is None or job.runner == self.runner.lease.id:
                if job is not None and job.final:
                    self.runner.webhooks.deliver(job, resume=True)
                continue
            if not store.runner_alive(job.runner):
                self._take_over(job)

    def _take_over(self, job: Job) -> None:
        """A job whose server is gone: running, it ends interrupted (its backend died with
        its server); queued, this server adopts it; finished with a webhook pending, this
        server delivers it."""
        runner = self.runner
        claimed = runner.store.claim(job.id, job.runner, runner.lease.id)
        if claimed is None:
            return
        if claimed.status == QUEUED:
            runner.enqueue(claimed.id)
        elif claimed.status == RUNNING:
            cancelled = claimed.cancel_requested
            runner.finish(claimed.id, CANCELLED if cancelled else INTERRUPTED, None,
                          cancelled_error() if cancelled else
                          interrupted_error("the server process running it ended"))
        else:
            runner.webhooks.deliver(claimed, resume=True)
