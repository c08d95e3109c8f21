"""Running one prompt from the terminal: the request built from the flags, ``execute``'s
prepare / run / stream, the answer in the chosen output format, and the exit code of what
happened (the ``EXIT_*`` codes of ``common``, chosen by ``ErrorKind``, never by an error's
wording).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any, Iterator, List, Optional

from .. import execute, render
from ..config import Config
from ..execute import ErrorKind
from . import live
from .common import (EXIT_FAILED, EXIT_INTERRUPTED, EXIT_NOT_AUTHENTICATED, EXIT_NOT_INSTALLED,
                     EXIT_OK, EXIT_SESSION, EXIT_TIMEOUT, EXIT_USAGE, err, write, write_json)

if TYPE_CHECKING:
    from ..sessions import SessionStore

# What each kind of failure exits with; a kind missing here is EXIT_FAILED.
EXIT_BY_KIND = {
    ErrorKind.INVALID: EXIT_USAGE,
    ErrorKind.UNKNOWN_BACKEND: EXIT_USAGE,
    ErrorKind.DISABLED: EXIT_NOT_INSTALLED,
    ErrorKind.NOT_INSTALLED: EXIT_NOT_INSTALLED,
    ErrorKind.SESSION: EXIT_SESSION,
    ErrorKind.START: EXIT_FAILED,
    ErrorKind.NOT_AUTHENTICATED: EXIT_NOT_AUTHENTICATED,
    ErrorKind.RATE_LIMITED: EXIT_FAILED,        # a model API failure like any other
}


def exec_error_exit(exc: execute.ExecError) -> int:
    """Report an ExecError on stderr and return its exit code."""
    err(str(exc))
    return EXIT_BY_KIND.get(exc.kind, EXIT_FAILED)


def outcome_exit_code(outcome: execute.Outcome) -> int:
    """EXIT_OK, EXIT_TIMEOUT, EXIT_INTERRUPTED, or the code of the outcome's error kind."""
    if outcome.timed_out:
        return EXIT_TIMEOUT
    if outcome.cancelled:
        return EXIT_INTERRUPTED
    if outcome.result.ok:
        return EXIT_OK
    return EXIT_BY_KIND.get(outcome.error_kind, EXIT_FAILED)


def request_from_args(args: argparse.Namespace, prompt: str,
                      session_id: str = "") -> execute.Request:
    """The run flags (``common.add_run_flags``) as an ``execute.Request``."""
    return execute.Request(
        backend=getattr(args, "backend", "") or "",
        prompt=prompt,
        model=args.model or "",
        workdir=getattr(args, "workdir", "") or "",
        approval_mode=args.approval_mode or "",
        sandbox_mode=args.sandbox_mode or "",
        max_turns=args.max_turns or 0,
        system_prompt=args.system_prompt or "",
        verbose=bool(args.verbose),
        ephemeral=bool(getattr(args, "ephemeral", False)),
        session_id=session_id,
        dry_run=args.dry_run,
        timeout=args.timeout,
        profile=getattr(args, "profile", "") or "",
    )


def run_prompt(args: argparse.Namespace, cfg: Config, store: Optional[SessionStore],
               prompt: str, session_id: str) -> int:
    """Prepare, run (or dry-run) and render one prompt; returns the exit code. Text on a
    terminal is shown live (``live.run_live``)."""
    fmt = args.output_format or cfg.get("output.format") or "text"
    on_terminal = fmt == "text" and live.on_terminal()
    req = request_from_args(args, prompt, session_id)
    try:
        prepared = execute.prepare(req, cfg, store, stream=(fmt == "stream-json" or on_terminal))
    except execute.ExecError as exc:
        return exec_error_exit(exc)
    for warning in prepared.warnings:
        err("warning: %s" % warning)
    if prepared.dry_run:
        info = prepared.describe()
        if fmt == "text":
            write(render.dry_run_text(info))
        else:
            write_json(dict(info, dry_run=True))
        return EXIT_OK
    # --verbose: the backend's stderr as it comes, whatever the format (text mode shows it
    # through the live view or run_plain).
    passthrough = live.pass_stderr_through if prepared.opts.verbose else None
    try:
        if fmt == "stream-json":
            collected: List[execute.Outcome] = []
            write_events(execute.stream(prepared, store, outcome=collected,
                                        on_stderr=passthrough))
            outcome = collected[0]
        elif fmt == "text":
            detail = live.detail_of(bool(getattr(args, "quiet", False)), prepared.opts.verbose)
            outcome = live.run_live(prepared, store, live.use_color(cfg), detail) \
                if on_terminal else live.run_plain(prepared, store, detail)
        else:
            outcome = execute.run(prepared, store, on_stderr=passthrough)
    except execute.ExecError as exc:
        return exec_error_exit(exc)
    if fmt == "json":
        write_json(render.outcome_to_json(outcome))
    elif fmt == "text":
        print_text(outcome, cfg, streamed=on_terminal)
    if outcome.result.error and fmt != "text":
        err(render.run_error(outcome.result.backend, outcome.result.error))
    return outcome_exit_code(outcome)


def write_events(events: Iterator[Any]) -> None:
    """Each event as a JSON line. A Ctrl-C that lands while a line is being written (the
    stream paused at its yield) is thrown into the stream, which stops the run and still
    yields its closing events (``done`` with exit code 130) before it re-raises."""
    def line(e: Any) -> None:
        write(json.dumps(e.to_dict(), ensure_ascii=False) + "\n")
    try:
        for e in events:
            line(e)
    except KeyboardInterrupt as exc:
        try:
            line(events.throw(exc))
            for e in events:
                line(e)
        except StopIteration:
            pass
        raise


def print_text(outcome: execute.Outcome, cfg: Config, streamed: bool = False) -> None:
    """The reply on stdout (unless ``streamed``: the live view has shown it); the error, and
    the tokens and time when configured, on stderr."""
    r = outcome.result
    if r.text and not streamed:
        write(r.text if r.text.endswith("\n") else r.text + "\n")
    if r.error:
        err(render.run_error(r.backend, r.error))
    sys.stderr.write(render.run_facts(r, bool(cfg.get("output.show_tokens")),
                                      bool(cfg.get("output.show_timing"))))
