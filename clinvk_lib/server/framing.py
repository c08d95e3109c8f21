"""HTTP/1.1 request framing (RFC 9112): which header lines are well formed, how long the body
is, and the chunked transfer coding.

Framing is where the server and any proxy in front of it must agree byte for byte: where one
reads a body and the other a second request, a client can smuggle a request past the proxy.
So every rule here is strict, anything the RFC lets a server refuse is refused, and each
refusal says what to send instead. Plain functions over bytes and a reader; the connection
layer (``app.Handler``) answers a ``FramingError`` with its status and closes the connection.
"""

from __future__ import annotations

import re
from typing import IO, Any, List, Optional, Sequence, Tuple

# A chunk size line (chunk-size and chunk extensions) longer than this is refused; Go's
# net/http uses the same bound. Extensions are ignored, so real clients send none.
MAX_CHUNK_LINE = 4096
# The trailer section after the last chunk: as many lines as http.client allows headers,
# each no longer than a header line.
MAX_TRAILER_LINES = 100
MAX_FIELD_LINE = 65536

# RFC 9110 5.1 and 5.6.2: field-name = token; RFC 9112 5.1: nothing between the name and the
# colon; RFC 9110 5.5: CR, LF and NUL never inside a value. A line ends in CRLF, or a bare LF
# (RFC 9112 2.2 lets a recipient accept one, as http.client does). This also refuses what
# http.client's parser (an e-mail parser) would read differently from a proxy: a line
# without a colon (it takes that line and every later header for the body), a folded line
# (RFC 9112 5.2), a bare CR (it starts a new header there) and a "From " envelope line.
_FIELD_LINE = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+:[^\r\n\x00]*\r?\n\Z")
# RFC 9112 7.1: chunk-size = 1*HEXDIG, then optional chunk extensions (BWS only before ";").
_CHUNK_SIZE_LINE = re.compile(rb"([0-9A-Fa-f]+)(?:[ \t]*;[\t\x20-\x7e\x80-\xff]*)?\r\n\Z")
_DIGITS = re.compile(r"[0-9]+\Z")           # 1*DIGIT, ASCII only (str.isdigit takes "²")

# A declared length with more digits than this is larger than any body limit.
_MAX_LENGTH_DIGITS = 18
HUGE = 10 ** _MAX_LENGTH_DIGITS


class FramingError(ValueError):
    """A request whose framing cannot be trusted: ``status`` (400, 413 or 501) and a
    ``message`` that says what to send instead."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class LineRecorder:
    """A reader that keeps every line read through it in ``lines``, so the raw header lines
    behind ``http.client.parse_headers`` (which reads with ``readline`` only) can be checked."""

    def __init__(self, inner: IO[bytes]) -> None:
        self.inner = inner
        self.lines: List[bytes] = []

    def readline(self, limit: int = -1) -> bytes:
        line = self.inner.readline(limit)
        self.lines.append(line)
        return line

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def request_framing(header_lines: Sequence[bytes], headers: Any,
                    version: str) -> Tuple[Optional[int], bool]:
    """``(content_length, chunked)`` of a request whose raw ``header_lines`` (the blank line
    that ends them included) were parsed into ``headers`` (an ``email.message.Message``).
    ``content_length`` is None without one, ``HUGE`` for an absurdly long number. Raises
    FramingError for a malformed header line or ambiguous framing (RFC 9112 6.3)."""
    for line in header_lines:
        if line not in (b"\r\n", b"\n", b"") and not _FIELD_LINE.match(line):
            raise FramingError(400, _header_line_problem(line, "header"))
    codings = headers.get_all("Transfer-Encoding") or []
    lengths = headers.get_all("Content-Length") or []
    if codings and lengths:
        raise FramingError(400, "a request must not carry both Transfer-Encoding and "
                                "Content-Length (RFC 9112 6.3): send one of them")
    if codings:
        if version == "HTTP/1.0":
            raise FramingError(400, "Transfer-Encoding is not allowed in an HTTP/1.0 request "
                                    "(RFC 9112 6.1): send Content-Length")
        check_transfer_encoding(codings)
        return None, True
    return (content_length(lengths) if lengths else None), False


def check_transfer_encoding(values: Sequence[str]) -> None:
    """One Transfer-Encoding header whose codings end in a single ``chunked`` (RFC 9112 6.3:
    otherwise the body length is unknown, a 400); other codings before it are a 501."""
    if len(values) > 1:
        raise FramingError(400, "more than one Transfer-Encoding header: send exactly one, "
                                "'Transfer-Encoding: chunked'")
    codings = [c.strip(" \t").lower() for c in values[0].split(",")]
    if codings[-1] != "chunked" or codings.count("chunked") > 1:
        raise FramingError(400, "Transfer-Encoding %s does not end in one 'chunked', so the "
                                "body length is unknown (RFC 9112 6.3): send "
                                "'Transfer-Encoding: chunked'" % shown(values[0]))
    if len(codings) > 1:
        raise FramingError(501, "Transfer-Encoding %s: only 'chunked' is supported (RFC 9112 "
                                "6.1); send the body with 'Transfer-Encoding: chunked' alone"
                           % shown(values[0]))


def content_length(values: Sequence[str]) -> int:
    """The body length the Content-Length headers agree on: each 1*DIGIT in ASCII (RFC 9110
    8.6), repeated headers only with the same number; ``HUGE`` when longer than any limit."""
    numbers = set()
    for value in values:
        digits = value.strip(" \t")
        if not _DIGITS.match(digits):
            raise FramingError(400, "Content-Length must be a number of bytes in ASCII digits "
                                    "(0-9, nothing else): got %s" % shown(value))
        significant = digits.lstrip("0")
        numbers.add(HUGE if len(significant) > _MAX_LENGTH_DIGITS else int(digits))
    if len(numbers) > 1:
        raise FramingError(400, "Content-Length headers disagree (%s): send one"
                           % ", ".join(shown(v) for v in values))
    return numbers.pop()


def read_chunked(rfile: IO[bytes], limit: int) -> bytes:
    """A chunked body (RFC 9112 7.1) from ``rfile``, refused (413) as soon as its data passes
    ``limit`` bytes and before that data is read. Every deviation from the grammar is a 400:
    a size that is not hexadecimal digits, a size line over MAX_CHUNK_LINE, data not followed
    by CRLF, an endless or malformed trailer section, or the end of the stream."""
    parts: List[bytes] = []
    total = 0
    while True:
        size = _chunk_size(rfile)
        if size == 0:
            _skip_trailers(rfile)
            return b"".join(parts)
        total += size
        if total > limit:
            raise FramingError(413, "the chunked request body passed the size limit")
        data = rfile.read(size)
        end = rfile.read(2)
        if len(data) < size or len(end) < 2:
            raise _ended_early()
        if end != b"\r\n":
            raise FramingError(400, "chunk data must be followed by CRLF (RFC 9112 7.1): a "
                                    "chunk held more bytes than its size said")
        parts.append(data)


def _chunk_size(rfile: IO[bytes]) -> int:
    line = rfile.readline(MAX_CHUNK_LINE + 1)
    if len(line) > MAX_CHUNK_LINE:
        raise FramingError(400, "chunk size line longer than %d bytes (extensions included)"
                           % MAX_CHUNK_LINE)
    if not line.endswith(b"\n"):
        raise _ended_early()
    match = _CHUNK_SIZE_LINE.match(line)
    if match is None:
        raise FramingError(400, "malformed chunk size line %s: a chunk size is hexadecimal "
                                "digits only (no sign, no 0x, no '_', no spaces), optionally "
                                "followed by ';' extensions, then CRLF (RFC 9112 7.1)"
                           % shown(line.decode("latin-1")))
    return int(match.group(1), 16)


def _skip_trailers(rfile: IO[bytes]) -> None:
    for _ in range(MAX_TRAILER_LINES + 1):
        line = rfile.readline(MAX_FIELD_LINE + 1)
        if line in (b"\r\n", b"\n"):
            return
        if not line.endswith(b"\n"):
            if len(line) > MAX_FIELD_LINE:
                raise FramingError(400, "a trailer line of the chunked body is longer than "
                                        "%d bytes" % MAX_FIELD_LINE)
            raise _ended_early()
        if not _FIELD_LINE.match(line):
            raise FramingError(400, _header_line_problem(line, "trailer"))
    raise FramingError(400, "the trailer section of the chunked body has more than %d lines"
                       % MAX_TRAILER_LINES)


def _ended_early() -> FramingError:
    return FramingError(400, "the chunked request body ended early: the connection closed "
                             "before the last chunk (0) and the blank line after it")


def _header_line_problem(line: bytes, kind: str) -> str:
    """Why a raw field line is refused, naming the line."""
    text = line.rstrip(b"\r\n").decode("latin-1")
    name, colon, _ = text.partition(":")
    if text[:1] in (" ", "\t"):
        why = ("starts with whitespace: folded lines are not accepted (RFC 9112 5.2); send "
               "each field on one line")
    elif not colon:
        why = "has no ':'; every %s line is 'Name: value' (RFC 9112 5)" % kind
    elif name != name.rstrip(" \t"):
        why = "has whitespace before its ':' (RFC 9112 5.1); send 'Name: value'"
    else:
        why = ("is malformed: a name of letters, digits and !#$%&'*+-.^_`|~, a ':', then a "
               "value without CR, LF or NUL (RFC 9110 5)")
    return "%s line %s %s" % (kind, shown(text), why)


def shown(text: str, limit: int = 100) -> str:
    """``text`` quoted for an error message: non-printable characters escaped, cut to
    ``limit`` characters."""
    cut = text[:limit]
    escaped = cut.encode("unicode_escape").decode("ascii").replace("'", "\\'")
    return "'%s'%s" % (escaped, "..." if len(text) > limit else "")
