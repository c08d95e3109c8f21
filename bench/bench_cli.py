"""Issue 2 benchmarks: start-up and CLI overhead (run: python3 bench/bench_cli.py).

- start-up: `python3 dist/clinvk.pyz version` against `python3 -c pass`, median of 20 pairs,
  target <= 1.5x; for context, the floor of every zipapp (an empty one against `python3 -c
  pass`) and clinvk's own part (`clinvk version` against the empty zipapp).
- CLI overhead: `clinvk -b claude -o json PROMPT` against running the same fake claude
  directly (the exact argv clinvk runs, from --dry-run), median of 20 pairs, target <= 1.5x;
  once with --ephemeral (no session written) and once the default way (a session saved).

When a target is missed, the modules the run imports are listed by import time
(``python3 -X importtime``), biggest first.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import zipfile
from typing import Dict, List

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (PY, PYZ, fake_env, need_pyz, paired, record, report,  # noqa: E402
                    time_command)

ISSUE = "2"


def import_profile(argv: List[str], env: Dict[str, str], top: int = 15) -> None:
    """Print the ``top`` modules of one run of argv by cumulative import time."""
    out = subprocess.run([PY, "-X", "importtime"] + argv, input=b"hi", env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE).stderr.decode()
    rows = []
    for line in out.splitlines():
        if line.startswith("import time:") and "|" in line and "self" not in line:
            self_us, cumulative_us, name = (part.strip() for part in
                                               line.split(":", 1)[1].split("|"))
            rows.append((int(cumulative_us), int(self_us), name))
    total = sum(s for _, s, _ in rows)
    print("  import profile of `%s` (total %.1f ms of imports):" % (" ".join(argv[1:]),
                                                                      total / 1000))
    for cumulative, own, name in sorted(rows, reverse=True)[:top]:
        print("    %7.1f ms cumulative %7.1f ms self  %s" % (cumulative / 1000, own / 1000,
                                                              name))


def main() -> None:
    need_pyz()
    home = tempfile.mkdtemp(prefix="clinvk-bench-cli-")
    env = fake_env({"CLINVK_HOME": home})
    r = paired(lambda: time_command([PY, PYZ, "version"], env=env),
               lambda: time_command([PY, "-c", "pass"], env=env), 20)
    if not report(ISSUE, "start-up: `clinvk version` vs `python3 -c pass`", r, 1.5,
                  "pyz version", "python -c pass"):
        import_profile([PYZ, "version"], env)
    # The floor of any zipapp: an empty one (CPython imports runpy, zipimport and zlib to run
    # a zip's __main__).
    empty = os.path.join(home, "empty.pyz")
    with zipfile.ZipFile(empty, "w") as z:
        z.writestr("__main__.py", "pass\n")
    r = paired(lambda: time_command([PY, empty], env=env),
               lambda: time_command([PY, "-c", "pass"], env=env), 20)
    record(ISSUE, "zipapp floor: `python3 empty.pyz` (`__main__.py` is `pass`) vs `python3 -c "
           "pass`", "%.1f ms vs %.1f ms: %.2fx (median of %d pairs)"
           % (r["a_ms"], r["b_ms"], r["ratio"], r["pairs"]))
    r = paired(lambda: time_command([PY, PYZ, "version"], env=env),
               lambda: time_command([PY, empty], env=env), 20)
    record(ISSUE, "clinvk's own part: `clinvk version` vs `python3 empty.pyz`",
           "%.1f ms vs %.1f ms: %.2fx, +%.1f ms (median of %d pairs)"
           % (r["a_ms"], r["b_ms"], r["ratio"], r["diff_ms"], r["pairs"]))

    for label, flags in (("--ephemeral", ["--ephemeral"]), ("with session", [])):
        argv = [PY, PYZ, "-b", "claude", "-o", "json"] + flags
        plan = json.loads(subprocess.run(argv + ["--dry-run", "hi"], env=env, check=True,
                                         stdout=subprocess.PIPE).stdout)
        r = paired(lambda: time_command(argv + ["hi"], env=env),
                   lambda: time_command(plan["command"], b"hi", env=env, cwd=plan["workdir"]),
                   20)
        if not report(ISSUE, "CLI overhead: `clinvk -b claude -o json` (%s) vs fake direct"
                      % label, r, 1.5, "clinvk", "fake claude direct"):
            import_profile(argv[1:] + ["hi"], env)


if __name__ == "__main__":
    main()
