"""The backends' stderr lines and warnings in ``clinvk parallel|chain|compare``: on stderr,
named by backend, in text mode; never in JSON mode (stdout stays pure JSON)."""

from __future__ import annotations

import io
import json

import pytest

from clinvk_lib import config, orchestrate
from clinvk_lib.cli.main import main
from clinvk_lib.cli.progress import Progress
from clinvk_lib.fanout_results import Note, Started

STDERR_LINE = "fake backend: model API slow, retrying"
WARNING = "codex: warning: Reconnecting... 1/1"


@pytest.fixture
def env(clinvk_home, fake_path, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FAKE_CLI_STDERR", STDERR_LINE)
    monkeypatch.setenv("FAKE_CLI_WARNINGS", "1")
    return tmp_path


def _spec(tmp_path, key):
    path = tmp_path / "spec.json"
    path.write_text(json.dumps({key: [{"backend": "claude", "prompt": "one"},
                                      {"backend": "codex", "prompt": "two"}]}))
    return str(path)


COMMANDS = {
    "parallel": lambda tmp_path: ["parallel", "--file", _spec(tmp_path, "tasks")],
    "chain": lambda tmp_path: ["chain", "--file", _spec(tmp_path, "steps")],
    "compare": lambda tmp_path: ["compare", "--backends", "claude,codex", "hello"],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_text_mode_shows_each_backends_stderr_lines_and_warnings(env, capsys, command):
    assert main(COMMANDS[command](env)) == 0
    err = capsys.readouterr().err.splitlines()
    assert "claude: " + STDERR_LINE in err
    assert "codex: " + STDERR_LINE in err
    assert any(line.startswith(WARNING) for line in err), err


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_json_mode_shows_none_and_stdout_stays_json(env, capsys, command):
    assert main(COMMANDS[command](env) + ["--json"]) == 0
    out, err = capsys.readouterr()
    json.loads(out)
    assert STDERR_LINE not in out + err
    assert "Reconnecting" not in err


def test_parallel_quiet_shows_none(env, capsys):
    assert main(COMMANDS["parallel"](env) + ["--quiet"]) == 0
    assert STDERR_LINE not in capsys.readouterr().err


def test_a_note_on_a_terminal_clears_the_status_line_then_redraws_it():
    stream = io.StringIO()
    progress = Progress(stream, ["claude", "codex"], color=False)
    progress.update("started", 0, Started(0, "claude", "claude"))
    drawn = len(stream.getvalue())
    progress.note("claude: retrying")
    after = stream.getvalue()[drawn:]
    assert after.startswith("\r\x1b[Kclaude: retrying\n\r\x1b[K")
    assert "running claude" in after.splitlines()[-1]


@pytest.mark.parametrize("item_stderr", [False, True])
def test_the_engine_reports_stderr_lines_and_warnings_only_when_asked(env, item_stderr):
    # The server's progress hooks know no "stderr" or "warning" kind: they must opt in.
    reports = []
    orchestrate.run_parallel([{"backend": "codex", "prompt": "p"}], config.load(),
                             on_progress=lambda kind, i, p: reports.append((kind, p)),
                             item_stderr=item_stderr)
    notes = [(kind, p) for kind, p in reports if kind in ("stderr", "warning")]
    if not item_stderr:
        assert notes == []
    else:
        assert ("stderr", Note("codex", STDERR_LINE)) in notes
        assert [p.text for kind, p in notes if kind == "warning"][0].startswith("Reconnecting")
