"""Run slots: how many backend processes may run at once, and the queue in front of them.

``server.max_concurrent_runs`` slots, shared by everything one ``clinvk serve`` or
``clinvk mcp`` process runs; a request (or tool call) that finds them all taken waits, first
come first served, for up to ``server.queue_timeout_secs``, then is refused (``Busy``: a 503 +
Retry-After over HTTP, an error result over MCP). Freed slots are handed straight to the
longest waiter, so a newcomer never overtakes the queue.
"""

from __future__ import annotations

import collections
import contextlib
import math
import threading
import time
from typing import Callable, Deque, Iterator, Optional, Tuple


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

    def acquire(self, count: int = 1, abandoned: Optional[Callable[[], bool]] = None,
                timeout: Optional[float] = None) -> int:
        """Take ``count`` slots (at most ``limit``), waiting in line if needed; returns how
        many were taken. Raises Busy after ``timeout`` seconds (None: the queue timeout;
        ``math.inf``: never, for a durable job that has nobody waiting on a connection), or
        Abandoned as soon as ``abandoned()`` turns true (checked every POLL_SECS)."""
        count = max(1, min(count, self.limit))
        patience = self.queue_timeout if timeout is None else timeout
        with self._lock:
            if not self._waiters and self._free >= count:
                self._free -= count
                return count
            if patience <= 0:
                raise self._busy(0.0)
            turn = threading.Event()
            entry = (turn, count)
            self._waiters.append(entry)
        started = time.monotonic()
        deadline = started + patience
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
