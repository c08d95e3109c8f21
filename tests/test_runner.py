"""runner.py: list argv, stdin prompt, line streaming, bounded stderr, timeout, cancel, no orphans."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from clinvk_lib import runner
from tests.conftest import ROOT
from tests.serveproc import children_of
from tests.serverutil import wait_for

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


def with_a_grandchild(pidfile) -> str:
    """A child's code: it starts a grandchild in its group, writes its pid to ``pidfile``,
    prints 'started' and sleeps."""
    return ("import subprocess,sys,time\n"
            "p=subprocess.Popen([sys.executable,'-c','import time; time.sleep(60)'])\n"
            "open(%r,'w').write(str(p.pid))\n"
            "print('started', flush=True)\n"
            "time.sleep(60)\n" % str(pidfile))


def test_timeout_kills_the_whole_process_group_including_grandchildren(tmp_path):
    pidfile = tmp_path / "grandchild.pid"
    code = with_a_grandchild(pidfile)
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


# -- the supervisor: exit status, environment, start-up failures --------------------------------


def test_exit_code_and_death_signal_of_the_child_are_reported_as_its_own():
    assert runner.run([PY, "-c", "import sys; sys.exit(7)"])[1].exit_code == 7
    suicide = "import os,signal; os.kill(os.getpid(), signal.SIGUSR1)"
    assert runner.run([PY, "-c", suicide])[1].exit_code == -signal.SIGUSR1


def test_child_environment_is_exactly_the_one_given():
    # /usr/bin/env, not Python: Python would add LC_CTYPE itself in a C locale (PEP 538).
    out, outcome = runner.run(["/usr/bin/env"], env={"PATH": "/usr/bin:/bin", "ONLY": "1"})
    assert outcome.exit_code == 0
    assert sorted(out.splitlines()) == ["ONLY=1", "PATH=/usr/bin:/bin"]


def test_modules_in_the_working_directory_are_never_imported_by_the_supervisor(tmp_path):
    marker = tmp_path / "imported"
    for name in ("signal", "encodings", "site", "sitecustomize", "resource"):
        (tmp_path / (name + ".py")).write_text("open(%r, 'w').close()\n" % str(marker))
    out, outcome = runner.run(["/bin/sh", "-c", "exit 3"], cwd=str(tmp_path))
    assert outcome.exit_code == 3
    assert not marker.exists()


def test_prompt_with_a_lone_surrogate_starts_no_process(tmp_path):
    marker = tmp_path / "started"
    runner.supervisor.launch_ahead()       # this process's supervisor is no run's process
    before = set(children_of(os.getpid()))
    with pytest.raises(runner.InputError) as info:
        runner.Process([PY, "-c", "open(%r, 'w').close()" % str(marker)], "ok \ud800")
    assert "\\ud800 at character 3" in str(info.value)
    time.sleep(0.5)
    assert not marker.exists()
    assert set(children_of(os.getpid())) <= before
    assert runner.live_count() == 0


def test_a_failure_right_after_the_start_kills_and_reaps_the_child(monkeypatch):
    def no_threads(target, *args):
        raise RuntimeError("can't start new thread")

    runner.supervisor.launch_ahead()       # this process's supervisor is no run's process
    before = set(children_of(os.getpid()) + children_of(runner.supervisor._shared.proc.pid))
    monkeypatch.setattr(runner, "_daemon", no_threads)
    with pytest.raises(RuntimeError):
        runner.Process([PY, "-c", "import time; time.sleep(60)"])
    after = children_of(os.getpid()) + children_of(runner.supervisor._shared.proc.pid)
    assert set(after) <= before          # killed and reaped: not even a zombie
    assert runner.live_count() == 0


def test_child_and_its_group_die_when_the_parent_is_killed_with_sigkill(tmp_path):
    pidfile = tmp_path / "pids"
    backend = ("import subprocess,sys,os,time\n"
               "p=subprocess.Popen([sys.executable,'-c','import time; time.sleep(60)'])\n"
               "open(%r,'w').write('%%d %%d' %% (os.getpid(), p.pid))\n"
               "time.sleep(60)\n" % str(pidfile))
    parent_code = ("import sys; from clinvk_lib import runner\n"
                   "p = runner.Process([sys.executable, '-c', %r])\n"
                   "print('started', flush=True)\n"
                   "p.wait()\n" % backend)
    parent = subprocess.Popen([PY, "-c", parent_code], cwd=ROOT, stdout=subprocess.PIPE)
    try:
        assert parent.stdout.readline() == b"started\n"
        assert wait_for(lambda: len(pidfile.read_text().split()) == 2 if pidfile.exists()
                        else False)
        pids = [int(p) for p in pidfile.read_text().split()]
        assert all(alive(p) for p in pids)
        parent.kill()
        parent.wait()
        assert all(wait_gone(p) for p in pids)
    finally:
        parent.kill()
        parent.wait()
        kill_pids_in(pidfile)


def test_a_descendant_that_left_the_group_cannot_hold_the_run_after_the_child_exits(tmp_path):
    pidfile = tmp_path / "stray.pid"
    code = ("import subprocess,sys\n"
            "p=subprocess.Popen([sys.executable,'-c','import time; time.sleep(60)'],"
            " start_new_session=True)\n"
            "open(%r,'w').write(str(p.pid))\n"
            "print('bye', flush=True)\n"
            "sys.stderr.write('last words')\n" % str(pidfile))
    try:
        started = time.monotonic()
        out, outcome = runner.run([PY, "-c", code], timeout=120)
        assert time.monotonic() - started < 5
        assert out == "bye" and outcome.exit_code == 0 and outcome.stderr == "last words"
        assert alive(int(pidfile.read_text()))       # it really held the pipes all along
    finally:
        kill_pids_in(pidfile)


def test_output_written_just_before_the_exit_is_read_even_by_a_slow_reader(tmp_path):
    pidfile = tmp_path / "stray.pid"
    code = ("import subprocess,sys\n"
            "p=subprocess.Popen([sys.executable,'-c','import time; time.sleep(60)'],"
            " start_new_session=True)\n"
            "open(%r,'w').write(str(p.pid))\n"
            "print('line 0', flush=True)\n"
            "time.sleep(0.3)\n"
            "for i in range(1, 2000): print('line %%d' %% i)\n" % str(pidfile))
    try:
        proc = runner.Process([PY, "-c", "import time\n" + code])
        lines = proc.lines()
        assert next(lines) == "line 0"
        assert wait_for(lambda: proc.poll() is not None)
        time.sleep(runner.PIPE_GRACE + 0.5)      # the pipe holds the rest of the output
        assert list(lines) == ["line %d" % i for i in range(1, 2000)]
        assert proc.wait().exit_code == 0
    finally:
        kill_pids_in(pidfile)


def kill_pids_in(path) -> None:
    """SIGKILL every pid listed in the file at ``path`` (a test's strays), if it exists."""
    if os.path.exists(str(path)):
        for pid in open(str(path)).read().split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass


# -- one supervisor per process: launched ahead, shared, replaced when it dies --------------------


@pytest.fixture
def launched_ahead():
    """This process's supervisor, launched ahead of any command; its pid."""
    from clinvk_lib import supervisor
    supervisor.launch_ahead()
    return supervisor._shared.proc.pid


def parent_of(pid: int) -> int:
    with open("/proc/%d/stat" % pid) as f:
        return int(f.read().rsplit(")", 1)[-1].split()[1])


def test_every_command_is_started_by_the_one_supervisor_launched_ahead(launched_ahead):
    runs = [runner.Process([PY, "-c", "import time; time.sleep(60)"]) for _ in range(2)]
    try:
        assert [parent_of(run.pid) for run in runs] == [launched_ahead] * 2
        assert [os.getpgid(run.pid) for run in runs] == [run.pid for run in runs]
        assert [os.getsid(run.pid) for run in runs] == [run.pid for run in runs]
    finally:
        assert [run.kill().exit_code for run in runs] == [-signal.SIGKILL] * 2


def test_the_supervisor_holds_no_environment_of_its_own(launched_ahead):
    with open("/proc/%d/environ" % launched_ahead, "rb") as f:
        assert f.read() == b""


def test_a_command_that_cannot_start_is_reported_and_the_supervisor_stays(launched_ahead,
                                                                          tmp_path):
    with pytest.raises(runner.StartError) as info:
        runner.Process(["/bin/true"], cwd=str(tmp_path / "missing"))
    assert "No such file or directory" in str(info.value)
    assert alive(launched_ahead)
    assert runner.run(["/bin/sh", "-c", "exit 4"])[1].exit_code == 4


def test_a_supervisor_that_dies_ends_its_runs_as_killed_and_is_replaced(launched_ahead,
                                                                       tmp_path):
    from clinvk_lib import supervisor
    pidfile = tmp_path / "grandchild.pid"
    code = with_a_grandchild(pidfile)
    proc = runner.Process([PY, "-c", code])
    try:
        lines = proc.lines()
        assert next(lines) == "started"
        os.kill(launched_ahead, signal.SIGKILL)
        assert list(lines) == []
        assert proc.wait().exit_code == -signal.SIGKILL
        assert wait_gone(proc.pid) and wait_gone(int(pidfile.read_text()))
        out, outcome = runner.run(["/bin/echo", "again"])
        assert (out, outcome.exit_code) == ("again", 0)
        assert supervisor._shared.proc.pid != launched_ahead
    finally:
        kill_pids_in(pidfile)


def test_a_run_whose_lifeline_closes_is_killed_by_the_supervisor(launched_ahead):
    proc = runner.Process([PY, "-c", "import time; time.sleep(60)"])
    runner.close_fds(proc._lifeline)        # what a caller that lost the run would leave
    proc._lifeline = -1
    assert proc.wait().exit_code == -signal.SIGKILL
    assert alive(launched_ahead)


def test_a_supervisor_launched_ahead_and_never_used_exits_with_its_caller():
    code = ("from clinvk_lib import supervisor\n"
            "supervisor.launch_ahead()\n"
            "print(supervisor._shared.proc.pid, flush=True)\n")
    caller = subprocess.run([PY, "-c", code], cwd=ROOT, capture_output=True, text=True,
                            timeout=60)
    assert wait_gone(int(caller.stdout))


def test_the_command_is_found_on_the_path_it_is_given(tmp_path):
    (tmp_path / "only-here").write_text("#!/bin/sh\necho found\n")
    (tmp_path / "only-here").chmod(0o755)
    out, outcome = runner.run(["only-here"], env={"PATH": "%s:/usr/bin:/bin" % tmp_path})
    assert (out, outcome.exit_code) == ("found", 0)
    with pytest.raises(runner.StartError):
        runner.run(["only-here"], env={"PATH": "/usr/bin:/bin"})
