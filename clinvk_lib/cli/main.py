"""The terminal front end's composition root: ``clinvk [flags] PROMPT``, the commands in
``COMMANDS``, and ``clinvk help`` and ``clinvk version``.

The root command takes a prompt, so the first positional word decides: a command name runs
that command, anything else is a prompt (``clinvk -- version`` sends the word "version").
Each command's module is imported only when that command runs. Exit codes are the
``EXIT_*`` constants of ``common``; no traceback ever reaches the user.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
from typing import Any, Callable, Dict, List, Optional

from .. import version_line
from .common import (EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, ROOT_VALUE_FLAGS,
                     HelpShown, Interrupted, UsageError, err, root_parser, silence_stdout, write)

# Every command's entry point as "module:function" (relative to this package), imported when
# the command runs: a prompt never loads the HTTP server, the MCP server or the fan-out engine.
COMMANDS = {
    "resume": ".prompt:resume_command",
    "sessions": ".manage:sessions_command",
    "config": ".manage:config_command",
    "parallel": ".fanout:parallel_command",
    "chain": ".fanout:chain_command",
    "compare": ".fanout:compare_command",
    "backends": ".installed:backends_command",
    "doctor": ".doctor:doctor_command",
    "serve": "..server.serve:serve_command",
    "mcp": "..mcp.command:mcp_command",
}
ROOT_COMMAND = ".prompt:prompt_command"   # clinvk [flags] PROMPT


def entry_point(target: str) -> Callable[[List[str]], int]:
    """The function a ``COMMANDS`` target names, importing its module."""
    module, _, function = target.partition(":")
    return getattr(importlib.import_module(module, __package__), function)


def command_index(argv: List[str]) -> int:
    """Index of the command word in argv, or -1 when the first positional is a prompt."""
    i = 0
    while i < len(argv):
        tok = argv[i]
        if tok == "--":
            return -1
        if tok.startswith("-") and tok != "-":
            i += 2 if (tok in ROOT_VALUE_FLAGS) else 1
            continue
        return i if tok in COMMANDS or tok in BUILT_IN else -1
    return -1


def dispatch(argv: List[str]) -> int:
    """Run the command ``argv`` names (the root command when it names none; its help when
    there is nothing at all)."""
    if not argv:
        return help_command([])
    idx = command_index(argv)
    if idx < 0:
        return entry_point(ROOT_COMMAND)(argv)
    command = argv[idx]
    rest = argv[:idx] + argv[idx + 1:]
    if command in BUILT_IN:
        return BUILT_IN[command](rest)
    return entry_point(COMMANDS[command])(rest)


def help_command(argv: List[str]) -> int:
    """``clinvk help [COMMAND]``: that command's help, else the root command's."""
    if argv and argv[0] != "help" and (argv[0] in COMMANDS or argv[0] in BUILT_IN):
        return dispatch([argv[0], "--help"])
    root_parser().print_help()
    return EXIT_OK


def version_command(argv: List[str]) -> int:
    """``clinvk version``: the version of clinvk and of Python."""
    if argv and argv[0] in ("-h", "--help"):
        write("usage: clinvk version\n\nPrint the version of clinvk and of Python.\n")
        return EXIT_OK
    write(version_line())
    return EXIT_OK


# Commands about clinvk itself, answered here without loading any other module.
BUILT_IN: Dict[str, Callable[[List[str]], int]] = {"help": help_command,
                                                   "version": version_command}


def main(argv: Optional[List[str]] = None) -> int:
    """Run ``argv`` (default: sys.argv[1:]) and return the exit code; SIGTERM is handled
    like Ctrl-C while it runs."""
    argv = list(sys.argv[1:] if argv is None else argv)
    previous = signal.getsignal(signal.SIGTERM)
    try:
        signal.signal(signal.SIGTERM, _raise_interrupted)
    except ValueError:
        previous = None          # not the main thread (tests): leave signals alone
    try:
        return dispatch(argv)
    except HelpShown as h:
        return h.code
    except UsageError as exc:
        err("%s" % exc)
        return EXIT_USAGE
    except (KeyboardInterrupt, Interrupted):
        killed = stop_backends()
        err("interrupted%s" % (" (stopped %d backend process%s)"
                               % (killed, "es" if killed != 1 else "") if killed else ""))
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        silence_stdout()
        return EXIT_OK
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _raise_interrupted(signum: int, frame: Any) -> None:
    raise Interrupted()


def stop_backends() -> int:
    """Kill every backend process group still running; returns how many there were. Every
    command that starts a backend has loaded the runner, which keeps the list; when none has,
    there is nothing to stop, and importing it here would only slow every other command."""
    runner = sys.modules.get("clinvk_lib.runner")
    return runner.kill_all() if runner is not None else 0


def run_main() -> None:
    """Entry point: exit with main()'s code; a bug prints one line, never a traceback."""
    try:
        code = main()
    except Exception as exc:  # noqa: BLE001 - the last line of defence
        if os.environ.get("CLINVK_DEBUG"):
            raise
        err("internal error: %s: %s (set CLINVK_DEBUG=1 for a traceback)"
            % (type(exc).__name__, exc))
        code = EXIT_FAILED
    try:
        sys.stdout.flush()
    except (BrokenPipeError, OSError):
        silence_stdout()
    sys.exit(code)
