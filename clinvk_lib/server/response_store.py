"""The stored responses of the OpenAI Responses API (``store: true``): what ``GET``,
``DELETE``, ``input_items`` and ``previous_response_id`` read.

One JSON file per response, ``<home>/responses/<id>.json`` (directory 0700, files 0600, next to
``<home>/sessions/``), each write atomic (``fsutil.write_atomically``: a reader sees the old file
or the new, never half), so several server processes on one host share them. Each record is
scoped to the API key that created it, as sessions are (``sessions.Access``): another key gets
"not found", never "forbidden". The store is bounded: at most ``max_stored`` files, and none
left unwritten for more than ``max_age`` seconds; the oldest go first (the count is checked
at every new response, the age at most once a minute).
"""

from __future__ import annotations

import os
import re
import threading
import time
from typing import Any, Dict, List, Optional, Tuple

from .. import jsontext
from ..fsutil import read_json_record, unlink_quietly, write_atomically
from ..sessions import Access
from . import errors

# resp_ + 24 lowercase hex digits (compat.new_id): anything else names no file, so a path
# parameter can never reach outside the directory.
_ID = re.compile(r"resp_[0-9a-f]{24}\Z")
_FILE = re.compile(r"(resp_[0-9a-f]{24})\.json\Z")
_TEMP = re.compile(r"\.resp_[0-9a-f]{24}\.json\.tmp-[0-9a-f]+\Z")
AGE_SWEEP_SECS = 60.0


class ResponseStoreError(Exception):
    """The responses directory cannot be read or written; the message says which and why,
    without the server's paths."""


class StoredResponse:
    """One stored response: ``response`` (the object the API returns), ``input_items`` (its
    input as listed by ``input_items``, oldest first), ``owner`` (the API key id that created
    it; "" = nobody's), ``session_id`` (the clinvk session a ``previous_response_id`` continues;
    "" = none), ``backend``, and ``job_id``, the durable job that runs a background response
    ("" for any other)."""

    __slots__ = ("response", "input_items", "owner", "session_id", "backend", "job_id")

    def __init__(self, response: Dict[str, Any], input_items: List[Dict[str, Any]],
                 owner: str = "", session_id: str = "", backend: str = "",
                 job_id: str = "") -> None:
        self.response = response
        self.input_items = input_items
        self.owner = owner
        self.session_id = session_id
        self.backend = backend
        self.job_id = job_id

    @property
    def id(self) -> str:
        return self.response["id"]

    @property
    def status(self) -> str:
        return self.response["status"]

    def to_dict(self) -> Dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "StoredResponse":
        return cls(**{name: data[name] for name in cls.__slots__ if name in data})


def is_response_id(text: str) -> bool:
    return bool(_ID.match(text))


class ResponseStore:
    """Responses under ``<home>/responses/``; safe for many threads and processes at once.
    Nothing is created on disk until the first write."""

    def __init__(self, home: str, max_stored: int, max_age_secs: float = 0) -> None:
        self.dir = os.path.join(home, "responses")
        self.max_stored = max_stored
        self.max_age = max_age_secs
        # In this process, an update of a running response and its deletion never interleave.
        self._lock = threading.Lock()
        self._last_age_sweep = 0.0

    def _path(self, response_id: str) -> str:
        return os.path.join(self.dir, response_id + ".json")

    def add(self, record: StoredResponse) -> None:
        """Save a new response, then remove the oldest beyond the bounds."""
        with self._lock:
            self._write(record)
        self._prune()

    def update(self, record: StoredResponse) -> bool:
        """Save a response again (a background run's progress), unless it was deleted
        meanwhile; False then."""
        with self._lock:
            if not os.path.exists(self._path(record.id)):
                return False
            self._write(record)
            return True

    def get(self, response_id: str, access: Access) -> Optional[StoredResponse]:
        """The response, if it exists and ``access`` allows its owner; None otherwise."""
        if not is_response_id(response_id):
            return None
        try:
            data = read_json_record(self._path(response_id))
        except OSError as exc:
            raise _unavailable(exc, "read")
        record = StoredResponse.from_dict(data) if data is not None else None
        return record if record is not None and access.allows(record.owner) else None

    def delete(self, response_id: str) -> None:
        with self._lock:
            unlink_quietly(self._path(response_id))

    def _write(self, record: StoredResponse) -> None:
        data = jsontext.dumps_compact(record.to_dict()).encode("utf-8")
        try:
            os.makedirs(self.dir, mode=0o700, exist_ok=True)
            # No directory fsync: a response lost to a power cut is a 404 later, not damage.
            write_atomically(self._path(record.id), data, sync_dir=False)
        except OSError as exc:
            raise _unavailable(exc, "written")

    def _prune(self) -> None:
        """Remove the responses over the count bound, oldest first, and (at most once per
        AGE_SWEEP_SECS) those older than the age bound and stray temp files."""
        try:
            names = os.listdir(self.dir)
        except OSError:
            return
        now = time.time()
        sweep = now - self._last_age_sweep >= AGE_SWEEP_SECS
        stored = [n for n in names if _FILE.match(n)]
        if len(stored) <= self.max_stored and not sweep:
            return
        entries = _oldest_first(self.dir, stored)
        doomed = [n for mtime, n in entries if self.max_age and now - mtime > self.max_age]
        gone = set(doomed)
        alive = [n for _, n in entries if n not in gone]
        doomed += alive[:max(0, len(alive) - self.max_stored)]
        if sweep:
            self._last_age_sweep = now
            # A temp file is renamed within moments; one this old was left by a crash.
            doomed += [n for mtime, n in _oldest_first(self.dir, [t for t in names
                                                                   if _TEMP.match(t)])
                       if now - mtime > AGE_SWEEP_SECS]
        for name in doomed:
            unlink_quietly(os.path.join(self.dir, name))


def _oldest_first(directory: str, names: List[str]) -> List[Tuple[float, str]]:
    out = []
    for name in names:
        try:
            out.append((os.stat(os.path.join(directory, name)).st_mtime, name))
        except OSError:
            pass                                  # removed meanwhile
    out.sort()
    return out


def unavailable(exc: ResponseStoreError) -> errors.ApiError:
    """The API's 503 for a response store that cannot be used."""
    return errors.ApiError(503, "response_store_unavailable", str(exc))


def _unavailable(exc: OSError, action: str) -> ResponseStoreError:
    reason = exc.strerror or type(exc).__name__
    return ResponseStoreError("the response store (the responses directory under the server's "
                              "CLINVK_HOME) cannot be %s: %s; the server's operator must fix "
                              "it" % (action, reason))
