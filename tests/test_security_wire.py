"""The wire, as an attacker writes it: request framing (RFC 9112), header syntax, query
numbers, JSON text that is not Unicode, a client that stops reading a stream, and more
connections than the server will hold. Each odd input gets a 4xx that says what is wrong
(never a 500, a hang or a dropped connection), and no backend starts for it."""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from typing import List

import pytest

from clinvk_lib.server import http, sse
from clinvk_lib.server.limits import ConnectionLimiter
from clinvk_lib.server.openapi import Operation as Spec
from tests.serverutil import (  # noqa: F401 (fixtures)
    raw_request, read_until_closed, server, start_server, status_of, wait_for)

DRY_RUN = b'{"backend":"claude","prompt":"x","dry_run":true}'


def post(body: bytes, framing: bytes, path: str = "/api/v1/prompt") -> bytes:
    """A POST of ``body`` (already framed) with the framing header lines ``framing``."""
    return (b"POST %s HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            % path.encode() + framing + b"\r\n" + body)


def chunked(size_line: bytes, data: bytes, after_data: bytes = b"\r\n") -> bytes:
    """One chunk with ``size_line`` as its size, then the last chunk and no trailers."""
    return size_line + b"\r\n" + data + after_data + b"0\r\n\r\n"


def message_of(raw: bytes) -> str:
    """The ``message`` of a native error answer."""
    return json.loads(raw.split(b"\r\n\r\n", 1)[1])["message"]


def assert_refused(raw: bytes, status: int, *words: str) -> None:
    """One answer (no second response behind it) with ``status``, closing the connection,
    whose message names each of ``words``."""
    assert raw.startswith(b"HTTP/1.1 "), raw[:200]
    assert status_of(raw) == status, raw[:400]
    assert raw.count(b"HTTP/1.1 ") == 1, raw[:400]
    assert b"connection: close" in raw.lower()
    message = message_of(raw)
    for word in words:
        assert word in message, message


@pytest.fixture
def small(start_server):
    """A server with a 1000-byte body limit and a short read timeout."""
    return start_server(**{"server.max_request_body_bytes": 1000,
                           "server.read_timeout_secs": 5})


# -- chunked bodies (RFC 9112 7.1) -------------------------------------------------------------


def test_valid_chunked_body_with_an_extension_and_a_trailer_is_served(small):
    body = b"%x ;name=value\r\n%s\r\n0\r\nX-Trailer: 1\r\n\r\n" % (len(DRY_RUN), DRY_RUN)
    raw = raw_request(small, post(body, b"Transfer-Encoding: chunked\r\nConnection: close\r\n"))
    assert status_of(raw) == 200, raw[:300]


@pytest.mark.parametrize("size", [b"-1", b"-2"])
def test_negative_chunk_size_is_400_and_never_reads_to_the_end_of_the_connection(small, size):
    with socket.create_connection(("127.0.0.1", small.port), timeout=10) as s:
        # The connection stays open: reading "to the end" would wait for ever.
        s.sendall(post(size + b"\r\n" + b" " * 5000, b"Transfer-Encoding: chunked\r\n"))
        raw = read_until_closed(s)
    assert_refused(raw, 400, "chunk size", "hexadecimal")


@pytest.mark.parametrize("size", [b"+%x", b"0x%x", b"%x_", b" %x", b"%x ", b"%x\t"])
def test_chunk_size_with_a_sign_prefix_underscore_or_stray_space_is_400(small, size):
    framed = chunked(size % len(DRY_RUN) if b"%" in size else size, DRY_RUN)
    raw = raw_request(small, post(framed, b"Transfer-Encoding: chunked\r\n"))
    assert_refused(raw, 400, "chunk size")


def test_chunk_data_not_followed_by_crlf_is_400(small):
    framed = chunked(b"%x" % len(DRY_RUN), DRY_RUN, after_data=b"XX\r\n")
    raw = raw_request(small, post(framed, b"Transfer-Encoding: chunked\r\n"))
    assert_refused(raw, 400, "CRLF")


def test_chunk_size_line_longer_than_the_bound_is_400(small):
    framed = chunked(b"%x;ext=" % len(DRY_RUN) + b"a" * 10000, DRY_RUN)
    raw = raw_request(small, post(framed, b"Transfer-Encoding: chunked\r\n"))
    assert_refused(raw, 400, "chunk size line")


def test_endless_trailers_are_refused(small):
    trailers = b"X-T: v\r\n" * 1000
    body = b"%x\r\n%s\r\n0\r\n%s\r\n" % (len(DRY_RUN), DRY_RUN, trailers)
    raw = raw_request(small, post(body, b"Transfer-Encoding: chunked\r\n"))
    assert status_of(raw) in (400, 413) and b"trailer" in raw


def test_chunked_body_that_ends_early_is_400(small):
    with socket.create_connection(("127.0.0.1", small.port), timeout=10) as s:
        s.sendall(post(b"%x\r\n%s" % (len(DRY_RUN) + 10, DRY_RUN),
                       b"Transfer-Encoding: chunked\r\n"))
        s.shutdown(socket.SHUT_WR)
        raw = read_until_closed(s)
    assert_refused(raw, 400, "ended")


@pytest.mark.parametrize("framing", [
    b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n",
    b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n",
    b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
    b"Transfer-Encoding: chunked, gzip\r\n",
    b"Transfer-Encoding: identity\r\n",
    b"Transfer-Encoding: \r\n",
])
def test_ambiguous_transfer_encoding_is_400(small, framing):
    body = chunked(b"%x" % len(DRY_RUN), DRY_RUN)
    raw = raw_request(small, post(body, framing))
    assert_refused(raw, 400, "Transfer-Encoding")


def test_transfer_encoding_in_an_http_1_0_request_is_400(small):
    request = (b"POST /api/v1/prompt HTTP/1.0\r\nContent-Type: application/json\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n" + chunked(b"%x" % len(DRY_RUN), DRY_RUN))
    assert_refused(raw_request(small, request), 400, "HTTP/1.0")


def test_bad_framing_is_refused_instead_of_100_continue(small):
    with socket.create_connection(("127.0.0.1", small.port), timeout=10) as s:
        s.sendall(post(b"", b"Expect: 100-continue\r\nContent-Length: \xb2\r\n"))
        raw = read_until_closed(s)               # no body sent: answered without one
    assert b"100 Continue" not in raw
    assert_refused(raw, 400, "Content-Length")


# -- Content-Length ----------------------------------------------------------------------------


@pytest.mark.parametrize("value", [b"\xb2", "\u00b2".encode(), b"+48", b"4 8", b"0x30", b"48,48",
                                   b"-1", b"1e3"])
def test_content_length_that_is_not_ascii_digits_is_400(small, value):
    raw = raw_request(small, post(DRY_RUN, b"Content-Length: " + value + b"\r\n"))
    assert_refused(raw, 400, "Content-Length")


def test_content_length_of_a_get_that_is_not_digits_is_400(small):
    raw = raw_request(small, b"GET /health HTTP/1.1\r\nHost: localhost\r\n"
                             b"Content-Length: \xb2\r\n\r\n")
    assert_refused(raw, 400, "Content-Length")


def test_differing_duplicate_content_lengths_are_400(small):
    framing = b"Content-Length: %d\r\nContent-Length: 3\r\n" % len(DRY_RUN)
    raw = raw_request(small, post(DRY_RUN, framing))
    assert_refused(raw, 400, "Content-Length")


def test_equal_duplicate_content_lengths_are_served(small):
    framing = b"Content-Length: %d\r\nContent-Length: %d\r\nConnection: close\r\n" % (
        len(DRY_RUN), len(DRY_RUN))
    assert status_of(raw_request(small, post(DRY_RUN, framing))) == 200


def test_content_length_with_thousands_of_digits_is_413(small):
    raw = raw_request(small, post(b"", b"Content-Length: " + b"9" * 5000 + b"\r\n"))
    assert status_of(raw) == 413 and b"max_request_body_bytes" in raw


# -- header syntax (RFC 9112 5) ----------------------------------------------------------------


SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: localhost\r\n\r\n"


@pytest.mark.parametrize("bad_line", [b"no-colon-here", b"Content-Length : 0",
                                      b" X-Folded-First: 1", b"X-A: 1\r\n continued",
                                      b"X-A: a\rX-B: b", b"From here", b"X-A: a\x00b"])
def test_malformed_header_line_is_400_and_the_body_is_never_a_second_request(small, bad_line):
    request = (b"POST /health HTTP/1.1\r\nHost: localhost\r\n" + bad_line + b"\r\n"
               b"Content-Length: %d\r\n\r\n" % len(SMUGGLED) + SMUGGLED)
    raw = raw_request(small, request)
    assert_refused(raw, 400, "header")
    assert "/smuggled" not in "\n".join(small.app.log.lines)


def test_message_for_a_header_line_without_a_colon_names_the_line(small):
    raw = raw_request(small, b"GET /health HTTP/1.1\r\nHost: localhost\r\nno-colon-here\r\n\r\n")
    assert "no-colon-here" in message_of(raw)


# -- query numbers -----------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["1" * 5000, "9" * 19, "%D9%A3", "%C2%B2", "1e3", "0x10"],
                         ids=["5000-digits", "19-digits", "arabic-3", "superscript-2", "1e3",
                              "0x10"])
def test_query_integer_that_is_huge_or_not_ascii_digits_is_400_naming_the_parameter(server, value):
    reply = server.get("/api/v1/sessions?limit=" + value)
    assert reply.status == 400, reply
    assert reply.json()["message"].startswith("limit: ") and len(reply.body) < 1000


def test_ordinary_query_integers_still_work(server):
    assert server.get("/api/v1/sessions?limit=5&offset=0").status == 200


# -- JSON text that is not Unicode -------------------------------------------------------------


@pytest.fixture
def pidfile(tmp_path, monkeypatch):
    """Where a fake CLI would write its pid if one were started."""
    path = tmp_path / "fake.pid"
    monkeypatch.setenv("FAKE_CLI_PIDFILE", str(path))
    return path


def surrogate_message(reply) -> str:
    """The error message of a 400 answer to a body holding a lone surrogate: the body is
    strict UTF-8 and shows the surrogate as an escape, never as the raw code point."""
    assert reply.status == 400, reply
    reply.body.decode("utf-8")                          # strict: the answer is encodable
    body = reply.json()
    message = body["error"]["message"] if isinstance(body["error"], dict) else body["message"]
    assert "\\ud800" in message or "\\udfff" in message, message
    return message


def no_backend_started(pidfile) -> bool:
    """True when no fake CLI wrote its pid within a second (a started one does at once)."""
    return not wait_for(pidfile.exists, 1.0)


def test_lone_surrogate_in_a_prompt_is_400_naming_the_field_and_starts_nothing(server, pidfile):
    reply = server.post("/api/v1/prompt", {"backend": "claude", "prompt": "a\ud800b"})
    assert surrogate_message(reply).startswith("prompt: ")
    assert reply.json()["field"] == "prompt" and reply.json()["error"] == "invalid_request"
    assert no_backend_started(pidfile)


def test_lone_surrogate_in_an_openai_message_is_400_in_the_openai_shape(server, pidfile):
    reply = server.post("/openai/v1/chat/completions", {
        "model": "claude", "messages": [{"role": "user", "content": "\ud800"}]})
    assert surrogate_message(reply).startswith("messages[0].content: ")
    assert reply.json()["error"]["param"] == "messages[0].content"
    assert no_backend_started(pidfile)


def test_lone_surrogate_in_an_anthropic_message_is_400_in_the_anthropic_shape(server, pidfile):
    reply = server.post("/anthropic/v1/messages", {
        "model": "claude", "max_tokens": 8,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "x\udfff"}]}]})
    assert reply.json()["type"] == "error"
    assert surrogate_message(reply).startswith("messages[0].content[0].text: ")
    assert no_backend_started(pidfile)


def test_lone_surrogate_in_an_object_key_of_an_unknown_field_is_400_too(server, pidfile):
    reply = server.post("/api/v1/prompt", {"backend": "claude", "prompt": "x",
                                           "metadata": {"\ud800key": "v"}})
    assert "metadata" in surrogate_message(reply)
    assert no_backend_started(pidfile)


def test_valid_surrogate_pair_is_an_ordinary_character(server):
    reply = server.post("/api/v1/prompt", {"backend": "claude", "prompt": "\U0001F600",
                                           "dry_run": True})
    assert reply.status == 200, reply


# -- SSE backpressure ----------------------------------------------------------------------------


class CountingChunks:
    """``total`` chunks of ``size`` bytes, counting how many were taken and whether the
    iteration was closed."""

    def __init__(self, total: int, size: int = 1024) -> None:
        self.total = total
        self.chunk = b"data: " + b"x" * (size - 8) + b"\n\n"
        self.taken = 0
        self.closed = threading.Event()

    def __iter__(self):
        try:
            while self.taken < self.total:
                self.taken += 1
                yield self.chunk
        finally:
            self.closed.set()


def test_keepalive_stream_buffers_a_bounded_number_of_chunks_for_a_reader_that_stops():
    source = CountingChunks(100000)
    resp = http.StreamResponse(source, sse.CONTENT_TYPE, keepalive_secs=30,
                               keepalive_chunk=sse.COMMENT_KEEPALIVE)
    reader = http.with_keepalive(resp)
    next(reader)                                  # the writer took one chunk, then stalls
    # With nobody reading, an unbounded pump would take all 100000 chunks in a moment.
    wait_for(lambda: source.taken >= source.total, 2.0)
    assert source.taken <= http.STREAM_BUFFER_CHUNKS + 2
    reader.close()
    assert source.closed.wait(5), "the source was not closed after the writer gave up"


def test_keepalive_stream_still_fills_silence_and_then_delivers_everything():
    def slow():
        time.sleep(0.3)
        for i in range(100):
            yield b"%d\n" % i

    resp = http.StreamResponse(slow(), sse.CONTENT_TYPE, keepalive_secs=0.05,
                               keepalive_chunk=b": k\n")
    out = list(http.with_keepalive(resp))
    assert out[0] == b": k\n"
    assert [c for c in out if c != b": k\n"] == [b"%d\n" % i for i in range(100)]


def test_sse_client_that_stops_reading_holds_the_producer_back(server):
    source = CountingChunks(200000)
    server.app.add_route(Spec("GET", "/extra/flood", "getFlood", "Meta", "Flood"),
                         lambda ctx: sse.response(source, sse.COMMENT_KEEPALIVE, 30))
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        s.settimeout(10)
        s.connect(("127.0.0.1", server.port))
        s.sendall(b"GET /extra/flood HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 200")
        # Then read nothing more. The kernel buffers hold a few MiB (a few thousand 1 KiB
        # chunks); an unbounded server queue would take all 200000 (200 MB) at once.
        wait_for(lambda: source.taken >= source.total, 3.0)
        assert source.taken < 20000, "the stream took %d chunks" % source.taken
    finally:
        s.close()
    assert source.closed.wait(10)


# -- server.max_connections ----------------------------------------------------------------------


def test_connection_limiter_hands_the_longest_idle_slot_to_a_newcomer():
    slots = ConnectionLimiter(2)
    assert slots.admit("a") == (True, None) and slots.admit("b") == (True, None)
    slots.mark_idle("b")
    slots.mark_idle("a")
    assert slots.admit("c") == (True, "b")          # idle longest
    assert slots.mark_head("b") is False             # its thread closes it
    slots.release("b")
    assert slots.open == 2 and slots.idle == 1


def test_connection_limiter_spares_connections_being_served_or_just_sending():
    now = [100.0]
    slots = ConnectionLimiter(2, slow_head_secs=2.0, clock=lambda: now[0])
    slots.admit("served")
    slots.admit("sending")
    slots.mark_served("served")
    slots.mark_head("sending")
    now[0] += 1.9
    assert slots.admit("new") == (False, None)
    slots.mark_idle("sending")
    assert slots.admit("new", quiet=lambda c: False) == (False, None)    # its bytes arrived
    slots.release("sending")
    assert slots.admit("new") == (True, None)


def test_connection_limiter_reclaims_a_connection_dripping_its_head():
    now = [100.0]
    slots = ConnectionLimiter(1, slow_head_secs=2.0, clock=lambda: now[0])
    slots.admit("dripper")
    slots.mark_head("dripper")
    now[0] += 2.0
    assert slots.admit("new") == (True, "dripper")
    assert slots.mark_served("dripper") is False


def closed_by_peer(s: socket.socket) -> bool:
    """True once the server has closed ``s`` (EOF or reset, possibly after a 503)."""
    if not select.select([s], [], [], 0)[0]:
        return False
    try:
        data = s.recv(65536, socket.MSG_PEEK)
    except OSError:
        return True
    return data == b"" or data.startswith(b"HTTP/1.1 503")


def connect_all(port: int, count: int) -> List[socket.socket]:
    return [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(count)]


def test_idle_connections_over_max_connections_are_closed_and_requests_still_served(
        start_server):
    srv = start_server(**{"server.max_connections": 8})
    socks = connect_all(srv.port, 50)
    try:
        assert wait_for(lambda: sum(not closed_by_peer(s) for s in socks) <= 8, 10), \
            "%d of 50 idle connections still open" % sum(not closed_by_peer(s) for s in socks)
        assert srv.get("/health", timeout=5).status == 200
        assert srv.post("/api/v1/prompt", {"backend": "claude", "prompt": "hi"},
                        timeout=10).status == 200
    finally:
        for s in socks:
            s.close()
    assert wait_for(lambda: srv.httpd.connections.open == 0, 10)


def test_connection_over_max_connections_gets_a_503_when_none_is_idle(start_server):
    srv = start_server(**{"server.max_connections": 2})
    srv.httpd.connections.slow_head_secs = 60.0     # the two below are not slow yet
    busy = connect_all(srv.port, 2)
    try:
        for s in busy:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\n")     # mid-request
        assert wait_for(lambda: srv.httpd.connections.open == 2
                        and srv.httpd.connections.idle == 0, 5)
        raw = raw_request(srv, b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert status_of(raw) == 503 and b"server.max_connections" in raw
        assert b"connection: close" in raw.lower() and b"retry-after" in raw.lower()
        for s in busy:
            s.sendall(b"Connection: close\r\n\r\n")
            assert status_of(read_until_closed(s)) == 200
    finally:
        for s in busy:
            s.close()
    assert wait_for(lambda: srv.httpd.connections.open == 0, 5)
    assert srv.get("/health").status == 200


def test_connections_dripping_their_request_head_make_room_for_a_request(start_server):
    srv = start_server(**{"server.max_connections": 4})
    srv.httpd.connections.slow_head_secs = 0.5
    drippers = connect_all(srv.port, 4)
    try:
        for s in drippers:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
        assert wait_for(lambda: srv.httpd.connections.open == 4
                        and srv.httpd.connections.idle == 0, 5)
        time.sleep(0.6)                           # now they are slow
        assert srv.get("/health", timeout=5).status == 200
        assert wait_for(lambda: any(closed_by_peer(s) for s in drippers), 5)
    finally:
        for s in drippers:
            s.close()


def test_every_connection_gives_its_slot_back(start_server):
    srv = start_server(**{"server.max_connections": 4})
    for _ in range(6):
        assert srv.get("/health").status == 200
    raw_request(srv, b"GET /health HTTP/1.1\r\nHost: localhost\r\nno-colon\r\n\r\n")
    raw_request(srv, b"BAD\r\n\r\n")
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
        s.sendall(b"GET /health HTTP/1.1\r\n")              # and hang up mid-request
    socks = connect_all(srv.port, 10)                       # 6 of them reclaimed or refused
    for s in socks:
        s.close()
    assert wait_for(lambda: srv.httpd.connections.open == 0, 10), \
        "%d connection slots still held" % srv.httpd.connections.open


def test_max_connections_is_a_setting_with_a_default(server):
    assert server.app.cfg.get("server.max_connections") == 512
    assert server.httpd.connections.limit == 512
