"""Issue 2 benchmarks: start-up and CLI overhead (run: python3 bench/bench_cli.py).

- start-up: `python3 dist/clinvk.pyz version` against `python3 -c pass`, median of 20 pairs.
- CLI overhead: `clinvk -b claude -o json PROMPT` against running the same fake claude directly.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import FAKE_BIN, PYZ, fake_env, paired, report, time_command  # noqa: E402

PY = sys.executable


def main() -> None:
    if not os.path.exists(PYZ):
        sys.exit("build first: ./build_pyz.sh")
    r = paired(lambda: time_command([PY, PYZ, "version"]),
               lambda: time_command([PY, "-c", "pass"]), 20)
    report("start-up", r, 1.5, "pyz version", "python -c pass")
    env = fake_env()
    fake = os.path.join(FAKE_BIN, "claude")
    r = paired(lambda: time_command([PY, PYZ, "-b", "claude", "-o", "json", "--ephemeral", "hi"],
                                    env=env),
               lambda: time_command([PY, fake, "-p", "--output-format", "json"], b"hi", env=env),
               20)
    report("cli overhead (claude json)", r, 1.5, "clinvk", "fake claude direct")


if __name__ == "__main__":
    main()
