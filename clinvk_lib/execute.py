"""The one path every front end (CLI, HTTP, MCP) uses to run a prompt.

``prepare()`` resolves the options (request > ``backends.<name>.*`` > ``unified_flags.*`` >
defaults), validates them (policy when given), picks the backend and the session, and builds
the exact argv. ``run()`` executes it and returns the collected result; ``stream()`` yields
unified events (``init`` first, ``done`` last, even when Ctrl-C stops it). Both update the
session afterwards: a run interrupted before it was counted leaves the session ``cancelled``.
Nothing here knows about HTTP or the terminal.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, List, Optional, Tuple

from . import events as ev
from . import runner
from .backends import base, options, parsing
from .config import Config
from .policy import Policy, PolicyError, check_extra_flags, resolve_workdir
from .runfiles import RunFiles
from .session_record import Session, SessionError, new_session_id

if TYPE_CHECKING:
    # Named for type checkers only: a run without sessions (fan-out, dry run) never loads the
    # store's module.
    from .sessions import Access, SessionStore


# A stream stopped by Ctrl-C or SIGTERM in its consumer's thread ends with a done event with
# this exit code: the shell's status of a command killed by SIGINT (128 + 2).
INTERRUPTED_EXIT_CODE = 130


class ErrorKind:
    """What went wrong, as ``ExecError.kind`` and ``Outcome.error_kind`` say it. Each front end
    maps a kind to its own answer: the CLI to an exit code, the HTTP server to a status."""

    INVALID = "invalid"                  # a bad value; ExecError.field names it
    UNKNOWN_BACKEND = "unknown_backend"
    DISABLED = "disabled"                # by the configuration, or this host cannot run it as
                                         # safely as asked (backends.options.SetupError)
    NOT_INSTALLED = "not_installed"
    SESSION = "session"                  # not found / not resumable / transcript gone
    START = "start"                      # the OS refused to start the backend
    # Outcome only: the backend ran and its CLI could not authenticate to its model API (not
    # logged in, key refused), or the model API refused the call for its rate or quota.
    NOT_AUTHENTICATED = parsing.NOT_AUTHENTICATED
    RATE_LIMITED = parsing.RATE_LIMITED


class ExecError(Exception):
    """A run that could not start; ``kind`` is an ``ErrorKind`` (``field``: the request field
    at fault, "" when none)."""

    def __init__(self, kind: str, message: str, field: str = "") -> None:
        super().__init__(message)
        self.kind = kind
        self.field = field


class Request:
    """What a front end asks for. Empty / zero / None means "use the configured default"."""

    # The fields a task, step or body may carry (the shape table decides which each front end
    # accepts: ``profile`` none, the HTTP server sets it from a request header).
    FIELDS = ("backend", "prompt", "model", "workdir", "approval_mode", "sandbox_mode",
              "max_turns", "system_prompt", "verbose", "ephemeral", "extra", "session_id",
              "dry_run", "timeout", "metadata", "tags", "profile")

    def __init__(self, **kw: Any) -> None:
        self.backend = kw.pop("backend", "") or ""
        self.prompt = kw.pop("prompt", "") or ""
        self.model = kw.pop("model", "") or ""
        self.workdir = kw.pop("workdir", "") or ""
        self.approval_mode = kw.pop("approval_mode", "") or ""
        self.sandbox_mode = kw.pop("sandbox_mode", "") or ""
        self.max_turns = kw.pop("max_turns", 0) or 0
        self.system_prompt = kw.pop("system_prompt", "") or ""
        self.verbose = bool(kw.pop("verbose", False))
        self.ephemeral = bool(kw.pop("ephemeral", False))
        self.extra = list(kw.pop("extra", None) or [])
        self.session_id = kw.pop("session_id", "") or ""
        self.dry_run = kw.pop("dry_run", None)
        self.timeout = kw.pop("timeout", None)
        self.metadata = dict(kw.pop("metadata", None) or {})
        self.tags = list(kw.pop("tags", None) or [])
        # Set by a front end, never read from a request body (not in FIELDS):
        # the sessions.Access of the caller (None: every session) ...
        self.access = kw.pop("access", None)
        # ... and how many seconds a turn waits for a session another turn holds before
        # SessionBusy (None: as long as it takes, as on the command line).
        self.session_wait = kw.pop("session_wait", None)
        # ... and the JSON Schema the reply must satisfy (None: plain text; the compatible
        # APIs' structured output).
        self.output_schema = kw.pop("output_schema", None)
        # ... and the client's tools served over MCP (backends.options.ToolBridge; None: none).
        self.tool_bridge = kw.pop("tool_bridge", None)
        # How much of its agent the CLI brings (backends.options.PROFILES; "": the agent
        # profile).
        self.profile = kw.pop("profile", "") or ""
        if kw:
            raise TypeError("unknown request fields: %s" % ", ".join(sorted(kw)))

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "Request":
        return cls(**{k: d[k] for k in cls.FIELDS if k in d})


class Prepared:
    """A validated run: everything needed to start it, and what a dry run shows."""

    def __init__(self, request: Request, backend: base.Backend, opts: options.Options,
                 argv: List[str], env: Dict[str, str], cwd: str, session: Optional[Session],
                 stream: bool, dry_run: bool, timeout: Optional[float],
                 tags: Optional[List[str]] = None, files: Optional[RunFiles] = None) -> None:
        self.request = request
        self.backend = backend
        self.opts = opts
        self.argv = argv
        self.env = env
        self.cwd = cwd
        self.session = session          # session_record.Session being continued, or None
        self.stream = stream
        self.dry_run = dry_run
        self.timeout = timeout
        self.tags = list(tags or [])    # for a new session: session.default_tags + the request's
        self.warnings = backend.ignored_options(opts)   # options this CLI cannot honour
        self.files = files or RunFiles({})  # written when the run starts, removed after it
        # The id the new session will have: known before the run starts, so that a stream's
        # response headers can name it; nothing is saved under it until the turn is recorded.
        self.new_session_id = new_session_id() if session is None and not request.ephemeral \
            and not dry_run else ""

    @property
    def stdin(self) -> str:
        """What the CLI reads: the prompt, followed by the output schema when the CLI takes
        the schema in the prompt."""
        schema = self.request.output_schema
        if schema is None or self.backend.output_schema_route(schema) != \
                options.SCHEMA_IN_PROMPT:
            return self.request.prompt
        return options.with_output_schema(self.request.prompt, schema)

    def describe(self) -> Dict[str, Any]:
        """The dry-run view: the exact command, where it would run, the session it continues."""
        return {"backend": self.backend.name, "command": list(self.argv), "workdir": self.cwd,
                "session_id": self.session.id if self.session else "",
                "stdin": "<prompt: %d characters>" % len(self.stdin),
                "warnings": list(self.warnings)}


class Outcome:
    """A finished run as front ends render it. ``error_kind`` is the ``ErrorKind`` a failed
    run amounts to when one fits (SESSION: the backend lost the session's conversation;
    NOT_AUTHENTICATED, RATE_LIMITED), else "". ``retry_after``: the seconds a rate-limited
    run's CLI said to wait, when it said."""

    def __init__(self, result: parsing.Result, session_id: str, timed_out: bool = False,
                 cancelled: bool = False, timeout: Optional[float] = None,
                 error_kind: str = "", retry_after: Optional[int] = None) -> None:
        self.result = result
        self.session_id = session_id
        self.timed_out = timed_out
        self.cancelled = cancelled
        self.timeout = timeout
        self.error_kind = error_kind
        self.retry_after = retry_after

    @property
    def ok(self) -> bool:
        return self.result.ok and not self.timed_out and not self.cancelled


class Cancel:
    """A cancellation token a front end can fire from another thread (client gone, Ctrl-C)."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._procs: List[runner.Process] = []
        self._lock = threading.Lock()

    def attach(self, proc: runner.Process) -> None:
        with self._lock:
            self._procs.append(proc)
            fired = self._event.is_set()
        if fired:
            proc.cancel()

    def fire(self) -> None:
        with self._lock:
            self._event.set()
            procs = list(self._procs)
        for p in procs:
            p.cancel()

    @property
    def fired(self) -> bool:
        return self._event.is_set()


def prepare(req: Request, cfg: Config, store: Optional[SessionStore] = None,
            policy: Optional[Policy] = None, stream: bool = False,
            base_env: Optional[Dict[str, str]] = None, elsewhere: bool = False) -> Prepared:
    """Resolve and validate ``req``; raises ExecError (or PolicyError) naming what is wrong.
    ``elsewhere``: the run will be prepared again and run on another host (an API node hands
    it a worker), so what only that host can tell is left to it: whether the CLI is
    installed, whether the workdir exists, what the child environment and the workdir's
    project configuration are (nothing is started here: no git)."""
    session = None
    if req.session_id:
        if store is None:
            raise ExecError(ErrorKind.INVALID, "sessions are not available here", "session_id")
        session = _resumable_session(store, req.session_id, req.access, elsewhere)
        if req.backend and req.backend != session.backend:
            raise ExecError(ErrorKind.INVALID, "session %s belongs to backend %s, not %s"
                            % (session.id, session.backend, req.backend), "backend")
    name = session.backend if session else (req.backend or cfg.get("default_backend") or "claude")
    try:
        backend = base.get(name)
    except KeyError as exc:
        raise ExecError(ErrorKind.UNKNOWN_BACKEND, exc.args[0], "backend")
    if not cfg.backend_enabled(name):
        raise ExecError(ErrorKind.DISABLED, "backend %r is disabled in the configuration "
                        "(backends.%s.enabled: false)" % (name, name), "backend")

    def setting(key: str) -> Any:
        return cfg.get("backends.%s.%s" % (name, key))

    approval = _first_mode(req.approval_mode, setting("approval_mode"),
                           cfg.get("unified_flags.approval_mode"))
    sandbox = _first_mode(req.sandbox_mode, setting("sandbox_mode"),
                          cfg.get("unified_flags.sandbox_mode"))
    if approval not in options.APPROVAL_MODES:
        raise ExecError(ErrorKind.INVALID, "expected one of %s, got %r"
                        % (", ".join(options.APPROVAL_MODES), approval), "approval_mode")
    if sandbox not in options.SANDBOX_MODES:
        raise ExecError(ErrorKind.INVALID, "expected one of %s, got %r"
                        % (", ".join(options.SANDBOX_MODES), sandbox), "sandbox_mode")
    for field in ("model", "system_prompt"):         # they go into argv, where NUL cannot
        if "\x00" in getattr(req, field):
            raise ExecError(ErrorKind.INVALID, "%s: must not contain NUL bytes" % field, field)
    if not req.prompt.strip():
        # Every front end: an empty prompt would start a run (and a session) for nothing.
        raise ExecError(ErrorKind.INVALID, "prompt: must not be empty or only whitespace",
                        "prompt")
    try:
        runner.encode_stdin(req.prompt)     # checked here so no session is made for it either
    except runner.InputError as exc:
        raise _invalid_prompt(exc)
    extra = list(req.extra)
    try:
        if policy is not None:
            policy.check_modes(approval, sandbox)
            extra = check_extra_flags(name, extra, backend.allowed_extra_flags,
                                      backend.path_extra_flags, policy.check_path)
        check_workdir = None  # type: Optional[Callable[[str], str]]
        if policy is not None:
            check_workdir = policy.check_workdir_elsewhere if elsewhere else policy.check_workdir
        if session is not None:
            cwd = session.working_dir
            if not elsewhere and not os.path.isdir(cwd):
                raise ExecError(ErrorKind.SESSION, "session %s: its working directory %s no "
                                "longer exists" % (session.id, cwd))
            if check_workdir is not None:
                # A session made elsewhere (the CLI shares the store) must not carry a run
                # outside the server's workdir policy.
                cwd = check_workdir(cwd)
        elif req.workdir:
            cwd = check_workdir(req.workdir) if check_workdir is not None \
                else resolve_workdir(req.workdir, require_absolute=False)
        elif policy is not None:
            # The server's default directory is checked like any workdir (the compatible
            # APIs have no workdir field, so every one of their runs lands here).
            cwd = policy.default_workdir()
        else:
            cwd = os.getcwd()           # the command line: the user's own directory
    except PolicyError as exc:
        raise ExecError(ErrorKind.INVALID, str(exc), exc.field)

    profile = req.profile or options.AGENT_PROFILE
    if profile not in options.PROFILES:
        raise ExecError(ErrorKind.INVALID, "profile must be one of %s: got %r"
                        % (", ".join(options.PROFILES), profile[:100]), "profile")
    dry_run = bool(cfg.get("unified_flags.dry_run")) if req.dry_run is None else bool(req.dry_run)
    opts = options.Options(
        model=req.model or setting("model") or "",
        workdir=cwd,
        approval_mode=approval,
        sandbox_mode=sandbox,
        output_format="stream-json" if stream else "json",
        max_turns=int(req.max_turns or cfg.get("unified_flags.max_turns") or 0),
        system_prompt=req.system_prompt or setting("system_prompt") or "",
        verbose=req.verbose or bool(cfg.get("unified_flags.verbose")),
        ephemeral=req.ephemeral,
        extra=extra + list(setting("extra_flags") or []),
        resume_id=session.backend_session_id if session else "",
        allowed_tools=setting("allowed_tools") or "",
        # The command line runs its user's own workdirs as the CLI would; the server and MCP
        # load a workdir's configuration only when the operator opts in.
        # A chat run never does: it is a model's answer, not the project's agent.
        project_config=profile != options.CHAT_PROFILE and (
            policy is None or policy.allow_project_config),
        output_schema=req.output_schema,
        profile=profile,
    )
    executable = backend.find_executable()
    if executable is None and not dry_run and not elsewhere:
        raise ExecError(ErrorKind.NOT_INSTALLED, "backend %r is not installed (no %r on PATH)"
                        % (name, backend.executable), "backend")
    if req.tool_bridge is not None:
        problem = backend.tool_bridge_problem(opts.project_config)
        if problem:
            raise ExecError(ErrorKind.INVALID, problem, "tools")
        opts.tool_bridge = req.tool_bridge
    contents = backend.run_files(opts)
    if req.tool_bridge is not None:
        contents[options.BRIDGE_TICKET] = req.tool_bridge.ticket
    files = RunFiles(contents)
    opts.run_files = dict(files.paths)
    argv = backend.build_argv(opts, executable or backend.executable)
    try:
        env = {} if elsewhere else \
            backend.child_env(dict(os.environ if base_env is None else base_env), opts)
    except options.SetupError as exc:
        raise ExecError(ErrorKind.DISABLED, str(exc), "backend")
    refusal = "" if opts.project_config or elsewhere else \
        backend.project_config_refusal(cwd, env)
    if refusal:
        raise ExecError(ErrorKind.INVALID, refusal, "workdir")
    _check_word_lengths(name, argv, env, opts)
    timeout = req.timeout or cfg.get("unified_flags.command_timeout_secs") or None
    tags = list(dict.fromkeys(list(cfg.get("session.default_tags") or []) + req.tags))
    if store is not None and not dry_run and (session is not None or not req.ephemeral):
        _check_session_store(store, session, req.session_wait)
    return Prepared(req, backend, opts, argv, env, cwd, session, stream, dry_run, timeout, tags,
                    files)


# Linux refuses to start a program when one argv word or environment string is this long
# (MAX_ARG_STRLEN, its terminating NUL included): execve fails with E2BIG.
MAX_ARG_STRLEN = 128 * 1024


def _check_word_lengths(name: str, argv: List[str], env: Dict[str, str],
                        opts: options.Options) -> None:
    """A 400 naming the option, rather than a failed start, when a value would make one argv
    word or environment string too long for Linux (a long system prompt on a backend that
    takes it on its command line: codex, qwen, opencode; claude reads a long one from a
    file)."""
    words = [os.fsencode(w) for w in argv] + [os.fsencode("%s=%s" % kv) for kv in env.items()]
    longest = max((len(w) for w in words), default=0)
    if longest < MAX_ARG_STRLEN:
        return
    size = len(opts.system_prompt.encode("utf-8"))
    if size * 2 > longest:
        raise ExecError(ErrorKind.INVALID, "the system prompt is %d bytes, too long for the %s "
                        "backend, which takes it as one command-line word (Linux allows %d "
                        "bytes): shorten it, or use claude, which reads a long one from a file"
                        % (size, name, MAX_ARG_STRLEN - 1), "system_prompt")
    raise ExecError(ErrorKind.INVALID, "a value on the %s command line is %d bytes, over the "
                    "%d bytes Linux allows in one argument: shorten the request's longest "
                    "option value" % (name, longest, MAX_ARG_STRLEN - 1), "")


def _first_mode(*values: Any) -> str:
    for v in values:
        if v and v != "default":
            return v
    return "default"


def _resumable_session(store: SessionStore, session_id: str,
                       access: Optional[Access], elsewhere: bool = False) -> Session:
    """The session ``session_id`` (an id or a unique prefix) names among those ``access`` may
    use, if it can be continued (here: its CLI's transcript is on this machine, unless the
    run goes ``elsewhere``, where the job's routing sees to it)."""
    try:
        session = store.resolve(session_id, access)
        if not elsewhere:
            store.check_here(session)
    except SessionError as exc:
        raise ExecError(ErrorKind.SESSION, str(exc), "session_id")
    if not session.backend_session_id:
        raise ExecError(ErrorKind.SESSION, "session %s has no %s session id to resume (its "
                        "first run did not report one); start a new session instead"
                        % (session.id, session.backend), "session_id")
    return session


def _check_session_store(store: SessionStore, session: Optional[Session],
                         wait: Optional[float]) -> None:
    """Refuse, before any run starts, a run whose turn could not be recorded (the store cannot
    be written) or, with ``wait``, whose session another turn still holds after ``wait``
    seconds. The session is only waited for here, not held: the run takes its lock again
    (waiting ``wait`` at most) where it starts, in the thread that will release it."""
    try:
        store.check_writable()
        if session is not None and wait is not None:
            with store.lock(session.id, timeout=wait):
                pass
    except SessionError as exc:
        raise ExecError(ErrorKind.SESSION, str(exc), "session_id" if session is not None else "")


# -- running ---------------------------------------------------------------------------------


class _SessionScope:
    """Names the session of a new run (recorded as its caller's) or holds the lock of a
    resumed one for the whole run (SessionBusy after the request's ``session_wait``), then
    records the turn. A new session is saved once, with its first turn (or as cancelled when
    the run is interrupted): ``prepare`` has checked that the store can be written."""

    def __init__(self, prepared: Prepared, store: Optional[SessionStore]) -> None:
        self.prepared = prepared
        self.store = store if not prepared.request.ephemeral or prepared.session else None
        self.session_id = ""
        self._lock_cm = None
        self._new = None  # type: Optional[Session]
        self._recorded = False

    def __enter__(self) -> "_SessionScope":
        p = self.prepared
        if self.store is None:
            return self
        if p.session is not None:
            self._lock_cm = self.store.lock(p.session.id, timeout=p.request.session_wait)
            self._lock_cm.__enter__()
            self.session_id = p.session.id
        else:
            self._new = self.store.new(p.backend.name, p.cwd, model=p.opts.model,
                                       initial_prompt=p.request.prompt, tags=p.tags,
                                       metadata=p.request.metadata, access=p.request.access,
                                       session_id=p.new_session_id)
            self.session_id = self._new.id
        return self

    def record(self, result: parsing.Result, cancelled: bool = False) -> None:
        self._recorded = True
        if self.store is None or not self.session_id:
            return
        self.store.record_turn(self.session_id, result.backend_session_id or
                               (self.prepared.session.backend_session_id
                                if self.prepared.session else ""),
                               result.usage.to_dict(), error=result.error, model=result.model,
                               reply=result.text, cancelled=cancelled, new=self._new)

    def __exit__(self, *exc: Any) -> None:
        try:
            if exc[0] is not None and not self._recorded and self.session_id:
                # Interrupted before the turn could be counted (Ctrl-C, SIGTERM): the
                # session must not look active, and stays resumable only if it was.
                self.store.mark_cancelled(self.session_id, "%s run was interrupted before "
                                          "it finished" % self.prepared.backend.name,
                                          new=self._new)
        except SessionError:
            pass                # the store refuses writes now: the run's own error matters more
        finally:
            if self._lock_cm is not None:
                self._lock_cm.__exit__(*exc)


def _start(p: Prepared, cancel: Optional[Cancel],
           on_stderr: Optional[Callable[[str], None]] = None) -> runner.Process:
    """The started run (its files written), or ExecError with nothing left running or
    written."""
    try:
        p.files.write()
    except OSError as exc:
        raise ExecError(ErrorKind.START, "cannot write the file the %s run reads: %s"
                        % (p.backend.name, exc))
    try:
        proc = runner.Process(p.argv, p.stdin, p.cwd, p.env, p.timeout, on_stderr=on_stderr)
    except runner.InputError as exc:
        p.files.remove()
        raise _invalid_prompt(exc)
    except runner.StartError as exc:
        p.files.remove()
        raise ExecError(ErrorKind.START, str(exc))
    if cancel is not None:
        try:
            cancel.attach(proc)
        except BaseException:
            proc.kill()
            p.files.remove()
            raise
    return proc


def _wait(p: Prepared, proc: runner.Process) -> runner.Outcome:
    """Wait for the run to end, then remove its files."""
    try:
        return proc.wait()
    finally:
        p.files.remove()


def _invalid_prompt(exc: runner.InputError) -> ExecError:
    return ExecError(ErrorKind.INVALID, "prompt: %s" % exc, "prompt")


def _stop_reason(p: Prepared, proc: runner.Process, events: List[ev.Event],
                 stderr: str) -> str:
    """Why the run was stopped ("" when it was not); a timeout repeats what the backend said
    last, since that is usually why it never finished (codex-cli 0.169.0 retries an
    unreachable model API for as long as it is let: "Reconnecting... 2/5")."""
    if proc.timed_out:
        said = last_backend_message(events, stderr)
        return "%s timed out after %gs and was stopped%s" % (
            p.backend.name, p.timeout, "; last backend message: %s" % said if said else "")
    if proc.cancelled:
        return "%s run was cancelled" % p.backend.name
    return ""


def last_backend_message(events: List[ev.Event], stderr: str) -> str:
    """The backend's last warning (a non-fatal error event), else the last line of its
    stderr; "" when it said nothing."""
    for e in reversed(events):
        if e.type == ev.ERROR and not e.content.get("fatal", True):
            return parsing.last_meaningful_line(e.content.get("message", ""))
    return parsing.last_meaningful_line(stderr)


def _add_last_warning(result: parsing.Result) -> None:
    """A failed run's error ends with the backend's last warning when the error does not
    already say it (the retries before a failure tell why it failed)."""
    if not result.error:
        return
    said = last_backend_message(result.events, "")
    if said and said not in result.error:
        result.error += " (last backend message: %s)" % said


def _explain_missing_transcript(p: Prepared, result: parsing.Result, stderr: str) -> str:
    """ErrorKind.SESSION (and an error saying what to do) when the backend no longer has the
    continued session's conversation, else ""."""
    if p.session is None or result.ok:
        return ""
    text = (result.error + "\n" + stderr).lower()
    if not any(m in text for m in getattr(p.backend, "missing_session_markers", ())):
        return ""
    result.error = ("session %s: %s no longer has its conversation %s (%s). Start a new "
                    "session, or remove this one with: clinvk sessions delete %s"
                    % (p.session.id, p.backend.name, p.session.backend_session_id,
                       result.error or "transcript not found", p.session.id))
    return ErrorKind.SESSION


def _with_login_hint(p: Prepared, e: ev.Event) -> ev.Event:
    """``e``, a failure to authenticate ending with how to fix it for this backend's CLI."""
    hint = p.backend.login_hint
    if e.type == ev.ERROR and e.content.get("code") == ErrorKind.NOT_AUTHENTICATED and hint \
            and hint not in e.content["message"]:
        e.content["message"] += " (the %s CLI cannot authenticate to its model API; to " \
                                "fix: %s)" % (p.backend.name, hint)
    return e


def _failure_class(p: Prepared, result: parsing.Result) -> Tuple[str, Optional[int]]:
    """(ErrorKind.NOT_AUTHENTICATED or RATE_LIMITED, retry_after) of a run whose first fatal
    error has that class, else ("", None); the result's error gets the login hint."""
    kind, first = parsing.classified_failure(result)
    if first is None:
        return "", None
    message = _with_login_hint(p, first).content["message"]
    if result.error and message.startswith(result.error):
        result.error = message          # the error the parser kept, and now its fix
    return kind, first.content.get("retry_after")


def _forget_if_ephemeral(p: Prepared, result: parsing.Result) -> None:
    if not p.request.ephemeral or not result.backend_session_id or p.session is not None:
        return

    def run_in_place(argv: List[str]) -> str:
        try:
            out, _ = runner.run(argv, "", p.cwd, p.env, timeout=60)
        except runner.StartError:
            return ""
        return out

    p.backend.forget_session(result.backend_session_id, p.argv[0], run_in_place)


def run(p: Prepared, store: Optional[SessionStore] = None, cancel: Optional[Cancel] = None,
        on_stderr: Optional[Callable[[str], None]] = None) -> Outcome:
    """Run to completion with the backend's ``json`` output and return the parsed result.
    ``on_stderr`` gets each line of the backend's stderr as it arrives (runner.Process)."""
    with _SessionScope(p, store) as scope:
        proc = _start(p, cancel, on_stderr)
        stdout = None
        try:
            stdout = "\n".join(proc.lines())
        finally:
            if stdout is None:
                proc.cancel()       # interrupted while reading (Ctrl-C): stop the group
            out = _wait(p, proc)
        result = p.backend.parse_json_output(stdout, out.stderr, out.exit_code)
        result.duration_ms = out.duration_ms
        reason = _stop_reason(p, proc, result.events, out.stderr)
        if reason:
            result.error = reason
        else:
            if out.exit_code != 0 and result.exit_code == 0:
                result.exit_code = out.exit_code
            _add_last_warning(result)
        result.model = result.model or p.opts.model
        error_kind = _explain_missing_transcript(p, result, out.stderr)
        failure_class, retry_after = ("", None) if reason else _failure_class(p, result)
        scope.record(result, cancelled=proc.cancelled)
        _forget_if_ephemeral(p, result)
        return Outcome(result, scope.session_id, proc.timed_out, proc.cancelled, p.timeout,
                       error_kind or failure_class, retry_after)


def stream(p: Prepared, store: Optional[SessionStore] = None, cancel: Optional[Cancel] = None,
           outcome: Optional[List[Outcome]] = None,
           on_stderr: Optional[Callable[[str], None]] = None) -> Iterator[ev.Event]:
    """Yield unified events as the backend produces them: ``init`` first, ``done`` last.

    The backend's own init is merged into ours (session id, model). An ``error`` event
    precedes ``done`` when the run fails. When ``outcome`` is a list, the final Outcome is
    appended to it. Closing the generator early cancels the run. ``on_stderr`` gets each
    line of the backend's stderr as it arrives (runner.Process).
    """
    with _SessionScope(p, store) as scope:
        parser = p.backend.new_stream_parser()
        parser.model = parser.model or p.opts.model     # codex never reports its model
        proc = _start(p, cancel, on_stderr)
        sid = scope.session_id
        sent_init = False

        def stamp(e: ev.Event) -> ev.Event:
            e.session_id = sid
            return e

        finished = False
        interrupted = None  # type: Optional[BaseException]
        try:
            for line in proc.lines():
                for e in parser.feed(line):
                    _with_login_hint(p, e)
                    if e.type == ev.INIT:
                        if not sent_init:
                            sent_init = True
                            yield stamp(e)
                        continue
                    if not sent_init:
                        sent_init = True
                        yield stamp(ev.init(p.backend.name, p.opts.model))
                    if e.type != ev.DONE:
                        yield stamp(e)
            finished = True
        except GeneratorExit:
            raise
        except BaseException as exc:
            if isinstance(exc, Exception):
                raise
            # Ctrl-C or SIGTERM in the consumer's thread while it waited for a line: stop
            # the run but still end the stream with its done event, then re-raise.
            interrupted = exc
        finally:
            if not finished:
                proc.cancel()       # the consumer went away (client gone, generator closed)
            out = _wait(p, proc)
        exit_code = INTERRUPTED_EXIT_CODE if interrupted is not None else out.exit_code
        if not sent_init:
            yield stamp(ev.init(p.backend.name, p.opts.model))
        reason = _stop_reason(p, proc, parser.events, out.stderr)
        if reason:
            parser.error = reason
            yield stamp(ev.error(p.backend.name, reason,
                                 code="timeout" if proc.timed_out else "cancelled"))
        closing = parser.finish(exit_code, out.stderr)
        result = parser.result(exit_code, out.duration_ms)
        if not reason:
            _add_last_warning(result)
        error_kind = _explain_missing_transcript(p, result, out.stderr)
        failure_class, retry_after = ("", None) if reason else _failure_class(p, result)
        for e in closing:
            if e.type == ev.ERROR and result.error:
                e.content["message"] = result.error
            yield stamp(e)
        scope.record(result, cancelled=proc.cancelled)
        _forget_if_ephemeral(p, result)
        if outcome is not None:
            outcome.append(Outcome(result, sid, proc.timed_out, proc.cancelled, p.timeout,
                                   error_kind or failure_class, retry_after))
        if interrupted is not None:
            raise interrupted
