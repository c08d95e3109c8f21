"""Small pieces of text every layer writes: a value made safe to echo, a value cut to fit a
line, an RFC 3339 timestamp.

A leaf: the standard library only, so the backends, the store, the server and the CLI all
word these the same way.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    import datetime


def printable(text: str, limit: int) -> str:
    """``text`` safe to echo in a message or a log line: cut to ``limit`` characters (then
    ending with "..."), control and other non-printable characters escaped (``\\n``,
    ``\\x1b``), so a client's value can never forge a line or a terminal sequence."""
    shown = text[:limit]
    if not shown.isprintable():
        shown = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
                        for c in shown)
    return shown + ("..." if len(text) > limit else "")


def cut(text: str, width: int, ellipsis: str = "\u2026") -> str:
    """``text`` on one line (runs of whitespace become one space), at most ``width``
    characters: a longer one is cut and ends with ``ellipsis``."""
    text = " ".join((text or "").split())
    if len(text) <= width:
        return text
    return text[:max(width - len(ellipsis), 0)].rstrip() + ellipsis


def rfc3339(when: Optional[datetime.datetime] = None, digits: int = 3) -> str:
    """``when`` (default: now) in UTC as RFC 3339 with ``digits`` (3 or 6) fractional digits
    and a ``Z``: fixed width, so timestamps of one kind sort as text."""
    if when is None:
        seconds, micro = divmod(time.time_ns() // 1000, 1000000)
        fields = time.gmtime(seconds)
    else:
        import datetime  # lazy: start-up (a caller that has a datetime has loaded it)
        utc = when.astimezone(datetime.timezone.utc)
        fields, micro = utc.timetuple(), utc.microsecond
    return time.strftime("%Y-%m-%dT%H:%M:%S.", fields) + ("%06d" % micro)[:digits] + "Z"
