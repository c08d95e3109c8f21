"""Run one backend CLI as a child process; knows processes, nothing about backends.

Promises:
- argv is a list (never a shell); the child gets its own process group (session);
- the prompt is written to the child's stdin, which is then closed;
- stdout is yielded line by line as it arrives; stderr is collected apart, keeping at most
  ``stderr_limit`` bytes (the tail);
- a timeout, a ``cancel()`` from another thread, or ``kill_all()`` (the CLI's Ctrl-C) sends
  SIGTERM to the whole group, then SIGKILL after ``grace`` seconds;
- when the child exits, whatever is left of its group is killed and the child is reaped, so
  nothing outlives a run (no orphans, no zombies).
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from typing import Dict, Iterator, List, Optional

DEFAULT_STDERR_LIMIT = 256 * 1024
DEFAULT_GRACE = 2.0

_live_lock = threading.Lock()
_live: "set" = set()


class StartError(Exception):
    """The child could not be started (missing executable, bad cwd, permissions)."""


class Outcome:
    """How a finished child ended. ``exit_code`` is negative (-signal) when it was killed."""

    __slots__ = ("exit_code", "stderr", "stderr_truncated", "timed_out", "cancelled",
                 "duration_ms")

    def __init__(self, exit_code: int, stderr: str, stderr_truncated: bool, timed_out: bool,
                 cancelled: bool, duration_ms: int) -> None:
        self.exit_code = exit_code
        self.stderr = stderr
        self.stderr_truncated = stderr_truncated
        self.timed_out = timed_out
        self.cancelled = cancelled
        self.duration_ms = duration_ms

    def __repr__(self) -> str:
        return ("Outcome(exit_code=%r, timed_out=%r, cancelled=%r, duration_ms=%r)"
                % (self.exit_code, self.timed_out, self.cancelled, self.duration_ms))


class Process:
    """A started child. Iterate ``lines()`` (or call ``wait()``) exactly once."""

    def __init__(self, argv: List[str], stdin_text: str = "", cwd: Optional[str] = None,
                 env: Optional[Dict[str, str]] = None, timeout: Optional[float] = None,
                 stderr_limit: int = DEFAULT_STDERR_LIMIT, grace: float = DEFAULT_GRACE) -> None:
        self.argv = list(argv)
        self._grace = grace
        self._stderr_limit = stderr_limit
        self._stderr_chunks: List[bytes] = []
        self._stderr_size = 0
        self._stderr_truncated = False
        self._kill_lock = threading.Lock()
        self._kill_started = False
        self.timed_out = False
        self.cancelled = False
        self._started = time.monotonic()
        try:
            self._proc = subprocess.Popen(
                self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, cwd=cwd or None, env=env, start_new_session=True,
                close_fds=True)
        except (OSError, ValueError) as exc:   # ValueError: a NUL byte in argv or env
            raise StartError("cannot start %s: %s" % (self.argv[0],
                                                      getattr(exc, "strerror", None) or exc))
        self.pid = self._proc.pid
        with _live_lock:
            _live.add(self)
        self._threads = [
            _daemon(self._feed_stdin, stdin_text.encode("utf-8")),
            _daemon(self._drain_stderr),
            _daemon(self._reap_group),
        ]
        self._timer: Optional[threading.Timer] = None
        if timeout and timeout > 0:
            self._timer = threading.Timer(timeout, self._on_timeout)
            self._timer.daemon = True
            self._timer.start()

    # -- the child's three pipes -------------------------------------------------------------

    def _feed_stdin(self, data: bytes) -> None:
        # A thread, so a 1 MB prompt cannot deadlock against a child that writes before reading.
        try:
            if data:
                self._proc.stdin.write(data)
        except (BrokenPipeError, OSError, ValueError):
            pass
        finally:
            try:
                self._proc.stdin.close()
            except (BrokenPipeError, OSError, ValueError):
                pass

    def _drain_stderr(self) -> None:
        while True:
            chunk = self._proc.stderr.read1(65536) if hasattr(self._proc.stderr, "read1") \
                else self._proc.stderr.read(65536)
            if not chunk:
                break
            self._stderr_chunks.append(chunk)
            self._stderr_size += len(chunk)
            while self._stderr_size > self._stderr_limit and len(self._stderr_chunks) > 1:
                self._stderr_size -= len(self._stderr_chunks.pop(0))
                self._stderr_truncated = True
            if self._stderr_size > self._stderr_limit:
                self._stderr_chunks[0] = self._stderr_chunks[0][-self._stderr_limit:]
                self._stderr_size = len(self._stderr_chunks[0])
                self._stderr_truncated = True
        self._proc.stderr.close()

    def _reap_group(self) -> None:
        # When the child itself is gone, anything it left in its group (helpers, grandchildren
        # holding our stdout open) is killed, so the run ends and nothing is orphaned.
        self._proc.wait()
        _signal_group(self.pid, signal.SIGKILL)

    # -- stopping ------------------------------------------------------------------------------

    def _on_timeout(self) -> None:
        self.timed_out = True
        self.terminate()

    def cancel(self) -> None:
        """Stop the run from any thread (client gone, Ctrl-C, fail-fast)."""
        self.cancelled = True
        self.terminate()

    def terminate(self) -> None:
        """SIGTERM to the group, SIGKILL after the grace period if it is still alive."""
        with self._kill_lock:
            if self._kill_started:
                return
            self._kill_started = True
        if self._proc.poll() is not None:
            return
        _signal_group(self.pid, signal.SIGTERM)
        _daemon(self._kill_after_grace)

    def _kill_after_grace(self) -> None:
        try:
            self._proc.wait(timeout=self._grace)
        except subprocess.TimeoutExpired:
            _signal_group(self.pid, signal.SIGKILL)

    # -- results -------------------------------------------------------------------------------

    def lines(self) -> Iterator[str]:
        """stdout, one decoded line (without its newline) at a time, as the child prints it."""
        try:
            for raw in self._proc.stdout:
                yield raw.decode("utf-8", errors="replace").rstrip("\r\n")
        except GeneratorExit:
            # The consumer stopped early (generator closed): the run is abandoned. Only then:
            # at the end of stdout the child may simply not have been reaped yet.
            if self._proc.poll() is None and not self._kill_started:
                self.cancel()
            raise

    def wait(self) -> Outcome:
        """Wait for the end of the child (draining stdout if nobody read it) and reap it."""
        if not self._proc.stdout.closed:
            for _ in self._proc.stdout:
                pass
        self._proc.stdout.close()
        self._proc.wait()
        for t in self._threads:
            t.join(timeout=5)
        if self._timer is not None:
            self._timer.cancel()
        with _live_lock:
            _live.discard(self)
        stderr = b"".join(self._stderr_chunks).decode("utf-8", errors="replace")
        return Outcome(self._proc.returncode, stderr, self._stderr_truncated, self.timed_out,
                       self.cancelled, int((time.monotonic() - self._started) * 1000))

    def poll(self) -> Optional[int]:
        return self._proc.poll()


def run(argv: List[str], stdin_text: str = "", cwd: Optional[str] = None,
        env: Optional[Dict[str, str]] = None, timeout: Optional[float] = None) -> "tuple":
    """Run to completion; returns ``(stdout_text, Outcome)``."""
    proc = Process(argv, stdin_text, cwd, env, timeout)
    out = "\n".join(proc.lines())
    return out, proc.wait()


def kill_all(grace: float = DEFAULT_GRACE) -> int:
    """Cancel every live child of this process (Ctrl-C, SIGTERM) and wait until each group
    is gone (SIGKILL after ``grace`` seconds), so the caller may exit; returns how many."""
    with _live_lock:
        procs = list(_live)
    for p in procs:
        p.cancel()
    deadline = time.monotonic() + grace
    for p in procs:
        try:
            p._proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _signal_group(p.pid, signal.SIGKILL)
            p._proc.wait()
        _signal_group(p.pid, signal.SIGKILL)     # whatever the child left in its group
    return len(procs)


def live_count() -> int:
    with _live_lock:
        return len(_live)


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _daemon(target, *args) -> threading.Thread:
    t = threading.Thread(target=target, args=args, daemon=True)
    t.start()
    return t
