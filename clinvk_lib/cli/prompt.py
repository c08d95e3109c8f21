"""The root command, ``clinvk [flags] PROMPT``, and ``clinvk resume``: one prompt on one
backend, in a new session or continuing one."""

from __future__ import annotations

import os
from typing import List

from .. import version_line
from .common import (EXIT_OK, EXIT_SESSION, Parser, UsageError, add_output_flag,
                     add_run_flags, err, load_config, open_store, parse, read_prompt,
                     root_parser, write)
from .run import run_prompt


def prompt_command(argv: List[str]) -> int:
    """``clinvk [flags] PROMPT``."""
    args = parse(root_parser(), argv)
    if args.version:
        write(version_line())
        return EXIT_OK
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
    if args.continue_last or (cfg.get("session.auto_resume") and not args.ephemeral):
        here = os.path.realpath(args.workdir) if args.workdir else os.getcwd()
        last = store.last(args.backend or
                          (None if args.continue_last else cfg.get("default_backend")),
                          None if args.continue_last else here)
        if last is None and args.continue_last:
            err("no resumable session found%s; start one with: clinvk %s\"PROMPT\""
                % (" for backend %s" % args.backend if args.backend else "",
                   "-b %s " % args.backend if args.backend else ""))
            return EXIT_SESSION
        session_id = last.id if last else ""
    return run_prompt(args, cfg, store, prompt, session_id)


def resume_command(argv: List[str]) -> int:
    """``clinvk resume (ID | --last) [PROMPT]``."""
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
    args = parse(p, argv)
    cfg = load_config(args)
    store = open_store(cfg)
    words = list(args.words)
    if args.last:
        s = store.last(args.backend or None, os.getcwd() if args.here else None)
        if s is None:
            err("no resumable session found%s%s"
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
    prompt = read_prompt(words[0] if words else None)
    args.workdir = ""
    args.ephemeral = False
    # A session names its own backend: -b only filters --last.
    args.backend = ""
    return run_prompt(args, cfg, store, prompt, session_id)
