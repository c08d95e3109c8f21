"""Issue 4 benchmark: `clinvk parallel` (run: python3 bench/bench_parallel.py).

`clinvk parallel --file tasks.json --max-parallel 8 --json` with 50 tasks on the zero-work
fake claude, against the same 50 commands (from `--dry-run`, so the argv, stdin and workdir
are exactly what clinvk runs) spawned by a plain 8-thread pool (subprocess.run in a
ThreadPoolExecutor, each in its own session like clinvk's runner): wall time, median of 9
alternating rounds, target <= 1.3x.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import PY, PYZ, fake_env, need_pyz, paired, report  # noqa: E402

ISSUE = "4"
TASKS = 50
WIDTH = 8
ROUNDS = 9


def main() -> None:
    need_pyz()
    home = tempfile.mkdtemp(prefix="clinvk-bench-parallel-")
    env = fake_env({"CLINVK_HOME": home})
    tasks_file = os.path.join(home, "tasks.json")
    with open(tasks_file, "w") as f:
        json.dump({"tasks": [{"backend": "claude", "prompt": "task %d" % i}
                             for i in range(TASKS)]}, f)
    argv = [PY, PYZ, "parallel", "--file", tasks_file, "--max-parallel", str(WIDTH), "--json"]
    plan = json.loads(subprocess.run(argv + ["--dry-run"], env=env, check=True,
                                     stdout=subprocess.PIPE).stdout)
    runs = [(r["dry_run"]["command"], "task %d" % r["index"], r["dry_run"]["workdir"])
            for r in plan["results"]]

    def clinvk() -> float:
        start = time.perf_counter()
        out = subprocess.run(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             start_new_session=True)
        took = time.perf_counter() - start
        summary = json.loads(out.stdout)
        if out.returncode or summary["completed"] != TASKS:
            raise RuntimeError("clinvk parallel failed: %s" % out.stdout[-500:])
        return took

    def spawn(run) -> None:
        command, prompt, workdir = run
        subprocess.run(command, input=prompt.encode(), stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, cwd=workdir, env=env, check=True,
                       start_new_session=True)

    def pool() -> float:
        start = time.perf_counter()
        with ThreadPoolExecutor(WIDTH) as ex:
            list(ex.map(spawn, runs))
        return time.perf_counter() - start

    r = paired(clinvk, pool, ROUNDS)
    report(ISSUE, "`clinvk parallel` 50 tasks, --max-parallel 8 vs 8-thread pool", r, 1.3,
           "clinvk parallel", "8-thread pool")


if __name__ == "__main__":
    main()
