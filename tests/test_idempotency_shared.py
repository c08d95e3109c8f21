"""``Idempotency-Key`` across nodes on one Redis (server.store): a retry that reaches the
other node gets the first answer and starts no run, a concurrent retry waits for it there, a
reused key is refused wherever it arrives. In-process servers, a real redis-server."""

from __future__ import annotations

import threading

import pytest

from tests.conftest import records
from tests.serverutil import start_server  # noqa: F401 (a fixture)
from tests.test_idempotency import CHAT, PROMPT, post, replayed



@pytest.fixture
def nodes(redis, start_server):
    return [start_server(**{"server.store": redis.url}) for _ in range(2)]


@pytest.mark.parametrize("path,body", [PROMPT, CHAT], ids=["native", "openai"])
def test_a_retry_on_the_other_node_gets_the_first_answer_and_starts_no_run(
        nodes, record, path, body):
    a, b = nodes
    first = post(a, path, body)
    assert first.status == 200 and not replayed(first)
    again = post(b, path, body)
    assert (again.status, again.body) == (first.status, first.body) and replayed(again)
    assert again.headers["Content-Type"] == first.headers["Content-Type"]
    assert len(records(record)) == 1


def test_a_streamed_answer_is_replayed_on_the_other_node(nodes, record):
    a, b = nodes
    body = dict(PROMPT[1], stream=True)
    first = post(a, PROMPT[0], body)
    again = post(b, PROMPT[0], body)
    assert again.body == first.body and replayed(again) and len(records(record)) == 1


def test_the_same_key_sent_to_both_nodes_at_once_starts_one_run(nodes, record, monkeypatch):
    monkeypatch.setenv("FAKE_CLI_MODE", "slow")
    monkeypatch.setenv("FAKE_CLI_DELAY", "0.2")
    replies = [None, None]

    def send(i):
        replies[i] = post(nodes[i], *PROMPT, key="together")

    threads = [threading.Thread(target=send, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.status for r in replies] == [200, 200]
    assert replies[0].body == replies[1].body
    assert sorted(replayed(r) for r in replies) == [False, True]
    assert len(records(record)) == 1


def test_a_key_reused_for_another_request_on_the_other_node_is_refused(nodes, record):
    a, b = nodes
    post(a, *PROMPT)
    reply = post(b, PROMPT[0], dict(PROMPT[1], prompt="something else"))
    assert reply.status == 422 and reply.json()["error"] == "idempotency_key_reused"
    assert len(records(record)) == 1


def test_keys_are_per_caller_across_nodes(redis, start_server, record):
    keyed = {"server.store": redis.url, "server.api_keys": ["sk-one-123456", "sk-two-654321"]}
    a, b = start_server(**keyed), start_server(**keyed)
    post(a, *PROMPT, **{"X-Api-Key": "sk-one-123456"})
    other = post(b, *PROMPT, **{"X-Api-Key": "sk-two-654321"})
    assert not replayed(other) and len(records(record)) == 2


def test_store_down_refuses_a_request_with_a_key_and_runs_one_without(nodes, redis, record):
    redis.stop()
    reply = post(nodes[0], *PROMPT)
    assert reply.status == 503
    assert reply.json()["error"] == "idempotency_store_unavailable"
    assert reply.headers["Retry-After"] == "1"
    ephemeral = ("/api/v1/prompt", dict(PROMPT[1], ephemeral=True))  # sessions are in Redis
    assert post(nodes[0], *ephemeral, key=None).status == 200
    assert len(records(record)) == 1
