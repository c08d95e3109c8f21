"""Issue 3 benchmark: `clinvk sessions list` with 10,000 sessions on disk (run: python3
bench/bench_sessions.py).

`clinvk sessions list` and `sessions list --json` as a user runs them (no --limit: the
newest 100 of the 10,000), each against `clinvk version`, median of 10 pairs: at most 100 ms
more. For context (no target), the same with `--limit 0`: all 10,000 sessions. The
sessions are ``Session`` objects saved through the store's commit in batches (see
``_create``) by a few processes at once; the home holding them is kept in the temp dir, keyed
by the contents of the session store's modules, so later runs skip the seconds of making them.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (CACHE, PY, PYZ, ROOT, fake_env, need_pyz, paired, record,  # noqa: E402
                    report_value, time_command)

sys.path.insert(0, ROOT)
from clinvk_lib import session_record, sessions  # noqa: E402
from clinvk_lib.backends.base import NAMES  # noqa: E402

ISSUE = "3"
SESSIONS = 10000
WORKERS = 4
BATCH = 500


def _create(args) -> int:
    """Make sessions ``start`` .. ``start + count - 1`` in ``home``, BATCH at a time.

    Sessions are built as ``Session`` objects and saved with the store's commit, a batch per
    index rewrite: ``SessionStore.create`` rewrites the whole index for each new session, which
    makes 10,000 of them take minutes (quadratic), and that is not what this benchmark times.
    """
    home, start, count = args
    store = sessions.SessionStore(home)
    store._files.ensure_dirs()
    for first in range(start, start + count, BATCH):
        batch = {}
        for i in range(first, min(first + BATCH, start + count)):
            s = session_record.Session(session_record.new_session_id(), NAMES[i % 3],
                                       "/srv/project-%d" % (i % 50), model="model-%d" % (i % 7),
                                       initial_prompt="benchmark prompt number %d: refactor "
                                                      "the module" % i,
                                       tags=["bench"], metadata={"n": i})
            batch[s.id] = s
        store._files.commit(batch)
    return count


def sessions_home() -> str:
    """A CLINVK_HOME holding SESSIONS sessions (built once per version of the store's files)."""
    digest = hashlib.sha256()
    for name in ("sessions.py", "session_files.py", "session_index.py", "session_record.py"):
        with open(os.path.join(ROOT, "clinvk_lib", name), "rb") as f:
            digest.update(f.read())
    key = digest.hexdigest()[:12]
    home = os.path.join(CACHE, "sessions-%d-%s" % (SESSIONS, key))
    if os.path.exists(os.path.join(home, "complete")):
        return home
    shutil.rmtree(home, ignore_errors=True)
    os.makedirs(home)
    per = SESSIONS // WORKERS
    jobs = [(home, w * per, per if w < WORKERS - 1 else SESSIONS - w * per)
            for w in range(WORKERS)]
    with multiprocessing.Pool(WORKERS) as pool:
        made = sum(pool.map(_create, jobs))
    if made != SESSIONS or sessions.SessionStore(home).count() != SESSIONS:
        raise RuntimeError("expected %d sessions in %s" % (SESSIONS, home))
    open(os.path.join(home, "complete"), "w").close()
    return home


def main() -> None:
    need_pyz()
    home = sessions_home()
    env = fake_env({"CLINVK_HOME": home})
    version = [PY, PYZ, "version"]
    for flags in ([], ["--json"]):
        argv = [PY, PYZ, "sessions", "list"] + flags
        shown = " ".join(["sessions", "list"] + flags)
        r = paired(lambda: time_command(argv, env=env), lambda: time_command(version, env=env),
                   10)
        report_value(ISSUE, "`clinvk %s` (newest 100 of 10,000 sessions) minus `clinvk "
                     "version`" % shown, "%s %.1f ms vs version %.1f ms (median of %d pairs; "
                     "ratio %.2fx)" % (shown, r["a_ms"], r["b_ms"], r["pairs"], r["ratio"]),
                     r["diff_ms"], "ms", 100)
    for flags in ([], ["--json"]):
        argv = [PY, PYZ, "sessions", "list", "--limit", "0"] + flags
        r = paired(lambda: time_command(argv, env=env), lambda: time_command(version, env=env),
                   10)
        record(ISSUE, "`clinvk %s` (all 10,000 sessions) minus `clinvk version`"
               % " ".join(argv[2:]), "%.1f ms vs %.1f ms: +%.1f ms (median of %d pairs)"
               % (r["a_ms"], r["b_ms"], r["diff_ms"], r["pairs"]))


if __name__ == "__main__":
    main()
