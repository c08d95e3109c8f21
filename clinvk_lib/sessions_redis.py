"""The session store in Redis (``server.store``): ``sessions.SessionStore`` with its files
replaced by keys under the store's prefix, so that every node and worker sharing the store
sees every session with the same promises (lookups by prefix, per-key access, listing with
filters and paging, one turn at a time per session, no lost update):

- ``session:<id>``: the record, as JSON (``Session.to_dict``, plus ``worker``: the name of
  the machine whose CLI ran its last turn, where the CLI's transcript is);
- ``sessions:index``: a hash of every session's index row (``Session.to_row``) by id;
- ``sessions:stamp``: changed by every write, so a process rebuilds its listing only then;
- ``session:<id>:lock``: the session's lock (``SET NX PX`` with a token of the holder's own,
  renewed while held, so it expires ``LOCK_TTL_MS`` after its holder died).

A record, its index row and the stamp change in one MULTI/EXEC: a reader never sees half a
write, and nothing needs repairing after a writer dies.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from typing import Any, Dict, Iterator, List, Mapping, Optional, Set, Tuple

from .jsontext import dumps_compact
from .redisclient import Client, RedisError, ReplyError, Script
from .session_index import NO_INDEX, Index
from .session_record import (Session, SessionBusy, SessionElsewhere, SessionError,
                             SessionNotFound, StoreUnavailable, decode_record)
from .sessions import SessionStore

LOCK_TTL_MS = 30000
LOCK_POLL_SECS = 0.02
# How often a lock whose release found Redis down is released again until Redis is back.
RELEASE_RETRY_SECS = 0.2

_UNLOCK = Script("if redis.call('GET', KEYS[1]) == ARGV[1] then "
                 "return redis.call('DEL', KEYS[1]) end return 0")
_RENEW = Script("if redis.call('GET', KEYS[1]) == ARGV[1] then "
                "return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0")


class StoreUnreachable(StoreUnavailable):
    """Redis cannot be reached (or refused a write): no session can be used until it is
    back. A ``StoreUnavailable``, so every front end answers it as it answers a full disk."""

    def __init__(self, url: str, exc: Exception, action: str) -> None:
        SessionError.__init__(
            self, "the session store %s cannot be %s: %s; check that Redis is up and "
            "reachable (server.store)" % (url, action, exc),
            "the session store (Redis, %s) cannot be %s; retry once it is back"
            % (url, action))
        self.reason = str(exc)


class RedisSessionStore(SessionStore):
    """Sessions in Redis through ``client``; safe for many threads and processes at once.
    ``home`` is still the process's CLINVK_HOME (what else lives there, e.g. stored
    responses, stays on its disk); ``worker`` is the name recorded on each turn this
    process runs (``server.worker_name``)."""

    def __init__(self, client: Client, home: str, worker: str,
                 shared_homes: bool = False) -> None:
        self._files = RedisSessionFiles(client, worker)
        self.home = os.path.abspath(home)
        self.dir = client.url.redacted()
        self.worker = worker
        self.shared_homes = shared_homes        # server.shared_cli_homes

    def check_here(self, session: Session) -> None:
        """SessionElsewhere when the session's last turn ran on another worker (its CLI's
        transcript is there), unless every machine sees the same CLI homes."""
        worker = self.worker_of(session.id)
        if worker and worker != self.worker and not self.shared_homes:
            raise SessionElsewhere(session.id, worker, self.worker)

    def worker_of(self, session_id: str) -> str:
        """The name of the machine whose CLI ran the session's last turn ("" if none is
        recorded). SessionNotFound if there is no such session."""
        return self._files.worker_of(session_id)

    def record_turn(self, session_id: str, backend_session_id: str, *args: Any,
                    **kwargs: Any) -> Session:
        """``SessionStore.record_turn``. A turn whose run reported the backend's session id
        left its transcript on this machine: the session records this process's worker
        name. One that did not (e.g. the CLI found no transcript here to resume) keeps the
        worker it had, so a turn sent to the wrong machine does not lose the session."""
        if not backend_session_id:
            return super().record_turn(session_id, backend_session_id, *args, **kwargs)
        with self._files.recording_worker():
            return super().record_turn(session_id, backend_session_id, *args, **kwargs)


class RedisSessionFiles:
    """What ``SessionStore`` asks of its files (``session_files.SessionFiles``' methods
    ``read``, ``exists``, ``commit``, ``holding``, ``lock_if_free``, ``query``,
    ``store_errors``, ``ensure_dirs``, ``check_writable``), on Redis keys."""

    def __init__(self, client: Client, worker: str) -> None:
        self.client = client
        self.worker = worker
        self._index_key = client.key("sessions:index")
        self._stamp_key = client.key("sessions:stamp")
        self._cache = NO_INDEX
        self._local = threading.local()
        self._locks = HeldLocks(client)

    def _record_key(self, sid: str) -> str:
        return self.client.key("session:" + sid)

    # ---- errors ------------------------------------------------------------------------

    @contextlib.contextmanager
    def store_errors(self, action: str) -> Iterator[None]:
        """The block's RedisErrors as StoreUnavailable; ``action`` is "read" or "written"."""
        try:
            yield
        except RedisError as exc:
            raise StoreUnreachable(self.client.url.redacted(), exc, action) from None

    def ensure_dirs(self) -> None:
        """Nothing to make: keys exist once written."""

    def check_writable(self) -> None:
        """StoreUnavailable unless a key can be written now."""
        with self.store_errors("written"):
            self.client.execute("SET", self.client.key("sessions:probe"), "1", "PX", 10000)

    # ---- records -----------------------------------------------------------------------

    def read(self, sid: str) -> Session:
        with self.store_errors("read"):
            raw = self.client.execute("GET", self._record_key(sid))
        return _session_of(sid, raw)[0]

    def exists(self, sid: str) -> bool:
        with self.store_errors("read"):
            return bool(self.client.execute("EXISTS", self._record_key(sid)))

    def worker_of(self, sid: str) -> str:
        with self.store_errors("read"):
            raw = self.client.execute("GET", self._record_key(sid))
        return _session_of(sid, raw)[1]

    @contextlib.contextmanager
    def recording_worker(self) -> Iterator[None]:
        """Commits of this thread in the block record this process's worker name."""
        self._local.turn = True
        try:
            yield
        finally:
            self._local.turn = False

    def commit(self, changes: Mapping[str, Optional[Session]]) -> None:
        """Save (None: delete) sessions whose locks this thread holds, with their index rows,
        in one transaction. A session keeps the worker it recorded, unless it is new or a
        turn ran (``recording_worker``)."""
        turn = getattr(self._local, "turn", False)
        commands: List[Tuple[Any, ...]] = [("MULTI",)]
        with self.store_errors("written"):
            for sid, session in changes.items():
                key = self._record_key(sid)
                if session is None:
                    commands += [("DEL", key), ("HDEL", self._index_key, sid)]
                    continue
                worker = self.worker if turn else self._kept_worker(sid)
                record = dict(session.to_dict(), worker=worker)
                commands += [("SET", key, dumps_compact(record)),
                             ("HSET", self._index_key, sid, dumps_compact(session.to_row()))]
            commands += [("SET", self._stamp_key, os.urandom(16).hex()), ("EXEC",)]
            failed = [r for r in self.client.pipeline(commands) if isinstance(r, ReplyError)]
            if failed:
                raise failed[0]

    def _kept_worker(self, sid: str) -> str:
        raw = self.client.execute("GET", self._record_key(sid))
        if raw is None:
            return self.worker
        try:
            return str(json.loads(raw).get("worker") or "")
        except (ValueError, AttributeError):
            return ""

    # ---- locks -------------------------------------------------------------------------

    @contextlib.contextmanager
    def holding(self, sid: str, timeout: Optional[float]) -> Iterator[None]:
        """Hold session ``sid``'s lock for the block (reentrant for this thread):
        SessionBusy after ``timeout`` seconds (None = as long as it takes)."""
        with self.store_errors("locked"):
            acquired = self._locks.acquire(self._record_key(sid) + ":lock", timeout)
        if not acquired:
            raise SessionBusy(sid, timeout or 0)
        try:
            yield
        finally:
            with self.store_errors("unlocked"):
                self._locks.release(self._record_key(sid) + ":lock")

    @contextlib.contextmanager
    def lock_if_free(self, sid: str) -> Iterator[bool]:
        key = self._record_key(sid) + ":lock"
        acquired = self._locks.acquire(key, 0)
        try:
            yield acquired
        finally:
            if acquired:
                self._locks.release(key)

    # ---- the index ---------------------------------------------------------------------

    def query(self, answer: Any) -> Any:
        """``answer`` applied to every session's index row, most recently used first."""
        with self.store_errors("read"):
            return answer(self._snapshot())

    def _snapshot(self) -> Index:
        stamp = self.client.execute("GET", self._stamp_key)
        cache = self._cache
        if stamp is not None and cache.stamp == stamp.decode():
            return cache
        replies = self.client.pipeline([("GET", self._stamp_key),
                                        ("HGETALL", self._index_key)])
        for reply in replies:
            if isinstance(reply, ReplyError):
                raise reply
        stamp, flat = replies
        pairs = flat.items() if isinstance(flat, dict) else zip(flat[::2], flat[1::2])
        rows = []
        for _, raw in pairs:
            try:
                session = Session.from_row(json.loads(raw))
            except (ValueError, TypeError):
                continue                # not written by this store: left out
            rows.append((session.head(), raw))
        rows.sort(key=lambda pair: (pair[0][1], pair[0][0]), reverse=True)
        index = Index.build([h for h, _ in rows], [r for _, r in rows], ())
        index.stamp = stamp.decode() if stamp is not None else ""
        self._cache = index
        return index


def _session_of(sid: str, raw: Optional[bytes]) -> Tuple[Session, str]:
    """The session in a record and the worker it names: SessionNotFound if there is no
    record, SessionError if it is damaged."""
    if raw is None:
        raise SessionNotFound(sid)
    try:
        session, data = decode_record(raw)
    except ValueError as e:
        raise SessionError("session %s is damaged (%s); delete it to remove it" % (sid, e))
    session.id = sid
    return session, str(data.get("worker") or "")


class HeldLocks:
    """The session locks this process holds in Redis: each a key set with a token of its
    own, reentrant for the thread holding it, renewed by a daemon thread every third of
    ``LOCK_TTL_MS`` while held (so a lock outlives no dead holder by more than that, and no
    live one loses it however long its run). A release that finds Redis down is tried again
    by that thread until Redis is back: a Redis restored from a snapshot taken while the
    lock was held would otherwise keep the session busy until the lock expired."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self._held: Dict[str, Tuple[str, int, int]] = {}  # key -> (token, thread, depth)
        self._unreleased: Set[Tuple[str, str]] = set()    # (key, token) still to release
        self._wake = threading.Event()                      # set: a release to try again
        self._guard = threading.Lock()
        self._renewer: Optional[threading.Thread] = None

    def acquire(self, key: str, timeout: Optional[float]) -> bool:
        me = threading.get_ident()
        with self._guard:
            token, owner, depth = self._held.get(key, ("", 0, 0))
            if depth and owner == me:
                self._held[key] = (token, owner, depth + 1)
                return True
        token = os.urandom(12).hex()
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.client.execute("SET", key, token, "NX", "PX", LOCK_TTL_MS):
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(LOCK_POLL_SECS)
        with self._guard:
            self._held[key] = (token, me, 1)
            self._start_renewer()
        return True

    def release(self, key: str) -> None:
        with self._guard:
            token, owner, depth = self._held[key]
            if depth > 1:
                self._held[key] = (token, owner, depth - 1)
                return
            del self._held[key]
        try:
            self.client.run_script(_UNLOCK, [key], [token])
        except RedisError:
            with self._guard:
                self._unreleased.add((key, token))
                self._start_renewer()
            self._wake.set()

    def _start_renewer(self) -> None:
        if self._renewer is None or not self._renewer.is_alive():
            self._renewer = threading.Thread(target=self._renew, daemon=True,
                                             name="clinvk-session-locks")
            self._renewer.start()

    def _release_again(self) -> None:
        with self._guard:
            pending = list(self._unreleased)
        for key, token in pending:
            try:
                self.client.run_script(_UNLOCK, [key], [token])
            except RedisError:
                return                  # still down: the next round tries again
            with self._guard:
                self._unreleased.discard((key, token))

    def _renew(self) -> None:
        renew_at = time.monotonic() + LOCK_TTL_MS / 3000.0
        while True:
            with self._guard:
                pending = bool(self._unreleased)
            self._wake.wait(RELEASE_RETRY_SECS if pending else
                            max(0.0, renew_at - time.monotonic()))
            self._wake.clear()
            self._release_again()
            with self._guard:
                held = [(key, token) for key, (token, _, _) in self._held.items()]
                if not held and not self._unreleased:
                    self._renewer = None
                    return
            if time.monotonic() < renew_at:
                continue
            renew_at = time.monotonic() + LOCK_TTL_MS / 3000.0
            for key, token in held:
                try:
                    self.client.run_script(_RENEW, [key], [token, LOCK_TTL_MS])
                except RedisError:
                    continue            # Redis down: the next round tries again
