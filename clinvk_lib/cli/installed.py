"""``clinvk backends``: which backend CLIs are installed here, enabled, and their versions."""

from __future__ import annotations

from typing import List

from .. import render
from ..backends.probe import probe_all
from .common import EXIT_OK, Parser, add_config_flag, load_config, parse, write, write_json


def backends_command(argv: List[str]) -> int:
    """``clinvk backends [--json]``."""
    p = Parser(prog="clinvk backends", description="Which backends are installed.")
    p.add_argument("--json", action="store_true")
    add_config_flag(p)
    args = parse(p, argv)
    found = probe_all(load_config(args))
    if args.json:
        write_json({"backends": found})
    else:
        write(render.format_backends_table(found))
    return EXIT_OK
