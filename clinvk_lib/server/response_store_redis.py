"""The stored responses of the Responses API in Redis (``server.store``): ``ResponseStore``
with its files replaced by keys under the store's prefix, so a response stored through any
node (or by the worker that ran a background one) is read, listed, continued, cancelled and
deleted through any other, with the same promises (per-key scope, the same bounds):

- ``response:<id>``: the record (``StoredResponse.to_dict``), as JSON; with
  ``server.responses_retention_days`` set it expires that long after its last write, as a
  file unwritten that long is removed;
- ``responses:by_time``: a sorted set of every stored id scored by its last write (Unix
  time, microseconds), from which the oldest go first past ``server.responses_max_stored``,
  and the ids of records that expired are dropped.

Every time is Redis's own (``TIME`` inside the scripts, and the records' expiry), never a
node's: nodes whose clocks disagree still agree on what is old. A write and its score change
in one script; a prune is one script too, which takes the ids to remove off the set and
deletes their records (so two nodes pruning at once never remove more than the bounds ask,
and no crash leaves an id without its record or a record without its id). A record a
former two-step prune left without its id is deleted by the sweep each node makes every
``SWEEP_SECS`` (``_sweep_unindexed``).
"""

from __future__ import annotations

import contextlib
import time
from typing import Iterator, Optional

from .. import jsontext
from ..redisclient import Client, RedisError, ReplyError, Script
from ..sessions import Access
from .response_store import (AGE_SWEEP_SECS, ResponseStore, ResponseStoreError, StoredResponse,
                             is_response_id)

# KEYS[1] the record, KEYS[2] the set; ARGV[1] the id, ARGV[2] the record's JSON, ARGV[3] its
# lifetime in ms ("0" = none), ARGV[4] "XX" to write only over an existing record. Scores the
# id with Redis's clock; returns 1, or 0 when nothing was written.
_SAVE = Script("""
local set = {'SET', KEYS[1], ARGV[2]}
if ARGV[3] ~= '0' then set[#set + 1] = 'PX'; set[#set + 1] = ARGV[3] end
if ARGV[4] == 'XX' then set[#set + 1] = 'XX' end
if not redis.call(unpack(set)) then return 0 end
local now = redis.call('TIME')
redis.call('ZADD', KEYS[2], string.format('%d.%06d', now[1], now[2]), ARGV[1])
return 1
""")

# KEYS[1] the set; ARGV[1] the count bound, ARGV[2] the age bound in ms ("0" = none), ARGV[3]
# the prefix of the records' keys. Removes the ids written before Redis's now minus the age
# bound, then the oldest beyond the count, with their records; returns how many.
_PRUNE = Script("""
local doomed = {}
if ARGV[2] ~= '0' then
  local now = redis.call('TIME')
  local cutoff = (tonumber(now[1]) * 1000000 + tonumber(now[2])) - tonumber(ARGV[2]) * 1000
  local bound = string.format('(%d.%06d', math.floor(cutoff / 1000000), cutoff % 1000000)
  doomed = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', bound)
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', bound)
end
local excess = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[1])
if excess > 0 then
  local popped = redis.call('ZPOPMIN', KEYS[1], excess)
  for i = 1, #popped, 2 do doomed[#doomed + 1] = popped[i] end
end
for _, id in ipairs(doomed) do redis.call('DEL', ARGV[3] .. id) end
return #doomed
""")

# KEYS[1] the set; ARGV[1] the prefix of the records' keys, then ids. Deletes the record of
# each id the set does not hold; returns how many.
_DROP_UNINDEXED = Script("""
local dropped = 0
for i = 2, #ARGV do
  if not redis.call('ZSCORE', KEYS[1], ARGV[i]) then
    dropped = dropped + redis.call('DEL', ARGV[1] .. ARGV[i])
  end
end
return dropped
""")

SCAN_PAGE = 1000


class RedisResponseStore(ResponseStore):
    """Responses in Redis through ``client``; safe for many threads and processes at once."""

    # How often (seconds, per process) the records without an id in the set are looked for.
    SWEEP_SECS = AGE_SWEEP_SECS

    def __init__(self, client: Client, max_stored: int, max_age_secs: float = 0) -> None:
        self.client = client
        self.dir = client.url.redacted()
        self.max_stored = max_stored
        self.max_age = max_age_secs
        self._by_time = client.key("responses:by_time")
        self._swept_at = time.monotonic()

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
            self._save(record, "")
            self._prune()

    def update(self, record: StoredResponse) -> bool:
        """Save a response again (a background run's progress), unless it was deleted
        meanwhile; False then."""
        with self._errors("written"):
            return self._save(record, "XX")

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
            replies = self.client.pipeline([("MULTI",), ("DEL", self._key(response_id)),
                                            ("ZREM", self._by_time, response_id), ("EXEC",)])
            failed = [r for r in replies if isinstance(r, ReplyError)]
            if failed:
                raise failed[0]

    def _save(self, record: StoredResponse, only: str) -> bool:
        lifetime = max(1, int(self.max_age * 1000)) if self.max_age else 0
        saved = self.client.run_script(_SAVE, [self._key(record.id), self._by_time], [
            record.id, jsontext.dumps_compact(record.to_dict()), lifetime, only])
        return bool(saved)

    def _prune(self) -> None:
        self.client.run_script(_PRUNE, [self._by_time], [
            self.max_stored, int(self.max_age * 1000), self.client.key("response:")])
        if time.monotonic() - self._swept_at >= self.SWEEP_SECS:
            self._sweep_unindexed()

    def _sweep_unindexed(self) -> int:
        """Delete the records whose id is not in the set (a two-step prune that stopped
        halfway left them); how many."""
        self._swept_at = time.monotonic()
        prefix = self.client.key("response:")
        dropped, cursor = 0, b"0"
        while True:
            cursor, keys = self.client.execute("SCAN", cursor, "MATCH", prefix + "resp_*",
                                               "COUNT", SCAN_PAGE)
            ids = [k.decode()[len(prefix):] for k in keys]
            if ids:
                dropped += self.client.run_script(_DROP_UNINDEXED, [self._by_time],
                                                  [prefix] + ids)
            if cursor in (b"0", 0):
                return dropped


def _record_of(raw: Optional[bytes]) -> Optional[StoredResponse]:
    """The record in a key's value; None for none, or for one this store did not write."""
    if raw is None:
        return None
    try:
        data = jsontext.loads(raw.decode("utf-8"))
        return StoredResponse.from_dict(data) if isinstance(data, dict) else None
    except (ValueError, TypeError, KeyError):
        return None
