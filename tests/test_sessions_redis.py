"""The session store in Redis keeps the disk store's promises (the same tests, run against
it), and what sharing adds: two nodes see one session, no lost turn across nodes, a lock held
by another node times out with SessionBusy and is freed when its holder dies, the worker that
ran the last turn is recorded, and a clear error while Redis is down. One real redis-server
for the module, emptied before each test."""

from __future__ import annotations

import socket
import threading

import pytest

from clinvk_lib import config, execute, sessions_redis
from clinvk_lib.redisclient import Client
from clinvk_lib.server import errors
from clinvk_lib.session_record import SessionBusy, SessionElsewhere, StoreUnavailable
from clinvk_lib.sessions import SessionStore
from clinvk_lib.sessions_redis import RedisSessionStore
from clinvk_lib.shared_store import open_session_store, open_shared_store
from tests.redisutil import RedisServer, free_port
from tests.test_sessions import (  # noqa: F401 (the disk store's tests, run on this store)
    set_fields, test_a_prefix_is_not_ambiguous_because_of_another_keys_session,
    test_a_session_records_the_key_id_of_its_creator,
    test_clean_deletes_only_sessions_unused_for_longer_than_the_age,
    test_clean_refuses_an_age_of_zero_or_less_and_deletes_nothing, test_count,
    test_create_refuses_a_relative_working_dir, test_health_reports_the_session_count,
    test_last_filters_by_backend_and_working_dir,
    test_last_returns_the_most_recent_resumable_session,
    test_list_cuts_long_prompts_but_get_has_the_full_text,
    test_list_filters_by_backend_and_status, test_list_orders_by_last_used_newest_first,
    test_list_pages_with_limit_and_offset_and_reports_the_total,
    test_list_refuses_negative_limit_or_offset, test_listed_sessions_are_copies,
    test_lock_holder_can_update_and_record_turns, test_lock_of_an_unknown_session_is_not_found,
    test_lookups_see_only_the_sessions_the_access_allows,
    test_new_session_ids_are_32_lowercase_hex_characters,
    test_other_threads_wait_for_the_lock_holder,
    test_record_turn_counts_turns_adds_usage_and_stores_ids,
    test_record_turn_with_an_error_sets_error_and_a_later_success_clears_it,
    test_resolve_accepts_a_unique_prefix_in_any_case,
    test_resolve_of_an_ambiguous_prefix_names_every_candidate,
    test_resolve_of_an_unmatched_prefix_is_not_found, test_session_round_trips_through_to_dict,
    test_timestamps_are_rfc3339_utc, test_title_is_the_first_prompt_line_cut_to_60_characters,
    test_two_threads_holding_one_session_lock_never_overlap,
    test_update_refuses_an_unknown_status, test_update_saves_nothing_when_fn_raises,
    test_update_saves_what_fn_changed)


@pytest.fixture(scope="module")
def redis(tmp_path_factory):
    with RedisServer(str(tmp_path_factory.mktemp("redis"))) as server:
        yield server


def node(redis, home, worker="w1") -> RedisSessionStore:
    """One node's store, with connections of its own."""
    return RedisSessionStore(Client(redis.url, prefix="t:", connect_attempts=1), home, worker)


@pytest.fixture
def store(redis, tmp_path):
    Client(redis.url).execute("FLUSHALL")
    return node(redis, str(tmp_path))


def test_a_session_made_on_one_node_is_found_listed_and_resumed_on_another(redis, store,
                                                                           tmp_path):
    other = node(redis, str(tmp_path), "w2")
    s = store.create("claude", "/w", initial_prompt="hello")
    assert other.resolve(s.id[:6]).initial_prompt == "hello"
    other.record_turn(s.id, "b-1", {"input_tokens": 3})
    assert store.get(s.id).turn_count == 1 and store.list()[0][0].backend_session_id == "b-1"
    other.delete(s.id)
    assert store.list() == ([], 0)


def test_threads_recording_turns_through_two_nodes_lose_nothing(redis, store, tmp_path):
    ids = [store.create("claude", "/w").id for _ in range(4)]
    stores = [store, node(redis, str(tmp_path), "w2")]

    def work(n):
        for i in range(10):
            stores[n % 2].record_turn(ids[(n + i) % 4], "b", {"input_tokens": 1})
    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert [store.get(sid).turn_count for sid in ids] == [20] * 4
    assert sorted(s.token_usage["input_tokens"] for s in stores[1].list()[0]) == [20] * 4


def test_a_lock_held_by_another_node_times_out_with_session_busy(redis, store, tmp_path):
    s = store.create("claude", "/w")
    other = node(redis, str(tmp_path), "w2")
    with other.lock(s.id):
        with pytest.raises(SessionBusy, match=s.id):
            with store.lock(s.id, timeout=0.1):
                pass
        assert store.clean(0.000001) == []          # a session being resumed is kept
    with store.lock(s.id, timeout=10) as locked:
        assert locked.id == s.id


def test_a_lock_whose_holder_died_expires(redis, store, tmp_path, monkeypatch):
    s = store.create("claude", "/w")
    monkeypatch.setattr(sessions_redis, "LOCK_TTL_MS", 300)
    dead = node(redis, str(tmp_path), "w2")
    dead._files._locks.acquire(dead._files._record_key(s.id) + ":lock", 0)
    dead._files._locks._held.clear()                # its renewals stop, as at a SIGKILL
    with pytest.raises(SessionBusy):
        with store.lock(s.id, timeout=0):
            pass
    with store.lock(s.id, timeout=10) as locked:
        assert locked.id == s.id


def test_a_held_lock_is_renewed_past_its_time_to_live(redis, store, tmp_path, monkeypatch):
    monkeypatch.setattr(sessions_redis, "LOCK_TTL_MS", 300)
    s = store.create("claude", "/w")
    other = node(redis, str(tmp_path), "w2")
    with store.lock(s.id):
        with pytest.raises(SessionBusy):
            with other.lock(s.id, timeout=1.0):     # three times the time to live
                pass


def test_a_lock_released_while_redis_is_down_is_released_once_it_is_back(tmp_path):
    """Redis restored from a snapshot taken while the lock was held would keep the session
    busy until the lock expired (30 s): its holder releases it again once Redis is back."""
    with RedisServer(str(tmp_path / "redis")) as server:
        here = node(server, str(tmp_path))
        s = here.create("claude", "/w")
        with here.lock(s.id):
            Client(server.url).execute("SAVE")      # the lock is in the snapshot
            server.stop()
        server.start()                              # the turn is over; the lock is back
        with node(server, str(tmp_path), "w2").lock(s.id, timeout=10) as locked:
            assert locked.id == s.id


def test_a_turn_records_the_worker_that_ran_it_and_an_update_keeps_it(redis, store, tmp_path):
    s = store.create("claude", "/w")
    assert store.worker_of(s.id) == "w1"
    other = node(redis, str(tmp_path), "w2")
    other.record_turn(s.id, "b", None)
    assert store.worker_of(s.id) == "w2"
    set_fields(store, s.id, tags=["x"])
    store.record_turn(s.id, "", None, error="No conversation found")   # nothing resumed here
    assert other.worker_of(s.id) == "w2"


def test_a_session_another_worker_ran_cannot_be_continued_here_unless_homes_are_shared(
        redis, store, tmp_path):
    s = store.create("claude", "/w")
    store.check_here(s)                                     # w1 ran it: here
    other = node(redis, str(tmp_path), "w2")
    with pytest.raises(SessionElsewhere) as caught:
        other.check_here(s)
    assert caught.value.worker == "w1" and "'w1'" in str(caught.value)
    assert "server.shared_cli_homes" in str(caught.value)
    shared = RedisSessionStore(Client(redis.url, prefix="t:"), str(tmp_path), "w2",
                               shared_homes=True)
    shared.check_here(s)


def test_a_run_continuing_a_session_of_another_worker_is_refused_before_it_starts(
        redis, store, tmp_path, fake_path):
    s = store.create("claude", str(tmp_path), backend_session_id="b")
    other = node(redis, str(tmp_path), "w2")
    cfg = config.load(flags={})
    with pytest.raises(execute.ExecError) as caught:
        execute.prepare(execute.Request(backend="claude", prompt="again", session_id=s.id),
                        cfg, other)
    assert caught.value.field == "session_id" and "'w1'" in str(caught.value)
    assert errors.from_exception(caught.value).code == "session_worker_elsewhere"
    # Run elsewhere (an API node hands it to a worker): the job's routing sees to it.
    execute.prepare(execute.Request(backend="claude", prompt="again", session_id=s.id),
                    cfg, other, elsewhere=True)


def test_a_first_turn_saved_with_its_new_session_records_the_worker(store):
    new = store.new("claude", "/w")
    store.record_turn(new.id, "b", None, new=new)
    assert store.worker_of(new.id) == "w1" and store.get(new.id).turn_count == 1


def test_redis_down_is_store_unavailable_naming_redis(redis, tmp_path):
    store = RedisSessionStore(Client("redis://127.0.0.1:%d/0" % free_port(),
                                     connect_attempts=1), str(tmp_path), "w1")
    with pytest.raises(StoreUnavailable) as info:
        store.list()
    assert "Redis" in info.value.public and "server.store" in str(info.value)
    available, count, problem = store.health()
    assert (available, count) == (False, 0) and "Redis" in problem


def test_the_store_setting_chooses_redis_and_the_worker_name_defaults_to_the_host(
        redis, tmp_path):
    cfg = config.load(None, flags={"server.store": redis.url})
    store = open_session_store(cfg, open_shared_store(cfg))
    assert isinstance(store, RedisSessionStore) and store.worker == socket.gethostname()
    named = config.load(None, flags={"server.store": redis.url, "server.worker_name": "gpu-1"})
    assert open_session_store(named, open_shared_store(named)).worker == "gpu-1"
    disk = config.load(None, flags={})
    assert type(open_session_store(disk, open_shared_store(disk))) is SessionStore
