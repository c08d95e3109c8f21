"""Locks named by file paths, across threads and processes (clinvk_lib/filelock.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

from clinvk_lib.filelock import locked

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_thread_holding_a_lock_may_take_it_again(tmp_path):
    path = str(tmp_path / "a.lock")
    with locked(path, 0) as outer, locked(path, 0) as inner:
        assert outer and inner


def test_another_thread_waits_for_the_lock_or_gives_up_at_its_timeout(tmp_path):
    path = str(tmp_path / "a.lock")
    got = []

    def try_it() -> None:
        with locked(path, 0.05) as acquired:
            got.append(acquired)

    with locked(path, None):
        t = threading.Thread(target=try_it)
        t.start()
        t.join(10)
    try_it()
    assert got == [False, True]


def test_another_process_cannot_take_a_held_lock(tmp_path):
    path = str(tmp_path / "a.lock")
    probe = ("import sys; sys.path.insert(0, %r)\n"
             "from clinvk_lib.filelock import locked\n"
             "with locked(%r, 0) as got: print(got)\n" % (ROOT, path))
    with locked(path, None):
        held = subprocess.run([sys.executable, "-c", probe], stdout=subprocess.PIPE, timeout=60)
    free = subprocess.run([sys.executable, "-c", probe], stdout=subprocess.PIPE, timeout=60)
    assert (held.stdout, free.stdout) == (b"False\n", b"True\n")


def test_the_lock_file_exists_only_while_the_lock_is_held(tmp_path):
    path = str(tmp_path / "a.lock")
    with locked(path, None):
        assert os.path.exists(path)
    assert not os.path.exists(path)
