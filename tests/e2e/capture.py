"""Regenerate the real-CLI fixtures: tests/fixtures/real/<backend>/<case>.{stdout,stderr,exit}
and tests/fixtures/help/*.txt, from the CLIs realclis installs, against the fake model API.

    python3 -m tests.e2e.realclis capture   # everything
    python3 -m tests.e2e.realclis capture qwen   # only those of one backend (or several)
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import List

from tests.e2e.realclis import (CLAUDE_JSON, CLAUDE_STREAM, CODEX_JSON, COPILOT_JSON,
                                FIXTURES, GEMINI_JSON, GEMINI_STREAM, OPENCODE_JSON, QWEN_JSON,
                                QWEN_STREAM, bin_dir, cache_dir, no_egress_env, resume_argv,
                                run_cli, session_id_of)

# (backend, case, argv, fake set-up) for `capture`; "resume" cases first run CLAUDE_JSON-like turn 1.
CAPTURE_CASES = [
    ("claude", "json_ok", CLAUDE_JSON, {}),
    ("claude", "stream_json_ok", CLAUDE_STREAM, {}),
    ("claude", "stream_json_no_partial_ok", CLAUDE_STREAM[:-1], {}),
    ("claude", "resume_ok", CLAUDE_JSON, {"resume": True}),
    ("claude", "api_error_500_json", CLAUDE_JSON, {"fail": 500}),
    ("claude", "api_error_400_stream_json", CLAUDE_STREAM, {"fail": 400}),
    ("claude", "tool_use_stream_json", CLAUDE_STREAM, {"tool": ("Read", {"file_path": "{work}/note.txt"})}),
    ("claude", "bypass_permissions_as_root", CLAUDE_JSON + ["--permission-mode", "bypassPermissions"], {}),
    ("codex", "json_ok", CODEX_JSON, {}),
    ("codex", "resume_ok", CODEX_JSON, {"resume": True}),
    ("codex", "api_error_500_json", CODEX_JSON, {"fail": 500}),
    ("codex", "api_error_400_json", CODEX_JSON, {"fail": 400}),
    ("codex", "resume_rejects_sandbox_after_resume",
     ["codex", "exec", "resume", "--json", "--skip-git-repo-check", "-s", "read-only", "{session}", "-"],
     {"resume": "raw"}),
    ("gemini", "json_ok", GEMINI_JSON, {}),
    ("gemini", "stream_json_ok", GEMINI_STREAM, {}),
    ("gemini", "resume_ok", GEMINI_JSON, {"resume": True}),
    ("gemini", "api_error_500_json", GEMINI_JSON, {"fail": 500}),
    ("gemini", "api_error_400_stream_json", GEMINI_STREAM, {"fail": 400}),
    ("qwen", "json_ok", QWEN_JSON, {}),
    ("qwen", "stream_json_ok", QWEN_STREAM, {}),
    ("qwen", "stream_json_no_partial_ok", QWEN_STREAM[:-1], {}),
    ("qwen", "resume_ok", QWEN_JSON, {"resume": True}),
    ("qwen", "resume_unknown_json", QWEN_JSON + ["--resume", "3f0c2a9e-8d41-4c1b-9a77-0e5f3b2d1c4a"], {}),
    ("qwen", "api_error_401_json", QWEN_JSON, {"fail": 401}),
    ("qwen", "api_error_401_stream_json", QWEN_STREAM, {"fail": 401}),
    ("qwen", "tool_use_stream_json", QWEN_STREAM, {"tool": ("read_file", {"file_path": "{work}/note.txt"})}),
    ("qwen", "max_session_turns_json", QWEN_JSON + ["--max-session-turns", "1"],
     {"tool": ("read_file", {"file_path": "{work}/note.txt"})}),
    ("qwen", "no_auth_type_json", QWEN_JSON, {"no_user_settings": True}),
    ("copilot", "json_ok", COPILOT_JSON, {}),
    ("copilot", "resume_ok", COPILOT_JSON, {"resume": True}),
    ("copilot", "resume_unknown_json", COPILOT_JSON + ["--resume=3f0c2a9e-8d41-4c1b-9a77-0e5f3b2d1c4a"], {}),
    ("copilot", "api_error_400_json", COPILOT_JSON, {"fail": 400}),
    ("copilot", "api_error_401_json", COPILOT_JSON, {"fail": 401}),
    ("copilot", "tool_use_json", COPILOT_JSON, {"tool": ("view", {"path": "{work}/note.txt"})}),
    ("copilot", "tool_denied_json", COPILOT_JSON,
     {"tool": ("bash", {"command": "touch made.txt", "description": "make a file"})}),
    ("copilot", "no_auth_json", COPILOT_JSON, {"unset": ["COPILOT_PROVIDER_BASE_URL", "COPILOT_OFFLINE"]}),
    ("opencode", "json_ok", OPENCODE_JSON, {}),
    ("opencode", "resume_ok", OPENCODE_JSON, {"resume": True}),
    ("opencode", "resume_unknown_json", ["opencode", "run", "--format", "json", "--session=ses_3f0c2a9e8d41fe4c1b9a770e5f"], {}),
    ("opencode", "api_error_400_json", OPENCODE_JSON, {"fail": 400}),
    ("opencode", "api_error_401_json", OPENCODE_JSON, {"fail": 401}),
    ("opencode", "tool_use_json", OPENCODE_JSON, {"tool": ("read", {"filePath": "{work}/note.txt"})}),
    ("opencode", "tool_denied_json", OPENCODE_JSON,
     {"tool": ("bash", {"command": "touch made.txt", "description": "make a file"}),
      "env": {"OPENCODE_PERMISSION": '{"bash":"ask"}'}}),
]
CAPTURE_PROMPT = "Say hello to the fixture"
CAPTURE_FIRST_PROMPT = "Remember the word kumquat"


def capture(backends: List[str] = ()) -> None:
    """Regenerate tests/fixtures/help and tests/fixtures/real/<backend>/<case>.{stdout,stderr,exit}
    (only those of ``backends`` when given; the other entries of cases.json are kept).

    Volatile paths are rewritten (/home/user, /work/project, 127.0.0.1:PORT, <npm-cache>) so a
    re-capture only changes what the CLIs really changed; ids and timestamps stay as printed.
    """
    import tempfile
    from tests.fakes.fake_model_api import FakeModelAPI

    if not bin_dir():
        raise RuntimeError("real CLIs not installed; run python3 -m tests.e2e.realclis install")
    capture_help(backends)
    cases_file = FIXTURES / "real" / "cases.json"
    manifest = json.loads(cases_file.read_text()) if backends else {}
    for backend, case, argv, setup in CAPTURE_CASES:
        if backends and backend not in backends:
            continue
        with tempfile.TemporaryDirectory(prefix="clinvk-capture-") as scratch, FakeModelAPI() as api:
            home, work = os.path.join(scratch, "home"), os.path.join(scratch, "work")
            os.makedirs(work)
            Path(work, "note.txt").write_text("the secret word is pineapple\n")
            env = no_egress_env(api.url, home)
            if setup.get("no_user_settings"):
                os.remove(os.path.join(home, ".%s" % backend, "settings.json"))
            env.update(setup.get("env") or {})
            for name in setup.get("unset") or ():
                env.pop(name, None)
            if setup.get("resume"):
                first = run_cli(_base(argv), CAPTURE_FIRST_PROMPT, env, work)
                session = session_id_of(first.stdout)
                argv = (resume_argv(argv, session) if setup["resume"] is True
                        else [a.replace("{session}", session) for a in argv])
            if setup.get("fail"):
                api.fail_every(setup["fail"])
            if setup.get("tool"):
                name, tool_input = setup["tool"]
                api.queue_tool_use(name, {k: v.replace("{work}", work) for k, v in tool_input.items()})
            proc = run_cli(argv, CAPTURE_PROMPT, env, work)
            scrub = _scrubber(home=home, work=work, url=api.url)
            out_dir = FIXTURES / "real" / backend
            out_dir.mkdir(parents=True, exist_ok=True)
            (out_dir / (case + ".stdout")).write_text(scrub(proc.stdout))
            (out_dir / (case + ".stderr")).write_text(scrub(proc.stderr))
            (out_dir / (case + ".exit")).write_text("%d\n" % proc.returncode)
            manifest["%s/%s" % (backend, case)] = {
                "argv": [scrub(a) for a in argv], "stdin": CAPTURE_PROMPT, "setup": setup,
                "first_turn_stdin": CAPTURE_FIRST_PROMPT if setup.get("resume") else None,
                "exit": proc.returncode}
            print("%-8s %-40s exit %d" % (backend, case, proc.returncode))
    cases_file.write_text(json.dumps(manifest, indent=2) + "\n")


def _base(argv: List[str]) -> List[str]:
    """The plain first-turn invocation for a resume case."""
    if argv[0] == "codex":
        return CODEX_JSON
    return [a for a in argv if a != "{session}"]


def _scrubber(home: str, work: str, url: str):
    # npm-more first: the npm prefix's path is the start of it.
    replacements = [(str(cache_dir("npm-more")), "<npm-cache>"), (str(cache_dir()), "<npm-cache>"),
                    (work, "/work/project"), (home, "/home/user"),
                    (url[len("http://"):], "127.0.0.1:PORT")]
    # claude 2.1.197 names a project folder after its cwd with every non-alphanumeric turned "-".
    replacements.append((re.sub(r"[^A-Za-z0-9]", "-", work), "-work-project"))

    def scrub(text: str) -> str:
        for old, new in replacements:
            text = text.replace(old, new)
        return text
    return scrub


def capture_help(backends: List[str] = ()) -> None:
    """Write tests/fixtures/help/*.txt: --help of each headless entry point and each --version
    (only those of ``backends`` when given)."""
    import tempfile
    with tempfile.TemporaryDirectory(prefix="clinvk-help-") as home:
        env = no_egress_env("http://127.0.0.1:9", home)
        out_dir = FIXTURES / "help"
        out_dir.mkdir(parents=True, exist_ok=True)
        for name, argv in [("claude", ["claude", "--help"]), ("codex_exec", ["codex", "exec", "--help"]),
                           ("codex_exec_resume", ["codex", "exec", "resume", "--help"]),
                           ("gemini", ["gemini", "--help"]), ("claude_version", ["claude", "--version"]),
                           ("codex_version", ["codex", "--version"]), ("gemini_version", ["gemini", "--version"]),
                           ("qwen", ["qwen", "--help"]), ("qwen_version", ["qwen", "--version"]),
                           ("copilot", ["copilot", "--help"]), ("copilot_version", ["copilot", "--version"]),
                           # copilot 1.0.102 documents --sandbox here only, not in --help.
                           ("copilot_help_sandbox", ["copilot", "help", "sandbox"]),
                           ("opencode_run", ["opencode", "run", "--help"]),
                           ("opencode_version", ["opencode", "--version"])]:
            if backends and argv[0] not in backends:
                continue
            proc = run_cli(argv, "", env, home, timeout=60)
            # opencode 1.18.33 prints its help on stderr.
            (out_dir / (name + ".txt")).write_text(proc.stdout or proc.stderr)
