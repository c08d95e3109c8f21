"""Server-sent events (``text/event-stream``) for the OpenAI- and Anthropic-compatible APIs:
the framing of one event, and the response that keeps a silent stream alive.

An agent turn can run for minutes without printing anything; proxies cut connections that stay
silent (nginx's default proxy_read_timeout is 60 s). While the backend is silent for
``server.sse_keepalive_secs``, the stream sends a keep-alive the client's SDK skips: a comment
line for OpenAI clients, a ``ping`` event for Anthropic ones (as the real APIs do). The waiting
happens in the server's stream writer (``StreamResponse.keepalive_secs``): a producer thread
feeds a queue that the writer reads with a timeout, so there is no polling. The queue is
small (``http.STREAM_BUFFER_CHUNKS``): a client that stops reading holds the producer, and so
the backend, back instead of making the server buffer the whole reply.
"""

from __future__ import annotations

from typing import Any, Iterable, Tuple

from .http import StreamResponse, dump_json

CONTENT_TYPE = "text/event-stream; charset=utf-8"


def frame(data: Any, event: str = "") -> bytes:
    """One event: an ``event:`` line when named, one ``data:`` line, and the blank line that
    ends it. ``data`` is sent as compact JSON (a ``str`` as it is, for ``[DONE]``); JSON
    escapes line breaks, so the data is always a single line."""
    if not isinstance(data, str):
        data = dump_json(data).decode("utf-8")
    head = "event: %s\n" % event if event else ""
    return ("%sdata: %s\n\n" % (head, data)).encode("utf-8")


# An SSE comment (a line starting with ":"): every SSE client ignores it (WHATWG HTML 9.2.6).
COMMENT_KEEPALIVE = b": keep-alive\n\n"
# The Anthropic Messages API's own keep-alive, which the Anthropic SDKs skip.
PING_KEEPALIVE = frame({"type": "ping"}, "ping")


def response(events: Iterable[bytes], keepalive: bytes, keepalive_secs: float,
             headers: Iterable[Tuple[str, str]] = ()) -> StreamResponse:
    """A streamed 200 of the framed ``events``, with ``keepalive`` sent after every
    ``keepalive_secs`` of silence (0 = never). The server adds Cache-Control: no-cache and
    X-Accel-Buffering: no (so nginx does not buffer the stream) to every stream."""
    return StreamResponse(events, CONTENT_TYPE, headers=headers,
                          keepalive_secs=keepalive_secs, keepalive_chunk=keepalive)
