"""``clinvk workers``: the processes on the shared store (``server.store``) — each
``clinvk worker`` and ``clinvk serve`` — with the backends they can run, their run slots for
jobs and how many are busy, read from their heartbeats."""

from __future__ import annotations

import time
from typing import Any, Dict, List

from ..config import ConfigError
from ..job_queue_redis import list_runners
from ..redisclient import RedisError
from ..shared_store import open_shared_store
from .common import (EXIT_FAILED, EXIT_OK, EXIT_USAGE, Parser, add_config_flag, add_json_flags,
                     err, load_config, parse, wants_json, write, write_json)


def workers_parser() -> Parser:
    """The parser of ``clinvk workers``."""
    p = Parser(prog="clinvk workers", description="The processes running jobs on the shared "
               "store (server.store): backends, run slots, busy, last heartbeat.")
    p.add_argument("--store", metavar="URL", help="redis://[user:password@]host:port/db or "
                   "rediss:// (default: server.store)")
    add_config_flag(p)
    add_json_flags(p)
    return p


def workers_command(argv: List[str]) -> int:
    """``clinvk workers [--store URL] [--json]``."""
    args = parse(workers_parser(), argv)
    cfg = load_config(args, {"server.store": args.store})
    try:
        client = open_shared_store(cfg)
    except ConfigError as exc:
        err(str(exc))
        return EXIT_USAGE
    if client is None:
        err("no shared store: give --store redis://HOST:6379/0 (or set server.store)")
        return EXIT_USAGE
    try:
        runners = list_runners(client)
    except RedisError as exc:
        err(str(exc))
        return EXIT_FAILED
    if wants_json(args):
        write_json({"workers": runners})
    else:
        write(format_runner_table(runners, time.time()))
    return EXIT_OK


def format_runner_table(runners: List[Dict[str, Any]], now: float) -> str:
    """One line per process: id, worker name, run slots for jobs, busy, seconds since its
    heartbeat, backends."""
    if not runners:
        return "no workers\n"
    rows = [("ID", "WORKER", "CAPACITY", "BUSY", "SEEN", "BACKENDS")]
    rows += [(r["id"], r["worker"] or "-", str(r["capacity"]), str(r["busy"]),
              "%ds ago" % max(0, int(now - r["seen"])), ",".join(r["backends"]) or "none")
             for r in runners]
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:5], widths)) + "  " + r[5] for r in rows]
    return "\n".join(lines) + "\n"
