"""``clinvk jobs list|show|events|cancel``: the durable jobs of the servers that share this
CLINVK_HOME (or ``server.store``, when set), read from its job store, so an operator can see what a server is doing (and stop
a job) without an API key. The command line sees every job, as it sees every session.

A job a live server runs is cancelled by flagging it in the store: that server stops it within
a second or so (this command waits for it to end). A queued job ends at once; a running job
whose server is gone ends here.
"""

from __future__ import annotations

import argparse
import time
from typing import Any, Dict, List

from .. import job_store
from ..config import ConfigError
from ..shared_store import open_job_store, open_shared_store
from ..jsontext import dumps_compact
from ..textutil import cut, printable
from .common import (EXIT_FAILED, EXIT_OK, EXIT_USAGE, Parser, add_config_flag, add_json_flags,
                     add_list_flags, err, int_at_least, load_config, parse_action, wants_json,
                     write, write_json)

# How long ``cancel`` waits for the server running a job to stop it.
CANCEL_WAIT_SECS = 15.0
POLL_SECS = 0.25


def jobs_parser() -> Parser:
    """The parser of ``clinvk jobs list|show|events|cancel``."""
    p = Parser(prog="clinvk jobs", description="The durable jobs of the servers using this "
               "CLINVK_HOME (POST /api/v1/jobs): list, show, events, cancel.")
    add_config_flag(p)
    sub = p.add_subparsers(dest="action", metavar="ACTION", parser_class=Parser)
    ls = sub.add_parser("list", help="list jobs, newest first")
    ls.add_argument("--kind", choices=job_store.ALL_KINDS)
    add_list_flags(ls, job_store.STATUSES, job_store.LIST_LIMIT, "jobs")
    show = sub.add_parser("show", help="one job: status, request, result, error")
    show.add_argument("id", help="job id or unique prefix")
    add_json_flags(show)
    events = sub.add_parser("events", help="a job's events as JSON lines")
    events.add_argument("id", help="job id or unique prefix")
    events.add_argument("--after", type=int_at_least(0), default=0, metavar="SEQ",
                        help="only the events after this seq")
    events.add_argument("-f", "--follow", action="store_true",
                        help="keep printing events as they come, until the job ends")
    cancel = sub.add_parser("cancel", help="cancel a queued or running job")
    cancel.add_argument("id", help="job id or unique prefix")
    for action in (ls, show, events, cancel):
        add_config_flag(action)
    return p


def jobs_command(argv: List[str]) -> int:
    """``clinvk jobs list|show|events|cancel``."""
    args, code = parse_action(jobs_parser(), argv)
    if args is None:
        return code
    cfg = load_config(args)
    try:
        store = open_job_store(cfg, open_shared_store(cfg))
        if args.action == "list":
            list_jobs(store, args)
        elif args.action == "show":
            show_job(store.resolve(args.id), args)
        elif args.action == "events":
            print_events(store, store.resolve(args.id), args.after, args.follow)
        elif args.action == "cancel":
            return cancel_job(store, store.resolve(args.id))
    except (LookupError, job_store.JobStoreError, ConfigError) as exc:
        err(str(exc.args[0]) if exc.args else str(exc))
        return EXIT_USAGE
    return EXIT_OK


def list_jobs(store: job_store.JobStore, args: argparse.Namespace) -> None:
    found, total = store.list(status=args.status, kind=args.kind, limit=args.limit or None,
                              offset=args.offset)
    if wants_json(args):
        write(dumps_compact({"jobs": [_summary(j) for j in found], "total": total,
                             "limit": args.limit, "offset": args.offset}) + "\n")
        return
    write(format_job_table(found, total, args.offset))


def _summary(job: job_store.Job) -> Dict[str, Any]:
    out = job.public()
    del out["request"], out["result"]
    return out


def format_job_table(jobs: List[job_store.Job], total: int, offset: int) -> str:
    """One line per job: id, kind, status, created, events, and what it asked (cut)."""
    if not jobs:
        return "no jobs\n" if not total else "no jobs after the first %d\n" % offset
    rows = [("ID", "KIND", "STATUS", "CREATED", "EVENTS", "ASKED")]
    rows += [(j.id, j.kind, j.status, j.created_at[:19].replace("T", " "), str(j.event_count),
              cut(printable(_asked(j), 200), 50)) for j in jobs]
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:5], widths)) + "  " + r[5] for r in rows]
    shown = "showing %d-%d of %d\n" % (offset + 1, offset + len(jobs), total) \
        if len(jobs) < total else ""
    return "\n".join(line.rstrip() for line in lines) + "\n" + shown


def _asked(job: job_store.Job) -> str:
    """The job's prompt (a chain's first step, a parallel run's first task, a background
    response's input when it is text)."""
    request = job.request
    if job.kind == job_store.RESPONSE:
        text = (request.get("response") or {}).get("input")
        return text if isinstance(text, str) else ""
    first = (request.get("steps") or request.get("tasks") or [request])[0]
    return first.get("prompt", "") if isinstance(first, dict) else ""


def show_job(job: job_store.Job, args: argparse.Namespace) -> None:
    if wants_json(args):
        write_json(job.public())
        return
    lines = ["%-9s %s" % (k + ":", v) for k, v in (
        ("id", job.id), ("kind", job.kind), ("status", job.status),
        ("created", job.created_at), ("started", job.started_at or "-"),
        ("finished", job.finished_at or "-"), ("events", job.event_count))]
    if job.metadata:
        lines.append("metadata: %s" % dumps_compact(job.metadata))
    if job.error:
        lines.append("error:    %s: %s" % (job.error.get("error"), job.error.get("message")))
    lines.append("asked:    %s" % cut(printable(_asked(job), 400), 200))
    if job.result is not None:
        lines.append("result:   %s" % dumps_compact(job.result))
    write("\n".join(lines) + "\n")


def print_events(store: job_store.JobStore, job: job_store.Job, after: int,
                 follow: bool) -> None:
    """The job's events after ``after`` as JSON lines; with ``follow``, then each one as it is
    recorded, until the job's final event."""
    cursor = store.cursor(job.id, after)
    try:
        while True:
            for event in cursor.read():
                write(dumps_compact(event) + "\n")
                if _is_final(event):
                    return
            if not follow:
                return
            current = store.read(job.id)
            if current is None or (current.final and cursor.seq >= current.event_count):
                return
            time.sleep(POLL_SECS)
    finally:
        cursor.close()


def _is_final(event: Dict[str, Any]) -> bool:
    return event.get("type") == "job" and \
        event.get("content", {}).get("status") in job_store.FINAL


def cancel_job(store: job_store.JobStore, job: job_store.Job) -> int:
    """Cancel ``job`` and say how it ended; a job that has already ended is left as it is."""
    if job.final:
        write("job %s has already ended: %s\n" % (job.id, job.status))
        return EXIT_OK
    job = store.request_cancel(job.id) or job
    if not job.final and not store.runner_alive(job.runner):
        job = store.finish(job.id, job_store.CANCELLED,
                           error=job_store.cancelled_error()) or store.get(job.id)
    deadline = time.monotonic() + CANCEL_WAIT_SECS
    while not job.final and time.monotonic() < deadline:
        time.sleep(POLL_SECS)
        job = store.get(job.id)
    if not job.final:
        err("asked the server to cancel job %s; it is still %s after %ds (see clinvk jobs "
            "show %s)" % (job.id, job.status, CANCEL_WAIT_SECS, job.id))
        return EXIT_FAILED
    write("job %s: %s\n" % (job.id, job.status))
    return EXIT_OK
