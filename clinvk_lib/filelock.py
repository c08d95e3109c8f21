"""Exclusive locks named by file paths, held across threads and processes alike.

A leaf: the standard library only (``fcntl.flock``). The lock file exists only while the lock
is held, so a directory of locks shows what is in use right now.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time
import weakref
from typing import Iterator, Optional


class _PathLock:
    """An exclusive lock named by a file path: flock across processes, a thread lock within
    this one (flock alone does not exclude threads sharing the descriptor), reentrant for the
    thread holding it. The file is unlinked on release; a waiter that then gets the flock on the
    unlinked file notices (its inode is no longer at the path) and locks the path afresh."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._thread_lock = threading.RLock()
        self._depth = 0
        self._fd = -1

    def acquire(self, timeout: Optional[float]) -> bool:
        """Wait up to ``timeout`` seconds (None = forever, 0 = just try); True if acquired."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if timeout is None:
            self._thread_lock.acquire()
        elif not (self._thread_lock.acquire(timeout=timeout) if timeout > 0
                  else self._thread_lock.acquire(blocking=False)):
            return False
        try:
            if self._depth == 0:
                self._fd = self._flock(deadline)
                if self._fd < 0:
                    self._thread_lock.release()
                    return False
            self._depth += 1
            return True
        except BaseException:
            self._thread_lock.release()
            raise

    def release(self) -> None:
        self._depth -= 1
        if self._depth == 0:
            fd, self._fd = self._fd, -1
            try:
                os.unlink(self.path)
            except OSError:
                pass
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
        self._thread_lock.release()

    def _flock(self, deadline: Optional[float]) -> int:
        """A descriptor holding the flock of the file now at ``path``, or -1 at the deadline."""
        delay = 0.001
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                if deadline is None:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                else:
                    while True:
                        try:
                            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                            break
                        except BlockingIOError:
                            left = deadline - time.monotonic()
                            if left <= 0:
                                os.close(fd)
                                return -1
                            time.sleep(min(delay, left))
                            delay = min(delay * 2, 0.05)
                held = os.fstat(fd)
                try:
                    current = os.stat(self.path)
                except FileNotFoundError:
                    current = None
                if current is not None and (current.st_dev, current.st_ino) == (
                        held.st_dev, held.st_ino):
                    return fd
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)


# One _PathLock per path in this process, shared by every user, so that a thread holding a
# lock (a session's, through one store) can re-enter it (through another store).
_path_locks = weakref.WeakValueDictionary()  # type: weakref.WeakValueDictionary[str, _PathLock]
_path_locks_guard = threading.Lock()


@contextlib.contextmanager
def locked(path: str, timeout: Optional[float]) -> Iterator[bool]:
    """Hold the lock named by ``path`` for the block if it can be had within ``timeout``
    seconds (None = wait as long as it takes, 0 = just try); yields whether it was acquired.
    OSError if the lock file cannot be created."""
    with _path_locks_guard:
        lock = _path_locks.get(path)
        if lock is None:
            lock = _path_locks[path] = _PathLock(path)
    acquired = lock.acquire(timeout)
    try:
        yield acquired
    finally:
        if acquired:
            lock.release()
