"""The queue of jobs in Redis: each job goes to one worker; a worker that keeps its jobs keeps
them; a worker killed mid-job loses it after the visibility timeout, to a worker that marks it
interrupted, so it never runs twice at once. A real redis-server per test."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from clinvk_lib.job_queue_redis import JobQueue, RunnerHeartbeat, forget_dead_consumers, settle
from clinvk_lib.job_store import INTERRUPTED, QUEUED, RUNNING, Job, new_job_id
from clinvk_lib.job_store_redis import RedisJobStore
from clinvk_lib.redisclient import Client, ReplyError
from tests.serverutil import wait_for

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))



def client(redis) -> Client:
    return Client(redis.url, prefix="t:", connect_attempts=1)


def queued_job(store: RedisJobStore, queue: JobQueue, runner: str = "0" * 16) -> Job:
    job = Job(new_job_id(), "prompt", {"backend": "claude", "prompt": "x"}, runner=runner)
    store.create(job)
    queue.push(job.id)
    return job


def test_each_job_goes_to_exactly_one_of_two_workers(redis):
    store = RedisJobStore(client(redis))
    pushed = [queued_job(store, JobQueue(client(redis), "api", 60)).id for _ in range(100)]
    got = {"w1": [], "w2": []}

    def work(name):
        queue = JobQueue(client(redis), name, 60)
        while True:
            found = queue.pull(5, 0.2)
            if not found:
                return
            for delivery in found:
                got[name].append(delivery.job_id)
                queue.done(delivery.entry)

    threads = [threading.Thread(target=work, args=(n,)) for n in got]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got["w1"] + got["w2"]) == sorted(pushed)
    assert JobQueue(client(redis), "w3", 60).pull(5, 0.05) == []


def test_a_delivered_job_is_claimed_by_its_worker(redis):
    store, queue = RedisJobStore(client(redis)), JobQueue(client(redis), "w1", 60)
    job = queued_job(store, queue)
    delivery, = queue.pull(1, 0.1)
    assert delivery.job_id == job.id and not delivery.reclaimed
    claimed = settle(store, queue, delivery, "1" * 16)
    assert claimed.runner == "1" * 16 and claimed.status == QUEUED


def test_a_job_that_ended_meanwhile_is_acknowledged_not_run(redis):
    store, queue = RedisJobStore(client(redis)), JobQueue(client(redis), "w1", 60)
    job = queued_job(store, queue)
    store.request_cancel(job.id)
    delivery, = queue.pull(1, 0.1)
    assert settle(store, queue, delivery, "1" * 16) is None
    assert client(redis).execute("XLEN", "t:jobs:queue") == 0


def test_a_job_its_worker_keeps_is_never_reclaimed(redis):
    store = RedisJobStore(client(redis))
    mine, other = JobQueue(client(redis), "w1", 0.5), JobQueue(client(redis), "w2", 0.5)
    queued_job(store, mine)
    delivery, = mine.pull(1, 0.1)
    deadline = time.monotonic() + 1.5            # three visibility timeouts
    while time.monotonic() < deadline:
        assert mine.keep([delivery.entry]) == []
        assert other.pull(1, 0.1) == []


def test_a_job_its_worker_stopped_keeping_is_reclaimed_and_the_worker_told(redis):
    store = RedisJobStore(client(redis))
    mine, other = JobQueue(client(redis), "w1", 0.2), JobQueue(client(redis), "w2", 0.2)
    job = queued_job(store, mine)
    delivery, = mine.pull(1, 0.1)
    found = []
    assert wait_for(lambda: found.extend(other.pull(1, 0.05)) or found, 10)
    assert found[0].job_id == job.id and found[0].reclaimed
    assert mine.keep([delivery.entry]) == [delivery.entry]


WORKER = """
import sys, time
sys.path.insert(0, %(root)r)
from clinvk_lib.job_queue_redis import JobQueue, RunnerHeartbeat, forget_dead_consumers, settle
from clinvk_lib.job_store_redis import RedisJobStore
from clinvk_lib.redisclient import Client, ReplyError
client = Client(%(url)r, prefix="t:")
store, queue = RedisJobStore(client), JobQueue(client, "killed", %(visibility)r)
delivery, = queue.pull(1, 5)
job = settle(store, queue, delivery, "k" * 16)
store.start(job.id, job.runner, store.writer(job.id))
print(job.id, flush=True)
while True:
    queue.keep([delivery.entry])
    time.sleep(0.05)
"""


def test_a_killed_workers_running_job_ends_interrupted_and_runs_nowhere_else(redis):
    store = RedisJobStore(client(redis))
    job = queued_job(store, JobQueue(client(redis), "api", 1))
    code = WORKER % {"root": ROOT, "url": redis.url, "visibility": 1.0}
    worker = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    try:
        assert worker.stdout.readline().decode().strip() == job.id
        assert store.read(job.id).status == RUNNING
        survivor = JobQueue(client(redis), "survivor", 1.0)
        deadline = time.monotonic() + 2.5        # over two visibility timeouts
        while time.monotonic() < deadline:
            assert survivor.pull(1, 0.2) == []   # its worker still keeps it
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        found = []
        assert wait_for(lambda: found.extend(survivor.pull(1, 0.1)) or found, 15)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    assert found[0].reclaimed and settle(store, survivor, found[0], "s" * 16) is None
    ended = store.read(job.id)
    assert ended.status == INTERRUPTED and "job_visibility_timeout_secs" in ended.error["message"]
    assert store.cursor(job.id).read()[-1]["content"] == {"status": INTERRUPTED}
    assert survivor.pull(1, 0.1) == []


def test_waiting_counts_the_jobs_no_worker_has_taken(redis):
    store, queue = RedisJobStore(client(redis)), JobQueue(client(redis), "w1", 60)
    for _ in range(3):
        queued_job(store, queue)
    queue.pull(1, 0.1)
    assert queue.waiting() == 2


def test_a_heartbeat_lapses_when_its_process_is_killed(redis):
    code = ("import sys, time; sys.path.insert(0, %r)\n"
            "from clinvk_lib.job_queue_redis import RunnerHeartbeat\n"
            "from clinvk_lib.redisclient import Client\n"
            "beat = RunnerHeartbeat(Client(%r, prefix='t:'), 0.5); beat.take()\n"
            "print(beat.id, flush=True); time.sleep(60)\n" % (ROOT, redis.url))
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    store = RedisJobStore(client(redis))
    try:
        runner = child.stdout.readline().decode().strip()
        assert store.runner_alive(runner)
    finally:
        child.kill()
        child.wait()
    assert wait_for(lambda: not store.runner_alive(runner), 10)


def test_a_worker_goes_on_pulling_after_redis_restarts_empty(redis):
    queue = JobQueue(client(redis), "w1", 60)
    assert queue.pull(1, 0.05) == []
    redis.stop()
    redis.start()
    store = RedisJobStore(client(redis))
    with pytest.raises(ReplyError, match="NOGROUP"):
        queue.pull(1, 0.05)
    job = queued_job(store, JobQueue(client(redis), "api", 60))
    assert [d.job_id for d in queue.pull(1, 0.1)] == [job.id]


def running_on_a_dead_worker(redis, store: RedisJobStore, attempt: int = 1) -> Job:
    """A job that was running on worker "dead" (no heartbeat), whose entry "dead" held, so
    that a pull reclaims it at once (visibility 0)."""
    job = queued_job(store, JobQueue(client(redis), "api", 60), runner="d" * 16)
    dead = JobQueue(client(redis), "dead", 60)
    delivery, = dead.pull(1, 0.1)
    store.update(job.id, lambda j: setattr(j, "attempt", attempt) is None)
    store.start(job.id, "d" * 16, store.writer(job.id))
    return job


def test_a_dead_workers_running_job_is_run_again_when_retries_are_configured(redis):
    store = RedisJobStore(client(redis))
    job = running_on_a_dead_worker(redis, store)
    survivor = JobQueue(client(redis), "survivor", 0)
    found = []
    assert wait_for(lambda: found.extend(survivor.pull(1, 0.05)) or found, 10)
    again = settle(store, survivor, found[0], "s" * 16, retries=1)
    assert again.status == QUEUED and again.runner == "s" * 16 and again.attempt == 2
    assert store.read(job.id).public()["attempt"] == 2
    requeued = store.cursor(job.id).read()[-1]["content"]
    assert requeued["status"] == QUEUED and requeued["attempt"] == 2
    assert "job_visibility_timeout_secs" in requeued["reason"]
    # The new attempt runs here; its worker is the only one that can start it.
    assert store.start(job.id, "d" * 16, store.writer(job.id)) is None
    assert store.start(job.id, "s" * 16, store.writer(job.id)).status == RUNNING


def test_a_job_that_had_all_its_attempts_ends_interrupted_saying_so(redis):
    store = RedisJobStore(client(redis))
    job = running_on_a_dead_worker(redis, store, attempt=2)
    survivor = JobQueue(client(redis), "survivor", 0)
    found = []
    assert wait_for(lambda: found.extend(survivor.pull(1, 0.05)) or found, 10)
    assert settle(store, survivor, found[0], "s" * 16, retries=1) is None
    ended = store.read(job.id)
    assert ended.status == INTERRUPTED and ended.attempt == 2
    assert "attempt 2 of 2, server.job_retries" in ended.error["message"]
    assert client(redis).execute("XLEN", "t:jobs:queue") == 0


def test_without_retries_a_dead_workers_job_is_not_run_again(redis):
    store = RedisJobStore(client(redis))
    job = running_on_a_dead_worker(redis, store)
    survivor = JobQueue(client(redis), "survivor", 0)
    found = []
    assert wait_for(lambda: found.extend(survivor.pull(1, 0.05)) or found, 10)
    assert settle(store, survivor, found[0], "s" * 16) is None
    assert store.read(job.id).status == INTERRUPTED and store.read(job.id).attempt == 1


def consumers(redis):
    reply = client(redis).execute("XINFO", "CONSUMERS", "t:jobs:queue", "workers")
    return sorted(dict(zip(c[::2], c[1::2]))[b"name"].decode() for c in reply)


def test_consumers_of_workers_long_gone_are_forgotten_and_no_other(redis):
    store = RedisJobStore(client(redis))
    alive = RunnerHeartbeat(client(redis), 60)
    alive.take()
    try:
        queued_job(store, JobQueue(client(redis), "api", 60))
        holder = JobQueue(client(redis), "holder", 60)     # gone, but holds an entry
        assert len(holder.pull(1, 0.1)) == 1

        def join(name):
            client(redis).execute("XGROUP", "CREATECONSUMER", "t:jobs:queue", "workers", name)
        join("gone")                                       # gone, holds nothing
        join(alive.id)                                     # idle, holds nothing, alive
        time.sleep(0.3)
        join("fresh")                                      # gone a moment ago
        fresh = JobQueue(client(redis), "fresh", 60)
        assert consumers(redis) == sorted(["holder", "gone", alive.id, "fresh"])
        assert forget_dead_consumers(fresh, 0.25) == ["gone"]
        assert consumers(redis) == sorted(["holder", alive.id, "fresh"])
        # The entry "holder" held is still reclaimable: nothing was lost.
        found = []
        other = JobQueue(client(redis), "other", 0)
        assert wait_for(lambda: found.extend(other.pull(1, 0.05)) or found, 10)
    finally:
        alive.release()


def test_the_attempt_a_dead_worker_lost_cannot_end_the_job_run_again(redis):
    """A worker that only froze comes back after its job was queued again: whatever its run
    still writes (events, its end) is refused, as the requeue took the next event's id."""
    store = RedisJobStore(client(redis))
    job = running_on_a_dead_worker(redis, store)
    stale = store.writer(job.id)            # the lost attempt's log, as its worker holds it
    survivor = JobQueue(client(redis), "survivor", 0)
    found = []
    assert wait_for(lambda: found.extend(survivor.pull(1, 0.05)) or found, 10)
    assert settle(store, survivor, found[0], "s" * 16, retries=1).status == QUEUED
    with pytest.raises(OSError):
        store.finish(job.id, "succeeded", {"output": "late"}, None, stale)
    assert store.read(job.id).status == QUEUED and store.read(job.id).result is None
