"""The command tree: ``clinvk [flags] PROMPT`` plus resume, sessions, config, parallel, chain,
compare, backends, serve, mcp and version.

The root command takes a prompt, so the first positional word decides: a command name runs
that command, anything else is a prompt (``clinvk -- version`` sends the word "version").
Exit codes are the ``EXIT_*`` constants below; no traceback ever reaches the user.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import sys
from typing import Any, Callable, Dict, List, Optional

from . import version_line

EXIT_OK = 0             # the backend answered
EXIT_FAILED = 1         # the backend ran and failed (or reported an error with exit 0)
EXIT_USAGE = 2          # bad flags, arguments, configuration values, workdir or input file
EXIT_NOT_INSTALLED = 3  # the backend's CLI is not on PATH, or the backend is disabled
EXIT_SESSION = 4        # session not found, ambiguous, not resumable, or its transcript is gone
EXIT_TIMEOUT = 124      # --timeout (or server.request_timeout_secs) expired; the run was killed
EXIT_INTERRUPTED = 130  # Ctrl-C or SIGTERM; every backend process group was killed

COMMANDS = ("resume", "sessions", "config", "parallel", "chain", "compare", "backends",
            "serve", "mcp", "version", "help")

DEFAULT_LIST_LIMIT = 100  # sessions list shows the newest 100 unless --limit says otherwise

EXIT_CODES_HELP = """exit codes:
  0    success
  1    the backend ran and failed (or reported an error)
  2    usage error: bad flag, argument, config value, workdir or input file
  3    backend not installed (not on PATH) or disabled in the config
  4    session error: not found, ambiguous prefix, not resumable, transcript gone
  124  timed out (--timeout); the backend was killed
  130  interrupted (Ctrl-C / SIGTERM); every backend was killed"""


class UsageError(Exception):
    """A problem with what the user typed; exit code 2."""


class Interrupted(BaseException):
    """SIGTERM arrived; handled like Ctrl-C."""


class Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so main() owns every exit code."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError("%s: %s" % (self.prog, message))


# -- shared flags ----------------------------------------------------------------------------


def add_config_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="PATH",
                   help="config file (default: $CLINVK_CONFIG or ~/.clinvk/config.yaml)")


def add_run_flags(p: argparse.ArgumentParser, backend: bool = True, workdir: bool = True) -> None:
    """The per-run flags shared by the root command, resume, parallel, chain and compare."""
    if backend:
        p.add_argument("-b", "--backend", choices=("claude", "codex", "gemini"),
                       help="backend (default: config default_backend)")
    p.add_argument("-m", "--model", help="model name passed to the backend")
    if workdir:
        p.add_argument("-w", "--workdir", help="working directory of the backend")
    p.add_argument("--approval-mode", choices=("default", "auto", "none", "always"),
                   help="what the agent may do without asking (see README per backend)")
    p.add_argument("--sandbox-mode", choices=("default", "read-only", "workspace", "full"),
                   help="where the agent may write (see README per backend)")
    p.add_argument("--max-turns", type=_int_at_least(0), metavar="N",
                   help="maximum agentic turns (claude only; others ignore it, see README)")
    p.add_argument("--system-prompt", metavar="TEXT", help="system prompt for the backend")
    p.add_argument("--timeout", type=_positive_float, metavar="SECONDS",
                   help="kill the backend after this many seconds (exit code 124)")
    p.add_argument("--verbose", action="store_true", default=None,
                   help="ask the backend for verbose output")
    p.add_argument("--dry-run", action="store_true", default=None,
                   help="print the exact command that would run, run nothing")
    add_config_flag(p)


def add_output_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output-format", choices=("text", "json", "stream-json"),
                   help="text (the reply), json (one object) or stream-json (NDJSON events); "
                        "default: config output.format")


def _int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number >= ``minimum``."""
    def convert(s: str) -> int:
        try:
            v = int(s)
        except ValueError:
            raise argparse.ArgumentTypeError("expected a whole number, got %r" % s)
        if v < minimum:
            raise argparse.ArgumentTypeError("expected a number >= %d, got %d" % (minimum, v))
        return v
    return convert


def _positive_float(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError("expected a number of seconds, got %r" % s)
    if v <= 0:
        raise argparse.ArgumentTypeError("expected a number of seconds > 0, got %s" % s)
    return v


def root_parser() -> Parser:
    p = Parser(
        prog="clinvk",
        usage="clinvk [flags] [--] PROMPT\n       clinvk COMMAND [flags] ...",
        description="Run a prompt on claude, codex or gemini with one unified output. "
                    "The prompt may also come on stdin (echo hi | clinvk -b codex).",
        epilog="commands:\n"
               "  resume     continue a session (ID or prefix, or --last)\n"
               "  sessions   list, show, delete and clean sessions\n"
               "  config     show, set and locate the configuration\n"
               "  parallel   run many tasks at once (--file tasks.json)\n"
               "  chain      run steps in order, {{previous}} = last output\n"
               "  compare    ask several backends the same prompt\n"
               "  backends   which backends are installed\n"
               "  serve      HTTP server (native, OpenAI and Anthropic APIs)\n"
               "  mcp        MCP server over stdio\n"
               "  version    print the version\n\n"
               "Run 'clinvk COMMAND --help' for a command's flags.\n\n" + EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("prompt", nargs="?", help="the prompt (default: read from stdin)")
    add_run_flags(p)
    add_output_flag(p)
    p.add_argument("-c", "--continue", dest="continue_last", action="store_true",
                   help="continue the most recent session (of -b's backend when given)")
    p.add_argument("--ephemeral", action="store_true",
                   help="store no session, and ask the backend not to persist one")
    p.add_argument("--version", action="store_true", help="print the version and exit")
    return p


# -- dispatch --------------------------------------------------------------------------------

# Root flags that take a value: needed to find the first positional word.
_VALUE_FLAGS = {"-b", "--backend", "-m", "--model", "-w", "--workdir", "-o", "--output-format",
                "--approval-mode", "--sandbox-mode", "--max-turns", "--system-prompt",
                "--timeout", "--config"}


def _command_index(argv: List[str]) -> int:
    """Index of the command word in argv, or -1 when the first positional is a prompt."""
    i = 0
    while i < len(argv):
        tok = argv[i]
        if tok == "--":
            return -1
        if tok.startswith("-") and tok != "-":
            i += 2 if (tok in _VALUE_FLAGS) else 1
            continue
        return i if tok in COMMANDS else -1
    return -1


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    previous = signal.getsignal(signal.SIGTERM)
    try:
        signal.signal(signal.SIGTERM, _raise_interrupted)
    except ValueError:
        previous = None          # not the main thread (tests): leave signals alone
    try:
        return _dispatch(argv)
    except _HelpShown as h:
        return h.code
    except UsageError as exc:
        _err("%s" % exc)
        return EXIT_USAGE
    except (KeyboardInterrupt, Interrupted):
        from . import runner
        killed = runner.kill_all()
        _err("interrupted%s" % (" (stopped %d backend process%s)"
                                % (killed, "es" if killed != 1 else "") if killed else ""))
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_OK
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _raise_interrupted(signum: int, frame: Any) -> None:
    raise Interrupted()


def _dispatch(argv: List[str]) -> int:
    idx = _command_index(argv)
    if idx < 0:
        return cmd_prompt(argv)
    command = argv[idx]
    rest = argv[:idx] + argv[idx + 1:]
    if command == "help":
        if rest and rest[0] in COMMANDS and rest[0] != "help":
            return _dispatch([rest[0], "--help"])
        root_parser().print_help()
        return EXIT_OK
    handler = {
        "resume": cmd_resume, "sessions": cmd_sessions, "config": cmd_config,
        "backends": cmd_backends, "version": cmd_version, "serve": cmd_serve, "mcp": cmd_mcp,
        "parallel": cmd_parallel, "chain": cmd_chain, "compare": cmd_compare,
    }[command]
    return handler(rest)


def _parse(parser: argparse.ArgumentParser, argv: List[str]) -> argparse.Namespace:
    try:
        return parser.parse_args(argv)
    except SystemExit as exc:      # --help
        raise _HelpShown(exc.code or 0)


def _parse_action(parser: argparse.ArgumentParser, actions, argv: List[str]):
    """Parse a command with actions (``sessions list``): ``(args, None)``, or ``(None, exit
    code)`` when no action was given (help raises _HelpShown, as in _parse). Every action
    takes ``--config``."""
    for action in actions:
        add_config_flag(action)
    add_config_flag(parser)
    args = _parse(parser, argv)
    if not args.action:
        parser.print_help()
        return None, EXIT_USAGE
    return args, None


class _HelpShown(Exception):
    """argparse printed help and wanted to exit with ``code``; main() returns that code."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def _err(msg: str) -> None:
    sys.stderr.write("clinvk: %s\n" % msg)
    sys.stderr.flush()


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _json_out(obj: Any) -> None:
    _write(json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def load_config(args: argparse.Namespace, flags: Optional[Dict[str, Any]] = None):
    """The effective configuration; a bad file or value is a UsageError naming it."""
    from . import config
    try:
        return config.load(getattr(args, "config", None), flags=flags or {})
    except config.ConfigError as exc:
        raise UsageError(str(exc))


def open_store(cfg):
    from .sessions import SessionStore
    return SessionStore(cfg.home)


# -- the root command: run one prompt --------------------------------------------------------


def cmd_prompt(argv: List[str]) -> int:
    if not argv:
        root_parser().print_help()
        return EXIT_OK
    args = _parse(root_parser(), argv)
    if args.version:
        return cmd_version([])
    flags = {}
    if args.backend:
        flags["default_backend"] = args.backend
    if args.output_format:
        flags["output.format"] = args.output_format
    cfg = load_config(args, flags)
    prompt = _read_prompt(args.prompt)
    # An ephemeral run that continues nothing never touches the session store.
    store = None if args.ephemeral and not args.continue_last else open_store(cfg)
    session_id = ""
    if args.continue_last or (cfg.get("session.auto_resume") and not args.ephemeral):
        here = os.path.realpath(args.workdir) if args.workdir else os.getcwd()
        last = store.last(args.backend or
                          (None if args.continue_last else cfg.get("default_backend")),
                          None if args.continue_last else here)
        if last is None and args.continue_last:
            _err("no resumable session found%s; start one with: clinvk %s\"PROMPT\""
                 % (" for backend %s" % args.backend if args.backend else "",
                    "-b %s " % args.backend if args.backend else ""))
            return EXIT_SESSION
        session_id = last.id if last else ""
    return run_prompt(args, cfg, store, prompt, session_id)


def _read_prompt(positional: Optional[str]) -> str:
    if positional is not None:
        return positional
    if sys.stdin is None or sys.stdin.isatty():
        raise UsageError("no prompt: give it as an argument (clinvk \"...\") or on stdin "
                         "(echo ... | clinvk)")
    data = sys.stdin.buffer.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError("the prompt on stdin is not valid UTF-8")
    if not text.strip():
        raise UsageError("the prompt on stdin is empty")
    return text


def request_from_args(args: argparse.Namespace, prompt: str, session_id: str = ""):
    from .execute import Request
    return Request(
        backend=getattr(args, "backend", "") or "",
        prompt=prompt,
        model=args.model or "",
        workdir=getattr(args, "workdir", "") or "",
        approval_mode=args.approval_mode or "",
        sandbox_mode=args.sandbox_mode or "",
        max_turns=args.max_turns or 0,
        system_prompt=args.system_prompt or "",
        verbose=bool(args.verbose),
        ephemeral=bool(getattr(args, "ephemeral", False)),
        session_id=session_id,
        dry_run=args.dry_run,
        timeout=args.timeout,
    )


def exec_error_exit(exc) -> int:
    """Report an ExecError and return its exit code."""
    _err(str(exc))
    return {"unknown_backend": EXIT_USAGE, "invalid": EXIT_USAGE, "disabled": EXIT_NOT_INSTALLED,
            "not_installed": EXIT_NOT_INSTALLED, "session": EXIT_SESSION,
            "start": EXIT_FAILED}.get(exc.kind, EXIT_FAILED)


def run_prompt(args: argparse.Namespace, cfg, store, prompt: str, session_id: str) -> int:
    """Prepare, run (or dry-run) and render one prompt; returns the exit code."""
    from . import execute
    fmt = args.output_format or cfg.get("output.format") or "text"
    req = request_from_args(args, prompt, session_id)
    try:
        prepared = execute.prepare(req, cfg, store, stream=(fmt == "stream-json"))
    except execute.ExecError as exc:
        return exec_error_exit(exc)
    for warning in prepared.warnings:
        _err("warning: %s" % warning)
    if prepared.dry_run:
        return _print_dry_run(prepared, fmt)
    try:
        if fmt == "stream-json":
            collected: List[execute.Outcome] = []
            for e in execute.stream(prepared, store, outcome=collected):
                _write(json.dumps(e.to_dict(), ensure_ascii=False) + "\n")
            outcome = collected[0]
        else:
            outcome = execute.run(prepared, store)
    except execute.ExecError as exc:
        return exec_error_exit(exc)
    if fmt == "json":
        _json_out(outcome_to_json(outcome))
    elif fmt == "text":
        _print_text(outcome, cfg)
    if outcome.result.error and fmt != "text":
        _err("%s: %s" % (outcome.result.backend, outcome.result.error))
    return outcome_exit_code(outcome)


def outcome_exit_code(outcome) -> int:
    if outcome.timed_out:
        return EXIT_TIMEOUT
    if outcome.cancelled:
        return EXIT_INTERRUPTED
    if outcome.result.ok:
        return EXIT_OK
    if "clinvk sessions delete" in outcome.result.error:
        return EXIT_SESSION
    return EXIT_FAILED


def outcome_to_json(outcome) -> Dict[str, Any]:
    """The stable ``-o json`` object (documented in the README)."""
    r = outcome.result
    d = {
        "backend": r.backend,
        "content": r.text,
        "session_id": outcome.session_id,
        "backend_session_id": r.backend_session_id,
        "model": r.model,
        "duration_ms": r.duration_ms,
        "exit_code": r.exit_code if r.exit_code or r.ok else 1,
        "usage": r.usage.to_dict(),
    }
    if r.error:
        d["error"] = r.error
    return d


def _print_text(outcome, cfg) -> None:
    r = outcome.result
    if r.text:
        _write(r.text if r.text.endswith("\n") else r.text + "\n")
    if r.error:
        _err("%s: %s" % (r.backend, r.error))
    extras = []
    if cfg.get("output.show_tokens") and r.usage:
        extras.append("tokens: %d in, %d out" % (r.usage.input_tokens, r.usage.output_tokens))
    if cfg.get("output.show_timing"):
        extras.append("time: %.2fs" % (r.duration_ms / 1000.0))
    if extras:
        sys.stderr.write("[%s]\n" % ", ".join(extras))


def _print_dry_run(prepared, fmt: str) -> int:
    info = prepared.describe()
    if fmt == "text":
        _write("would run: %s\n" % shlex.join(info["command"]) if hasattr(shlex, "join")
               else "would run: %s\n" % " ".join(shlex.quote(a) for a in info["command"]))
        _write("       in: %s\n" % info["workdir"])
        _write("    stdin: %s\n" % info["stdin"])
        if info["session_id"]:
            _write("  session: %s (continued)\n" % info["session_id"])
    else:
        _json_out(dict(info, dry_run=True))
    return EXIT_OK


# -- resume ----------------------------------------------------------------------------------


def cmd_resume(argv: List[str]) -> int:
    p = Parser(prog="clinvk resume", description="Continue a session in the backend's own "
               "conversation, so the model sees the history.",
               usage="clinvk resume [flags] (ID | --last) [--] [PROMPT]")
    p.add_argument("words", nargs="*", metavar="ID PROMPT",
                   help="session id (or unique prefix) and the prompt (default: stdin)")
    p.add_argument("--last", action="store_true", help="the most recent session")
    p.add_argument("--here", action="store_true",
                   help="with --last: only sessions of the current directory")
    add_run_flags(p, workdir=False)
    add_output_flag(p)
    args = _parse(p, argv)
    cfg = load_config(args)
    store = open_store(cfg)
    words = list(args.words)
    if args.last:
        s = store.last(args.backend or None, os.getcwd() if args.here else None)
        if s is None:
            _err("no resumable session found%s%s"
                 % (" for backend %s" % args.backend if args.backend else "",
                    " in %s" % os.getcwd() if args.here else ""))
            return EXIT_SESSION
        session_id = s.id
    else:
        if not words:
            raise UsageError("clinvk resume: give a session ID (see clinvk sessions list) "
                             "or --last")
        session_id = words.pop(0)
    if len(words) > 1:
        raise UsageError("clinvk resume: too many arguments; quote the prompt as one argument")
    prompt = _read_prompt(words[0] if words else None)
    args.workdir = ""
    args.ephemeral = False
    if args.backend and not args.last:
        args.backend = ""           # -b filters --last; an explicit ID names its own backend
    if args.last:
        args.backend = ""
    return run_prompt(args, cfg, store, prompt, session_id)


# -- sessions --------------------------------------------------------------------------------


def cmd_sessions(argv: List[str]) -> int:
    p = Parser(prog="clinvk sessions", description="List, show, delete and clean sessions.")
    sub = p.add_subparsers(dest="action", metavar="ACTION", parser_class=Parser)
    ls = sub.add_parser("list", help="list sessions, most recent first")
    ls.add_argument("-b", "--backend")
    ls.add_argument("--status", choices=("active", "completed", "error", "paused"))
    ls.add_argument("-n", "--limit", type=_int_at_least(0), default=DEFAULT_LIST_LIMIT,
                    help="at most N sessions (default %d; 0 = all)" % DEFAULT_LIST_LIMIT)
    ls.add_argument("--offset", type=_int_at_least(0), default=0)
    ls.add_argument("--json", action="store_true", help="JSON: {sessions, total, limit, offset}")
    show = sub.add_parser("show", help="one session's details")
    show.add_argument("id", help="session id or unique prefix")
    show.add_argument("--json", action="store_true")
    de = sub.add_parser("delete", help="delete one session")
    de.add_argument("id", help="session id or unique prefix")
    cl = sub.add_parser("clean", help="delete sessions not used for a while")
    cl.add_argument("--older-than", metavar="AGE",
                    help="e.g. 30d, 12h, 2w (default: config session.retention_days)")
    args, code = _parse_action(p, (ls, show, de, cl), argv)
    if args is None:
        return code
    cfg = load_config(args)
    store = open_store(cfg)
    from . import sessions
    try:
        if args.action == "list":
            found, total = store.list(backend=args.backend, status=args.status,
                                      limit=args.limit or None, offset=args.offset)
            if args.json:
                # Compact: the C encoder is ~10x faster than indent=2 on thousands of sessions.
                _write(json.dumps({"sessions": [s.to_dict() for s in found], "total": total,
                                   "limit": args.limit, "offset": args.offset},
                                  ensure_ascii=False, separators=(",", ":")) + "\n")
            else:
                _write(format_session_table(found, total, args.offset))
        elif args.action == "show":
            s = store.resolve(args.id)
            if args.json:
                _json_out(s.to_dict())
            else:
                _write(format_session(s))
        elif args.action == "delete":
            # delete() resolves the id itself, so a damaged session file can be removed too.
            _write("deleted session %s\n" % store.delete(args.id))
        elif args.action == "clean":
            if args.older_than:
                try:
                    seconds = sessions.parse_age(args.older_than)
                except ValueError as exc:
                    raise UsageError("--older-than: %s" % exc)
            else:
                days = cfg.get("session.retention_days")
                if not days:
                    _write("session.retention_days is 0 (keep forever): nothing deleted\n")
                    return EXIT_OK
                seconds = days * 86400
            deleted = store.clean(seconds)
            _write("deleted %d session%s\n" % (len(deleted), "" if len(deleted) == 1 else "s"))
    except sessions.SessionError as exc:
        _err(str(exc))
        return EXIT_SESSION
    return EXIT_OK


def _age(ts: str, now: Optional[float] = None) -> str:
    """'just now', '5m ago', '3h ago', '2d ago', or the date, for an RFC 3339 UTC time."""
    import calendar
    import time
    try:
        t = calendar.timegm((int(ts[0:4]), int(ts[5:7]), int(ts[8:10]), int(ts[11:13]),
                             int(ts[14:16]), int(ts[17:19]), 0, 0, 0))
    except (ValueError, TypeError, IndexError):
        return "?"
    secs = (time.time() if now is None else now) - t
    if secs < 60:
        return "just now"
    if secs < 3600:
        return "%dm ago" % (secs // 60)
    if secs < 86400:
        return "%dh ago" % (secs // 3600)
    if secs < 7 * 86400:
        return "%dd ago" % (secs // 86400)
    return ts[:10]


def _cut(text: str, width: int) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= width else text[:width - 1] + "\u2026"


def format_session_table(found, total: int, offset: int) -> str:
    """At most 79 columns: id, backend, status, last used, turns, tokens, title."""
    if not found:
        return "no sessions\n" if not total else "no sessions at offset %d (of %d)\n" % (offset, total)
    import time
    now = time.time()
    lines = ["%-12s %-6s %-9s %-10s %5s %7s  %s" % ("ID", "BACKEND", "STATUS", "LAST USED",
                                                    "TURNS", "TOKENS", "TITLE")]
    for s in found:
        u = s.token_usage or {}
        tokens = (u.get("input_tokens", 0) or 0) + (u.get("output_tokens", 0) or 0)
        lines.append("%-12s %-6s %-9s %-10s %5d %7s  %s" % (
            s.id[:12], s.backend[:7], (s.status or "")[:9], _age(s.last_used, now), s.turn_count,
            _short_count(tokens), _cut(s.title or s.initial_prompt, 21)))
    if total > len(found):
        lines.append("(%d of %d shown; use --limit/--offset)" % (len(found), total))
    return "\n".join(lines) + "\n"


def _short_count(n: int) -> str:
    if n >= 10_000_000:
        return "%dM" % (n // 1_000_000)
    if n >= 100_000:
        return "%dk" % (n // 1000)
    return str(n) if n else "-"


def format_session(s) -> str:
    d = s.to_dict()
    rows = [("ID", d["id"]), ("Backend", d["backend"]), ("Backend session", d.get("backend_session_id")),
            ("Status", d.get("status")), ("Model", d.get("model")), ("Title", d.get("title")),
            ("Working dir", d.get("working_dir")), ("Created", d.get("created_at")),
            ("Last used", "%s (%s)" % (d.get("last_used"), _age(d.get("last_used", "")))),
            ("Turns", d.get("turn_count")), ("Tags", ", ".join(d.get("tags") or [])),
            ("Last error", d.get("last_error"))]
    u = d.get("token_usage") or {}
    rows.append(("Tokens", "%d in, %d out, %d cached, %d reasoning" % (
        u.get("input_tokens", 0), u.get("output_tokens", 0), u.get("cached_tokens", 0),
        u.get("reasoning_tokens", 0))))
    for k, v in sorted((d.get("metadata") or {}).items()):
        rows.append(("meta." + k, v))
    rows.append(("Initial prompt", _cut(d.get("initial_prompt", ""), 200)))
    return "".join("%-16s %s\n" % (k + ":", v) for k, v in rows if v not in (None, "", []))


# -- config ----------------------------------------------------------------------------------


def cmd_config(argv: List[str]) -> int:
    p = Parser(prog="clinvk config", description="Show, set and locate the configuration.")
    sub = p.add_subparsers(dest="action", metavar="ACTION", parser_class=Parser)
    show = sub.add_parser("show", help="every effective value and where it came from")
    show.add_argument("--json", action="store_true")
    st = sub.add_parser("set", help="validate a value and write it to the config file")
    st.add_argument("key", help="dotted key, e.g. backends.claude.model")
    st.add_argument("value")
    pa = sub.add_parser("path", help="the config file in use")
    args, code = _parse_action(p, (show, st, pa), argv)
    if args is None:
        return code
    from . import config
    cfg = load_config(args)
    if args.action == "path":
        _write(cfg.path + "\n")
    elif args.action == "show":
        rows = cfg.rows()
        if args.json:
            _json_out({"path": cfg.path, "settings": [
                {"key": k, "value": v, "source": src} for k, v, src, _meaning in rows]})
        else:
            _write("# %s\n" % cfg.path)
            width = max(len(k) for k, _v, _s, _m in rows)
            for k, v, src, _meaning in rows:
                _write("%-*s  %-28s  (%s)\n" % (width, k, json.dumps(v), src))
    elif args.action == "set":
        try:
            config.set_in_file(cfg.path, args.key, args.value)
        except config.ConfigError as exc:
            raise UsageError(str(exc))
        _write("%s = %s  (written to %s)\n" % (args.key, args.value, cfg.path))
    return EXIT_OK


# -- backends, version ------------------------------------------------------------------------


def cmd_backends(argv: List[str]) -> int:
    p = Parser(prog="clinvk backends", description="Which backends are installed.")
    p.add_argument("--json", action="store_true")
    add_config_flag(p)
    args = _parse(p, argv)
    cfg = load_config(args)
    from .backends.probe import probe_all
    found = probe_all(cfg)
    if args.json:
        _json_out({"backends": found})
    else:
        for b in found:
            state = "installed" if b["available"] else "not installed"
            if not b["enabled"]:
                state += ", disabled"
            _write("%-7s %-22s %s%s\n" % (b["name"], state, b["path"] or "-",
                                          "  (%s)" % b["version"] if b["version"] else ""))
    return EXIT_OK


def cmd_version(argv: List[str]) -> int:
    if argv and argv[0] in ("-h", "--help"):
        _write("usage: clinvk version\n\nPrint the version of clinvk and of Python.\n")
        return EXIT_OK
    _write(version_line())
    return EXIT_OK


# -- commands that live in their own modules ---------------------------------------------------


def cmd_serve(argv: List[str]) -> int:
    from .server.app import serve_command
    return serve_command(argv)


def cmd_mcp(argv: List[str]) -> int:
    from .mcp import mcp_command
    return mcp_command(argv)


def cmd_parallel(argv: List[str]) -> int:
    from .cli_fanout import cmd_parallel as run
    return run(argv)


def cmd_chain(argv: List[str]) -> int:
    from .cli_fanout import cmd_chain as run
    return run(argv)


def cmd_compare(argv: List[str]) -> int:
    from .cli_fanout import cmd_compare as run
    return run(argv)


def run_main() -> None:
    """Entry point: exit with main()'s code; a bug prints one line, never a traceback."""
    try:
        code = main()
    except Exception as exc:  # noqa: BLE001 - the last line of defence
        if os.environ.get("CLINVK_DEBUG"):
            raise
        _err("internal error: %s: %s (set CLINVK_DEBUG=1 for a traceback)"
             % (type(exc).__name__, exc))
        code = EXIT_FAILED
    try:
        sys.stdout.flush()
    except (BrokenPipeError, OSError):
        _silence_stdout()
    sys.exit(code)
