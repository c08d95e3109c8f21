"""Issue 20 benchmark: what the session store writes for a new session's first turn (run:
python3 bench/bench_session_writes.py).

Three designs, each a complete first turn on a store of 200 sessions, interleaved in every
round, median of 60 rounds, with the fsync calls counted:

- "create, then record" (before issue 20): the session is saved before the run and again
  after it, each a full commit (marker, session file, directory, index);
- "file before, index after": the session file (and its marker) is saved before the run, the
  index only once after it, with the turn;
- "once, with the turn" (what ``execute`` does now): nothing before the run, one commit after.

In-process and on the benchmark's temp directory: the figures are the store's own cost, not
a CLI's. No target: the chosen design must simply be the cheapest that keeps the store's
promises (test_sessions.py, test_store_under_fire.py, test_session_writes.py).
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from typing import Callable, Dict, List

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import ROOT, machine, record  # noqa: E402

sys.path.insert(0, ROOT)
from clinvk_lib.fsutil import fsync_dir, write_atomically  # noqa: E402
from clinvk_lib.jsontext import dumps_pretty  # noqa: E402
from clinvk_lib.sessions import SessionStore  # noqa: E402

ISSUE = "20"
USAGE = {"input_tokens": 3, "output_tokens": 2}


def create_then_record(store: SessionStore) -> None:
    s = store.create("claude", "/tmp", initial_prompt="hi")
    store.record_turn(s.id, "backend-id", USAGE, reply="hello")


def file_before_index_after(store: SessionStore) -> None:
    s = store.new("claude", "/tmp", initial_prompt="hi")
    files = store._files
    with files.holding(s.id, None):
        os.close(os.open(files._marker(s.id), os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
        write_atomically(files._file(s.id), dumps_pretty(s.to_dict()).encode("utf-8"),
                         temp_prefix="." + s.id + ".json.tmp-", sync_dir=False)
        fsync_dir(files.dir)
    store.record_turn(s.id, "backend-id", USAGE, reply="hello")


def once_with_the_turn(store: SessionStore) -> None:
    s = store.new("claude", "/tmp", initial_prompt="hi")
    store.record_turn(s.id, "backend-id", USAGE, reply="hello", new=s)


DESIGNS: Dict[str, Callable[[SessionStore], None]] = {
    "create, then record (before)": create_then_record,
    "file before, index after": file_before_index_after,
    "once, with the turn (now)": once_with_the_turn,
}


def main(rounds: int = 60) -> None:
    print("# %s" % machine())
    store = SessionStore(tempfile.mkdtemp(prefix="clinvk-bench-writes-"))
    for i in range(200):
        store.create("codex", "/tmp", initial_prompt="filler %d" % i)
    fsyncs = [0]
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        fsyncs[0] += 1
        real_fsync(fd)
    os.fsync = counting_fsync
    times: Dict[str, List[float]] = {name: [] for name in DESIGNS}
    counts: Dict[str, int] = {}
    try:
        for _ in range(rounds + 1):                  # the first round warms up
            for name, design in DESIGNS.items():
                fsyncs[0] = 0
                start = time.perf_counter()
                design(store)
                times[name].append(time.perf_counter() - start)
                counts[name] = fsyncs[0]
    finally:
        os.fsync = real_fsync
    for name, took in times.items():
        record(ISSUE, "a new session's first turn, store writes: %s" % name,
               "median %.2f ms, p90 %.2f ms, %d fsyncs (median of %d interleaved rounds)"
               % (statistics.median(took[1:]) * 1000,
                  sorted(took[1:])[int(rounds * 0.9)] * 1000, counts[name], rounds))


if __name__ == "__main__":
    main()
