"""The commands about clinvk's own state on disk: ``clinvk sessions`` and ``clinvk config``."""

from __future__ import annotations

import argparse
from typing import List

from .. import config, render, session_record, sessions
from ..jsontext import dumps_compact
from .common import (EXIT_OK, EXIT_SESSION, Parser, UsageError, err, int_at_least,
                     load_config, open_store, parse_action, write, write_json)


# -- sessions ----------------------------------------------------------------------------------


def sessions_command(argv: List[str]) -> int:
    """``clinvk sessions list|show|delete|clean``."""
    p = Parser(prog="clinvk sessions", description="List, show, delete and clean sessions.")
    sub = p.add_subparsers(dest="action", metavar="ACTION", parser_class=Parser)
    ls = sub.add_parser("list", help="list sessions, most recent first")
    ls.add_argument("-b", "--backend")
    ls.add_argument("--status", choices=session_record.STATUSES)
    ls.add_argument("-n", "--limit", type=int_at_least(0), default=session_record.LIST_LIMIT,
                    help="at most N sessions (default %d; 0 = all)" % session_record.LIST_LIMIT)
    ls.add_argument("--offset", type=int_at_least(0), default=0)
    ls.add_argument("--json", action="store_true", help="JSON: {sessions, total, limit, offset}")
    show = sub.add_parser("show", help="one session's details")
    show.add_argument("id", help="session id or unique prefix")
    show.add_argument("--json", action="store_true")
    de = sub.add_parser("delete", help="delete one session")
    de.add_argument("id", help="session id or unique prefix")
    cl = sub.add_parser("clean", help="delete sessions not used for a while")
    cl.add_argument("--older-than", metavar="AGE",
                    help="e.g. 30d, 12h, 2w (default: config session.retention_days)")
    args, code = parse_action(p, (ls, show, de, cl), argv)
    if args is None:
        return code
    cfg = load_config(args)
    store = open_store(cfg)
    try:
        if args.action == "list":
            list_sessions(store, args)
        elif args.action == "show":
            s = store.resolve(args.id)
            if args.json:
                write_json(s.to_dict())
            else:
                write(render.format_session(s))
        elif args.action == "delete":
            # delete() resolves the id itself, so a damaged session file can be removed too.
            write("deleted session %s\n" % store.delete(args.id))
        elif args.action == "clean":
            clean_sessions(store, cfg, args.older_than)
    except session_record.SessionError as exc:
        err(str(exc))
        return EXIT_SESSION
    return EXIT_OK


def list_sessions(store: sessions.SessionStore, args: argparse.Namespace) -> None:
    found, total = store.list(backend=args.backend, status=args.status,
                              limit=args.limit or None, offset=args.offset)
    if args.json:
        # Compact: the C encoder is ~10x faster than indent=2 on thousands of sessions.
        write(dumps_compact(render.session_list_json(found, total, args.limit, args.offset))
              + "\n")
    else:
        write(render.format_session_table(found, total, args.offset))


def clean_sessions(store: sessions.SessionStore, cfg: config.Config, older_than: str) -> None:
    """Delete the sessions unused for ``older_than`` (else session.retention_days)."""
    if older_than:
        try:
            seconds = session_record.parse_age(older_than)
        except ValueError as exc:
            raise UsageError("--older-than: %s" % exc)
    else:
        days = cfg.get("session.retention_days")
        if not days:
            write("session.retention_days is 0 (keep forever): nothing deleted\n")
            return
        seconds = days * 86400
    deleted = store.clean(seconds)
    write("deleted %d session%s\n" % (len(deleted), "" if len(deleted) == 1 else "s"))


# -- config ------------------------------------------------------------------------------------


def config_command(argv: List[str]) -> int:
    """``clinvk config show|set|path``."""
    p = Parser(prog="clinvk config", description="Show, set and locate the configuration.")
    sub = p.add_subparsers(dest="action", metavar="ACTION", parser_class=Parser)
    show = sub.add_parser("show", help="every effective value and where it came from")
    show.add_argument("--json", action="store_true")
    st = sub.add_parser("set", help="validate a value and write it to the config file")
    st.add_argument("key", help="dotted key, e.g. backends.claude.model")
    st.add_argument("value")
    pa = sub.add_parser("path", help="the config file in use")
    args, code = parse_action(p, (show, st, pa), argv)
    if args is None:
        return code
    cfg = load_config(args)
    if args.action == "path":
        write(cfg.path + "\n")
    elif args.action == "show":
        rows = cfg.rows()
        if args.json:
            write_json({"path": cfg.path, "settings": [
                {"key": k, "value": v, "source": src} for k, v, src, _meaning in rows]})
        else:
            write(render.format_settings(cfg.path, rows))
    elif args.action == "set":
        try:
            config.set_in_file(cfg.path, args.key, args.value)
        except config.ConfigError as exc:
            raise UsageError(str(exc))
        write("%s = %s  (written to %s)\n" % (args.key, args.value, cfg.path))
    return EXIT_OK
