"""Usage counters every node shares (``server.store``): runs, outcomes, tokens and cost per
backend and per API key id, and requests, in Redis hashes, so ``GET /api/v1/usage`` and
``/metrics`` show the cluster's figures on any node. Every process on the store writes them,
``server.metrics_enabled`` or not (a ``clinvk worker`` serves no ``/metrics`` but runs the
jobs); a run is counted by the process that ran it, never by the API node that waited on it.

Counting never waits on Redis: ``count_run`` / ``count_request`` add to a dict in memory and
wake a writer thread, which sends what has gathered as one MULTI/EXEC of HINCRBY /
HINCRBYFLOAT (one round trip, however many runs ended meanwhile). While Redis is down the
deltas stay in memory (bounded: one number per backend or key id and field) and go out once
it answers; the outage is logged once, and its end. A node that dies loses what it had not
sent yet; a connection that breaks after Redis ran the EXEC but before its reply came back
sends that batch twice (both rare; the node's own ``/metrics`` series stay exact).

Keys, under ``server.store_key_prefix``: ``usage:b:<backend>`` and ``usage:k:<key id>``
(hashes of ``runs``, ``success`` / ``failure`` / ``timeout`` / ``cancelled``,
``<kind>_tokens``, ``cost_usd``, and ``requests`` for a key), the sets ``usage:backends`` and
``usage:keys`` naming them, and ``usage:total`` (``http_requests``, and ``since``: when the
first figure was written).
"""

from __future__ import annotations

import datetime
import threading
import time
from typing import Any, Dict, List, Optional, Tuple

from ..events import Usage
from ..redisclient import Client, RedisError, ReplyError
from ..textutil import rfc3339
from .metrics import TOKEN_KINDS, Counter, Gauge

RETRY_SECS = 1.0            # how soon the writer tries again after Redis failed
CLOSE_WAIT_SECS = 2.0       # how long closing waits for the last batch

_BACKENDS, _KEYS, _TOTAL = "usage:backends", "usage:keys", "usage:total"
_GROUPS = (("backends", _BACKENDS, "usage:b:"), ("keys", _KEYS, "usage:k:"))
_SET_OF = {group: members for group, members, _ in _GROUPS}
_PREFIX_OF = {group: prefix for group, _, prefix in _GROUPS}
OUTCOMES = ("success", "failure", "timeout", "cancelled")

Figures = Dict[str, Any]


class SharedUsage:
    """The cluster's usage counters on ``client``; ``log`` is the server's AccessLog."""

    def __init__(self, client: Client, log: Any, count_runs: bool = True) -> None:
        self.client = client
        self.log = log
        # An API node (server.role: api) runs nothing: the worker that ran a job counts it.
        self.count_runs = count_runs
        # (group, who) -> {field: amount}; group "" is usage:total (who "").
        self._pending: Dict[Tuple[str, str], Dict[str, float]] = {}
        self._cond = threading.Condition()
        self._thread: Optional[threading.Thread] = None
        self._closed = False
        self._busy = False
        self.down = ""          # why the last write failed ("" while Redis takes them)

    # -- counting (any thread; never blocks on Redis) ---------------------------------------

    def count_run(self, backend: str, outcome: str, usage: Optional[Usage],
                  key_id: str = "") -> None:
        """A finished run, under its backend and (when there is one) the key that asked."""
        if not self.count_runs:
            return
        fields: Dict[str, float] = {"runs": 1, outcome: 1}
        if usage is not None:
            for kind in TOKEN_KINDS:
                count = getattr(usage, kind + "_tokens", 0)
                if count:
                    fields[kind + "_tokens"] = count
            if usage.cost_usd:
                fields["cost_usd"] = float(usage.cost_usd)
        targets = [("backends", backend)] + ([("keys", key_id)] if key_id else [])
        self._add(targets, fields)

    def count_request(self, key_id: str = "") -> None:
        """An answered HTTP request, under the key that sent it when there is one."""
        self._add([("", "")], {"http_requests": 1})
        if key_id:
            self._add([("keys", key_id)], {"requests": 1})

    def _add(self, targets: List[Tuple[str, str]], fields: Dict[str, float]) -> None:
        with self._cond:
            if self._closed:
                return
            for target in targets:
                _add_to(self._pending, target, fields)
            if self._thread is None:
                self._thread = threading.Thread(target=self._write_loop,
                                                name="clinvk-usage-writer", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    # -- the writer ---------------------------------------------------------------------------

    def _write_loop(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if not self._pending:
                    return
                batch, self._pending = self._pending, {}
                self._busy = True
            ok = self._send(batch)
            with self._cond:
                self._busy = False
                if not ok:          # kept for the next attempt
                    for target, fields in batch.items():
                        _add_to(self._pending, target, fields)
                self._cond.notify_all()
                if self._closed and not ok:
                    return
                if not ok:
                    self._cond.wait(RETRY_SECS)

    def _send(self, batch: Dict[Tuple[str, str], Dict[str, float]]) -> bool:
        """Write ``batch`` in one transaction; False (and logged once per outage) when Redis
        did not take it."""
        commands: List[List[Any]] = [["MULTI"]]
        for (group, who), fields in sorted(batch.items()):
            key = self._hash_key(group, who)
            if group:
                commands.append(["SADD", self.client.key(_SET_OF[group]), who])
            for name, amount in sorted(fields.items()):
                if name == "cost_usd":
                    commands.append(["HINCRBYFLOAT", key, name, repr(float(amount))])
                else:
                    commands.append(["HINCRBY", key, name, int(amount)])
        commands.append(["HSETNX", self.client.key(_TOTAL), "since",
                         rfc3339(datetime.datetime.now(datetime.timezone.utc))])
        commands.append(["EXEC"])
        try:
            replies = self.client.pipeline(commands)
        except RedisError as exc:
            return self._failed(str(exc))
        done = replies[-1] if isinstance(replies[-1], list) else []
        failed = [r for r in list(replies) + done if isinstance(r, ReplyError)]
        if failed:
            # Redis refused the commands themselves (say, a key of another type): sending
            # them again would fail again, so the batch is dropped, and said so.
            self.log.error("usage counters: Redis refused a batch, dropped (%s)" % failed[0])
            return True
        if self.down:
            self.log.info("usage counters: Redis takes them again (%s)"
                          % self.client.url.redacted())
            self.down = ""
        return True

    def _failed(self, reason: str) -> bool:
        if not self.down:
            self.log.error("usage counters: kept in memory until Redis answers (%s)" % reason)
        self.down = reason
        return False

    def _hash_key(self, group: str, who: str) -> str:
        if not group:
            return self.client.key(_TOTAL)
        return self.client.key(_PREFIX_OF[group] + who)

    def flush(self, timeout: float) -> bool:
        """Wait up to ``timeout`` for what was counted to be written; True when it was."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while (self._pending or self._busy) and not self.down:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return not self._pending and not self._busy

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
        members = self.client.pipeline([["SMEMBERS", self.client.key(_BACKENDS)],
                                        ["SMEMBERS", self.client.key(_KEYS)],
                                        ["HGETALL", self.client.key(_TOTAL)]])
        for reply in members:
            if isinstance(reply, ReplyError):
                raise reply
        names = [(group, m.decode("utf-8", "replace"))
                 for (group, _, _), found in zip(_GROUPS, members[:2]) for m in sorted(found)]
        rows = self.client.pipeline([["HGETALL", self._hash_key(g, who)] for g, who in names])
        out: Figures = {"backends": {}, "keys": {}}
        for (group, who), flat in zip(names, rows):
            if isinstance(flat, ReplyError):
                raise flat
            row: Dict[str, float] = {"runs": 0, "cost_usd": 0.0}
            row.update(_numbers(flat))
            out[group][who] = row
        total = _pairs(members[2])
        out["http_requests"] = int(float(total.get("http_requests", "0")))
        out["since"] = total.get("since", "")
        return out


def _add_to(pending: Dict[Tuple[str, str], Dict[str, float]], target: Tuple[str, str],
            fields: Dict[str, float]) -> None:
    row = pending.setdefault(target, {})
    for name, amount in fields.items():
        row[name] = row.get(name, 0) + amount


def _pairs(flat: List[bytes]) -> Dict[str, str]:
    return {flat[i].decode(): flat[i + 1].decode() for i in range(0, len(flat) - 1, 2)}


def _numbers(flat: List[bytes]) -> Dict[str, float]:
    out: Dict[str, float] = {}
    for name, text in _pairs(flat).items():
        try:
            value = float(text)
        except ValueError:
            continue
        out[name] = value if name == "cost_usd" else int(value)
    return out


def install(app: Any) -> SharedUsage:
    """The shared counters of ``app`` (its ``shared_store``), with the cluster series added
    to its ``/metrics`` when it serves one."""
    from .remote_run import is_api_node
    usage = SharedUsage(app.shared_store, app.log, count_runs=not is_api_node(app))
    if app.metrics is not None:
        app.metrics.add_lines(lambda: metric_lines(usage))
    return usage


def metric_lines(usage: SharedUsage) -> List[str]:
    """The ``clinvk_cluster_*`` series of ``/metrics``: the store's counters, and
    ``clinvk_cluster_store_up`` (0, and no other cluster series, while Redis does not
    answer)."""
    up = Gauge("clinvk_cluster_store_up", "1 when the shared store (server.store) answered "
               "this scrape: the clinvk_cluster_* series are then every node's; 0 otherwise.")
    try:
        figures = usage.read()
    except RedisError:
        up.set(0)
        return up.render()
    up.set(1)
    runs = Counter("clinvk_cluster_runs_total", "Backend CLI runs on every node sharing "
                   "server.store, by outcome.", ("backend", "outcome"))
    tokens = Counter("clinvk_cluster_tokens_total", "Tokens the backends reported on every "
                     "node, by kind.", ("backend", "kind"))
    cost = Counter("clinvk_cluster_cost_usd_total", "Cost in US dollars the backends "
                   "reported on every node.", ("backend",))
    requests = Counter("clinvk_cluster_http_requests_total", "HTTP requests answered by "
                       "every node.")
    key_runs = Counter("clinvk_cluster_key_runs_total", "Backend CLI runs on every node by "
                       "the API key id that asked, by outcome.", ("key_id", "outcome"))
    key_requests = Counter("clinvk_cluster_key_requests_total", "HTTP requests every node "
                           "answered, by API key id.", ("key_id",))
    key_tokens = Counter("clinvk_cluster_key_tokens_total", "Tokens the backends reported on "
                         "every node, by API key id and kind.", ("key_id", "kind"))
    key_cost = Counter("clinvk_cluster_key_cost_usd_total", "Cost in US dollars on every "
                       "node, by API key id.", ("key_id",))
    requests.inc(amount=figures["http_requests"])
    for group, runs_of, tokens_of, cost_of in (("backends", runs, tokens, cost),
                                               ("keys", key_runs, key_tokens, key_cost)):
        for who, row in figures[group].items():
            for name, value in row.items():
                if name in OUTCOMES:
                    runs_of.inc(who, name, amount=value)
                elif name.endswith("_tokens") and name[:-len("_tokens")] in TOKEN_KINDS:
                    tokens_of.inc(who, name[:-len("_tokens")], amount=value)
            cost_of.inc(who, amount=row.get("cost_usd", 0.0))
            if group == "keys":
                key_requests.inc(who, amount=row.get("requests", 0))
    lines = up.render()
    for metric in (requests, runs, tokens, cost, key_requests, key_runs, key_tokens, key_cost):
        lines.extend(metric.render())
    return lines

