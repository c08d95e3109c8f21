"""The references ``clinvk help`` prints besides a command's flags: ``clinvk help modes`` (what
each approval and sandbox mode does on each backend, from the backend modules' own mode
tables) and ``clinvk help config`` (every setting, from ``config.SETTINGS``). Both work
offline and from a copied ``.pyz``, which carries no README."""

from __future__ import annotations

import json
import textwrap
from typing import List

from .. import config
from ..backends import base

WIDTH = 79
_INDENT = " " * 4


def modes_text() -> str:
    """Every backend's approval and sandbox modes, each with what it really does there."""
    out = ["Approval and sandbox modes, per backend: --approval-mode and --sandbox-mode, or",
           "the settings unified_flags.approval_mode / sandbox_mode and backends.NAME.*",
           "(see: clinvk help config).", ""]
    for name in base.NAMES:
        backend = base.get(name)
        out.append("%s (%s)" % (name, backend.display_name or name))
        for option, notes in backend.mode_notes.items():
            for mode, text in notes.items():
                out.append("  %s %s" % (option, mode))
                out.extend(_wrap(text))
        out.append("")
    return "\n".join(out)


def config_text() -> str:
    """Every setting: key, default, environment variable, what it means and what it takes."""
    out = ["Every setting, with its default and its environment variable. A value comes from",
           "(highest first) a flag, the environment, the config file (clinvk config path),",
           "the default. Commands: clinvk config show | set KEY VALUE | path.", ""]
    for row in config.SETTINGS:
        out.extend(_setting_lines(row))
    return "\n".join(out) + "\n"


def _setting_lines(row: config.Setting) -> List[str]:
    default = row.default_value()
    shown = "(none)" if row.secret and default in ("", []) else json.dumps(default)
    lines = ["%s = %s  (%s)" % (row.key, shown, row.env_var)]
    text = "%s. Takes %s." % (row.meaning[0].upper() + row.meaning[1:], row.kind.expected)
    lines.extend(_wrap(text))
    return lines


def _wrap(text: str) -> List[str]:
    # Not at hyphens and not inside a word: flags such as --dangerously-skip-permissions and
    # values such as OPENCODE_PERMISSION={...} must stay whole, to be copied.
    return textwrap.wrap(text, WIDTH, initial_indent=_INDENT, subsequent_indent=_INDENT,
                         break_on_hyphens=False, break_long_words=False)
