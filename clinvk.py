#!/usr/bin/env python3
"""clinvk: run claude, codex and gemini from one command line and one HTTP server.

This file is the entry point of the source tree and the ``__main__`` of dist/clinvk.pyz.
"""

import sys

if __name__ == "__main__":
    # `clinvk version` answers without importing anything else (start-up time is measured).
    if sys.argv[1:] in (["version"], ["--version"]):
        from clinvk_lib import version_line
        sys.stdout.write(version_line())
        sys.exit(0)
    if sys.version_info < (3, 8):
        sys.stderr.write("clinvk: Python 3.8 or newer is required (this is %d.%d)\n"
                         % sys.version_info[:2])
        sys.exit(2)
    from clinvk_lib.cli import run_main
    run_main()
