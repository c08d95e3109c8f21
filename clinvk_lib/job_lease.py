"""Which server process runs a job: a runner lease, a lock file the process holds for as long
as it lives (``<home>/jobs/runners/<id>.lock``, flock: the kernel lets go when the process
dies, even by SIGKILL). A job whose runner holds no lease was left by a server that is gone."""

from __future__ import annotations

import fcntl
import os
import re

from .fsutil import unlink_quietly

_RUNNER = re.compile(r"[0-9a-f]{16}\Z")


def _lease_path(jobs_dir: str, runner: str) -> str:
    return os.path.join(jobs_dir, "runners", runner + ".lock")


def runner_alive(jobs_dir: str, runner: str) -> bool:
    """True while the process holding lease ``runner`` lives (this one included)."""
    if not _RUNNER.match(runner or ""):
        return False
    try:
        fd = os.open(_lease_path(jobs_dir, runner), os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


class RunnerLease:
    """This process's lease on the jobs it queues and runs: ``take()`` at start, ``release()``
    at the end; ``id`` goes into each job it owns."""

    def __init__(self, jobs_dir: str) -> None:
        self.id = os.urandom(8).hex()
        self._path = _lease_path(jobs_dir, self.id)
        self._fd = -1

    def take(self) -> None:
        """OSError when the jobs directory cannot be written."""
        os.makedirs(os.path.dirname(self._path), mode=0o700, exist_ok=True)
        # Read-only: a file held open for writing would keep the filesystem from being
        # remounted read-only (flock needs no write access).
        fd = os.open(self._path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def release(self) -> None:
        if self._fd >= 0:
            unlink_quietly(self._path)
            os.close(self._fd)
            self._fd = -1
