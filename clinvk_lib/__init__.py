"""clinvk: one command line and one HTTP server for the claude, codex and gemini agent CLIs."""

import sys

__version__ = "0.1.0"


def version_line() -> str:
    """What ``clinvk version`` prints."""
    return "clinvk %s (python %d.%d.%d)\n" % ((__version__,) + tuple(sys.version_info[:3]))
