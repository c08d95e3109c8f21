"""Start commands under one supervisor per process, which outlives nothing it started.

The first ``start()`` (or ``launch_ahead()``) runs ``python -I -S -c SOURCE SOCKET`` as the
leader of a new session, connected to this process by a Unix socket pair: its lifeline. Each
``start()`` hands it one command (argv, workdir, environment) with the command's three standard
streams, a report pipe and the run's own lifeline pipe (file descriptors passed with
SCM_RIGHTS; nothing is relayed). The supervisor starts the command in a new session (so it
leads its own process group) with the default signal dispositions Popen would give it, writes
``S<pid>`` or ``E<reason>`` to the report pipe and, when the command exits, kills what is left
of its group,
writes ``X<wait status>`` and closes the report pipe, so the caller sees the exit as data
followed by end of file. It SIGKILLs a run's group when that run's lifeline reaches end of file
while the command lives, and every group it started when its own lifeline does: the caller
closed it or died, SIGKILL and the OOM killer included. It relies on nothing Linux-only (no
parent-death signal, no pidfd): sockets, pipes, process groups and ``posix_spawnp`` work the
same on macOS and the BSDs. A session per run, not only a process group: where the kernel
shares the CPU between sessions (Linux's autogroup), each run gets its own share, as it did
when each had a supervisor of its own.

One interpreter per process, not one per run: a Python start costs ~8 ms of CPU, which a
server paid for every request. If the supervisor dies, the runs it held end as killed (their
report pipes close without a status; ``Run.wait`` kills their groups) and the next ``start()``
launches a new one.
"""

from __future__ import annotations

import _socket   # not socket: it imports enum, ~1.5 ms more for a command line
import marshal
import os
import select
import signal
import subprocess
import sys
import threading
from typing import Dict, List, Optional, Tuple

START_TIMEOUT = 30.0      # seconds the supervisor may take to start the command

# The supervisor program: `python -I -S -c SOURCE SOCKET`.
# -I -S: no site, no PYTHON* variables, nothing imported from the working directory (a
# request's workdir). Built-in and extension modules only (``signal`` and ``socket`` would
# import enum); a string, not a module, so it runs the same from the zipapp.
# It ignores the group signals it would otherwise die of, and starts each command with the
# default dispositions. One message per run on SOCKET: a 4-byte length, then marshal of
# (argv, workdir, environment), with five descriptors: stdin, stdout, stderr, report, lifeline.
# It is started with an empty environment (nothing of its caller's, whose secrets a command
# may have been denied) and gives each command exactly the one it is handed: Python's start-up
# may have set LC_CTYPE in its own (PEP 538); only the command's PATH is put in its own, where
# posix_spawnp looks. It enters each run's workdir to start it and returns to "/" (it holds no
# workdir busy). SIGCHLD wakes its loop through a wake-up pipe.
SOURCE = r"""# clinvk-supervisor
import os, sys, marshal, select, _signal as signal, _socket
sock = _socket.socket(fileno=int(sys.argv[1]))
os.set_inheritable(sock.fileno(), False)
group = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)
for s in group:
    signal.signal(s, signal.SIG_IGN)
default = group + (signal.SIGPIPE, signal.SIGXFSZ)
null = os.open(os.devnull, os.O_RDWR)
for fd in (0, 1, 2):
    os.dup2(null, fd)
wake_r, wake_w = os.pipe()
os.set_blocking(wake_r, False)
os.set_blocking(wake_w, False)
signal.set_wakeup_fd(wake_w)
signal.signal(signal.SIGCHLD, lambda *_: None)
runs = {}       # pid -> (report fd, lifeline fd)
lifelines = {}  # lifeline fd -> pid
poller = select.poll()
poller.register(sock.fileno(), select.POLLIN)
poller.register(wake_r, select.POLLIN)
FDS = 5

def end_all():
    for pid in runs:
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass
    os._exit(0)

def receive():
    head, fds = b"", []
    while len(head) < 4:
        data, anc, flags, addr = sock.recvmsg(4 - len(head), _socket.CMSG_SPACE(FDS * 4))
        for level, kind, raw in anc:
            if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
                raw = raw[:len(raw) - len(raw) % 4]
                fds.extend(memoryview(raw).cast("i"))
        if not data:
            end_all()
        head += data
    size = int.from_bytes(head, "big")
    chunks = []
    while size:
        chunk = sock.recv(min(size, 1 << 20))
        if not chunk:
            end_all()
        chunks.append(chunk)
        size -= len(chunk)
    return marshal.loads(b"".join(chunks)), fds

def close(*fds):
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass

def write(fd, data):
    try:
        os.write(fd, data)
    except OSError:
        pass

def spawn(job, fds):
    if len(fds) != FDS:
        close(*fds)
        return
    (argv, cwd, env), (stdin, stdout, stderr, report, life) = job, fds
    for fd in fds:
        os.set_inheritable(fd, False)
    try:
        if cwd:
            os.chdir(cwd)
        if "PATH" in env:             # posix_spawnp searches our PATH: the command's
            os.environ["PATH"] = env["PATH"]
        else:
            os.environ.pop("PATH", None)
        pid = os.posix_spawnp(argv[0], argv, env, setsid=True, setsigdef=default,
                              file_actions=[(os.POSIX_SPAWN_DUP2, stdin, 0),
                                            (os.POSIX_SPAWN_DUP2, stdout, 1),
                                            (os.POSIX_SPAWN_DUP2, stderr, 2)])
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        write(report, ("E" + reason).encode("utf-8", "replace"))
        close(*fds)
        return
    finally:
        os.chdir("/")
    close(stdin, stdout, stderr)
    runs[pid] = (report, life)
    lifelines[life] = pid
    poller.register(life, select.POLLIN)
    write(report, b"S%d\n" % pid)

def reap():
    while runs:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if not pid:
            return
        if pid not in runs:
            continue
        report, life = runs.pop(pid)
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass
        write(report, b"X%d\n" % status)
        close(report)
        if lifelines.pop(life, None) is not None:
            poller.unregister(life)
            close(life)

while True:
    for fd, events in poller.poll():
        if fd == wake_r:
            try:
                while os.read(wake_r, 512):
                    pass
            except OSError:
                pass
            reap()
        elif fd == sock.fileno():
            try:
                job, fds = receive()
            except OSError:
                end_all()
            spawn(job, fds)
        elif fd in lifelines:
            pid = lifelines.pop(fd)
            poller.unregister(fd)
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass
            runs[pid] = (runs[pid][0], -1)
            close(fd)
    reap()
"""


class StartError(Exception):
    """The child could not be started (missing executable, bad cwd, permissions)."""


class Run:
    """A command started by the supervisor, as much of ``subprocess.Popen`` as the runner
    uses: ``pid`` (also its process group's id), ``stdin``/``stdout``/``stderr`` (our ends of
    its pipes), ``poll()``, ``wait(timeout)`` and ``returncode`` (-signal when killed)."""

    def __init__(self, pid: int, stdin: int, stdout: int, stderr: int, report: int) -> None:
        self.pid = pid
        self.args = [str(pid)]
        self.stdin = open(stdin, "wb", buffering=0)
        self.stdout = open(stdout, "rb", buffering=0)
        self.stderr = open(stderr, "rb", buffering=0)
        self.returncode: Optional[int] = None
        self._report = report
        self._lock = threading.Lock()

    def poll(self) -> Optional[int]:
        if self.returncode is None:
            try:
                return self.wait(0)
            except subprocess.TimeoutExpired:
                pass
        return self.returncode

    def wait(self, timeout: Optional[float] = None) -> int:
        if self.returncode is not None:
            return self.returncode
        poller = select.poll()
        poller.register(self._report, select.POLLIN)
        if not poller.poll(None if timeout is None else max(0, int(timeout * 1000))):
            raise subprocess.TimeoutExpired(self.pid, timeout)
        with self._lock:
            if self.returncode is None:
                self.returncode = self._read_status()
        return self.returncode

    def _read_status(self) -> int:
        """The exit status the supervisor reports; if it died instead, the group is killed
        here and the run ends as killed."""
        data = b""
        while True:
            chunk = os.read(self._report, 64)
            if not chunk:
                break
            data += chunk
        if data.startswith(b"X") and data.endswith(b"\n"):
            status = int(data[1:])
            if os.WIFSIGNALED(status):
                return -os.WTERMSIG(status)
            return os.WEXITSTATUS(status)
        signal_group(self.pid, signal.SIGKILL)
        return -signal.SIGKILL


class _Supervisor:
    """The running supervisor: its process and our end of the socket (its lifeline)."""

    def __init__(self) -> None:
        ours, theirs = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_STREAM)
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", SOURCE, str(theirs.fileno())],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                env={}, start_new_session=True, close_fds=True, pass_fds=(theirs.fileno(),))
        except OSError as exc:
            ours.close()
            raise StartError("cannot start the process supervisor (%s): %s"
                             % (sys.executable, exc.strerror or exc))
        finally:
            theirs.close()
        self.sock = ours
        self.owner = os.getpid()
        self.broken = False
        self.lock = threading.Lock()

    def usable(self) -> bool:
        return not self.broken and self.owner == os.getpid() and self.proc.poll() is None

    def send(self, job: bytes, fds: List[int]) -> None:
        """Hand one command over; OSError if the supervisor is gone."""
        message = len(job).to_bytes(4, "big") + job
        with self.lock:
            try:
                rights = b"".join(fd.to_bytes(4, sys.byteorder, signed=True) for fd in fds)
                sent = self.sock.sendmsg([message[:4096]],
                                         [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, rights)],
                                         getattr(_socket, "MSG_NOSIGNAL", 0))
                self.sock.sendall(message[sent:])
            except OSError:
                self.broken = True
                raise

    def close(self) -> None:
        self.sock.close()
        if self.owner == os.getpid():
            self.proc.wait()


_lock = threading.Lock()
_shared: Optional[_Supervisor] = None


def _supervisor() -> _Supervisor:
    """This process's supervisor, started now if there is none or it died."""
    global _shared
    with _lock:
        if _shared is None or not _shared.usable():
            if _shared is not None:
                _shared.close()
                _shared = None
            _shared = _Supervisor()
        return _shared


def launch_ahead() -> None:
    """Start this process's supervisor now, unless it runs already; nothing happens if it
    cannot start (``start()`` will say why)."""
    try:
        _supervisor()
    except StartError:
        pass


def start(argv: List[str], cwd: Optional[str], env: Optional[Dict[str, str]]
          ) -> Tuple[Run, int, int]:
    """(the started command with pipes to its stdin, stdout and stderr, the run's lifeline
    end, and its exit-report end, which becomes readable when the command has exited) once
    the command has started in ``cwd`` (None: ours) with ``env`` (None: ours); StartError,
    with nothing left running, when it could not."""
    try:
        cwd = cwd or os.getcwd()
    except OSError:
        cwd = ""
    job = marshal.dumps((list(argv), cwd, dict(os.environ if env is None else env)))
    pipes = [os.pipe() for _ in range(5)]
    (stdin_r, stdin_w), (stdout_r, stdout_w), (stderr_r, stderr_w), \
        (report_r, report_w), (life_r, life_w) = pipes
    ours = [stdin_w, stdout_r, stderr_r, report_r, life_w]
    try:
        try:
            _hand_over(job, [stdin_r, stdout_w, stderr_w, report_w, life_r], argv[0])
        finally:
            close_fds(stdin_r, stdout_w, stderr_w, report_w, life_r)
        pid = _await_start(report_r, argv[0])
    except BaseException:
        close_fds(*ours)         # the run's lifeline: a command started late is killed
        raise
    return Run(pid, stdin_w, stdout_r, stderr_r, report_r), life_w, report_r


def _hand_over(job: bytes, fds: List[int], name: str) -> None:
    """Send the command to the supervisor, starting a new one once if it is gone."""
    for attempt in (1, 2):
        supervisor = _supervisor()
        try:
            supervisor.send(job, fds)
            return
        except OSError as exc:
            if attempt == 2:
                raise StartError("cannot start %s: its supervisor (%s) is gone (%s)"
                                 % (name, sys.executable, exc.strerror or exc))


def _await_start(report_fd: int, name: str) -> int:
    """The command's pid once the supervisor says it started it; StartError saying why not."""
    poller = select.poll()
    poller.register(report_fd, select.POLLIN)
    report = b""
    while not report.endswith(b"\n"):
        if not poller.poll(int(START_TIMEOUT * 1000)):
            raise StartError("cannot start %s: its supervisor (%s) did not start it within %gs"
                             % (name, sys.executable, START_TIMEOUT))
        chunk = os.read(report_fd, 1 if report[:1] != b"E" else 4096)   # not the exit's "X"
        if not chunk:
            break
        report += chunk
    if report.startswith(b"S") and report.endswith(b"\n"):
        return int(report[1:])
    if report.startswith(b"E"):
        raise StartError("cannot start %s: %s" % (name, report[1:].decode("utf-8", "replace")))
    raise StartError("cannot start %s: its supervisor (%s -I -S) exited before starting it"
                     % (name, sys.executable))


def close_fds(*fds: int) -> None:
    """Close each of ``fds`` that is not -1, ignoring errors."""
    for fd in fds:
        if fd >= 0:
            try:
                os.close(fd)
            except OSError:
                pass


def signal_group(pgid: int, sig: int) -> None:
    """Send ``sig`` to process group ``pgid``, if it still exists."""
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
