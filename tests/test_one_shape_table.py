"""One shape table for every front end: a task, a chain step and a compare request are accepted,
honoured and refused the same way, with the same message, whether they arrive as an HTTP body,
as MCP tool arguments or in a ``clinvk parallel`` / ``chain`` file (or ``clinvk compare``'s
arguments)."""

from __future__ import annotations

import json
import shlex
from typing import Any, Dict, Tuple

import pytest

from clinvk_lib import config
from clinvk_lib.cli import common
from clinvk_lib.cli.main import main
from clinvk_lib.mcp.protocol import Call, RpcError
from clinvk_lib.mcp.tools import ToolContext, all_tools
from clinvk_lib.schema import validate
from clinvk_lib.sessions import SessionStore
from clinvk_lib.shapes import ChainFile, ChainStep, ParallelFile, ParallelTask
from tests.serverutil import server, start_server  # noqa: F401  (fixtures)

# (accepted, "path: message" when refused)
Verdict = Tuple[bool, str]

TASK = {"backend": "claude", "prompt": "hi"}
REFUSED_LABEL = ("not supported: a task is ephemeral, so no session keeps tags or metadata; "
                 "label it with id or name")


class FrontEnds:
    """The three ways in, each answering (accepted, "path: message")."""

    def __init__(self, srv, tmp_path, capsys) -> None:
        self.srv = srv
        self.tmp_path = tmp_path
        self.capsys = capsys
        cfg = config.load()
        self.tools = {t.name: t for t in all_tools(ToolContext(cfg, SessionStore(cfg.home)))}

    def http(self, route: str, body: Dict[str, Any]) -> Verdict:
        reply = self.srv.post("/api/v1/" + route, dict(body, dry_run=True))
        if reply.status == 200:
            return True, ""
        assert reply.status == 400, reply
        return False, reply.json()["message"]

    def mcp(self, tool: str, arguments: Dict[str, Any]) -> Verdict:
        try:
            self.tools[tool].bind(arguments)
        except RpcError as exc:
            prefix = "invalid arguments for %s: " % tool
            assert exc.message.startswith(prefix), exc.message
            return False, exc.message[len(prefix):]
        return True, ""

    def file(self, command: str, data: Dict[str, Any]) -> Verdict:
        path = str(self.tmp_path / ("%s.json" % command))
        with open(path, "w") as f:
            json.dump(data, f)
        self.capsys.readouterr()
        code = main([command, "--file", path, "--dry-run", "--json"])
        err = self.capsys.readouterr().err
        if code == common.EXIT_OK:
            return True, ""
        assert code == common.EXIT_USAGE, err
        prefix = "clinvk: %s: " % path
        assert err.startswith(prefix), err
        return False, err[len(prefix):].rstrip("\n")

    def compare_command(self, prompt: str, backends: str) -> Verdict:
        self.capsys.readouterr()
        code = main(["compare", "--backends", backends, "--dry-run", "--json", "--", prompt])
        err = self.capsys.readouterr().err
        if code == common.EXIT_OK:
            return True, ""
        assert code == common.EXIT_USAGE, err
        prefix = "clinvk: compare: "
        assert err.startswith(prefix), err
        return False, err[len(prefix):].rstrip("\n")

    def parallel(self, task: Dict[str, Any]) -> Dict[str, Verdict]:
        body = {"tasks": [task]}
        return {"http": self.http("parallel", body), "mcp": self.mcp("clinvk_parallel", body),
                "file": self.file("parallel", body)}

    def chain(self, body: Dict[str, Any]) -> Dict[str, Verdict]:
        return {"http": self.http("chain", body), "mcp": self.mcp("clinvk_chain", body),
                "file": self.file("chain", body)}


@pytest.fixture
def ways(server, tmp_path, capsys, monkeypatch):  # noqa: F811  (fixture)
    monkeypatch.chdir(tmp_path)
    return FrontEnds(server, tmp_path, capsys)


def same_everywhere(verdicts: Dict[str, Verdict]) -> Verdict:
    assert len(set(verdicts.values())) == 1, verdicts
    return next(iter(verdicts.values()))


# -- parallel tasks: every field x every front end --------------------------------------------

# field -> (a value every front end takes, a bad value, the message it gets)
TASK_FIELDS = {
    "backend": ("codex", "gpt", "expected one of claude, codex, gemini, qwen, copilot, "
                                "opencode, got 'gpt'"),
    "prompt": ("review auth.py", "   ", "must not be blank (only whitespace)"),
    "model": ("m-1", 5, "expected a string, got 5"),
    "workdir": (None, 5, "expected a string, got 5"),               # None: the test's tmp dir
    "approval_mode": ("auto", "yolo", "expected one of default, auto, none, always, got 'yolo'"),
    "sandbox_mode": ("read-only", "all",
                     "expected one of default, read-only, workspace, full, got 'all'"),
    "output_format": ("json", "xml", "expected one of default, text, json, stream-json, got 'xml'"),
    "max_tokens": (100, -1, "expected an integer >= 0, got -1"),
    "max_turns": (2, "3", "expected an integer >= 0, got '3'"),
    "system_prompt": ("be brief", "a\x00b", "must not contain NUL bytes"),
    "verbose": (True, "yes", "expected true or false, got 'yes'"),
    "extra": (["--effort", "high"], "--effort", "expected an array, got '--effort'"),
    "id": ("t1", 7, "expected a string, got 7"),
    "name": ("first", ["n"], "expected a string, got an array"),
    "dry_run": (True, 1, "expected true or false, got 1"),
}


def test_the_table_above_covers_every_task_field():
    assert sorted(TASK_FIELDS) == sorted(f.name for f in ParallelTask.fields)


@pytest.mark.parametrize("field", sorted(TASK_FIELDS))
def test_a_task_field_is_accepted_by_every_front_end(ways, field):
    good = TASK_FIELDS[field][0]
    task = dict(TASK, **{field: str(ways.tmp_path) if good is None else good})
    assert same_everywhere(ways.parallel(task)) == (True, "")


@pytest.mark.parametrize("field", sorted(TASK_FIELDS))
def test_a_bad_task_field_gets_the_same_message_from_every_front_end(ways, field):
    _, bad, message = TASK_FIELDS[field]
    verdict = same_everywhere(ways.parallel(dict(TASK, **{field: bad})))
    assert verdict == (False, "tasks[0].%s: %s" % (field, message))


@pytest.mark.parametrize("field, value", [("tags", ["review"]), ("meta", {"team": "a"})])
def test_task_tags_and_meta_are_refused_by_every_front_end(ways, field, value):
    verdict = same_everywhere(ways.parallel(dict(TASK, **{field: value})))
    assert verdict == (False, "tasks[0].%s: %s" % (field, REFUSED_LABEL))


def test_a_missing_prompt_gets_the_same_message_from_every_front_end(ways):
    assert same_everywhere(ways.parallel({"backend": "claude"})) == \
        (False, "tasks[0].prompt: field required")


def test_a_misspelt_field_is_refused_in_a_file_and_dropped_by_the_apis(ways):
    # A file is written by hand, so "promt" is a typo to point at; API clients may send
    # fields of other versions, which are dropped.
    verdicts = ways.parallel(dict(TASK, promt="x"))
    assert verdicts["http"] == verdicts["mcp"] == (True, "")
    assert verdicts["file"][0] is False
    assert verdicts["file"][1].startswith(
        "tasks[0].promt: unknown field (expected one of backend, prompt, model, workdir,")


def results_for(ways: FrontEnds, task: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    """The result each front end gives for a parallel run of ``task`` alone."""
    reply = ways.srv.post("/api/v1/parallel", {"tasks": [task]})
    assert reply.status == 200, reply
    result = ways.tools["clinvk_parallel"].bind({"tasks": [task]})(Call(None, 1, None))
    path = str(ways.tmp_path / "t.json")
    with open(path, "w") as f:
        json.dump({"tasks": [task]}, f)
    ways.capsys.readouterr()
    assert main(["parallel", "--file", path, "--json"]) == common.EXIT_OK
    return {"http": reply.json()["results"][0],
            "mcp": result["structuredContent"]["results"][0],
            "file": json.loads(ways.capsys.readouterr().out)["results"][0]}


def test_task_fields_that_reach_the_command_reach_it_from_every_front_end(ways):
    # dry_run on the task itself: each front end answers with the command it would run (over
    # HTTP as the output text, "would run: ARGV").
    task = dict(TASK, model="m-1", max_turns=2, system_prompt="be brief", verbose=True,
                extra=["--effort", "high"], dry_run=True)
    for where, r in results_for(ways, task).items():
        command = shlex.split(r["output"][len("would run: "):]) if where == "http" \
            else r["dry_run"]["command"]
        for flag in ["--model=m-1", "--max-turns=2", "--system-prompt=be brief", "--verbose"]:
            assert flag in command, (where, flag, command)
        assert ("--effort", "high") in zip(command, command[1:]), (where, command)


def test_task_labels_come_back_in_the_result_from_every_front_end(ways):
    task = dict(TASK, id="t1", name="first", dry_run=True)
    for where, r in results_for(ways, task).items():
        assert (r["id"], r["name"]) == ("t1", "first"), where


def test_a_tasks_false_dry_run_does_not_switch_off_the_operators_dry_run(
        start_server, tmp_path, monkeypatch):  # noqa: F811  (fixture)
    monkeypatch.chdir(tmp_path)
    srv = start_server(**{"unified_flags.dry_run": True})
    reply = srv.post("/api/v1/parallel", {"tasks": [dict(TASK, dry_run=False)]})
    assert reply.status == 200
    assert reply.json()["results"][0]["output"].startswith("would run: ")


# -- chain steps and chain settings ----------------------------------------------------------

STEP_FIELDS = {
    "name": ("draft", 3, "expected a string, got 3"),
    "backend": ("gemini", "gpt", "expected one of claude, codex, gemini, qwen, copilot, "
                                 "opencode, got 'gpt'"),
    "prompt": ("draft it", "use {{session}}",
               "the {{session}} placeholder is not supported: chain steps are always ephemeral "
               "(use {{previous}} for the previous step's output)"),
    "model": ("m-1", False, "expected a string, got false"),
    "workdir": (None, [], "expected a string, got an empty array"),
    "approval_mode": ("always", "ask", "expected one of default, auto, none, always, got 'ask'"),
    "sandbox_mode": ("workspace", "", "expected one of default, read-only, workspace, full, "
                                      "got ''"),
    "max_turns": (1, 1.5, "expected an integer >= 0, got 1.5"),
    "system_prompt": ("be terse", 1, "expected a string, got 1"),
}


def test_the_table_above_covers_every_step_field():
    assert sorted(STEP_FIELDS) == sorted(f.name for f in ChainStep.fields)


@pytest.mark.parametrize("field", sorted(STEP_FIELDS))
def test_a_step_field_is_accepted_by_every_front_end(ways, field):
    good = STEP_FIELDS[field][0]
    step = dict(TASK, **{field: str(ways.tmp_path) if good is None else good})
    assert same_everywhere(ways.chain({"steps": [step]})) == (True, "")


@pytest.mark.parametrize("field", sorted(STEP_FIELDS))
def test_a_bad_step_field_gets_the_same_message_from_every_front_end(ways, field):
    _, bad, message = STEP_FIELDS[field]
    verdict = same_everywhere(ways.chain({"steps": [TASK, dict(TASK, **{field: bad})]}))
    assert verdict == (False, "steps[1].%s: %s" % (field, message))


def test_previous_in_the_first_step_gets_the_same_message_from_every_front_end(ways):
    verdict = same_everywhere(ways.chain({"steps": [dict(TASK, prompt="fix {{previous}}")]}))
    assert verdict == (False, "steps[0].prompt: uses {{previous}}, but the first step has no "
                              "previous output")


@pytest.mark.parametrize("key", ["pass_session_id", "persist_sessions"])
def test_session_options_of_a_chain_are_refused_by_every_front_end(ways, key):
    verdict = same_everywhere(ways.chain({"steps": [TASK], key: True}))
    assert verdict[0] is False
    assert verdict[1].startswith("%s: not supported: chains are always ephemeral" % key)


def test_a_bad_chain_setting_gets_the_same_message_from_every_front_end(ways):
    verdict = same_everywhere(ways.chain({"steps": [TASK], "stop_on_failure": "yes"}))
    assert verdict == (False, "stop_on_failure: expected true or false, got 'yes'")


# -- compare ---------------------------------------------------------------------------------


@pytest.mark.parametrize("prompt, backends, message", [
    ("hi", ["claude", "gpt"], "backends[1]: expected one of claude, codex, gemini, qwen, "
                              "copilot, opencode, got 'gpt'"),
    ("  ", ["claude"], "prompt: must not be blank (only whitespace)"),
])
def test_a_bad_compare_request_gets_the_same_message_from_every_front_end(
        ways, prompt, backends, message):
    body = {"prompt": prompt, "backends": backends}
    verdicts = {"http": ways.http("compare", body), "mcp": ways.mcp("clinvk_compare", body),
                "command": ways.compare_command(prompt, ",".join(backends))}
    assert same_everywhere(verdicts) == (False, message)


# -- files keep naming the file, the line, the item and the field ---------------------------


def test_a_refused_field_in_a_yaml_file_is_named_with_its_line(ways):
    path = str(ways.tmp_path / "t.yaml")
    with open(path, "w") as f:
        f.write("tasks:\n  - backend: claude\n    prompt: hi\n  - backend: codex\n"
                "    prompt: hi\n    tags: [a]\n")
    assert main(["parallel", "--file", path]) == common.EXIT_USAGE
    assert ways.capsys.readouterr().err == "clinvk: %s line 6: tasks[1].tags: %s\n" % (
        path, REFUSED_LABEL)


def test_a_file_that_is_not_an_object_is_named_without_a_field(ways):
    path = str(ways.tmp_path / "t.json")
    with open(path, "w") as f:
        f.write('[{"backend": "claude", "prompt": "hi"}]')
    assert main(["parallel", "--file", path]) == common.EXIT_USAGE
    assert ways.capsys.readouterr().err == \
        "clinvk: %s: expected an object, got an array\n" % path


def test_settings_a_file_leaves_out_stay_unset_so_flags_and_config_decide():
    assert "fail_fast" not in validate(ParallelFile, {"tasks": [TASK]}, strict=True)
    assert "stop_on_failure" not in validate(ChainFile, {"steps": [TASK]}, strict=True)
    assert validate(ChainFile, {"steps": [TASK], "stop_on_failure": False},
                    strict=True)["stop_on_failure"] is False
