"""Run every benchmark (bench/bench_*.py, one process each) and print a summary table
(run: ./build_pyz.sh && python3 bench/run_all.py).

Each benchmark prints its results as ``RESULT | issue | what | figures | value | target |
OK/OVER`` lines; the summary is those lines as a Markdown table, ready for bench/README.md.
Exit status 1 when a target is missed or a benchmark fails to run.
"""

from __future__ import annotations

import datetime
import glob
import os
import subprocess
import sys
import time
from typing import List

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import PY, machine, need_pyz  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
TIMEOUT = 600


def run_one(path: str) -> List[str]:
    """Run one benchmark, echoing its output; its RESULT and RECORD lines (a crash becomes a
    RESULT line too)."""
    name = os.path.basename(path)
    print("== %s" % name)
    sys.stdout.flush()
    started = time.monotonic()
    try:
        proc = subprocess.run([sys.executable, path], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, timeout=TIMEOUT)
        out, code = proc.stdout.decode(errors="replace"), proc.returncode
    except subprocess.TimeoutExpired as exc:
        out, code = (exc.stdout or b"").decode(errors="replace"), "timeout"
    sys.stdout.write(out)
    print("   (%s: %.0f s)" % (name, time.monotonic() - started))
    results = [line for line in out.splitlines() if line.startswith(("RESULT |", "RECORD |"))]
    if code != 0:
        results.append("RESULT | ? | %s did not finish (exit %s) | see its output above | - | "
                       "- | FAILED" % (name, code))
    return results


def main() -> int:
    need_pyz()
    started = time.monotonic()
    results: List[str] = []
    for path in sorted(glob.glob(os.path.join(HERE, "bench_*.py"))):
        results += run_one(path)
    with open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])
    print()
    now = datetime.datetime.now(datetime.timezone.utc)
    print("%s UTC; %s; interpreter %s; load average after the run %s; total %.0f s"
          % (now.strftime("%Y-%m-%d %H:%M"), machine(), PY, load, time.monotonic() - started))
    print()
    print("| issue | measured | figures | value | target | |")
    print("|---|---|---|---|---|---|")
    for line in results:
        if line.startswith("RESULT"):
            print("| " + " | ".join(part.strip() for part in line.split("|")[1:]) + " |")
    records = [line for line in results if line.startswith("RECORD")]
    if records:
        print()
        print("Figures without a target:")
        for line in records:
            print("- " + " | ".join(part.strip() for part in line.split("|")[1:]))
    bad = [line for line in results if line.startswith("RESULT") and not line.endswith("| OK")]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
