"""How often a turn writes the session store: once. A new session is saved with its first turn
(or, interrupted, as cancelled), a resumed one when its turn ends; nothing is written before a
run starts (``prepare`` has probed that the store can be written). test_sessions.py covers what
each write keeps safe (atomic files, the index, concurrent processes, crashes)."""

from __future__ import annotations

import os
import threading

import pytest

from clinvk_lib import execute
from clinvk_lib.config import load
from clinvk_lib.session_files import SessionFiles
from clinvk_lib.sessions import SessionStore
from tests.test_cli_frictions import wait_for_file


@pytest.fixture
def commits(monkeypatch):
    """The sessions each store commit saved (its ids), in order."""
    seen = []
    real = SessionFiles.commit

    def counting(self, changes):
        seen.append(sorted(changes))
        return real(self, changes)
    monkeypatch.setattr(SessionFiles, "commit", counting)
    return seen


def prepared(store, tmp_path, **request):
    req = execute.Request(backend="claude", prompt="hi", workdir=str(tmp_path), **request)
    return execute.prepare(req, load(), store)


def test_a_new_sessions_first_turn_writes_the_store_once(clinvk_home, fake_path, tmp_path,
                                                         commits):
    store = SessionStore(str(clinvk_home))
    outcome = execute.run(prepared(store, tmp_path), store)
    assert commits == [[outcome.session_id]]
    saved = store.get(outcome.session_id)
    assert (saved.status, saved.turn_count, saved.initial_prompt) == ("active", 1, "hi")
    assert saved.backend_session_id == outcome.result.backend_session_id != ""


def test_a_streamed_first_turn_writes_the_store_once(clinvk_home, fake_path, tmp_path, commits):
    store = SessionStore(str(clinvk_home))
    events = list(execute.stream(prepared(store, tmp_path), store))
    sid = events[0].session_id
    assert commits == [[sid]]
    assert store.get(sid).turn_count == 1


def test_a_resumed_turn_writes_the_store_once(clinvk_home, fake_path, tmp_path, commits):
    store = SessionStore(str(clinvk_home))
    first = execute.run(prepared(store, tmp_path), store)
    del commits[:]
    execute.run(prepared(store, tmp_path, session_id=first.session_id), store)
    assert commits == [[first.session_id]]
    assert store.get(first.session_id).turn_count == 2


def test_a_new_session_is_saved_when_its_first_turn_ends(clinvk_home, fake_path, tmp_path,
                                                          monkeypatch):
    pidfile = tmp_path / "pid"
    monkeypatch.setenv("FAKE_CLI_MODE", "hang")
    monkeypatch.setenv("FAKE_CLI_PIDFILE", str(pidfile))
    store = SessionStore(str(clinvk_home))
    cancel = execute.Cancel()
    listed_during_the_run = []

    def look_then_cancel():
        wait_for_file(pidfile)
        listed_during_the_run.append(store.list()[1])
        cancel.fire()
    watcher = threading.Thread(target=look_then_cancel, daemon=True)
    watcher.start()
    outcome = execute.run(prepared(store, tmp_path), store, cancel=cancel)
    watcher.join()
    assert listed_during_the_run == [0]
    assert store.get(outcome.session_id).status == "cancelled"


def test_a_first_turn_that_cannot_start_is_saved_once_as_cancelled(clinvk_home, fake_path,
                                                                   tmp_path, commits):
    store = SessionStore(str(clinvk_home))
    p = prepared(store, tmp_path)
    p.argv[0] = str(tmp_path / "no-such-cli")
    with pytest.raises(execute.ExecError):
        execute.run(p, store)
    [[sid]] = commits
    assert (store.get(sid).status, store.get(sid).turn_count) == ("cancelled", 0)


def test_a_new_session_is_written_only_when_its_turn_is_recorded(tmp_path):
    store = SessionStore(str(tmp_path))
    draft = store.new("codex", "/w", initial_prompt="hello")
    assert not os.path.exists(store.dir) and store.count() == 0
    saved = store.record_turn(draft.id, "b-1", {"input_tokens": 2}, reply="hi", new=draft)
    again = store.get(draft.id)
    assert (again.turn_count, again.backend_session_id, again.token_usage["input_tokens"]) == \
        (1, "b-1", 2)
    assert [s.id for s in store.list()[0]] == [saved.id]


def test_a_new_session_interrupted_is_written_as_cancelled(tmp_path):
    store = SessionStore(str(tmp_path))
    draft = store.new("claude", "/w", initial_prompt="hello")
    store.mark_cancelled(draft.id, "claude run was interrupted before it finished", new=draft)
    s = store.get(draft.id)
    assert (s.status, s.turn_count, s.initial_prompt) == ("cancelled", 0, "hello")


def test_a_new_session_is_recorded_only_under_its_own_id(tmp_path):
    store = SessionStore(str(tmp_path))
    draft = store.new("claude", "/w")
    with pytest.raises(ValueError):
        store.record_turn("0" * 32, "b", None, new=draft)
    assert store.count() == 0
