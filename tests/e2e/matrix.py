"""The conformance matrix: backend x CLI version x feature, generated from the end-to-end tier's
results and written into the README between its conformance-matrix markers.

    python3 -m tests.e2e.matrix run                      # the pinned CLIs: run, record, render
    python3 -m tests.e2e.matrix run --versions latest    # the newest published CLIs
    python3 -m tests.e2e.matrix record --versions latest RESULTS.xml...   # a run made elsewhere
    python3 -m tests.e2e.matrix render                   # the README section from what is recorded

``run`` runs pytest on tests/e2e with CLINVK_E2E_VERSIONS set and --junitxml, ``record`` keeps
each test's outcome, the date and the CLI versions in tests/e2e/conformance/<versions>.json, and
``render`` turns every recorded set into one table per set. A cell counts the tests that FEATURES
maps to it: "✓ 3" (all passed), "✗ 1 of 3" (one failed), "skipped", "not tested". Use the
Python that has the test requirements (~/.cache/clinvk-test/venv-dev/bin/python).
"""
from __future__ import annotations

import datetime
import json
import os
import re
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from clinvk_lib.backends import base, options
from tests.e2e import realclis

RESULTS = Path(__file__).resolve().parent / "conformance"
README = realclis.REPO_ROOT / "README.md"
BEGIN, END = "<!-- conformance-matrix:begin -->", "<!-- conformance-matrix:end -->"
BACKENDS = list(base.NAMES)
# The columns, in order; a column with no tests and a reason says why instead of "not tested".
NOT_BUILT: Dict[str, str] = {}
COLUMNS = ["json", "stream deltas", "resume", "ephemeral", "system prompt", "structured output",
           "tool bridge", "MCP", "OpenAI + Anthropic APIs", "workdir config kept out"]

# Test function name -> (the columns it proves, its backend or None). None: the backend is the
# test's parameter when that is a backend name, else X of its module test_X_real.
FEATURES: Dict[str, Tuple[Tuple[str, ...], Optional[str]]] = {
    # the command line and the native API
    "test_json_output_from_the_real_cli": (("json",), None),
    "test_prompt_json_on_the_real_cli": (("json",), None),
    "test_json_prompt_is_answered_by_qwen": (("json",), None),
    "test_json_prompt_reaches_copilots_model_and_its_reply_comes_back": (("json",), None),
    "test_json_prompt_reaches_opencodes_model_with_usage": (("json",), None),
    "test_native_api_prompt_is_answered_by_opencode": (("json",), None),
    "test_claude_json_answers_prompt_from_stdin": (("json",), "claude"),
    "test_codex_exec_json_answers_prompt_from_stdin": (("json",), "codex"),
    "test_gemini_json_answers_prompt_from_stdin": (("json",), "gemini"),
    "test_stream_json_from_the_real_cli": (("stream deltas",), None),
    "test_prompt_stream_json_on_the_real_cli": (("stream deltas",), None),
    "test_claude_stream_json_with_partial_messages_streams_text_deltas": (("stream deltas",), "claude"),
    "test_claude_stream_json_lines_arrive_while_model_is_still_streaming": (("stream deltas",), "claude"),
    "test_gemini_stream_json_streams_assistant_deltas": (("stream deltas",), "gemini"),
    "test_stream_prompt_gives_real_token_deltas": (("stream deltas",), None),
    "test_stream_json_carries_copilots_token_deltas": (("stream deltas",), None),
    "test_native_api_stream_is_answered_by_copilot": (("stream deltas",), None),
    "test_stream_json_ends_with_done_though_opencode_prints_no_final_line": (("stream deltas",), None),
    "test_resume_last_gives_the_model_the_first_turn": (("resume",), None),
    "test_resume_carries_a_fact_from_turn_1_to_turn_2": (("resume",), None),
    "test_resume_carries_a_fact_from_turn_one_to_turn_two": (("resume",), None),
    "test_claude_resume_sends_first_turn_to_model": (("resume",), "claude"),
    "test_codex_exec_resume_sends_first_turn_to_model": (("resume",), "codex"),
    "test_gemini_resume_sends_first_turn_to_model": (("resume",), "gemini"),
    "test_ephemeral_gemini_run_leaves_no_gemini_session": (("ephemeral",), "gemini"),
    "test_ephemeral_run_leaves_no_chat_and_no_session": (("ephemeral",), None),
    "test_ephemeral_run_leaves_nothing_in_copilots_session_store": (("ephemeral",), None),
    "test_ephemeral_run_leaves_no_opencode_session": (("ephemeral",), None),
    "test_ephemeral_run_leaves_no_transcript_of_the_cli": (("ephemeral",), None),
    "test_system_prompt_replaces_the_agents_prompt": (("system prompt",), None),
    # structured output
    "test_real_claude_is_held_to_the_schema_by_its_structured_output_tool": (("structured output",), "claude"),
    "test_real_codex_sends_the_schema_file_as_text_format": (("structured output",), "codex"),
    "test_real_gemini_reads_the_schema_in_its_prompt": (("structured output",), "gemini"),
    "test_real_gemini_gets_one_corrective_turn_in_the_same_session": (("structured output",), "gemini"),
    "test_real_cli_stream_sends_the_checked_json_once": (("structured output",), None),
    "test_structured_output_from_the_schema_in_the_prompt": (("structured output",), None),
    # MCP: clinvk mcp's clinvk_prompt answered by the backend, and claude as its client
    "test_mcp_prompt_is_answered_by_qwen": (("MCP",), None),
    "test_mcp_prompt_is_answered_by_copilot": (("MCP",), None),
    "test_mcp_prompt_is_answered_by_opencode": (("MCP",), None),
    "test_mcp_prompt_is_answered_by_the_real_cli": (("MCP",), None),
    "test_claude_calls_clinvk_prompt_and_codex_answer_reaches_the_model": (("MCP",), "codex"),
    "test_claude_mcp_add_registers_clinvk_and_its_health_check_connects": (("MCP",), "claude"),
    # the OpenAI, Anthropic and Responses APIs
    "test_system_prompt_reaches_the_model": (("system prompt", "OpenAI + Anthropic APIs"), None),
    "test_copilot_system_prompt_through_the_openai_api_opens_the_prompt":
        (("system prompt", "OpenAI + Anthropic APIs"), "copilot"),
    "test_openai_chat_completion_is_answered_by_qwen": (("system prompt", "OpenAI + Anthropic APIs"), None),
    "test_session_header_continues_the_real_cli_session": (("resume", "OpenAI + Anthropic APIs"), None),
    "test_previous_response_id_continues_the_real_cli_session": (("resume", "OpenAI + Anthropic APIs"), None),
    "test_openai_chat_completion_on_the_real_cli": (("OpenAI + Anthropic APIs",), None),
    "test_openai_stream_on_the_real_cli": (("OpenAI + Anthropic APIs",), None),
    "test_anthropic_message_on_the_real_cli": (("OpenAI + Anthropic APIs",), None),
    "test_anthropic_stream_on_the_real_cli": (("OpenAI + Anthropic APIs",), None),
    "test_codex_exec_completes_a_turn_answered_by_each_backend": (("OpenAI + Anthropic APIs",), None),
    "test_responses_stream_on_the_real_cli": (("OpenAI + Anthropic APIs",), None),
    "test_claude_code_with_a_real_cli_behind_clinvk": (("OpenAI + Anthropic APIs",), None),
    "test_openai_stream_from_qwen_arrives_in_pieces": (("OpenAI + Anthropic APIs",), None),
    "test_anthropic_message_is_answered_by_qwen": (("OpenAI + Anthropic APIs",), None),
    "test_openai_chat_completions_are_answered_by_copilot": (("OpenAI + Anthropic APIs",), None),
    "test_anthropic_messages_are_answered_by_copilot": (("OpenAI + Anthropic APIs",), None),
    "test_openai_chat_completions_are_answered_by_opencode": (("OpenAI + Anthropic APIs",), None),
    "test_anthropic_messages_are_answered_by_opencode": (("OpenAI + Anthropic APIs",), None),
    # the tool bridge: the client's tools called by the agent, on every dialect
    "test_openai_sdk_function_call_round_trip_on_the_real_claude": (("tool bridge",), "claude"),
    "test_openai_sdk_streamed_rounds_on_the_real_claude": (("tool bridge",), "claude"),
    "test_a_parked_run_times_out_and_its_id_is_then_unknown": (("tool bridge",), "claude"),
    "test_two_calls_in_one_turn_and_a_second_round": (("tool bridge",), None),
    "test_openai_sdk_round_trip_on_codex_and_gemini": (("tool bridge",), None),
    "test_responses_function_call_rounds_whole_and_streamed": (("tool bridge",), None),
    "test_anthropic_sdk_tool_use_round_trip": (("tool bridge",), None),
    "test_openai_agents_sdk_function_tool_on_the_real_cli": (("tool bridge",), None),
    # a server run does not run what the workdir configures
    "test_server_run_executes_nothing_the_workdir_configures": (("workdir config kept out",), None),
    "test_server_run_starts_no_program_the_workdirs_git_configuration_names":
        (("workdir config kept out",), None),
    "test_planted_project_config_does_not_run_on_the_server": (("workdir config kept out",), None),
    "test_planted_project_config_does_not_run_through_the_server": (("workdir config kept out",), None),
    "test_server_refuses_a_workdir_copilots_config_trusts": (("workdir config kept out",), None),
    "test_server_refuses_a_workdir_whose_plugin_opencode_would_run": (("workdir config kept out",), None),
    "test_mcp_refuses_a_workdir_whose_plugin_opencode_would_run": (("workdir config kept out",), None),
}


# -- results ----------------------------------------------------------------------------------

def outcomes_from_junit(paths: List[str]) -> Dict[str, Dict[str, str]]:
    """``module::test[param]`` -> {"outcome": passed|failed|skipped, "message": first line of
    the failure or skip reason}, from pytest --junitxml files."""
    found: Dict[str, Dict[str, str]] = {}
    for path in paths:
        for case in ET.parse(path).getroot().iter("testcase"):
            module = case.get("classname", "").rsplit(".", 1)[-1]
            outcome, message = "passed", ""
            for child in case:
                if child.tag in ("failure", "error", "skipped"):
                    outcome = "skipped" if child.tag == "skipped" else "failed"
                    message = (child.get("message") or child.text or "").strip()
                    message = message.splitlines()[0][:200] if message else ""
                    break
            found["%s::%s" % (module, case.get("name", ""))] = {"outcome": outcome,
                                                                 "message": message}
    return found


def record(version_set: str, junit_files: List[str], date: str = "") -> Path:
    """Write tests/e2e/conformance/<version_set>.json from junit files: the date, the CLI
    versions installed for that set, every test's outcome."""
    before = os.environ.get(realclis.VERSIONS_VARIABLE)
    os.environ[realclis.VERSIONS_VARIABLE] = version_set     # what installed_versions reads
    try:
        versions = realclis.installed_versions()
    finally:
        if before is None:
            del os.environ[realclis.VERSIONS_VARIABLE]
        else:
            os.environ[realclis.VERSIONS_VARIABLE] = before
    data = {"versions": version_set,
            "date": date or datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
            "cli_versions": versions, "tests": outcomes_from_junit(junit_files)}
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / ("%s.json" % version_set)
    out.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    return out


# -- the matrix ------------------------------------------------------------------------------

def cells_of(test_id: str) -> List[Tuple[str, str]]:
    """The (backend, column) cells one ``module::test[param]`` result counts in."""
    module, _, name = test_id.partition("::")
    function, _, param = name.partition("[")
    columns, backend = FEATURES.get(function, ((), None))
    if backend is None:
        words = re.split(r"[-\]]", param)
        backend = next((w for w in words if w in BACKENDS), "")
    if not backend:
        m = re.match(r"test_(\w+?)_real$", module)
        backend = m.group(1) if m and m.group(1) in BACKENDS else ""
    return [(backend, column) for column in columns] if backend else []


def matrix(tests: Dict[str, Dict[str, str]]) -> Dict[Tuple[str, str], List[str]]:
    """(backend, column) -> the outcomes of its tests."""
    cells: Dict[Tuple[str, str], List[str]] = {}
    for test_id, result in tests.items():
        for cell in cells_of(test_id):
            cells.setdefault(cell, []).append(result["outcome"])
    return cells


def cell_text(backend: str, column: str, outcomes: List[str]) -> str:
    """What one cell shows: the tests' outcomes, with what the CLI lacks when that shapes it."""
    if not outcomes:
        return NOT_BUILT.get(column, "not tested")
    ran = [o for o in outcomes if o != "skipped"]
    failed = ran.count("failed")
    if not ran:
        text = "skipped"
    elif failed:
        text = "✗ %d of %d" % (failed, len(ran))
    else:
        text = "✓ %d" % len(ran)
    return text + lacks(backend, column)


def lacks(backend: str, column: str) -> str:
    """A note for a feature the CLI itself lacks, read from the backend module."""
    b = base.get(backend)
    if column == "stream deltas" and b.option_notes.get("streaming", "").startswith("No token"):
        return " (whole messages)"
    if column == "system prompt" and b.ignored_options(options.Options(system_prompt="x")):
        return " (no flag: in the prompt)"
    return ""


def table(data: Dict[str, object]) -> List[str]:
    """The markdown table of one recorded set, one row per backend."""
    tests = data["tests"]
    cells = matrix(tests)  # type: ignore[arg-type]
    versions = data.get("cli_versions") or {}
    rows = ["| backend | version | %s |" % " | ".join(COLUMNS),
            "|---|---|%s|" % "|".join("---" for _ in COLUMNS)]
    for backend in BACKENDS:
        rows.append("| %s | %s | %s |" % (backend, versions.get(backend, "not installed"), " | ".join(
            cell_text(backend, c, cells.get((backend, c), [])) for c in COLUMNS)))
    return rows


def summary(data: Dict[str, object]) -> List[str]:
    """The totals, then every failed test with the first line of its failure."""
    tests: Dict[str, Dict[str, str]] = data["tests"]  # type: ignore[assignment]
    counts = {k: sum(1 for r in tests.values() if r["outcome"] == k)
              for k in ("passed", "failed", "skipped")}
    lines = ["%(passed)d passed, %(failed)d failed, %(skipped)d skipped (every end-to-end test, "
             "the matrix's and the others)." % counts]
    for test_id, result in sorted(tests.items()):
        if result["outcome"] == "failed":
            lines.append("- failed: `%s`: %s" % (test_id, result["message"] or "(no message)"))
    return lines


def section(sets: List[Dict[str, object]]) -> str:
    """The generated part of the README's Conformance matrix section."""
    out = [BEGIN, "<!-- generated by python3 -m tests.e2e.matrix; edit tests/e2e/matrix.py -->"]
    for data in sets:
        out += ["", "**%s CLIs**, run %s:" % (str(data["versions"]).capitalize(), data["date"]), ""]
        out += table(data) + [""] + summary(data)
    return "\n".join(out + ["", END])


def render(readme: Path = README) -> None:
    """Rewrite the README between the markers from every recorded set (pinned first)."""
    sets = [json.loads((RESULTS / ("%s.json" % v)).read_text())
            for v in realclis.VERSION_SETS if (RESULTS / ("%s.json" % v)).exists()]
    text = readme.read_text()
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise RuntimeError("%s has no %s ... %s markers" % (readme, BEGIN, END))
    readme.write_text(text[:start] + section(sets) + text[end + len(END):])


def run(version_set: str, pytest_args: List[str]) -> int:
    """Run the end-to-end tier on ``version_set``, record it and render; pytest's exit code."""
    env = dict(os.environ, **{realclis.VERSIONS_VARIABLE: version_set})
    with tempfile.TemporaryDirectory(prefix="clinvk-matrix-") as scratch:
        junit = os.path.join(scratch, "e2e.xml")
        code = subprocess.call([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                "-rs", "tests/e2e", "--junitxml=" + junit] + pytest_args,
                               cwd=str(realclis.REPO_ROOT), env=env)
        if not os.path.exists(junit):
            raise RuntimeError("pytest wrote no results (exit %d)" % code)
        print("recorded %s" % record(version_set, [junit]))
    render()
    return code


def main(argv: List[str]) -> int:
    version_set = "pinned"
    if "--versions" in argv:
        at = argv.index("--versions")
        version_set = argv[at + 1] if at + 1 < len(argv) else ""
        argv = argv[:at] + argv[at + 2:]
    if version_set not in realclis.VERSION_SETS or not argv or \
            argv[0] not in ("run", "record", "render"):
        print("usage: python3 -m tests.e2e.matrix run|record FILE...|render "
              "[--versions pinned|latest] [PYTEST ARGS...]", file=sys.stderr)
        return 2
    if argv[0] == "run":
        return run(version_set, argv[1:])
    if argv[0] == "record":
        print("recorded %s" % record(version_set, argv[1:]))
    render()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
