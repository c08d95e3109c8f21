"""What every command of the terminal front end shares: exit codes, the argument parser that
raises instead of exiting, the flags and argument types, loading the configuration and the
session store, and writing to stdout and stderr.

Commands raise ``UsageError`` for anything the user typed wrong; ``main`` turns it into
``clinvk: MESSAGE`` and exit code 2. No traceback ever reaches the user.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, TextIO, Tuple

from .. import argparser, config
from ..argparser import UsageError
from ..jsontext import dumps_pretty
from ..backends.base import NAMES
from ..backends.options import APPROVAL_MODES, OUTPUT_FORMATS, PROFILES, SANDBOX_MODES
from .pager import page

if TYPE_CHECKING:
    from ..sessions import SessionStore

EXIT_OK = 0             # the backend answered
EXIT_FAILED = 1         # the backend ran and failed (or reported an error with exit 0)
EXIT_USAGE = 2          # bad flags, arguments, configuration values, workdir or input file
EXIT_NOT_INSTALLED = 3  # the backend's CLI is not on PATH, or the backend is disabled
EXIT_SESSION = 4        # session not found, ambiguous, not resumable, or its transcript is gone
EXIT_NOT_AUTHENTICATED = 5  # the backend's CLI cannot authenticate to its model API
EXIT_TIMEOUT = 124      # --timeout (or server.request_timeout_secs) expired; the run was killed
EXIT_INTERRUPTED = 130  # Ctrl-C or SIGTERM; every backend process group was killed

EXIT_CODES_HELP = """exit codes:
  0    success
  1    the backend ran and failed (or reported an error)
  2    usage error: bad flag, argument, config value, workdir or input file, a
       mistyped command, an empty prompt, a deletion without --yes off a terminal
  3    backend not installed (not on PATH) or disabled in the config
  4    session error: not found, ambiguous prefix, not resumable, transcript gone,
       no session to continue (-c, resume --last)
  5    the backend's CLI is not logged in (or its key was refused); the error says how to fix it
  124  timed out (--timeout); the backend was killed
  130  interrupted (Ctrl-C / SIGTERM); every backend was killed, the session is
       left cancelled"""


class Interrupted(BaseException):
    """SIGTERM arrived; handled like Ctrl-C."""


class HelpShown(Exception):
    """argparse printed help and wanted to exit with ``code``; main() returns that code."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class Parser(argparser.Parser):
    """The shared parser (UsageError instead of exiting, so main() owns every exit code; a
    "did you mean" for a mistyped flag or choice) whose help goes through the pager on a
    terminal."""

    def print_help(self, file: Optional[TextIO] = None) -> None:  # type: ignore[override]
        if file is None:
            page(self.format_help())
        else:
            super().print_help(file)


def parse(parser: argparse.ArgumentParser, argv: List[str]) -> argparse.Namespace:
    """``parser.parse_args(argv)``; ``--help`` raises HelpShown after printing the help."""
    try:
        return parser.parse_args(argv)
    except SystemExit as exc:
        raise HelpShown(exc.code or 0)


def parse_action(parser: argparse.ArgumentParser,
                 argv: List[str]) -> Tuple[Optional[argparse.Namespace], int]:
    """Parse a command with actions (``sessions list``): ``(args, EXIT_OK)``, or ``(None,
    EXIT_USAGE)`` after printing the help when no action was given. Flags written before the
    action word are read as if written after it (``clinvk --config X config show``)."""
    args = parse(parser, flags_after_action(parser, argv))
    if not args.action:
        parser.print_help()
        return None, EXIT_USAGE
    return args, EXIT_OK


def flags_after_action(parser: argparse.ArgumentParser, argv: List[str]) -> List[str]:
    """``argv`` with the flags before the action word moved right after it: argparse gives
    a flag before the action to the command's parser, where the action's own default for
    the same flag would silently replace it."""
    actions = argparser.subcommands(parser)
    parsers = [parser] + list(actions.values())
    i = 0
    while i < len(argv) and argv[i] != "--":
        word = argv[i]
        if word in actions:
            return [word] + argv[:i] + argv[i + 1:]
        if not word.startswith("-") or word == "-":
            break
        i += 2 if any(argparser.takes_value(p, word) for p in parsers) else 1
    return argv


# -- flags and argument types -----------------------------------------------------------------


def add_config_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="PATH",
                   help="config file (default: $CLINVK_CONFIG or ~/.clinvk/config.yaml)")


def add_backend_flag(p: argparse.ArgumentParser, meaning: str) -> None:
    p.add_argument("-b", "--backend", choices=NAMES, help=meaning)


def add_workdir_flag(p: argparse.ArgumentParser, meaning: str) -> None:
    p.add_argument("-w", "--workdir", metavar="DIR", help=meaning)


def add_json_flags(p: argparse.ArgumentParser) -> None:
    """``--json`` and its long form ``-o json`` (``-o text``, the default, is accepted too),
    so the output flag of a run means the same on every command."""
    p.add_argument("--json", action="store_true", help="print JSON (same as -o json)")
    p.add_argument("-o", "--output-format", choices=("text", "json"),
                   help="text (default) or json")


def add_list_flags(p: argparse.ArgumentParser, statuses: Sequence[str], default_limit: int,
                   noun: str) -> None:
    """The flags of a ``list`` action: ``--status``, ``-n/--limit`` (0 = all), ``--offset``
    and the JSON flags."""
    p.add_argument("--status", choices=statuses)
    p.add_argument("-n", "--limit", type=int_at_least(0), default=default_limit,
                   help="at most N %s (default %d; 0 = all)" % (noun, default_limit))
    p.add_argument("--offset", type=int_at_least(0), default=0)
    add_json_flags(p)


def wants_json(args: argparse.Namespace) -> bool:
    """True when ``--json`` or ``-o json`` was given (add_json_flags)."""
    return bool(args.json) or args.output_format == "json"


def int_at_least(minimum: int) -> Callable[[str], int]:
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


def positive_seconds(s: str) -> float:
    """An argparse type: a number of seconds > 0."""
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError("expected a number of seconds, got %r" % s)
    if v <= 0:
        raise argparse.ArgumentTypeError("expected a number of seconds > 0, got %s" % s)
    return v


def add_run_flags(p: argparse.ArgumentParser, backend: bool = True, workdir: bool = True) -> None:
    """The per-run flags shared by the root command, resume, parallel, chain and compare."""
    if backend:
        add_backend_flag(p, "backend (default: config default_backend)")
    p.add_argument("-m", "--model", help="model name passed to the backend")
    if workdir:
        add_workdir_flag(p, "working directory of the backend (default: the current one)")
    p.add_argument("--approval-mode", choices=APPROVAL_MODES,
                   help="what the agent may do without asking (per backend: clinvk help "
                        "modes)")
    p.add_argument("--sandbox-mode", choices=SANDBOX_MODES,
                   help="where the agent may write (per backend: clinvk help modes)")
    p.add_argument("--max-turns", type=int_at_least(0), metavar="N",
                   help="maximum agentic turns (claude only; the others have no such limit)")
    p.add_argument("--system-prompt", metavar="TEXT", help="system prompt for the backend")
    add_profile_flag(p)
    p.add_argument("--timeout", type=positive_seconds, metavar="SECONDS",
                   help="kill the backend after this many seconds (exit code 124)")
    p.add_argument("-v", "--verbose", action="store_true", default=None,
                   help="ask the backend for verbose output; in text mode, show its stderr "
                        "as it is and tool calls in full")
    p.add_argument("--dry-run", action="store_true", default=None,
                   help="print the exact command that would run, run nothing")
    add_config_flag(p)


def add_profile_flag(p: argparse.ArgumentParser) -> None:
    """``--profile agent|chat``: how much of its agent the backend brings to each run."""
    p.add_argument("--profile", choices=PROFILES,
                   help="agent (default): the CLI as it runs by itself; chat: a model, not an "
                        "agent: no tools, settings, project files, MCP servers or skills, a "
                        "short system prompt, one turn, with each CLI's own flags (a "
                        "tool a CLI cannot drop is left to it)")


def add_quiet_flag(p: argparse.ArgumentParser) -> None:
    """``-q``: the live view of a run on a terminal without tool calls nor backend stderr."""
    p.add_argument("-q", "--quiet", action="store_true",
                   help="in text mode, show neither tool calls nor the backend's stderr "
                        "(its warnings still)")


def add_output_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output-format", choices=OUTPUT_FORMATS,
                   help="text (the reply), json (one object) or stream-json (NDJSON events); "
                        "default: config output.format")


# The root command's flags that take a value: the command finder skips their values, so
# `clinvk -m sessions hi` is a prompt, not the sessions command.
ROOT_VALUE_FLAGS = {"-b", "--backend", "-m", "--model", "-w", "--workdir", "-o",
                    "--output-format", "--approval-mode", "--sandbox-mode", "--max-turns",
                    "--system-prompt", "--profile", "--timeout", "--config"}


def root_parser() -> Parser:
    """The root command's parser (``clinvk [flags] PROMPT``); its help, which lists every
    command, is also ``clinvk help``. ROOT_VALUE_FLAGS must name its flags that take a value."""
    p = Parser(
        prog="clinvk",
        usage="clinvk [flags] [--] PROMPT\n       clinvk COMMAND [flags] ...",
        description="Run a prompt on %s with one unified output. " % ", ".join(NAMES) +
                    "The prompt may also come on stdin (echo hi | clinvk -b codex).",
        epilog="commands:\n"
               "  resume     continue a session (ID or prefix, or --last)\n"
               "  sessions   list, show, delete and clean sessions\n"
               "  config     show, set and locate the configuration\n"
               "  parallel   run many tasks at once (--file tasks.json)\n"
               "  chain      run steps in order, {{previous}} = last output\n"
               "  compare    ask several backends the same prompt\n"
               "  backends   which backends are installed\n"
               "  doctor     can each backend run here? (version, login, why not)\n"
               "  serve      HTTP server (native, OpenAI and Anthropic APIs)\n"
               "  jobs       the server's durable jobs: list, show, events, cancel\n"
               "  worker     run the jobs queued on a shared store (server.store)\n"
               "  workers    the processes on the shared store: backends, slots, busy\n"
               "  mcp        MCP server over stdio\n"
               "  completion shell completion script (bash, zsh, fish)\n"
               "  chat       interactive session (also: clinvk with no prompt on a terminal)\n"
               "  version    print the version\n\n"
               "Run 'clinvk COMMAND --help' for a command's flags, 'clinvk help modes' for\n"
               "what each approval and sandbox mode does per backend, 'clinvk help config'\n"
               "for every setting. The flags --config, -b, -w and -o may come before or\n"
               "after a command's name. To send a command's name as the prompt: clinvk -- WORD\n\n"
               + EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("prompt", nargs="?", help="the prompt (default: read from stdin)")
    add_run_flags(p)
    add_output_flag(p)
    p.add_argument("-c", "--continue", dest="continue_last", action="store_true",
                   help="continue the most recent session of this directory (of -b's "
                        "backend when given); it is named on stderr")
    p.add_argument("--any-dir", action="store_true",
                   help="with -c: the most recent session of any directory")
    p.add_argument("--ephemeral", action="store_true",
                   help="store no session, and ask the backend not to persist one")
    add_quiet_flag(p)
    p.add_argument("--version", action="store_true", help="print the version and exit")
    return p


# -- configuration and sessions ---------------------------------------------------------------


def load_config(args: argparse.Namespace, flags: Optional[Dict[str, Any]] = None) -> config.Config:
    """The effective configuration (``--config``, then ``flags`` over it); a bad file or
    value is a UsageError naming it."""
    try:
        return config.load(getattr(args, "config", None), flags=flags or {})
    except config.ConfigError as exc:
        raise UsageError(str(exc))


def open_store(cfg: config.Config) -> SessionStore:
    """The session store: under the configured home (nothing is created before a write), or
    in ``server.store`` when it is set, so the command line sees the sessions every node
    and worker on it sees (its turns record this machine as their worker)."""
    if not cfg.get("server.store"):
        from ..sessions import SessionStore  # lazy: start-up (an ephemeral run never opens it)
        return SessionStore(cfg.home)
    from ..shared_store import open_session_store, open_shared_store  # lazy: start-up
    try:
        return open_session_store(cfg, open_shared_store(cfg))
    except config.ConfigError as exc:
        raise UsageError(str(exc))


def read_prompt(positional: Optional[str], shape_checks_blank: bool = False) -> str:
    """The prompt argument, else all of stdin when it is not a terminal (UTF-8). A prompt
    that is empty or only whitespace is a UsageError: it would start a run for nothing
    (``shape_checks_blank``: the command's shape refuses it, with the words every front end
    uses for it)."""
    if positional is not None:
        if not positional.strip() and not shape_checks_blank:
            raise UsageError("the prompt is empty%s: give the text to send, e.g. clinvk "
                             "\"explain this repository\"" % (" (only whitespace)"
                                                              if positional else ""))
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
        raise UsageError("the prompt on stdin is empty%s: pipe the text to send, e.g. echo "
                         "\"explain this\" | clinvk" % (" (only whitespace)" if text else ""))
    return text


# -- output -----------------------------------------------------------------------------------


def write(text: str) -> None:
    """Write to stdout now (a reader of a pipe sees each piece as it comes)."""
    sys.stdout.write(text)
    sys.stdout.flush()


def write_json(obj: Any) -> None:
    """``obj`` as indented JSON on stdout."""
    write(dumps_pretty(obj))


def err(msg: str) -> None:
    """``clinvk: MSG`` on stderr."""
    sys.stderr.write("clinvk: %s\n" % msg)
    sys.stderr.flush()


def silence_stdout() -> None:
    """Point stdout at /dev/null: its reader is gone, and a later flush must not fail."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
