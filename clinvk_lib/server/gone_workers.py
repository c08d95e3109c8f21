"""The jobs queued for a worker that is gone (``job_routes_redis.RoutedQueues.gone_workers``):
the later turns of its sessions, sent to its own queue because its CLIs' transcripts are on
its disk. Without the worker they cannot run, so rather than wait until cancelled, each ends
``failed`` with the error a new request for such a session gets (409
``session_worker_gone``, naming the worker) — its events, its webhook and its kind's end as
for any failed job. With ``server.shared_cli_homes`` every worker sees those transcripts:
each job is moved to the queue of the backends it needs instead, where a new request for the
session goes too. Once nothing is left in the gone worker's queue, the queue is removed.

A job of that queue that its worker was running when it died is settled as any such job
(``job_queue_redis.settle``: interrupted, or queued again under ``server.job_retries``, and
then failed or moved as above)."""

from __future__ import annotations

from typing import Any

from ..job_queue_redis import settle
from ..job_routes_redis import worker_queue
from ..job_store import FAILED
from . import errors

# Entries taken off a gone worker's queue per read.
PAGE = 100


def worker_gone(worker: str) -> errors.ApiError:
    """409 ``session_worker_gone``: the session's transcript is on ``worker``, which is gone."""
    return errors.ApiError(409, "session_worker_gone", "the session's CLI transcript is on "
                           "worker %r, and no clinvk worker of that name is alive: start it "
                           "again (server.worker_name), or set server.shared_cli_homes: true "
                           "if every worker sees the same CLI homes" % worker, "session_id")


def settle_gone_workers(runner: Any) -> None:
    """End or move the jobs queued for every worker that is gone, and remove its queue.
    ``runner`` is the process's ``job_runner_shared.SharedJobRunner``; a worker is gone
    after its heartbeat lapsed and one more visibility timeout passed."""
    queues = runner.queues
    for worker in queues.gone_workers(2 * runner.visibility_secs):
        settled = _settle_queue(runner, worker)
        if queues.drop_if_empty(worker_queue(worker)):
            runner.app.log.info("jobs: worker %r is gone: %d jobs queued for it %s, and its "
                                "queue removed" % (worker, settled, "moved to the backends' "
                                                   "queues" if _shared(runner) else "failed"))


def _settle_queue(runner: Any, worker: str) -> int:
    """Fail (or move) every job in ``worker``'s queue; how many."""
    name = worker_queue(worker)
    queue = runner.queues.queue(name)
    settled = 0
    while True:
        deliveries = queue.pull(PAGE, 0)
        if not deliveries:
            return settled
        for delivery in deliveries:
            job = settle(runner.store, queue, delivery, runner.lease.id, runner.retries)
            if job is None:
                continue
            if _shared(runner):
                runner.queues.move(delivery.entry, name, job.id, runner.route(job).backends)
            else:
                err = worker_gone(worker)
                runner.finish(job.id, FAILED, None, dict(errors.native_body(err),
                                                         status=err.status))
                ended = runner.store.read(job.id)
                if ended is None or ended.final:     # else the next round tries again
                    queue.done(delivery.entry)
            settled += 1


def _shared(runner: Any) -> bool:
    return bool(runner.app.cfg.get("server.shared_cli_homes"))
