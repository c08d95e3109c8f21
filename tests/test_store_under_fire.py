"""The session store with everything at once: 8 processes recording 50 turns each on shared
sessions while another writer, churning its own sessions through the same index, is killed
with SIGKILL mid-write again and again. test_sessions.py covers each of these alone; here
they overlap, so a writer dying while it holds the index lock or has half written a file is
in the middle of the others' updates.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess

import pytest

from clinvk_lib.sessions import SessionStore
from tests.test_sessions import finish, home, session_files, start_writer, store  # noqa: F401

pytestmark = pytest.mark.slow

WRITERS, TURNS, SHARED = 8, 50, 4


def test_turns_survive_a_writer_killed_mid_write_among_eight_concurrent_writers(store, home):
    ids = [store.create("claude", "/w").id for _ in range(SHARED)]
    writers = [start_writer(home, "turns", str(TURNS), *ids) for _ in range(WRITERS)]
    rng = random.Random(8)
    kills = overlapped = 0
    while kills < 3 or any(w.poll() is None for w in writers):
        victim = start_writer(home, "churn")
        try:
            victim.wait(rng.uniform(0.02, 0.15))
        except subprocess.TimeoutExpired:
            pass                                  # still churning, as it should be
        victim.send_signal(signal.SIGKILL)
        victim.communicate(timeout=60)
        assert victim.returncode == -signal.SIGKILL
        kills += 1
        overlapped += any(w.poll() is None for w in writers)
    for proc in writers:
        finish(proc)
    assert overlapped >= 1, "no writer was killed while the others were writing"

    # Each writer cycles over the shared ids: every one of its turns is there.
    expected = {sid: WRITERS * len(range(k, TURNS, SHARED)) for k, sid in enumerate(ids)}
    fresh = SessionStore(home)
    assert {sid: fresh.get(sid).turn_count for sid in ids} == expected
    assert {s.id: s.turn_count for s in fresh.list()[0] if s.id in expected} == expected
    for name in os.listdir(store.dir):
        if name.endswith(".json"):
            with open(os.path.join(store.dir, name)) as f:
                json.load(f)
    found, total = fresh.list()
    assert total == len(found) == len(session_files(store))
    assert [n for n in os.listdir(store.dir) if ".tmp-" in n or n.endswith(".pending")] == []
