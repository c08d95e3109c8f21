"""``Idempotency-Key``: a client's retry of a request that starts agent runs gets the first
request's answer, never a second run (the header of draft-ietf-httpapi-idempotency-key-header).

A request to a route whose ``openapi.Operation`` has ``starts_runs`` set, carrying
``Idempotency-Key``, is run once per caller and key:

- the first time, the handler runs and its answer is kept: status, headers and body (a
  streamed body whole, as it was sent, keep-alives left out);
- the same key with the same request (method, target, body digest and ``X-Clinvk-*``
  headers) gets the kept answer with ``Idempotent-Replayed: true``; while the first request
  is still running, once it has finished;
- the same key with another request: 422 ``idempotency_key_reused``;
- the same key after a first request whose answer could not be kept: 409 (its client hung up
  or the server shut down, so its run was stopped; or its answer was over
  ``server.idempotency_max_answer_bytes``). The run is not repeated: a new key runs it again.

The caller is the API key's id (``keys.key_id``); without API keys, every caller shares one
scope. A kept answer is forgotten ``server.idempotency_window_secs`` after it was given, or
earlier, oldest first, when more than ``server.idempotency_max_keys`` keys or
``server.idempotency_max_stored_bytes`` of answers are held. Keys are held in this server
process's memory (in the shared store with ``server.store``: ``idempotency_shared``).
"""

from __future__ import annotations

import collections
import hashlib
import re
import threading
import time
from typing import Any, Callable, Dict, Iterator, List, NamedTuple, Optional, Tuple

from . import errors
from .http import Response, StreamResponse, close_iterator

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
NO_RETRY = ("X-Should-Retry", "false")

# Printable ASCII without spaces, as the keys clients generate (UUIDs, Stripe's and the
# Stainless SDKs' "stainless-...-retry-<uuid>"); 255 as Stripe's limit.
_SANE_KEY = re.compile(r"[\x21-\x7e]{1,255}\Z")
# Request headers that change what a request does besides its body (session, ephemeral).
_MEANINGFUL_HEADER_PREFIX = "x-clinvk-"
# How often a request waiting for the first one checks whether it was cancelled (its client
# gone, the server shutting down): the disconnect watcher notices a hang-up at this pace too.
_WAIT_SLICE_SECS = 0.5

Handler = Callable[[Any], Any]


class Answer(NamedTuple):
    """A kept answer: ``stream_type`` is the content type of a streamed one, "" for a whole
    one (whose ``headers`` then hold its Content-Type)."""

    status: int
    headers: Tuple[Tuple[str, str], ...]
    body: bytes
    stream_type: str


class Entry:
    """One key of one caller: the request it was first used for, and once that request has
    finished, its ``answer`` or why there is none (``lost``: an ApiError to answer instead)."""

    __slots__ = ("fingerprint", "settled", "answer", "lost", "expires")

    def __init__(self, fingerprint: bytes) -> None:
        self.fingerprint = fingerprint
        self.settled = threading.Event()
        self.answer: Optional[Answer] = None
        self.lost: Optional[errors.ApiError] = None
        self.expires = float("inf")         # set when settled: pending keys never expire

    @property
    def size(self) -> int:
        return len(self.answer.body) if self.answer is not None else 0


class IdempotencyKeys:
    """The keys of one server; ``answer(ctx, handle)`` answers a request with them.

    Tunables: ``window`` (seconds an answer is kept), ``max_keys``, ``max_answer_bytes`` (a
    larger answer is not kept), ``max_stored_bytes`` (all kept answers together)."""

    def __init__(self, window: float, max_keys: int, max_answer_bytes: int,
                 max_stored_bytes: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.window = window
        self.max_keys = max_keys
        # An answer larger than all the room there is would be dropped as soon as kept.
        self.max_answer_bytes = min(max_answer_bytes, max_stored_bytes)
        self.max_stored_bytes = max_stored_bytes
        self.clock = clock
        self._lock = threading.Lock()
        self._entries: Dict[Tuple[str, str], Entry] = {}
        # Settled entries, the oldest settled first: expiry and eviction take from the front.
        self._settled: "collections.OrderedDict[Tuple[str, str], Entry]" = \
            collections.OrderedDict()
        self._stored_bytes = 0

    @classmethod
    def from_config(cls, cfg: Any) -> "IdempotencyKeys":
        return cls(cfg.get("server.idempotency_window_secs"),
                   cfg.get("server.idempotency_max_keys"),
                   cfg.get("server.idempotency_max_answer_bytes"),
                   cfg.get("server.idempotency_max_stored_bytes"))

    def __len__(self) -> int:
        return len(self._entries)

    def answer(self, ctx: Any, handle: Handler) -> Any:
        """``handle(ctx)`` (which answers every failure with a Response rather than raising)
        for a request without a key or with a new one; else the key's kept answer, waiting
        for it while the first request runs. Raises an ApiError for a malformed key (400),
        one used for another request (422), one whose answer was lost (409), and when every
        key slot belongs to a request still running (503)."""
        key = request_key(ctx)
        if key is None:
            return handle(ctx)
        fingerprint = request_fingerprint(ctx)
        slot = (ctx.api_key.key_id if ctx.api_key is not None else "", key)
        with self._lock:
            self._expire()
            entry = self._entries.get(slot)
            first = entry is None
            if first:
                entry = self._admit(slot, fingerprint)
        if entry.fingerprint != fingerprint:
            raise reused(self.window)
        if first:
            return self._first(ctx, slot, entry, handle)
        wait_for(ctx, entry)
        if entry.lost is not None:
            raise entry.lost
        return replay(entry.answer)

    # -- the first request with a key ---------------------------------------------------------

    def _first(self, ctx: Any, slot: Tuple[str, str], entry: Entry, handle: Handler) -> Any:
        """Run the handler and keep its answer; a stream's as it is written. Whatever way
        the request ends, the entry is settled by then, so no waiter waits forever."""
        ctx.on_finish(lambda: self._settle(slot, entry, lost=cancelled_first()))
        resp = handle(ctx)
        if isinstance(resp, StreamResponse):
            resp.chunks = self._recorded(ctx, slot, entry, resp, iter(resp.chunks))
        elif ctx.cancel.fired:
            self._settle(slot, entry, lost=cancelled_first())
        elif len(resp.body) > self.max_answer_bytes:
            self._settle(slot, entry, lost=too_large(self.max_answer_bytes))
        else:
            self._settle(slot, entry, Answer(resp.status, tuple(resp.headers), resp.body, ""))
        return resp

    def _recorded(self, ctx: Any, slot: Tuple[str, str], entry: Entry,
                  resp: StreamResponse, source: Iterator[bytes]) -> Iterator[bytes]:
        """The chunks of ``source`` (``resp``'s own), passed on as they come and recorded;
        settles ``entry`` when the stream ends: with the whole body, or as lost when it was
        cut (client gone) or grew past ``max_answer_bytes``."""
        status, headers, content_type = resp.status, tuple(resp.headers), resp.content_type
        parts: Optional[List[bytes]] = []
        size = 0
        complete = False
        try:
            for chunk in source:
                size += len(chunk)
                if size > self.max_answer_bytes:
                    parts = None
                elif parts is not None:
                    parts.append(chunk)
                yield chunk
            complete = True
        finally:
            close_iterator(source)
            if not complete or ctx.cancel.fired:
                self._settle(slot, entry, lost=cancelled_first())
            elif parts is None:
                self._settle(slot, entry, lost=too_large(self.max_answer_bytes))
            else:
                self._settle(slot, entry, Answer(status, headers, b"".join(parts),
                                                 content_type))

    # -- the table ----------------------------------------------------------------------------

    def _admit(self, slot: Tuple[str, str], fingerprint: bytes) -> Entry:
        """A new pending entry (lock held), after dropping, at ``max_keys``, the oldest
        kept answer; 503 when every key is a request still running."""
        if len(self._entries) >= self.max_keys:
            if not self._settled:
                raise keys_full(self.max_keys)
            self._drop_oldest()
        entry = Entry(fingerprint)
        self._entries[slot] = entry
        return entry

    def _settle(self, slot: Tuple[str, str], entry: Entry, answer: Optional[Answer] = None,
                lost: Optional[errors.ApiError] = None) -> None:
        """Give ``entry`` its answer (or ``lost``) and wake its waiters; only the first call
        counts."""
        with self._lock:
            if entry.settled.is_set():
                return
            entry.answer, entry.lost = answer, lost
            entry.expires = self.clock() + self.window
            entry.settled.set()
            if self._entries.get(slot) is not entry:
                return                       # dropped meanwhile: nothing to account
            self._settled[slot] = entry
            self._stored_bytes += entry.size
            while self._stored_bytes > self.max_stored_bytes and self._settled:
                self._drop_oldest()

    def _expire(self) -> None:
        now = self.clock()
        while self._settled:
            entry = next(iter(self._settled.values()))
            if entry.expires > now:
                return
            self._drop_oldest()

    def _drop_oldest(self) -> None:
        slot, entry = self._settled.popitem(last=False)
        del self._entries[slot]
        self._stored_bytes -= entry.size


# -- the request --------------------------------------------------------------------------------


def request_key(ctx: Any) -> Optional[str]:
    """The request's Idempotency-Key (None without one); 400 naming the header when it is
    not one short printable token or is sent more than once."""
    values = ctx.headers.get_all(HEADER) or []
    if not values:
        return None
    if len(values) > 1:
        raise bad_key("send it once, got %d values" % len(values))
    key = values[0].strip()
    if not _SANE_KEY.match(key):
        raise bad_key("got %d characters%s" % (len(key), "" if key.isprintable() else
                                               ", some of them not printable"))
    return key


def request_fingerprint(ctx: Any) -> bytes:
    """SHA-256 over the method, the target, the ``X-Clinvk-*`` headers and the body: what
    must be the same for a request to be a retry of another."""
    digest = hashlib.sha256()
    digest.update(("%s %s\n" % (ctx.method, ctx.target)).encode("utf-8", "replace"))
    meaningful = sorted((name.lower(), value.strip()) for name, value in ctx.headers.items()
                        if name.lower().startswith(_MEANINGFUL_HEADER_PREFIX))
    for name, value in meaningful:
        digest.update(("%s: %s\n" % (name, value)).encode("utf-8", "replace"))
    digest.update(b"\n")
    digest.update(ctx.read_body())
    return digest.digest()


def wait_for(ctx: Any, entry: Entry) -> None:
    """Wait until ``entry`` is settled; 503 if this request is cancelled meanwhile (its
    client hangs up, the server shuts down)."""
    ctx.watch_client()
    try:
        while not entry.settled.wait(_WAIT_SLICE_SECS):
            if ctx.cancel.fired:
                raise errors.cancelled("the request was cancelled while it waited for the "
                                       "first request with its Idempotency-Key to finish "
                                       "(client gone or server shutting down)")
    finally:
        ctx.unwatch_client()


def replay(answer: Answer) -> Any:
    """The kept answer again, marked ``Idempotent-Replayed: true``; a streamed one as one
    chunk of a stream."""
    headers = list(answer.headers) + [(REPLAYED_HEADER, "true")]
    if answer.stream_type:
        return StreamResponse(iter((answer.body,)), answer.stream_type, answer.status, headers)
    resp = Response(answer.status, headers=headers)     # the kept headers hold Content-Type
    resp.body = answer.body
    return resp


# -- errors -------------------------------------------------------------------------------------


def bad_key(problem: str) -> errors.ApiError:
    return errors.ApiError(400, "invalid_idempotency_key", "the Idempotency-Key header must be "
                           "1 to 255 printable ASCII characters without spaces (a UUID, for "
                           "example): %s" % problem, field=HEADER)


def reused(window: float) -> errors.ApiError:
    """422, as the Idempotency-Key draft has it: the key was used for another request."""
    return errors.ApiError(422, "idempotency_key_reused", "this Idempotency-Key was used "
                           "within the last %ds for a different request (another method, path, "
                           "body or X-Clinvk-* header); send a new key with a new request"
                           % window, field=HEADER, headers=dict([NO_RETRY]))


def cancelled_first() -> errors.ApiError:
    return errors.ApiError(409, "idempotent_request_cancelled", "the first request with this "
                           "Idempotency-Key was cancelled before its answer was complete (its "
                           "client hung up, or the server shut down), which stopped its run, "
                           "possibly part way; it is not run again under the same key: send a "
                           "new Idempotency-Key to run it again", field=HEADER,
                           headers=dict([NO_RETRY]))


def too_large(limit: int) -> errors.ApiError:
    return errors.ApiError(409, "idempotent_answer_not_kept", "the answer to the first request "
                           "with this Idempotency-Key was over %d bytes "
                           "(server.idempotency_max_answer_bytes), so it was not kept; its run is "
                           "not repeated under the same key: send a new Idempotency-Key to run "
                           "it again" % limit, field=HEADER, headers=dict([NO_RETRY]))


def keys_full(limit: int) -> errors.ApiError:
    return errors.ApiError(503, "idempotency_keys_full", "all %d idempotency keys "
                           "(server.idempotency_max_keys) belong to requests still running; "
                           "retry when one has finished" % limit, headers={"Retry-After": "1"})
