"""The fan-out engine: parallel, chain and compare on the fake CLIs, and task file validation."""

from __future__ import annotations

import os
import shlex
import threading
import time

import pytest

from clinvk_lib import config, execute, orchestrate
from tests.conftest import FAKE_BIN, records
from tests.serverutil import pid_alive


def per_backend(tmp_path, **envs):
    """A bin dir where each named backend runs its fake CLI with extra environment variables
    (``WAIT_FOR``: a glob of pid files that must exist first), writing ``pids/<name>-<pid>``."""
    bindir = tmp_path / "per-backend-bin"
    pids = tmp_path / "pids"
    bindir.mkdir(exist_ok=True)
    pids.mkdir(exist_ok=True)
    for name, env in envs.items():
        env = dict(env)
        lines = ["#!/bin/sh"]
        wait_for = env.pop("WAIT_FOR", None)
        if wait_for:
            lines.append("until ls %s/%s >/dev/null 2>&1; do sleep 0.02; done" % (pids, wait_for))
        lines += ["export %s=%s" % (k, shlex.quote(str(v))) for k, v in env.items()]
        lines += ["export FAKE_CLI_PIDFILE=%s/%s-$$" % (pids, name),
                  'exec %s "$@"' % shlex.quote(os.path.join(FAKE_BIN, name))]
        path = bindir / name
        path.write_text("\n".join(lines) + "\n")
        path.chmod(0o755)
    return str(bindir), pids


def use_per_backend(monkeypatch, tmp_path, **envs):
    bindir, pids = per_backend(tmp_path, **envs)
    monkeypatch.setenv("PATH", bindir + os.pathsep + os.environ["PATH"])
    return pids


def pids_of(pids_dir, name):
    return [int(p.name.split("-")[1]) for p in pids_dir.iterdir() if p.name.startswith(name)]


@pytest.fixture
def cfg(clinvk_home, fake_path):
    return config.load()


def flag_value(argv, flag):
    """The value of ``flag`` in argv, written ``--flag value`` or ``--flag=value``."""
    for i, word in enumerate(argv):
        if word == flag:
            return argv[i + 1]
        if word.startswith(flag + "="):
            return word[len(flag) + 1:]
    return None


def task(backend, prompt, **kw):
    return dict(kw, backend=backend, prompt=prompt)


# -- parallel -------------------------------------------------------------------------------------


def test_parallel_results_follow_input_order_not_completion_order(cfg, monkeypatch, tmp_path):
    # claude answers only once the other two have finished (its gate opens then), whatever
    # the machine's load.
    gate = tmp_path / "gate"
    use_per_backend(monkeypatch, tmp_path, claude={"FAKE_CLI_GATE": str(gate)})
    finished = []

    def progress(kind, i, payload):
        if kind == "finished":
            finished.append(i)
            if len(finished) == 2:
                gate.write_text("")
    summary = orchestrate.run_parallel(
        [task("claude", "a"), task("codex", "b"), task("gemini", "c")], cfg, max_parallel=3,
        on_progress=progress)
    assert [r.output for r in summary.results] == ["echo: a", "echo: b", "echo: c"]
    assert [r.index for r in summary.results] == [0, 1, 2]
    assert finished[-1] == 0


def test_parallel_summary_counts_and_result_fields(cfg):
    summary = orchestrate.run_parallel([task("claude", "a", id="t1", name="first")], cfg)
    assert (summary.total_tasks, summary.completed, summary.failed, summary.cancelled) == \
        (1, 1, 0, 0)
    r = summary.results[0]
    assert (r.index, r.id, r.name, r.backend, r.status, r.exit_code, r.error) == \
        (0, "t1", "first", "claude", "completed", 0, "")
    assert r.usage.output_tokens > 0


def test_a_failing_task_fails_alone(cfg, monkeypatch, tmp_path):
    use_per_backend(monkeypatch, tmp_path, codex={"FAKE_CLI_MODE": "fail"})
    summary = orchestrate.run_parallel(
        [task("claude", "a"), task("codex", "b"), task("gemini", "c")], cfg)
    assert [r.status for r in summary.results] == ["completed", "failed", "completed"]
    assert summary.results[1].exit_code == 1
    assert "fake failure" in summary.results[1].error
    assert (summary.completed, summary.failed) == (2, 1)


def test_task_whose_backend_is_not_installed_fails_alone(cfg, monkeypatch, tmp_path):
    bindir = tmp_path / "only-claude"
    bindir.mkdir()
    os.symlink(os.path.join(FAKE_BIN, "claude"), str(bindir / "claude"))
    monkeypatch.setenv("PATH", str(bindir) + os.pathsep + "/usr/bin:/bin")
    summary = orchestrate.run_parallel([task("gemini", "a"), task("claude", "b")], cfg)
    assert [r.status for r in summary.results] == ["failed", "completed"]
    assert "not installed" in summary.results[0].error


def test_fail_fast_kills_running_tasks_and_never_starts_the_rest(cfg, monkeypatch, tmp_path):
    pids = use_per_backend(monkeypatch, tmp_path, claude={"FAKE_CLI_MODE": "hang"},
                           codex={"FAKE_CLI_MODE": "fail", "WAIT_FOR": "claude-*"})
    summary = orchestrate.run_parallel(
        [task("claude", "hangs"), task("codex", "fails"), task("claude", "never starts")],
        cfg, max_parallel=2, fail_fast=True)
    assert [r.status for r in summary.results] == ["cancelled", "failed", "cancelled"]
    assert (summary.completed, summary.failed, summary.cancelled) == (0, 1, 2)
    assert "tasks[1] failed" in summary.results[2].error
    hung = pids_of(pids, "claude")
    assert len(hung) == 1
    assert not pid_alive(hung[0])


def test_fail_fast_with_a_task_that_cannot_be_prepared_starts_nothing(cfg, record):
    summary = orchestrate.run_parallel(
        [task("claude", "a"), task("claude", "b", workdir="/no/such/dir")], cfg, fail_fast=True)
    assert [r.status for r in summary.results] == ["cancelled", "failed"]
    assert records(record) == []


def test_firing_cancel_stops_a_parallel_run_and_its_processes(cfg, monkeypatch, tmp_path):
    pids = use_per_backend(monkeypatch, tmp_path, claude={"FAKE_CLI_MODE": "hang"})
    cancel = execute.Cancel()

    def fire_when_started():
        while not pids_of(pids, "claude"):
            time.sleep(0.02)
        cancel.fire()

    threading.Thread(target=fire_when_started, daemon=True).start()
    summary = orchestrate.run_parallel([task("claude", "a"), task("claude", "b")], cfg,
                                       max_parallel=1, cancel=cancel)
    assert [r.status for r in summary.results] == ["cancelled", "cancelled"]
    assert [pid_alive(pid) for pid in pids_of(pids, "claude")] == [False]


def test_parallel_runs_at_most_max_parallel_tasks_at_once(cfg, monkeypatch, tmp_path):
    use_per_backend(monkeypatch, tmp_path,
                    claude={"FAKE_CLI_MODE": "slow", "FAKE_CLI_DELAY": "0.1"})
    running, peak, lock = [0], [0], threading.Lock()

    def on_progress(kind, index, payload):
        with lock:
            running[0] += 1 if kind == "started" else -1
            peak[0] = max(peak[0], running[0])

    orchestrate.run_parallel([task("claude", str(i)) for i in range(5)], cfg, max_parallel=2,
                             on_progress=on_progress)
    assert peak[0] == 2


def test_max_parallel_falls_back_to_config_then_to_three(clinvk_home):
    (clinvk_home / "config.yaml").write_text("parallel:\n  max_workers: 7\n")
    assert orchestrate.resolve_max_parallel(2, config.load()) == 2
    assert orchestrate.resolve_max_parallel(0, config.load()) == 7


def test_parallel_dry_run_returns_commands_and_runs_nothing(cfg, record):
    summary = orchestrate.run_parallel([task("codex", "a")], cfg, dry_run=True)
    r = summary.results[0]
    assert os.path.basename(r.dry_run["command"][0]) == "codex"
    assert r.status == "completed"
    assert records(record) == []


def test_config_defaults_per_backend_apply_to_tasks(clinvk_home, fake_path, record):
    (clinvk_home / "config.yaml").write_text("backends:\n  claude:\n    model: from-config\n")
    orchestrate.run_parallel([task("claude", "a"), task("claude", "b", model="own")],
                             config.load(), max_parallel=1)
    argvs = [r["argv"] for r in records(record)]
    assert [flag_value(argv, "--model") for argv in argvs] == ["from-config", "own"]


def test_parallel_tasks_are_ephemeral(cfg, clinvk_home, record):
    orchestrate.run_parallel([task("codex", "a")], cfg)
    assert "--ephemeral" in records(record)[0]["argv"]
    assert not os.path.exists(str(clinvk_home / "sessions")) or \
        os.listdir(str(clinvk_home / "sessions")) in ([], ["index.json"])


# -- chain ----------------------------------------------------------------------------------------


def test_previous_is_replaced_by_the_previous_steps_output(cfg, record):
    summary = orchestrate.run_chain(
        [task("claude", "first"), task("codex", "summarise: {{previous}}")], cfg)
    assert records(record)[1]["stdin"] == "summarise: echo: first"
    assert summary.results[1].output == "echo: summarise: echo: first"
    assert (summary.total_steps, summary.completed_steps, summary.failed_step) == \
        (2, 2, 0)


def test_chain_stops_at_the_first_failure(cfg, monkeypatch, tmp_path, record):
    use_per_backend(monkeypatch, tmp_path, codex={"FAKE_CLI_MODE": "fail"})
    summary = orchestrate.run_chain(
        [task("claude", "a"), task("codex", "b"), task("gemini", "c")], cfg)
    assert [r.step for r in summary.results] == [1, 2]
    assert (summary.completed_steps, summary.failed_step) == (1, 2)
    assert [r["backend"] for r in records(record)] == ["claude", "codex"]


def test_chain_goes_on_after_a_failure_without_stop_on_failure(cfg, monkeypatch, tmp_path):
    use_per_backend(monkeypatch, tmp_path, claude={"FAKE_CLI_MODE": "fail"})
    summary = orchestrate.run_chain([task("claude", "a"), task("codex", "b")], cfg,
                                    stop_on_failure=False)
    assert [r.status for r in summary.results] == ["failed", "completed"]
    assert summary.failed_step == 1


def test_pass_working_dir_gives_a_step_without_workdir_the_previous_one(cfg, tmp_path, record):
    work = tmp_path / "work"
    work.mkdir()
    orchestrate.run_chain([task("claude", "a", workdir=str(work)), task("codex", "b")], cfg,
                          pass_working_dir=True)
    assert [r["cwd"] for r in records(record)] == [str(work), str(work)]


# -- compare --------------------------------------------------------------------------------------


def only_installed(monkeypatch, tmp_path, *names):
    bindir = tmp_path / "some-bin"
    bindir.mkdir()
    for name in names:
        os.symlink(os.path.join(FAKE_BIN, name), str(bindir / name))
    monkeypatch.setenv("PATH", str(bindir) + os.pathsep + "/usr/bin:/bin")


def test_compare_skips_a_backend_that_is_not_installed(cfg, monkeypatch, tmp_path):
    only_installed(monkeypatch, tmp_path, "claude", "codex")
    summary = orchestrate.run_compare("hi", ["claude", "gemini", "codex"], cfg)
    assert summary.backends == ["claude", "codex"]
    assert [r.output for r in summary.results] == ["echo: hi", "echo: hi"]
    assert [s.backend for s in summary.skipped] == ["gemini"]
    assert "not installed" in summary.skipped[0].reason


def test_compare_with_no_backend_left_is_an_error(cfg, monkeypatch, tmp_path):
    only_installed(monkeypatch, tmp_path, "claude")
    with pytest.raises(execute.ExecError) as err:
        orchestrate.run_compare("hi", ["codex", "gemini"], cfg)
    assert err.value.kind == "not_installed"


def test_compare_results_follow_the_requested_order(cfg, monkeypatch, tmp_path):
    use_per_backend(monkeypatch, tmp_path,
                    gemini={"FAKE_CLI_MODE": "slow", "FAKE_CLI_DELAY": "0.3"})
    summary = orchestrate.run_compare("hi", ["gemini", "codex"], cfg)
    assert [r.backend for r in summary.results] == ["gemini", "codex"]
    assert all(r.status == "completed" for r in summary.results)


def test_compare_passes_model_to_every_backend(cfg, record):
    summary = orchestrate.run_compare("hi", ["claude", "gemini"], cfg, model="m-1",
                                      sequential=True)
    runs = [r for r in records(record) if r["stdin"] == "hi"]   # not gemini's session cleanup
    assert [flag_value(r["argv"], "--model") for r in runs] == ["m-1", "m-1"]
    assert [r.model for r in summary.results] == ["m-1", "m-1"]


def test_compare_refuses_a_workdir_every_backend_refuses(cfg):
    with pytest.raises(execute.ExecError) as err:
        orchestrate.run_compare("hi", ["claude", "codex"], cfg, workdir="/no/such/dir")
    assert err.value.kind == "invalid"


def test_all_installed_backends_are_the_enabled_ones_on_path_in_stable_order(
        clinvk_home, fake_path):
    (clinvk_home / "config.yaml").write_text("backends:\n  codex:\n    enabled: false\n")
    assert orchestrate.all_installed_backends(config.load()) == ["claude", "gemini", "qwen",
                                                                 "copilot", "opencode"]
