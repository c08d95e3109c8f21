"""Noticing clients that hang up while their request runs, so that the backend run is
cancelled instead of finishing for nobody: one thread and one selector for the whole server.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
import time
from typing import Callable, Optional


class Watch:
    """One watched connection; ``stop()`` ends the watch (idempotent)."""

    def __init__(self, watcher: "DisconnectWatcher", sock: socket.socket,
                 on_gone: Callable[[], None]) -> None:
        self.watcher = watcher
        self.sock = sock
        self.on_gone = on_gone
        self.registered = False

    def stop(self) -> None:
        self.watcher.unwatch(self)


class DisconnectWatcher:
    """One thread for the whole server that notices when a client hangs up while its request
    is running: its socket turns readable and a peek reads end-of-file (or a reset).

    A client that sends more bytes (a pipelined request) cannot be told apart from one that is
    still there, so its watch simply ends. A client that half-closes its side after sending
    the request counts as gone.
    """

    SELECT_SECS = 0.5

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._selector: Optional[selectors.BaseSelector] = None

    def watch(self, sock: socket.socket, on_gone: Callable[[], None]) -> Watch:
        w = Watch(self, sock, on_gone)
        with self._lock:
            if self._selector is None:
                self._selector = selectors.DefaultSelector()
                threading.Thread(target=self._loop, name="clinvk-disconnect-watcher",
                                 daemon=True).start()
            try:
                self._selector.register(sock, selectors.EVENT_READ, w)
                w.registered = True
            except (KeyError, ValueError, OSError):
                pass                      # closed already, or watched by an outer watch
        return w

    def unwatch(self, w: Watch) -> None:
        with self._lock:
            if w.registered:
                w.registered = False
                with contextlib.suppress(KeyError, ValueError, OSError):
                    self._selector.unregister(w.sock)

    def _loop(self) -> None:
        while True:
            try:
                ready = self._selector.select(self.SELECT_SECS)
            except (OSError, ValueError):
                time.sleep(self.SELECT_SECS)
                continue
            for key, _ in ready:
                w = key.data
                gone = _peer_gone(w.sock)
                with self._lock:
                    if not w.registered:
                        continue
                    w.registered = False
                    with contextlib.suppress(KeyError, ValueError, OSError):
                        self._selector.unregister(w.sock)
                if gone:
                    w.on_gone()


def _peer_gone(sock: socket.socket) -> bool:
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return True
