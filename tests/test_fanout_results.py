"""The typed results of parallel, chain and compare: the JSON each one gives (the CLI's --json,
--output-dir files and MCP structuredContent print exactly this), counts that add up, and the
progress callback handing over the same typed objects the summary holds."""

from __future__ import annotations

import pytest

from clinvk_lib import config, execute, orchestrate
from clinvk_lib.events import Usage
from clinvk_lib.fanout_results import (CANCELLED, COMPLETED, FAILED, ChainSummary,
                                       CompareResult, CompareSummary, Ending, ParallelSummary,
                                       Skipped, Started, StepResult, TaskResult)
from tests.conftest import records

ENDED_KEYS = ["status", "exit_code", "output", "error", "duration_ms", "usage"]
DRY_RUN = {"backend": "claude", "command": ["claude", "-p"], "workdir": "/w", "session_id": "",
           "stdin": "<prompt: 1 characters>", "warnings": []}


def ended(status: str = COMPLETED, **kw) -> Ending:
    return Ending(status, 0 if status == COMPLETED else 1, **kw)


@pytest.mark.parametrize("result, head", [
    (TaskResult(0, "t1", "first", "claude", ended()), ["index", "id", "name", "backend"]),
    (StepResult(1, "draft", "codex", ended()), ["step", "name", "backend"]),
    (CompareResult("gemini", "g-1", ended()), ["backend", "model"]),
])
def test_an_item_result_json_lists_its_name_then_how_it_ended_in_a_fixed_order(result, head):
    assert list(result.to_dict()) == head + ENDED_KEYS


def test_a_dry_run_item_ends_its_json_with_the_command_it_would_run():
    d = TaskResult(0, "", "", "claude", ended(dry_run=DRY_RUN)).to_dict()
    assert list(d)[-1] == "dry_run"
    assert d["dry_run"] == DRY_RUN


def test_an_item_without_reported_tokens_shows_zero_usage():
    r = StepResult(1, "", "codex", ended(FAILED, error="boom"))
    assert r.to_dict()["usage"] == Usage().to_dict()
    assert (r.ok, r.error, r.output) == (False, "boom", "")


def test_an_item_keeps_the_tokens_and_cost_it_reported():
    usage = Usage(input_tokens=3, output_tokens=4, cost_usd=0.5)
    assert CompareResult("claude", "", ended(usage=usage)).to_dict()["usage"] == {
        "input_tokens": 3, "output_tokens": 4, "cached_tokens": 0, "reasoning_tokens": 0,
        "cost_usd": 0.5}


def test_parallel_summary_counts_add_up_to_total_tasks():
    results = [TaskResult(i, "", "", "claude", ended(status))
               for i, status in enumerate([COMPLETED, FAILED, CANCELLED, COMPLETED])]
    summary = ParallelSummary(results, 12)
    assert summary.to_dict() == {
        "total_tasks": 4, "completed": 2, "failed": 1, "cancelled": 1, "total_duration_ms": 12,
        "results": [r.to_dict() for r in results]}


@pytest.mark.parametrize("statuses, failed_step", [
    ([COMPLETED, COMPLETED], 0), ([COMPLETED, FAILED, FAILED], 2), ([COMPLETED, CANCELLED], 0)])
def test_chain_summary_failed_step_is_the_first_failed_steps_number_or_0(statuses, failed_step):
    steps = [StepResult(i + 1, "", "claude", ended(s)) for i, s in enumerate(statuses)]
    d = ChainSummary(3, steps, 5).to_dict()
    assert list(d) == ["total_steps", "completed_steps", "failed_step", "total_duration_ms",
                       "results"]
    assert (d["total_steps"], d["completed_steps"], d["failed_step"]) == \
        (3, statuses.count(COMPLETED), failed_step)


def test_compare_summary_json_lists_what_ran_then_the_skipped_backends():
    summary = CompareSummary("hi", ["claude"], [CompareResult("claude", "", ended())],
                             [Skipped("codex", "not installed")], 7)
    d = summary.to_dict()
    assert list(d) == ["prompt", "backends", "total_duration_ms", "results", "skipped"]
    assert d["skipped"] == [{"backend": "codex", "reason": "not installed"}]


# -- through the engine, on the fake CLIs -------------------------------------------------------


@pytest.fixture
def cfg(clinvk_home, fake_path):
    return config.load()


def collect(calls):
    return lambda kind, index, payload: calls.append((kind, index, payload))


def test_progress_hands_over_the_very_results_the_summary_holds(cfg):
    calls = []
    summary = orchestrate.run_parallel(
        [{"backend": "claude", "prompt": "a", "name": "one"}, {"backend": "codex", "prompt": "b"}],
        cfg, max_parallel=1, on_progress=collect(calls))
    assert [(k, i, type(p)) for k, i, p in calls] == [
        ("started", 0, Started), ("finished", 0, TaskResult),
        ("started", 1, Started), ("finished", 1, TaskResult)]
    assert calls[0][2] == Started(0, "claude", "one")
    assert [p for k, _, p in calls if k == "finished"] == summary.results
    assert [p.backend for _, _, p in calls] == ["claude", "claude", "codex", "codex"]


def test_chain_progress_reports_each_steps_typed_result(cfg):
    calls = []
    summary = orchestrate.run_chain(
        [{"backend": "claude", "prompt": "a"}, {"backend": "gemini", "prompt": "{{previous}}!"}],
        cfg, on_progress=collect(calls))
    finished = [p for k, _, p in calls if k == "finished"]
    assert finished == summary.results
    assert [(r.step, r.output) for r in finished] == [(1, "echo: a"), (2, "echo: echo: a!")]


def test_compare_skips_a_backend_disabled_in_the_configuration(clinvk_home, fake_path):
    (clinvk_home / "config.yaml").write_text("backends:\n  codex:\n    enabled: false\n")
    calls = []
    summary = orchestrate.run_compare("hi", ["claude", "codex"], config.load(),
                                      on_progress=collect(calls))
    assert summary.backends == ["claude"]
    assert [s.backend for s in summary.skipped] == ["codex"]
    assert "disabled" in summary.skipped[0].reason
    assert ("skipped", 1, summary.skipped[0]) in calls


def test_compare_with_every_backend_disabled_fails_before_anything_runs(clinvk_home, fake_path,
                                                                       record):
    (clinvk_home / "config.yaml").write_text(
        "backends:\n  codex:\n    enabled: false\n  gemini:\n    enabled: false\n")
    with pytest.raises(execute.ExecError) as err:
        orchestrate.run_compare("hi", ["codex", "gemini"], config.load())
    assert err.value.kind == execute.ErrorKind.NOT_INSTALLED
    assert "no backend left to compare" in str(err.value)
    assert records(record) == []
