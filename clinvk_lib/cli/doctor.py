"""``clinvk doctor``: whether every enabled backend can run here, and why not.

Per backend (``backends.diagnose``): command found, version and whether it is inside the
tested range, whether it can authenticate (the CLI's own status command or a cheap look at
its settings; a real model call only with ``--probe``), and the one-line reason it would
fail. Server runs without project configuration need more on some hosts (gemini's and qwen's
settings files); when they cannot be set up, that is a warning here, since the command line's
own runs do not need it. Exit 0 only when every enabled backend is usable.
"""

from __future__ import annotations

import os
from typing import Any, Dict, List

from .. import execute, render
from ..backends import base, diagnose
from ..config import Config
from .common import (EXIT_FAILED, EXIT_OK, Parser, add_config_flag, add_json_flags, load_config,
                     parse, wants_json, write, write_json)

PROBE_PROMPT = "Reply with the single word OK."
PROBE_TIMEOUT = 120


def doctor_parser() -> Parser:
    """The parser of ``clinvk doctor``."""
    p = Parser(prog="clinvk doctor",
               description="Check that each enabled backend can run here: command, version, "
                           "authentication. Exit code 0 only when every enabled backend is "
                           "usable.")
    add_json_flags(p)
    p.add_argument("--probe", action="store_true",
                   help="also run one tiny prompt on each usable backend (a real, possibly "
                        "paid, model call)")
    add_config_flag(p)
    return p


def doctor_command(argv: List[str]) -> int:
    """``clinvk doctor [--json] [--probe]``."""
    args = parse(doctor_parser(), argv)
    cfg = load_config(args)
    rows = [d.to_dict() for d in diagnose.diagnose_all(cfg, project_config=True)]
    for row in rows:
        _server_warning(row, cfg)
        if args.probe and row["usable"]:
            _probe(row, cfg)
    usable = all(r["usable"] for r in rows if r["enabled"])
    if wants_json(args):
        write_json({"usable": usable, "backends": rows})
    else:
        write(render.format_doctor(rows))
    return EXIT_OK if usable else EXIT_FAILED


def _server_warning(row: Dict[str, Any], cfg: Config) -> None:
    """Warn when a server run (without project configuration, unless the configuration allows
    it) could not be set up although the command line's runs can."""
    if not row["usable"] or cfg.get("server.allow_project_config"):
        return
    _, problem = diagnose.run_env(base.get(row["name"]), dict(os.environ), False)
    if problem:
        row["warnings"].append("server and MCP runs cannot be set up: %s" % problem)


def _probe(row: Dict[str, Any], cfg: Config) -> None:
    """One real, ephemeral run of PROBE_PROMPT; a failure makes the backend unusable."""
    request = execute.Request(backend=row["name"], prompt=PROBE_PROMPT, ephemeral=True,
                              timeout=PROBE_TIMEOUT, dry_run=False)
    try:
        outcome = execute.run(execute.prepare(request, cfg))
    except execute.ExecError as exc:
        row["probe"] = {"ok": False, "reply": "", "error": diagnose.public_text(str(exc))}
    else:
        r = outcome.result
        error = r.error or ("" if outcome.ok else "the run did not finish")
        row["probe"] = {"ok": outcome.ok, "reply": r.text.strip()[:200],
                        "error": diagnose.public_text(error)}
        if outcome.error_kind:
            row["probe"]["error_kind"] = outcome.error_kind
    if not row["probe"]["ok"]:
        row["usable"] = False
        row["reason"] = "the probe run failed: %s" % row["probe"]["error"]
