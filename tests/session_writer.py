"""A second process driving one session store, for the multi-process tests in test_sessions.py.

    session_writer.py HOME turns COUNT ID...      record COUNT turns, cycling over the ids
    session_writer.py HOME create COUNT           create COUNT sessions
    session_writer.py HOME churn                  create, update and delete sessions until killed
    session_writer.py HOME hold ID                hold ID's lock until stdin is closed
    session_writer.py HOME die-before-index ID    record a turn, then SIGKILL itself after the
                                                  session file is saved, before the index is

Prints "ready" (flushed) once it has started doing what it was asked.
"""

from __future__ import annotations

import os
import random
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from clinvk_lib.session_record import SessionNotFound  # noqa: E402
from clinvk_lib.sessions import SessionStore  # noqa: E402

USAGE = {"input_tokens": 3, "output_tokens": 2, "cached_tokens": 1, "reasoning_tokens": 0}


def ready() -> None:
    sys.stdout.write("ready\n")
    sys.stdout.flush()


def record_turns(store: SessionStore, count: int, ids: list) -> None:
    ready()
    for i in range(count):
        store.record_turn(ids[i % len(ids)], "backend-%d" % os.getpid(), USAGE)


def create(store: SessionStore, count: int) -> None:
    ready()
    for i in range(count):
        store.create("codex", "/tmp", initial_prompt="created %d by %d" % (i, os.getpid()))


def churn(store: SessionStore) -> None:
    alive = []
    while True:
        session = store.create("claude", "/tmp", initial_prompt="churn %d" % len(alive))
        alive.append(session.id)
        store.record_turn(random.choice(alive), "b", USAGE)
        if len(alive) > 5:
            victim = alive.pop(random.randrange(len(alive)))
            try:
                store.delete(victim)
            except SessionNotFound:
                pass
        if len(alive) == 3:
            ready()


def hold(store: SessionStore, sid: str) -> None:
    with store.lock(sid):
        ready()
        sys.stdin.read()


def die_before_index(store: SessionStore, sid: str) -> None:
    def killed(changes):
        os.kill(os.getpid(), signal.SIGKILL)
    store._files._update_index = killed  # the crash point under test: file saved, index not yet
    ready()
    store.record_turn(sid, "after-crash", USAGE)


def main(argv: list) -> None:
    store = SessionStore(argv[1])
    command = argv[2]
    if command == "turns":
        record_turns(store, int(argv[3]), argv[4:])
    elif command == "create":
        create(store, int(argv[3]))
    elif command == "churn":
        churn(store)
    elif command == "hold":
        hold(store, argv[3])
    elif command == "die-before-index":
        die_before_index(store, argv[3])
    else:
        raise SystemExit("unknown command %r" % command)


if __name__ == "__main__":
    main(sys.argv)
