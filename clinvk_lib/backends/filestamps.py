"""Values kept while the files they were computed from stay unchanged, re-validated with
``stat`` calls alone.

A file's stamp is what ``os.stat`` says of it: device, inode, type, size, mtime and ctime (so
a rewrite, a rename over it, a chmod or a chown is a change), or None when it does not exist
(so a file that appears is a change too). A directory's stamp is its identity only: its mtime
moves with every file created in it, and only its existence is read.

Used by ``gitenv`` for the verdict of a repository's git configuration scan.
"""

from __future__ import annotations

import os
import stat
import threading
from collections import OrderedDict
from typing import Any, Hashable, Optional, Sequence, Tuple

Stamp = Optional[Tuple[int, ...]]

# Filesystems stamp times from a coarse clock (a kernel tick; FAT: 2 s), so a file changed
# again within this long of a read may keep its stamp: values read that recently are not kept.
RACY_NS = 2 * 10**9


def stamp_of(path: str) -> Stamp:
    """``path``'s stamp (see the module docstring); None when it does not exist."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    if stat.S_ISDIR(st.st_mode):
        return (st.st_dev, st.st_ino, stat.S_IFDIR)
    return (st.st_dev, st.st_ino, st.st_mode, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def stamps_of(paths: Sequence[str]) -> Tuple[Stamp, ...]:
    return tuple(stamp_of(path) for path in paths)


def changed_since(stamps: Sequence[Stamp], since_ns: int) -> bool:
    """Whether a file of ``stamps`` may have changed at or after ``since_ns`` (time.time_ns)."""
    return any(s is not None and len(s) > 3 and max(s[4], s[5]) >= since_ns - RACY_NS
               for s in stamps)


class StampedCache:
    """A bounded map (least recently used out first) from a key to a value that holds while
    the files it was computed from keep their stamps; safe to share between threads.

    ``get(key)``: the value, or None when there is none or a file changed.
    ``put(key, paths, value, started_ns)``: keep ``value``, computed from ``paths`` by work
    that started at ``started_ns`` (time.time_ns), unless one of them changed since then."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: "OrderedDict[Hashable, Tuple[Tuple[str, ...], Tuple[Stamp, ...], Any]]" \
            = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> Any:
        with self._lock:
            entry = self._entries.get(key)
        if entry is None:
            return None
        paths, stamps, value = entry
        if stamps_of(paths) != stamps:
            with self._lock:
                if self._entries.get(key) is entry:
                    del self._entries[key]
            return None
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
        return value

    def put(self, key: Hashable, paths: Sequence[str], value: Any, started_ns: int) -> None:
        stamps = stamps_of(paths)
        if changed_since(stamps, started_ns):
            return
        with self._lock:
            self._entries[key] = (tuple(paths), stamps, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
