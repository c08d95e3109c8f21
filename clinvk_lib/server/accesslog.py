"""The access log: one line per request on stderr (text or JSON lines), plus the server's own
events (start-up, refusals, shutdown, unexpected errors with their traceback).
"""

from __future__ import annotations

import sys
import threading
from typing import Any, Dict

from ..jsontext import dumps_compact
from ..textutil import printable, rfc3339
from .context import Context

# How much of a request's method or path a log line holds.
_LOGGED_CHARS = 300


class AccessLog:
    """One line per request on stderr (text or JSON lines), plus server events. Never a
    prompt, a body or a header value: only method, path, status, duration, id, client."""

    def __init__(self, fmt: str = "text", stream=None) -> None:
        self.json = fmt == "json"
        self._stream = stream
        self._lock = threading.Lock()

    def request(self, ctx: Context, status: int, seconds: float) -> None:
        fields = {"method": printable(ctx.method, _LOGGED_CHARS),
                  "path": printable(ctx.path, _LOGGED_CHARS),
                  "status": status, "duration_ms": round(seconds * 1000, 1),
                  "request_id": ctx.request_id, "client": ctx.client}
        if self.json:
            self._write(dict({"time": rfc3339(), "level": "info", "msg": "request"}, **fields))
        else:
            self._write_text("%s %s %s %d %.1fms id=%s %s" % (
                rfc3339(), fields["method"], fields["path"], status, fields["duration_ms"],
                ctx.request_id, ctx.client))

    def info(self, msg: str, **fields: Any) -> None:
        if self.json:
            self._write(dict({"time": rfc3339(), "level": "info", "msg": msg}, **fields))
        else:
            self._write_text("%s %s" % (rfc3339(), msg))

    def error(self, msg: str, request_id: str = "", details: str = "") -> None:
        if self.json:
            self._write({"time": rfc3339(), "level": "error", "msg": msg, "request_id": request_id,
                         "details": details})
        else:
            self._write_text("%s ERROR %s%s%s" % (rfc3339(), msg, " id=%s" % request_id
                                                  if request_id else "",
                                                  "\n" + details.rstrip() if details else ""))

    def _write(self, record: Dict[str, Any]) -> None:
        self._write_text(dumps_compact(record))

    def _write_text(self, line: str) -> None:
        stream = self._stream or sys.stderr
        with self._lock:
            try:
                stream.write(line + "\n")
                stream.flush()
            except (OSError, ValueError):
                pass
