"""The session index (``index.json``): every session's listing fields in one file, laid out so
that listing 10,000 sessions parses little more than the ones it returns.

index.json is one JSON document laid out in lines, sessions most recently used first. Line 1
holds a random ``stamp`` (new on every write, so a process re-parses the file only when it
changed), the format version and the ids of unreadable session files; the next lines hold one
column each of the fields that lookups filter on (``HEAD_FIELDS``) and the byte offset of
every row; then comes one line per session with its row (``ROW_FIELDS``; the initial prompt
cut to INDEX_PROMPT_CHARS). Counting and prefix lookup parse the id column only, filters parse
their column, and rows are parsed just for the sessions returned. With 10,000 sessions the
file is about 5 MB and a write rewrites it.

Plain data in and out: reading and writing the file, and keeping it true to the session files,
is ``session_files``' job.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import json
import os
import re
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple

from .jsontext import dumps_compact
from .session_record import HEAD_FIELDS, ROW_FIELDS, Session

STAMP_RE = re.compile(rb'\{"stamp":"([0-9a-f]{32})"')
_VERSION = 5  # the Go original writes version 1 with another layout; either side rebuilds
_ROWS_OPEN_LINE = b'"rows":['
_ID = HEAD_FIELDS.index("id")
_LAST_USED = HEAD_FIELDS.index("last_used")


class DamagedIndex(Exception):
    """index.json parsed but a column or row in it is not what we write."""


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
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


class Index:
    """One version of the index: sessions most recently used first, each with its columns
    (``HEAD_FIELDS``) and its row as JSON text, plus the ids of unreadable session files.

    Session i's row is ``text[base + offsets[i]:base + offsets[i + 1] - 2]`` (rows are
    separated by two bytes, ",\\n"); ``text`` is index.json's content as read, or just the rows
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
              broken: Iterable[str]) -> "Index":
        """An index of these sessions (heads and rows in the same, final order)."""
        columns = {name: [h[i] for h in heads] for i, name in enumerate(HEAD_FIELDS)}
        offsets = [0]
        offsets.extend(itertools.accumulate(len(row) + 2 for row in rows))
        return cls("", frozenset(broken), columns, b",\n".join(rows), 0, offsets)

    @classmethod
    def parse(cls, stamp: str, text: bytes) -> Optional["Index"]:
        """The index in index.json's bytes, or None if they are not in our format."""
        # Find the first lines without splitting (copying) the rows that follow them.
        ends = []  # type: List[int]
        for _ in range(len(HEAD_FIELDS) + 3):
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
        if not (isinstance(header, dict) and header.get("version") == _VERSION
                and header.get("fields") == list(ROW_FIELDS) and _strings(header.get("broken"))
                and _strings(ids) and type(offsets) is list and len(offsets) == len(ids) + 1
                and set(map(type, offsets)) == {int}
                and offsets[0] == 0 and offsets[-1] == rows_length):
            return None
        raw_columns = {}
        for name, line in zip(HEAD_FIELDS[1:], lines[2:-2]):
            prefix = b'"' + name.encode("ascii") + b'":'
            if not (line.startswith(prefix) and line.endswith(b",")):
                return None
            raw_columns[name] = line[len(prefix):-1]
        return cls(stamp, frozenset(header["broken"]), {"id": ids}, text, base, offsets,
                   raw_columns)

    def stamped(self) -> "Index":
        """The same index with a new stamp, for writing."""
        return Index(os.urandom(16).hex(), self.broken, self._columns, self.text, self.base,
                     self.offsets, self._raw_columns)

    def _rows(self, start: int, stop: int) -> bytes:
        """The rows of sessions start..stop-1, comma-separated."""
        return self.text[self.base + self.offsets[start]:self.base + self.offsets[stop] - 2]

    def to_bytes(self) -> bytes:
        """index.json's content: one JSON document, laid out in lines (module docstring)."""
        header = {"stamp": self.stamp, "version": _VERSION, "fields": ROW_FIELDS,
                  "broken": sorted(self.broken)}
        lines = [_json_bytes(header)[:-1] + b","]
        for name in HEAD_FIELDS + ("offsets",):
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
                with gc_paused():
                    values = json.loads(self._raw_columns[name])
            except ValueError:
                values = None
            if not _strings(values) or len(values) != len(self):
                raise DamagedIndex("index column %r is damaged" % name)
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
            with gc_paused():
                return [Session.from_row(row) for row in json.loads(b"[" + text + b"]")]
        except (ValueError, TypeError):
            raise DamagedIndex("a row of the index is damaged") from None

    def changed(self, sessions: Mapping[str, Optional[Session]],
                broken: Iterable[str] = ()) -> "Index":
        """A copy with these sessions replaced (None: removed) and these ids unreadable."""
        with gc_paused():
            heads = zip(*[self.column(name) for name in HEAD_FIELDS])
            kept = [(head, self._rows(i, i + 1)) for i, head in enumerate(heads)
                    if head[_ID] not in sessions]
            kept.extend((s.head(), _json_bytes(s.to_row())) for s in sessions.values()
                        if s is not None)
            kept.sort(key=lambda pair: (pair[0][_LAST_USED], pair[0][_ID]), reverse=True)
            return Index.build([pair[0] for pair in kept], [pair[1] for pair in kept],
                               self.broken.difference(sessions).union(broken))


NO_INDEX = Index("", frozenset(), {name: [] for name in HEAD_FIELDS}, b"", 0, [0])


def _json_bytes(value: Any) -> bytes:
    # Compact JSON never holds a raw newline (strings escape it), so a value is one line.
    return dumps_compact(value).encode("utf-8")


def _strings(value: Any) -> bool:
    """True if ``value`` is a list of strings."""
    return type(value) is list and (not value or set(map(type, value)) == {str})
