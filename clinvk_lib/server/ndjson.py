"""The native API's stream: unified events as NDJSON (``application/x-ndjson``), one per line.

Each event becomes one chunk of bytes the server writes and flushes on its own, so a client
sees it as soon as the backend produced it. The stream always ends with a ``done`` event: if
the event source fails part way, an ``error`` event and then ``done`` close it, so a client
never has to guess whether a stream was cut. While the source is silent for
``server.sse_keepalive_secs``, a blank line goes out (``response``): NDJSON readers skip blank
lines, and proxies do not cut a stream that is quiet for minutes.
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator, Optional, Tuple

from .. import events as ev
from .http import StreamResponse, close_iterator, dump_json

CONTENT_TYPE = "application/x-ndjson"
KEEPALIVE = b"\n"


def response(lines: Iterable[bytes], keepalive_secs: float,
             headers: Iterable[Tuple[str, str]] = ()) -> StreamResponse:
    """A streamed 200 of NDJSON ``lines``, with a blank line after every ``keepalive_secs``
    of silence (0 = never)."""
    return StreamResponse(lines, CONTENT_TYPE, headers=headers,
                          keepalive_secs=keepalive_secs, keepalive_chunk=KEEPALIVE)


def encode_event(event: ev.Event) -> bytes:
    """One event as one compact JSON line (UTF-8, ending in ``\\n``)."""
    return dump_json(event.to_dict()) + b"\n"


def ndjson_lines(events: Iterable[ev.Event], backend: str, session_id: str = "",
                 describe_failure: Callable[[BaseException], str] = str) -> Iterator[bytes]:
    """The lines of a stream over ``events``. If iterating ``events`` raises, the stream
    still ends properly: an ``error`` event (message from ``describe_failure(exc)``) and, if
    none came yet, a ``done`` event. ``backend``/``session_id`` stamp those closing events."""
    last: Optional[ev.Event] = None
    source = iter(events)
    try:
        for event in source:
            last = event
            yield encode_event(event)
    except Exception as exc:  # noqa: BLE001 - any failure must still close the stream
        if last is not None and last.type == ev.DONE:
            return
        failure = ev.error(backend, describe_failure(exc), code="stream_failed")
        failure.session_id = session_id
        yield encode_event(failure)
        closing = ev.done(backend, exit_code=1)
        closing.session_id = session_id
        yield encode_event(closing)
    finally:
        # Closing the lines early (client gone) closes the source now, which stops the run.
        close_iterator(source)
