"""The store of the Responses API's stored responses keeps the same promises on disk and in
Redis (``server.store``): each test runs on both. Redis adds: two nodes see one store, the
bounds hold across them, and a Redis that is down is a clear ResponseStoreError (the API's
503), never a crash. A real redis-server per Redis test."""

from __future__ import annotations

import os

import pytest

from clinvk_lib import config
from clinvk_lib.redisclient import Client
from clinvk_lib.server.response_store import ResponseStore, ResponseStoreError, StoredResponse
from clinvk_lib.server.response_store_redis import RedisResponseStore
from clinvk_lib.sessions import EVERYTHING, Access
from clinvk_lib.shared_store import open_response_store


def redis_store(redis, max_stored, max_age=0.0) -> RedisResponseStore:
    """One node's store, with connections of its own."""
    return RedisResponseStore(Client(redis.url, prefix="t:", connect_attempts=1), max_stored,
                              max_age)


def redis_now(store: RedisResponseStore) -> float:
    """Redis's clock, in seconds."""
    secs, micros = store.client.execute("TIME")
    return int(secs) + int(micros) / 1e6


class Stores:
    """Makes the stores of one test on disk or in Redis, and ages a stored response."""

    def __init__(self, kind, tmp_path, request) -> None:
        self.kind = kind
        self.home = str(tmp_path / "home")
        self.redis = request.getfixturevalue("redis") if kind == "redis" else None

    def make(self, max_stored=100, max_age=0.0):
        if self.redis is None:
            return ResponseStore(self.home, max_stored, max_age)
        return redis_store(self.redis, max_stored, max_age)

    def age(self, store, response_id, secs):
        """Make ``response_id`` look last written ``secs`` ago (and the next prune look
        again at ages)."""
        if self.redis is None:
            path = os.path.join(store.dir, response_id + ".json")
            past = os.stat(path).st_mtime - secs
            os.utime(path, (past, past))
            store._last_age_sweep = 0.0
        else:
            store.client.execute("ZADD", store.client.key("responses:by_time"),
                                 repr(redis_now(store) - secs), response_id)


@pytest.fixture(params=["disk", "redis"])
def stores(request, tmp_path):
    return Stores(request.param, tmp_path, request)


def rid(n: int) -> str:
    return "resp_%024x" % n


def record(n: int, owner: str = "", status: str = "completed") -> StoredResponse:
    return StoredResponse({"id": rid(n), "status": status, "store": True, "output": []},
                          [{"id": "msg_%d" % n, "type": "message"}], owner=owner,
                          session_id="s%d" % n, backend="claude")


def test_a_stored_response_reads_back_whole_then_is_deleted(stores):
    store = stores.make()
    store.add(record(1))
    got = store.get(rid(1), EVERYTHING)
    assert got.to_dict() == record(1).to_dict()
    store.delete(rid(1))
    assert store.get(rid(1), EVERYTHING) is None
    store.delete(rid(1))                                    # deleting again is no error


def test_an_update_saves_unless_the_response_was_deleted(stores):
    store = stores.make()
    store.add(record(1, status="queued"))
    assert store.update(record(1, status="completed")) is True
    assert store.get(rid(1), EVERYTHING).status == "completed"
    store.delete(rid(1))
    assert store.update(record(1, status="failed")) is False
    assert store.get(rid(1), EVERYTHING) is None


def test_another_keys_response_is_not_found_and_an_admin_sees_it(stores):
    store = stores.make()
    store.add(record(1, owner="key-a"))
    assert store.get(rid(1), Access("key-a", everything=False)).owner == "key-a"
    assert store.get(rid(1), Access("key-b", everything=False)) is None
    assert store.get(rid(1), EVERYTHING) is not None


@pytest.mark.parametrize("bad", ["resp_..", "../../x", "resp_" + "Z" * 24, "", "resp_1"])
def test_a_malformed_id_names_no_response(stores, bad):
    assert stores.make().get(bad, EVERYTHING) is None


def test_only_the_newest_are_kept_past_the_count_bound(stores):
    store = stores.make(max_stored=3)
    for n in range(5):
        if stores.redis is None and n:
            stores.age(store, rid(n - 1), 10 * (5 - n))     # file times: older first
        store.add(record(n))
    assert [store.get(rid(n), EVERYTHING) is not None for n in range(5)] == [
        False, False, True, True, True]


def test_responses_unwritten_past_the_retention_are_removed(stores):
    store = stores.make(max_age=3600)
    store.add(record(1))
    stores.age(store, rid(1), 7200)
    store.add(record(2))
    assert store.get(rid(1), EVERYTHING) is None
    assert store.get(rid(2), EVERYTHING) is not None


# -- what Redis adds -----------------------------------------------------------------------


def test_a_response_stored_on_one_node_is_read_updated_and_deleted_on_another(redis):
    a, b = redis_store(redis, 10), redis_store(redis, 10)
    a.add(record(1, status="queued"))
    assert b.get(rid(1), EVERYTHING).status == "queued"
    assert b.update(record(1, status="completed"))
    assert a.get(rid(1), EVERYTHING).status == "completed"
    a.delete(rid(1))
    assert b.get(rid(1), EVERYTHING) is None


def test_the_count_bound_holds_across_nodes(redis):
    nodes = [redis_store(redis, 4) for _ in range(2)]
    for n in range(10):
        nodes[n % 2].add(record(n))
    kept = [n for n in range(10) if nodes[0].get(rid(n), EVERYTHING) is not None]
    assert kept == [6, 7, 8, 9]
    keys = nodes[0].client.execute("KEYS", "t:response:*")
    assert len(keys) == 4 and nodes[0].client.execute("ZCARD", "t:responses:by_time") == 4


def test_a_record_expires_by_itself_after_the_retention(redis):
    store = redis_store(redis, 10, max_age=3600)
    store.add(record(1))
    ttl = store.client.execute("PTTL", "t:response:" + rid(1))
    assert 3590 * 1000 < ttl <= 3600 * 1000
    unbounded = redis_store(redis, 10)
    unbounded.add(record(2))
    assert unbounded.client.execute("PTTL", "t:response:" + rid(2)) == -1


def test_a_value_this_store_did_not_write_is_no_response(redis):
    store = redis_store(redis, 10)
    store.client.execute("SET", "t:response:" + rid(1), "not json")
    store.client.execute("SET", "t:response:" + rid(2), '{"owner": ""}')
    assert store.get(rid(1), EVERYTHING) is None and store.get(rid(2), EVERYTHING) is None


def test_redis_down_is_a_response_store_error_naming_the_store(redis):
    store = redis_store(redis, 10)
    store.add(record(1))
    redis.stop()
    for call in (lambda: store.get(rid(1), EVERYTHING), lambda: store.add(record(2)),
                 lambda: store.update(record(1)), lambda: store.delete(rid(1))):
        with pytest.raises(ResponseStoreError) as caught:
            call()
        assert "response store (Redis, redis://127.0.0.1:%d/0)" % redis.port in \
            str(caught.value)


def test_the_server_opens_the_store_its_settings_name(redis, tmp_path):
    cfg = config.load(env={"CLINVK_HOME": str(tmp_path)},
                      flags={"server.responses_max_stored": 7,
                             "server.responses_retention_days": 2})
    disk = open_response_store(cfg, None, str(tmp_path))
    assert type(disk) is ResponseStore and disk.dir == os.path.join(str(tmp_path),
                                                                    "responses")
    shared = open_response_store(cfg, Client(redis.url), str(tmp_path))
    assert isinstance(shared, RedisResponseStore)
    assert (shared.max_stored, shared.max_age) == (7, 2 * 86400.0)


def test_a_write_is_scored_by_redis_clock_whatever_the_nodes_clock_says(redis, monkeypatch):
    store = redis_store(redis, 10, max_age=3600)
    monkeypatch.setattr("time.time", lambda: 4.0e9)        # a node far in the future
    store.add(record(1))
    store.add(record(2))
    score = float(store.client.execute("ZSCORE", "t:responses:by_time", rid(1)))
    assert abs(score - redis_now(store)) < 60
    assert store.get(rid(1), EVERYTHING) is not None        # not taken for old by the next add


def test_an_id_whose_record_is_gone_is_dropped_by_the_next_prune_and_nothing_else(redis):
    """Half a removal done by hand (the record deleted, its id left): reads say not found,
    and the next prune drops the id before any live response."""
    store = redis_store(redis, 2)
    store.add(record(1))
    store.add(record(2))
    store.client.execute("DEL", "t:response:" + rid(1))
    assert store.get(rid(1), EVERYTHING) is None
    store.add(record(3))
    assert [store.get(rid(n), EVERYTHING) is not None for n in (2, 3)] == [True, True]
    assert sorted(store.client.execute("ZRANGE", "t:responses:by_time", 0, -1)) == [
        rid(2).encode(), rid(3).encode()]


def test_a_record_whose_id_is_gone_is_read_until_the_next_sweep_removes_it(redis):
    """The other half (the id taken off the set, the record left, as a two-step prune that
    stopped halfway did): the record still reads, and the next sweep deletes it alone."""
    store = redis_store(redis, 10)
    store.add(record(1))
    store.add(record(2))
    store.client.execute("ZREM", "t:responses:by_time", rid(1))
    assert store.get(rid(1), EVERYTHING) is not None
    store.SWEEP_SECS = 0
    store.add(record(3))
    assert [store.get(rid(n), EVERYTHING) is not None for n in (1, 2, 3)] == [False, True, True]
    assert store.client.execute("ZCARD", "t:responses:by_time") == 2


def test_an_update_puts_back_the_id_of_a_record_that_lost_it(redis):
    store = redis_store(redis, 10)
    store.add(record(1, status="queued"))
    store.client.execute("ZREM", "t:responses:by_time", rid(1))
    assert store.update(record(1, status="completed"))
    assert store.client.execute("ZSCORE", "t:responses:by_time", rid(1)) is not None
