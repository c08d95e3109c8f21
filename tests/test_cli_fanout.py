"""``clinvk parallel``, ``chain`` and ``compare`` as a user runs them (fake CLIs on PATH)."""

from __future__ import annotations

import io
import json
import os
import pty
import re
import signal
import stat
import subprocess
import sys
import time

import pytest

from clinvk_lib.cli import common, fanout
from clinvk_lib.cli.main import main
from clinvk_lib.fanout_results import ParallelSummary
from tests.conftest import FAKE_BIN, ROOT, records
from tests.serverutil import pid_alive
from tests.test_orchestrate import only_installed, pids_of, use_per_backend

CLINVK = os.path.join(ROOT, "clinvk.py")

TASKS_YAML = """\
# two reviews at once
tasks:
  - backend: claude
    prompt: review auth.py
    id: auth
  - backend: codex
    prompt: "write tests"
max_parallel: 2
"""


@pytest.fixture
def env(clinvk_home, fake_path, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write(path, text):
    path.write_text(text)
    return str(path)


def tasks_json(*tasks, **top):
    return json.dumps(dict(top, tasks=[{"backend": b, "prompt": p} for b, p in tasks]))


def run_json(capsys, argv):
    code = main(argv)
    out = capsys.readouterr().out
    return code, json.loads(out)


def set_stdin(monkeypatch, text, tty=False):
    stream = io.TextIOWrapper(io.BytesIO(text.encode("utf-8")))
    stream.isatty = lambda: tty
    monkeypatch.setattr(sys, "stdin", stream)


# -- parallel -------------------------------------------------------------------------------------


def test_parallel_runs_a_yaml_task_file_and_prints_the_json_summary(env, capsys):
    code, summary = run_json(capsys, ["parallel", "--file", write(env / "t.yaml", TASKS_YAML),
                                      "--json"])
    assert code == 0
    assert [r["output"] for r in summary["results"]] == ["echo: review auth.py",
                                                         "echo: write tests"]
    assert list(summary) == ["total_tasks", "completed", "failed", "cancelled",
                             "total_duration_ms", "results"]
    assert summary["results"][0]["id"] == "auth"


def test_parallel_reads_tasks_from_stdin_with_a_dash(env, capsys, monkeypatch):
    set_stdin(monkeypatch, tasks_json(("gemini", "hi")))
    code, summary = run_json(capsys, ["parallel", "-f", "-", "--json"])
    assert (code, summary["results"][0]["output"]) == (0, "echo: hi")


def test_parallel_reads_piped_stdin_without_file_flag(env, capsys, monkeypatch):
    set_stdin(monkeypatch, tasks_json(("codex", "hi")))
    code, summary = run_json(capsys, ["parallel", "--json"])
    assert (code, summary["completed"]) == (0, 1)


def test_parallel_without_file_on_a_terminal_says_how_to_give_tasks(env, capsys, monkeypatch):
    set_stdin(monkeypatch, "", tty=True)
    assert main(["parallel"]) == common.EXIT_USAGE
    assert "give --file tasks.json" in capsys.readouterr().err


def test_parallel_exits_1_when_a_task_failed(env, capsys, monkeypatch, tmp_path):
    use_per_backend(monkeypatch, tmp_path, codex={"FAKE_CLI_MODE": "fail"})
    path = write(env / "t.json", tasks_json(("claude", "a"), ("codex", "b")))
    code, summary = run_json(capsys, ["parallel", "--file", path, "--json"])
    assert code == common.EXIT_FAILED
    assert (summary["completed"], summary["failed"]) == (1, 1)


def test_parallel_fail_fast_flag_cancels_the_rest(env, capsys, monkeypatch, tmp_path):
    use_per_backend(monkeypatch, tmp_path, claude={"FAKE_CLI_MODE": "fail"})
    path = write(env / "t.json", tasks_json(("claude", "a"), ("codex", "b"), ("gemini", "c")))
    code, summary = run_json(capsys, ["parallel", "--file", path, "--json", "--fail-fast",
                                      "--max-parallel", "1"])
    assert code == common.EXIT_FAILED
    assert [r["status"] for r in summary["results"]] == ["failed", "cancelled", "cancelled"]


def test_a_bad_yaml_task_file_names_file_line_index_and_field(env, capsys):
    path = write(env / "t.yaml", TASKS_YAML.replace("backend: codex", "backend: gpt"))
    assert main(["parallel", "--file", path]) == common.EXIT_USAGE
    assert capsys.readouterr().err == (
        "clinvk: %s line 6: tasks[1].backend: expected one of claude, codex, gemini, "
        "qwen, copilot, opencode, got "
        "'gpt'\n" % path)


def test_invalid_json_names_line_and_column(env, capsys):
    path = write(env / "t.json", '{"tasks": [\n  {"backend": "claude",}\n]}')
    assert main(["parallel", "--file", path]) == common.EXIT_USAGE
    assert re.search(r"t\.json line 2 column \d+: invalid JSON", capsys.readouterr().err)


def test_no_task_runs_when_any_task_is_invalid(env, capsys, record):
    path = write(env / "t.json", json.dumps({"tasks": [{"backend": "claude", "prompt": "a"},
                                                       {"backend": "claude"}]}))
    assert main(["parallel", "--file", path]) == common.EXIT_USAGE
    assert records(record) == []


def test_max_parallel_must_be_at_least_one(env, capsys):
    path = write(env / "t.json", tasks_json(("claude", "a")))
    assert main(["parallel", "--file", path, "--max-parallel", "0"]) == common.EXIT_USAGE
    assert "expected a number >= 1" in capsys.readouterr().err


def capture_run_parallel(monkeypatch):
    """Replace the engine: record the keyword arguments the command passes it."""
    seen = {}

    def fake_run_parallel(tasks, cfg, **kw):
        seen.update(kw)
        return ParallelSummary([], 0)

    monkeypatch.setattr(fanout.orchestrate, "run_parallel", fake_run_parallel)
    return seen


@pytest.mark.parametrize("flag, in_file, expected", [(["--max-parallel", "1"], 4, 1),
                                                     ([], 4, 4), ([], None, 0)])
def test_max_parallel_flag_beats_the_file(env, capsys, monkeypatch, flag, in_file, expected):
    seen = capture_run_parallel(monkeypatch)
    top = {"max_parallel": in_file} if in_file else {}
    path = write(env / "t.json", tasks_json(("claude", "a"), **top))
    main(["parallel", "--file", path, "--json"] + flag)
    assert seen["max_parallel"] == expected       # 0: the engine uses parallel.max_workers


@pytest.mark.parametrize("flag, in_file, expected", [(["--fail-fast"], False, True),
                                                     ([], False, False), ([], None, True)])
def test_fail_fast_flag_beats_the_file_and_the_file_beats_config(
        env, clinvk_home, capsys, monkeypatch, flag, in_file, expected):
    (clinvk_home / "config.yaml").write_text("parallel:\n  fail_fast: true\n")
    seen = capture_run_parallel(monkeypatch)
    top = {"fail_fast": in_file} if in_file is not None else {}
    path = write(env / "t.json", tasks_json(("claude", "a"), **top))
    main(["parallel", "--file", path, "--json"] + flag)
    assert seen["fail_fast"] is expected


def test_output_dir_holds_the_summary_and_one_file_per_task(env, capsys):
    path = write(env / "t.yaml", TASKS_YAML)
    assert main(["parallel", "--file", path, "--output-dir", "out", "--quiet"]) == 0
    out = env / "out"
    assert sorted(os.listdir(str(out))) == ["001_auth.json", "002_task-2.json", "summary.json"]
    first = json.loads((out / "001_auth.json").read_text())
    assert first["task"] == {"backend": "claude", "prompt": "review auth.py", "id": "auth"}
    assert first["result"]["output"] == "echo: review auth.py"
    assert json.loads((out / "summary.json").read_text())["completed"] == 2
    assert stat.S_IMODE(os.stat(str(out / "summary.json")).st_mode) == 0o600


def test_output_dir_that_cannot_be_created_fails_before_running(env, capsys, record):
    (env / "file").write_text("")
    path = write(env / "t.json", tasks_json(("claude", "a"), output_dir="file/sub"))
    assert main(["parallel", "--file", path]) == common.EXIT_USAGE
    assert records(record) == []


def test_parallel_text_shows_each_answer_then_the_table(env, capsys):
    path = write(env / "t.yaml", TASKS_YAML)
    assert main(["parallel", "--file", path]) == 0
    out = capsys.readouterr().out
    assert out.index("=== [1] auth (claude): completed") < out.index("echo: review auth.py") \
        < out.index("=== [2] write tests (codex)") < out.index("#    BACKEND")
    assert out.endswith("2 tasks: 2 completed, 0 failed, 0 cancelled in %s\n"
                        % out.rsplit(" in ", 1)[1].strip())


def test_quiet_hides_answers_but_keeps_the_table(env, capsys):
    assert main(["parallel", "--file", write(env / "t.yaml", TASKS_YAML), "-q"]) == 0
    captured = capsys.readouterr()
    assert "echo:" not in captured.out
    assert "#    BACKEND" in captured.out
    assert captured.err == ""


# -- progress on a terminal -----------------------------------------------------------------------


def run_with_stderr(argv, tty, extra_env=None):
    """Run ``python3 clinvk.py`` with stderr on a pty (tty=True) or a pipe; (code, out, err)."""
    env = dict(os.environ, **(extra_env or {}))
    if not tty:
        p = subprocess.run([sys.executable, CLINVK] + argv, stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, timeout=60)
        return p.returncode, p.stdout.decode(), p.stderr.decode()
    master, slave = pty.openpty()
    p = subprocess.Popen([sys.executable, CLINVK] + argv, stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=slave, env=env)
    os.close(slave)
    err = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:          # EIO: the child closed its end
            break
        if not chunk:
            break
        err += chunk
    out = p.stdout.read()
    p.stdout.close()
    os.close(master)
    return p.wait(timeout=60), out.decode(), err.decode()


def test_progress_on_a_terminal_shows_a_live_status_line_and_each_result(env):
    path = write(env / "t.yaml", TASKS_YAML)
    code, out, err = run_with_stderr(["parallel", "--file", path], tty=True,
                                     extra_env={"NO_COLOR": ""})
    assert code == 0
    assert "\r\x1b[K" in err                                   # redrawn in place
    assert "done 0" in err                                     # the status line
    assert "\x1b[32mdone     \x1b[0m [1/2] claude auth" in err  # a finished task, in colour
    assert "\x1b[32mdone     \x1b[0m [2/2] codex write tests" in err
    assert "echo: review auth.py" in out


def test_no_color_removes_the_colour_from_progress(env):
    path = write(env / "t.yaml", TASKS_YAML)
    _, _, err = run_with_stderr(["parallel", "--file", path], tty=True,
                                extra_env={"NO_COLOR": "1"})
    assert "done      [1/2] claude auth" in err
    assert "\x1b[32m" not in err


def test_no_progress_when_stderr_is_not_a_terminal(env):
    code, out, err = run_with_stderr(["parallel", "--file", write(env / "t.yaml", TASKS_YAML)],
                                     tty=False)
    assert (code, err) == (0, "")
    assert "echo: write tests" in out


@pytest.mark.parametrize("flag", ["--json", "--quiet"])
def test_no_progress_with_json_or_quiet_even_on_a_terminal(env, flag):
    code, _, err = run_with_stderr(["parallel", "--file", write(env / "t.yaml", TASKS_YAML),
                                    flag], tty=True)
    assert (code, err) == (0, "")


def test_ctrl_c_prints_what_finished_kills_the_rest_and_exits_130(env, monkeypatch, tmp_path):
    pids = use_per_backend(monkeypatch, tmp_path, claude={"FAKE_CLI_MODE": "hang"})
    path = write(env / "t.json", tasks_json(("codex", "quick"), ("claude", "hangs")))
    p = subprocess.Popen([sys.executable, CLINVK, "parallel", "--file", path, "--json",
                          "--max-parallel", "1"], stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    while not pids_of(pids, "claude"):        # codex finished: the one slot went to claude
        assert p.poll() is None
        time.sleep(0.02)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=30)
    assert out, err
    summary = json.loads(out)
    assert p.returncode == common.EXIT_INTERRUPTED
    assert [r["status"] for r in summary["results"]] == ["completed", "cancelled"]
    assert summary["results"][0]["output"] == "echo: quick"
    assert b"interrupted" in err
    assert not pid_alive(pids_of(pids, "claude")[0])


# -- chain ----------------------------------------------------------------------------------------


CHAIN = {"steps": [{"name": "draft", "backend": "claude", "prompt": "draft it"},
                   {"name": "review", "backend": "codex", "prompt": "review: {{previous}}"}]}


def test_chain_passes_the_previous_output_into_the_next_prompt(env, capsys, record):
    code, summary = run_json(capsys, ["chain", "--file", write(env / "c.json", json.dumps(CHAIN)),
                                      "--json"])
    assert code == 0
    assert records(record)[1]["stdin"] == "review: echo: draft it"
    assert list(summary) == ["total_steps", "completed_steps", "failed_step",
                             "total_duration_ms", "results"]
    assert [r["step"] for r in summary["results"]] == [1, 2]


def test_chain_stops_on_failure_by_default_and_exits_1(env, capsys, monkeypatch, tmp_path):
    use_per_backend(monkeypatch, tmp_path, claude={"FAKE_CLI_MODE": "fail"})
    code, summary = run_json(capsys, ["chain", "--file", write(env / "c.json", json.dumps(CHAIN)),
                                      "--json"])
    assert code == common.EXIT_FAILED
    assert (summary["failed_step"], len(summary["results"])) == (1, 1)


def test_chain_file_may_turn_stop_on_failure_off(env, capsys, monkeypatch, tmp_path):
    use_per_backend(monkeypatch, tmp_path, claude={"FAKE_CLI_MODE": "fail"})
    chain = dict(CHAIN, stop_on_failure=False)
    code, summary = run_json(capsys, ["chain", "--file", write(env / "c.json", json.dumps(chain)),
                                      "--json"])
    assert (code, len(summary["results"])) == (common.EXIT_FAILED, 2)


def test_chain_refuses_persist_sessions_with_a_clear_message(env, capsys):
    chain = dict(CHAIN, persist_sessions=True)
    assert main(["chain", "--file", write(env / "c.json", json.dumps(chain))]) == \
        common.EXIT_USAGE
    assert "persist_sessions: not supported: chains are always ephemeral" in \
        capsys.readouterr().err


def test_chain_text_shows_each_step_under_its_name(env, capsys):
    assert main(["chain", "--file", write(env / "c.json", json.dumps(CHAIN))]) == 0
    out = capsys.readouterr().out
    assert "=== step 1/2 draft (claude): completed" in out
    assert "=== step 2/2 review (codex): completed" in out
    assert out.endswith("steps completed in %s\n" % out.rsplit(" in ", 1)[1].strip())


# -- compare --------------------------------------------------------------------------------------


def test_compare_shows_each_answer_under_its_backend_with_duration_and_tokens(env, capsys):
    assert main(["compare", "--backends", "claude,codex", "hello"]) == 0
    out = capsys.readouterr().out
    claude_header = out.splitlines()[0]
    assert claude_header.startswith("=== claude (") and " in / " in claude_header
    assert "completed in " in claude_header
    assert out.index("=== codex") > out.index("echo: hello")


def test_compare_skips_a_missing_backend_with_a_warning(env, capsys, monkeypatch, tmp_path):
    only_installed(monkeypatch, tmp_path, "claude", "codex")
    code = main(["compare", "--backends", "claude,gemini", "--json", "hi"])
    captured = capsys.readouterr()
    assert code == 0
    assert json.loads(captured.out)["backends"] == ["claude"]
    assert "warning: skipping gemini: backend 'gemini' is not installed" in captured.err


def test_compare_all_backends_runs_every_installed_one(env, capsys, monkeypatch, tmp_path):
    only_installed(monkeypatch, tmp_path, "gemini", "claude")
    code, summary = run_json(capsys, ["compare", "--all-backends", "--json", "hi"])
    assert (code, summary["backends"]) == (0, ["claude", "gemini"])


def test_compare_with_nothing_installed_exits_3(env, capsys, monkeypatch, tmp_path):
    only_installed(monkeypatch, tmp_path)
    assert main(["compare", "--all-backends", "hi"]) == common.EXIT_NOT_INSTALLED
    assert "no backend to compare" in capsys.readouterr().err


def test_compare_needs_backends_or_all_backends(env, capsys):
    assert main(["compare", "hi"]) == common.EXIT_USAGE
    assert "--backends claude,codex or --all-backends" in capsys.readouterr().err


def test_compare_unknown_backend_is_a_usage_error(env, capsys):
    assert main(["compare", "--backends", "claude,gpt", "hi"]) == common.EXIT_USAGE
    assert ("backends[1]: expected one of claude, codex, gemini, qwen, copilot, opencode"
            in capsys.readouterr().err)


def test_compare_exits_1_when_a_backend_failed(env, capsys, monkeypatch, tmp_path):
    use_per_backend(monkeypatch, tmp_path, codex={"FAKE_CLI_MODE": "fail"})
    assert main(["compare", "--backends", "claude,codex", "--sequential", "hi"]) == \
        common.EXIT_FAILED
    assert "error: codex exited with code 1" in capsys.readouterr().out


def test_compare_in_a_subprocess_reads_the_prompt_from_stdin(env):
    p = subprocess.run([sys.executable, CLINVK, "compare", "--backends", "gemini", "--json"],
                       input=b"from stdin", stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=60)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["results"][0]["output"] == "echo: from stdin"
