"""The stored responses of the Responses API in Redis (``server.store``): ``ResponseStore``
with its files replaced by keys under the store's prefix, so a response stored through any
node (or by the worker that ran a background one) is read, listed, continued, cancelled and
deleted through any other, with the same promises (per-key scope, the same bounds):

- ``response:<id>``: the record (``StoredResponse.to_dict``), as JSON; with
  ``server.responses_retention_days`` set it expires that long after its last write, as a
  file unwritten that long is removed;
- ``responses:by_time``: a sorted set of every stored id scored by its last write (Unix
  time), from which the oldest go first past ``server.responses_max_stored``, and the ids of
  records that expired are dropped.

A write and its score change in one MULTI/EXEC. The bounds are applied at every new
response by one Lua script that takes the ids to remove off the set (so two nodes pruning at
once never remove more than the bounds ask), then their records are deleted.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any, Callable, Iterator, List, Optional, Tuple

from .. import jsontext
from ..redisclient import Client, RedisError, ReplyError, Script
from ..sessions import Access
from .response_store import ResponseStore, ResponseStoreError, StoredResponse, is_response_id

# KEYS[1] the set; ARGV[1] the count bound, ARGV[2] the oldest score kept ("" = no age bound).
# Returns the ids removed from the set: those written before ARGV[2], then the oldest beyond
# the count.
_PRUNE = Script(
    "local doomed = {} "
    "if ARGV[2] ~= '' then "
    "  doomed = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[2]) "
    "  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[2]) "
    "end "
    "local excess = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[1]) "
    "if excess > 0 then "
    "  local popped = redis.call('ZPOPMIN', KEYS[1], excess) "
    "  for i = 1, #popped, 2 do doomed[#doomed + 1] = popped[i] end "
    "end "
    "return doomed")


class RedisResponseStore(ResponseStore):
    """Responses in Redis through ``client``; safe for many threads and processes at once.
    ``clock`` gives the Unix time a write is scored with (tests move it)."""

    def __init__(self, client: Client, max_stored: int, max_age_secs: float = 0,
                 clock: Callable[[], float] = time.time) -> None:
        self.client = client
        self.dir = client.url.redacted()
        self.max_stored = max_stored
        self.max_age = max_age_secs
        self._clock = clock
        self._by_time = client.key("responses:by_time")

    def _key(self, response_id: str) -> str:
        return self.client.key("response:" + response_id)

    @contextlib.contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        """The block's RedisErrors as the ResponseStoreError the API answers 503 with."""
        try:
            yield
        except RedisError as exc:
            raise ResponseStoreError("the response store (Redis, %s) cannot be %s: %s; "
                                     "retry once it is back" % (self.dir, action, exc)) \
                from None

    def add(self, record: StoredResponse) -> None:
        """Save a new response, then remove the oldest beyond the bounds."""
        with self._errors("written"):
            self._transaction([self._set(record), ("ZADD", self._by_time, self._clock(),
                                                    record.id)])
            self._prune()

    def update(self, record: StoredResponse) -> bool:
        """Save a response again (a background run's progress), unless it was deleted
        meanwhile; False then."""
        with self._errors("written"):
            replies = self._transaction([self._set(record) + ("XX",),
                                         ("ZADD", self._by_time, "XX", self._clock(),
                                          record.id)])
        return replies[0] is not None

    def get(self, response_id: str, access: Access) -> Optional[StoredResponse]:
        """The response, if it exists and ``access`` allows its owner; None otherwise."""
        if not is_response_id(response_id):
            return None
        with self._errors("read"):
            raw = self.client.execute("GET", self._key(response_id))
        record = _record_of(raw)
        return record if record is not None and access.allows(record.owner) else None

    def delete(self, response_id: str) -> None:
        with self._errors("written"):
            self._transaction([("DEL", self._key(response_id)),
                               ("ZREM", self._by_time, response_id)])

    def _set(self, record: StoredResponse) -> Tuple[Any, ...]:
        command: Tuple[Any, ...] = ("SET", self._key(record.id),
                                    jsontext.dumps_compact(record.to_dict()))
        if self.max_age:
            command += ("PX", max(1, int(self.max_age * 1000)))
        return command

    def _transaction(self, commands: List[Tuple[Any, ...]]) -> List[Any]:
        """The replies of ``commands`` run as one MULTI/EXEC."""
        replies = self.client.pipeline([("MULTI",)] + commands + [("EXEC",)])
        failed = [r for r in replies if isinstance(r, ReplyError)]
        if failed:
            raise failed[0]
        return replies[-1]

    def _prune(self) -> None:
        cutoff = repr(self._clock() - self.max_age) if self.max_age else ""
        doomed = self.client.run_script(_PRUNE, [self._by_time], [self.max_stored, cutoff])
        if doomed:
            self.client.execute("DEL", *[self._key(i.decode()) for i in doomed])


def _record_of(raw: Optional[bytes]) -> Optional[StoredResponse]:
    """The record in a key's value; None for none, or for one this store did not write."""
    if raw is None:
        return None
    try:
        data = jsontext.loads(raw.decode("utf-8"))
        return StoredResponse.from_dict(data) if isinstance(data, dict) else None
    except (ValueError, TypeError, KeyError):
        return None
