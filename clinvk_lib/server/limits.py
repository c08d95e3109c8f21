"""How much the server takes on at once: backend runs (and the queue in front of them) and
open connections.

``server.max_concurrent_runs`` slots; a request that finds them all taken waits, first come
first served, for up to ``server.queue_timeout_secs``, then is refused (503 + Retry-After).
Freed slots are handed straight to the longest waiter, so a newcomer never overtakes the queue.

``server.max_connections`` connections (``ConnectionLimiter``); past it the connection idle
longest makes room for a newcomer, and when none is idle the newcomer is refused.
"""

from __future__ import annotations

import collections
import contextlib
import math
import threading
import time
from typing import Any, Callable, Deque, Dict, Iterator, Optional, Tuple


class Busy(Exception):
    """No slot within the queue timeout. ``retry_after`` is whole seconds for Retry-After."""

    def __init__(self, limit: int, waited: float, retry_after: int) -> None:
        super().__init__("all %d run slots busy after waiting %gs" % (limit, waited))
        self.limit = limit
        self.waited = waited
        self.retry_after = retry_after


class Abandoned(Exception):
    """The caller gave up while waiting (its client went away)."""


class RunLimiter:
    """At most ``limit`` slots held at once; ``queue_timeout`` seconds of waiting at most.

    A request takes one slot per backend process it may run at once (a parallel request with
    max_parallel 3 takes 3), so the limit bounds processes, not requests.
    """

    # How often a waiter checks whether its client is still there.
    POLL_SECS = 0.25

    def __init__(self, limit: int, queue_timeout: float) -> None:
        if limit < 1:
            raise ValueError("max_concurrent_runs must be at least 1: got %r" % (limit,))
        self.limit = limit
        self.queue_timeout = max(0.0, float(queue_timeout))
        self._lock = threading.Lock()
        self._free = limit
        self._waiters: Deque[Tuple[threading.Event, int]] = collections.deque()

    @property
    def in_use(self) -> int:
        return self.limit - self._free

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def acquire(self, count: int = 1, abandoned: Optional[Callable[[], bool]] = None) -> int:
        """Take ``count`` slots (at most ``limit``), waiting in line if needed; returns how
        many were taken. Raises Busy after the queue timeout, or Abandoned as soon as
        ``abandoned()`` turns true (checked every POLL_SECS)."""
        count = max(1, min(count, self.limit))
        with self._lock:
            if not self._waiters and self._free >= count:
                self._free -= count
                return count
            if self.queue_timeout <= 0:
                raise self._busy(0.0)
            turn = threading.Event()
            entry = (turn, count)
            self._waiters.append(entry)
        started = time.monotonic()
        deadline = started + self.queue_timeout
        while True:
            left = deadline - time.monotonic()
            if turn.wait(min(left, self.POLL_SECS) if left > 0 else 0):
                return count                            # release() handed the slots over
            gave_up = abandoned is not None and abandoned()
            if not gave_up and time.monotonic() < deadline:
                continue
            with self._lock:
                if turn.is_set():                       # handed over while we were deciding
                    return count
                self._waiters.remove(entry)
                self._grant()                           # we may have blocked smaller ones
            if gave_up:
                raise Abandoned()
            raise self._busy(time.monotonic() - started)

    def release(self, count: int = 1) -> None:
        """Give back ``count`` slots (what ``acquire`` returned); waiters get them in order."""
        with self._lock:
            if self._free + count > self.limit:
                raise RuntimeError("RunLimiter.release() of slots that were not held")
            self._free += count
            self._grant()

    @contextlib.contextmanager
    def slot(self, count: int = 1, abandoned: Optional[Callable[[], bool]] = None
             ) -> Iterator[int]:
        """Hold slots for the block (see ``acquire``); yields how many."""
        taken = self.acquire(count, abandoned)
        try:
            yield taken
        finally:
            self.release(taken)

    def _grant(self) -> None:
        # First come, first served: the head of the line is served before anyone behind it.
        while self._waiters and self._waiters[0][1] <= self._free:
            turn, count = self._waiters.popleft()
            self._free -= count
            turn.set()

    def _busy(self, waited: float) -> Busy:
        # A waiter that got nothing in queue_timeout seconds should not come straight back:
        # suggest the same wait again (at least one second).
        return Busy(self.limit, waited, max(1, int(math.ceil(self.queue_timeout))))


class ConnectionLimiter:
    """At most ``limit`` connections open at once (``server.max_connections``).

    When every slot is taken, a newcomer gets the slot of a connection that is not doing
    anything useful, which the caller then closes: first the one *idle* longest (waiting for
    the first byte of a request, new or kept alive; nginx reuses idle keep-alive connections
    the same way, and a client may always lose an idle connection, RFC 9112 §9.5), else one
    still sending its request head ``slow_head_secs`` after it began (a client sends a head in
    one round trip; one that drips it is holding a slot). Only when neither exists is the
    newcomer refused. So a crowd of silent or dripping connections cannot lock out a client
    that sends its request, and nothing already being served is ever cut.

    Connections are any hashable objects (the server uses its sockets). Callers use ``admit``
    when a connection arrives; ``mark_idle``, ``mark_head`` and ``mark_served`` as each
    request is awaited, starts to arrive and has arrived; and ``release`` (idempotent) when
    it closes, in a ``finally``.
    """

    SLOW_HEAD_SECS = 2.0

    def __init__(self, limit: int, slow_head_secs: float = SLOW_HEAD_SECS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if limit < 1:
            raise ValueError("max_connections must be at least 1: got %r" % (limit,))
        self.limit = limit
        self.slow_head_secs = slow_head_secs
        self._clock = clock
        self._lock = threading.Lock()
        self._open: Dict[Any, None] = {}
        # The connections that may be reclaimed, each mapped to when it started waiting for a
        # request / sending its head, oldest first.
        self._idle: "collections.OrderedDict[Any, float]" = collections.OrderedDict()
        self._heads: "collections.OrderedDict[Any, float]" = collections.OrderedDict()

    @property
    def open(self) -> int:
        """Connections holding a slot."""
        return len(self._open)

    @property
    def idle(self) -> int:
        """Connections holding a slot while they wait for a request."""
        return len(self._idle)

    def admit(self, conn: Any, quiet: Callable[[Any], bool] = lambda c: True
              ) -> Tuple[bool, Optional[Any]]:
        """Give ``conn`` a slot: ``(True, None)`` when one was free; ``(True, victim)`` when
        the slot of ``victim`` was handed over (the caller closes ``victim``); ``(False,
        None)`` when no connection may be reclaimed. ``quiet(victim)`` is asked before an idle
        connection is reclaimed: False spares one whose request has just started to arrive."""
        with self._lock:
            if len(self._open) < self.limit:
                self._open[conn] = None
                return True, None
            victim = self._victim(quiet)
            if victim is None:
                return False, None
            self._forget(victim)
            del self._open[victim]
            self._open[conn] = None
            return True, victim

    def _victim(self, quiet: Callable[[Any], bool]) -> Optional[Any]:
        for conn in self._idle:
            if quiet(conn):
                return conn
        if self._heads:
            conn, since = next(iter(self._heads.items()))       # the longest at its head
            if since <= self._clock() - self.slow_head_secs:
                return conn
        return None

    def mark_idle(self, conn: Any) -> None:
        """``conn`` waits for its next request: its slot may go to a newcomer."""
        self._mark(conn, self._idle)

    def mark_head(self, conn: Any) -> bool:
        """A request has started to arrive on ``conn``. False when its slot went to a
        newcomer meanwhile: then the caller closes ``conn`` without reading on."""
        return self._mark(conn, self._heads)

    def mark_served(self, conn: Any) -> bool:
        """The request head has arrived: ``conn`` keeps its slot until it is idle again.
        False when its slot went to a newcomer meanwhile (then the caller closes it)."""
        return self._mark(conn, None)

    def _mark(self, conn: Any, waiting: "Optional[collections.OrderedDict[Any, float]]"
              ) -> bool:
        with self._lock:
            if conn not in self._open:
                return False
            self._forget(conn)
            if waiting is not None:
                waiting[conn] = self._clock()
            return True

    def _forget(self, conn: Any) -> None:
        self._idle.pop(conn, None)
        self._heads.pop(conn, None)

    def release(self, conn: Any) -> None:
        """``conn`` is closed: its slot is free (nothing happens for a reclaimed one)."""
        with self._lock:
            self._forget(conn)
            self._open.pop(conn, None)
