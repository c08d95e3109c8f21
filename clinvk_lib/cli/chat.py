"""``clinvk chat``: an interactive session in the terminal.

A prompt line (with history on the arrow keys where the ``readline`` module exists), the live
view of ``live`` for each answer, and every turn continuing the same session, until ``/backend``
or ``/new`` starts another. Ctrl-C while an answer runs stops that answer (the backend's whole
process group) and keeps the chat and its session; Ctrl-C at the prompt clears the line;
Ctrl-D, ``/quit`` or ``/exit`` leave. ``clinvk`` with no prompt on a terminal starts it too.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import difflib
import os
import signal
import sys
import threading
from typing import Any, Iterator, List, Optional

from .. import execute, render
from ..backends import base
from ..config import Config
from ..session_record import SessionError
from ..sessions import SessionStore
from . import live
from .common import (EXIT_OK, Parser, UsageError, add_quiet_flag, add_run_flags, err,
                     load_config, open_store, parse, write)
from .run import print_text, request_from_args

HISTORY_FILE = "chat_history"     # under the clinvk home, mode 0600: prompts can be private
HISTORY_LENGTH = 1000             # lines kept

HELP = """commands:
  /backend NAME   switch to backend NAME (a new session on it); alone: the current one
  /model NAME     the model for the next turns (/model default: the backend's own)
  /new            start a new session on the same backend
  /sessions       the most recent sessions
  /help           this list
  /quit           leave (also /exit, or Ctrl-D)
Ctrl-C stops an answer and keeps the chat. A line starting with // sends the rest from /.
"""
COMMAND_NAMES = ("/backend", "/model", "/new", "/sessions", "/help", "/quit", "/exit")


def chat_parser() -> Parser:
    """The parser of ``clinvk chat``."""
    p = Parser(prog="clinvk chat", description="An interactive session in the terminal: each "
               "line you type is a turn of one session, its answer shown as it streams.",
               epilog=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_flags(p)
    add_quiet_flag(p)
    return p


def chat_command(argv: List[str]) -> int:
    """``clinvk chat [flags]``."""
    return chat_from_args(parse(chat_parser(), argv))


def starts_instead(args: argparse.Namespace) -> bool:
    """True when the root command (``clinvk [flags]``) got no prompt but runs in a terminal
    and asks for nothing a chat cannot do (JSON output, an ephemeral run, -c, a dry run):
    then the chat starts instead of a usage error."""
    return (args.prompt is None and _interactive()
            and args.output_format in (None, "text") and not args.ephemeral
            and not args.continue_last and not args.dry_run)


def chat_from_args(args: argparse.Namespace) -> int:
    """Run the chat with the run flags in ``args``; its exit code (0 when left)."""
    if not _interactive():
        raise UsageError("chat needs a terminal (stdin and stdout); to send one "
                         "prompt: clinvk \"PROMPT\", or echo PROMPT | clinvk")
    cfg = load_config(args, {"default_backend": args.backend} if args.backend else {})
    return Chat(args, cfg, open_store(cfg)).loop()


def _interactive() -> bool:
    return live.on_terminal() and sys.stdin is not None and sys.stdin.isatty()


class Chat:
    """One chat: its backend, model and current session, and the loop that reads lines."""

    def __init__(self, args: argparse.Namespace, cfg: Config, store: SessionStore) -> None:
        self.args = args
        self.cfg = cfg
        self.store = store
        self.backend = args.backend or cfg.get("default_backend") or "claude"
        self.model = args.model or ""
        self.session_id = ""          # ours; "" means the next turn starts a new session
        self.color = live.use_color(cfg)
        self.quiet = bool(getattr(args, "quiet", False))

    def loop(self) -> int:
        err("chat on %s: a new session. /help for commands; Ctrl-C stops an answer, "
            "Ctrl-D leaves." % self.backend)
        with _history(os.path.join(self.cfg.home, HISTORY_FILE)):
            while True:
                try:
                    line = input(self.prompt())
                except EOFError:
                    write("\n")
                    return EXIT_OK
                except KeyboardInterrupt:
                    write("\n")       # like a shell: the line is dropped, the chat goes on
                    continue
                line = line.strip()
                if not line:
                    continue
                if line.startswith("/") and not line.startswith("//"):
                    if not self.command(line):
                        return EXIT_OK
                    continue
                self.turn(line[1:] if line.startswith("//") else line)

    def prompt(self) -> str:
        """The prompt line: the backend, and the model when one was chosen."""
        return "%s%s> " % (self.backend, " (%s)" % self.model if self.model else "")

    # -- commands ----------------------------------------------------------------------------

    def command(self, line: str) -> bool:
        """Do the /command of ``line``; False when the chat should end."""
        name, _, rest = line.partition(" ")
        rest = rest.strip()
        if name in ("/quit", "/exit"):
            return False
        if name == "/help":
            write(HELP)
        elif name == "/new":
            self.session_id = ""
            err("the next prompt starts a new session on %s" % self.backend)
        elif name == "/backend":
            self.switch_backend(rest)
        elif name == "/model":
            self.set_model(rest)
        elif name == "/sessions":
            self.show_sessions()
        else:
            close = difflib.get_close_matches(name, COMMAND_NAMES, n=1)
            err("unknown command %s%s; /help lists them (to send it as a prompt: /%s)"
                % (name, " (did you mean %s?)" % close[0] if close else "", line))
        return True

    def switch_backend(self, name: str) -> None:
        if not name:
            err("backend: %s (choose one of: %s)" % (self.backend, ", ".join(base.NAMES)))
            return
        if name not in base.NAMES:
            close = difflib.get_close_matches(name, base.NAMES, n=1)
            err("unknown backend %r%s (choose one of: %s)" % (
                name, "; did you mean %r?" % close[0] if close else "", ", ".join(base.NAMES)))
            return
        if not self.cfg.backend_enabled(name):
            err("backend %r is disabled in the configuration (backends.%s.enabled: false)"
                % (name, name))
            return
        backend = base.get(name)
        if backend.find_executable() is None:
            err("backend %r is not installed (no %r on PATH)" % (name, backend.executable))
            return
        self.backend, self.model, self.session_id = name, "", ""
        err("switched to %s: the next prompt starts a new session" % name)

    def set_model(self, name: str) -> None:
        if not name:
            err("model: %s" % (self.model or "the backend's default"))
            return
        self.model = "" if name == "default" else name
        err("model for the next turns: %s" % (self.model or "the backend's default"))

    def show_sessions(self) -> None:
        found, total = self.store.list(limit=10)
        write(render.format_session_table(found, total, 0))
        if self.session_id:
            write("this chat: session %s\n" % self.session_id)

    # -- one turn ----------------------------------------------------------------------------

    def turn(self, prompt: str) -> None:
        """Send ``prompt`` as the next turn; its answer is shown live. Errors are shown and
        the chat goes on."""
        args = copy.copy(self.args)
        args.backend = "" if self.session_id else self.backend
        args.model = self.model
        args.ephemeral = False
        request = request_from_args(args, prompt, self.session_id)
        try:
            prepared = execute.prepare(request, self.cfg, self.store, stream=True)
        except execute.ExecError as exc:
            err(str(exc))
            return
        for warning in prepared.warnings:
            err("warning: %s" % warning)
        if prepared.dry_run:
            write(render.dry_run_text(prepared.describe()))
            return
        cancel = execute.Cancel()
        try:
            with _ctrl_c_cancels(cancel):
                outcome = live.run_live(prepared, self.store, self.color,
                                        live.detail_of(self.quiet, prepared.opts.verbose), cancel)
        except execute.ExecError as exc:
            err(str(exc))
            return
        self.after(outcome)

    def after(self, outcome: execute.Outcome) -> None:
        """Report how the turn ended and decide what the next one continues."""
        resumable = bool(outcome.session_id) and self._resumable(outcome.session_id)
        if resumable:
            self.session_id = outcome.session_id
        if outcome.cancelled:
            err("stopped; %s" % ("the session goes on with the next prompt" if resumable else
                                 "the next prompt starts a new session"))
            return
        print_text(outcome, self.cfg, streamed=True)
        if not resumable:
            err("%s reported no session to continue: the next prompt starts a new one"
                % self.backend)

    def _resumable(self, session_id: str) -> bool:
        try:
            return bool(self.store.get(session_id).backend_session_id)
        except SessionError:        # gone or unreadable since: not resumable
            return False


@contextlib.contextmanager
def _ctrl_c_cancels(cancel: execute.Cancel) -> Iterator[None]:
    """While inside, Ctrl-C stops the run ``cancel`` belongs to instead of raising
    KeyboardInterrupt. The firing runs on a thread of its own: the handler may interrupt the
    main thread while it holds the lock ``fire`` takes."""
    def handler(signum: int, frame: Any) -> None:
        threading.Thread(target=cancel.fire, name="clinvk-cancel", daemon=True).start()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def _history(path: str) -> Iterator[None]:
    """The arrow keys' history from ``path`` while inside, saved back there (mode 0600, at
    most HISTORY_LENGTH lines) when left. Nothing when this Python has no ``readline``."""
    readline = _readline()
    if readline is None:
        yield
        return
    readline.set_history_length(HISTORY_LENGTH)
    try:
        readline.read_history_file(path)
    except OSError:
        pass                        # none yet, or unreadable: start without
    try:
        yield
    finally:
        _save_history(readline, path)


def _readline() -> Optional[Any]:
    try:
        import readline             # optional: not built into every Python (Windows, some builds)
    except ImportError:
        return None
    return readline


def _save_history(readline: Any, path: str) -> None:
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        # Created 0600 before readline writes it (readline would use the umask).
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        os.chmod(path, 0o600)
        readline.write_history_file(path)
    except OSError as exc:
        err("warning: chat history not saved to %s: %s" % (path, exc.strerror or exc))
