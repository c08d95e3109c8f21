"""The summary of every job in one file, so that listing a page of jobs and a server's upkeep
read the few records they need, not all of them: ``<home>/jobs/index``.

One JSON line per change: ``{"id", "kind", "owner", "status", "runner", "finished_at", "hook"}``
(``hook``: the webhook delivery's state, "" without one), written after each record write, or
``{"id", "gone": true}`` once the job is removed. The last line of an id wins. Lines are
appended whole (``O_APPEND``) under the index's lock, so processes sharing the directory
interleave lines, never bytes; a reader keeps what it has read and reads only what was
appended since (``entries``). ``rewrite`` replaces the file (temporary file, rename) with one
line per job: at a server's start from the records themselves, and as upkeep once the file
holds several times more lines than jobs.

The records stay the truth: a crash between a record write and its line leaves the index one
change behind until the next ``rewrite`` from the records, and whoever reads the record a line
points to judges that record.
"""

from __future__ import annotations

import os
import threading
from typing import Any, Callable, Dict, Iterable, List, Optional

from . import jsontext
from .filelock import locked
from .fsutil import write_atomically

Summary = Dict[str, Any]
# Rewrite once the file holds this many times more lines than jobs (and at least MIN_LINES).
SLACK = 4
MIN_LINES = 1000


class JobIndex:
    """The index file of one jobs directory; safe for many threads and processes at once."""

    def __init__(self, directory: str) -> None:
        self.path = os.path.join(directory, "index")
        self._lock_path = os.path.join(directory, "index.lock")
        self._mutex = threading.Lock()
        self._entries: Dict[str, Summary] = {}
        self._file_id: Optional[tuple] = None
        self._offset = 0
        self._lines = 0

    def add(self, summary: Summary) -> None:
        """Append one job's new summary. OSError when the file cannot be written."""
        line = (jsontext.dumps_compact(summary) + "\n").encode("utf-8")
        with locked(self._lock_path, None):
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                         0o600)
            try:
                os.write(fd, line)
            finally:
                os.close(fd)

    def remove(self, job_id: str) -> None:
        self.add({"id": job_id, "gone": True})

    def entries(self) -> Optional[Dict[str, Summary]]:
        """Every job's latest summary by id (a copy), reading only the lines appended since
        the last call; None when there is no index file (a directory older than it)."""
        with self._mutex:
            try:
                with open(self.path, "rb") as f:
                    stat = os.fstat(f.fileno())
                    if (stat.st_dev, stat.st_ino) != self._file_id or \
                            stat.st_size < self._offset:
                        self._forget((stat.st_dev, stat.st_ino))    # rewritten meanwhile
                    f.seek(self._offset)
                    data = f.read()
            except FileNotFoundError:
                self._forget(None)
                return None
            end = data.rfind(b"\n") + 1
            for summary in _parse(data[:end].splitlines()):
                self._take(summary)
            self._offset += end
            return dict(self._entries)

    def _forget(self, file_id: Optional[tuple]) -> None:
        self._entries, self._file_id, self._offset, self._lines = {}, file_id, 0, 0

    def _take(self, summary: Any) -> None:
        self._lines += 1
        try:
            job_id = summary["id"]
        except (TypeError, KeyError):
            return                      # not a line ``add`` wrote: nothing to learn from it
        if summary.get("gone"):
            self._entries.pop(job_id, None)
        else:
            self._entries[job_id] = summary

    def needs_rewrite(self) -> bool:
        """Whether the file holds many more lines than jobs (as of the last ``entries``)."""
        with self._mutex:
            return self._lines > max(MIN_LINES, SLACK * len(self._entries))

    def rewrite(self, summaries: Callable[[], Iterable[Summary]]) -> None:
        """Replace the file with one line per summary that ``summaries()`` gives. It is called
        under the index's lock, so no line is appended meanwhile: what it reads (the records,
        or ``entries()``) is the whole truth. OSError when the file cannot be written."""
        with locked(self._lock_path, None):
            data = b"".join((jsontext.dumps_compact(s) + "\n").encode("utf-8")
                            for s in summaries())
            write_atomically(self.path, data, sync_dir=False)


def _parse(lines: List[bytes]) -> List[Any]:
    """The JSON value of each line (None for one that is not JSON): all lines in one parse,
    which is several times faster than one parse per line, unless one of them is damaged."""
    try:
        return jsontext.loads(b"[" + b",".join(lines) + b"]")
    except ValueError:
        return [_loads_or_none(line) for line in lines]


def _loads_or_none(line: bytes) -> Any:
    try:
        return jsontext.loads(line)
    except ValueError:
        return None
