"""Run one backend CLI as a child process; knows processes, nothing about backends.

Promises:
- argv is a list (never a shell); the prompt is encoded (UTF-8, strict) before anything is
  started, so a prompt with no UTF-8 form is an ``InputError`` and no process;
- the child is started by this process's supervisor (``supervisor.py``, one per process) as
  the leader of a session and process group of its own, and its exit status is reported as
  its own. When
  this process dies, even by SIGKILL or the OOM killer, the supervisor SIGKILLs every group it
  started: no backend, and nothing it started in its group, outlives us;
- the prompt is written to the child's stdin, which is then closed;
- stdout is yielded line by line as it arrives; stderr is collected apart, keeping at most
  ``stderr_limit`` bytes (the tail), and when ``on_stderr`` is given each stderr line is also
  handed to it as it arrives (decoded, without its newline; a line longer than
  ``STDERR_LINE_LIMIT`` bytes is handed over in pieces of that size), from a thread of the
  runner's own: an exception it raises is ignored, so it can never stop the pipe's draining;
- a timeout, a ``cancel()`` from another thread, or ``kill_all()`` (the CLI's Ctrl-C) sends
  SIGTERM to the whole group, then SIGKILL after ``grace`` seconds;
- when the child exits, whatever is left of its group is killed (by the supervisor, before it
  reports the exit) and the child is reaped, so nothing outlives a run (no orphans, no
  zombies); a descendant that left the group
  (``setsid``) and still holds the pipes cannot hold up the run either: they are read for at
  most ``PIPE_GRACE`` seconds after the exit;
- nothing that can raise runs between starting a process and handing it to the code that
  kills and reaps it.
"""

from __future__ import annotations

import fcntl
import os
import select
import signal
import subprocess
import sys
import termios
import threading
import time
from typing import Callable, Dict, Iterator, List, Optional

from . import supervisor
from .supervisor import close_fds, signal_group
from .supervisor import StartError  # noqa: F401 (callers catch runner.StartError)

DEFAULT_STDERR_LIMIT = 256 * 1024
DEFAULT_GRACE = 2.0
PIPE_GRACE = 1.0          # seconds the pipes are still read after the child has exited
STDERR_LINE_LIMIT = 8192  # bytes of one stderr line held for ``on_stderr`` before it is handed over

_live_lock = threading.Lock()
_live: "set" = set()

class InputError(ValueError):
    """The text for the child's stdin has no UTF-8 form (a lone surrogate)."""


def encode_stdin(text: str) -> bytes:
    """``text`` as UTF-8; InputError naming the first character that cannot be encoded."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        at = exc.start
    code = ord(text[at])
    if 0xDC80 <= code <= 0xDCFF:        # os.fsdecode's stand-in for a byte that is not UTF-8
        raise InputError("cannot be encoded as UTF-8: the byte 0x%02x at character %d is not "
                         "UTF-8 text (convert the text to UTF-8)" % (code - 0xDC00, at))
    raise InputError("cannot be encoded as UTF-8: lone surrogate \\u%04x at character %d "
                     "(\\uD800-\\uDFFF are valid only as the halves of a surrogate pair)"
                     % (code, at))


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
    """A started child. Iterate ``lines()`` (or call ``wait()``) exactly once.

    ``pid`` is the child's, which leads its own session and process group (its parent is the
    supervisor)."""

    def __init__(self, argv: List[str], stdin_text: str = "", cwd: Optional[str] = None,
                 env: Optional[Dict[str, str]] = None, timeout: Optional[float] = None,
                 stderr_limit: int = DEFAULT_STDERR_LIMIT, grace: float = DEFAULT_GRACE,
                 on_stderr: Optional[Callable[[str], None]] = None) -> None:
        data = encode_stdin(stdin_text)
        self.argv = list(argv)
        self._grace = grace
        self._stderr_limit = stderr_limit
        self._on_stderr = on_stderr
        self._stderr_chunks: List[bytes] = []
        self._stderr_size = 0
        self._stderr_truncated = False
        self._stdout_done = False
        self._exited_at: Optional[float] = None
        self._kill_lock = threading.Lock()
        self._kill_started = False
        self.timed_out = False
        self.cancelled = False
        self._threads: List[threading.Thread] = []
        self._timer: Optional[threading.Timer] = None
        self._started = time.monotonic()
        self._proc, self._lifeline, self._exit_fd = supervisor.start(self.argv, cwd, env)
        self.pid = self._proc.pid
        try:
            self._adopt(data, timeout)
        except BaseException:
            self.kill()
            raise

    def _adopt(self, data: bytes, timeout: Optional[float]) -> None:
        with _live_lock:
            _live.add(self)
        rest = self._write_stdin_at_once(data)
        if rest:
            self._threads.append(_daemon(self._feed_stdin, rest))
        self._threads.append(_daemon(self._drain_stderr))
        if timeout and timeout > 0:
            self._timer = threading.Timer(timeout, self._on_timeout)
            self._timer.daemon = True
            self._timer.start()

    # -- the child's three pipes -------------------------------------------------------------

    def _write_stdin_at_once(self, data: bytes) -> bytes:
        """Write what the pipe takes now (all of a usual prompt) and close stdin if that was
        all; what is left, for ``_feed_stdin``."""
        fd = self._proc.stdin.fileno()
        os.set_blocking(fd, False)
        try:
            data = data[os.write(fd, data):] if data else data
        except BlockingIOError:
            return data
        except OSError:             # EPIPE: the child closed its stdin
            data = b""
        if not data:
            self._proc.stdin.close()
        return data

    def _feed_stdin(self, data: bytes) -> None:
        # A thread, so a 1 MB prompt cannot deadlock against a child that writes before reading;
        # non-blocking, so a descendant that holds stdin open unread cannot keep it past the exit.
        fd = self._proc.stdin.fileno()
        view = memoryview(data)
        try:
            os.set_blocking(fd, False)
            poller = select.poll()
            poller.register(fd, select.POLLOUT)
            poller.register(self._exit_fd, select.POLLIN)
            while view:
                ready = dict(poller.poll())
                if self._exit_fd in ready:
                    break
                try:
                    view = view[os.write(fd, view[:65536]):]
                except BlockingIOError:
                    continue
        except OSError:             # EPIPE: the child closed its stdin
            pass
        finally:
            try:
                self._proc.stdin.close()
            except OSError:
                pass

    def _drain_stderr(self) -> None:
        lines = _LineSplitter(self._on_stderr) if self._on_stderr is not None else None
        for chunk in self._pipe_chunks(self._proc.stderr.fileno()):
            if lines is not None:
                lines.feed(chunk)
            self._stderr_chunks.append(chunk)
            self._stderr_size += len(chunk)
            while self._stderr_size > self._stderr_limit and len(self._stderr_chunks) > 1:
                self._stderr_size -= len(self._stderr_chunks.pop(0))
                self._stderr_truncated = True
            if self._stderr_size > self._stderr_limit:
                self._stderr_chunks[0] = self._stderr_chunks[0][-self._stderr_limit:]
                self._stderr_size = len(self._stderr_chunks[0])
                self._stderr_truncated = True
        if lines is not None:
            lines.flush()
        self._proc.stderr.close()

    def _pipe_chunks(self, fd: int) -> Iterator[bytes]:
        """What arrives on ``fd`` until end of file or, once the child has exited, until the
        pipe is empty PIPE_GRACE seconds later: then what it holds is read and no more (a
        descendant that left the group may keep it open, or writing, for ever)."""
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        poller.register(self._exit_fd, select.POLLIN)
        while True:
            if self._exited_at is not None and time.monotonic() >= self._exited_at + PIPE_GRACE:
                yield from _buffered_chunks(fd)
                return
            wait_ms = None if self._exited_at is None else \
                max(0, int((self._exited_at + PIPE_GRACE - time.monotonic()) * 1000) + 1)
            ready = dict(poller.poll(wait_ms))
            if self._exit_fd in ready:
                poller.unregister(self._exit_fd)
                if self._exited_at is None:
                    self._exited_at = time.monotonic()
            if fd in ready:
                try:
                    chunk = os.read(fd, 65536)
                except OSError:         # closed under us by wait() after its join timed out
                    return
                if not chunk:
                    return
                yield chunk

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
        signal_group(self.pid, signal.SIGTERM)
        _daemon(self._kill_after_grace)

    def _kill_after_grace(self) -> None:
        try:
            self._proc.wait(timeout=self._grace)
        except subprocess.TimeoutExpired:
            signal_group(self.pid, signal.SIGKILL)

    def kill(self) -> Outcome:
        """SIGKILL the group at once, then ``wait()``: for a caller that must give up on a
        child it has just started."""
        with self._kill_lock:
            self._kill_started = True
        signal_group(self.pid, signal.SIGKILL)
        return self.wait()

    # -- results -------------------------------------------------------------------------------

    def lines(self) -> Iterator[str]:
        """stdout, one decoded line (without its newline) at a time, as the child prints it."""
        pending: List[bytes] = []
        try:
            for chunk in self._pipe_chunks(self._proc.stdout.fileno()):
                *complete, rest = chunk.split(b"\n")
                if complete:
                    complete[0] = b"".join(pending + complete[:1])
                    pending = []
                    for raw in complete:
                        yield _decode_line(raw)
                if rest:
                    pending.append(rest)
            self._stdout_done = True
            if pending:
                yield _decode_line(b"".join(pending))
        except GeneratorExit:
            # The consumer stopped early (generator closed): the run is abandoned. Only then:
            # at the end of stdout the child may simply not have been reaped yet.
            if self._proc.poll() is None and not self._kill_started:
                self.cancel()
            raise

    def wait(self) -> Outcome:
        """Wait for the end of the child (draining stdout if nobody read it) and reap it."""
        if not self._stdout_done:
            for _ in self._pipe_chunks(self._proc.stdout.fileno()):
                pass
            self._stdout_done = True
        self._proc.stdout.close()
        self._proc.wait()
        for t in self._threads:
            t.join(timeout=5)
        for pipe in (self._proc.stdin, self._proc.stderr):   # when their thread never ran
            pipe.close()
        if self._timer is not None:
            self._timer.cancel()
        with _live_lock:
            _live.discard(self)
        close_fds(self._lifeline, self._exit_fd)
        self._lifeline = self._exit_fd = -1
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
            signal_group(p.pid, signal.SIGKILL)
            p._proc.wait()
        signal_group(p.pid, signal.SIGKILL)     # whatever the child left in its group
    return len(procs)


def live_count() -> int:
    with _live_lock:
        return len(_live)


# -- helpers -----------------------------------------------------------------------------------


def _buffered_chunks(fd: int) -> Iterator[bytes]:
    """What the pipe ``fd`` holds right now, and no more."""
    left = int.from_bytes(fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"), sys.byteorder)
    while left > 0:
        chunk = os.read(fd, min(left, 65536))
        if not chunk:
            return
        left -= len(chunk)
        yield chunk


class _LineSplitter:
    """Hands each complete line of a byte stream to ``sink`` (decoded, newline stripped),
    holding at most STDERR_LINE_LIMIT bytes of an unfinished line; ``sink``'s exceptions are
    swallowed (it runs on the thread that must keep draining the pipe)."""

    def __init__(self, sink: Callable[[str], None]) -> None:
        self._sink = sink
        self._pending = b""

    def feed(self, chunk: bytes) -> None:
        *complete, self._pending = (self._pending + chunk).split(b"\n")
        while len(self._pending) > STDERR_LINE_LIMIT:
            complete.append(self._pending[:STDERR_LINE_LIMIT])
            self._pending = self._pending[STDERR_LINE_LIMIT:]
        for raw in complete:
            self._hand_over(raw)

    def flush(self) -> None:
        if self._pending:
            self._hand_over(self._pending)
            self._pending = b""

    def _hand_over(self, raw: bytes) -> None:
        try:
            self._sink(_decode_line(raw))
        except Exception:  # noqa: BLE001 - a display problem must not stall the child
            pass


def _decode_line(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace").rstrip("\r\n")


def _daemon(target, *args) -> threading.Thread:
    t = threading.Thread(target=target, args=args, daemon=True)
    t.start()
    return t
