"""One connection, on the ``http.server`` layer: reads its requests (keep-alive, RFC 9112
framing, deadlines against slow clients), hands each to the App as a ``Context`` and writes
the answer, whole or streamed in chunks. The listening server (``listener``) starts one
thread per connection; the App never imports either.
"""

from __future__ import annotations

import contextlib
import email.utils
import io
import socket
import time
import traceback
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any, List, Optional, Tuple

from .. import __version__
from . import errors, framing
from .app import App
from .context import Context, new_request_id
from .http import JSON_TYPE, Response, StreamResponse, close_iterator
from .limits import ConnectionLimiter

MAX_LINE = 65536                   # request line and header line limit, as http.server's


class _DeadlineSocketIO(socket.SocketIO):
    """The connection as the request reader sees it: while ``deadline`` (a monotonic time) is
    set, each read waits only for what is left of it, so a client that trickles its request
    a byte at a time is cut off at server.read_timeout_secs all the same."""

    deadline: Optional[float] = None

    def readinto(self, b) -> Optional[int]:
        if self.deadline is not None:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout("the request took longer than server.read_timeout_secs")
            self._sock.settimeout(left)
        return super().readinto(b)


class ConnectionHandler(BaseHTTPRequestHandler):
    """One connection: reads requests (keep-alive), hands them to the App, writes responses."""

    protocol_version = "HTTP/1.1"
    server_version = "clinvk/" + __version__
    sys_version = ""

    def setup(self) -> None:
        super().setup()
        self.rfile.close()        # replaced by a reader that honours the request deadline
        self._reader = _DeadlineSocketIO(self.connection, "rb")
        self.rfile = io.BufferedReader(self._reader)

    def handle_one_request(self) -> None:
        app: App = self.server.app
        slots: ConnectionLimiter = self.server.connections
        try:
            # Idle keep-alive: wait for the first byte; from then on the whole request
            # (line, headers, body) must arrive within read_timeout.
            self._reader.deadline = None
            self.connection.settimeout(app.idle_timeout)
            slots.mark_idle(self.connection)
            self.rfile.peek(1)
            if not slots.mark_head(self.connection):
                self.close_connection = True        # its slot went to a newer connection
                return
            self._reader.deadline = time.monotonic() + app.read_timeout
            self.raw_requestline = self.rfile.readline(MAX_LINE + 1)
        except OSError:
            self.close_connection = True
            return
        if not self.raw_requestline:
            self.close_connection = True
            return
        if len(self.raw_requestline) > MAX_LINE:
            self.requestline, self.request_version, self.command = "", "HTTP/1.1", ""
            self.send_error(HTTPStatus.REQUEST_URI_TOO_LONG, "request line too long")
            return
        if not self._parse_head():
            return
        if self.request_version == "HTTP/0.9":
            self.send_error(HTTPStatus.BAD_REQUEST, "HTTP/0.9 is not supported")
            return
        if not self._check_framing():
            return
        if not slots.mark_served(self.connection):
            self.close_connection = True            # too slow: its slot went to a newcomer
            return
        self._serve(app)

    def _parse_head(self) -> bool:
        """``parse_request`` with the raw header lines kept for ``_check_framing``: the
        stdlib's parser (an e-mail parser) silently drops what it cannot read as a header."""
        recorder = framing.LineRecorder(self.rfile)
        self._header_lines = recorder.lines
        self.body_length: Optional[int] = None
        self.chunked = False
        self._framing_checked = False
        self.rfile = recorder
        try:
            return self.parse_request()
        except OSError:
            self.close_connection = True
            return False
        finally:
            self.rfile = recorder.inner

    def _serve(self, app: App) -> None:
        target = self.path
        if not target.startswith("/") and "://" in target:
            # absolute-form (RFC 9112 3.2.2), as sent to proxies: keep the path and query
            target = "/" + target.split("://", 1)[1].partition("/")[2]
        ctx = Context(app, self, self.command, target, self.headers, self.client_address[0])
        app.request_started(ctx)
        status = 0
        try:
            answer = app.handle(ctx)
            if isinstance(answer, StreamResponse):
                status = self._send_stream(ctx, answer)
            else:
                status = self._send(ctx, answer)
        finally:
            ctx.finish()
            app.request_finished(ctx, status)

    # -- writing ----------------------------------------------------------------------------

    def _head(self, ctx: Context, status: int, headers: List[Tuple[str, str]]) -> bytes:
        for hook in ctx.app.response_hooks:
            hook(ctx, headers)
        if self.close_connection or ctx.app.draining or (ctx.has_body()
                                                         and not ctx.body_consumed):
            # An unread body would be taken for the next request: end the connection.
            self.close_connection = True
        if any(k.lower() == "connection" and v.lower() == "close" for k, v in headers):
            self.close_connection = True
        elif self.close_connection:
            headers.append(("Connection", "close"))
        elif self.request_version == "HTTP/1.0":
            headers.append(("Connection", "keep-alive"))
        lines = ["HTTP/1.1 %d %s" % (status, _phrase(status)),
                 "Server: " + self.server_version,
                 "Date: " + email.utils.formatdate(usegmt=True)]
        lines.extend("%s: %s" % (k, _header_value(v)) for k, v in headers)
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")

    def _send(self, ctx: Context, resp: Response) -> int:
        headers = list(resp.headers)
        if resp.status >= 200 and resp.status not in (204, 304):
            headers.append(("Content-Length", str(len(resp.body))))
        head = self._head(ctx, resp.status, headers)
        body = b"" if ctx.method == "HEAD" or resp.status in (204, 304) else resp.body
        try:
            self.connection.settimeout(ctx.app.write_timeout)
            self.wfile.write(head + body)
        except OSError:
            self.close_connection = True
        return resp.status

    def _send_stream(self, ctx: Context, resp: StreamResponse) -> int:
        chunked = self.request_version != "HTTP/1.0"
        headers = [("Content-Type", resp.content_type), ("Cache-Control", "no-cache"),
                   ("X-Accel-Buffering", "no")] + resp.headers
        if chunked:
            headers.append(("Transfer-Encoding", "chunked"))
        else:
            self.close_connection = True       # an HTTP/1.0 stream ends with the connection
        chunks = resp.body()
        try:
            self.connection.settimeout(ctx.app.write_timeout)
            self.wfile.write(self._head(ctx, resp.status, headers))
            if ctx.method == "HEAD":
                return resp.status
            for chunk in chunks:
                if chunk:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
            if chunked:
                self.wfile.write(b"0\r\n\r\n")
        except OSError:
            # The client hung up (or stalled past the write timeout): stop the run.
            self.close_connection = True
            ctx.cancel.fire()
        except Exception:  # noqa: BLE001 - a broken stream writer: cut the stream, keep serving
            ctx.app.log.error("stream failed", ctx.request_id, traceback.format_exc())
            self.close_connection = True
            ctx.cancel.fire()
        finally:
            close_iterator(chunks)
        return resp.status

    # -- the request head and body (RFC 9112 5, 6 and 7.1) -----------------------------------

    def _check_framing(self) -> bool:
        """Refuse (and close) a request whose header lines or body framing are not exactly
        what RFC 9112 allows; else set ``body_length`` / ``chunked`` and return True."""
        if self._framing_checked:
            return True
        self._framing_checked = True
        try:
            self.body_length, self.chunked = framing.request_framing(
                self._header_lines, self.headers, self.request_version)
        except framing.FramingError as exc:
            self.send_error(exc.status, exc.message)
            return False
        return True

    def read_body(self, ctx: Context) -> bytes:
        """The request body as ``_check_framing`` found it framed (Content-Length or
        chunked), at most ``ctx.max_body`` bytes (413 beyond); a framing error is a 400 and
        ends the connection."""
        try:
            if self.chunked:
                return self._read_chunked(ctx.max_body)
            if self.body_length is None:
                return b""
            length = self.body_length
            if length > ctx.max_body:
                raise errors.too_large(ctx.max_body)
            body = self.rfile.read(length)
        except socket.timeout:
            self.close_connection = True
            raise errors.ApiError(408, "request_timeout", "the request body did not arrive "
                                  "within server.read_timeout_secs")
        except OSError as exc:
            self.close_connection = True
            raise errors.bad_body("the request body could not be read: %s" % exc)
        if len(body) < length:
            self.close_connection = True
            raise errors.bad_body("the request body ended after %d of %d bytes"
                                  % (len(body), length))
        return body

    def _read_chunked(self, limit: int) -> bytes:
        """A chunked body (RFC 9112 7.1), refused as soon as it passes ``limit`` bytes; any
        deviation from the grammar is a 400 that ends the connection (the rest of the
        stream can no longer be trusted to start a request)."""
        try:
            return framing.read_chunked(self.rfile, limit)
        except framing.FramingError as exc:
            self.close_connection = True
            if exc.status == 413:
                raise errors.too_large(limit)
            raise errors.ApiError(exc.status, "bad_request", exc.message)

    # -- http.server hooks -------------------------------------------------------------------

    def send_error(self, code: int, message: Optional[str] = None,
                   explain: Optional[str] = None) -> None:
        """Errors http.server itself detects (bad request line, too many headers): the native
        error body, and the connection is closed."""
        code = int(code)
        err = errors.ApiError(code, _PROTOCOL_ERRORS.get(code, "bad_request"),
                              message or _phrase(code))
        body = errors.native_json(err)
        head = ["HTTP/1.1 %d %s" % (code, _phrase(code)), "Server: " + self.server_version,
                "Date: " + email.utils.formatdate(usegmt=True),
                "Content-Type: " + JSON_TYPE, "Content-Length: %d" % len(body),
                "X-Request-Id: " + new_request_id(), "Connection: close"]
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.wfile.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        self.server.app.log.info("rejected malformed request: %d %s" % (code, message or ""))

    def handle_expect_100(self) -> bool:
        """Refuse a malformed or an announced oversized body before the client sends it."""
        if not self._check_framing():
            return False
        limit = self.server.app.max_body
        if self.body_length is not None and self.body_length > limit:
            self.send_error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, errors.too_large(limit).message)
            return False
        return super().handle_expect_100()

    def log_message(self, format: str, *args: Any) -> None:
        """http.server's own logging is replaced by the App's access log."""


# The codes of the errors http.server detects before a request reaches the App.
_PROTOCOL_ERRORS = {413: "request_too_large", 414: "request_line_too_long",
                    431: "headers_too_large", 501: "not_implemented",
                    505: "http_version_not_supported"}


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def _header_value(value: str) -> str:
    # A header value never carries a line break (response splitting).
    return str(value).replace("\r", " ").replace("\n", " ")
