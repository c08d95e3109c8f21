"""Shared helpers for the benchmarks: paired timings measured side by side in one run."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAKE_BIN = os.path.join(ROOT, "tests", "fakes", "bin")
PYZ = os.path.join(ROOT, "dist", "clinvk.pyz")


def fake_env(extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """An environment whose PATH finds the fake CLIs first."""
    env = dict(os.environ)
    env["PATH"] = FAKE_BIN + os.pathsep + env.get("PATH", "")
    env.update(extra or {})
    return env


def time_command(argv: Sequence[str], stdin: bytes = b"", env=None) -> float:
    """Wall seconds of one run of argv (output discarded); raises if it fails."""
    start = time.perf_counter()
    subprocess.run(list(argv), input=stdin, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, env=env, check=True)
    return time.perf_counter() - start


def paired(a: Callable[[], float], b: Callable[[], float], pairs: int) -> Dict[str, float]:
    """Run a and b alternately ``pairs`` times; medians and the ratio median(a)/median(b)."""
    xs: List[float] = []
    ys: List[float] = []
    a()
    b()                                  # warm-up: page cache, pyc files
    for _ in range(pairs):
        xs.append(a())
        ys.append(b())
    ma, mb = statistics.median(xs), statistics.median(ys)
    return {"a_ms": ma * 1000, "b_ms": mb * 1000, "ratio": ma / mb if mb else float("inf"),
            "pairs": pairs}


def report(name: str, result: Dict[str, float], limit: float, a_label: str,
           b_label: str) -> str:
    ok = result["ratio"] <= limit
    line = ("%-28s %s %.1f ms vs %s %.1f ms: ratio %.2f (target <= %.2f) %s"
            % (name, a_label, result["a_ms"], b_label, result["b_ms"], result["ratio"], limit,
               "OK" if ok else "OVER"))
    print(line)
    sys.stdout.flush()
    return line
