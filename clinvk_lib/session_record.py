"""One session: its record, its file's JSON, its row in the index, its id and timestamps, and
the errors every part of the session store raises.

A session file ``<id>.json`` holds :meth:`Session.to_dict` as 2-space-indented JSON. Ids are
32 lowercase hex characters (128 random bits, the Go original's format); lookups also accept
any id of 1-64 characters from ``[0-9a-f-]`` so older files keep working. Timestamps are RFC
3339 UTC with microseconds (fixed width, so they sort as text); files of the Go original
(nanoseconds, local offsets, ``error_message``) are read too.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

from .events import USAGE_KEYS
from .textutil import cut, rfc3339

# cancelled: the last run was interrupted (Ctrl-C, SIGTERM, a client gone); a session whose
# first run was interrupted before the backend reported its own id has nothing to resume.
STATUSES = ("active", "completed", "error", "paused", "cancelled")
# A session keeps the text of its last reply (``sessions show``), cut to this many bytes of
# UTF-8 so that a huge answer cannot grow every session file.
LAST_REPLY_BYTES = 64 * 1024
# Sessions a listing shows, newest first, unless the caller asks for another limit (0 = all).
LIST_LIMIT = 100
TITLE_CHARS = 60
# list() reads the index only, so its sessions carry the initial prompt cut to this length;
# get() has the full text. Keeps a 10,000-session index a few megabytes.
INDEX_PROMPT_CHARS = 100

ID_PATTERN = r"[0-9a-f][0-9a-f-]{0,63}"
_ID_RE = re.compile(ID_PATTERN + r"\Z")

# An index row: these fields in this order (Session.to_row).
ROW_FIELDS = ("id", "backend", "created_at", "last_used", "working_dir", "backend_session_id",
              "model", "initial_prompt", "title", "status", "turn_count") + USAGE_KEYS + (
              "tags", "metadata", "last_error", "api_key_id")
# The index's columns, the fields lookups filter on; a session's "head" is their values.
HEAD_FIELDS = ("id", "last_used", "backend", "status", "working_dir", "backend_session_id",
               "api_key_id")

_TIME_DIGITS = 6
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


class SessionElsewhere(SessionError):
    """The session's CLI transcript is on another machine (a shared store: its last turn ran
    on worker ``worker``), so this one cannot continue it."""

    def __init__(self, session_id: str, worker: str, here: str) -> None:
        super().__init__("session %s cannot be continued on this machine (worker %r): its CLI "
                         "transcript is on worker %r. Continue it through a job (POST "
                         "/api/v1/jobs) or an API node (server.role: api), which send it to "
                         "that worker, or set server.shared_cli_homes: true if every machine "
                         "sees the same CLI homes" % (session_id, here, worker))
        self.session_id = session_id
        self.worker = worker


class SessionBusy(SessionError, TimeoutError):
    def __init__(self, session_id: str, timeout: float) -> None:
        super().__init__("session %s is in use by another clinvk run (waited %gs); try again "
                         "when it finishes" % (session_id, timeout))
        self.session_id = session_id


def now_rfc3339() -> str:
    """The current UTC time in the format of every session timestamp."""
    return rfc3339(digits=_TIME_DIGITS)


def seconds_ago_rfc3339(seconds: float) -> str:
    """The UTC time ``seconds`` ago in the format of every session timestamp."""
    import datetime  # lazy: start-up (a run never needs it)
    now = datetime.datetime.now(datetime.timezone.utc)
    return rfc3339(now - datetime.timedelta(seconds=seconds), _TIME_DIGITS)


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
    import datetime  # lazy: start-up (files clinvk wrote are canonical already)
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
    return rfc3339(t, _TIME_DIGITS)


def derive_title(prompt: str) -> str:
    """The first non-blank line of ``prompt``, whitespace collapsed, cut to 60 characters."""
    for line in prompt.splitlines():
        if line.strip():
            return cut(line, TITLE_CHARS, "...")
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


def bounded_reply(text: str) -> str:
    """``text`` cut to its first LAST_REPLY_BYTES bytes of UTF-8 (never inside a character),
    with a last line saying how much was left out."""
    data = text.encode("utf-8")
    if len(data) <= LAST_REPLY_BYTES:
        return text
    kept = data[:LAST_REPLY_BYTES].decode("utf-8", "ignore")
    return kept + "\n[... cut: the reply had %d bytes; clinvk keeps the first %d]" % (
        len(data), LAST_REPLY_BYTES)


def new_session_id() -> str:
    """A fresh session id: 32 lowercase hex characters."""
    return os.urandom(16).hex()


def check_id(value: Any) -> str:
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
                 "tags", "metadata", "last_error", "api_key_id", "last_reply")

    def __init__(self, id: str, backend: str, working_dir: str = "", created_at: str = "",
                 last_used: str = "", backend_session_id: str = "", model: str = "",
                 initial_prompt: str = "", title: str = "", status: str = "active",
                 turn_count: int = 0, token_usage: Optional[Mapping[str, int]] = None,
                 tags: Optional[Iterable[str]] = None, metadata: Optional[Mapping[str, Any]] = None,
                 last_error: str = "", api_key_id: str = "", last_reply: str = "") -> None:
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
        # The text of the last reply (bounded_reply); "" in listings, which read the index.
        self.last_reply = last_reply

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
            "last_reply": self.last_reply,
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
            api_key_id=str(d.get("api_key_id") or ""),
            last_reply=str(d.get("last_reply") or ""))

    def to_row(self) -> List[Any]:
        """The index row, to be encoded at once: the fields in ``ROW_FIELDS`` order, the
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
        s.last_reply = ""                   # not in the index: get() reads it from the file
        s.token_usage = {"input_tokens": inp, "output_tokens": out, "cached_tokens": cached,
                         "reasoning_tokens": reasoning}
        return s

    def head(self) -> Tuple[str, ...]:
        """The values of the index's columns (``HEAD_FIELDS``)."""
        return (self.id, self.last_used, self.backend, self.status, self.working_dir,
                self.backend_session_id, self.api_key_id)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Session) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return "Session(%s, %s, %s)" % (self.id, self.backend, self.status)


def decode_record(raw: bytes) -> Tuple["Session", Dict[str, Any]]:
    """The session a stored record holds, and the record's JSON object (a store may keep
    fields of its own beside the session's). ValueError saying what is wrong when the record
    is damaged: not UTF-8 JSON, not an object, or fields of the wrong type."""
    try:
        data = json.loads(raw.decode("utf-8"))
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        return Session.from_dict(data), data
    except (TypeError, AttributeError) as exc:
        raise ValueError(str(exc)) from None
