"""``clinvk backends``: which backend CLIs are installed here, enabled, and their versions."""

from __future__ import annotations

from typing import List

from .. import render
from ..backends.probe import probe_all
from .common import (EXIT_OK, Parser, add_config_flag, add_json_flags, load_config, parse,
                     wants_json, write, write_json)


def backends_parser() -> Parser:
    """The parser of ``clinvk backends``."""
    p = Parser(prog="clinvk backends", description="Which backends are installed.")
    add_json_flags(p)
    add_config_flag(p)
    return p


def backends_command(argv: List[str]) -> int:
    """``clinvk backends [--json]``."""
    args = parse(backends_parser(), argv)
    found = probe_all(load_config(args))
    if wants_json(args):
        write_json({"backends": found})
    else:
        write(render.format_backends_table(found))
    return EXIT_OK
