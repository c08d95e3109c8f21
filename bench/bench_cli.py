"""Start-up and CLI overhead (run: python3 bench/bench_cli.py).

- start-up: `python3 dist/clinvk.pyz version` against `python3 -c pass`, median of 20 pairs,
  target <= 1.1x (issue 20); for context, side by side in each of 30 rounds: `python3 -c
  pass`, the floor of every zipapp (an empty one), `clinvk version` from the pyz and from the
  source tree.
- CLI added time: `clinvk -b claude -o json PROMPT` against running the same fake claude
  directly (the exact argv clinvk runs, from --dry-run), median of 20 pairs; targets (issue
  20): at most +40 ms with --ephemeral (no session written), +50 ms the default way (a
  session saved).

When a target is missed, the modules the run imports are listed by import time
(``python3 -X importtime``), biggest first.

``--before OTHER.pyz`` measures another build beside this one instead (e.g. the previous
commit's): every command of both builds and the bare fake, interleaved in each of 30 rounds,
so that what a change bought is read under one load.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import zipfile
from typing import Dict, List

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (PY, PYZ, ROOT, fake_env, need_pyz, paired, record,  # noqa: E402
                    report, report_value, time_command)

ISSUE = "20"
# The most a CLI run may add to the bare CLI's wall time (ms): --ephemeral, a session saved.
ADDED_MS = {"--ephemeral": 40.0, "with session": 50.0}


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


def compare(before: str, rounds: int = 30) -> None:
    """Median wall time of each command of ``before`` and of dist/clinvk.pyz, interleaved."""
    home = tempfile.mkdtemp(prefix="clinvk-bench-cli-")
    env = fake_env({"CLINVK_HOME": home})
    plan = json.loads(subprocess.run([PY, PYZ, "-b", "claude", "-o", "json", "--ephemeral",
                                      "--dry-run", "hi"], env=env, check=True,
                                     stdout=subprocess.PIPE).stdout)
    commands = {"python3 -c pass": ([PY, "-c", "pass"], b"", None),
                "fake claude direct": (plan["command"], b"hi", plan["workdir"])}
    for name, pyz in (("before", before), ("after", PYZ)):
        commands["%s: version" % name] = ([PY, pyz, "version"], b"", None)
        for label, flags in (("--ephemeral", ["--ephemeral"]), ("with session", [])):
            commands["%s: -o json %s" % (name, label)] = (
                [PY, pyz, "-b", "claude", "-o", "json"] + flags + ["hi"], b"", None)
    times: Dict[str, List[float]] = {name: [] for name in commands}
    cpu: Dict[str, List[float]] = {name: [] for name in commands}
    for round_ in range(rounds + 1):                 # round 0 warms up (pyc, unpacked copy)
        for name, (argv, stdin, cwd) in commands.items():
            before_cpu = children_cpu()
            took = time_command(argv, stdin, env=env, cwd=cwd)
            if round_:
                times[name].append(took)
                cpu[name].append(children_cpu() - before_cpu)
    wall = {name: statistics.median(t) * 1000 for name, t in times.items()}
    used = {name: statistics.median(t) * 1000 for name, t in cpu.items()}
    for name in commands:
        added = ""
        if "-o json" in name:
            added = " (+%.1f ms wall, +%.1f ms CPU over the fake)" % (
                wall[name] - wall["fake claude direct"], used[name] - used["fake claude direct"])
        record(ISSUE, "before/after, median of %d interleaved rounds: %s" % (rounds, name),
               "%.1f ms wall, %.1f ms CPU (the process and its children)%s"
               % (wall[name], used[name], added))


def version_floor(home: str, env: Dict[str, str], rounds: int = 30) -> None:
    """What `clinvk version` costs against the floor of any zipapp, side by side: `python3 -c
    pass`, an empty zipapp (its `__main__.py` is `pass`: CPython imports runpy, zipimport and
    zlib to run a zip), `python3 dist/clinvk.pyz version` and the source tree's `python3
    clinvk.py version`, each once per round in turn, median of ``rounds`` (RECORD lines)."""
    empty = os.path.join(home, "empty.pyz")
    with zipfile.ZipFile(empty, "w") as z:
        z.writestr("__main__.py", "pass\n")
    commands = {"python3 -c pass": [PY, "-c", "pass"],
                "python3 empty.pyz": [PY, empty],
                "python3 dist/clinvk.pyz version": [PY, PYZ, "version"],
                "python3 clinvk.py version (source tree)": [PY, os.path.join(ROOT, "clinvk.py"),
                                                            "version"]}
    times: Dict[str, List[float]] = {name: [] for name in commands}
    for round_ in range(rounds + 1):                 # round 0 warms up
        for name, argv in commands.items():
            took = time_command(argv, env=env)
            if round_:
                times[name].append(took)
    ms = {name: statistics.median(t) * 1000 for name, t in times.items()}
    floor = ms["python3 -c pass"]
    for name in commands:
        record(ISSUE, "`clinvk version` and its floor, interleaved: %s" % name,
               "%.1f ms: %.2fx `python3 -c pass`, %+.1f ms over the empty zipapp (median of %d "
               "rounds)" % (ms[name], ms[name] / floor, ms[name] - ms["python3 empty.pyz"],
                            rounds))


def children_cpu() -> float:
    """User and system seconds of this process's reaped children (and theirs)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    need_pyz()
    if sys.argv[1:2] == ["--before"]:
        compare(sys.argv[2])
        return
    home = tempfile.mkdtemp(prefix="clinvk-bench-cli-")
    env = fake_env({"CLINVK_HOME": home})
    r = paired(lambda: time_command([PY, PYZ, "version"], env=env),
               lambda: time_command([PY, "-c", "pass"], env=env), 20)
    if not report(ISSUE, "start-up: `clinvk version` vs `python3 -c pass`", r, 1.1,
                  "pyz version", "python -c pass"):
        import_profile([PYZ, "version"], env)
    version_floor(home, env)

    for label, flags in (("--ephemeral", ["--ephemeral"]), ("with session", [])):
        argv = [PY, PYZ, "-b", "claude", "-o", "json"] + flags
        plan = json.loads(subprocess.run(argv + ["--dry-run", "hi"], env=env, check=True,
                                         stdout=subprocess.PIPE).stdout)
        r = paired(lambda: time_command(argv + ["hi"], env=env),
                   lambda: time_command(plan["command"], b"hi", env=env, cwd=plan["workdir"]),
                   20)
        if not report_value(ISSUE, "CLI added time: `clinvk -b claude -o json` (%s) minus "
                            "fake direct" % label,
                            "clinvk %.1f ms vs fake claude direct %.1f ms: %.2fx (median of %d "
                            "pairs)" % (r["a_ms"], r["b_ms"], r["ratio"], r["pairs"]),
                            r["diff_ms"], "ms", ADDED_MS[label]):
            import_profile(argv[1:] + ["hi"], env)


if __name__ == "__main__":
    main()
