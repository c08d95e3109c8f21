"""The session store: create, look up, lock, update, list and delete sessions, each seen only by
the callers allowed to use it.

A session (``session_record.Session``) is one JSON file under ``<home>/sessions/``; the files,
their index and their locks are ``session_files``' business, and the index format
``session_index``'s.

Whose sessions: a session made by a request authenticated with an API key records that key's
id (``api_key_id``, never the key). Lookups, listing and deletion take an ``Access``: the
command line and a server without keys see everything; a key sees only its own sessions (an
admin key everything), and a session it may not use is reported not found.

When the disk refuses (read-only or full, lost permissions), store methods raise
``StoreUnavailable`` rather than a bare OSError, and ``check_writable`` finds out before a run
starts by writing a small file: permission bits say nothing when running as root.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from typing import Any, Callable, Iterable, Iterator, List, Mapping, Optional, Tuple

from .events import USAGE_KEYS
from .session_files import SessionFiles
from .session_index import Index
from .session_record import (STATUSES, AmbiguousSession, Session, SessionError, SessionNotFound,
                             bounded_reply, check_id, new_session_id, now_rfc3339,
                             seconds_ago_rfc3339)

# clean() deletes in batches so the index is rewritten once per batch, not once per session.
CLEAN_BATCH = 256


class Access:
    """Which sessions a caller may use. With ``everything`` (the command line, a server
    without API keys, an admin key) all of them; otherwise only the sessions recorded with
    its ``key_id``, and none if that is empty. The sessions it creates are recorded with
    ``key_id`` ("" = nobody's). A session another caller may not use is reported not found,
    never forbidden, so its existence does not leak."""

    __slots__ = ("key_id", "everything")

    def __init__(self, key_id: str = "", everything: bool = True) -> None:
        self.key_id = key_id
        self.everything = everything

    def allows(self, owner: str) -> bool:
        """True if a session recorded with ``owner`` (its ``api_key_id``) may be used."""
        return self.everything or (bool(self.key_id) and owner == self.key_id)

    def __repr__(self) -> str:
        return "Access(%r, everything=%r)" % (self.key_id, self.everything)


EVERYTHING = Access()


class SessionStore:
    """Sessions under ``<home>/sessions/``; safe for many threads and processes at once.

    Nothing is created on disk until the first write."""

    def __init__(self, home: str) -> None:
        self._files = SessionFiles(home)
        self.home = self._files.home
        self.dir = self._files.dir

    def create(self, backend: str, working_dir: str, model: str = "", initial_prompt: str = "",
               tags: Optional[Iterable[str]] = None, metadata: Optional[Mapping[str, Any]] = None,
               backend_session_id: str = "", access: Optional[Access] = None) -> Session:
        """A new active session, saved, recorded as created by ``access.key_id``;
        ``working_dir`` must be absolute. StoreUnavailable if it cannot be written."""
        session = self.new(backend, working_dir, model, initial_prompt, tags, metadata,
                           backend_session_id, access)
        self._save_new(session)
        return session

    def new(self, backend: str, working_dir: str, model: str = "", initial_prompt: str = "",
            tags: Optional[Iterable[str]] = None, metadata: Optional[Mapping[str, Any]] = None,
            backend_session_id: str = "", access: Optional[Access] = None,
            session_id: str = "") -> Session:
        """What create() would save, with its id (``session_id`` when given, one chosen
        beforehand by ``new_session_id``), but not saved: ``record_turn`` and
        ``mark_cancelled`` given it as ``new`` save it with its first turn, in one write."""
        if not backend:
            raise ValueError("a session needs a backend name (claude, codex, ...)")
        if not os.path.isabs(working_dir):
            raise ValueError("working_dir must be an absolute path: got %r" % (working_dir,))
        return Session(session_id or new_session_id(), backend, os.path.normpath(working_dir),
                       backend_session_id=backend_session_id, model=model,
                       initial_prompt=initial_prompt, tags=tags, metadata=metadata,
                       api_key_id=(access or EVERYTHING).key_id)

    def _save_new(self, session: Session) -> None:
        with self._files.holding(session.id, None):
            self._files.commit({session.id: session})

    def get(self, session_id: str) -> Session:
        """The session with this exact id; SessionNotFound if there is none."""
        return self._files.read(check_id(session_id))

    def resolve(self, id_or_prefix: str, access: Optional[Access] = None) -> Session:
        """The session with this id, or the only one whose id starts with it, among those
        ``access`` may use (default: all); SessionNotFound or AmbiguousSession otherwise, and
        SessionError if its file is damaged."""
        return self._files.read(self._match(id_or_prefix, access or EVERYTHING))

    @contextlib.contextmanager
    def lock(self, session_id: str, timeout: Optional[float] = None) -> Iterator[Session]:
        """Hold the session's lock for the block (e.g. a whole resume) and yield the session as
        read under it. Other threads and processes wait; this thread may still call update()
        and record_turn(). SessionBusy after ``timeout`` seconds (None = wait forever)."""
        sid = check_id(session_id)
        with self._files.holding(sid, timeout):
            yield self._files.read(sid)

    def update(self, session_id: str, fn: Callable[[Session], Any]) -> Session:
        """Read the session, let ``fn`` change it, save it, all under the session's lock;
        returns the saved session. If ``fn`` raises, nothing is saved."""
        sid = check_id(session_id)
        with self._files.holding(sid, None):
            session = self._files.read(sid)
            fn(session)
            if session.id != sid:
                raise ValueError("a session's id cannot change (%s -> %s)" % (sid, session.id))
            if session.status not in STATUSES:
                raise ValueError("session status must be one of %s: got %r"
                                 % (", ".join(STATUSES), session.status))
            self._files.commit({sid: session})
        return session

    def record_turn(self, session_id: str, backend_session_id: str,
                    usage: Optional[Mapping[str, Any]], error: str = "",
                    model: str = "", reply: str = "", cancelled: bool = False,
                    new: Optional[Session] = None) -> Session:
        """Count one finished run: last_used = now, turn_count + 1, usage added (the keys of
        events.Usage.to_dict()), the reply kept (``bounded_reply``), status ``error`` with
        last_error = ``error`` if it failed, else ``active`` with last_error cleared. Empty
        ids and models keep the stored ones. A ``cancelled`` run is status ``cancelled``; it
        counts as a turn only when the session can be resumed (the backend reported its id).
        With ``new`` (from new(), id ``session_id``), that session is saved with this turn."""
        def apply(s: Session) -> None:
            s.last_used = now_rfc3339()
            if backend_session_id:
                s.backend_session_id = backend_session_id
            if not cancelled or s.backend_session_id:
                s.turn_count += 1
            for key in USAGE_KEYS:
                s.token_usage[key] += int((usage or {}).get(key) or 0)
            if model:
                s.model = model
            if reply or not cancelled:
                s.last_reply = bounded_reply(reply)
            s.status = "cancelled" if cancelled else "error" if error else "active"
            s.last_error = error
        return self._change(session_id, apply, new)

    def mark_cancelled(self, session_id: str, reason: str,
                       new: Optional[Session] = None) -> Session:
        """Record that a run of the session was interrupted before it could be counted:
        status ``cancelled``, last_error = ``reason``, last_used = now. With ``new`` (from
        new(), id ``session_id``), that session is saved so."""
        def apply(s: Session) -> None:
            s.last_used = now_rfc3339()
            s.status = "cancelled"
            s.last_error = reason
        return self._change(session_id, apply, new)

    def _change(self, session_id: str, fn: Callable[[Session], Any],
                new: Optional[Session]) -> Session:
        """update(session_id, fn), or ``new`` (not saved yet) changed by ``fn`` and saved."""
        if new is None:
            return self.update(session_id, fn)
        if new.id != session_id:
            raise ValueError("the new session's id is %s, not %s" % (new.id, session_id))
        fn(new)
        self._save_new(new)
        return new

    def delete(self, id_or_prefix: str, access: Optional[Access] = None,
               timeout: Optional[float] = None) -> str:
        """Remove the session with this id (or the only one whose id starts with it) among
        those ``access`` may use, and return its id. A damaged file is removed too (only by
        an ``access`` to every session: whose it was cannot be read). SessionNotFound if there
        is none; SessionBusy if a run holds it for longer than ``timeout`` seconds (None =
        wait for the run to finish)."""
        sid = self._match(id_or_prefix, access or EVERYTHING)
        with self._files.holding(sid, timeout):
            if not self._files.exists(sid):
                raise SessionNotFound(id_or_prefix)
            self._files.commit({sid: None})
        return sid

    def list(self, backend: Optional[str] = None, status: Optional[str] = None,
             limit: Optional[int] = None, offset: int = 0,
             access: Optional[Access] = None,
             working_dir: Optional[str] = None,
             working_dir_part: str = "") -> Tuple[List[Session], int]:
        """Sessions matching the filters (``working_dir``: that directory; ``working_dir_part``:
        a directory whose path contains the text) that ``access`` may use (default: all), most
        recently used first, and how many matched before ``limit``/``offset``. Built from the
        index: ``initial_prompt`` is cut to INDEX_PROMPT_CHARS characters and ``last_reply``
        is empty (get() has both)."""
        if offset < 0 or (limit is not None and limit < 0):
            raise ValueError("limit and offset must not be negative: got limit=%r, offset=%r"
                             % (limit, offset))
        access = access or EVERYTHING
        wanted = os.path.normpath(working_dir) if working_dir else None

        def page(index: Index) -> Tuple[List[Session], int]:
            matching = range(len(index))  # type: Sequence[int]
            if not access.everything:
                matching = [i for i, owner in zip(matching, index.column("api_key_id"))
                            if access.allows(owner)]
            if backend:
                matching = [i for i, b in zip(matching, index.column("backend")) if b == backend]
            if status:
                states = index.column("status")
                matching = [i for i in matching if states[i] == status]
            if wanted or working_dir_part:
                dirs = index.column("working_dir")
                matching = [i for i in matching if (not wanted or dirs[i] == wanted)
                            and working_dir_part in dirs[i]]
            end = len(matching) if limit is None else min(offset + limit, len(matching))
            return index.sessions(matching[offset:end]), len(matching)

        return self._files.query(page)

    def last(self, backend: Optional[str] = None,
             working_dir: Optional[str] = None) -> Optional[Session]:
        """The most recently used session that can be resumed (it has a backend session id),
        optionally of this backend and started in this working directory; None if none."""
        wanted = os.path.normpath(working_dir) if working_dir else None

        def resumable(index: Index) -> List[str]:
            columns = zip(index.column("id"), index.column("backend_session_id"),
                          index.column("backend"), index.column("working_dir"))
            return [sid for sid, resume_id, name, workdir in columns
                    if resume_id and (not backend or name == backend)
                    and (wanted is None or workdir == wanted)]

        for sid in self._files.query(resumable):
            try:
                return self._files.read(sid)
            except SessionError:  # deleted or damaged since the listing: try the next one
                continue
        return None

    def stale(self, older_than_seconds: float) -> List[Session]:
        """The sessions ``clean(older_than_seconds)`` would delete now, most recently used
        first (from the index, like list())."""
        cutoff = self._cutoff(older_than_seconds)
        return self._files.query(lambda index: index.sessions(
            [i for i, used in enumerate(index.column("last_used")) if used < cutoff]))

    def clean(self, older_than_seconds: float,
              only: Optional[Iterable[str]] = None) -> List[str]:
        """Delete sessions last used more than ``older_than_seconds`` ago (and, with
        ``only``, among those ids: the ones a user was shown and confirmed) and return their
        ids. Sessions locked by a running resume are kept. Raises ValueError for an age <= 0
        (this never means "delete everything")."""
        cutoff = self._cutoff(older_than_seconds)
        with self._files.store_errors("written"):
            self._files.ensure_dirs()
        chosen = None if only is None else set(only)
        candidates = self._files.query(lambda index: [
            sid for sid, used in zip(index.column("id"), index.column("last_used"))
            if used < cutoff and (chosen is None or sid in chosen)])
        deleted = []  # type: List[str]
        for start in range(0, len(candidates), CLEAN_BATCH):
            with contextlib.ExitStack() as held, self._files.store_errors("written"):
                doomed = {}  # type: Dict[str, Optional[Session]]
                for sid in candidates[start:start + CLEAN_BATCH]:
                    if not held.enter_context(self._files.lock_if_free(sid)):
                        continue
                    try:
                        if self._files.read(sid).last_used < cutoff:  # not used since
                            doomed[sid] = None
                    except SessionError:
                        continue
                if doomed:
                    self._files.commit(doomed)
                    deleted.extend(doomed)
        return deleted

    @staticmethod
    def _cutoff(older_than_seconds: float) -> str:
        if not older_than_seconds > 0:
            raise ValueError("clean needs an age greater than zero: got %r"
                             % (older_than_seconds,))
        return seconds_ago_rfc3339(older_than_seconds)

    def count(self) -> int:
        """How many readable sessions there are."""
        return self._files.query(len)

    def check_here(self, session: Session) -> None:
        """Nothing: on this machine's disk, a session's CLI transcript is on this machine
        (``RedisSessionStore`` says otherwise for a session another worker ran)."""

    def check_writable(self) -> None:
        """StoreUnavailable unless new files can be written in the store's directories right
        now (see ``SessionFiles.check_writable``)."""
        self._files.check_writable()

    def health(self) -> Tuple[bool, int, str]:
        """(available, session_count, problem) for /health: available means a file can be
        written in the store now (see check_writable) and its sessions can be listed. The
        problem names no path: /health answers callers without a key too."""
        try:
            self.check_writable()
            return True, self.count(), ""
        except SessionError as exc:
            problem = exc.public
        try:
            count = self.count()    # a read-only store still lists its sessions
        except SessionError:
            count = 0
        return False, count, problem

    # ---- lookups ---------------------------------------------------------------------------

    def _match(self, id_or_prefix: str, access: Access) -> str:
        """The id of the one session ``id_or_prefix`` names among those ``access`` may use:
        the exact id first, else a unique prefix. Damaged files count only for an access to
        every session (whose they are cannot be read). SessionNotFound or AmbiguousSession
        otherwise; the sessions of others never make a prefix ambiguous."""
        sid = check_id(id_or_prefix)
        if self._visible(sid, access):
            return sid

        def candidates(index: Index) -> List[str]:
            ids = index.column("id")
            if access.everything:
                return [i for i in itertools.chain(ids, index.broken) if i.startswith(sid)]
            return [i for i, owner in zip(ids, index.column("api_key_id"))
                    if i.startswith(sid) and access.allows(owner)]

        matches = sorted(set(self._files.query(candidates)))
        if not matches:
            raise SessionNotFound(id_or_prefix)
        if len(matches) > 1:
            raise AmbiguousSession(id_or_prefix, matches)
        if not access.everything and not self._visible(matches[0], access):
            raise SessionNotFound(id_or_prefix)    # the index is a cache: the file decides
        return matches[0]

    def _visible(self, sid: str, access: Access) -> bool:
        """True if session ``sid`` has a file and ``access`` may use it."""
        if access.everything:
            return self._files.exists(sid)
        try:
            return access.allows(self._files.read(sid).api_key_id)
        except SessionError:
            return False
