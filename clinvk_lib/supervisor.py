"""Start a command under a supervisor that leads its process group and outlives nothing.

``start()`` runs ``python -I -S -c SOURCE`` as the leader of a new session and process group
and then hands it the command (argv, workdir, environment) through a pipe; the supervisor
starts the command in the same group with the three standard streams given to it (nothing is
relayed), exits with the command's own status (its exit code, or death by the same signal),
and SIGKILLs the whole group when its lifeline, a pipe whose write end only the caller holds,
reaches end of file: the caller closed it or died, SIGKILL and the OOM killer included. It
relies on nothing Linux-only (no parent-death signal): pipes, process groups and
``posix_spawnp`` work the same on macOS and the BSDs.

A Python interpreter takes ~7 ms to start: ``launch_ahead()`` starts the next supervisor at
once, so that a command line that is still loading its modules finds it ready. A supervisor
that is never handed a command exits when its caller does.
"""

from __future__ import annotations

import marshal
import os
import select
import signal
import subprocess
import sys
import threading
from typing import Dict, List, Optional, Tuple

START_TIMEOUT = 30.0      # seconds the supervisor may take to start the command

# The supervisor program: `python -I -S -c SOURCE LIFELINE REPORT JOB`.
# -I -S: no site, no PYTHON* variables, nothing imported from the working directory (a
# request's workdir). Built-in modules only (``signal`` would import enum: +13 ms), so it
# starts in ~10-20 ms; a string, not a module, so it runs the same from the zipapp.
# It ignores the group signals it would otherwise die of before the command, which it starts
# with the default dispositions Popen would give it; it reads (argv, workdir, environment)
# from JOB (marshal) until end of file, exiting if nothing came; it writes "S" (started) or
# "E<reason>" to REPORT and keeps REPORT open until it exits, so the caller sees the exit as a
# hang-up. It is started with an empty environment (nothing of its caller's, whose secrets the
# command may have been denied) and gives the command exactly the one it is handed: Python's
# start-up may have set LC_CTYPE in its own (PEP 538).
SOURCE = r"""
import os, sys, marshal, _signal as signal, _thread
life, report, job = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
for fd in (life, report, job):
    os.set_inheritable(fd, False)
group = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)
for s in group:
    signal.signal(s, signal.SIG_IGN)

def watch():
    try:
        os.read(life, 1)
    except OSError:
        pass
    os.killpg(0, signal.SIGKILL)

_thread.start_new_thread(watch, ())
chunks = []
while True:
    chunk = os.read(job, 65536)
    if not chunk:
        break
    chunks.append(chunk)
os.close(job)
if not chunks:
    os._exit(0)
argv, cwd, env = marshal.loads(b"".join(chunks))
try:
    if cwd:
        os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    pid = os.posix_spawnp(argv[0], argv, os.environ,
                          setsigdef=group + (signal.SIGPIPE, signal.SIGXFSZ))
except (OSError, ValueError) as exc:
    reason = getattr(exc, "strerror", None) or str(exc)
    os.write(report, ("E" + reason).encode("utf-8", "replace"))
    os._exit(127)
os.write(report, b"S")
null = os.open(os.devnull, os.O_RDWR)
for fd in (0, 1, 2):
    os.dup2(null, fd)
status = os.waitpid(pid, 0)[1]
if os.WIFSIGNALED(status):
    sig = os.WTERMSIG(status)
    try:
        import resource
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except Exception:
        pass
    try:
        signal.signal(sig, signal.SIG_DFL)
    except (OSError, ValueError):
        pass
    os.kill(os.getpid(), sig)
    os._exit(128 + sig)
os._exit(os.WEXITSTATUS(status))
"""


class StartError(Exception):
    """The child could not be started (missing executable, bad cwd, permissions)."""


# A supervisor started, with its command not yet known: (process, lifeline, report, job).
Launched = Tuple[subprocess.Popen, int, int, int]

_ahead_lock = threading.Lock()
_ahead: List[Launched] = []       # at most one, from launch_ahead()


def launch_ahead() -> None:
    """Start the supervisor the next ``start()`` of this process will use, unless one is
    waiting already; nothing happens if it cannot start (``start()`` will say why)."""
    with _ahead_lock:
        if _ahead:
            return
        try:
            _ahead.append(_launch())
        except StartError:
            pass


def start(argv: List[str], cwd: Optional[str], env: Optional[Dict[str, str]]
          ) -> Tuple[subprocess.Popen, int, int]:
    """(the supervisor with pipes to the command's stdin, stdout and stderr, our lifeline end,
    and its exit-report end, which hangs up when the supervisor exits) once the command has
    started in ``cwd`` (None: ours) with ``env`` (None: ours); StartError, with nothing left
    running, when it could not."""
    job = marshal.dumps((list(argv), cwd or "", dict(os.environ if env is None else env)))
    with _ahead_lock:
        launched = _ahead.pop() if _ahead else None
    proc, life_w, report_r, job_w = launched or _launch()
    try:
        _hand_over(job_w, job, argv[0])
        _await_start(report_r, argv[0])
    except BaseException:
        signal_group(proc.pid, signal.SIGKILL)
        proc.wait()
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            pipe.close()
        close_fds(life_w, report_r)
        raise
    return proc, life_w, report_r


def _launch() -> Launched:
    """A supervisor waiting for its command, in a new session; StartError if it cannot run."""
    life_r, life_w = os.pipe()          # non-inheritable: only the supervisor gets an end
    report_r, report_w = os.pipe()
    job_r, job_w = os.pipe()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", SOURCE, str(life_r), str(report_w), str(job_r)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env={}, start_new_session=True, close_fds=True,
            pass_fds=(life_r, report_w, job_r))
    except OSError as exc:
        close_fds(life_r, life_w, report_r, report_w, job_r, job_w)
        raise StartError("cannot start the process supervisor (%s): %s"
                         % (sys.executable, exc.strerror or exc))
    close_fds(life_r, report_w, job_r)
    return proc, life_w, report_r, job_w


def _hand_over(job_fd: int, job: bytes, name: str) -> None:
    """Write the command to a waiting supervisor and close the pipe (whatever happens);
    StartError if the supervisor is gone."""
    view = memoryview(job)
    try:
        while view:
            view = view[os.write(job_fd, view):]
    except OSError as exc:
        raise StartError("cannot start %s: its supervisor (%s) is gone (%s)"
                         % (name, sys.executable, exc.strerror or exc))
    finally:
        close_fds(job_fd)


def _await_start(report_fd: int, name: str) -> None:
    """Return once the supervisor says it started the child; StartError saying why not."""
    poller = select.poll()
    poller.register(report_fd, select.POLLIN)
    if not poller.poll(int(START_TIMEOUT * 1000)):
        raise StartError("cannot start %s: its supervisor (%s) did not start it within %gs"
                         % (name, sys.executable, START_TIMEOUT))
    report = os.read(report_fd, 4096)
    if report == b"S":
        return
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
