"""clinvk (the built zipapp) driving the REAL claude, codex and gemini against the fake model API.

Each test runs `python3 dist/clinvk.pyz ...` as a user would, with the no-egress environment
and a private CLINVK_HOME, and checks both what clinvk prints and what the model received.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Dict, List

import pytest

from clinvk_lib.backends import base
from tests.e2e import realclis
from tests.e2e.conftest import BACKENDS, KIND, PYZ, user_texts

pytestmark = pytest.mark.usefixtures("built_pyz")


def clinvk(env: Dict[str, str], args: List[str], stdin: str = "", cwd: str = None,
           timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, PYZ] + args, input=stdin.encode("utf-8"),
                          capture_output=True, env=env, cwd=cwd, timeout=timeout)


@pytest.mark.parametrize("backend", BACKENDS)
def test_json_output_from_the_real_cli(backend, fake_api, clinvk_env, workdir):
    p = clinvk(clinvk_env, ["-b", backend, "-o", "json", "-w", workdir, "what is two plus two"])
    assert p.returncode == 0, p.stderr.decode()
    d = json.loads(p.stdout)
    assert d["content"] == "FAKE-REPLY: what is two plus two"
    assert d["backend"] == backend and d["session_id"] and d["backend_session_id"]
    assert d["usage"]["output_tokens"] > 0
    assert user_texts(fake_api, backend) == ["what is two plus two"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_stream_json_from_the_real_cli(backend, fake_api, clinvk_env, workdir):
    p = clinvk(clinvk_env, ["-b", backend, "-o", "stream-json", "-w", workdir, "stream please"])
    assert p.returncode == 0, p.stderr.decode()
    events = [json.loads(line) for line in p.stdout.decode().splitlines()]
    assert events[0]["type"] == "init" and events[-1]["type"] == "done"
    messages = [e for e in events if e["type"] == "message"]
    text = "".join(e["content"]["text"] for e in messages if e["content"]["is_partial"]) or \
        "".join(e["content"]["text"] for e in messages)
    assert text == "FAKE-REPLY: stream please"
    if backend != "codex":        # codex prints its message whole (no token deltas)
        assert sum(1 for e in messages if e["content"]["is_partial"]) >= 2
    assert "stream please" not in [e["content"]["text"] for e in messages]  # gemini's echo
    assert events[-1]["content"]["usage"]["output_tokens"] > 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_dash_leading_prompt_reaches_the_model(backend, fake_api, clinvk_env, workdir):
    p = clinvk(clinvk_env, ["-b", backend, "-w", workdir, "--ephemeral", "--", "--version -h"])
    assert p.returncode == 0, p.stderr.decode()
    assert p.stdout.decode().strip() == "FAKE-REPLY: --version -h"


@pytest.mark.parametrize("backend", BACKENDS)
def test_large_non_ascii_prompt_on_stdin_reaches_the_model(backend, fake_api, clinvk_env, workdir):
    prompt = "Grüße ✓ " + "lorem ipsum dolor " * 12000   # ~210 kB
    p = clinvk(clinvk_env, ["-b", backend, "-w", workdir, "--ephemeral"], stdin=prompt)
    assert p.returncode == 0, p.stderr.decode()
    assert prompt.strip() in user_texts(fake_api, backend)[-1]


def test_missing_backend_is_reported_with_exit_3(clinvk_env, workdir):
    env = dict(clinvk_env, PATH="/usr/bin:/bin")
    p = clinvk(env, ["-b", "codex", "-w", workdir, "hi"])
    assert p.returncode == 3
    assert b"backend 'codex' is not installed (no 'codex' on PATH)" in p.stderr


@pytest.mark.parametrize("backend", BACKENDS)
def test_resume_last_gives_the_model_the_first_turn(backend, fake_api, clinvk_env, workdir):
    p = clinvk(clinvk_env, ["-b", backend, "-w", workdir, "remember the code word PELICAN-42"])
    assert p.returncode == 0, p.stderr.decode()
    p = clinvk(clinvk_env, ["resume", "--last", "-b", backend, "what was the code word?"],
               cwd=workdir)
    assert p.returncode == 0, p.stderr.decode()
    assert p.stdout.decode().strip() == "FAKE-REPLY: what was the code word?"
    second = fake_api.main_requests(KIND[backend])[-1]
    assert "PELICAN-42" in json.dumps(second["json"])
    listing = json.loads(clinvk(clinvk_env, ["sessions", "list", "--json"]).stdout)
    assert listing["total"] == 1 and listing["sessions"][0]["turn_count"] == 2


def test_ephemeral_gemini_run_leaves_no_gemini_session(fake_api, clinvk_env, workdir):
    from tests.e2e import realclis
    p = clinvk(clinvk_env, ["-b", "gemini", "-w", workdir, "--ephemeral", "-o", "json", "hi"])
    assert p.returncode == 0, p.stderr.decode()
    sid = json.loads(p.stdout)["backend_session_id"]
    listing = subprocess.run([os.path.join(realclis.bin_dir(), "gemini"), "--skip-trust",
                              "--list-sessions"], capture_output=True, env=clinvk_env,
                             cwd=workdir, stdin=subprocess.DEVNULL, timeout=120)
    assert sid and sid not in listing.stdout.decode()
    assert json.loads(clinvk(clinvk_env, ["sessions", "list", "--json"]).stdout)["total"] == 0


def test_parallel_cli_across_the_three_real_clis(fake_api, clinvk_env, workdir, tmp_path):
    tasks = tmp_path / "tasks.json"
    tasks.write_text(json.dumps({"tasks": [
        {"backend": b, "prompt": "parallel task for %s" % b, "workdir": workdir}
        for b in BACKENDS]}))
    p = clinvk(clinvk_env, ["parallel", "--file", str(tasks), "--json"])
    assert p.returncode == 0, p.stderr.decode()
    d = json.loads(p.stdout)
    assert (d["total_tasks"], d["completed"], d["failed"]) == (3, 3, 0)
    assert [r["output"] for r in d["results"]] == ["FAKE-REPLY: parallel task for %s" % b
                                                   for b in BACKENDS]


def test_chain_cli_claude_then_codex_sends_step_one_reply_to_the_model(fake_api, clinvk_env,
                                                                       workdir, tmp_path):
    chain = tmp_path / "chain.yaml"
    chain.write_text("steps:\n"
                     "  - name: analyze\n    backend: claude\n    prompt: analyze the design\n"
                     "    workdir: '%s'\n"
                     "  - name: improve\n    backend: codex\n    prompt: 'improve: {{previous}}'\n"
                     "    workdir: '%s'\n" % (workdir, workdir))
    p = clinvk(clinvk_env, ["chain", "--file", str(chain), "--json"])
    assert p.returncode == 0, p.stderr.decode() + p.stdout.decode()
    assert json.loads(p.stdout)["completed_steps"] == 2
    assert fake_api.main_requests("openai")[-1]["user_text"] == \
        "improve: FAKE-REPLY: analyze the design"


def test_compare_cli_on_every_installed_real_cli(fake_api, clinvk_env, workdir):
    p = clinvk(clinvk_env, ["compare", "--all-backends", "-w", workdir, "--json", "which is best?"])
    assert p.returncode == 0, p.stderr.decode()
    d = json.loads(p.stdout)
    more = [b for b in realclis.MORE_BINARIES if realclis.more_bin_dir(b)]
    assert [r["backend"] for r in d["results"]] == [b for b in base.NAMES
                                                    if b in BACKENDS + more]
    assert {r["output"] for r in d["results"]} == {"FAKE-REPLY: which is best?"}
