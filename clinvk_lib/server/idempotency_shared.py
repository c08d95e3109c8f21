"""``Idempotency-Key`` across nodes: the keys in the shared store (``server.store``), so a
retry that reaches another node gets the first request's answer, never a second run.

The same promises as ``idempotency`` (which this reuses for everything but the table), with
the table in Redis: one key per caller and Idempotency-Key, ``idem:<sha256>``, holding JSON.
The first request claims it with ``SET NX`` (``pending``, with its fingerprint); its answer,
or why it was lost, replaces it once settled, and expires ``server.idempotency_window_secs``
later. A request that finds the key pending on any node polls it until it is settled.

What differs: a pending key expires after the window too (a node that died mid-request would
otherwise hold it forever), so a first request still running after the window may be run
again by a retry; ``server.idempotency_max_keys`` and ``server.idempotency_max_stored_bytes``
do not apply (Redis' own ``maxmemory`` bounds the table); while Redis cannot be reached a
request with a key gets 503 ``idempotency_store_unavailable`` (one without a key runs).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import time
from typing import Any, Dict, Iterator, Optional, Tuple

from .. import jsontext
from ..redisclient import Client, RedisError
from . import errors
from .idempotency import (Answer, Entry, Handler, IdempotencyKeys, cancelled_first, replay,
                          request_fingerprint, request_key, reused, too_large, wait_for)

PENDING, ANSWERED, CANCELLED, TOO_LARGE = "pending", "answered", "cancelled", "too_large"


class SharedIdempotencyKeys(IdempotencyKeys):
    """``IdempotencyKeys`` with the table in Redis through ``client``."""

    POLL_SECS = 0.1

    def __init__(self, client: Client, window: float, max_answer_bytes: int) -> None:
        # The table's own bounds are Redis' (maxmemory): the count bound is unused here.
        super().__init__(window, 1, max_answer_bytes, max_answer_bytes)
        self.client = client

    @classmethod
    def from_store(cls, client: Client, cfg: Any) -> "SharedIdempotencyKeys":
        return cls(client, cfg.get("server.idempotency_window_secs"),
                   cfg.get("server.idempotency_max_answer_bytes"))

    def answer(self, ctx: Any, handle: Handler) -> Any:
        key = request_key(ctx)
        if key is None:
            return handle(ctx)
        fingerprint = request_fingerprint(ctx)
        slot = (ctx.api_key.key_id if ctx.api_key is not None else "", key)
        entry = self._claim(slot, fingerprint)
        if entry is None:
            return self._first(ctx, slot, Entry(fingerprint), handle)
        if entry.fingerprint != fingerprint:
            raise reused(self.window)
        wait_for(ctx, entry)
        if entry.lost is not None:
            raise entry.lost
        return replay(entry.answer)

    def _claim(self, slot: Tuple[str, str], fingerprint: bytes) -> Optional["_StoredEntry"]:
        """None when this request is the first with its key (it now holds it, pending), else
        the entry of the request that holds it."""
        pending = jsontext.dumps_compact({"state": PENDING, "fingerprint": fingerprint.hex()})
        while True:
            with _unavailable_as_503():
                if self.client.execute("SET", self._key(slot), pending, "NX",
                                       "PX", int(self.window * 1000)):
                    return None
            entry = _StoredEntry(self, self._key(slot))
            if entry.record is not None:
                return entry
            # It expired between the two commands: try to be the first again.

    def _settle(self, slot: Tuple[str, str], entry: Entry, answer: Optional[Answer] = None,
                lost: Optional[errors.ApiError] = None) -> None:
        """Store the first request's answer (or why it was lost); only the first call counts.
        A failure to store it is logged by nobody: the retries then wait out the window."""
        if entry.settled.is_set():
            return
        entry.settled.set()
        record: Dict[str, Any] = {"fingerprint": entry.fingerprint.hex()}
        if answer is not None:
            record.update(state=ANSWERED, status=answer.status,
                          headers=[list(h) for h in answer.headers],
                          body=base64.b64encode(answer.body).decode("ascii"),
                          stream_type=answer.stream_type)
        else:
            record["state"] = TOO_LARGE if lost is not None and \
                lost.code == "idempotent_answer_not_kept" else CANCELLED
        try:
            self.client.execute("SET", self._key(slot), jsontext.dumps_compact(record),
                                "PX", int(self.window * 1000))
        except RedisError:
            pass

    def _key(self, slot: Tuple[str, str]) -> str:
        caller, key = slot
        digest = hashlib.sha256(("%s\0%s" % (caller, key)).encode("utf-8")).hexdigest()
        return self.client.key("idem:" + digest)

    def __len__(self) -> int:
        return 0


class _StoredEntry:
    """A key another request holds, as ``idempotency.wait_for`` waits on an ``Entry``:
    ``settled.wait(timeout)`` polls Redis; once settled, ``answer`` or ``lost`` is set."""

    def __init__(self, keys: SharedIdempotencyKeys, key: str) -> None:
        self.keys = keys
        self.key = key
        self.answer: Optional[Answer] = None
        self.lost: Optional[errors.ApiError] = None
        self.settled = self
        self.record = self._read()
        self.fingerprint = bytes.fromhex((self.record or {}).get("fingerprint", ""))

    def _read(self) -> Optional[Dict[str, Any]]:
        with _unavailable_as_503():
            data = self.keys.client.execute("GET", self.key)
        return None if data is None else jsontext.loads(data)

    def wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.record is not None and self.record.get("state") == PENDING:
            if time.monotonic() >= deadline:
                return False
            time.sleep(self.keys.POLL_SECS)
            self.record = self._read()
        self._take(self.record)
        return True

    def _take(self, record: Optional[Dict[str, Any]]) -> None:
        """The answer, or why there is none (a key that expired while pending: its first
        request outlived the window, or its node died)."""
        state = (record or {}).get("state")
        if state == ANSWERED:
            self.answer = Answer(record["status"], tuple(tuple(h) for h in record["headers"]),
                                 base64.b64decode(record["body"]), record["stream_type"])
        elif state == TOO_LARGE:
            self.lost = too_large(self.keys.max_answer_bytes)
        else:
            self.lost = cancelled_first()


@contextlib.contextmanager
def _unavailable_as_503() -> Iterator[None]:
    """RedisError as 503 ``idempotency_store_unavailable``."""
    try:
        yield
    except RedisError as exc:
        raise errors.ApiError(503, "idempotency_store_unavailable", "the request's "
                              "Idempotency-Key cannot be checked: %s; retry once the store "
                              "(server.store) is back" % exc,
                              headers={"Retry-After": "1"}) from None
