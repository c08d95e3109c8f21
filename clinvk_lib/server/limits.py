"""How many connections the server holds open at once (``server.max_connections``).

Past the limit the connection idle longest makes room for a newcomer, and when none is idle
the newcomer is refused. (How many backend runs it takes on at once is ``runslots.py``: the MCP
server shares that limiter.)
"""

from __future__ import annotations

import collections
import threading
import time
from typing import Any, Callable, Dict, Optional, Tuple


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
