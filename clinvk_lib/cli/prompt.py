"""The root command, ``clinvk [flags] PROMPT``, and ``clinvk resume``: one prompt on one
backend, in a new session or continuing one."""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING, List, Optional

from .. import render, version_line
from ..session_record import Session
from .common import (EXIT_OK, EXIT_SESSION, Parser, UsageError, add_output_flag,
                     add_quiet_flag, add_run_flags, add_workdir_flag, err, load_config,
                     open_store, parse, read_prompt, root_parser, write)
from .run import run_prompt

if TYPE_CHECKING:
    from ..sessions import SessionStore


def prompt_command(argv: List[str]) -> int:
    """``clinvk [flags] PROMPT``."""
    args = parse(root_parser(), argv)
    if args.version:
        write(version_line())
        return EXIT_OK
    if args.prompt is None:
        from . import chat      # lazy: start-up (a prompt given never needs the chat)
        if chat.starts_instead(args):
            return chat.chat_from_args(args)
    flags = {}
    if args.backend:
        flags["default_backend"] = args.backend
    if args.output_format:
        flags["output.format"] = args.output_format
    cfg = load_config(args, flags)
    prompt = read_prompt(args.prompt)
    # An ephemeral run that continues nothing never touches the session store.
    store = None if args.ephemeral and not args.continue_last else open_store(cfg)
    session_id = ""
    here = os.path.realpath(args.workdir) if args.workdir else os.getcwd()
    if args.continue_last:
        session_id = _last_session_id(store, args, here)
        if not session_id:
            return EXIT_SESSION
    elif cfg.get("session.auto_resume") and not args.ephemeral:
        # Only a session of the same backend and directory: never another project's.
        last = store.last(cfg.get("default_backend"), here)
        if last is not None:
            announce(last)
            session_id = last.id
    return run_prompt(args, cfg, store, prompt, session_id)


def pick_last(store: SessionStore, backend: str, workdir: Optional[str]) -> Session:
    """The most recent resumable session of ``backend`` ("" = any) in ``workdir`` (None =
    any directory), named on stderr (``announce``); a more recent session there that cannot
    be resumed is named too, so nothing is skipped silently. NoSession when there is none,
    saying what there is instead."""
    chosen = store.last(backend or None, workdir)
    newest = store.list(backend=backend or None, working_dir=workdir, limit=1)[0]
    skipped = newest[0] if newest and (chosen is None or newest[0].id != chosen.id) else None
    if chosen is None:
        raise NoSession(_no_session_message(store, backend, workdir, skipped))
    if skipped is not None:
        err("note: skipping the more recent session %s" % _cannot_resume(skipped))
    announce(chosen)
    return chosen


def _cannot_resume(s: Session) -> str:
    return "%s (%s, %s), which cannot be resumed: %s" % (
        s.id[:8], s.backend, s.status, s.last_error or "%s never reported its session"
        % s.backend)


def announce(s: Session) -> None:
    """Say on stderr which session a run continues: id, backend, turns, directory."""
    err("continuing session %s (%s, %d turn%s, last used %s) in %s"
        % (s.id[:8], s.backend, s.turn_count, "" if s.turn_count == 1 else "s",
           render.age(s.last_used), s.working_dir))


def _no_session_message(store: SessionStore, backend: str, workdir: Optional[str],
                        newest: Optional[Session]) -> str:
    where = " in %s" % workdir if workdir else ""
    what = "%s session" % backend if backend else "session"
    if newest is not None:
        where += " (the latest is %s)" % _cannot_resume(newest)
    other = store.last(None, workdir) if backend else None
    if other is not None:
        return ("no resumable %s%s; the most recent one%s is %s's %s: continue it with "
                "clinvk resume %s" % (what, where, " there" if workdir else "",
                                      other.backend, other.id[:8], other.id[:8]))
    wider = "; look in every directory with --any-dir" if workdir and store.last(
        backend or None, None) is not None else ""
    return "no resumable %s%s%s; start one with: clinvk %s\"PROMPT\"" % (
        what, where, wider, "-b %s " % backend if backend else "")


class NoSession(Exception):
    """No session to continue; the message says what there is instead."""


def resume_parser() -> Parser:
    """The parser of ``clinvk resume (ID | --last) [PROMPT]``."""
    p = Parser(prog="clinvk resume", description="Continue a session in the backend's own "
               "conversation, so the model sees the history. --last picks the most recent "
               "session of the current directory and names it on stderr.",
               usage="clinvk resume [flags] (ID | --last) [--] [PROMPT]")
    p.add_argument("words", nargs="*", metavar="ID PROMPT",
                   help="session id (or unique prefix) and the prompt (default: stdin)")
    p.add_argument("--last", action="store_true",
                   help="the most recent session of this directory (of -b's backend when "
                        "given)")
    p.add_argument("--any-dir", action="store_true",
                   help="with --last: the most recent session of any directory")
    # The default now; kept so that scripts written for the older meaning keep working.
    p.add_argument("--here", action="store_true", help=argparse.SUPPRESS)
    add_run_flags(p, workdir=False)
    add_workdir_flag(p, "with --last: the directory whose sessions to look in (default: the "
                        "current one; a resumed session runs in its own directory)")
    add_output_flag(p)
    add_quiet_flag(p)
    return p


def resume_command(argv: List[str]) -> int:
    """``clinvk resume (ID | --last) [PROMPT]``."""
    args = parse(resume_parser(), argv)
    cfg = load_config(args)
    store = open_store(cfg)
    words = list(args.words)
    if args.last:
        if args.here and args.any_dir:
            raise UsageError("resume: give --here or --any-dir, not both")
    else:
        if not words:
            raise UsageError("resume: give a session ID (see: clinvk sessions list) or --last")
        if args.workdir or args.any_dir:
            raise UsageError("resume: -w/--workdir and --any-dir choose among sessions with "
                             "--last; a session given by its ID runs in its own directory")
        session_id = words.pop(0)
    if len(words) > 1:
        raise UsageError("resume: too many arguments; quote the prompt as one argument")
    # The prompt is checked before a session is picked: a usage error names no session.
    prompt = read_prompt(words[0] if words else None)
    if args.last:
        session_id = _last_session_id(
            store, args, os.path.realpath(args.workdir) if args.workdir else os.getcwd())
        if not session_id:
            return EXIT_SESSION
    args.workdir = ""
    args.ephemeral = False
    # A session names its own backend: -b only filters --last.
    args.backend = ""
    return run_prompt(args, cfg, store, prompt, session_id)


def _last_session_id(store: SessionStore, args: argparse.Namespace, here: str) -> str:
    """The id of the session `-c` / `resume --last` continue: the newest of ``args.backend``
    (any backend when none) in ``here``, or anywhere with ``--any-dir``; "" after saying on
    stderr that there is none."""
    try:
        return pick_last(store, args.backend or "", None if args.any_dir else here).id
    except NoSession as exc:
        err(str(exc))
        return ""
