"""A command run in a pseudo-terminal, as a person runs it in a terminal window.

stdin and stdout are one pty, the command's controlling terminal (so Ctrl-C written to it
sends SIGINT to the command's process group, Ctrl-D ends a line editor's input), and stderr
is a second pty, so a test can tell what went to stdout from what went to stderr while both
are terminals. Either may be a pipe instead (``stdout_tty`` / ``stderr_tty``). What arrives is
collected by threads until the command ends.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import threading
import time
from typing import Dict, List, Optional, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLINVK = os.path.join(ROOT, "clinvk.py")
WAIT = 30.0               # seconds a test waits for a piece of output: generous, detects hangs


def _set_size(fd: int, rows: int, columns: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))


def _take_terminal() -> None:
    # Runs in the child after setsid(): fd 0 (the terminal pty) becomes its controlling tty.
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class _Collector:
    """Reads ``fd`` until end of file (EIO on a pty whose other side is closed)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.pieces: List[bytes] = []
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.fd, 65536)
            except OSError:
                return
            if not chunk:
                return
            with self.lock:
                self.pieces.append(chunk)

    def text(self) -> str:
        with self.lock:
            return b"".join(self.pieces).decode("utf-8", "replace")


class Terminal:
    """``python3 clinvk.py ARGV`` (or ``argv`` as given) in a terminal of ``columns`` columns."""

    def __init__(self, args: Sequence[str], env: Optional[Dict[str, str]] = None,
                 cwd: Optional[str] = None, stdout_tty: bool = True, stderr_tty: bool = True,
                 columns: int = 100, command: Optional[Sequence[str]] = None) -> None:
        full_env = dict(os.environ if env is None else env)
        full_env.setdefault("TERM", "xterm-256color")
        term_master, term_slave = pty.openpty()
        _set_size(term_slave, 40, columns)
        err_master = err_slave = -1
        if stderr_tty:
            err_master, err_slave = pty.openpty()
            _set_size(err_slave, 40, columns)
        argv = list(command) if command is not None else [sys.executable, CLINVK] + list(args)
        self.proc = subprocess.Popen(
            argv, stdin=term_slave, stdout=term_slave if stdout_tty else subprocess.PIPE,
            stderr=err_slave if stderr_tty else subprocess.PIPE, env=full_env, cwd=cwd,
            start_new_session=True, preexec_fn=_take_terminal)
        os.close(term_slave)
        if err_slave >= 0:
            os.close(err_slave)
        self.master = term_master
        self._out = _Collector(term_master if stdout_tty else self.proc.stdout.fileno())
        self._err = _Collector(err_master if stderr_tty else self.proc.stderr.fileno())
        self._err_master = err_master

    # -- input -----------------------------------------------------------------------------

    def type(self, text: str) -> None:
        """Type ``text`` at the terminal (a line ends with "\\r", as Enter sends it)."""
        os.write(self.master, text.encode("utf-8"))

    def ctrl_c(self) -> None:
        os.write(self.master, b"\x03")

    def ctrl_d(self) -> None:
        os.write(self.master, b"\x04")

    # -- output ----------------------------------------------------------------------------

    @property
    def out(self) -> str:
        """Everything the terminal showed from stdout (and the echo of what was typed)."""
        return self._out.text()

    @property
    def err(self) -> str:
        return self._err.text()

    def wait_for(self, pattern: str, stream: str = "out", timeout: float = WAIT,
                 after: int = 0) -> str:
        """Wait until ``stream`` ("out" or "err"), from character ``after`` on, matches the
        regular expression ``pattern``; returns that stream's text. AssertionError, showing
        both streams, when it does not within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.out if stream == "out" else self.err
            if re.search(pattern, text[after:]):
                return text
            if time.monotonic() > deadline:
                raise AssertionError("no %r on std%s within %gs\n--- stdout ---\n%r\n"
                                     "--- stderr ---\n%r" % (pattern, stream, timeout,
                                                             self.out, self.err))
            time.sleep(0.02)

    def wait(self, timeout: float = WAIT) -> int:
        """The exit code, once the command has ended and its output is all read."""
        try:
            code = self.proc.wait(timeout=timeout)
        finally:
            self.close()
        return code

    def close(self) -> None:
        """Kill the command if it still runs; collect the rest of its output."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for collector in (self._out, self._err):
            collector.thread.join(timeout=5)
        for fd in (self.master, self._err_master):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.master = self._err_master = -1
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()

    def __enter__(self) -> "Terminal":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
