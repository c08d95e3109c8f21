"""Usage counters every node shares (``server.store``): runs, outcomes, tokens and cost per
backend and per API key id, requests, each node's own requests and runs, and the run and
HTTP request duration histograms, in Redis hashes, so ``GET /api/v1/usage`` and ``/metrics``
show the cluster's figures on any node. Every process on the store writes them,
``server.metrics_enabled`` or not (a ``clinvk worker`` serves no ``/metrics`` but runs the
jobs); a run is counted by the process that ran it, never by the API node that waited on it.

Counting never waits on Redis: ``count_run`` / ``count_request`` add to a dict in memory and
wake a writer thread, which sends what has gathered as one batch (one Lua script: one round
trip, however many runs ended meanwhile). While Redis is down the deltas stay in memory
(bounded: one number per key and field) and go out once it answers; the outage is logged
once, and its end.

Each batch is applied exactly once: it carries its writer's id and a number one above the
last, and the script applies it only when that number is above the one it last applied for
that writer (``usage:sent:<writer id>``, kept ``SENT_TTL_SECS``). A batch whose reply never
came (the connection broke after Redis ran it, or before) is sent again unchanged, before
anything counted since; so sent twice it counts once. A node that dies loses what it had
not sent: the writer sends as soon as it is woken, so a SIGKILL loses the counts gathered
while the last batch was on its way (and, during an outage, all it kept).

Keys, under ``server.store_key_prefix``: ``usage:b:<backend>`` and ``usage:k:<key id>``
(hashes of ``runs``, ``success`` / ``failure`` / ``timeout`` / ``cancelled``,
``<kind>_tokens``, ``cost_usd``, and ``requests`` for a key), the sets ``usage:backends`` and
``usage:keys`` naming them, ``usage:total`` (``http_requests``, and ``since``: when the
first figure was written), ``usage:n:<node>`` (``http_requests``, ``runs`` and the outcomes
of the processes of that ``server.worker_name``; it expires ``NODE_TTL_SECS`` after the last
of them stopped), and ``usage:h:run`` / ``usage:h:http``: the histograms of every node, a
field per label values and bucket upper bound (a JSON list, e.g. ``["claude", "30"]``) or
``sum`` (``["claude", "sum"]``), each bucket holding the observations in it alone.
"""

from __future__ import annotations

import datetime
import functools
import json
import os
import threading
import time
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

from ..events import Usage
from ..job_queue_redis import list_runners
from ..redisclient import Client, RedisError, ReplyError, Script
from ..textutil import rfc3339
from .metrics import (HTTP_BUCKETS, RUN_BUCKETS, TOKEN_KINDS, bucket_bound, format_value,
                      method_label)

RETRY_SECS = 1.0            # how soon the writer tries again after Redis failed
CLOSE_WAIT_SECS = 2.0       # how long closing waits for the last batch
SENT_TTL_SECS = 86400       # how long Redis remembers a writer's last batch number
NODE_TTL_SECS = 600         # how long a node's counters outlive its last process

_BACKENDS, _KEYS, _TOTAL = "usage:backends", "usage:keys", "usage:total"
_GROUPS = (("backends", _BACKENDS, "usage:b:"), ("keys", _KEYS, "usage:k:"))
_NODE, _SENT = "usage:n:", "usage:sent:"
RUN_HISTOGRAM, HTTP_HISTOGRAM = "usage:h:run", "usage:h:http"

# Redis errors that refused a batch before the script ran: it is kept and sent again.
_TRANSIENT = frozenset(("LOADING", "BUSY", "READONLY", "OOM", "MASTERDOWN", "NOREPLICAS",
                        "TRYAGAIN"))

# KEYS[1] the writer's last batch number, KEYS[2..] the keys the batch changes. ARGV[1] the
# batch number, ARGV[2] how long (ms) Redis keeps it, then 4 per change: the command, its
# key's index in KEYS, and its one or two arguments ('' for none). Returns 1 when applied,
# 0 when that number was applied before.
APPLY_BATCH = Script("""
if tonumber(ARGV[1]) <= tonumber(redis.call('GET', KEYS[1]) or '0') then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
for i = 3, #ARGV, 4 do
  local key = KEYS[tonumber(ARGV[i + 1])]
  if ARGV[i + 3] == '' then
    redis.call(ARGV[i], key, ARGV[i + 2])
  else
    redis.call(ARGV[i], key, ARGV[i + 2], ARGV[i + 3])
  end
end
return 1
""")

Figures = Dict[str, Any]
Changes = Dict[str, Dict[str, float]]       # key name (no prefix) -> {field: amount}


class Batch(NamedTuple):
    """What one round trip adds: ``number`` orders the batches of one writer."""

    number: int
    changes: Changes


class NodeFigures(NamedTuple):
    """One node (the processes of one ``server.worker_name`` with a live heartbeat):
    how many processes, their run slots for jobs and how many are busy, and its counters
    (``http_requests``, ``runs``, one per outcome)."""

    name: str
    processes: int
    capacity: int
    busy: int
    counts: Dict[str, float]


class Observed(NamedTuple):
    """One histogram series summed over the nodes: counts by bucket upper bound, and their
    sum."""

    counts: Dict[float, int]
    total: float


class SharedUsage:
    """The cluster's usage counters on ``client``; ``log`` is the server's AccessLog,
    ``node`` this process's node name (its ``server.worker_name``).

    Tunable per instance: ``node_ttl_secs`` (the node key's expiry, renewed by every batch
    and, while idle, every quarter of it) and ``sent_ttl_secs``."""

    node_ttl_secs = NODE_TTL_SECS
    sent_ttl_secs = SENT_TTL_SECS

    def __init__(self, client: Client, log: Any, node: str, count_runs: bool = True) -> None:
        self.client = client
        self.log = log
        self.node = node
        # An API node (server.role: api) runs nothing: the worker that ran a job counts it.
        self.count_runs = count_runs
        self.writer_id = os.urandom(8).hex()
        self._pending: Changes = {}
        self._unsent: Optional[Batch] = None      # sent, but Redis's answer never came
        self._number = 0
        self._cond = threading.Condition()
        self._thread: Optional[threading.Thread] = None
        self._closed = False
        self._busy = False
        self.down = ""          # why the last write failed ("" while Redis takes them)

    # -- counting (any thread; never blocks on Redis) ---------------------------------------

    def count_run(self, backend: str, outcome: str, seconds: float,
                  usage: Optional[Usage] = None, key_id: str = "") -> None:
        """A finished run, under its backend, this node, and (when there is one) the key that
        asked; its duration in the run histogram."""
        if not self.count_runs:
            return
        fields: Dict[str, float] = {"runs": 1, outcome: 1}
        changes: Changes = {_NODE + self.node: dict(fields)}
        if usage is not None:
            for kind in TOKEN_KINDS:
                count = getattr(usage, kind + "_tokens", 0)
                if count:
                    fields[kind + "_tokens"] = count
            if usage.cost_usd:
                fields["cost_usd"] = float(usage.cost_usd)
        changes["usage:b:" + backend] = fields
        if key_id:
            changes["usage:k:" + key_id] = fields
        changes[RUN_HISTOGRAM] = _observation((backend,), RUN_BUCKETS, seconds)
        self._add(changes)

    def count_request(self, method: str, route: str, seconds: float, key_id: str = "") -> None:
        """An answered HTTP request (``route`` its template), under this node and the key
        that sent it when there is one; its duration in the HTTP histogram."""
        changes: Changes = {
            _TOTAL: {"http_requests": 1}, _NODE + self.node: {"http_requests": 1},
            HTTP_HISTOGRAM: _observation((method_label(method), route), HTTP_BUCKETS, seconds)}
        if key_id:
            changes["usage:k:" + key_id] = {"requests": 1}
        self._add(changes)

    def _add(self, changes: Changes) -> None:
        with self._cond:
            if self._closed:
                return
            for name, fields in changes.items():
                _add_to(self._pending, name, fields)
            if self._thread is None:
                self._thread = threading.Thread(target=self._write_loop,
                                                name="clinvk-usage-writer", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    # -- the writer ---------------------------------------------------------------------------

    def _write_loop(self) -> None:
        while True:
            with self._cond:
                batch = self._next_batch()
                if batch is None:
                    return
                self._busy = True
            ok = self._send(batch)
            with self._cond:
                self._busy = False
                self._unsent = None if ok else batch
                self._cond.notify_all()
                if not ok:
                    if self._closed:
                        return
                    self._cond.wait(RETRY_SECS)

    def _next_batch(self) -> Optional[Batch]:
        """(Under the lock.) The batch Redis may not have taken, unchanged; else what has
        gathered, or after ``node_ttl_secs / 4`` idle an empty one (renewing the node key's
        expiry); None once closed with nothing left."""
        while self._unsent is None and not self._pending:
            if self._closed:
                return None
            if not self._cond.wait(self.node_ttl_secs / 4.0):
                break
        if self._unsent is not None:
            return self._unsent
        self._number += 1
        batch, self._pending = Batch(self._number, self._pending), {}
        return batch

    def _send(self, batch: Batch) -> bool:
        """Apply ``batch`` (once, however often sent); False (and logged once per outage)
        when Redis did not answer, so it must be sent again."""
        keys, args = self.script_arguments(batch)
        try:
            self.client.run_script(APPLY_BATCH, keys, args)
        except ReplyError as exc:
            if exc.code in _TRANSIENT:
                return self._failed(str(exc))
            # Redis refused the commands themselves (say, a key of another type): sending
            # them again would fail again, so the batch is dropped, and said so.
            self.log.error("usage counters: Redis refused a batch, dropped (%s)" % exc)
            return True
        except RedisError as exc:
            return self._failed(str(exc))
        if self.down:
            self.log.info("usage counters: Redis takes them again (%s)"
                          % self.client.url.redacted())
            self.down = ""
        return True

    def script_arguments(self, batch: Batch) -> Tuple[List[str], List[Any]]:
        """The KEYS and ARGV of ``APPLY_BATCH`` for ``batch``."""
        keys = [self.client.key(_SENT + self.writer_id)]
        args: List[Any] = [batch.number, int(self.sent_ttl_secs * 1000)]

        def change(command: str, name: str, first: Any, second: Any = "") -> None:
            key = self.client.key(name)
            if key not in keys:
                keys.append(key)
            args.extend((command, keys.index(key) + 1, first, second))
        for name, fields in sorted(batch.changes.items()):
            for _, members, prefix in _GROUPS:
                if name.startswith(prefix):
                    change("SADD", members, name[len(prefix):])
            for field, amount in sorted(fields.items()):
                if isinstance(amount, float):
                    change("HINCRBYFLOAT", name, field, repr(amount))
                else:
                    change("HINCRBY", name, field, amount)
        change("HSETNX", _TOTAL, "since", rfc3339(datetime.datetime.now(datetime.timezone.utc)))
        change("PEXPIRE", _NODE + self.node, int(self.node_ttl_secs * 1000))
        return keys, args

    def _failed(self, reason: str) -> bool:
        if not self.down:
            self.log.error("usage counters: kept in memory until Redis answers (%s)" % reason)
        self.down = reason
        return False

    def flush(self, timeout: float) -> bool:
        """Wait up to ``timeout`` for what was counted to be written; True when it was."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._waiting() and not self.down:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return not self._waiting()

    def _waiting(self) -> bool:
        return bool(self._pending or self._unsent or self._busy)

    def close(self, timeout: float = CLOSE_WAIT_SECS) -> None:
        """Write what is pending (one attempt, up to ``timeout``), then count no more."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)

    # -- reading ------------------------------------------------------------------------------

    def read(self) -> Figures:
        """The cluster's figures: ``{"backends": {name: row}, "keys": {id: row},
        "http_requests": n, "since": "<RFC 3339>" or ""}``, each row as the node's own
        ``ServerMetrics.usage()`` makes it. RedisError when Redis does not answer."""
        members = _answered(self.client.pipeline([["SMEMBERS", self.client.key(_BACKENDS)],
                                                  ["SMEMBERS", self.client.key(_KEYS)],
                                                  ["HGETALL", self.client.key(_TOTAL)]]))
        names = [(group, prefix, m.decode("utf-8", "replace"))
                 for (group, _, prefix), found in zip(_GROUPS, members[:2])
                 for m in sorted(found)]
        rows = _answered(self.client.pipeline(
            [["HGETALL", self.client.key(prefix + who)] for _, prefix, who in names]))
        out: Figures = {"backends": {}, "keys": {}}
        for (group, _, who), flat in zip(names, rows):
            row: Dict[str, float] = {"runs": 0, "cost_usd": 0.0}
            row.update(_numbers(flat))
            out[group][who] = row
        total = _pairs(members[2])
        out["http_requests"] = int(float(total.get("http_requests", "0")))
        out["since"] = total.get("since", "")
        return out

    def read_nodes(self) -> List[NodeFigures]:
        """Every node with a process whose heartbeat has not expired, by name. RedisError
        when Redis does not answer."""
        runners: Dict[str, List[Dict[str, Any]]] = {}
        for runner in list_runners(self.client):
            if runner["worker"]:
                runners.setdefault(runner["worker"], []).append(runner)
        names = sorted(runners)
        rows = _answered(self.client.pipeline(
            [["HGETALL", self.client.key(_NODE + name)] for name in names]))
        return [NodeFigures(name, len(runners[name]), sum(r["capacity"] for r in runners[name]),
                            sum(r["busy"] for r in runners[name]), _numbers(flat))
                for name, flat in zip(names, rows)]

    def read_histograms(self) -> Dict[str, Dict[Tuple[str, ...], Observed]]:
        """Every node's observations: ``{RUN_HISTOGRAM: {(backend,): Observed},
        HTTP_HISTOGRAM: {(method, route): Observed}}``. RedisError when Redis does not
        answer."""
        names = (RUN_HISTOGRAM, HTTP_HISTOGRAM)
        replies = _answered(self.client.pipeline(
            [["HGETALL", self.client.key(name)] for name in names]))
        return {name: _observed(_pairs(flat)) for name, flat in zip(names, replies)}


def _observation(labels: Tuple[str, ...], buckets: Tuple[float, ...], seconds: float) -> \
        Dict[str, float]:
    """The histogram fields one observation adds to."""
    bucket, total = _histogram_fields(labels, bucket_bound(buckets, seconds))
    return {bucket: 1, total: float(seconds)}


@functools.lru_cache(maxsize=4096)
def _histogram_fields(labels: Tuple[str, ...], bound: float) -> Tuple[str, str]:
    """The fields of a series' bucket ``bound`` and of its sum (few: made once each)."""
    return (json.dumps(list(labels) + [format_value(bound)]),
            json.dumps(list(labels) + ["sum"]))


def _observed(fields: Dict[str, str]) -> Dict[Tuple[str, ...], Observed]:
    out: Dict[Tuple[str, ...], Observed] = {}
    for field, text in fields.items():
        try:
            *labels, part = json.loads(field)
            counts, total = out.get(tuple(labels), Observed({}, 0.0))
            if part == "sum":
                total += float(text)
            else:
                bound = float(part)
                counts[bound] = counts.get(bound, 0) + int(float(text))
        except (ValueError, TypeError):
            continue            # not a field this version writes
        out[tuple(labels)] = Observed(counts, total)
    return out


def _answered(replies: List[Any]) -> List[Any]:
    for reply in replies:
        if isinstance(reply, ReplyError):
            raise reply
    return replies


def _add_to(pending: Changes, name: str, fields: Dict[str, float]) -> None:
    row = pending.setdefault(name, {})
    for field, amount in fields.items():
        row[field] = row.get(field, 0) + amount


def _pairs(flat: Any) -> Dict[str, str]:
    if isinstance(flat, dict):          # RESP3
        return {k.decode(): v.decode() for k, v in flat.items()}
    return {flat[i].decode(): flat[i + 1].decode() for i in range(0, len(flat) - 1, 2)}


def _numbers(flat: Any) -> Dict[str, float]:
    out: Dict[str, float] = {}
    for name, text in _pairs(flat).items():
        try:
            value = float(text)
        except ValueError:
            continue
        out[name] = value if name == "cost_usd" else int(value)
    return out
