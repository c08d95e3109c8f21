"""The terminal front end's composition root: ``clinvk [flags] PROMPT``, the commands in
``COMMANDS``, and ``clinvk help`` and ``clinvk version``.

The root command takes a prompt, so the first positional word decides: a command name runs
that command, a lone word that looks like a mistyped command is refused (exit 2, with what
was meant), anything else is a prompt (``clinvk -- version`` sends the word "version").
Each command's module is imported only when that command runs. Exit codes are the
``EXIT_*`` constants of ``common``; no traceback ever reaches the user.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any, Callable, Dict, List, Optional

from .. import version_line
from ..argparser import suggestion
from .commands import COMMANDS, HELP_TOPICS, HIDDEN_COMMANDS, ROOT_COMMAND, entry_point
from .common import (EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, ROOT_VALUE_FLAGS,
                     HelpShown, Interrupted, UsageError, err, root_parser, silence_stdout, write)
from .pager import page

# Words people type as commands that are not clinvk's: refused like a typo, with the command
# they most likely meant (a one-word prompt still goes through after --).
MEANT = {
    "list": ("sessions list",), "ls": ("sessions list",), "history": ("sessions list",),
    "show": ("sessions show ID", "config show"), "delete": ("sessions delete ID",),
    "rm": ("sessions delete ID",), "clean": ("sessions clean",),
    "status": ("sessions list", "backends"), "set": ("config set KEY VALUE",),
    "path": ("config path",), "modes": ("help modes",), "settings": ("help config",),
    "server": ("serve",), "continue": ("-c PROMPT", "resume --last PROMPT"),
}


def first_positional(argv: List[str]) -> int:
    """Index of the first word of argv that is not a flag or a flag's value (the command
    word, or the prompt), or -1 when there is none before ``--``."""
    i = 0
    while i < len(argv):
        tok = argv[i]
        if tok == "--":
            return -1
        if tok.startswith("-") and tok != "-":
            i += 2 if (tok in ROOT_VALUE_FLAGS) else 1
            continue
        return i
    return -1


def command_names() -> List[str]:
    """Every command name, the built-in ones included."""
    return list(COMMANDS) + list(BUILT_IN)


def check_not_a_mistyped_command(word: str) -> None:
    """UsageError when a one-word prompt looks like a command: a name within a small edit
    distance of a command's (``verison``, ``sesions``, ``backend``) or a word other tools use
    as a command (``status``, ``list``). Such a word would start a real agent run, with its
    cost and side effects, where the user wanted clinvk to do something else."""
    folded = word.lower()
    if not folded.isascii() or not folded.replace("-", "").isalpha():
        return
    meant = MEANT.get(folded) or tuple(name for name in command_names()
                                       if name != folded and _close(folded, name))
    if folded in COMMANDS or folded in BUILT_IN:
        meant = (folded,)           # a command name in another case (Version)
    if meant:
        raise UsageError('unknown command "%s" — did you mean %s? (to send it as a prompt: '
                         'clinvk -- %s)' % (word, " or ".join('"%s"' % m for m in meant), word))


def _close(word: str, name: str) -> bool:
    """True when ``word`` reads as a typo of ``name``. A long name allows two edits but not
    of its first letter ("again" is a prompt, not "chain"); a short one allows a letter
    added, dropped or swapped, not replaced ("that", "held" are prompts, not "chat", "help")."""
    if len(word) < 3:
        return False
    if len(name) >= 5:
        return word[0] == name[0] and edit_distance(word, name) <= 2
    replaced = len(word) == len(name) and sorted(word) != sorted(name)
    return not replaced and edit_distance(word, name) <= 1


def edit_distance(a: str, b: str) -> int:
    """Edits (insert, delete, substitute, swap two neighbours) that turn ``a`` into ``b``
    (optimal string alignment distance)."""
    prev2: List[int] = []
    prev = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        row = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            row[j] = min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                row[j] = min(row[j], prev2[j - 2] + 1)
        prev2, prev = prev, row
    return prev[len(b)]


def dispatch(argv: List[str]) -> int:
    """Run the command ``argv`` names, else the root command (a prompt). With no arguments
    at all: the help on a terminal, else the prompt from stdin. Flags before the command word
    are read as that command's flags (``clinvk --config X sessions list``)."""
    if not argv and _stdin_is_terminal() and not sys.stdout.isatty():
        return help_command([])     # on a whole terminal, the root command starts the chat
    if argv and argv[0] in HIDDEN_COMMANDS:
        return entry_point(HIDDEN_COMMANDS[argv[0]])(argv[1:])
    idx = first_positional(argv)
    if idx < 0 or (argv[idx] not in COMMANDS and argv[idx] not in BUILT_IN):
        if idx >= 0:
            check_not_a_mistyped_command(argv[idx])
        return entry_point(ROOT_COMMAND)(argv)
    command = argv[idx]
    rest = argv[idx + 1:]
    before = argv[:idx]
    if before:
        # The flags before the command go before its own "--" (after it they would be text).
        cut = rest.index("--") if "--" in rest else len(rest)
        rest = rest[:cut] + before + rest[cut:]
    if command in BUILT_IN:
        return BUILT_IN[command](rest)
    return entry_point(COMMANDS[command])(rest)


def _stdin_is_terminal() -> bool:
    return sys.stdin is None or sys.stdin.isatty()


def help_command(argv: List[str]) -> int:
    """``clinvk help [TOPIC | COMMAND]``: a reference (``modes``, ``config``), a command's
    help, else the root command's; long text goes through the pager on a terminal."""
    # Flags (``clinvk --config X help``) do not change what help says.
    if argv and argv[0] in HIDDEN_COMMANDS:
        return entry_point(HIDDEN_COMMANDS[argv[0]])(argv[1:])
    idx = first_positional(argv)
    if idx < 0 or argv[idx] == "help":
        root_parser().print_help()
        return EXIT_OK
    topic = argv[idx]
    if topic in HELP_TOPICS:
        from . import helptext  # lazy: start-up (only these references need the tables)
        page(getattr(helptext, HELP_TOPICS[topic])())
        return EXIT_OK
    if topic in COMMANDS or topic in BUILT_IN:
        return dispatch([topic, "--help"])
    known = sorted(HELP_TOPICS) + command_names()
    close = suggestion(topic, known)
    raise UsageError('no help topic "%s"%s; topics: %s; or a command: %s' % (
        topic, '; did you mean "%s"?' % close if close else "", ", ".join(sorted(HELP_TOPICS)),
        ", ".join(command_names())))


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
