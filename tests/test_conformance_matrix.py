"""The conformance matrix generator (tests/e2e/matrix.py): every test it maps exists, each result
lands in its backend's cell, and the README section it writes shows passes, failures (listed
with their message), skips, cells without tests and the date and versions of the run."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from tests.e2e import matrix

E2E = Path(__file__).resolve().parent / "e2e"


def e2e_test_names():
    names = set()
    for path in E2E.glob("test_*.py"):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                names.add(node.name)
    return names


def test_every_test_the_matrix_maps_exists_in_the_end_to_end_tier():
    assert sorted(set(matrix.FEATURES) - e2e_test_names()) == []


def test_every_mapped_column_is_a_matrix_column():
    used = {c for columns, _ in matrix.FEATURES.values() for c in columns}
    assert used <= set(matrix.COLUMNS)


@pytest.mark.parametrize("test_id, cells", [
    ("test_clinvk_real::test_json_output_from_the_real_cli[gemini]", [("gemini", "json")]),
    ("test_qwen_real::test_json_prompt_is_answered_by_qwen", [("qwen", "json")]),
    ("test_real_clis_direct::test_codex_exec_resume_sends_first_turn_to_model", [("codex", "resume")]),
    ("test_project_config_real::test_server_run_starts_no_program_the_workdirs_git_configuration_names"
     "[codex]", [("codex", "workdir config kept out")]),
    ("test_compat_real::test_system_prompt_reaches_the_model[claude]",
     [("claude", "system prompt"), ("claude", "OpenAI + Anthropic APIs")]),
    ("test_clinvk_real::test_compare_cli_on_every_installed_real_cli", []),
])
def test_a_result_counts_in_the_cells_of_its_backend(test_id, cells):
    assert matrix.cells_of(test_id) == cells


JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest">
 <testcase classname="tests.e2e.test_clinvk_real" name="test_json_output_from_the_real_cli[claude]"/>
 <testcase classname="tests.e2e.test_server_real" name="test_prompt_json_on_the_real_cli[claude]"/>
 <testcase classname="tests.e2e.test_clinvk_real" name="test_json_output_from_the_real_cli[codex]">
  <failure message="AssertionError: assert 1 == 0&#10;more">trace</failure></testcase>
 <testcase classname="tests.e2e.test_server_real" name="test_prompt_json_on_the_real_cli[codex]"/>
 <testcase classname="tests.e2e.test_clinvk_real" name="test_stream_json_from_the_real_cli[codex]"/>
 <testcase classname="tests.e2e.test_qwen_real" name="test_json_prompt_is_answered_by_qwen">
  <skipped type="pytest.skip" message="qwen not installed">skip</skipped></testcase>
</testsuite></testsuites>
"""


@pytest.fixture
def recorded(tmp_path, monkeypatch):
    """A README with the markers, and one recorded run of the pinned CLIs from JUNIT."""
    monkeypatch.setattr(matrix, "RESULTS", tmp_path / "conformance")
    monkeypatch.setattr(matrix.realclis, "installed_versions",
                        lambda: {"claude": "2.1.197", "codex": "0.169.0"})
    junit = tmp_path / "e2e.xml"
    junit.write_text(JUNIT)
    matrix.record("pinned", [str(junit)], date="2026-12-02")
    readme = tmp_path / "README.md"
    readme.write_text("# x\n\n## Conformance matrix\n\n%s\nold\n%s\n\nNotes stay.\n"
                      % (matrix.BEGIN, matrix.END))
    matrix.render(readme)
    return readme.read_text()


def row(text, backend):
    return [c.strip() for c in next(line for line in text.splitlines()
                                    if line.startswith("| %s |" % backend)).strip("|").split("|")]


def test_record_keeps_the_date_the_versions_and_every_outcome(recorded):
    data = json.loads((matrix.RESULTS / "pinned.json").read_text())
    assert (data["date"], data["cli_versions"]["claude"]) == ("2026-12-02", "2.1.197")
    assert data["tests"]["test_clinvk_real::test_json_output_from_the_real_cli[codex]"] == \
        {"outcome": "failed", "message": "AssertionError: assert 1 == 0"}


def test_cells_show_passes_failures_skips_and_missing_tests(recorded):
    claude, codex, qwen = row(recorded, "claude"), row(recorded, "codex"), row(recorded, "qwen")
    at = {c: i + 2 for i, c in enumerate(matrix.COLUMNS)}
    assert claude[:3] == ["claude", "2.1.197", "✓ 2"]
    assert codex[at["json"]] == "✗ 1 of 2"
    assert codex[at["stream deltas"]] == "✓ 1 (whole messages)"
    assert qwen[1:3] == ["not installed", "skipped"]
    assert claude[at["resume"]] == "not tested" and claude[at["tool bridge"]] == "not tested"


def test_the_section_names_the_run_lists_failures_and_keeps_the_rest(recorded):
    assert "**Pinned CLIs**, run 2026-12-02:" in recorded
    assert "- failed: `test_clinvk_real::test_json_output_from_the_real_cli[codex]`: " \
           "AssertionError: assert 1 == 0" in recorded
    assert "old" not in recorded and recorded.endswith(matrix.END + "\n\nNotes stay.\n")
