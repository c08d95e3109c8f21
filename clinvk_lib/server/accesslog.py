"""The access log: one line per request on stderr (text or JSON lines), plus the server's own
events (start-up, refusals, shutdown, unexpected errors with their traceback).
"""

from __future__ import annotations

import datetime
import sys
import threading
from typing import Any, Dict

from .context import Context
from .http import dump_json


class AccessLog:
    """One line per request on stderr (text or JSON lines), plus server events. Never a
    prompt, a body or a header value: only method, path, status, duration, id, client."""

    def __init__(self, fmt: str = "text", stream=None) -> None:
        self.json = fmt == "json"
        self._stream = stream
        self._lock = threading.Lock()

    def request(self, ctx: Context, status: int, seconds: float) -> None:
        fields = {"method": _printable(ctx.method), "path": _printable(ctx.path),
                  "status": status, "duration_ms": round(seconds * 1000, 1),
                  "request_id": ctx.request_id, "client": ctx.client}
        if self.json:
            self._write(dict({"time": _now(), "level": "info", "msg": "request"}, **fields))
        else:
            self._write_text("%s %s %s %d %.1fms id=%s %s" % (
                _now(), fields["method"], fields["path"], status, fields["duration_ms"],
                ctx.request_id, ctx.client))

    def info(self, msg: str, **fields: Any) -> None:
        if self.json:
            self._write(dict({"time": _now(), "level": "info", "msg": msg}, **fields))
        else:
            self._write_text("%s %s" % (_now(), msg))

    def error(self, msg: str, request_id: str = "", details: str = "") -> None:
        if self.json:
            self._write({"time": _now(), "level": "error", "msg": msg, "request_id": request_id,
                         "details": details})
        else:
            self._write_text("%s ERROR %s%s%s" % (_now(), msg, " id=%s" % request_id
                                                  if request_id else "",
                                                  "\n" + details.rstrip() if details else ""))

    def _write(self, record: Dict[str, Any]) -> None:
        self._write_text(dump_json(record).decode("utf-8"))

    def _write_text(self, line: str) -> None:
        stream = self._stream or sys.stderr
        with self._lock:
            try:
                stream.write(line + "\n")
                stream.flush()
            except (OSError, ValueError):
                pass


def _now() -> str:
    t = datetime.datetime.now(datetime.timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (t.microsecond // 1000)


def _printable(text: str, limit: int = 300) -> str:
    """A request value made safe for a log line (no control characters), cut to ``limit``."""
    text = text[:limit]
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
                   for c in text)
