"""What every backend module provides, and the registry of the three.

A backend knows one CLI and nothing else: how to build argv (new run and resume) from
unified ``Options``, which environment the child needs, and how to parse the CLI's JSON
result and its stream lines into unified events. No processes (except asking git what a
workdir's repository configures), HTTP, sessions or config files here; ``runner.py`` and
``execute.py`` own those.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
from typing import Any, Callable, Dict, List, Optional, Tuple

from .. import events as ev

APPROVAL_MODES = ("default", "auto", "none", "always")
SANDBOX_MODES = ("default", "read-only", "workspace", "full")
# What the backend is asked to print. "json" = one result object (or the CLI's nearest
# equivalent); "stream-json" = one JSON event per line as they happen.
BACKEND_FORMATS = ("json", "stream-json")

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
)


class Options:
    """Unified options for one backend run. Empty / zero means "the CLI's default"."""

    __slots__ = ("model", "workdir", "approval_mode", "sandbox_mode", "output_format",
                 "max_turns", "system_prompt", "verbose", "ephemeral", "extra", "resume_id",
                 "allowed_tools", "project_config")

    def __init__(self, model: str = "", workdir: str = "", approval_mode: str = "default",
                 sandbox_mode: str = "default", output_format: str = "json", max_turns: int = 0,
                 system_prompt: str = "", verbose: bool = False, ephemeral: bool = False,
                 extra: Optional[List[str]] = None, resume_id: str = "",
                 allowed_tools: str = "", project_config: bool = True) -> None:
        self.model = model
        self.workdir = workdir
        self.approval_mode = approval_mode or "default"
        self.sandbox_mode = sandbox_mode or "default"
        self.output_format = output_format
        self.max_turns = max_turns
        self.system_prompt = system_prompt
        self.verbose = verbose
        self.ephemeral = ephemeral
        self.extra = list(extra or [])
        self.resume_id = resume_id          # the backend's own session id; "" = new session
        self.allowed_tools = allowed_tools
        # False: the CLI must not load the configuration the workdir holds (project settings,
        # hooks, MCP servers, .env files): a run's workdir may hold what an earlier run or a
        # cloned repository wrote. True: the CLI's own behaviour.
        self.project_config = project_config

    def __repr__(self) -> str:
        return "Options(%s)" % ", ".join("%s=%r" % (k, getattr(self, k)) for k in self.__slots__)


class SetupError(RuntimeError):
    """This host cannot run the CLI as safely as the options ask; the message names the fix.
    Nothing was started."""


class Result:
    """The outcome of one finished run, parsed from the backend's output."""

    __slots__ = ("backend", "text", "backend_session_id", "model", "usage", "error",
                 "exit_code", "duration_ms", "events")

    def __init__(self, backend: str, text: str = "", backend_session_id: str = "",
                 model: str = "", usage: Optional[ev.Usage] = None, error: str = "",
                 exit_code: int = 0, duration_ms: int = 0,
                 events: Optional[List[ev.Event]] = None) -> None:
        self.backend = backend
        self.text = text
        self.backend_session_id = backend_session_id
        self.model = model
        self.usage = usage or ev.Usage()
        self.error = error
        self.exit_code = exit_code
        self.duration_ms = duration_ms
        self.events = events or []

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.error

    def __repr__(self) -> str:
        return ("Result(backend=%r, text=%r, sid=%r, exit=%r, error=%r)"
                % (self.backend, self.text[:60], self.backend_session_id, self.exit_code, self.error))


class StreamParser:
    """Turns one run's stdout lines into unified events, keeping what it learns.

    ``feed(line)`` returns the events for that line (possibly none); ``finish(exit_code,
    stderr)`` returns the closing events (an ``error`` if the run failed and none was seen,
    then exactly one ``done``). After ``finish``, ``result()`` gives the collected Result.
    Subclasses implement ``parse_line``; the bookkeeping here is shared.
    """

    backend_name = ""
    # The ``type`` values of the line a complete run always ends with. A run that exits 0
    # without one printed something else than its protocol (invalid JSON, a crash message),
    # and that is a failure, not an empty answer.
    final_types: Tuple[str, ...] = ()

    def __init__(self) -> None:
        self.events: List[ev.Event] = []
        self.backend_session_id = ""
        self.model = ""
        self.usage = ev.Usage()
        self.error = ""
        self.saw_final = False
        self.first_noise = ""         # the first stdout line that was not JSON
        self._finished = False

    def parse_line(self, obj: Any, line: str) -> List[ev.Event]:
        """Events for one decoded JSON value (``obj``) from stdout. Override per backend."""
        raise NotImplementedError

    def feed(self, line: str) -> List[ev.Event]:
        line = line.strip()
        if not line:
            return []
        obj = decode_json_line(line)
        if obj is None:
            self.first_noise = self.first_noise or line[:200]
            return []               # CLI noise on stdout: never shown as model output
        return self.feed_value(obj, line)

    def feed_value(self, obj: Any, line: str = "") -> List[ev.Event]:
        """Like ``feed`` for a value already decoded (an element of a JSON array output)."""
        if isinstance(obj, dict) and obj.get("type") in self.final_types:
            self.saw_final = True
        out = self.parse_line(obj, line)
        for e in out:
            if e.type == ev.ERROR and e.content.get("fatal", True) and not self.error:
                self.error = e.content.get("message", "")
        self.events.extend(out)
        return out

    def finish(self, exit_code: int, stderr: str = "") -> List[ev.Event]:
        if self._finished:
            return []
        self._finished = True
        out: List[ev.Event] = []
        if exit_code != 0 and not self.error:
            self.error = failure_message(self.backend_name, exit_code, stderr)
            out.append(ev.error(self.backend_name, self.error, code="exit_%d" % exit_code))
        elif exit_code == 0 and not self.error and not self.saw_final:
            self.error = ("%s printed no JSON result: it exited 0 without the line that "
                          "ends a run%s" % (self.backend_name, (
                              " (first line that is not JSON: %r)" % self.first_noise)
                              if self.first_noise else ""))
            out.append(ev.error(self.backend_name, self.error, code="no_result"))
        out.append(ev.done(self.backend_name, self.usage, self.model, self.backend_session_id,
                           exit_code))
        self.events.extend(out)
        return out

    def result(self, exit_code: int, duration_ms: int = 0) -> Result:
        return Result(self.backend_name, ev.collect_text(self.events), self.backend_session_id,
                      self.model, self.usage, self.error, exit_code, duration_ms,
                      list(self.events))


# What String.prototype.trim() removes (ECMA-262: WhiteSpace and LineTerminator), for the
# Node CLIs that trim the pieces of a list value.
JS_TRIMMED = ("\t\n\v\f\r \xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007"
              "\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000\ufeff")


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
    # text}, "sandbox_mode": {...}}) and how the other options map (option -> text): the
    # README and --help are generated from these.
    mode_notes: Dict[str, Dict[str, str]] = {}
    option_notes: Dict[str, str] = {}
    # Lower-case pieces of the CLI's message when a resumed session's transcript is gone.
    missing_session_markers: Tuple[str, ...] = ()

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

    def forget_session(self, backend_session_id: str, executable: str,
                       run: Callable[[List[str]], str]) -> None:
        """After an ephemeral run, delete the session the CLI saved anyway (only for CLIs with
        no way to be told not to save one). ``run(argv)`` runs a command in the run's working
        directory and environment and returns its stdout."""

    def child_env(self, base: Dict[str, str], opts: Optional[Options] = None) -> Dict[str, str]:
        """The child's environment: ``base`` minus nested-run variables and the server's
        secrets (SERVER_SECRET_VARIABLES), plus what this CLI needs for ``opts`` (None: the
        defaults); without project configuration, git settings that keep the workdir's
        repository from naming a program git runs (without_repository_git_commands).
        SetupError when the run cannot be made as safe as ``opts`` asks."""
        env = dict(base)
        for key in NESTED_RUN_VARIABLES + SERVER_SECRET_VARIABLES:
            env.pop(key, None)
        if opts is not None and not opts.project_config:
            env = without_repository_git_commands(env, opts.workdir or os.getcwd())
        return env

    def new_stream_parser(self) -> StreamParser:
        """A parser for ``--output-format stream-json`` style output."""
        raise NotImplementedError

    def parse_json_output(self, stdout: str, stderr: str, exit_code: int) -> Result:
        """Parse the whole stdout of a ``json`` format run into a Result."""
        raise NotImplementedError

    def version_argv(self, executable: str = "") -> List[str]:
        return [executable or self.executable, "--version"]


# -- git in the workdir ------------------------------------------------------------------------
#
# The CLIs run git in the workdir at start-up (claude 2.1.197: status, log, config; codex
# 0.169.0: status, rev-parse, remote; gemini 0.61.0: rev-parse) and let the model run read-only
# git commands without asking (claude 2.1.197: status, diff, log, show, blame, describe,
# ls-remote, ...). git reads the repository's own configuration on every call, and some of it
# names programs that such commands run (claude's start-up `git status` runs core.fsmonitor,
# --setting-sources user or not), so one run allowed to edit files could plant a command for
# the next. Command-line-level settings (GIT_CONFIG_COUNT, git 2.31+) outrank every
# configuration file and reach every git the agent starts, its tools' included.

# Set for every run without project configuration, whatever the repository's configuration
# says: hooks are files, not settings, and a submodule's own configuration is not read here.
GIT_FIXED_CONFIG = (
    ("core.fsmonitor", "false"),         # the fsmonitor hook: status, diff, describe --dirty
    ("core.hooksPath", "/dev/null"),     # .git/hooks: status runs post-index-change
    ("log.showSignature", "false"),      # log runs gpg.program on signed commits (in a
                                         # submodule too, for status.submoduleSummary)
    ("protocol.ext.allow", "never"),     # an "ext::" remote URL is a command (ls-remote)
    # status and diff run git in submodules, whose own configuration is not read here (a
    # .gitmodules "ignore" entry outranks diff.ignoreSubmodules: see git_submodule_names).
    ("diff.ignoreSubmodules", "dirty"),
    ("diff.submodule", "short"),
)

# Keys that name a program, spelled as `git config --list` prints them (section and key in
# lower case; "*" stands for a subsection or a command name), and what clinvk sets when the
# repository's own configuration holds one: a value that runs nothing ("" where git then runs
# no command or reports that it cannot run "", else git's own default). "{key}" is the key
# found, "{sub}" its subsection. The operator's system and global settings are left alone.
GIT_REPOSITORY_COMMANDS = (
    # A filter runs on status once a file's stat data changed; git 2.39 reads an empty
    # clean/smudge/process as no filter, and a required filter without one fails every status.
    ("filter.*.*", (("filter.{sub}.clean", ""), ("filter.{sub}.smudge", ""),
                    ("filter.{sub}.process", ""), ("filter.{sub}.required", "false"))),
    ("diff.*.textconv", (("{key}", ""),)),          # diff, log -p, blame
    ("diff.*.command", (("{key}", ""),)),
    ("diff.external", (("{key}", ""),)),
    ("merge.*.driver", (("{key}", ""),)),
    ("core.pager", (("{key}", "cat"),)),            # "cat": git starts no pager
    ("pager.*", (("{key}", "false"),)),
    ("core.editor", (("{key}", ":"),)),             # ":": git starts no editor
    ("sequence.editor", (("{key}", ":"),)),
    ("core.askpass", (("{key}", ""),)),
    ("credential.helper", (("{key}", ""),)),        # "": no helpers (ls-remote over https)
    ("credential.*.helper", (("{key}", ""),)),
    ("core.sshcommand", (("{key}", "ssh"),)),
    ("core.alternaterefscommand", (("{key}", ""),)),
    ("gpg.program", (("{key}", "gpg"),)),
    ("gpg.openpgp.program", (("{key}", "gpg"),)),
    ("gpg.x509.program", (("{key}", "gpgsm"),)),
    ("gpg.ssh.program", (("{key}", "ssh-keygen"),)),
    # git keeps the first uploadpack/receivepack it reads, so an override would lose: refuse
    # the local transport instead, the one that runs them on this machine (ls-remote, fetch).
    ("remote.*.uploadpack", (("protocol.file.allow", "never"),)),
    ("remote.*.receivepack", (("protocol.file.allow", "never"),)),
)
# Program-naming keys git reads first-one-wins: only an environment variable outranks them.
GIT_REPOSITORY_COMMAND_VARIABLES = {"core.gitproxy": ("GIT_PROXY_COMMAND", "")}
# The scopes of `git config --show-scope` the operator owns; any other is the repository's.
GIT_OPERATOR_SCOPES = ("system", "global", "command")
# A named pipe planted as .git/config blocks every git call that reads it.
GIT_TIMEOUT_SECS = 10


def without_repository_git_commands(env: Dict[str, str], workdir: str) -> Dict[str, str]:
    """``env`` plus git settings under which git, run in ``workdir`` by the CLI or its tools,
    starts no program that the repository's own files name: GIT_FIXED_CONFIG, the overrides
    of GIT_REPOSITORY_COMMANDS for what the repository holding ``workdir`` configures now
    (read with the git on ``env``'s PATH) and ``ignore = dirty`` for each of its submodules.
    No git on that PATH: GIT_FIXED_CONFIG only. SetupError when that git ignores the settings
    or cannot read the configuration."""
    git = shutil.which("git", path=env.get("PATH", os.defpath))
    settings = list(GIT_FIXED_CONFIG)
    variables: Dict[str, str] = {}
    if git:
        fixed = with_git_config(env, settings)
        keys = repository_git_keys(git_config_scopes(git, workdir, fixed))
        settings += repository_git_overrides(keys)
        settings += [("submodule.%s.ignore" % name, "dirty")
                     for name in git_submodule_names(git, workdir, fixed)]
        variables = {name: value for key, (name, value)
                     in GIT_REPOSITORY_COMMAND_VARIABLES.items() if key in keys}
    out = with_git_config(env, list(dict.fromkeys(settings)))
    for name, value in variables.items():
        out.setdefault(name, value)     # the operator's own value already outranks the file
    return out


def with_git_config(env: Dict[str, str], settings: List[Tuple[str, str]]) -> Dict[str, str]:
    """``env`` with ``settings`` ((key, value) pairs) after the command-line-level git
    configuration it holds (GIT_CONFIG_COUNT, GIT_CONFIG_KEY_<n>, GIT_CONFIG_VALUE_<n>). git
    reads them in order, so for a key it reads last-one-wins ``settings`` win; only
    GIT_CONFIG_PARAMETERS (what ``git -c`` hands to the commands it starts) comes after.
    SetupError when GIT_CONFIG_COUNT is not a count: git would refuse to run at all."""
    raw = env.get("GIT_CONFIG_COUNT", "")
    if not re.fullmatch("[0-9]*", raw):
        raise SetupError("GIT_CONFIG_COUNT in the server's environment must be a number of "
                         "git settings (GIT_CONFIG_KEY_<n>/GIT_CONFIG_VALUE_<n>): got %r" % raw)
    count = int(raw or "0")
    out = dict(env)
    for n, (key, value) in enumerate(settings, count):
        out["GIT_CONFIG_KEY_%d" % n] = key
        out["GIT_CONFIG_VALUE_%d" % n] = value
    out["GIT_CONFIG_COUNT"] = str(count + len(settings))
    return out


def git_config_scopes(git: str, workdir: str, env: Dict[str, str]) -> List[Tuple[str, str]]:
    """(scope, key) of every setting git reads in ``workdir`` under ``env``, included files
    too. SetupError when git cannot read them, or ignores the command-line-level settings
    ``env`` holds (git before 2.31 reads no GIT_CONFIG_COUNT; before 2.26, no --show-scope)."""
    code, out, err = _git(git, ["config", "--list", "--show-scope", "--name-only", "-z"],
                          workdir, env)
    if code != 0:
        raise SetupError("cannot read the git configuration of workdir %s (%s): fix it, or "
                         "set server.allow_project_config: true if every workdir's contents "
                         "are trusted" % (workdir, err or "git exited with code %d" % code))
    words = out.split("\0")
    entries = list(zip(words[0::2], words[1::2]))
    if not any(scope == "command" for scope, _ in entries):
        raise SetupError("%s ignores GIT_CONFIG_COUNT, which keeps the workdir's repository "
                         "from naming programs git runs: install git 2.31 or later, or set "
                         "server.allow_project_config: true if every workdir's contents are "
                         "trusted" % git)
    return entries


def repository_git_keys(entries: List[Tuple[str, str]]) -> List[str]:
    """The keys of ``entries`` ((scope, key)) that the repository's own files set."""
    return [key for scope, key in entries if scope not in GIT_OPERATOR_SCOPES]


def repository_git_overrides(keys: List[str]) -> List[Tuple[str, str]]:
    """The settings GIT_REPOSITORY_COMMANDS gives for each program-naming key in ``keys``."""
    out: List[Tuple[str, str]] = []
    for key in keys:
        sub = key.partition(".")[2].rpartition(".")[0]
        for pattern, settings in GIT_REPOSITORY_COMMANDS:
            if fnmatch.fnmatchcase(key, pattern):
                out += [(name.format(key=key, sub=sub), value) for name, value in settings]
    return out


def git_submodule_names(git: str, workdir: str, env: Dict[str, str]) -> List[str]:
    """The submodule names in the .gitmodules git reads for the work tree holding ``workdir``:
    the work tree's file if it exists, else the index's, else HEAD's (git 2.39,
    config_from_gitmodules). None outside a work tree: status and diff cannot run there."""
    code, top, _ = _git(git, ["rev-parse", "--show-toplevel"], workdir, env)
    if code != 0:
        return []
    path = os.path.join(top.rstrip("\n"), ".gitmodules")
    sources = ([["--file", path]] if os.path.exists(path)
               else [["--blob", ":.gitmodules"], ["--blob", "HEAD:.gitmodules"]])
    for source in sources:
        code, out, _ = _git(git, ["config"] + source + ["--list", "--name-only", "-z"],
                            workdir, env)
        if code == 0:
            return sorted({key.partition(".")[2].rpartition(".")[0]
                           for key in out.split("\0") if key.startswith("submodule.")} - {""})
    return []


def _git(git: str, args: List[str], workdir: str, env: Dict[str, str]) -> Tuple[int, str, str]:
    """(exit code, stdout, the line of stderr that says why) of one git command that only
    reads; SetupError when it cannot start or runs longer than GIT_TIMEOUT_SECS."""
    try:
        proc = subprocess.run([git] + args, cwd=workdir, env=env, stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              timeout=GIT_TIMEOUT_SECS)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SetupError("cannot read the git configuration of workdir %s: %s (fix the "
                         "repository, or set server.allow_project_config: true if every "
                         "workdir's contents are trusted)" % (workdir, exc))
    return proc.returncode, os.fsdecode(proc.stdout), error_line(os.fsdecode(proc.stderr))


def checked_format(fmt: str) -> str:
    """``fmt`` when it is one of BACKEND_FORMATS, else ValueError naming the choices."""
    if fmt not in BACKEND_FORMATS:
        raise ValueError("output_format must be one of %s: got %r"
                         % (", ".join(BACKEND_FORMATS), fmt))
    return fmt


def mode_flags(modes: Dict[str, Dict[str, Tuple[Tuple[str, ...], str]]], option: str,
               value: str) -> List[str]:
    """The flags a backend's mode table gives ``option`` = ``value`` (ValueError if unknown)."""
    table = modes[option]
    try:
        return list(table[value or "default"][0])
    except KeyError:
        raise ValueError("%s must be one of %s: got %r" % (option, ", ".join(table), value))


def mode_notes_of(modes: Dict[str, Dict[str, Tuple[Tuple[str, ...], str]]]
                  ) -> Dict[str, Dict[str, str]]:
    """The "what it really does" texts of a mode table: {option: {mode: text}}."""
    return {option: {mode: note for mode, (_, note) in table.items()}
            for option, table in modes.items()}


def decode_json_line(line: str) -> Any:
    """The JSON value of one stdout line, or None when the line is not JSON (CLI noise)."""
    import json
    if not line or line[0] not in "{[":
        return None
    try:
        return json.loads(line)
    except ValueError:
        return None


def decode_json_document(text: str) -> Any:
    """The JSON value in a whole stdout, tolerating noise lines before and after it.

    Accepts one (possibly pretty-printed) object or array, or NDJSON (returns the list of
    decoded lines). Returns None when nothing decodes.
    """
    import json
    text = text.strip()
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        pass
    decoder = json.JSONDecoder()
    values = []
    i = 0
    while i < len(text):
        start = min((p for p in (text.find("{", i), text.find("[", i)) if p >= 0), default=-1)
        if start < 0:
            break
        try:
            value, end = decoder.raw_decode(text, start)
        except ValueError:
            i = start + 1
            continue
        values.append(value)
        i = end
    if not values:
        return None
    return values[0] if len(values) == 1 else values


def failure_message(backend: str, exit_code: int, stderr: str) -> str:
    """A one-line error for a run that failed without saying why on stdout."""
    tail = error_line(stderr)
    if exit_code < 0:
        what = "%s was killed by signal %d" % (backend, -exit_code)
    else:
        what = "%s exited with code %d" % (backend, exit_code)
    return "%s: %s" % (what, tail) if tail else what


def api_error_detail(message: str) -> Tuple[str, str]:
    """(readable message, code) from an error text that embeds a JSON API error body.

    The CLIs pass a model API's error body through (codex-cli 0.169.0:
    '{"error": {"message": "...", "type": "invalid_request_error"}}'; gemini 0.61.0:
    '[API Error: {"error":{"code":400,"message":"...","status":"INVALID_ARGUMENT"}}]').
    Other texts come back unchanged with an empty code.
    """
    import json
    start, end = message.find("{"), message.rfind("}")
    if start < 0 or end < start:
        return message, ""
    try:
        body = json.loads(message[start:end + 1])
    except ValueError:
        return message, ""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict) or not isinstance(error.get("message"), str):
        return message, ""
    code = error.get("status") or error.get("type") or error.get("code") or ""
    return error["message"], str(code)


def error_line(text: str, limit: int = 500) -> str:
    """The line of a CLI's stderr that best says what went wrong.

    The first line starting with "error" (clap's "error: unexpected argument ...", codex's
    "Error: thread/resume ...", gemini's "Error resuming session ..."), which comes before
    usage texts and stack traces; otherwise the last non-blank line.
    """
    for line in (text or "").splitlines():
        line = line.strip()
        if line[:5].lower() == "error":
            return line[:limit]
    return last_meaningful_line(text, limit)


def last_meaningful_line(text: str, limit: int = 500) -> str:
    for line in reversed((text or "").splitlines()):
        line = line.strip()
        if line:
            return line[:limit]
    return ""


def as_str(value: Any) -> str:
    """A JSON string as it is; anything else is ""."""
    return value if isinstance(value, str) else ""


def as_int(value: Any) -> int:
    """A JSON number as int; anything else is 0."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, (int, float)):
        return int(value)
    return 0


_REGISTRY: Dict[str, Backend] = {}


def register(backend: Backend) -> Backend:
    _REGISTRY[backend.name] = backend
    return backend


# The backends, in the stable order used everywhere; each module registers itself on import.
NAMES = ("claude", "codex", "gemini")


def names() -> List[str]:
    """Backend names in the stable order used everywhere (claude, codex, gemini)."""
    return list(NAMES)


def get(name: str) -> Backend:
    """The backend called ``name`` (importing only its module); KeyError with a message
    listing the known ones."""
    if name not in _REGISTRY and name in NAMES:
        import importlib
        importlib.import_module("%s.%s" % (__package__, name))
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError("unknown backend %r (expected one of: %s)" % (name, ", ".join(NAMES)))
