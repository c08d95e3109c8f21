"""Whether each backend can run here, and the one-line reason when it cannot: the facts
``clinvk doctor`` prints and ``GET /api/v1/backends`` serves.

Per backend: enabled in the configuration, its command found (the path), its version and
whether that is inside the range the end-to-end tests passed on, whether it can authenticate
(``Backend.check_auth``: the CLI's own status command, or its settings and environment; never
a model call), and whether a run can be set up the way it will be made (``child_env``: server
runs without project configuration need settings files some hosts cannot provide). Every
command runs like a backend run: supervised, bounded in time, in the backend's environment
(no server secrets). What is reported holds no secret and no path under the home directory
other than the command's own.
"""

from __future__ import annotations

import os
import pwd
import re
import tempfile
import threading
import time
from typing import Any, Dict, List, Optional, Tuple

from .. import runner
from . import base, options, probe

CHECK_TIMEOUT = 15.0
_VERSION = re.compile(r"(\d+)\.(\d+)\.(\d+)")


class Diagnosis:
    """One backend's facts. ``usable``: enabled, installed, its version readable, not known
    to be unable to authenticate, and its runs can be set up; ``reason`` says why not (""
    when usable). ``authenticated`` is True, False or None (not known without a model call).
    ``warnings``: what does not stop it but deserves a look (a version outside the tested
    range, a risky login)."""

    __slots__ = ("name", "enabled", "installed", "command", "version", "tested_versions",
                 "version_tested", "authenticated", "auth", "usable", "reason", "warnings")

    def __init__(self, name: str) -> None:
        self.name = name
        self.enabled = True
        self.installed = False
        self.command = ""
        self.version = ""
        self.tested_versions = ""
        self.version_tested: Optional[bool] = None
        self.authenticated: Optional[bool] = None
        self.auth = ""
        self.usable = False
        self.reason = ""
        self.warnings: List[str] = []

    def to_dict(self) -> Dict[str, Any]:
        """The JSON form; ``available`` (installed and enabled) first, as the backends list
        always had it."""
        d: Dict[str, Any] = {"name": self.name, "available": self.installed and self.enabled}
        d.update((k, getattr(self, k)) for k in self.__slots__[1:])
        d["warnings"] = list(self.warnings)
        return d


def diagnose_all(cfg: Any, project_config: bool,
                 env: Optional[Dict[str, str]] = None) -> List[Diagnosis]:
    """Every backend's Diagnosis, in the stable order, the checks of the backends running
    at once. ``project_config``: whether the runs to check load the workdir's configuration
    (the command line's do; the server's only with server.allow_project_config)."""
    env = dict(os.environ if env is None else env)
    found: Dict[str, Diagnosis] = {}

    def check(name: str) -> None:
        found[name] = diagnose(base.get(name), cfg, project_config, env)
    threads = [threading.Thread(target=check, args=(n,), daemon=True) for n in base.NAMES]
    for t in threads:
        t.start()
    for t in threads:
        t.join(3 * CHECK_TIMEOUT)
    return [found.get(n) or _unfinished(n) for n in base.NAMES]


def _unfinished(name: str) -> Diagnosis:
    d = Diagnosis(name)
    d.reason = "its checks did not finish within %gs" % (3 * CHECK_TIMEOUT)
    return d


def diagnose(backend: base.Backend, cfg: Any, project_config: bool,
             env: Dict[str, str]) -> Diagnosis:
    """One backend's Diagnosis (see the module docstring)."""
    d = Diagnosis(backend.name)
    d.enabled = cfg is None or cfg.backend_enabled(backend.name)
    d.tested_versions = " - ".join(v for v in backend.tested_versions if v)
    path = backend.find_executable(env.get("PATH"))
    d.installed, d.command = path is not None, path or ""
    if not d.enabled:
        d.reason = "disabled in the configuration (backends.%s.enabled: false)" % backend.name
        return d
    if path is None:
        d.reason = "not installed: no %r on PATH%s" % (backend.executable, (
            " (npm install -g %s)" % backend.npm_package) if backend.npm_package else "")
        return d
    child, problem = run_env(backend, env, project_config)
    if problem:
        d.reason = "its runs cannot be set up: %s" % problem
        return d
    _check_version(d, backend, path)
    if d.version:
        _check_auth(d, backend, path, child)
    d.usable = not d.reason
    return d


def run_env(backend: base.Backend, env: Dict[str, str],
            project_config: bool) -> Tuple[Dict[str, str], str]:
    """(the environment a run gets, "") or ({}, why such a run cannot be set up here: the
    SetupError a server run without project configuration may meet)."""
    try:
        return backend.child_env(env, options.Options(project_config=project_config,
                                                      workdir=tempfile.gettempdir())), ""
    except options.SetupError as exc:
        return {}, public_text(str(exc))


def _check_version(d: Diagnosis, backend: base.Backend, path: str) -> None:
    d.version = probe.cli_version(backend, path)
    if not d.version:
        d.reason = "`%s --version` failed or printed nothing: the installation looks broken" \
            % backend.executable
        return
    d.version_tested = version_in_range(d.version, backend.tested_versions)
    if d.version_tested is False:
        d.warnings.append("version %s is outside the tested range %s" % (
            version_number(d.version), d.tested_versions))


def _check_auth(d: Diagnosis, backend: base.Backend, path: str, env: Dict[str, str]) -> None:
    def run(argv: List[str]) -> Tuple[int, str, str]:
        try:
            out, outcome = runner.run(argv, env=env, cwd=tempfile.gettempdir(),
                                      timeout=CHECK_TIMEOUT)
        except runner.StartError as exc:
            return 127, "", str(exc)
        return (124 if outcome.timed_out else outcome.exit_code), out, outcome.stderr
    check = backend.check_auth(path, env, run)
    d.authenticated, d.auth = check.state, public_text(check.detail)
    if check.state is False:
        d.reason = public_text("not authenticated: %s; to fix: %s"
                               % (check.detail, backend.login_hint or "log in to the CLI"))
    elif "IneligibleTierError" in check.detail:
        d.warnings.append(d.auth)


def version_number(version_line: str) -> str:
    """The x.y.z in a ``--version`` line ("2.1.197 (Claude Code)", "codex-cli 0.169.0"), or
    the line itself."""
    m = _VERSION.search(version_line)
    return m.group(0) if m else version_line


def version_in_range(version_line: str, tested: Tuple[str, str]) -> Optional[bool]:
    """Whether the version is within ``tested`` (oldest, newest; inclusive); None when either
    is unknown."""
    found = _VERSION.search(version_line)
    low, high = (_VERSION.search(v or "") for v in tested)
    if not (found and low and high):
        return None
    key = tuple(int(x) for x in found.groups())
    return tuple(int(x) for x in low.groups()) <= key <= tuple(int(x) for x in high.groups())


def public_text(text: str) -> str:
    """``text`` with the home directory (of $HOME and of the account) written as ~."""
    homes = {os.path.expanduser("~"), pwd.getpwuid(os.geteuid()).pw_dir}
    for home in sorted((h for h in homes if h and h != "/"), key=len, reverse=True):
        text = text.replace(home, "~")
    return text


class Cache:
    """Diagnoses kept for ``ttl`` seconds, per ``project_config`` (the server answers
    ``GET /api/v1/backends`` from it: each diagnosis starts a few short processes)."""

    def __init__(self, ttl: float = 30.0) -> None:
        self.ttl = ttl
        self._lock = threading.Lock()
        self._kept: Dict[bool, Tuple[float, List[Dict[str, Any]]]] = {}

    def rows(self, cfg: Any, project_config: bool) -> List[Dict[str, Any]]:
        """``diagnose_all(...)`` as dicts, at most ``ttl`` seconds old."""
        with self._lock:
            kept = self._kept.get(project_config)
            if kept is not None and time.monotonic() - kept[0] < self.ttl:
                return kept[1]
            rows = [d.to_dict() for d in diagnose_all(cfg, project_config)]
            self._kept[project_config] = (time.monotonic(), rows)
            return rows
