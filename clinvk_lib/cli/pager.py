"""Long text (help, the mode and setting references) through ``$PAGER`` on a terminal, as git
and gh do; straight to stdout anywhere else."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from typing import List

# -F: quit at once when the text fits the screen; -R: let colours through; -X: leave the text
# on the screen after quitting (less(1)). git uses the same default.
DEFAULT_PAGER = "less -FRX"


def pager_command() -> List[str]:
    """The pager's argv: ``$PAGER`` (split like a shell would), else ``less -FRX``; [] when
    PAGER says not to page (``cat``, or set but empty)."""
    chosen = os.environ.get("PAGER")
    argv = shlex.split(DEFAULT_PAGER if chosen is None else chosen)
    return [] if not argv or argv == ["cat"] else argv


def page(text: str) -> None:
    """Show ``text`` through the pager when stdout is a terminal, else write it to stdout.
    A pager that cannot start (not installed) falls back to plain output."""
    argv = pager_command() if _stdout_is_terminal() else []
    if argv and _through_pager(argv, text):
        return
    sys.stdout.write(text)
    sys.stdout.flush()


def _stdout_is_terminal() -> bool:
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


def _through_pager(argv: List[str], text: str) -> bool:
    """True once the pager has shown ``text`` and exited; False if it could not start."""
    sys.stdout.flush()
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE)
    except OSError:
        return False
    try:
        proc.communicate(text.encode(sys.stdout.encoding or "utf-8", "replace"))
    except BrokenPipeError:         # the user quit the pager before reading everything
        pass
    except KeyboardInterrupt:       # Ctrl-C belongs to the pager while it runs (less(1))
        proc.wait()
    return True
