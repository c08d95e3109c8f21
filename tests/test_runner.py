"""runner.py: list argv, stdin prompt, line streaming, bounded stderr, timeout, cancel, no orphans."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

import pytest

from clinvk_lib import runner

PY = sys.executable


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); read its state.
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def wait_gone(pid: int, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.02)
    return False


def test_prompt_reaches_child_stdin_verbatim_and_stdin_is_closed():
    prompt = "--help me\nünïcødé ✓\n" + "x" * (1024 * 1024)
    code = "import sys; d=sys.stdin.buffer.read(); sys.stdout.write(str(len(d))+' '+d[:30].decode('utf-8'))"
    out, outcome = runner.run([PY, "-c", code], prompt)
    assert outcome.exit_code == 0
    assert out == "%d %s" % (len(prompt.encode("utf-8")), prompt.encode("utf-8")[:30].decode("utf-8"))


def test_stdout_lines_arrive_before_the_child_exits():
    code = "import time,sys\nprint('first', flush=True)\ntime.sleep(3)\nprint('second')"
    proc = runner.Process([PY, "-c", code])
    started = time.monotonic()
    lines = proc.lines()
    assert next(lines) == "first"
    assert time.monotonic() - started < 2.5
    assert proc.poll() is None
    assert list(lines) == ["second"]
    assert proc.wait().exit_code == 0


def test_stderr_is_kept_apart_and_bounded_to_its_tail():
    code = ("import sys\nsys.stderr.write('A'*3000000 + 'THE-END')\nprint('out')")
    proc = runner.Process([PY, "-c", code], stderr_limit=64 * 1024)
    assert list(proc.lines()) == ["out"]
    outcome = proc.wait()
    assert outcome.stderr.endswith("THE-END")
    assert len(outcome.stderr) <= 64 * 1024
    assert outcome.stderr_truncated


def test_timeout_kills_the_whole_process_group_including_grandchildren(tmp_path):
    pidfile = tmp_path / "grandchild.pid"
    code = ("import subprocess,sys,time\n"
            "p=subprocess.Popen([sys.executable,'-c','import time; time.sleep(60)'])\n"
            "open(%r,'w').write(str(p.pid))\n"
            "print('started', flush=True)\n"
            "time.sleep(60)\n" % str(pidfile))
    proc = runner.Process([PY, "-c", code], timeout=1.0, grace=0.5)
    assert list(proc.lines()) == ["started"]
    outcome = proc.wait()
    assert outcome.timed_out
    assert outcome.exit_code == -signal.SIGTERM
    assert wait_gone(int(pidfile.read_text()))
    assert not alive(proc.pid)


def test_child_ignoring_sigterm_is_killed_after_the_grace_period():
    code = ("import signal,time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            "print('ready', flush=True)\ntime.sleep(60)")
    proc = runner.Process([PY, "-c", code], timeout=0.5, grace=0.5)
    list(proc.lines())
    outcome = proc.wait()
    assert outcome.exit_code == -signal.SIGKILL
    assert outcome.timed_out


def test_cancel_from_another_thread_stops_the_run():
    proc = runner.Process([PY, "-c", "import time; print('x', flush=True); time.sleep(60)"])
    it = proc.lines()
    assert next(it) == "x"
    threading.Timer(0.2, proc.cancel).start()
    assert list(it) == []
    outcome = proc.wait()
    assert outcome.cancelled and not outcome.timed_out
    assert not alive(proc.pid)


def test_grandchild_left_behind_after_the_child_exits_is_killed(tmp_path):
    pidfile = tmp_path / "orphan.pid"
    code = ("import subprocess,sys\n"
            "p=subprocess.Popen([sys.executable,'-c','import time; time.sleep(60)'])\n"
            "open(%r,'w').write(str(p.pid))\n"
            "print('bye')\n" % str(pidfile))
    out, outcome = runner.run([PY, "-c", code], timeout=20)
    assert out == "bye" and outcome.exit_code == 0
    assert wait_gone(int(pidfile.read_text()))


def test_missing_executable_is_a_start_error_naming_it():
    with pytest.raises(runner.StartError) as info:
        runner.Process(["/nonexistent/claude"])
    assert "/nonexistent/claude" in str(info.value)


def test_kill_all_cancels_every_live_child():
    procs = [runner.Process([PY, "-c", "import time; time.sleep(60)"]) for _ in range(3)]
    assert runner.live_count() >= 3
    assert runner.kill_all() >= 3
    for p in procs:
        assert p.wait().cancelled
    assert runner.live_count() == 0


def test_abandoning_the_line_iterator_cancels_the_child():
    proc = runner.Process([PY, "-c", "import time\nfor i in range(100): print(i, flush=True); time.sleep(0.05)"])
    it = proc.lines()
    assert next(it) == "0"
    it.close()
    outcome = proc.wait()
    assert outcome.cancelled
    assert not alive(proc.pid)


def test_a_child_that_closes_stdout_before_exiting_is_not_reported_cancelled():
    code = "import os,time\nprint('done', flush=True)\nos.close(1)\ntime.sleep(0.3)"
    proc = runner.Process([PY, "-c", code])
    assert list(proc.lines()) == ["done"]
    outcome = proc.wait()
    assert outcome.exit_code == 0
    assert not outcome.cancelled
