"""`clinvk serve` as a child process on 127.0.0.1, for tests that need a real process: its
threads, open files and children read from /proc, its access log, signals sent to it.

    srv = ServeProcess(home, env={"FAKE_CLI_MODE": "slow"}, config={"server": {...}})
    srv.post("/api/v1/prompt", {...}); srv.log_lines; srv.stop()

The fake CLIs are first on PATH and the process runs under this interpreter.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from typing import Any, Dict, List, Optional

from clinvk_lib import yamledit
from tests.serverutil import HttpClient

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAKE_BIN = os.path.join(ROOT, "tests", "fakes", "bin")
CLINVK = os.path.join(ROOT, "clinvk.py")


def fake_cli_env(home: str, state_dir: str, extra: Optional[Dict[str, str]] = None
                 ) -> Dict[str, str]:
    """The environment of a server driving the fake CLIs: no CLINVK_* or FAKE_CLI_* from the
    host, the fakes first on PATH, ``home`` as CLINVK_HOME, ``state_dir`` for the fakes'
    sessions, then ``extra``."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CLINVK_", "FAKE_CLI_"))}
    env.update(PATH=FAKE_BIN + os.pathsep + "/usr/local/bin:/usr/bin:/bin",
               CLINVK_HOME=home, FAKE_CLI_STATE_DIR=state_dir)
    env.update(extra or {})
    return env


class ServeProcess(HttpClient):
    """A started ``clinvk serve --host 127.0.0.1 --port 0``; ``port`` is read from its
    start-up line, and every later line of its stderr lands in ``log_lines``. Requests go
    through HttpClient (``srv.post(path, body)``)."""

    def __init__(self, home: str, env: Optional[Dict[str, str]] = None,
                 config: Optional[Dict[str, Any]] = None, state_dir: str = "") -> None:
        os.makedirs(home, exist_ok=True)
        argv = [sys.executable, CLINVK, "serve", "--host", "127.0.0.1", "--port", "0"]
        if config:
            path = os.path.join(home, "serve-%d.yaml" % len(os.listdir(home)))
            with open(path, "w") as f:
                f.write(dump_yaml(config))
            argv += ["--config", path]
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            env=fake_cli_env(home, state_dir or os.path.join(home, "fake-state"), env),
            cwd=home)
        self.pid = self.proc.pid
        first = self.proc.stderr.readline().decode("utf-8", "replace")
        match = re.search(r"listening on http://127\.0\.0\.1:(\d+)", first)
        if not match:
            self.proc.kill()
            rest = self.proc.stderr.read().decode("utf-8", "replace")
            raise AssertionError("clinvk serve did not start: %r" % (first + rest))
        self.port = int(match.group(1))
        self.url = "http://127.0.0.1:%d" % self.port
        self.log_lines: List[str] = []
        self._reader = threading.Thread(target=self._read_log, daemon=True)
        self._reader.start()

    def _read_log(self) -> None:
        # Reading all the time also keeps a full pipe from ever blocking the server.
        for raw in self.proc.stderr:
            self.log_lines.append(raw.decode("utf-8", "replace").rstrip("\n"))

    def log_lines_with(self, text: str) -> List[str]:
        return [line for line in list(self.log_lines) if text in line]

    # -- the process as /proc shows it --------------------------------------------------------

    def threads(self) -> int:
        with open("/proc/%d/status" % self.pid) as f:
            for line in f:
                if line.startswith("Threads:"):
                    return int(line.split()[1])
        raise AssertionError("no Threads: line for pid %d" % self.pid)

    def open_fds(self) -> int:
        return len(os.listdir("/proc/%d/fd" % self.pid))

    def children(self) -> List[int]:
        """Pids the server started (``started_by``)."""
        return started_by(self.pid)

    def rss_kb(self) -> int:
        with open("/proc/%d/status" % self.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    # -- stopping ---------------------------------------------------------------------------

    def signal(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM, wait for the exit (SIGKILL if it does not come); the exit code."""
        self.signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self._reader.join(5)
        return code


def started_by(pid: int) -> List[int]:
    """Pids clinvk process ``pid`` started, zombies included: its children and those of its
    process supervisor (one per process, which starts every backend), not the supervisor
    itself."""
    found = []
    for child in children_of(pid):
        if is_supervisor(child):
            found.extend(children_of(child))
        else:
            found.append(child)
    return found


def is_supervisor(pid: int) -> bool:
    """Whether ``pid`` is a clinvk process supervisor (``clinvk_lib/supervisor.py``)."""
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return b"# clinvk-supervisor" in f.read()
    except OSError:
        return False


def children_of(pid: int) -> List[int]:
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name) as f:
                fields = f.read().rsplit(")", 1)[-1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(name))
    return found


def dump_yaml(config: Dict[str, Any], indent: str = "") -> str:
    """A nested mapping of scalars and lists as the YAML subset config.py reads."""
    lines = []
    for key, value in config.items():
        if isinstance(value, dict):
            lines.append("%s%s:\n%s" % (indent, key, dump_yaml(value, indent + "  ")))
        else:
            lines.append("%s%s: %s\n" % (indent, key, yamledit.dumps_inline(value)))
    return "".join(lines)
