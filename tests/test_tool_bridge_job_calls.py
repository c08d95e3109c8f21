"""The routing of job runs' tool calls through the store (toolbridge/job_calls.py), against the
real redis-server: what a worker records when its run parks, what an API node finds, and that
one request only takes a round."""

from __future__ import annotations

import threading

import pytest

from clinvk_lib.redisclient import Client
from clinvk_lib.toolbridge.job_calls import CallOwner, JobCalls


@pytest.fixture
def calls(redis):
    client = Client(redis.url, prefix="t:")
    try:
        yield JobCalls(client)
    finally:
        client.close()


def park(calls, job="job_1", ids=("call_a", "call_b"), ttl=30.0):
    calls.park(job, "key1", 7, list(ids), ttl, "claude", "sess-1")


def test_a_parked_rounds_calls_name_their_job_and_owner(calls):
    park(calls)
    assert calls.find("call_a") == CallOwner("job_1", "key1")
    assert calls.find("call_b") == CallOwner("job_1", "key1")
    assert calls.find("call_c") is None
    parked = calls.round_of("job_1")
    assert (parked.seq, parked.calls, parked.backend, parked.session_id) == (
        7, ["call_a", "call_b"], "claude", "sess-1")


def test_the_handed_over_results_reach_the_waiting_worker(calls):
    park(calls)
    results = {"call_a": ("sunny", False), "call_b": ("no such city", True)}
    assert calls.hand_over("job_1", calls.round_of("job_1"), results, 30)
    assert calls.round_of("job_1") is None          # taken: no other request may take it
    assert calls.wait_results("job_1", 1) == results


def test_only_one_of_two_requests_takes_a_round(calls):
    park(calls)
    parked = calls.round_of("job_1")
    taken = []
    threads = [threading.Thread(target=lambda i=i: taken.append(calls.hand_over(
        "job_1", parked, {"call_a": (str(i), False), "call_b": ("x", False)}, 30)))
        for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(taken) == [False] * 7 + [True]
    assert calls.wait_results("job_1", 1) is not None
    assert calls.wait_results("job_1", 1) is None   # one set of results only


def test_a_round_parked_again_is_not_taken_with_the_record_read_before(calls):
    park(calls)
    old = calls.round_of("job_1")
    calls.unpark("job_1")
    park(calls, ids=("call_c",))
    assert not calls.hand_over("job_1", old, {"call_a": ("x", False)}, 30)


def test_no_result_within_the_wait_is_none(calls):
    park(calls)
    assert calls.wait_results("job_1", 1) is None


def test_a_run_that_ended_leaves_nothing(calls):
    park(calls)
    calls.hand_over("job_1", calls.round_of("job_1"), {"call_a": ("x", False)}, 30)
    calls.forget("job_1", ["call_a", "call_b"])
    assert calls.client.execute("KEYS", "t:*") == []


def test_the_records_expire_with_the_result_timeout(calls):
    park(calls, ttl=30.0)
    ttls = [calls.client.execute("PTTL", key) for key in calls.client.execute("KEYS", "t:*")]
    assert len(ttls) == 3 and all(0 < t <= 30000 for t in ttls)
