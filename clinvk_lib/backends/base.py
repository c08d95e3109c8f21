"""What every backend module provides, and the registry of them all.

A backend knows one CLI and nothing else: how to build argv (new run and resume) from
unified ``Options`` (``options``), which environment the child needs, and how to parse the
CLI's JSON result and its stream lines into unified events (``parsing``). No processes (except
asking git what a workdir's repository configures: ``gitenv``), HTTP, sessions or config
files here; ``runner.py`` and ``execute.py`` own those.
"""

from __future__ import annotations

import importlib
import os
import shutil
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple

from ..fsutil import read_json
from . import gitenv
from .options import SCHEMA_IN_PROMPT, Options
from .parsing import Result, StreamParser

# Variables that make a nested CLI refuse to start or behave as if it were a sub-agent
# (claude 2.x refuses to run inside another Claude Code session when CLAUDECODE is set).
NESTED_RUN_VARIABLES = ("CLAUDECODE", "CLAUDE_CODE_ENTRYPOINT")

# The server's API keys and where it reads them from, in every spelling config.py reads
# (derived name and alias). An agent may run any shell command, so none of these reach a
# backend. Every secret setting and every key source must be listed (a test checks it); the
# other CLINVK_* variables are plain configuration and stay, so a clinvk that an agent runs
# itself finds the same home and settings.
SERVER_SECRET_VARIABLES = (
    "CLINVK_API_KEYS", "CLINVK_SERVER_API_KEYS",
    "CLINVK_ADMIN_API_KEYS", "CLINVK_SERVER_ADMIN_API_KEYS",
    "CLINVK_SERVER_API_KEYS_FILE",
    "CLINVK_API_KEYS_GOPASS_PATH", "CLINVK_SERVER_API_KEYS_GOPASS_PATH",
    "CLINVK_SERVER_WEBHOOK_SECRET",
    "CLINVK_SERVER_STORE",
)

# What String.prototype.trim() removes (ECMA-262: WhiteSpace and LineTerminator), for the
# Node CLIs that trim the pieces of a list value.
JS_TRIMMED = ("\t\n\v\f\r \xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007"
              "\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000\ufeff")


class AuthCheck(NamedTuple):
    """Whether a CLI can authenticate to its model API, as found without a model call.
    ``state``: True (it can), False (it cannot), None (nothing cheap tells). ``detail``: how
    it authenticates or why it cannot, in words that hold no secret and no path."""

    state: Optional[bool]
    detail: str


# ``run(argv)`` for ``Backend.check_auth``: runs a short command of the CLI, returns
# (exit code, stdout, stderr).
RunCommand = Callable[[List[str]], Tuple[int, str, str]]


class PathFlag:
    """How a CLI reads the value of one of its path-valued flags.

    ``separator``: the CLI splits one value into several paths on it ("" = the value is one
    path). ``trims``: it strips JavaScript whitespace around each piece and drops empty
    pieces. ``variadic``: in the two-word form (``--flag VALUE``) it also takes each
    following word that does not start with '-' as another value.
    """

    __slots__ = ("separator", "trims", "variadic")

    def __init__(self, separator: str = "", trims: bool = False, variadic: bool = False) -> None:
        self.separator = separator
        self.trims = trims
        self.variadic = variadic

    def split(self, value: str) -> List[str]:
        """The paths the CLI reads from one value, in order."""
        pieces = value.split(self.separator) if self.separator else [value]
        if self.trims:
            pieces = [p.strip(JS_TRIMMED) for p in pieces]
            pieces = [p for p in pieces if p]
        return pieces


class Backend:
    """One agent CLI. Subclasses fill the class attributes and the four methods."""

    name = ""
    executable = ""
    vendor = ""                  # owned_by in the OpenAI models list
    display_name = ""
    # Flags a request's ``extra`` list may carry (the HTTP API checks them; see policy).
    # Maps a flag to True when it takes a value.
    allowed_extra_flags: Dict[str, bool] = {}
    # The allowed extra flags whose value is a filesystem path, and how the CLI reads each
    # one (the policy checks every path the CLI will see like a workdir: it widens what the
    # agent can read or write).
    path_extra_flags: Dict[str, PathFlag] = {}
    # What each approval / sandbox mode really does on this CLI ({"approval_mode": {mode:
    # text}, "sandbox_mode": {...}}) and how the other options map (option -> text). The
    # README says the same in its backend tables; tests/test_readme.py keeps them equal.
    mode_notes: Dict[str, Dict[str, str]] = {}
    option_notes: Dict[str, str] = {}
    # What the chat profile (options.CHAT_PROFILE) changes on this CLI, flag by flag, and
    # what it cannot switch off. The README's chat profile table says the same.
    chat_notes = ""
    # Lower-case pieces of the CLI's message when a resumed session's transcript is gone.
    missing_session_markers: Tuple[str, ...] = ()
    # The oldest and newest release of the CLI the end-to-end tests passed on (``--version``
    # numbers); ``clinvk doctor`` says when the installed one is outside.
    tested_versions: Tuple[str, str] = ("", "")
    # How the operator makes the CLI able to authenticate: the end of the error a run that
    # could not authenticate reports, and of ``clinvk doctor``'s reason.
    login_hint = ""
    # The npm package that installs the CLI ("" when it is not installed from npm).
    npm_package = ""

    def find_executable(self, path: Optional[str] = None) -> Optional[str]:
        """Absolute path of the CLI on PATH, or None."""
        return shutil.which(self.executable, path=path)

    def build_argv(self, opts: Options, executable: str = "") -> List[str]:
        """The full argv (executable first) for a new run, or a resume when ``opts.resume_id``.

        The prompt is never in argv: it goes to stdin.
        """
        raise NotImplementedError

    def ignored_options(self, opts: Options) -> List[str]:
        """One warning per option in ``opts`` this CLI cannot honour (it maps to no flag)."""
        return []

    def output_schema_route(self, schema: Dict[str, object]) -> str:
        """How a run is held to ``opts.output_schema``: options.SCHEMA_BY_FLAG when the CLI's
        own flag enforces it (``build_argv`` passes it), options.SCHEMA_IN_PROMPT when it
        goes into the prompt (execute adds it; the caller checks the reply)."""
        return SCHEMA_IN_PROMPT

    def output_schema_problem(self, schema: Dict[str, object]) -> str:
        """Why this CLI cannot be held to ``schema`` (a sentence naming the backend), or ""."""
        return ""

    # Whether the CLI can be given the client's tools over MCP (Options.tool_bridge), checked
    # end to end against the real CLI.
    bridges_tools = False

    def tool_bridge_problem(self, project_config: bool) -> str:
        """Why this CLI cannot be given the client's tools in a run that loads (or not) the
        workdir's configuration: a sentence naming the backend, or ""."""
        if self.bridges_tools:
            return ""
        return ("the %s backend cannot be given the client's tools (tools are bridged to "
                "claude, codex and gemini only): send the request without tools, or use one "
                "of those" % self.name)

    def bridged_tool_use(self, content: Dict[str, Any]) -> Tuple[str, Dict[str, Any], str]:
        """(tool name as the CLI names it, arguments, the CLI's call id) of a tool_use event's
        content, for matching it to the bridge's MCP calls."""
        arguments = content.get("input")
        return (str(content.get("name") or content.get("tool_name") or ""),
                arguments if isinstance(arguments, dict) else {},
                str(content.get("id") or content.get("tool_id") or ""))

    def run_files(self, opts: Options) -> Dict[str, str]:
        """Files the run hands the CLI, {key: text}. execute writes each one (0600, in a
        directory private to this user) just before the CLI starts, passes its path as
        ``opts.run_files[key]`` to ``build_argv``, and removes it when the CLI has exited."""
        return {}

    def forget_session(self, backend_session_id: str, executable: str,
                       run: Callable[[List[str]], str]) -> None:
        """After an ephemeral run, delete the session the CLI saved anyway (only for CLIs with
        no way to be told not to save one). ``run(argv)`` runs a command in the run's working
        directory and environment and returns its stdout."""

    def check_auth(self, executable: str, env: Dict[str, str], run: RunCommand) -> AuthCheck:
        """Whether the CLI can authenticate, from its own status command (``run``) or its
        settings and ``env``; never a model call, which may cost money."""
        return AuthCheck(None, "not checked: %s has no status command (clinvk doctor --probe "
                               "makes one real call)" % self.name)

    def project_config_refusal(self, workdir: str, env: Dict[str, str]) -> str:
        """Why a run without project configuration must not start in ``workdir`` with the
        child environment ``env`` ("" when it may): the CLI would load configuration found
        there (or run code from it) that no flag or variable of its own switches off. The
        text names the file and the fix."""
        return ""

    def child_env(self, base: Dict[str, str], opts: Optional[Options] = None) -> Dict[str, str]:
        """The child's environment: ``base`` minus nested-run variables and the server's
        secrets (SERVER_SECRET_VARIABLES), plus what this CLI needs for ``opts`` (None: the
        defaults); without project configuration, git settings that keep the workdir's
        repository from naming a program git runs (gitenv).
        SetupError when the run cannot be made as safe as ``opts`` asks."""
        env = dict(base)
        for key in NESTED_RUN_VARIABLES + SERVER_SECRET_VARIABLES:
            env.pop(key, None)
        if opts is not None and not opts.project_config:
            env = gitenv.without_repository_git_commands(env, opts.workdir or os.getcwd())
        return env

    def new_stream_parser(self) -> StreamParser:
        """A parser for ``--output-format stream-json`` style output."""
        raise NotImplementedError

    def parse_json_output(self, stdout: str, stderr: str, exit_code: int) -> Result:
        """Parse the whole stdout of a ``json`` format run into a Result."""
        raise NotImplementedError

    def version_argv(self, executable: str = "") -> List[str]:
        return [executable or self.executable, "--version"]


def settings_value(paths: List[str], keys: Tuple[str, ...]) -> object:
    """The value at ``keys`` (``("security", "auth", "selectedType")``) in the first of the
    JSON settings files ``paths`` (highest precedence first) that holds it, else None."""
    for path in paths:
        value = read_json(path)
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        if value is not None:
            return value
    return None


def home_of(env: Dict[str, str]) -> str:
    """The home directory a CLI started with ``env`` uses."""
    return env.get("HOME") or os.path.expanduser("~")


_REGISTRY: Dict[str, Backend] = {}


def register(backend: Backend) -> Backend:
    _REGISTRY[backend.name] = backend
    return backend


# The backends, in the stable order used everywhere; each module registers itself on import.
NAMES = ("claude", "codex", "gemini", "qwen", "copilot", "opencode")


def get(name: str) -> Backend:
    """The backend called ``name`` (importing only its module); KeyError with a message
    listing the known ones."""
    if name not in _REGISTRY and name in NAMES:
        importlib.import_module("%s.%s" % (__package__, name))
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError("unknown backend %r (expected one of: %s)" % (name, ", ".join(NAMES)))
