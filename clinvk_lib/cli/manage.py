"""The commands about clinvk's own state on disk: ``clinvk sessions`` and ``clinvk config``.

Deleting sessions asks first: on a terminal a y/N question (on stderr), elsewhere only with
``--yes``; ``--dry-run`` lists what would go and deletes nothing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from typing import List, Sequence

from .. import config, render, session_record, sessions
from ..jsontext import dumps_compact
from ..textutil import cut, printable
from .common import (EXIT_OK, EXIT_SESSION, Parser, UsageError, add_backend_flag,
                     add_config_flag, add_json_flags, add_list_flags, add_workdir_flag, err,
                     load_config, open_store, parse_action, wants_json, write, write_json)


# -- sessions ----------------------------------------------------------------------------------


def sessions_parser() -> Parser:
    """The parser of ``clinvk sessions list|show|delete|clean``."""
    p = Parser(prog="clinvk sessions", description="List, show, delete and clean sessions.")
    add_config_flag(p)
    sub = p.add_subparsers(dest="action", metavar="ACTION", parser_class=Parser)
    ls = sub.add_parser("list", help="list sessions, most recent first")
    add_backend_flag(ls, "only this backend's sessions")
    add_workdir_flag(ls, "only the sessions of this directory")
    ls.add_argument("--here", action="store_true",
                    help="only the sessions of the current directory")
    add_list_flags(ls, session_record.STATUSES, session_record.LIST_LIMIT, "sessions")
    show = sub.add_parser("show", help="one session's details and its last reply")
    show.add_argument("id", help="session id or unique prefix")
    add_json_flags(show)
    de = sub.add_parser("delete", help="delete one session (asks first)")
    de.add_argument("id", help="session id or unique prefix")
    _add_deletion_flags(de)
    cl = sub.add_parser("clean", help="delete sessions not used for a while (asks first)")
    cl.add_argument("--older-than", metavar="AGE",
                    help="e.g. 30d, 12h, 2w (default: config session.retention_days)")
    _add_deletion_flags(cl)
    for action in (ls, show, de, cl):
        add_config_flag(action)
    return p


def _add_deletion_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("-y", "--yes", action="store_true",
                   help="do not ask (needed when stdin is not a terminal)")
    p.add_argument("--dry-run", action="store_true",
                   help="list what would be deleted; delete nothing")


def sessions_command(argv: List[str]) -> int:
    """``clinvk sessions list|show|delete|clean``."""
    args, code = parse_action(sessions_parser(), argv)
    if args is None:
        return code
    cfg = load_config(args)
    store = open_store(cfg)
    try:
        if args.action == "list":
            list_sessions(store, args)
        elif args.action == "show":
            show_session(store, args)
        elif args.action == "delete":
            delete_session(store, args)
        elif args.action == "clean":
            clean_sessions(store, cfg, args)
    except session_record.SessionError as exc:
        err(str(exc))
        return EXIT_SESSION
    return EXIT_OK


def list_sessions(store: sessions.SessionStore, args: argparse.Namespace) -> None:
    if args.here and args.workdir:
        raise UsageError("sessions list: give --here or -w/--workdir, not both")
    workdir = os.getcwd() if args.here else (os.path.realpath(args.workdir)
                                             if args.workdir else None)
    found, total = store.list(backend=args.backend, status=args.status,
                              limit=args.limit or None, offset=args.offset,
                              working_dir=workdir)
    if wants_json(args):
        # Compact: the C encoder is ~10x faster than indent=2 on thousands of sessions.
        write(dumps_compact(render.session_list_json(found, total, args.limit, args.offset))
              + "\n")
    else:
        write(render.format_session_table(found, total, args.offset, _table_width(),
                                          os.path.expanduser("~")))


def _table_width() -> int:
    """The terminal's width when stdout is one, else 80 (a file or a pipe gets stable text)."""
    if not sys.stdout.isatty():
        return 80
    return shutil.get_terminal_size((80, 24)).columns


def show_session(store: sessions.SessionStore, args: argparse.Namespace) -> None:
    s = store.resolve(args.id)
    if wants_json(args):
        write_json(s.to_dict())
    else:
        write(render.format_session(s))


def delete_session(store: sessions.SessionStore, args: argparse.Namespace) -> None:
    s = _resolve_for_deletion(store, args.id)
    if args.dry_run:
        write("would delete session %s\n" % _describe(s))
        return
    if not confirm("delete session %s?" % _describe(s), args.yes, "sessions delete"):
        write("nothing deleted\n")
        return
    # delete() resolves the id itself, so a damaged session file can be removed too.
    write("deleted session %s\n" % store.delete(s.id if s.backend else args.id))


def _resolve_for_deletion(store: sessions.SessionStore,
                          id_or_prefix: str) -> session_record.Session:
    """The session to delete; a damaged file (which only delete() can name) as a bare
    Session with its id and no backend."""
    try:
        return store.resolve(id_or_prefix)
    except (session_record.SessionNotFound, session_record.AmbiguousSession):
        raise
    except session_record.SessionError:
        return session_record.Session(session_record.check_id(id_or_prefix), "",
                                      title="(damaged session file)")


def _describe(s: session_record.Session) -> str:
    """``ID (backend, N turns, last used AGE, in DIR): TITLE`` for a question or a listing."""
    if not s.backend:
        return "%s %s" % (s.id, s.title)
    facts = "%s, %d turn%s, last used %s, in %s" % (
        s.backend, s.turn_count, "" if s.turn_count == 1 else "s", render.age(s.last_used),
        render.short_dir(s.working_dir, 60, os.path.expanduser("~")))
    return "%s (%s): %s" % (s.id, facts, cut(printable(s.title or s.initial_prompt, 200), 60))


def clean_sessions(store: sessions.SessionStore, cfg: config.Config,
                   args: argparse.Namespace) -> None:
    """Delete the sessions unused for ``--older-than`` (else session.retention_days), after
    showing how many and asking (``confirm``); ``--dry-run`` lists them instead."""
    if args.older_than:
        try:
            seconds = session_record.parse_age(args.older_than)
        except ValueError as exc:
            raise UsageError("--older-than: %s" % exc)
        age = args.older_than
    else:
        days = cfg.get("session.retention_days")
        if not days:
            write("session.retention_days is 0 (keep forever): nothing deleted\n")
            return
        seconds, age = days * 86400, "%dd (session.retention_days)" % days
    doomed = store.stale(seconds)
    if args.dry_run or not doomed:
        write(_doomed_text(doomed, age, "would delete" if doomed else "nothing to delete"))
        return
    if not confirm("delete %d session%s not used for %s (list them with --dry-run)?"
                   % (len(doomed), "" if len(doomed) == 1 else "s", age), args.yes,
                   "sessions clean"):
        write("nothing deleted\n")
        return
    deleted = store.clean(seconds, only=[s.id for s in doomed])
    write("deleted %d session%s\n" % (len(deleted), "" if len(deleted) == 1 else "s"))


def _doomed_text(doomed: Sequence[session_record.Session], age: str, verb: str) -> str:
    head = "%s: %d session%s not used for %s\n" % (verb, len(doomed),
                                                   "" if len(doomed) == 1 else "s", age)
    return head + "".join("  %s\n" % _describe(s) for s in doomed)


def confirm(question: str, yes: bool, command: str) -> bool:
    """True when the user agrees: ``yes`` (``--yes``), or "y" to ``question`` asked on a
    terminal (anything else is no). Without a terminal to ask on, a UsageError saying to add
    --yes: a script must say what it wants."""
    if yes:
        return True
    if sys.stdin is None or not sys.stdin.isatty() or not sys.stderr.isatty():
        raise UsageError("%s: not deleting without confirmation: stdin is not a terminal, so "
                         "nobody can answer; add --yes to delete, or --dry-run to see what "
                         "would go" % command)
    sys.stderr.write("%s [y/N] " % question)
    sys.stderr.flush()
    return sys.stdin.readline().strip().lower() in ("y", "yes")


# -- config ------------------------------------------------------------------------------------


def config_parser() -> Parser:
    """The parser of ``clinvk config show|set|path``."""
    p = Parser(prog="clinvk config", description="Show, set and locate the configuration. "
               "Every setting, with its default and meaning: clinvk help config.")
    add_config_flag(p)
    sub = p.add_subparsers(dest="action", metavar="ACTION", parser_class=Parser)
    show = sub.add_parser("show", help="every effective value and where it came from")
    add_json_flags(show)
    st = sub.add_parser("set", help="validate a value and write it to the config file")
    st.add_argument("key", help="dotted key, e.g. backends.claude.model")
    st.add_argument("value")
    pa = sub.add_parser("path", help="the config file in use")
    for action in (show, st, pa):
        add_config_flag(action)
    return p


def config_command(argv: List[str]) -> int:
    """``clinvk config show|set|path``."""
    args, code = parse_action(config_parser(), argv)
    if args is None:
        return code
    if args.action == "path":
        # The file in use, read or not: `config path` is how to find where to create it.
        write(config.config_path(args.config) + "\n")
        return EXIT_OK
    cfg = load_config(args)
    if args.action == "show":
        rows = cfg.rows()
        if wants_json(args):
            write_json({"path": cfg.path, "settings": [
                {"key": k, "value": v, "source": src} for k, v, src, _meaning in rows]})
        else:
            write(render.format_settings(cfg.path, rows))
    elif args.action == "set":
        try:
            config.set_in_file(cfg.path, args.key, args.value)
        except config.ConfigError as exc:
            raise UsageError(str(exc))
        # A secret is not echoed: terminals are recorded, shared and scrolled back.
        shown = "****" if config.setting(args.key).secret else args.value
        write("%s = %s  (written to %s)\n" % (args.key, shown, cfg.path))
    return EXIT_OK
