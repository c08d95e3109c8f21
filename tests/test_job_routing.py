"""Routing jobs in Redis: a job goes only to a process that has every backend it needs, a job
continuing a session only to the worker that ran the session's last turn (and is refused,
naming that worker, when none of that name is alive), no backend queue starves another, and
the queue bound counts every queue. A real redis-server for the module, emptied per test."""

from __future__ import annotations

import threading

import pytest

from clinvk_lib.job_queue_redis import JobQueue, RunnerHeartbeat
from clinvk_lib.job_routes_redis import RoutedQueues, backends_queue, queue_backends, worker_queue
from clinvk_lib.redisclient import Client
from clinvk_lib.server import errors
from clinvk_lib.server.job_runner_shared import Route, check_route, job_backends
from tests.redisutil import RedisServer
from tests.serverutil import wait_for


@pytest.fixture(scope="module")
def redis(tmp_path_factory):
    with RedisServer(str(tmp_path_factory.mktemp("redis"))) as server:
        yield server


@pytest.fixture(autouse=True)
def empty(redis):
    Client(redis.url).execute("FLUSHALL")


def process(redis, consumer, worker="", backends=()) -> RoutedQueues:
    """The queues as one process sees them."""
    return RoutedQueues(Client(redis.url, prefix="t:", connect_attempts=1), consumer, 60,
                        worker or consumer, lambda: backends)


def pulled(queues: RoutedQueues) -> list:
    """The job ids ``queues`` pulls until it finds none, acknowledging each."""
    found = []
    while True:
        deliveries = queues.pull(0.01)
        if not deliveries:
            return found
        for d in deliveries:
            found.append(d.job_id)
            queues.queue(d.queue).done(d.entry)


def test_a_job_goes_only_to_a_process_that_has_every_backend_it_needs(redis):
    api = process(redis, "api")
    api.push("claude-job", ["claude"])
    api.push("both-job", ["codex", "claude"])
    api.push("codex-job", ["codex"])
    assert pulled(process(redis, "gemini-only", backends=["gemini"])) == []
    assert sorted(pulled(process(redis, "claude-only", backends=["claude"]))) == ["claude-job"]
    assert sorted(pulled(process(redis, "both", backends=["claude", "codex"]))) == [
        "both-job", "codex-job"]


def test_a_job_of_the_shared_queue_goes_to_any_process(redis):
    process(redis, "api").push("any-job")
    assert pulled(process(redis, "bare")) == ["any-job"]


def test_a_workers_own_job_goes_to_that_worker_first_and_to_no_other(redis):
    api = process(redis, "api")
    api.push("shared-job", ["claude"])
    api.push("session-job", ["claude"], worker="gpu-1")
    assert pulled(process(redis, "p2", "gpu-2", ["claude"])) == ["shared-job"]
    assert pulled(process(redis, "p1", "gpu-1", ["claude"])) == ["session-job"]


def test_a_restarted_worker_takes_back_the_jobs_its_dead_process_held(redis):
    process(redis, "api").push("session-job", worker="gpu-1")
    dead = process(redis, "old", "gpu-1")
    assert [d.job_id for d in dead.pull(0.01)] == ["session-job"]
    reborn = process(redis, "new", "gpu-1")
    reborn.visibility_secs = 0          # its entries are idle past the timeout at once
    assert [(d.job_id, d.reclaimed) for d in reborn.pull(0.01)] == [("session-job", True)]


def test_no_backend_queue_starves_another(redis):
    api = process(redis, "api")
    for i in range(20):
        api.push("claude-%d" % i, ["claude"])
    for i in range(3):
        api.push("codex-%d" % i, ["codex"])
    both = process(redis, "both", backends=["claude", "codex"])
    first_six = []
    for _ in range(6):
        (d,) = both.pull(0.01)
        first_six.append(d.job_id.split("-")[0])
        both.queue(d.queue).done(d.entry)
    assert first_six.count("codex") == 3


def test_a_pull_that_waits_gets_the_job_pushed_meanwhile_on_any_of_its_queues(redis):
    both = process(redis, "both", "gpu-1", backends=["claude", "codex"])
    for backend in ("claude", "codex"):          # the queues exist from now on
        process(redis, "api").push("first-" + backend, [backend])
    assert sorted(pulled(both)) == ["first-claude", "first-codex"]
    got = []
    waiting = threading.Thread(target=lambda: got.extend(both.pull(30)))
    waiting.start()
    assert wait_for(lambda: blocked_on_xreadgroup(redis), 10)
    process(redis, "api").push("codex-job", ["codex"])
    waiting.join()
    assert [(d.job_id, d.queue) for d in got] == [("codex-job", backends_queue(["codex"]))]


def blocked_on_xreadgroup(redis) -> bool:
    lines = Client(redis.url).execute("CLIENT", "LIST").decode().splitlines()
    return any("cmd=xreadgroup" in line and " flags=b " in line for line in lines)


def test_an_entry_given_back_goes_to_the_next_pull_of_any_process(redis):
    process(redis, "api").push("job-1")
    mine = JobQueue(Client(redis.url, prefix="t:"), "p1", 60)
    (delivery,) = mine.pull(1, 0.01)
    other = JobQueue(Client(redis.url, prefix="t:"), "p2", 60)
    assert other.pull(1, 0) == []                # held by p1
    mine.give_back(delivery.entry)
    assert [(d.job_id, d.reclaimed) for d in other.pull(1, 0)] == [("job-1", True)]


def test_a_process_that_runs_jobs_keeps_its_worker_known_two_heartbeat_lifetimes(redis):
    client = Client(redis.url, prefix="t:")
    beats = [RunnerHeartbeat(client, 30, lambda: {"worker": "gpu-1", "capacity": "2"}),
             RunnerHeartbeat(client, 30, lambda: {"worker": "api-1", "capacity": "0"})]
    for beat in beats:
        beat.take()
    try:
        assert 59000 < client.execute("PTTL", "t:worker:gpu-1") <= 60000
        assert client.execute("EXISTS", "t:worker:api-1") == 0   # it runs no jobs
    finally:
        for beat in beats:
            beat.release()


def test_a_worker_whose_key_expired_is_gone_once_redis_has_been_up_that_long(redis):
    api = process(redis, "api")
    api.push("a", worker="gpu-1")
    api.push("b", worker="gpu-2")
    api.client.execute("SET", "t:worker:gpu-2", "x")
    assert api.gone_workers(0) == ["gpu-1"]
    assert api.gone_workers(3600) == []          # Redis restarted: the keys may come back


def test_a_gone_workers_job_moves_to_its_backends_queue_in_one_step(redis):
    api = process(redis, "api")
    api.push("session-job", ["claude"], worker="gpu-1")
    sweeper = process(redis, "sweeper")
    own = worker_queue("gpu-1")
    (delivery,) = sweeper.queue(own).pull(10, 0)
    assert sweeper.move(delivery.entry, own, "session-job", ["claude"]) == \
        backends_queue(["claude"])
    assert api.client.execute("XLEN", "t:" + own) == 0
    assert api.client.execute("XPENDING", "t:" + own, "workers")[0] == 0
    assert pulled(process(redis, "p", backends=["claude"])) == ["session-job"]


def test_a_workers_queue_is_dropped_only_once_nothing_is_queued_or_pending(redis):
    api = process(redis, "api")
    api.push("session-job", worker="gpu-1")
    own = worker_queue("gpu-1")
    assert api.drop_if_empty(own) is False       # queued
    sweeper = process(redis, "sweeper")
    (delivery,) = sweeper.queue(own).pull(1, 0)
    assert api.drop_if_empty(own) is False       # pending
    sweeper.queue(own).done(delivery.entry)
    assert api.drop_if_empty(own) is True
    assert own not in api.names() and api.client.execute("EXISTS", "t:" + own) == 0


def test_a_pulling_process_registers_its_own_queue(redis):
    assert process(redis, "p1", "gpu-1").pull(0.01) == []
    assert worker_queue("gpu-1") in process(redis, "api").names()


def test_waiting_counts_the_jobs_of_every_queue(redis):
    api = process(redis, "api")
    api.push("a", ["claude"])
    api.push("b", ["codex"])
    api.push("c", worker="gpu-1")
    api.push("d")
    assert api.waiting() == 4
    assert sorted(pulled(process(redis, "p", backends=["claude"]))) == ["a", "d"]
    assert api.waiting() == 2


def test_queue_names_say_the_backends_their_jobs_need():
    assert backends_queue(["codex", "claude", "codex"]) == "jobs:queue:backends:claude+codex"
    assert queue_backends("jobs:queue:backends:claude+codex") == {"claude", "codex"}
    assert backends_queue([]) == "jobs:queue" and queue_backends("jobs:queue") == set()
    assert queue_backends("jobs:queue:worker:gpu-1") is None


@pytest.mark.parametrize("kind,request_,backends", [
    ("prompt", {"prompt": "x", "backend": "codex"}, ("codex",)),
    ("prompt", {"prompt": "x"}, ("claude",)),
    ("parallel", {"tasks": [{"backend": "gemini"}, {"prompt": "x"}]}, ("claude", "gemini")),
    ("chain", {"steps": [{"backend": "codex"}, {"backend": "codex"}]}, ("codex",)),
    ("compare", {"backends": ["qwen", "codex"]}, ("codex", "qwen")),
    ("response", {"response_id": "resp_1"}, ()),
])
def test_a_jobs_backends_come_from_its_request(kind, request_, backends):
    assert job_backends(kind, request_, "claude") == backends


RUNNERS = [{"id": "1", "worker": "gpu-1", "backends": ["claude"], "capacity": 4, "busy": 0},
           {"id": "2", "worker": "api-1", "backends": ["codex"], "capacity": 0, "busy": 0}]


def test_a_session_whose_worker_is_gone_is_refused_naming_the_worker():
    with pytest.raises(errors.ApiError) as info:
        check_route(Route("gpu-9", ("claude",)), RUNNERS)
    assert (info.value.status, info.value.code, info.value.field) == (
        409, "session_worker_gone", "session_id")
    assert "'gpu-9'" in info.value.message and "server.shared_cli_homes" in info.value.message
    with pytest.raises(errors.ApiError):
        check_route(Route("api-1", ()), RUNNERS)     # alive, but it runs no jobs
    assert check_route(Route("gpu-1", ("claude",)), RUNNERS) == ""


def test_a_job_no_live_worker_can_run_is_accepted_with_a_warning_naming_its_backends():
    warning = check_route(Route("", ("codex",)), RUNNERS)
    assert "no live clinvk worker has codex" in warning and "claude" in warning
    assert check_route(Route("", ("claude",)), RUNNERS) == ""
    assert check_route(Route("", ()), []) == ""
