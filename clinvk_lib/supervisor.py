"""Start a command under a supervisor that leads its process group and outlives nothing.

``start()`` runs ``python -I -S -c SOURCE`` as the leader of a new session and process group;
that supervisor starts the command in the same group with the three standard streams given
to it (nothing is relayed), exits with the command's own status (its exit code, or death by
the same signal), and SIGKILLs the whole group when its lifeline, a pipe whose write end only
the caller holds, reaches end of file: the caller closed it or died, SIGKILL and the OOM
killer included. It relies on nothing Linux-only (no parent-death signal): pipes, process
groups and ``posix_spawnp`` work the same on macOS and the BSDs.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
from typing import Dict, List, Optional, Tuple

START_TIMEOUT = 30.0      # seconds the supervisor may take to start the command

# The supervisor program: `python -I -S -c SOURCE LIFELINE REPORT LC_CTYPE ARGV...`.
# -I -S: no site, no PYTHON* variables, nothing imported from the working directory (a
# request's workdir). Built-in modules only (``signal`` would import enum: +13 ms), so it
# starts in ~10-20 ms; a string, not a module, so it runs the same from the zipapp.
# It ignores the group signals it would otherwise die of before the command, which it starts
# with the default dispositions Popen would give it; it writes "S" (started) or "E<reason>"
# to REPORT and keeps REPORT open until it exits, so the caller sees the exit as a hang-up.
# LC_CTYPE is the caller's value ("=value", or "-" for none): Python's start-up sets it in a
# C locale (PEP 538), and the command must get exactly the environment it was given.
SOURCE = r"""
import os, sys, _signal as signal, _thread
life, report = int(sys.argv[1]), int(sys.argv[2])
os.set_inheritable(life, False)
os.set_inheritable(report, False)
if sys.argv[3] == "-":
    os.environ.pop("LC_CTYPE", None)
else:
    os.environ["LC_CTYPE"] = sys.argv[3][1:]
argv = sys.argv[4:]
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
try:
    pid = os.posix_spawnp(argv[0], argv, os.environ,
                          setsigdef=group + (signal.SIGPIPE, signal.SIGXFSZ))
except OSError as exc:
    os.write(report, ("E" + (exc.strerror or str(exc))).encode("utf-8", "replace"))
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


def start(argv: List[str], cwd: Optional[str], env: Optional[Dict[str, str]]
          ) -> Tuple[subprocess.Popen, int, int]:
    """(the supervisor with pipes to the command's stdin, stdout and stderr, our lifeline end,
    and its exit-report end, which hangs up when the supervisor exits) once the command has
    started; StartError, with nothing left running, when it could not."""
    life_r, life_w = os.pipe()          # non-inheritable: only the supervisor gets an end
    report_r, report_w = os.pipe()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", SOURCE, str(life_r), str(report_w),
             _lc_ctype_arg(env)] + argv,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            cwd=cwd or None, env=env, start_new_session=True, close_fds=True,
            pass_fds=(life_r, report_w))
    except (OSError, ValueError) as exc:   # ValueError: a NUL byte in argv or env
        close_fds(life_r, life_w, report_r, report_w)
        raise StartError("cannot start %s: %s" % (argv[0], getattr(exc, "strerror", None) or exc))
    try:
        close_fds(life_r, report_w)
        _await_start(report_r, argv[0])
    except BaseException:
        signal_group(proc.pid, signal.SIGKILL)
        proc.wait()
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            pipe.close()
        close_fds(life_w, report_r)
        raise
    return proc, life_w, report_r


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


def _lc_ctype_arg(env: Optional[Dict[str, str]]) -> str:
    value = (os.environ if env is None else env).get("LC_CTYPE")
    return "-" if value is None else "=" + value


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
