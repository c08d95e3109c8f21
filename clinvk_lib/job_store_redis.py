"""Durable jobs in Redis (``server.store``): the same ``JobStore`` (records, per-key scope,
status changes that never overwrite an end, bounded event logs, the index, pruning) with its
files replaced by keys under the store's prefix, so every node sharing the store sees every
job:

- ``job:<id>``: the record, as JSON;
- ``job:<id>:events``: the event log, a Redis Stream whose entry ids are ``0-<seq>``, so "the
  events after N" is ``XRANGE (0-N +`` and a reader that reconnects with its last seq neither
  loses nor repeats an event;
- ``job:<id>:lock``: the lock held while the record changes (``SET NX PX``: it expires if
  its holder dies, after ``LOCK_TTL_MS``);
- ``jobs:index``: a hash of every job's summary (``job_index``) by id;
- ``runner:<id>``: present while the process with that runner id lives (it renews the key's
  expiry: ``RunnerHeartbeat``).

A record and its index entry change in one MULTI/EXEC; a job and its events are removed in
another. How long it all survives Redis itself restarting is Redis' persistence setting
(AOF or snapshots), which the operator chooses.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from . import jsontext
from .job_events import EventWriter
from .job_index import Summary
from .job_queue_redis import RunnerHeartbeat
from .job_store import (DEFAULT_EVENTS_MAX_BYTES, LOCK_WAIT_SECS, Job, JobStore, JobStoreError,
                        is_job_id, lock_held_too_long)
from .redisclient import Client, Connection, RedisError, ReplyError, Script

LOCK_TTL_MS = 30000
# Entries one XRANGE returns at most; a cursor reads on until it has them all.
PAGE = 1000

_UNLOCK = Script("if redis.call('GET', KEYS[1]) == ARGV[1] then "
                 "return redis.call('DEL', KEYS[1]) end return 0")


@contextlib.contextmanager
def store_errors(action: str) -> Iterator[None]:
    """RedisError as the JobStoreError the server answers 503 with."""
    try:
        yield
    except RedisError as exc:
        raise JobStoreError("the job store cannot be %s: %s; retry once it is back"
                            % (action, exc)) from None


class RedisJobStore(JobStore):
    """Jobs in Redis through ``client`` (its prefix in front of every key); safe for many
    threads and processes at once."""

    def __init__(self, client: Client, events_max_bytes: int = DEFAULT_EVENTS_MAX_BYTES,
                 runner_ttl_secs: float = 60.0) -> None:
        self.client = client
        self.dir = ""
        self.events_max_bytes = events_max_bytes
        self.runner_ttl_secs = runner_ttl_secs
        self.describe_runner: Callable[[], Dict[str, str]] = dict
        self._index_key = client.key("jobs:index")

    def _key(self, job_id: str, suffix: str = "") -> str:
        return self.client.key("job:" + job_id + suffix)

    # -- records ------------------------------------------------------------------------------

    def create(self, job: Job) -> None:
        self._write(job)

    def read(self, job_id: str) -> Optional[Job]:
        if not is_job_id(job_id):
            return None
        with store_errors("read"):
            data = self.client.execute("GET", self._key(job_id))
        return _job_of(data)

    def delete(self, job_id: str) -> None:
        with self._locked(job_id), store_errors("written"):
            self._transaction([("DEL", self._key(job_id), self._key(job_id, ":events")),
                               ("HDEL", self._index_key, job_id)])

    def ids(self) -> List[str]:
        with store_errors("listed"):
            return sorted(i.decode() for i in self.client.execute("HKEYS", self._index_key))

    def _write(self, job: Job, sync_dir: bool = False) -> None:
        record = jsontext.dumps_compact(job.to_dict())
        with store_errors("written"):
            self._transaction([("SET", self._key(job.id), record),
                               ("HSET", self._index_key, job.id,
                                jsontext.dumps_compact(job.summary()))])

    def _transaction(self, commands: List[Tuple[Any, ...]]) -> None:
        replies = self.client.pipeline([("MULTI",)] + commands + [("EXEC",)])
        failed = [r for r in replies if isinstance(r, ReplyError)]
        if failed:
            raise failed[0]

    # -- the index ----------------------------------------------------------------------------

    def summaries(self) -> Dict[str, Summary]:
        with store_errors("read"):
            flat = self.client.execute("HGETALL", self._index_key)
        pairs = flat.items() if isinstance(flat, dict) else zip(flat[::2], flat[1::2])
        return {key.decode(): jsontext.loads(value) for key, value in pairs}

    def rebuild_index(self) -> None:
        """Rewrite the index from the records (a summary a crash kept from being written)."""
        with store_errors("written"):
            for job_id in self._record_ids():
                job = self.read(job_id)
                if job is not None:
                    self.client.execute("HSET", self._index_key, job_id,
                                        jsontext.dumps_compact(job.summary()))

    def _record_ids(self) -> List[str]:
        pattern = self._key("job_" + "?" * 24)
        found, cursor = [], b"0"
        while True:
            cursor, keys = self.client.execute("SCAN", cursor, "MATCH", pattern,
                                               "COUNT", PAGE)
            found += [k.decode()[-len("job_") - 24:] for k in keys]
            if cursor in (b"0", 0):
                return sorted(set(found))

    def compact_index(self) -> None:
        """Nothing to do: the hash holds one summary per job."""

    def _sweep_strays(self, now: float) -> None:
        """Nothing strays: a job's record and events are removed in one transaction."""

    # -- events, locks, runners -------------------------------------------------------------

    def writer(self, job_id: str) -> EventWriter:
        return StreamEventWriter(self.client, self._key(job_id, ":events"),
                                 self.events_max_bytes)

    def cursor(self, job_id: str, after: int = 0) -> "StreamEventCursor":
        return StreamEventCursor(self.client, self._key(job_id, ":events"), after)

    def count_events(self, job_id: str) -> int:
        try:
            return self.client.execute("XLEN", self._key(job_id, ":events"))
        except RedisError:
            return 0

    def runner_alive(self, runner: str) -> bool:
        with store_errors("read"):
            return bool(runner) and bool(self.client.execute(
                "EXISTS", self.client.key("runner:" + runner)))

    def lease(self) -> RunnerHeartbeat:
        """A new heartbeat for a process that will queue and run jobs on this store; it
        advertises what ``describe_runner()`` returns."""
        return RunnerHeartbeat(self.client, self.runner_ttl_secs, self.describe_runner)

    def _locked(self, job_id: str) -> Any:
        return RedisLock(self.client, self._key(job_id, ":lock"))


def _job_of(data: Optional[bytes]) -> Optional[Job]:
    if data is None:
        return None
    try:
        return Job.from_dict(jsontext.loads(data))
    except (ValueError, TypeError):
        return None                     # damaged: as a damaged file is, not there


class RedisLock:
    """A lock on one key: ``SET NX PX`` with a token of its own, given back only by its
    holder (a compare-and-delete script); it expires after ``LOCK_TTL_MS`` if the holder
    dies. Waits up to ``LOCK_WAIT_SECS``, then JobStoreError."""

    POLL_SECS = 0.01

    def __init__(self, client: Client, key: str) -> None:
        self.client = client
        self.key = key
        self.token = os.urandom(12).hex()

    def __enter__(self) -> None:
        deadline = time.monotonic() + LOCK_WAIT_SECS
        with store_errors("locked"):
            while not self.client.execute("SET", self.key, self.token, "NX",
                                          "PX", LOCK_TTL_MS):
                if time.monotonic() >= deadline:
                    raise lock_held_too_long()
                time.sleep(self.POLL_SECS)

    def __exit__(self, *exc: Any) -> None:
        with store_errors("unlocked"):
            self.client.run_script(_UNLOCK, [self.key], [self.token])


class StreamEventWriter(EventWriter):
    """``EventWriter`` appending to a Redis Stream: entry ``0-<seq>`` holds the event's line
    in its field ``e``. OSError when Redis cannot be written, as for a file."""

    def __init__(self, client: Client, key: str, max_bytes: int) -> None:
        self.client = client
        super().__init__(key, max_bytes)

    def _existing(self) -> Tuple[int, int]:
        lines = [line for _, line in _read_stream(self.client, self.path, 0)]
        return len(lines), sum(len(line) for line in lines)

    def _write(self, line: bytes) -> None:
        try:
            self.client.execute("XADD", self.path, "0-%d" % (self.count + 1), "e", line)
        except RedisError as exc:
            raise OSError("the job's events cannot be written: %s" % exc) from None

    def close(self) -> None:
        """Nothing to flush: Redis has each event once ``append`` returns."""


class StreamEventCursor:
    """``EventCursor`` over a Redis Stream: ``read()`` returns the events after the last it
    returned (after ``after`` at first); ``seq`` is the last one's; ``wait(timeout)`` waits
    for the next one to be written, wherever it is written. ``close()`` when done."""

    def __init__(self, client: Client, key: str, after: int = 0) -> None:
        self.client = client
        self.key = key
        self.seq = max(0, after)
        self._lock = threading.Lock()
        self._conn: Optional[Connection] = None
        # The entries the last ``wait`` brought (XREAD returns them): read without asking again.
        self._brought: List[Tuple[int, bytes]] = []

    def read(self) -> List[Dict[str, Any]]:
        with self._lock:
            brought, self._brought = self._brought, []
            entries = [e for e in brought if e[0] > self.seq] or \
                _read_stream(self.client, self.key, self.seq)
            if entries:
                self.seq = entries[-1][0]
        out = []
        for _, line in entries:
            try:
                out.append(jsontext.loads(line))
            except ValueError:
                continue                # not written by StreamEventWriter
        return out

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for an event after the last one read (XREAD BLOCK,
        on a connection of this cursor's own); True when one is there."""
        try:
            if self._conn is None or self._conn.sock is None:
                self._conn = self.client.dedicated()
            reply = self.client.call(self._conn, "XREAD", "COUNT", PAGE, "BLOCK",
                                     max(1, int(timeout * 1000)), "STREAMS", self.key,
                                     "0-%d" % self.seq, timeout=timeout + 5)
        except RedisError:
            time.sleep(timeout)         # Redis down: the caller reads and decides
            return False
        if not reply:
            return False
        streams = reply.values() if isinstance(reply, dict) else [s[1] for s in reply]
        brought = [(int(entry_id.split(b"-")[1]), _field(fields, b"e"))
                   for entries in streams for entry_id, fields in entries]
        if len(brought) < PAGE:         # all there was: read() need not ask again
            with self._lock:
                self._brought = brought
        return True

    def close(self) -> None:
        """Close the cursor's connection, if ``wait`` opened one."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


def _read_stream(client: Client, key: str, after: int) -> List[Tuple[int, bytes]]:
    """(seq, line) of every entry after seq ``after``, in order."""
    out: List[Tuple[int, bytes]] = []
    while True:
        try:
            page = client.execute("XRANGE", key, "(0-%d" % after, "+", "COUNT", PAGE)
        except RedisError as exc:
            raise OSError("the job's events cannot be read: %s" % exc) from None
        for entry_id, fields in page:
            after = int(entry_id.split(b"-")[1])
            out.append((after, _field(fields, b"e")))
        if len(page) < PAGE:
            return out


def _field(fields: Any, name: bytes) -> bytes:
    if isinstance(fields, dict):
        return fields.get(name, b"")
    return dict(zip(fields[::2], fields[1::2])).get(name, b"")
