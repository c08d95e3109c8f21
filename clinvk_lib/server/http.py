"""What a handler answers: ``Response`` (a whole body) or ``StreamResponse`` (chunks sent as
they come, with keep-alive chunks to fill silence), and the JSON helpers every route uses.

A leaf: it knows HTTP bodies and headers, nothing of the App, the request or the socket.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from typing import Any, Iterable, Iterator, Tuple

from ..jsontext import dumps_compact

JSON_TYPE = "application/json"

# How many chunks a stream's producer may run ahead of the client. Past it the producer waits,
# so the backend's stdout pipe fills and the backend itself waits: a client that stops reading
# holds this many chunks plus the socket buffers, however much the backend prints.
STREAM_BUFFER_CHUNKS = 16


def is_json_media_type(content_type: str) -> bool:
    """True for ``application/json`` and ``application/*+json`` (RFC 6839), any case, with
    or without parameters (``; charset=utf-8``). False for a missing Content-Type: a browser
    page can send a Blob body with none and no CORS preflight, so a body is JSON only when it
    says so."""
    media = content_type.split(";", 1)[0].strip().lower()
    return media == JSON_TYPE or (media.startswith("application/") and media.endswith("+json"))


class Response:
    """A whole response: status, body bytes, headers as (name, value) pairs."""

    __slots__ = ("status", "body", "headers")

    def __init__(self, status: int, body: bytes = b"", content_type: str = JSON_TYPE,
                 headers: Iterable[Tuple[str, str]] = ()) -> None:
        self.status = status
        self.body = body
        self.headers = list(headers)
        if body or content_type != JSON_TYPE:
            self.headers.insert(0, ("Content-Type", content_type))


class StreamResponse:
    """A response whose body is written chunk by chunk as ``chunks`` yields them, each sent
    to the client at once (HTTP/1.1 chunked encoding). With ``keepalive_secs``, the
    ``keepalive_chunk`` is sent whenever ``chunks`` stays silent that long (SSE comments)."""

    def __init__(self, chunks: Iterable[bytes], content_type: str, status: int = 200,
                 headers: Iterable[Tuple[str, str]] = (), keepalive_secs: float = 0.0,
                 keepalive_chunk: bytes = b"") -> None:
        self.chunks = chunks
        self.content_type = content_type
        self.status = status
        self.headers = list(headers)
        self.keepalive_secs = keepalive_secs
        self.keepalive_chunk = keepalive_chunk

    def body(self) -> Iterator[bytes]:
        """The chunks to write, keep-alive chunks included; close it when the writer stops
        (a client gone), so that the producer of ``chunks`` stops too."""
        if self.keepalive_secs > 0:
            return with_keepalive(self)
        return iter(self.chunks)


def with_keepalive(resp: StreamResponse) -> Iterator[bytes]:
    """``resp.chunks`` read by a helper thread, so that silence longer than
    ``resp.keepalive_secs`` can be filled with ``resp.keepalive_chunk``. The thread runs at
    most STREAM_BUFFER_CHUNKS ahead of the writer, and when the writer stops (client gone) it
    stops too and closes ``resp.chunks``."""
    items: "queue.Queue[Any]" = queue.Queue(STREAM_BUFFER_CHUNKS)
    end = object()
    stop = threading.Event()

    def pump() -> None:
        source = iter(resp.chunks)
        try:
            for chunk in source:
                items.put(chunk)            # waits while the writer is STREAM_BUFFER_CHUNKS behind
                if stop.is_set():
                    break
        finally:
            close_iterator(source)
            items.put(end)

    threading.Thread(target=pump, name="clinvk-stream-pump", daemon=True).start()
    try:
        while True:
            try:
                item = items.get(timeout=resp.keepalive_secs)
            except queue.Empty:
                yield resp.keepalive_chunk
                continue
            if item is end:
                return
            yield item
    finally:
        stop.set()
        # Free the queue so a pump waiting in put() wakes, sees ``stop`` and closes the
        # source; after ``stop`` it puts at most two more items (a chunk and ``end``).
        with contextlib.suppress(queue.Empty):
            while True:
                items.get_nowait()


def json_response(obj: Any, status: int = 200,
                  headers: Iterable[Tuple[str, str]] = ()) -> Response:
    return Response(status, dump_json(obj), JSON_TYPE, headers)


def dump_json(obj: Any) -> bytes:
    """Compact UTF-8 JSON (no spaces, non-ASCII kept as it is): every JSON body the server
    writes."""
    return dumps_compact(obj).encode("utf-8")


def close_iterator(source: Any) -> None:
    """Close ``source`` (a generator, or any iterator with ``close``) now rather than when it
    is garbage: closing the chunks or events of a run whose client has gone stops the
    backend."""
    close = getattr(source, "close", None)
    if close is not None:
        close()
