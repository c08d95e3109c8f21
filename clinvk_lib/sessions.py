"""The session store: one JSON file per session, an index for fast listing, one lock per session.

Layout under ``<home>/sessions/`` (directories 0700, files 0600)::

    <id>.json                  one session (2-space indented JSON); the truth
    index.json                 a cache of every session's listing fields; rebuilt when wrong
    .<id>.pending              marker: a write of <id> is between its file and the index
    .<id>.json.tmp-<hex>       temp file of an atomic write (stray ones are swept)
    .index.json.tmp-<hex>      temp file of an index write
    locks/<id>.lock            flock of one session, present only while held
    locks/index.lock           flock serialising index rewrites

Ids are 32 lowercase hex characters (128 random bits, the Go original's format); lookups also
accept any id of 1-64 characters from ``[0-9a-f-]`` so older files keep working.

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

Why listing is fast: index.json is one JSON document laid out in lines, sessions most recently
used first. Line 1 holds a random ``stamp`` (new on every write, so a process re-parses the file
only when it changed), the format version and the ids of unreadable session files; the next
lines hold one column each of the fields that lookups filter on (id, last_used, backend, status,
working_dir, backend_session_id, api_key_id) and the byte offset of every row; then comes one
line per session with its row (the listing fields; the initial prompt cut to
INDEX_PROMPT_CHARS). Counting and prefix lookup parse the id column only, filters parse their
column, and rows are parsed just for the sessions returned. With 10,000 sessions the file is
about 5 MB and a write rewrites it.

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
import datetime
import fcntl
import gc
import itertools
import json
import os
import re
import threading
import time
import weakref
from typing import (Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence,
                    Tuple)

STATUSES = ("active", "completed", "error", "paused")
USAGE_KEYS = ("input_tokens", "output_tokens", "cached_tokens", "reasoning_tokens")
TITLE_CHARS = 60
# list() reads the index only, so its sessions carry the initial prompt cut to this length;
# get() has the full text. Keeps a 10,000-session index a few megabytes.
INDEX_PROMPT_CHARS = 100
# clean() deletes in batches so the index is rewritten once per batch, not once per session.
CLEAN_BATCH = 256

_ID_PATTERN = r"[0-9a-f][0-9a-f-]{0,63}"
_ID_RE = re.compile(_ID_PATTERN + r"\Z")
_SESSION_FILE_RE = re.compile(r"^(" + _ID_PATTERN + r")\.json$", re.M)
_MARKER_RE = re.compile(r"^\.(" + _ID_PATTERN + r")\.pending$", re.M)
_SESSION_TEMP_RE = re.compile(r"^(\.(" + _ID_PATTERN + r")\.json\.tmp-[0-9a-f]+)$", re.M)
_INDEX_TEMP_RE = re.compile(r"^(\.index\.json\.tmp-[0-9a-f]+)$", re.M)
_INDEX_STAMP_RE = re.compile(rb'\{"stamp":"([0-9a-f]{32})"')
_INDEX_VERSION = 5  # the Go original writes version 1 with another layout; either side rebuilds
_ROWS_OPEN_LINE = b'"rows":['
_ROW_FIELDS = ("id", "backend", "created_at", "last_used", "working_dir", "backend_session_id",
               "model", "initial_prompt", "title", "status", "turn_count") + USAGE_KEYS + (
               "tags", "metadata", "last_error", "api_key_id")
# The index's columns; a session's "head" is the tuple of these values.
_HEAD_FIELDS = ("id", "last_used", "backend", "status", "working_dir", "backend_session_id",
                "api_key_id")
_ID, _LAST_USED, _BACKEND, _STATUS, _WORKING_DIR, _BACKEND_SESSION_ID, _API_KEY_ID = range(7)

_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
_EPOCH = "1970-01-01T00:00:00.000000Z"
_CANONICAL_TIME_RE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z\Z")
_TIME_RE = re.compile(r"(\d{4})-(\d\d)-(\d\d)[Tt ](\d\d):(\d\d):(\d\d)(?:\.(\d+))?"
                      r"(?:([Zz])|([+-])(\d\d):?(\d\d))?\Z")
_AGE_RE = re.compile(r"\s*(\d+)\s*([smhdw]?)\s*\Z")
_AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class SessionError(Exception):
    """A session store failure; the message says what to do. ``public`` is the same message
    without the server's own file paths, for callers on another machine (HTTP, MCP)."""

    def __init__(self, message: str, public: str = "") -> None:
        super().__init__(message)
        self.public = public or message


class StoreUnavailable(SessionError):
    """The store's directory cannot be read or written (read-only or full disk, lost
    permissions, a file where a directory should be): no session can be used until the
    operator fixes it."""

    def __init__(self, directory: str, exc: OSError, action: str) -> None:
        reason = exc.strerror or type(exc).__name__   # str(exc) would repeat the path
        super().__init__(
            "the session store %s cannot be %s: %s; check that its disk is neither full nor "
            "read-only and that clinvk may write there (CLINVK_HOME sets where it is)"
            % (directory, action, reason),
            "the session store (the sessions directory under the server's CLINVK_HOME) cannot "
            "be %s: %s; the server's operator must fix it" % (action, reason))
        self.reason = reason


class SessionNotFound(SessionError, LookupError):
    def __init__(self, session_id: str) -> None:
        super().__init__("session %r not found; run `clinvk sessions list` to see session ids"
                         % (session_id,))
        self.session_id = session_id


class AmbiguousSession(SessionError, LookupError):
    def __init__(self, prefix: str, candidates: List[str]) -> None:
        shown = ", ".join(candidates[:10])
        if len(candidates) > 10:
            shown += " and %d more" % (len(candidates) - 10)
        super().__init__("session prefix %r is ambiguous: it matches %s; give more characters"
                         % (prefix, shown))
        self.prefix = prefix
        self.candidates = candidates


class SessionBusy(SessionError, TimeoutError):
    def __init__(self, session_id: str, timeout: float) -> None:
        super().__init__("session %s is in use by another clinvk run (waited %gs); try again "
                         "when it finishes" % (session_id, timeout))
        self.session_id = session_id


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


def now_rfc3339() -> str:
    """The current UTC time as RFC 3339 with microseconds: fixed width, so it sorts as text."""
    return datetime.datetime.now(datetime.timezone.utc).strftime(_TIME_FORMAT)


def canonical_time(value: Any) -> str:
    """``value`` (RFC 3339 with any offset and precision, e.g. the Go original's nanoseconds and
    local offset) as UTC in :func:`now_rfc3339`'s format; the epoch if it is not a timestamp."""
    if not isinstance(value, str):
        return _EPOCH
    if _CANONICAL_TIME_RE.match(value):
        return value
    m = _TIME_RE.match(value.strip())
    if m is None:
        return _EPOCH
    year, month, day, hour, minute, second = (int(g) for g in m.group(1, 2, 3, 4, 5, 6))
    micro = int((m.group(7) or "")[:6].ljust(6, "0"))
    offset = datetime.timedelta(0)
    if m.group(9):
        offset = datetime.timedelta(hours=int(m.group(10)), minutes=int(m.group(11)))
        if m.group(9) == "-":
            offset = -offset
    try:
        t = datetime.datetime(year, month, day, hour, minute, second, micro,
                              datetime.timezone(offset))
    except ValueError:
        return _EPOCH
    return t.astimezone(datetime.timezone.utc).strftime(_TIME_FORMAT)


def derive_title(prompt: str) -> str:
    """The first non-blank line of ``prompt``, whitespace collapsed, cut to 60 characters."""
    for line in prompt.splitlines():
        line = " ".join(line.split())
        if line:
            return line if len(line) <= TITLE_CHARS else line[:TITLE_CHARS - 3].rstrip() + "..."
    return ""


def parse_age(text: str) -> int:
    """Seconds in an age such as ``30d``, ``12h``, ``2w``, ``45m``, ``90s``; a plain number is
    days. Raises ValueError (saying what is accepted) for anything else or for zero."""
    m = _AGE_RE.match(text.lower()) if isinstance(text, str) else None
    if m is None:
        raise ValueError("invalid age %r: use a whole number with a unit s, m, h, d or w "
                         "(e.g. 30d, 12h, 2w); a plain number means days" % (text,))
    seconds = int(m.group(1)) * _AGE_UNITS[m.group(2) or "d"]
    if seconds <= 0:
        raise ValueError("invalid age %r: it must be greater than zero (e.g. 30d)" % (text,))
    return seconds


def new_session_id() -> str:
    """A fresh session id: 32 lowercase hex characters."""
    return os.urandom(16).hex()


def _check_id(value: Any) -> str:
    """``value`` lower-cased if it can be a session id; SessionNotFound otherwise, so that a
    path such as ``../x`` is never turned into a file name."""
    sid = value.strip().lower() if isinstance(value, str) else ""
    if not _ID_RE.match(sid):
        raise SessionNotFound(value)
    return sid


class Session:
    """One conversation with one backend. Timestamps are RFC 3339 UTC strings."""

    __slots__ = ("id", "backend", "created_at", "last_used", "working_dir", "backend_session_id",
                 "model", "initial_prompt", "title", "status", "turn_count", "token_usage",
                 "tags", "metadata", "last_error", "api_key_id")

    def __init__(self, id: str, backend: str, working_dir: str = "", created_at: str = "",
                 last_used: str = "", backend_session_id: str = "", model: str = "",
                 initial_prompt: str = "", title: str = "", status: str = "active",
                 turn_count: int = 0, token_usage: Optional[Mapping[str, int]] = None,
                 tags: Optional[Iterable[str]] = None, metadata: Optional[Mapping[str, Any]] = None,
                 last_error: str = "", api_key_id: str = "") -> None:
        self.id = id
        self.backend = backend
        self.created_at = created_at or now_rfc3339()
        self.last_used = last_used or self.created_at
        self.working_dir = working_dir
        self.backend_session_id = backend_session_id
        self.model = model
        self.initial_prompt = initial_prompt
        self.title = title or derive_title(initial_prompt)
        self.status = status
        self.turn_count = turn_count
        usage = token_usage or {}
        self.token_usage = {k: int(usage.get(k) or 0) for k in USAGE_KEYS}
        self.tags = list(dict.fromkeys(tags or ()))
        self.metadata = dict(metadata or {})
        self.last_error = last_error
        # The id (keys.key_id) of the API key whose request created it; "" = nobody's (the
        # command line, a server without keys, files older than this field).
        self.api_key_id = api_key_id

    def to_dict(self) -> Dict[str, Any]:
        """Every field, in file order; containers are copies."""
        return {
            "id": self.id, "backend": self.backend, "created_at": self.created_at,
            "last_used": self.last_used, "working_dir": self.working_dir,
            "backend_session_id": self.backend_session_id, "model": self.model,
            "initial_prompt": self.initial_prompt, "title": self.title, "status": self.status,
            "turn_count": self.turn_count, "token_usage": dict(self.token_usage),
            "tags": list(self.tags), "metadata": dict(self.metadata),
            "last_error": self.last_error, "api_key_id": self.api_key_id,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Session":
        """A session from a file's JSON object; missing keys get defaults, and the Go
        original's files (``error_message``, nanosecond local timestamps) are understood."""
        created_at = canonical_time(d.get("created_at"))
        return cls(
            id=str(d.get("id") or ""), backend=str(d.get("backend") or ""),
            working_dir=str(d.get("working_dir") or ""), created_at=created_at,
            last_used=canonical_time(d["last_used"]) if d.get("last_used") else created_at,
            backend_session_id=str(d.get("backend_session_id") or ""),
            model=str(d.get("model") or ""), initial_prompt=str(d.get("initial_prompt") or ""),
            title=str(d.get("title") or ""), status=str(d.get("status") or "active"),
            turn_count=int(d.get("turn_count") or 0), token_usage=d.get("token_usage"),
            tags=[str(t) for t in d.get("tags") or ()], metadata=d.get("metadata"),
            last_error=str(d.get("last_error") or d.get("error_message") or ""),
            api_key_id=str(d.get("api_key_id") or ""))

    def to_row(self) -> List[Any]:
        """The index row, to be encoded at once: the fields in ``_ROW_FIELDS`` order, the
        prompt shortened, empty tags and metadata as None (parsing null is cheaper)."""
        u = self.token_usage
        return [self.id, self.backend, self.created_at, self.last_used, self.working_dir,
                self.backend_session_id, self.model, self.initial_prompt[:INDEX_PROMPT_CHARS],
                self.title, self.status, self.turn_count, u["input_tokens"], u["output_tokens"],
                u["cached_tokens"], u["reasoning_tokens"], self.tags or None,
                self.metadata or None, self.last_error, self.api_key_id]

    @classmethod
    def from_row(cls, row: List[Any]) -> "Session":
        """A session from a freshly parsed index row written by :meth:`to_row` (it takes
        ownership of the row's containers; no conversions)."""
        s = cls.__new__(cls)
        (s.id, s.backend, s.created_at, s.last_used, s.working_dir, s.backend_session_id,
         s.model, s.initial_prompt, s.title, s.status, s.turn_count, inp, out, cached, reasoning,
         tags, metadata, s.last_error, s.api_key_id) = row
        s.tags = tags or []
        s.metadata = metadata or {}
        s.token_usage = {"input_tokens": inp, "output_tokens": out, "cached_tokens": cached,
                         "reasoning_tokens": reasoning}
        return s

    def head(self) -> Tuple[str, ...]:
        """The values of the index's columns (``_HEAD_FIELDS``)."""
        return (self.id, self.last_used, self.backend, self.status, self.working_dir,
                self.backend_session_id, self.api_key_id)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Session) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return "Session(%s, %s, %s)" % (self.id, self.backend, self.status)


class _PathLock:
    """An exclusive lock named by a file path: flock across processes, a thread lock within
    this one (flock alone does not exclude threads sharing the descriptor), reentrant for the
    thread holding it. The file is unlinked on release; a waiter that then gets the flock on the
    unlinked file notices (its inode is no longer at the path) and locks the path afresh."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._thread_lock = threading.RLock()
        self._depth = 0
        self._fd = -1

    def acquire(self, timeout: Optional[float]) -> bool:
        """Wait up to ``timeout`` seconds (None = forever, 0 = just try); True if acquired."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if timeout is None:
            self._thread_lock.acquire()
        elif not (self._thread_lock.acquire(timeout=timeout) if timeout > 0
                  else self._thread_lock.acquire(blocking=False)):
            return False
        try:
            if self._depth == 0:
                self._fd = self._flock(deadline)
                if self._fd < 0:
                    self._thread_lock.release()
                    return False
            self._depth += 1
            return True
        except BaseException:
            self._thread_lock.release()
            raise

    def release(self) -> None:
        self._depth -= 1
        if self._depth == 0:
            fd, self._fd = self._fd, -1
            try:
                os.unlink(self.path)
            except OSError:
                pass
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
        self._thread_lock.release()

    def _flock(self, deadline: Optional[float]) -> int:
        """A descriptor holding the flock of the file now at ``path``, or -1 at the deadline."""
        delay = 0.001
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                if deadline is None:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                else:
                    while True:
                        try:
                            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                            break
                        except BlockingIOError:
                            left = deadline - time.monotonic()
                            if left <= 0:
                                os.close(fd)
                                return -1
                            time.sleep(min(delay, left))
                            delay = min(delay * 2, 0.05)
                held = os.fstat(fd)
                try:
                    current = os.stat(self.path)
                except FileNotFoundError:
                    current = None
                if current is not None and (current.st_dev, current.st_ino) == (
                        held.st_dev, held.st_ino):
                    return fd
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)


# One _PathLock per path in this process, shared by every store, so that a thread holding a
# session's lock through one SessionStore can re-enter it through another.
_path_locks = weakref.WeakValueDictionary()  # type: weakref.WeakValueDictionary[str, _PathLock]
_path_locks_guard = threading.Lock()


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while building tens of thousands of containers:
    the collections their allocation triggers find nothing to free and, measured, made a
    10,000-session listing about a third slower."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@contextlib.contextmanager
def _locked(path: str, timeout: Optional[float]) -> Iterator[bool]:
    """Hold the lock named by ``path`` for the block if it can be had within ``timeout``;
    yields whether it was acquired."""
    with _path_locks_guard:
        lock = _path_locks.get(path)
        if lock is None:
            lock = _path_locks[path] = _PathLock(path)
    acquired = lock.acquire(timeout)
    try:
        yield acquired
    finally:
        if acquired:
            lock.release()


class _DamagedIndex(Exception):
    """index.json parsed but a column or row in it is not what we write."""


class _Index:
    """One version of the index: sessions most recently used first, each with its columns
    (``_HEAD_FIELDS``) and its row as JSON text, plus the ids of unreadable session files.

    Session i's row is ``text[base + offsets[i]:base + offsets[i + 1] - 2]`` (rows are
    separated by two bytes, ",\n"); ``text`` is index.json's content as read, or just the rows
    for an index built in memory. Columns other than the ids are parsed from the file's text on
    first use. Shared between threads: nothing changes after construction but that cache of
    parsed columns."""

    __slots__ = ("stamp", "broken", "text", "base", "offsets", "_columns", "_raw_columns")

    def __init__(self, stamp: str, broken: frozenset, columns: Dict[str, List[str]],
                 text: bytes, base: int, offsets: List[int],
                 raw_columns: Optional[Dict[str, bytes]] = None) -> None:
        self.stamp = stamp
        self.broken = broken
        self.text = text
        self.base = base
        self.offsets = offsets
        self._columns = columns
        self._raw_columns = raw_columns or {}

    @classmethod
    def build(cls, heads: List[Tuple[str, ...]], rows: List[bytes],
              broken: Iterable[str]) -> "_Index":
        """An index of these sessions (heads and rows in the same, final order)."""
        columns = {name: [h[i] for h in heads] for i, name in enumerate(_HEAD_FIELDS)}
        offsets = [0]
        offsets.extend(itertools.accumulate(len(row) + 2 for row in rows))
        return cls("", frozenset(broken), columns, b",\n".join(rows), 0, offsets)

    @classmethod
    def parse(cls, stamp: str, text: bytes) -> Optional["_Index"]:
        """The index in index.json's bytes, or None if they are not in our format."""
        # Find the first lines without splitting (copying) the rows that follow them.
        ends = []  # type: List[int]
        for _ in range(len(_HEAD_FIELDS) + 3):
            ends.append(text.find(b"\n", ends[-1] + 1 if ends else 0))
            if ends[-1] < 0:
                return None
        lines = [text[a + 1:b] for a, b in zip([-1] + ends, ends)]
        base = ends[-1] + 1
        if lines[-1] != _ROWS_OPEN_LINE or not text.endswith(b"]}"):
            return None
        try:
            header = json.loads(lines[0][:-1] + b"}")
            ids = json.loads(b"{" + lines[1][:-1] + b"}").get("id")
            offsets = json.loads(b"{" + lines[-2][:-1] + b"}").get("offsets")
        except ValueError:
            return None
        # The rows end with "\n]}" where a ",\n" would follow another row.
        rows_length = len(text) - base - 1 if len(text) - base > 2 else 0
        if not (isinstance(header, dict) and header.get("version") == _INDEX_VERSION
                and header.get("fields") == list(_ROW_FIELDS) and _strings(header.get("broken"))
                and _strings(ids) and type(offsets) is list and len(offsets) == len(ids) + 1
                and set(map(type, offsets)) == {int}
                and offsets[0] == 0 and offsets[-1] == rows_length):
            return None
        raw_columns = {}
        for name, line in zip(_HEAD_FIELDS[1:], lines[2:-2]):
            prefix = b'"' + name.encode("ascii") + b'":'
            if not (line.startswith(prefix) and line.endswith(b",")):
                return None
            raw_columns[name] = line[len(prefix):-1]
        return cls(stamp, frozenset(header["broken"]), {"id": ids}, text, base, offsets,
                   raw_columns)

    def stamped(self) -> "_Index":
        """The same index with a new stamp, for writing."""
        return _Index(os.urandom(16).hex(), self.broken, self._columns, self.text, self.base,
                      self.offsets, self._raw_columns)

    def _rows(self, start: int, stop: int) -> bytes:
        """The rows of sessions start..stop-1, comma-separated."""
        return self.text[self.base + self.offsets[start]:self.base + self.offsets[stop] - 2]

    def to_bytes(self) -> bytes:
        """index.json's content: one JSON document, laid out in lines (module docstring)."""
        header = {"stamp": self.stamp, "version": _INDEX_VERSION, "fields": _ROW_FIELDS,
                  "broken": sorted(self.broken)}
        lines = [_json_bytes(header)[:-1] + b","]
        for name in _HEAD_FIELDS + ("offsets",):
            value = self.offsets if name == "offsets" else self.column(name)
            lines.append(_json_bytes({name: value})[1:-1] + b",")
        lines.append(_ROWS_OPEN_LINE)
        lines.append(self._rows(0, len(self)) + b"\n]}" if len(self) else b"]}")
        return b"\n".join(lines)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def column(self, name: str) -> List[str]:
        """One column's values, in session order."""
        values = self._columns.get(name)
        if values is None:
            try:
                with _gc_paused():
                    values = json.loads(self._raw_columns[name])
            except ValueError:
                values = None
            if not _strings(values) or len(values) != len(self):
                raise _DamagedIndex("index column %r is damaged" % name)
            self._columns[name] = values
        return values

    def ids(self) -> set:
        return set(self.column("id"))

    def sessions(self, positions: Sequence[int]) -> List[Session]:
        """The sessions at these positions, parsed from their rows."""
        if not positions:
            return []
        if isinstance(positions, range) and positions.step == 1:  # a page: one slice
            text = self._rows(positions.start, positions.stop)
        else:
            text = b",".join([self._rows(i, i + 1) for i in positions])
        try:
            with _gc_paused():
                return [Session.from_row(row) for row in json.loads(b"[" + text + b"]")]
        except (ValueError, TypeError):
            raise _DamagedIndex("a row of the index is damaged") from None

    def changed(self, sessions: Mapping[str, Optional[Session]],
                broken: Iterable[str] = ()) -> "_Index":
        """A copy with these sessions replaced (None: removed) and these ids unreadable."""
        with _gc_paused():
            heads = zip(*[self.column(name) for name in _HEAD_FIELDS])
            kept = [(head, self._rows(i, i + 1)) for i, head in enumerate(heads)
                    if head[_ID] not in sessions]
            kept.extend((s.head(), _json_bytes(s.to_row())) for s in sessions.values()
                        if s is not None)
            kept.sort(key=lambda pair: (pair[0][_LAST_USED], pair[0][_ID]), reverse=True)
            return _Index.build([pair[0] for pair in kept], [pair[1] for pair in kept],
                                self.broken.difference(sessions).union(broken))


_NO_INDEX = _Index("", frozenset(), {name: [] for name in _HEAD_FIELDS}, b"", 0, [0])


def _json_bytes(value: Any) -> bytes:
    # Compact JSON never holds a raw newline (strings escape it), so a value is one line.
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _strings(value: Any) -> bool:
    """True if ``value`` is a list of strings."""
    return type(value) is list and (not value or set(map(type, value)) == {str})


class _Listing:
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

    def agrees_with(self, index: _Index) -> bool:
        """True if the index knows exactly the session files present, ids being written aside."""
        known = index.ids() | index.broken
        if not self.pending:
            return known == self.files
        return known - self.pending == self.files - self.pending


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _write_probe(directory: str) -> None:
    """Create, write and remove a small file in ``directory``; OSError if the disk refuses.
    It is named like an index temp file, so one left behind by a crash is swept."""
    path = os.path.join(directory, ".index.json.tmp-" + os.urandom(8).hex())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, b"clinvk write probe\n" * 64)   # data, not just a name: a full disk
    finally:                                         # still has inodes for empty files
        os.close(fd)
        _unlink_quietly(path)


def _write_file(path: str, data: bytes, temp_prefix: str) -> None:
    """Replace ``path`` with ``data`` atomically (temp file in the same directory, fsync,
    rename). The caller fsyncs the directory."""
    temp = os.path.join(os.path.dirname(path), temp_prefix + os.urandom(8).hex())
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    except BaseException:
        _unlink_quietly(temp)
        raise


class SessionStore:
    """Sessions under ``<home>/sessions/``; safe for many threads and processes at once.

    Nothing is created on disk until the first write."""

    def __init__(self, home: str) -> None:
        self.home = os.path.abspath(home)
        self.dir = os.path.join(self.home, "sessions")
        self._locks_dir = os.path.join(self.dir, "locks")
        self._index_path = os.path.join(self.dir, "index.json")
        self._index_lock = os.path.join(self._locks_dir, "index.lock")
        self._cache = _NO_INDEX  # the index as last read or written by this store

    # ---- public API ------------------------------------------------------------------------

    def create(self, backend: str, working_dir: str, model: str = "", initial_prompt: str = "",
               tags: Optional[Iterable[str]] = None, metadata: Optional[Mapping[str, Any]] = None,
               backend_session_id: str = "", access: Optional[Access] = None) -> Session:
        """A new active session, saved, recorded as created by ``access.key_id``;
        ``working_dir`` must be absolute. StoreUnavailable if it cannot be written."""
        if not backend:
            raise ValueError("a session needs a backend name (claude, codex or gemini)")
        if not os.path.isabs(working_dir):
            raise ValueError("working_dir must be an absolute path: got %r" % (working_dir,))
        session = Session(new_session_id(), backend, os.path.normpath(working_dir),
                          backend_session_id=backend_session_id, model=model,
                          initial_prompt=initial_prompt, tags=tags, metadata=metadata,
                          api_key_id=(access or EVERYTHING).key_id)
        with self._holding(session.id, None):
            self._commit({session.id: session})
        return session

    def get(self, session_id: str) -> Session:
        """The session with this exact id; SessionNotFound if there is none."""
        return self._read(_check_id(session_id))

    def resolve(self, id_or_prefix: str, access: Optional[Access] = None) -> Session:
        """The session with this id, or the only one whose id starts with it, among those
        ``access`` may use (default: all); SessionNotFound or AmbiguousSession otherwise, and
        SessionError if its file is damaged."""
        return self._read(self._match(id_or_prefix, access or EVERYTHING))

    @contextlib.contextmanager
    def lock(self, session_id: str, timeout: Optional[float] = None) -> Iterator[Session]:
        """Hold the session's lock for the block (e.g. a whole resume) and yield the session as
        read under it. Other threads and processes wait; this thread may still call update()
        and record_turn(). SessionBusy after ``timeout`` seconds (None = wait forever)."""
        sid = _check_id(session_id)
        with self._holding(sid, timeout):
            yield self._read(sid)

    def update(self, session_id: str, fn: Callable[[Session], Any]) -> Session:
        """Read the session, let ``fn`` change it, save it, all under the session's lock;
        returns the saved session. If ``fn`` raises, nothing is saved."""
        sid = _check_id(session_id)
        with self._holding(sid, None):
            session = self._read(sid)
            fn(session)
            if session.id != sid:
                raise ValueError("a session's id cannot change (%s -> %s)" % (sid, session.id))
            if session.status not in STATUSES:
                raise ValueError("session status must be one of %s: got %r"
                                 % (", ".join(STATUSES), session.status))
            self._commit({sid: session})
        return session

    def record_turn(self, session_id: str, backend_session_id: str,
                    usage: Optional[Mapping[str, Any]], error: str = "",
                    model: str = "") -> Session:
        """Count one finished run: last_used = now, turn_count + 1, usage added (the keys of
        events.Usage.to_dict()), status ``error`` with last_error = ``error`` if it failed,
        else ``active`` with last_error cleared. Empty ids and models keep the stored ones."""
        def apply(s: Session) -> None:
            s.last_used = now_rfc3339()
            s.turn_count += 1
            for key in USAGE_KEYS:
                s.token_usage[key] += int((usage or {}).get(key) or 0)
            if backend_session_id:
                s.backend_session_id = backend_session_id
            if model:
                s.model = model
            s.status = "error" if error else "active"
            s.last_error = error
        return self.update(session_id, apply)

    def delete(self, id_or_prefix: str, access: Optional[Access] = None,
               timeout: Optional[float] = None) -> str:
        """Remove the session with this id (or the only one whose id starts with it) among
        those ``access`` may use, and return its id. A damaged file is removed too (only by
        an ``access`` to every session: whose it was cannot be read). SessionNotFound if there
        is none; SessionBusy if a run holds it for longer than ``timeout`` seconds (None =
        wait for the run to finish)."""
        sid = self._match(id_or_prefix, access or EVERYTHING)
        with self._holding(sid, timeout):
            if not os.path.exists(self._file(sid)):
                raise SessionNotFound(id_or_prefix)
            self._commit({sid: None})
        return sid

    def list(self, backend: Optional[str] = None, status: Optional[str] = None,
             limit: Optional[int] = None, offset: int = 0,
             access: Optional[Access] = None) -> Tuple[List[Session], int]:
        """Sessions matching the filters that ``access`` may use (default: all), most
        recently used first, and how many matched before ``limit``/``offset``. Built from the
        index: ``initial_prompt`` is cut to INDEX_PROMPT_CHARS characters (get() has the full
        text)."""
        if offset < 0 or (limit is not None and limit < 0):
            raise ValueError("limit and offset must not be negative: got limit=%r, offset=%r"
                             % (limit, offset))
        access = access or EVERYTHING

        def page(index: _Index) -> Tuple[List[Session], int]:
            matching = range(len(index))  # type: Sequence[int]
            if not access.everything:
                matching = [i for i, owner in zip(matching, index.column("api_key_id"))
                            if access.allows(owner)]
            if backend:
                matching = [i for i, b in zip(matching, index.column("backend")) if b == backend]
            if status:
                states = index.column("status")
                matching = [i for i in matching if states[i] == status]
            end = len(matching) if limit is None else min(offset + limit, len(matching))
            return index.sessions(matching[offset:end]), len(matching)

        return self._query(page)

    def last(self, backend: Optional[str] = None,
             working_dir: Optional[str] = None) -> Optional[Session]:
        """The most recently used session that can be resumed (it has a backend session id),
        optionally of this backend and started in this working directory; None if none."""
        wanted = os.path.normpath(working_dir) if working_dir else None

        def resumable(index: _Index) -> List[str]:
            heads = zip(*[index.column(name) for name in _HEAD_FIELDS])
            return [h[_ID] for h in heads
                    if h[_BACKEND_SESSION_ID] and (not backend or h[_BACKEND] == backend)
                    and (wanted is None or h[_WORKING_DIR] == wanted)]

        for sid in self._query(resumable):
            try:
                return self._read(sid)
            except SessionError:  # deleted or damaged since the listing: try the next one
                continue
        return None

    def clean(self, older_than_seconds: float) -> List[str]:
        """Delete sessions last used more than ``older_than_seconds`` ago and return their ids.
        Sessions locked by a running resume are kept. Raises ValueError for an age <= 0 (this
        never means "delete everything")."""
        if not older_than_seconds > 0:
            raise ValueError("clean needs an age greater than zero: got %r"
                             % (older_than_seconds,))
        cutoff = (datetime.datetime.now(datetime.timezone.utc)
                  - datetime.timedelta(seconds=older_than_seconds)).strftime(_TIME_FORMAT)
        with self._store_errors("written"):
            self._ensure_dirs()
        candidates = self._query(lambda index: [
            sid for sid, used in zip(index.column("id"), index.column("last_used"))
            if used < cutoff])
        deleted = []  # type: List[str]
        for start in range(0, len(candidates), CLEAN_BATCH):
            with contextlib.ExitStack() as held, self._store_errors("written"):
                doomed = {}  # type: Dict[str, Optional[Session]]
                for sid in candidates[start:start + CLEAN_BATCH]:
                    if not held.enter_context(_locked(self._session_lock(sid), 0)):
                        continue
                    try:
                        if self._read(sid).last_used < cutoff:  # it may have been used since
                            doomed[sid] = None
                    except SessionError:
                        continue
                if doomed:
                    self._commit(doomed)
                    deleted.extend(doomed)
        return deleted

    def count(self) -> int:
        """How many readable sessions there are."""
        return self._query(len)

    def check_writable(self) -> None:
        """StoreUnavailable unless new files can be written in the store's directories right
        now. Trying is the only test that holds for every cause (a read-only mount, a full
        disk, lost permissions, a file in a directory's place) and for root, whom permission
        bits do not stop."""
        with self._store_errors("written"):
            self._ensure_dirs()
            _write_probe(self.dir)
            with _locked(os.path.join(self._locks_dir, "probe.lock"), 0):
                pass   # creating the lock file is the test; another prober holding it is fine

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

    # ---- lookups and locks -----------------------------------------------------------------

    def _match(self, id_or_prefix: str, access: Access) -> str:
        """The id of the one session ``id_or_prefix`` names among those ``access`` may use:
        the exact id first, else a unique prefix. Damaged files count only for an access to
        every session (whose they are cannot be read). SessionNotFound or AmbiguousSession
        otherwise; the sessions of others never make a prefix ambiguous."""
        sid = _check_id(id_or_prefix)
        if self._visible(sid, access):
            return sid

        def candidates(index: _Index) -> List[str]:
            ids = index.column("id")
            if access.everything:
                return [i for i in itertools.chain(ids, index.broken) if i.startswith(sid)]
            return [i for i, owner in zip(ids, index.column("api_key_id"))
                    if i.startswith(sid) and access.allows(owner)]

        matches = sorted(set(self._query(candidates)))
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
            return os.path.exists(self._file(sid))
        try:
            return access.allows(self._read(sid).api_key_id)
        except SessionError:
            return False

    @contextlib.contextmanager
    def _holding(self, sid: str, timeout: Optional[float]) -> Iterator[None]:
        """Hold session ``sid``'s lock for the block: StoreUnavailable if its lock file cannot
        be made, SessionBusy after ``timeout`` seconds (None = wait as long as it takes)."""
        with contextlib.ExitStack() as held:
            with self._store_errors("written"):
                self._ensure_dirs()
                acquired = held.enter_context(_locked(self._session_lock(sid), timeout))
            if not acquired:
                raise SessionBusy(sid, timeout or 0)
            yield

    @contextlib.contextmanager
    def _store_errors(self, action: str) -> Iterator[None]:
        """The block's OSErrors (the disk refused) as StoreUnavailable; ``action`` is "read"
        or "written"."""
        try:
            yield
        except SessionError:
            raise               # SessionBusy is a TimeoutError, hence an OSError: keep it
        except OSError as exc:
            raise StoreUnavailable(self.dir, exc, action) from None

    # ---- session files ---------------------------------------------------------------------

    def _file(self, sid: str) -> str:
        return os.path.join(self.dir, sid + ".json")

    def _marker(self, sid: str) -> str:
        return os.path.join(self.dir, "." + sid + ".pending")

    def _session_lock(self, sid: str) -> str:
        return os.path.join(self._locks_dir, sid + ".lock")

    def _ensure_dirs(self) -> None:
        # makedirs() would give the intermediate directories the umask's mode, not 0700.
        for path in (self.home, self.dir, self._locks_dir):
            try:
                os.mkdir(path, 0o700)
            except FileExistsError:
                pass

    def _read(self, sid: str) -> Session:
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
            data = json.loads(raw.decode("utf-8"))
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            session = Session.from_dict(data)
        except (ValueError, TypeError, AttributeError) as e:
            raise SessionError("session %s: its file %s is damaged (%s); fix or delete that "
                               "file" % (sid, path, e),
                               "session %s is damaged (%s); delete it to remove it"
                               % (sid, e)) from None
        session.id = sid  # the file name is what every lookup uses
        return session

    def _read_if_readable(self, sid: str) -> Optional[Session]:
        try:
            return self._read(sid)
        except (SessionError, OSError):
            return None

    def _commit(self, changes: Mapping[str, Optional[Session]]) -> None:
        """Save (or, for None, delete) sessions whose locks this thread holds, then the index,
        with each id's marker present in between (see the module docstring).
        StoreUnavailable if the disk refuses."""
        with self._store_errors("written"):
            for sid in changes:
                os.close(os.open(self._marker(sid),
                                 os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
            for sid, session in changes.items():
                if session is None:
                    _unlink_quietly(self._file(sid))
                else:
                    data = json.dumps(session.to_dict(), indent=2, ensure_ascii=False) + "\n"
                    _write_file(self._file(sid), data.encode("utf-8"), "." + sid + ".json.tmp-")
            _fsync_dir(self.dir)  # makes the markers and the renames durable together
        try:
            self._update_index(changes)
        except OSError:
            # The session files are saved; the markers stay, so readers take these sessions
            # from their files and the next reader holding their locks repairs the index.
            return
        for sid in changes:
            _unlink_quietly(self._marker(sid))

    # ---- index -----------------------------------------------------------------------------

    def _snapshot(self, rebuild: bool = False) -> _Index:
        """Every readable session as the files say now (index rows, plus the files of sessions
        being written); ``rebuild`` forces a rebuild from the files."""
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return _NO_INDEX
        listing = _Listing(names)
        if listing.pending or listing.session_temps or listing.index_temps:
            self._sweep(listing)
        index = None if rebuild else self._read_index()
        if index is None or not listing.agrees_with(index):
            index = self._rebuild(force=rebuild)
        if listing.pending:
            index = index.changed({sid: self._read_if_readable(sid) for sid in listing.pending})
        return index

    def _query(self, answer: Callable[[_Index], Any]) -> Any:
        """``answer`` applied to the current index; if that finds part of index.json damaged,
        to an index rebuilt from the files. StoreUnavailable if the store cannot be read."""
        with self._store_errors("read"):
            try:
                return answer(self._snapshot())
            except _DamagedIndex:
                return answer(self._snapshot(rebuild=True))

    def _read_index(self) -> Optional[_Index]:
        """The index on disk (from memory if unchanged since last read), or None if it is
        missing or not in our format."""
        try:
            f = open(self._index_path, "rb", buffering=0)  # unbuffered: one read of a big file
        except FileNotFoundError:
            return None
        with f:
            m = _INDEX_STAMP_RE.match(f.read(64))
            if m is None:
                return None
            stamp = m.group(1).decode("ascii")
            if self._cache.stamp == stamp:
                return self._cache
            f.seek(0)
            index = _Index.parse(stamp, f.readall())
        if index is not None:
            self._cache = index
        return index

    def _write_index(self, index: _Index) -> _Index:
        """Replace index.json with ``index`` (the caller holds the index lock); returns it
        with its new stamp."""
        index = index.stamped()
        _write_file(self._index_path, index.to_bytes(), ".index.json.tmp-")
        _fsync_dir(self.dir)
        self._cache = index
        return index

    def _update_index(self, changes: Mapping[str, Optional[Session]]) -> None:
        """Set (None: drop) these sessions' index entries, re-reading the index under its lock
        first so that entries written meanwhile by other processes are kept."""
        with _locked(self._index_lock, None):
            index = self._read_index()
            if index is None:
                index = self._scan(self._list().files)
            try:
                index = index.changed(changes)
            except _DamagedIndex:
                index = self._scan(self._list().files)
            self._write_index(index)

    def _list(self) -> _Listing:
        try:
            return _Listing(os.listdir(self.dir))
        except FileNotFoundError:
            return _Listing([])

    def _scan(self, sids: Iterable[str]) -> _Index:
        """An index read from the session files themselves."""
        sessions = {}  # type: Dict[str, Optional[Session]]
        broken = []
        for sid in sids:
            try:
                sessions[sid] = self._read(sid)
            except SessionNotFound:
                continue
            except (SessionError, OSError):
                broken.append(sid)
        return _NO_INDEX.changed(sessions, broken)

    def _rebuild(self, force: bool = False) -> _Index:
        """A fresh index from the files, saved, unless another process saved one that agrees
        with the files meanwhile (and ``force`` is false)."""
        try:
            self._ensure_dirs()
            with _locked(self._index_lock, None):
                listing = self._list()
                index = None if force else self._read_index()
                if index is not None and listing.agrees_with(index):
                    return index
                return self._write_index(self._scan(listing.files))
        except OSError:
            # A store we cannot write to (read-only mount, another user's home) still lists.
            return self._scan(self._list().files)

    def _sweep(self, listing: _Listing) -> None:
        """Clean up after writers that died: for a marker or temp file whose lock is free
        (so no writer is at work on it), repair the index entry from the file and remove
        the leftovers."""
        try:
            self._ensure_dirs()
            for sid in listing.pending:
                with _locked(self._session_lock(sid), 0) as free:
                    if free and os.path.exists(self._marker(sid)):
                        try:
                            session = self._read(sid)  # type: Optional[Session]
                        except SessionNotFound:
                            session = None
                        except SessionError:
                            continue  # a damaged file: readers keep skipping it
                        self._update_index({sid: session})
                        _unlink_quietly(self._marker(sid))
            for name, sid in listing.session_temps:
                with _locked(self._session_lock(sid), 0) as free:
                    if free:
                        _unlink_quietly(os.path.join(self.dir, name))
            if listing.index_temps:
                with _locked(self._index_lock, 0) as free:
                    if free:
                        for name in listing.index_temps:
                            _unlink_quietly(os.path.join(self.dir, name))
        except OSError:
            pass  # cannot write here: leftovers are harmless, readers already ignore them

