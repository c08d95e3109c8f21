"""The job store in Redis keeps the disk store's promises (the same tests, run against it),
and what sharing adds: two nodes see one job, its events after any seq, no lost update under
concurrent changes, and a clear error while Redis is down. A real redis-server per test."""

from __future__ import annotations

import threading

import pytest

from clinvk_lib.job_events import job_event
from clinvk_lib.job_queue_redis import RunnerHeartbeat
from clinvk_lib.job_store import FAILED, INTERRUPTED, RUNNING, SUCCEEDED, JobStoreError
from clinvk_lib.job_store_redis import RedisJobStore
from clinvk_lib.redisclient import Client
from tests.redisutil import RedisServer
from tests.test_job_store import (  # noqa: F401 (the disk store's tests, run on this store)
    make, test_a_cancel_of_a_running_job_flags_it_for_its_runner,
    test_a_claim_goes_to_one_server_only, test_a_cancelled_queued_job_can_no_longer_start,
    test_a_job_ends_once_a_later_end_changes_nothing, test_a_malformed_id_names_no_job,
    test_a_queued_job_starts_only_for_its_runner,
    test_another_keys_job_is_not_found_and_an_admin_sees_it,
    test_prune_removes_jobs_finished_longer_ago_than_the_retention,
    test_the_final_event_is_written_before_the_record_says_final)



def node(redis, events_max_bytes=1 << 20) -> RedisJobStore:
    """One node's store, with connections of its own."""
    return RedisJobStore(Client(redis.url, prefix="t:", connect_attempts=1), events_max_bytes)


@pytest.fixture
def store(redis):
    return node(redis)


def test_a_job_made_on_one_node_is_read_and_followed_on_another(redis):
    a, b = node(redis), node(redis)
    job = make(a, runner="0123456789abcdef")
    writer = a.writer(job.id)
    a.start(job.id, "0123456789abcdef", writer)
    writer.append({"type": "message", "content": {"text": "hi"}})
    cursor = b.cursor(job.id)
    assert [e["type"] for e in cursor.read()] == ["job", "message"]
    a.finish(job.id, SUCCEEDED, {"output": "hi"}, writer=writer)
    assert [e["seq"] for e in cursor.read()] == [3]
    assert b.get(job.id).status == SUCCEEDED and b.read(job.id).result == {"output": "hi"}


@pytest.mark.parametrize("after", [0, 1, 4, 5, 9])
def test_a_cursor_after_n_gives_exactly_the_events_after_n(store, after):
    job = make(store)
    writer = store.writer(job.id)
    for _ in range(5):
        writer.append({"type": "message"})
    assert [e["seq"] for e in store.cursor(job.id, after).read()] == list(range(after + 1, 6))


def test_a_reopened_writer_goes_on_from_the_last_seq(store):
    job = make(store)
    store.writer(job.id).append({"type": "init"})
    again = store.writer(job.id)
    assert again.append(job_event(INTERRUPTED), final=True) == 2
    assert store.count_events(job.id) == 2


def test_the_event_log_keeps_the_final_event_past_its_bound(redis):
    store = node(redis, events_max_bytes=200)
    job = make(store)
    writer = store.writer(job.id)
    seqs = [writer.append({"type": "message", "content": {"text": "x" * 50}})
            for _ in range(10)]
    assert 0 in seqs
    writer.append(job_event(SUCCEEDED), final=True)
    events = store.cursor(job.id).read()
    assert [e["type"] for e in events][-2:] == ["events_truncated", "job"]
    assert events[-1]["seq"] == len(events)


def test_changes_from_two_nodes_at_once_are_never_lost(redis):
    job = make(node(redis))
    nodes = [node(redis), node(redis)]

    def count(store):
        for _ in range(25):
            def bump(j):
                j.metadata["n"] = str(int(j.metadata.get("n", "0")) + 1)
                return True
            store.update(job.id, bump)

    threads = [threading.Thread(target=count, args=(nodes[i % 2],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert nodes[0].read(job.id).metadata["n"] == "100"


def test_list_pages_through_the_index_newest_first(store):
    ids = [make(store).id for _ in range(5)]
    store.finish(ids[1], FAILED)
    page, total = store.list(limit=2, offset=1)
    assert [j.id for j in page] == [ids[3], ids[2]] and total == 5
    assert [j.id for j in store.list(status=FAILED)[0]] == [ids[1]]


def test_the_index_is_rebuilt_from_the_records(store, redis):
    job = make(store)
    Client(redis.url).execute("DEL", "t:jobs:index")
    assert store.summaries() == {}
    store.rebuild_index()
    assert store.summaries()[job.id]["status"] == "queued"


def test_delete_removes_the_record_its_events_and_its_summary(store, redis):
    job = make(store)
    store.writer(job.id).append({"type": "init"})
    store.delete(job.id)
    assert store.read(job.id) is None and store.ids() == [] and store.count_events(job.id) == 0
    assert Client(redis.url).execute("KEYS", "t:*") == []


def test_resolve_finds_a_job_by_a_unique_prefix(store):
    job = make(store)
    assert store.resolve(job.id[:-3]).id == job.id


def test_store_down_is_a_job_store_error_naming_redis_without_the_password(tmp_path):
    with RedisServer(str(tmp_path), password="hunter2") as server:
        store = RedisJobStore(Client(server.url, connect_attempts=1))
        job = make(store, status=RUNNING)
        server.stop()
        with pytest.raises(JobStoreError) as err:
            store.read(job.id)
    assert "redis://:***@127.0.0.1" in str(err.value) and "hunter2" not in str(err.value)


def test_a_runner_is_alive_while_its_heartbeat_is_kept(store):
    beat = RunnerHeartbeat(store.client, ttl_secs=30, describe=lambda: {"capacity": "4"})
    assert not store.runner_alive(beat.id)
    beat.take()
    assert store.runner_alive(beat.id)
    assert store.client.execute("HGET", beat.key, "capacity") == b"4"
    beat.release()
    assert not store.runner_alive(beat.id) and not store.runner_alive("")


def test_a_cursor_waits_for_the_next_event_written_by_another_node(redis):
    a, b = node(redis), node(redis)
    job = make(a)
    writer = a.writer(job.id)
    writer.append({"type": "init"})
    cursor = b.cursor(job.id)
    assert [e["seq"] for e in cursor.read()] == [1]
    assert cursor.wait(0.05) is False                 # nothing new yet
    later = threading.Timer(0.2, lambda: writer.append({"type": "message"}))
    later.start()
    try:
        assert cursor.wait(10) is True
    finally:
        later.join()
    assert [e["seq"] for e in cursor.read()] == [2]
    cursor.close()
    assert cursor.wait(0.05) is False                 # a closed cursor can still wait


def test_a_cursor_waiting_while_redis_is_down_says_nothing_came(redis):
    store = node(redis)
    cursor = store.cursor(make(store).id)
    redis.stop()
    assert cursor.wait(0.05) is False
