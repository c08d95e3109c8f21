"""The session store: files, lookups, the index, locks, and many writers at once."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time

import pytest

from clinvk_lib import session_record, sessions
from clinvk_lib.session_record import (AmbiguousSession, Session, SessionBusy, SessionError,
                                       SessionNotFound, StoreUnavailable, parse_age)
from clinvk_lib.sessions import Access, SessionStore

WRITER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "session_writer.py")
FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")


@pytest.fixture
def home(tmp_path):
    return str(tmp_path / "clinvk-home")


@pytest.fixture
def store(home):
    return SessionStore(home)


def session_files(store):
    return sorted(n for n in os.listdir(store.dir) if n.endswith(".json") and n != "index.json")


def set_fields(store, sid, **fields):
    def apply(s):
        for name, value in fields.items():
            setattr(s, name, value)
    return store.update(sid, apply)


def days_ago(days):
    return session_record.canonical_time(time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                 time.gmtime(time.time() - days * 86400)))


def start_writer(home, *args):
    """A writer process that has printed "ready"."""
    proc = subprocess.Popen([sys.executable, WRITER, home] + list(args), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            universal_newlines=True)
    line = proc.stdout.readline()
    assert line == "ready\n", proc.stderr.read()
    return proc


def finish(proc):
    """Wait for a writer (closing its stdin, which ends a "hold") and check it succeeded."""
    out, err = proc.communicate("", timeout=60)
    assert proc.returncode == 0, err
    return out


def index_ids(store):
    with open(os.path.join(store.dir, "index.json")) as f:
        return sorted(json.load(f)["id"])


# ---- creating and reading ------------------------------------------------------------------

def test_create_saves_a_session_file_with_every_field(store):
    s = store.create("claude", "/work/app", model="opus", initial_prompt="Fix the bug",
                     tags=["api", "api", "x"], metadata={"ticket": "T-1"},
                     backend_session_id="b-1")
    with open(os.path.join(store.dir, s.id + ".json")) as f:
        saved = json.load(f)
    assert saved == {
        "id": s.id, "backend": "claude", "created_at": s.created_at, "last_used": s.created_at,
        "working_dir": "/work/app", "backend_session_id": "b-1", "model": "opus",
        "initial_prompt": "Fix the bug", "title": "Fix the bug", "status": "active",
        "turn_count": 0,
        "token_usage": {"input_tokens": 0, "output_tokens": 0, "cached_tokens": 0,
                        "reasoning_tokens": 0},
        "tags": ["api", "x"], "metadata": {"ticket": "T-1"}, "last_error": "",
        "api_key_id": "", "last_reply": ""}


def test_new_session_ids_are_32_lowercase_hex_characters(store):
    ids = {store.create("claude", "/w").id for _ in range(5)}
    assert len(ids) == 5
    assert all(len(i) == 32 and set(i) <= set("0123456789abcdef") for i in ids)


def test_timestamps_are_rfc3339_utc(store):
    s = store.create("claude", "/w")
    assert session_record._CANONICAL_TIME_RE.match(s.created_at) and s.created_at.endswith("Z")


def test_get_returns_the_session_as_created(store):
    s = store.create("codex", "/w", model="gpt", initial_prompt="hello")
    assert SessionStore(store.home).get(s.id) == s


def test_title_is_the_first_prompt_line_cut_to_60_characters(store):
    s = store.create("claude", "/w", initial_prompt="\n  first   line  \nsecond")
    assert s.title == "first line"
    long = store.create("claude", "/w", initial_prompt="word " * 40)
    assert len(long.title) <= 60 and long.title.endswith("...")


def test_create_refuses_a_relative_working_dir(store):
    with pytest.raises(ValueError, match="working_dir must be an absolute path: got 'src'"):
        store.create("claude", "src")


def test_files_and_directories_are_private_to_the_user(store):
    s = store.create("claude", "/w")
    assert stat.S_IMODE(os.stat(store.home).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(store.dir).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(os.path.join(store.dir, s.id + ".json")).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.join(store.dir, "index.json")).st_mode) == 0o600


def test_reading_an_empty_home_creates_nothing(store):
    assert store.list() == ([], 0)
    assert store.count() == 0 and store.last() is None
    assert not os.path.exists(store.home)


# ---- lookups -------------------------------------------------------------------------------

def test_unknown_id_error_names_it_and_points_to_sessions_list(store):
    with pytest.raises(SessionNotFound) as err:
        store.get("0123abcd")
    assert "0123abcd" in str(err.value) and "clinvk sessions list" in str(err.value)


def test_resolve_accepts_a_unique_prefix_in_any_case(store):
    s = store.create("claude", "/w")
    store.create("claude", "/w")
    found = store.resolve(s.id[:12].upper())
    assert found.id == s.id


def test_resolve_of_an_ambiguous_prefix_names_every_candidate(store, monkeypatch):
    ids = iter(["abc1" + "0" * 28, "abc2" + "0" * 28, "ffff" + "0" * 28])
    monkeypatch.setattr(sessions, "new_session_id", lambda: next(ids))
    for _ in range(3):
        store.create("claude", "/w")
    with pytest.raises(AmbiguousSession) as err:
        store.resolve("abc")
    assert err.value.candidates == ["abc1" + "0" * 28, "abc2" + "0" * 28]
    assert "abc1" + "0" * 28 in str(err.value) and "abc2" + "0" * 28 in str(err.value)
    assert store.resolve("abc2").id == "abc2" + "0" * 28


def test_resolve_of_an_unmatched_prefix_is_not_found(store):
    store.create("claude", "/w")
    with pytest.raises(SessionNotFound):
        store.resolve("-")


@pytest.mark.parametrize("bad", ["../x", "..", "/etc/passwd", "a/../b", "", "   ", "x.json",
                                 "abc\x00", "abc/..", "../clinvk-home/sessions/index"])
def test_path_like_ids_are_not_found_and_no_file_outside_is_read(store, bad):
    s = store.create("claude", "/w")
    outside = os.path.join(os.path.dirname(store.dir), "x.json")
    with open(outside, "w") as f:
        json.dump(s.to_dict(), f)  # a valid session file one level up
    for lookup in (store.get, store.resolve, store.delete,
                   lambda i: store.update(i, lambda s: None),
                   lambda i: store.record_turn(i, "", None)):
        with pytest.raises(SessionNotFound):
            lookup(bad)
    with pytest.raises(SessionNotFound):
        with store.lock(bad):
            pass
    assert os.path.exists(outside)


# ---- changing sessions ---------------------------------------------------------------------

def test_update_saves_what_fn_changed(store):
    s = store.create("claude", "/w")
    returned = set_fields(store, s.id, status="paused", tags=["a"])
    assert returned.status == "paused"
    again = store.get(s.id)
    assert again.status == "paused" and again.tags == ["a"]
    assert store.list()[0][0].status == "paused"


def test_update_saves_nothing_when_fn_raises(store):
    s = store.create("claude", "/w")

    def fail(session):
        session.status = "error"
        raise RuntimeError("boom")
    with pytest.raises(RuntimeError):
        store.update(s.id, fail)
    assert store.get(s.id).status == "active"


def test_update_refuses_an_unknown_status(store):
    s = store.create("claude", "/w")
    with pytest.raises(ValueError, match="active, completed, error, paused"):
        set_fields(store, s.id, status="done")
    assert store.get(s.id).status == "active"


def test_record_turn_counts_turns_adds_usage_and_stores_ids(store):
    s = store.create("claude", "/w", model="opus")
    store.record_turn(s.id, "b-1", {"input_tokens": 10, "output_tokens": 5, "cached_tokens": 2})
    after = store.record_turn(s.id, "", {"input_tokens": 1, "output_tokens": 1,
                                         "reasoning_tokens": 7}, model="opus-4")
    assert after.turn_count == 2
    assert after.token_usage == {"input_tokens": 11, "output_tokens": 6, "cached_tokens": 2,
                                 "reasoning_tokens": 7}
    assert after.backend_session_id == "b-1"  # an empty id keeps the stored one
    assert after.model == "opus-4"
    assert after.last_used > s.last_used
    assert store.get(s.id) == after


def test_record_turn_with_an_error_sets_error_and_a_later_success_clears_it(store):
    s = store.create("claude", "/w")
    failed = store.record_turn(s.id, "b", None, error="rate limited")
    assert (failed.status, failed.last_error) == ("error", "rate limited")
    ok = store.record_turn(s.id, "b", None)
    assert (ok.status, ok.last_error) == ("active", "")


def test_delete_removes_the_session_everywhere(store):
    s = store.create("claude", "/w")
    keep = store.create("claude", "/w")
    store.delete(s.id)
    assert session_files(store) == [keep.id + ".json"]
    assert [x.id for x in store.list()[0]] == [keep.id]
    with pytest.raises(SessionNotFound):
        store.get(s.id)
    with pytest.raises(SessionNotFound):
        store.delete(s.id)


def test_session_from_an_older_or_go_file_fills_in_what_is_missing():
    s = Session.from_dict({"id": "ab" * 8, "backend": "codex",
                           "created_at": "2025-01-27T10:00:00.123456789+02:00",
                           "last_used": "2025-01-27T11:30:00Z", "initial_prompt": "hi\nthere",
                           "error_message": "boom", "token_usage": {"input_tokens": 4}})
    assert s.created_at == "2025-01-27T08:00:00.123456Z"
    assert s.last_used == "2025-01-27T11:30:00.000000Z"
    assert (s.title, s.status, s.turn_count, s.last_error) == ("hi", "active", 0, "boom")
    assert s.token_usage == {"input_tokens": 4, "output_tokens": 0, "cached_tokens": 0,
                             "reasoning_tokens": 0}
    assert (s.tags, s.metadata, s.working_dir, s.model) == ([], {}, "", "")


def test_session_round_trips_through_to_dict(store):
    s = store.create("gemini", "/w", initial_prompt="x", tags=["t"], metadata={"k": [1, 2]})
    assert Session.from_dict(s.to_dict()) == s


# ---- listing -------------------------------------------------------------------------------

def test_list_orders_by_last_used_newest_first(store):
    ids = [store.create("claude", "/w").id for _ in range(4)]
    for sid, days in zip(ids, [3, 1, 4, 2]):
        set_fields(store, sid, last_used=days_ago(days))
    found, total = store.list()
    assert [s.id for s in found] == [ids[1], ids[3], ids[0], ids[2]] and total == 4


def test_list_filters_by_backend_and_status(store):
    a = store.create("claude", "/w")
    b = store.create("codex", "/w")
    c = store.create("codex", "/w")
    set_fields(store, c.id, status="error")
    assert {s.id for s in store.list(backend="codex")[0]} == {b.id, c.id}
    assert [s.id for s in store.list(status="error")[0]] == [c.id]
    assert [s.id for s in store.list(backend="codex", status="active")[0]] == [b.id]
    assert store.list(backend="gemini") == ([], 0)
    assert a.id in {s.id for s in store.list(status="active")[0]}


def test_list_pages_with_limit_and_offset_and_reports_the_total(store):
    ids = [store.create("claude", "/w").id for _ in range(5)]
    for n, sid in enumerate(ids):
        set_fields(store, sid, last_used=days_ago(n + 1))
    page, total = store.list(limit=2, offset=1)
    assert [s.id for s in page] == ids[1:3] and total == 5
    assert store.list(limit=0) == ([], 5)
    assert store.list(offset=9) == ([], 5)
    set_fields(store, ids[4], status="error")
    page, total = store.list(status="active", limit=2, offset=2)
    assert [s.id for s in page] == [ids[2], ids[3]] and total == 4


def test_list_refuses_negative_limit_or_offset(store):
    with pytest.raises(ValueError):
        store.list(limit=-1)
    with pytest.raises(ValueError):
        store.list(offset=-1)


def test_list_cuts_long_prompts_but_get_has_the_full_text(store):
    prompt = "x" * 5000
    s = store.create("claude", "/w", initial_prompt=prompt)
    listed = store.list()[0][0]
    assert listed.initial_prompt == prompt[:session_record.INDEX_PROMPT_CHARS]
    assert store.get(s.id).initial_prompt == prompt
    listed.initial_prompt = s.initial_prompt
    assert listed == s


def test_listed_sessions_are_copies(store):
    s = store.create("claude", "/w", tags=["a"])
    store.list()[0][0].tags.append("mutated")
    assert store.list()[0][0].tags == ["a"] and store.get(s.id).tags == ["a"]


def test_last_returns_the_most_recent_resumable_session(store):
    old = store.create("claude", "/w", backend_session_id="b-old")
    store.create("claude", "/w")  # newest, but the backend never gave it an id
    set_fields(store, old.id, last_used=days_ago(1))
    newer = store.create("codex", "/w", backend_session_id="b-new")
    assert store.last().id == newer.id


def test_last_filters_by_backend_and_working_dir(store):
    a = store.create("claude", "/repo/a", backend_session_id="1")
    b = store.create("claude", "/repo/b", backend_session_id="2")
    c = store.create("codex", "/repo/a", backend_session_id="3")
    for sid, days in ((a.id, 3), (b.id, 2), (c.id, 1)):
        set_fields(store, sid, last_used=days_ago(days))
    assert store.last(backend="claude").id == b.id
    assert store.last(working_dir="/repo/a").id == c.id
    assert store.last(backend="claude", working_dir="/repo/a/").id == a.id
    assert store.last(backend="gemini") is None
    assert store.last(working_dir="/elsewhere") is None


def test_count(store):
    for _ in range(3):
        store.create("claude", "/w")
    assert store.count() == 3


# ---- cleaning ------------------------------------------------------------------------------

def test_clean_deletes_only_sessions_unused_for_longer_than_the_age(store):
    ages = {store.create("claude", "/w").id: days for days in (1, 10, 40, 400)}
    for sid, days in ages.items():
        set_fields(store, sid, last_used=days_ago(days))
    deleted = store.clean(parse_age("30d"))
    assert sorted(deleted) == sorted(sid for sid, days in ages.items() if days > 30)
    assert sorted(s.id for s in store.list()[0]) == sorted(
        sid for sid, days in ages.items() if days < 30)


@pytest.mark.parametrize("age", [0, -1, -86400])
def test_clean_refuses_an_age_of_zero_or_less_and_deletes_nothing(store, age):
    s = store.create("claude", "/w")
    set_fields(store, s.id, last_used=days_ago(1000))
    with pytest.raises(ValueError, match="greater than zero"):
        store.clean(age)
    assert store.count() == 1


def test_clean_keeps_a_session_that_another_process_is_resuming(store, home):
    busy = store.create("claude", "/w")
    idle = store.create("claude", "/w")
    for sid in (busy.id, idle.id):
        set_fields(store, sid, last_used=days_ago(100))
    holder = start_writer(home, "hold", busy.id)
    try:
        assert store.clean(parse_age("1d")) == [idle.id]
    finally:
        finish(holder)
    assert [s.id for s in store.list()[0]] == [busy.id]


@pytest.mark.parametrize("text,seconds", [("30d", 30 * 86400), ("12h", 12 * 3600),
                                          ("2w", 14 * 86400), ("45m", 45 * 60), ("90s", 90),
                                          ("7", 7 * 86400), (" 3D ", 3 * 86400)])
def test_parse_age_reads_units_and_plain_days(text, seconds):
    assert parse_age(text) == seconds


@pytest.mark.parametrize("text", ["", "abc", "30x", "1.5d", "-3d", "d", "3 days", "0", "0d"])
def test_parse_age_refuses_anything_else_saying_what_is_accepted(text):
    with pytest.raises(ValueError, match="e.g. 30d"):
        parse_age(text)


# ---- the index -----------------------------------------------------------------------------

def make_three(store):
    made = [store.create(b, "/w", initial_prompt=b) for b in ("claude", "codex", "gemini")]
    return sorted(s.id for s in made)


def listed_ids(home):
    return sorted(s.id for s in SessionStore(home).list()[0])


def test_index_is_rebuilt_when_deleted(store, home):
    ids = make_three(store)
    os.unlink(os.path.join(store.dir, "index.json"))
    assert listed_ids(home) == ids
    assert index_ids(store) == ids


@pytest.mark.parametrize("damage", [
    lambda text: "not json at all",
    lambda text: "",
    lambda text: text[:len(text) // 2],
    lambda text: text.replace('"codex"', '"cod\\qex"', 1),    # a bad escape in a column
    lambda text: text.replace('"claude"', '"claude",', 1),      # a stray comma in a column
    lambda text: '{"version":1,"index":{}}',                 # the Go original's index
], ids=["garbage", "empty", "truncated", "bad-escape", "extra-comma", "go-format"])
def test_index_is_rebuilt_when_damaged(store, home, damage):
    ids = make_three(store)
    path = os.path.join(store.dir, "index.json")
    with open(path) as f:
        text = f.read()
    with open(path, "w") as f:
        f.write(damage(text))
    assert listed_ids(home) == ids
    assert SessionStore(home).count() == 3
    assert [s.backend for s in SessionStore(home).list(backend="codex")[0]] == ["codex"]
    assert [s.backend for s in SessionStore(home).list(status="active", limit=1)[0]] != []


def test_damaged_row_in_the_index_is_rebuilt_from_the_files(store, home):
    ids = make_three(store)
    path = os.path.join(store.dir, "index.json")
    with open(path) as f:
        lines = f.read().split("\n")
    row = next(i for i, line in enumerate(lines) if line.startswith('["'))
    lines[row] = '["broken"' + ("," if lines[row].endswith(",") else "")
    with open(path, "w") as f:
        f.write("\n".join(lines))
    assert listed_ids(home) == ids
    assert [s.backend for s in SessionStore(home).list(backend="codex")[0]] == ["codex"]


def test_session_file_added_behind_the_index_is_listed(store, home):
    ids = make_three(store)
    copy = Session.from_dict(store.get(ids[0]).to_dict())
    copy.id = "f" * 32
    with open(os.path.join(store.dir, copy.id + ".json"), "w") as f:
        json.dump(copy.to_dict(), f)
    assert listed_ids(home) == sorted(ids + [copy.id])
    assert store.resolve("fff").id == copy.id


def test_session_file_removed_behind_the_index_is_not_listed(store, home):
    ids = make_three(store)
    os.unlink(os.path.join(store.dir, ids[1] + ".json"))
    assert listed_ids(home) == [ids[0], ids[2]]
    assert store.count() == 2


def test_damaged_session_file_is_skipped_without_rebuilding_every_time(store, home):
    ids = make_three(store)
    damaged = "e" * 32
    with open(os.path.join(store.dir, damaged + ".json"), "w") as f:
        f.write("{half a sess")
    assert listed_ids(home) == ids and SessionStore(home).count() == 3
    path = os.path.join(store.dir, "index.json")
    before = open(path).read()
    assert listed_ids(home) == ids
    assert open(path).read() == before  # the rebuilt index already accounts for it
    with pytest.raises(SessionError, match="damaged"):
        store.get(damaged)


def test_reads_leave_a_current_index_alone(store, home):
    make_three(store)
    path = os.path.join(store.dir, "index.json")
    before = (os.stat(path).st_ino, open(path).read())
    other = SessionStore(home)
    other.list()
    other.resolve(other.list()[0][0].id[:6])
    other.last()
    assert (os.stat(path).st_ino, open(path).read()) == before


def test_writes_by_another_store_are_seen(store, home):
    reader = SessionStore(home)
    assert reader.count() == 0
    first = store.create("claude", "/w")
    assert [s.id for s in reader.list()[0]] == [first.id]
    store.record_turn(first.id, "b", {"input_tokens": 1})
    assert reader.list()[0][0].turn_count == 1


def test_index_file_is_one_json_document(store):
    make_three(store)
    with open(os.path.join(store.dir, "index.json")) as f:
        doc = json.load(f)
    assert len(doc["rows"]) == 3 and doc["id"] == [row[0] for row in doc["rows"]]


# ---- crashes -------------------------------------------------------------------------------

def test_crash_between_session_file_and_index_is_repaired_by_the_next_reader(store, home):
    s = store.create("claude", "/w")
    proc = start_writer(home, "die-before-index", s.id)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert os.path.exists(os.path.join(store.dir, "." + s.id + ".pending"))
    assert store.get(s.id).turn_count == 1
    assert SessionStore(home).list()[0][0].turn_count == 1
    assert not os.path.exists(os.path.join(store.dir, "." + s.id + ".pending"))
    index = json.load(open(os.path.join(store.dir, "index.json")))
    assert index["backend_session_id"] == ["after-crash"]


def test_stray_temp_files_are_ignored_and_removed(store, home):
    ids = make_three(store)
    strays = ["." + ids[0] + ".json.tmp-0123abcd", ".index.json.tmp-4567ef"]
    for name in strays:
        with open(os.path.join(store.dir, name), "w") as f:
            f.write("{partial")
    assert listed_ids(home) == ids
    assert not any(os.path.exists(os.path.join(store.dir, name)) for name in strays)


def test_writer_killed_mid_write_leaves_the_store_readable(store, home):
    for attempt in range(3):
        proc = start_writer(home, "churn")
        time.sleep(random.uniform(0.0, 0.3))
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
        for name in session_files(store):
            with open(os.path.join(store.dir, name)) as f:
                json.load(f)
        found, total = SessionStore(home).list()
        assert total == len(session_files(store)) == len(found)
        for s in found:
            assert store.get(s.id).turn_count == s.turn_count
        leftovers = [n for n in os.listdir(store.dir) if ".tmp-" in n or n.endswith(".pending")]
        assert leftovers == []


# ---- many writers --------------------------------------------------------------------------

def test_eight_processes_recording_turns_on_shared_sessions_lose_nothing(store, home):
    ids = [store.create("claude", "/w").id for _ in range(4)]
    writers = [start_writer(home, "turns", "50", *ids) for _ in range(8)]
    for proc in writers:
        finish(proc)
    # Each writer cycles over the 4 ids: 50 turns give 13, 13, 12, 12.
    expected = {sid: 8 * len(range(k, 50, 4)) for k, sid in enumerate(ids)}
    assert sum(expected.values()) == 400
    for sid, turns in expected.items():
        s = store.get(sid)
        assert s.turn_count == turns
        assert s.token_usage == {"input_tokens": 3 * turns, "output_tokens": 2 * turns,
                                 "cached_tokens": turns, "reasoning_tokens": 0}
    assert {s.id: s.turn_count for s in SessionStore(home).list()[0]} == expected
    for name in os.listdir(store.dir):
        if name.endswith(".json"):
            with open(os.path.join(store.dir, name)) as f:
                json.load(f)


def test_sessions_created_by_concurrent_processes_all_reach_the_index(store, home):
    first = store.create("claude", "/w")
    writers = [start_writer(home, "create", "25") for _ in range(4)]
    for proc in writers:
        finish(proc)
    on_disk = sorted(name[:-5] for name in session_files(store))
    assert len(on_disk) == 101 and first.id + ".json" in session_files(store)
    assert index_ids(store) == on_disk  # maintained by the writers, not rebuilt by a reader


def test_threads_recording_turns_through_two_stores_lose_nothing(store, home):
    ids = [store.create("claude", "/w").id for _ in range(4)]
    stores = [store, SessionStore(home)]

    def work(n):
        for i in range(20):
            stores[n % 2].record_turn(ids[(n + i) % 4], "b", {"input_tokens": 1})
    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert [store.get(sid).turn_count for sid in ids] == [40] * 4
    assert sorted(s.turn_count for s in SessionStore(home).list()[0]) == [40] * 4


def test_two_threads_holding_one_session_lock_never_overlap(store):
    s = store.create("claude", "/w")
    inside = []
    overlaps = []

    def resume():
        for _ in range(5):
            with store.lock(s.id):
                inside.append(1)
                if len(inside) > 1:
                    overlaps.append(1)
                time.sleep(0.01)
                store.record_turn(s.id, "b", None)
                inside.pop()
    threads = [threading.Thread(target=resume) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert overlaps == [] and store.get(s.id).turn_count == 10


def test_lock_holder_can_update_and_record_turns(store):
    s = store.create("claude", "/w")
    done = []

    def resume():
        with store.lock(s.id) as locked:
            assert locked.id == s.id
            store.record_turn(s.id, "b", None)
            set_fields(store, s.id, tags=["x"])
            with store.lock(s.id):
                store.record_turn(s.id, "b", None)
        done.append(True)
    t = threading.Thread(target=resume, daemon=True)
    t.start()
    t.join(10)
    assert done == [True], "the lock holder deadlocked on its own lock"
    assert store.get(s.id).turn_count == 2 and store.get(s.id).tags == ["x"]


def test_other_threads_wait_for_the_lock_holder(store):
    s = store.create("claude", "/w")
    order = []
    with store.lock(s.id):
        t = threading.Thread(target=lambda: order.append(store.record_turn(s.id, "b", None)))
        t.start()
        t.join(0.2)
        assert order == []
        order.append("released")
    t.join(10)
    assert order[0] == "released" and order[1].turn_count == 1


def test_lock_held_by_another_process_times_out_with_session_busy(store, home):
    s = store.create("claude", "/w")
    holder = start_writer(home, "hold", s.id)
    try:
        with pytest.raises(SessionBusy, match=s.id):
            with store.lock(s.id, timeout=0.2):
                pass
    finally:
        finish(holder)
    with store.lock(s.id, timeout=10) as locked:
        assert locked.id == s.id


def test_lock_of_an_unknown_session_is_not_found(store):
    with pytest.raises(SessionNotFound):
        with store.lock("0" * 32):
            pass


# ---- health --------------------------------------------------------------------------------

def test_health_reports_the_session_count(store):
    store.create("claude", "/w")
    assert store.health() == (True, 1, "")


def test_health_reports_an_unusable_store(home):
    os.makedirs(home)
    with open(os.path.join(home, "sessions"), "w") as f:
        f.write("a file where the directory should be")
    available, count, error = SessionStore(home).health()
    assert available is False and count == 0 and "sessions" in error


def test_health_reports_a_store_where_no_file_can_be_made_even_for_root(store):
    store.create("claude", "/w")
    locks = os.path.join(store.dir, "locks")
    os.rmdir(locks)
    with open(locks, "w") as f:               # ENOTDIR stops root too, unlike a chmod
        f.write("not a directory")
    available, count, error = store.health()
    assert (available, count) == (False, 1)
    assert "cannot be written" in error and store.dir not in error


def test_write_probe_leaves_nothing_behind(store):
    store.create("claude", "/w")
    before = sorted(os.listdir(store.dir)), sorted(os.listdir(os.path.join(store.dir, "locks")))
    store.check_writable()
    assert (sorted(os.listdir(store.dir)),
            sorted(os.listdir(os.path.join(store.dir, "locks")))) == before


def test_store_errors_name_the_directory_for_the_cli_but_not_for_remote_callers(home):
    os.makedirs(home)
    with open(os.path.join(home, "sessions"), "w") as f:
        f.write("not a directory")
    store = SessionStore(home)
    with pytest.raises(StoreUnavailable) as info:
        store.create("claude", "/w")
    assert store.dir in str(info.value) and "Not a directory" in str(info.value)
    assert home not in info.value.public and "CLINVK_HOME" in info.value.public


# ---- who may use a session -------------------------------------------------------------------

ALICE, BOB = Access("a1" * 8, everything=False), Access("b2" * 8, everything=False)


def test_a_session_records_the_key_id_of_its_creator(store):
    s = store.create("claude", "/w", access=ALICE)
    assert store.get(s.id).api_key_id == ALICE.key_id
    assert store.create("claude", "/w").api_key_id == ""


def test_lookups_see_only_the_sessions_the_access_allows(store):
    mine = store.create("claude", "/w", access=ALICE)
    theirs = store.create("codex", "/w", access=BOB)
    nobodys = store.create("gemini", "/w")
    assert store.resolve(mine.id[:3], ALICE).id == mine.id
    for hidden in (theirs, nobodys):
        with pytest.raises(SessionNotFound):
            store.resolve(hidden.id, ALICE)
        with pytest.raises(SessionNotFound):
            store.delete(hidden.id, ALICE)
    assert [s.id for s in store.list(access=ALICE)[0]] == [mine.id]
    assert store.list(access=Access("", everything=False)) == ([], 0)
    assert store.list()[1] == 3 and store.resolve(theirs.id).id == theirs.id


def test_a_prefix_is_not_ambiguous_because_of_another_keys_session(store, monkeypatch):
    ids = iter(["abc1" + "0" * 28, "abc2" + "0" * 28])
    monkeypatch.setattr(sessions, "new_session_id", lambda: next(ids))
    mine = store.create("claude", "/w", access=ALICE)
    store.create("claude", "/w", access=BOB)
    assert store.resolve("abc", ALICE).id == mine.id
    with pytest.raises(AmbiguousSession):
        store.resolve("abc")


def test_session_file_without_the_key_field_loads_as_nobodys(store, home):
    s = store.create("claude", "/w")
    path = os.path.join(store.dir, s.id + ".json")
    with open(path) as f:
        data = json.load(f)
    del data["api_key_id"]
    with open(path, "w") as f:
        json.dump(data, f)
    os.unlink(os.path.join(store.dir, "index.json"))
    fresh = SessionStore(home)
    assert fresh.get(s.id).api_key_id == "" and fresh.list()[1] == 1
    assert fresh.list(access=ALICE) == ([], 0)


def test_a_store_written_before_the_key_field_loads_as_nobodys_sessions(home):
    shutil.copytree(os.path.join(FIXTURES, "sessions-v4"), home)
    store = SessionStore(home)
    found, total = store.list()
    assert total == 2 and {s.api_key_id for s in found} == {""}
    assert store.resolve("4f0c").backend_session_id == "3f0c2a9e-8d41-4c1b-9a77-0e5f3b2d1c4a"
    assert store.list(access=ALICE) == ([], 0)
    store.create("gemini", "/w", access=ALICE)
    assert SessionStore(home).list(access=ALICE)[1] == 1 and SessionStore(home).count() == 3


def damage(store, sid):
    with open(os.path.join(store.dir, sid + ".json"), "w") as f:
        f.write("{not json")


def test_delete_removes_a_damaged_session_file_by_id_or_prefix(store):
    s = store.create("claude", "/w")
    damage(store, s.id)
    SessionStore(store.home).list()                  # the index now knows the file is damaged
    assert store.delete(s.id[:6]) == s.id
    assert session_files(store) == [] and store.list() == ([], 0)


def test_damaged_session_is_hidden_from_a_key_scoped_access(store):
    s = store.create("claude", "/w", access=ALICE)
    damage(store, s.id)
    with pytest.raises(SessionNotFound):
        store.resolve(s.id, ALICE)
    with pytest.raises(SessionNotFound):
        store.delete(s.id[:6], ALICE)
    assert store.delete(s.id) == s.id


def test_damaged_session_message_names_the_file_only_for_the_cli(store):
    s = store.create("claude", "/w")
    damage(store, s.id)
    with pytest.raises(SessionError) as info:
        store.resolve(s.id)
    assert store.dir in str(info.value) and store.dir not in info.value.public
    assert s.id in info.value.public and "damaged" in info.value.public


def test_delete_of_a_busy_session_times_out_with_session_busy(store, home):
    s = store.create("claude", "/w")
    holder = start_writer(home, "hold", s.id)
    try:
        with pytest.raises(SessionBusy):
            store.delete(s.id, timeout=0.2)
    finally:
        finish(holder)
    assert store.delete(s.id) == s.id
