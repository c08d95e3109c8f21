"""The runs in flight on this server, for an operator to watch and stop: every request that
waits for or holds run slots (a synchronous prompt, a stream, a fan-out, an OpenAI or
Anthropic turn, a background response), with who asked, what runs and its latest events.

A leaf: it knows neither the App nor the request. ``Context.hold_run_slot`` registers a run
(``register``) before it waits for a slot and unregisters it when the slot is given back; the
context records the run's events (``record``) as they come. ``cancel`` fires the run's
cancel token, which stops its backends (their whole process groups). Memory is bounded: a run
keeps its last ``EVENTS_KEPT`` events, and the registry holds only runs still in flight.
"""

from __future__ import annotations

import collections
import itertools
import os
import threading
import time
from typing import Any, Callable, Deque, Dict, Iterator, List, Optional, Tuple

from ..textutil import rfc3339

EVENTS_KEPT = 200           # the latest events a run keeps for someone who starts watching
FOLLOW_POLL_SECS = 1.0      # how often a follower with nothing new checks whether to stop
TEXT_KEPT = 2000            # characters of one event's text kept (a long reply is cut)

QUEUED, RUNNING, PARKED = "queued", "running", "parked"


class Run:
    """One run in flight. ``key_id`` is "" when the server has no API keys."""

    def __init__(self, run_id: str, method: str, route: str, client: str, key_id: str,
                 request_id: str, cancel: Callable[[], None]) -> None:
        self.id = run_id
        self.method = method
        self.route = route
        self.client = client
        self.key_id = key_id
        self.request_id = request_id
        self.kind = "request"
        self.state = QUEUED
        self.backends: List[str] = []
        self.started = rfc3339()
        self.started_at = time.monotonic()
        self.cancel_requested = False
        self.ended = False
        self.events: Deque[Tuple[int, Dict[str, Any]]] = collections.deque(maxlen=EVENTS_KEPT)
        self.seq = 0
        self._cancel = cancel
        # True while the run waits for the client's tool result (the tool bridge).
        self.is_parked: Callable[[], bool] = lambda: False

    def to_dict(self) -> Dict[str, Any]:
        """The run as ``GET /api/v1/runs`` shows it."""
        state = PARKED if self.state == RUNNING and self.is_parked() else self.state
        return {"id": self.id, "kind": self.kind, "state": state,
                "backends": list(self.backends), "method": self.method, "route": self.route,
                "client": self.client, "key_id": self.key_id, "request_id": self.request_id,
                "started": self.started,
                "elapsed_ms": int((time.monotonic() - self.started_at) * 1000),
                "events": self.seq, "cancel_requested": self.cancel_requested}


class RunRegistry:
    """The runs in flight; thread-safe. ``visible_to`` is an API key id, or None for every
    run (no keys configured, or an admin key)."""

    def __init__(self) -> None:
        self._runs: Dict[str, Run] = {}
        self._changed = threading.Condition()
        self._ids = itertools.count(1)
        self._prefix = os.urandom(3).hex()

    def register(self, method: str, route: str, client: str, key_id: str, request_id: str,
                 cancel: Callable[[], None]) -> Run:
        run = Run("run_%s%d" % (self._prefix, next(self._ids)), method, route, client, key_id,
                  request_id, cancel)
        with self._changed:
            self._runs[run.id] = run
        return run

    def unregister(self, run: Run) -> None:
        with self._changed:
            run.ended = True
            self._runs.pop(run.id, None)
            self._changed.notify_all()

    def started(self, run: Run) -> None:
        """The run holds its slots now."""
        run.state = RUNNING

    def outlives_request(self, run: Run, cancel: Callable[[], None],
                         is_parked: Callable[[], bool]) -> None:
        """The run goes on after its request (a run parked on a client tool call): Cancel
        stops it with ``cancel``, and it shows as parked while ``is_parked()``."""
        run._cancel = cancel
        run.is_parked = is_parked

    def add_backend(self, run: Run, backend: str) -> None:
        with self._changed:
            if backend and backend not in run.backends:
                run.backends.append(backend)

    def record(self, run: Run, event: Dict[str, Any]) -> None:
        """Keep ``event`` (a unified event's dict) as the run's latest, and wake followers."""
        with self._changed:
            run.seq += 1
            run.events.append((run.seq, _trimmed(event)))
            self._changed.notify_all()

    def __len__(self) -> int:
        return len(self._runs)

    def list(self, visible_to: Optional[str] = None) -> List[Run]:
        """The runs in flight the caller may see, oldest first."""
        with self._changed:
            runs = list(self._runs.values())
        return [r for r in runs if visible_to is None or r.key_id == visible_to]

    def find(self, run_id: str, visible_to: Optional[str] = None) -> Optional[Run]:
        with self._changed:
            run = self._runs.get(run_id)
        if run is None or (visible_to is not None and run.key_id != visible_to):
            return None
        return run

    def cancel(self, run: Run) -> None:
        """Fire the run's cancel token: its backends' process groups get SIGTERM, then
        SIGKILL after the runner's grace period."""
        run.cancel_requested = True
        run._cancel()

    def wait_ended(self, run: Run, seconds: float) -> bool:
        """Wait until ``run`` is no longer in flight; False after ``seconds``."""
        deadline = time.monotonic() + seconds
        with self._changed:
            while not run.ended:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
        return True

    def follow(self, run: Run, stop: Callable[[], bool]) -> Iterator[Dict[str, Any]]:
        """The run's kept events, then each new one as it comes, each with its ``seq``;
        then a ``run_ended`` event. Ends early (without it) once ``stop()`` is true."""
        seen = 0
        while True:
            with self._changed:
                fresh = [(seq, e) for seq, e in run.events if seq > seen]
                if not fresh and not run.ended:
                    self._changed.wait(FOLLOW_POLL_SECS)
                    fresh = [(seq, e) for seq, e in run.events if seq > seen]
                ended = run.ended
            for seq, event in fresh:
                seen = seq
                yield dict(event, seq=seq)
            if ended and not fresh:
                yield {"type": "run_ended", "seq": seen + 1, "timestamp": rfc3339(),
                       "content": {"cancelled": run.cancel_requested}}
                return
            if stop():
                return


def _trimmed(event: Dict[str, Any]) -> Dict[str, Any]:
    """``event`` with any long text in its content cut to TEXT_KEPT characters."""
    content = event.get("content")
    if not isinstance(content, dict):
        return event
    cut = {k: (v[:TEXT_KEPT] + "..." if isinstance(v, str) and len(v) > TEXT_KEPT else v)
           for k, v in content.items()}
    return dict(event, content=cut)
