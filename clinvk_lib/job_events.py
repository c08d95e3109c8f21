"""The event log of one durable job: one JSON object per line, each carrying ``seq``, its line
number (1 for the first line). "The events after N" is "the lines after line N", so a reader
that drops and reconnects with the last ``seq`` it saw neither loses nor repeats an event.

One process appends (the server running the job), a whole line per ``write`` on an
``O_APPEND`` descriptor; readers take complete lines only, so a line being written is never
read half. A crash can leave a partial last line: whoever ends the job after a crash reopens
the log with ``EventWriter``, which cuts that line off first.

The log is bounded: once the next event would take it past ``max_bytes``, one
``events_truncated`` event is written in its place and later events are dropped, except the
job's final status event, which is always written (a reader knows the job ended).
"""

from __future__ import annotations

import os
import threading
from typing import Any, Dict, List, Optional, Tuple

from . import jsontext
from .textutil import rfc3339

TRUNCATED = "events_truncated"
# The event that tells a job's status: "running" when it starts, then its final status.
JOB = "job"


def job_event(status: str) -> Dict[str, Any]:
    """The event that records a job's new ``status``."""
    return {"type": JOB, "timestamp": rfc3339(), "content": {"status": status}}


def _repair(path: str) -> Tuple[int, int]:
    """(events, bytes) in the log at ``path`` after cutting off a partial last line left by a
    crash; (0, 0) when there is no log yet."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return 0, 0
    keep = data.rfind(b"\n") + 1
    if keep < len(data):
        os.truncate(path, keep)
    return data.count(b"\n", 0, keep), keep


class EventWriter:
    """Appends events to one job's log, from any thread. ``count`` is the number of events
    in the log (the ``seq`` of the last one); ``append`` returns the new event's ``seq``, 0
    when the bound dropped it. Opening it repairs the log (see the module docstring)."""

    def __init__(self, path: str, max_bytes: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._fd = -1
        self.count, self._size = self._existing()
        self._truncated = False

    def _existing(self) -> Tuple[int, int]:
        """(events, bytes) already in the log, once repaired (a subclass may keep the log
        elsewhere)."""
        return _repair(self.path)

    def append(self, event: Dict[str, Any], final: bool = False) -> int:
        """Write ``event`` (a dict with ``type``) as the next line; ``final`` for the job's
        last event, which the bound never drops. OSError when the log cannot be written."""
        with self._lock:
            line = self._line(event)
            if not final and self._size + len(line) > self.max_bytes:
                if self._truncated:
                    return 0
                self._truncated = True
                line = self._line({"type": TRUNCATED, "timestamp": rfc3339(), "content": {
                    "message": "the job's later events were not kept: its event log reached "
                               "%d bytes (server.job_events_max_bytes)" % self.max_bytes}})
            self._write(line)
            self.count += 1
            self._size += len(line)
            return self.count

    def _write(self, line: bytes) -> None:
        """Store one whole line (a subclass may keep the log elsewhere)."""
        if self._fd < 0:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT |
                               os.O_CLOEXEC, 0o600)
        os.write(self._fd, line)

    def _line(self, event: Dict[str, Any]) -> bytes:
        return (jsontext.dumps_compact(dict({"seq": self.count + 1}, **event)) + "\n"
                ).encode("utf-8")

    def close(self) -> None:
        """Flush the log to disk and close it (a later ``append`` reopens it)."""
        with self._lock:
            if self._fd >= 0:
                fd, self._fd = self._fd, -1
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)


class EventCursor:
    """Reads one job's events after ``after`` (a ``seq``), as they are appended: each
    ``read()`` returns the complete events written since the last one (``[]`` while there is
    no log yet). ``close()`` when done."""

    def __init__(self, path: str, after: int = 0) -> None:
        self.path = path
        self.after = max(0, after)
        self.seq = 0                    # the line number of the last complete line read
        self._file: Optional[Any] = None
        self._pending = b""

    def read(self) -> List[Dict[str, Any]]:
        if self._file is None:
            try:
                self._file = open(self.path, "rb")
            except FileNotFoundError:
                return []
        data = self._pending + self._file.read()
        end = data.rfind(b"\n") + 1
        self._pending = data[end:]
        out = []
        for line in data[:end].splitlines():
            self.seq += 1
            if self.seq <= self.after:
                continue
            try:
                out.append(jsontext.loads(line))
            except ValueError:
                continue                # not written by EventWriter: nothing to tell
        return out

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def count_events(path: str) -> int:
    """The number of complete events in the log at ``path`` (0 when there is none)."""
    try:
        with open(path, "rb") as f:
            return f.read().count(b"\n")
    except OSError:
        return 0
