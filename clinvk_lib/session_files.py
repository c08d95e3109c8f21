"""The session store's directory: one JSON file per session, the index kept true to them, one
lock per session, and every write atomic.

Layout under ``<home>/sessions/`` (directories 0700, files 0600)::

    <id>.json                  one session (session_record); the truth
    index.json                 a cache of every session's listing fields (session_index)
    .<id>.pending              marker: a write of <id> is between its file and the index
    .<id>.json.tmp-<hex>       temp file of an atomic write (stray ones are swept)
    .index.json.tmp-<hex>      temp file of an index write
    locks/<id>.lock            flock of one session, present only while held
    locks/index.lock           flock serialising index rewrites

Why the index can be trusted: a writer holds the session's lock, creates ``.<id>.pending``,
replaces (or removes) ``<id>.json``, then rewrites the index under ``locks/index.lock`` (reading
the current index first, so concurrent processes never drop each other's entries) and only then
removes the marker. A reader compares the index's ids with the directory listing (one
``listdir``, no per-file reads): ids with a marker are taken from their files; any other
difference means the index is stale (files changed behind its back, or it is missing or
unreadable) and it is rebuilt from the files. A writer killed at any point leaves a marker (and
maybe a temp file); the next reader that can take that session's lock repairs the index entry and
removes both. Edits to a session file that bypass the store and keep the set of files unchanged
are not seen by listing until the index is rebuilt (delete ``index.json``).

When the disk refuses (read-only or full, lost permissions), methods raise ``StoreUnavailable``
rather than a bare OSError.
"""

from __future__ import annotations

import contextlib
import os
import re
from typing import (Any, Callable, ContextManager, Iterable, Iterator, List, Mapping,
                    Optional)

from .filelock import locked
from .fsutil import fsync_dir, unlink_quietly, write_atomically
from .jsontext import dumps_pretty
from .session_index import NO_INDEX, STAMP_RE, DamagedIndex, Index
from .session_record import (ID_PATTERN, Session, SessionBusy, SessionError, SessionNotFound,
                             StoreUnavailable, decode_record)

_SESSION_FILE_RE = re.compile(r"^(" + ID_PATTERN + r")\.json$", re.M)
_MARKER_RE = re.compile(r"^\.(" + ID_PATTERN + r")\.pending$", re.M)
_SESSION_TEMP_RE = re.compile(r"^(\.(" + ID_PATTERN + r")\.json\.tmp-[0-9a-f]+)$", re.M)
_INDEX_TEMP_RE = re.compile(r"^(\.index\.json\.tmp-[0-9a-f]+)$", re.M)


class Listing:
    """What one listdir of the sessions directory shows."""

    __slots__ = ("files", "pending", "session_temps", "index_temps")

    def __init__(self, names: List[str]) -> None:
        joined = "\n".join(names)
        if joined.count("\n") != len(names) - 1:  # a name with a newline would fool the regexes
            names = [n for n in names if "\n" not in n]
            joined = "\n".join(names)
        self.files = set(_SESSION_FILE_RE.findall(joined))
        hidden = "\n".join(n for n in names if n.startswith("."))
        self.pending = set(_MARKER_RE.findall(hidden))
        self.session_temps = _SESSION_TEMP_RE.findall(hidden)  # [(name, id)]
        self.index_temps = _INDEX_TEMP_RE.findall(hidden)

    def agrees_with(self, index: Index) -> bool:
        """True if the index knows exactly the session files present, ids being written aside."""
        known = index.ids() | index.broken
        if not self.pending:
            return known == self.files
        return known - self.pending == self.files - self.pending


def _write_probe(directory: str) -> None:
    """Create, write and remove a small file in ``directory``; OSError if the disk refuses.
    It is named like an index temp file, so one left behind by a crash is swept."""
    path = os.path.join(directory, ".index.json.tmp-" + os.urandom(8).hex())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, b"clinvk write probe\n" * 64)   # data, not just a name: a full disk
    finally:                                         # still has inodes for empty files
        os.close(fd)
        unlink_quietly(path)


class SessionFiles:
    """The files of the sessions under ``<home>/sessions/``, safe for many threads and
    processes at once; nothing is created on disk until the first write. It knows files,
    locks and the index; who may see which session is ``sessions.SessionStore``'s business.

    Methods a store uses: ``read``, ``exists``, ``commit``, ``holding``, ``lock_if_free``,
    ``query``, ``store_errors``, ``ensure_dirs``, ``check_writable``."""

    def __init__(self, home: str) -> None:
        self.home = os.path.abspath(home)
        self.dir = os.path.join(self.home, "sessions")
        self._locks_dir = os.path.join(self.dir, "locks")
        self._index_path = os.path.join(self.dir, "index.json")
        self._index_lock = os.path.join(self._locks_dir, "index.lock")
        self._cache = NO_INDEX  # the index as last read or written by this store

    # ---- locks and errors ------------------------------------------------------------------

    @contextlib.contextmanager
    def holding(self, sid: str, timeout: Optional[float]) -> Iterator[None]:
        """Hold session ``sid``'s lock for the block: StoreUnavailable if its lock file cannot
        be made, SessionBusy after ``timeout`` seconds (None = wait as long as it takes)."""
        with contextlib.ExitStack() as held:
            with self.store_errors("written"):
                self.ensure_dirs()
                acquired = held.enter_context(locked(self._session_lock(sid), timeout))
            if not acquired:
                raise SessionBusy(sid, timeout or 0)
            yield

    def lock_if_free(self, sid: str) -> ContextManager[bool]:
        """Hold session ``sid``'s lock for the block if no one holds it now; yields whether
        it was acquired. OSError if its lock file cannot be made."""
        return locked(self._session_lock(sid), 0)

    @contextlib.contextmanager
    def store_errors(self, action: str) -> Iterator[None]:
        """The block's OSErrors (the disk refused) as StoreUnavailable; ``action`` is "read"
        or "written"."""
        try:
            yield
        except SessionError:
            raise               # SessionBusy is a TimeoutError, hence an OSError: keep it
        except OSError as exc:
            raise StoreUnavailable(self.dir, exc, action) from None

    def check_writable(self) -> None:
        """StoreUnavailable unless new files can be written in the store's directories right
        now. Trying is the only test that holds for every cause (a read-only mount, a full
        disk, lost permissions, a file in a directory's place) and for root, whom permission
        bits do not stop."""
        with self.store_errors("written"):
            self.ensure_dirs()
            _write_probe(self.dir)
            with locked(os.path.join(self._locks_dir, "probe.lock"), 0):
                pass   # creating the lock file is the test; another prober holding it is fine

    # ---- session files ---------------------------------------------------------------------

    def _file(self, sid: str) -> str:
        return os.path.join(self.dir, sid + ".json")

    def _marker(self, sid: str) -> str:
        return os.path.join(self.dir, "." + sid + ".pending")

    def _session_lock(self, sid: str) -> str:
        return os.path.join(self._locks_dir, sid + ".lock")

    def ensure_dirs(self) -> None:
        # makedirs() would give the intermediate directories the umask's mode, not 0700.
        for path in (self.home, self.dir, self._locks_dir):
            try:
                os.mkdir(path, 0o700)
            except FileExistsError:
                pass

    def exists(self, sid: str) -> bool:
        """True if session ``sid`` has a file (readable or not)."""
        return os.path.exists(self._file(sid))

    def read(self, sid: str) -> Session:
        """The session in ``<sid>.json``: SessionNotFound if absent, SessionError if damaged."""
        path = self._file(sid)
        try:
            with open(path, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            raise SessionNotFound(sid) from None
        except OSError as exc:
            raise StoreUnavailable(self.dir, exc, "read") from None
        try:
            session = decode_record(raw)[0]
        except ValueError as e:
            raise SessionError("session %s: its file %s is damaged (%s); fix or delete that "
                               "file" % (sid, path, e),
                               "session %s is damaged (%s); delete it to remove it"
                               % (sid, e)) from None
        session.id = sid  # the file name is what every lookup uses
        return session

    def _read_if_readable(self, sid: str) -> Optional[Session]:
        try:
            return self.read(sid)
        except (SessionError, OSError):
            return None

    def commit(self, changes: Mapping[str, Optional[Session]]) -> None:
        """Save (or, for None, delete) sessions whose locks this thread holds, then the index,
        with each id's marker present in between (see the module docstring).
        StoreUnavailable if the disk refuses."""
        with self.store_errors("written"):
            for sid in changes:
                os.close(os.open(self._marker(sid),
                                 os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
            for sid, session in changes.items():
                if session is None:
                    unlink_quietly(self._file(sid))
                else:
                    write_atomically(self._file(sid),
                                     dumps_pretty(session.to_dict()).encode("utf-8"),
                                     temp_prefix="." + sid + ".json.tmp-", sync_dir=False)
            fsync_dir(self.dir)  # makes the markers and the renames durable together
        try:
            self._update_index(changes)
        except OSError:
            # The session files are saved; the markers stay, so readers take these sessions
            # from their files and the next reader holding their locks repairs the index.
            return
        for sid in changes:
            unlink_quietly(self._marker(sid))

    # ---- index -----------------------------------------------------------------------------

    def query(self, answer: Callable[[Index], Any]) -> Any:
        """``answer`` applied to the current index; if that finds part of index.json damaged,
        to an index rebuilt from the files. StoreUnavailable if the store cannot be read."""
        with self.store_errors("read"):
            try:
                return answer(self._snapshot())
            except DamagedIndex:
                return answer(self._snapshot(rebuild=True))

    def _snapshot(self, rebuild: bool = False) -> Index:
        """Every readable session as the files say now (index rows, plus the files of sessions
        being written); ``rebuild`` forces a rebuild from the files."""
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return NO_INDEX
        listing = Listing(names)
        if listing.pending or listing.session_temps or listing.index_temps:
            self._sweep(listing)
        index = None if rebuild else self._read_index()
        if index is None or not listing.agrees_with(index):
            index = self._rebuild(force=rebuild)
        if listing.pending:
            index = index.changed({sid: self._read_if_readable(sid) for sid in listing.pending})
        return index

    def _read_index(self) -> Optional[Index]:
        """The index on disk (from memory if unchanged since last read), or None if it is
        missing or not in our format."""
        try:
            f = open(self._index_path, "rb", buffering=0)  # unbuffered: one read of a big file
        except FileNotFoundError:
            return None
        with f:
            m = STAMP_RE.match(f.read(64))
            if m is None:
                return None
            stamp = m.group(1).decode("ascii")
            if self._cache.stamp == stamp:
                return self._cache
            f.seek(0)
            index = Index.parse(stamp, f.readall())
        if index is not None:
            self._cache = index
        return index

    def _write_index(self, index: Index) -> Index:
        """Replace index.json with ``index`` (the caller holds the index lock); returns it
        with its new stamp."""
        index = index.stamped()
        write_atomically(self._index_path, index.to_bytes(), temp_prefix=".index.json.tmp-")
        self._cache = index
        return index

    def _update_index(self, changes: Mapping[str, Optional[Session]]) -> None:
        """Set (None: drop) these sessions' index entries, re-reading the index under its lock
        first so that entries written meanwhile by other processes are kept."""
        with locked(self._index_lock, None):
            index = self._read_index()
            if index is None:
                index = self._scan(self._list().files)
            try:
                index = index.changed(changes)
            except DamagedIndex:
                index = self._scan(self._list().files)
            self._write_index(index)

    def _list(self) -> Listing:
        try:
            return Listing(os.listdir(self.dir))
        except FileNotFoundError:
            return Listing([])

    def _scan(self, sids: Iterable[str]) -> Index:
        """An index read from the session files themselves."""
        sessions = {}  # type: Dict[str, Optional[Session]]
        broken = []
        for sid in sids:
            try:
                sessions[sid] = self.read(sid)
            except SessionNotFound:
                continue
            except (SessionError, OSError):
                broken.append(sid)
        return NO_INDEX.changed(sessions, broken)

    def _rebuild(self, force: bool = False) -> Index:
        """A fresh index from the files, saved, unless another process saved one that agrees
        with the files meanwhile (and ``force`` is false)."""
        try:
            self.ensure_dirs()
            with locked(self._index_lock, None):
                listing = self._list()
                index = None if force else self._read_index()
                if index is not None and listing.agrees_with(index):
                    return index
                return self._write_index(self._scan(listing.files))
        except OSError:
            # A store we cannot write to (read-only mount, another user's home) still lists.
            return self._scan(self._list().files)

    def _sweep(self, listing: Listing) -> None:
        """Clean up after writers that died: for a marker or temp file whose lock is free
        (so no writer is at work on it), repair the index entry from the file and remove
        the leftovers."""
        try:
            self.ensure_dirs()
            for sid in listing.pending:
                with locked(self._session_lock(sid), 0) as free:
                    if free and os.path.exists(self._marker(sid)):
                        try:
                            session = self.read(sid)  # type: Optional[Session]
                        except SessionNotFound:
                            session = None
                        except SessionError:
                            continue  # a damaged file: readers keep skipping it
                        self._update_index({sid: session})
                        unlink_quietly(self._marker(sid))
            for name, sid in listing.session_temps:
                with locked(self._session_lock(sid), 0) as free:
                    if free:
                        unlink_quietly(os.path.join(self.dir, name))
            if listing.index_temps:
                with locked(self._index_lock, 0) as free:
                    if free:
                        for name in listing.index_temps:
                            unlink_quietly(os.path.join(self.dir, name))
        except OSError:
            pass  # cannot write here: leftovers are harmless, readers already ignore them
