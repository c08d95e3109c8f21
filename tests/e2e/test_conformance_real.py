"""Cells of the conformance matrix (tests/e2e/matrix.py) that the per-backend end-to-end files
leave open, each on the REAL CLI against the fake model API: an ephemeral run of claude and
codex leaves no transcript of the CLI (a kept run, the control, leaves one where the test
looks), structured output from the backends that get the schema in their prompt (qwen,
copilot, opencode), the system prompt through the OpenAI API on copilot (it has no flag: the
prompt opens with it), and clinvk mcp's clinvk_prompt answered by claude, codex and gemini.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest

from tests.e2e.conftest import KIND, PYZ, mcp_prompt, require_more_cli
from tests.fakes.fake_model_api import schema_example

openai = pytest.importorskip("openai")
pydantic = pytest.importorskip("pydantic")
pytestmark = pytest.mark.usefixtures("built_pyz")

# Where each CLI keeps the transcript of a session (claude 2.1.197, codex-cli 0.169.0).
TRANSCRIPTS = {"claude": ".claude/projects/*/*.jsonl", "codex": ".codex/sessions/**/rollout-*.jsonl"}


class Pet(pydantic.BaseModel):
    name: str
    legs: int
    tags: List[str]


def clinvk(env: Dict[str, str], args: List[str]) -> subprocess.CompletedProcess:
    p = subprocess.run([sys.executable, PYZ] + args, capture_output=True, env=env, timeout=240,
                       stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stderr.decode() + p.stdout.decode()
    return p


def transcripts(home: str, backend: str) -> List[str]:
    return sorted(str(p) for p in Path(home).glob(TRANSCRIPTS[backend]))


def client(port: int):
    return openai.OpenAI(base_url="http://127.0.0.1:%d/openai/v1" % port, api_key="unused",
                         max_retries=0, timeout=240)


@pytest.mark.parametrize("backend", sorted(TRANSCRIPTS))
def test_ephemeral_run_leaves_no_transcript_of_the_cli(backend, real_clis, fake_api,
                                                       clinvk_env, workdir, real_home):
    clinvk(clinvk_env, ["-b", backend, "-w", workdir, "a kept turn"])
    kept = transcripts(real_home, backend)
    assert kept, "the kept run left no transcript under %s" % TRANSCRIPTS[backend]
    d = json.loads(clinvk(clinvk_env, ["-b", backend, "-w", workdir, "--ephemeral", "-o",
                                       "json", "forget me"]).stdout)
    assert d["content"] == "FAKE-REPLY: forget me" and d["session_id"] == ""
    assert transcripts(real_home, backend) == kept
    listing = json.loads(clinvk(clinvk_env, ["sessions", "list", "--json"]).stdout)
    assert listing["total"] == 1


@pytest.mark.parametrize("backend", ["qwen", "copilot", "opencode"])
def test_structured_output_from_the_schema_in_the_prompt(backend, serve_port, fake_api):
    require_more_cli(backend)
    completion = client(serve_port).chat.completions.parse(
        model=backend, messages=[{"role": "user", "content": "Describe a pet."}],
        response_format=Pet)
    pet = completion.choices[0].message.parsed
    assert pet == Pet(**schema_example(Pet.model_json_schema()))
    asked = [r for r in fake_api.main_requests(KIND[backend]) if "<json_schema>" in r["user_text"]]
    assert asked and asked[-1]["user_text"].startswith("Describe a pet.")


def test_copilot_system_prompt_through_the_openai_api_opens_the_prompt(serve_port, fake_api):
    require_more_cli("copilot")
    client(serve_port).chat.completions.create(model="copilot", messages=[
        {"role": "system", "content": "Always answer in Latin."},
        {"role": "user", "content": "hi"}])
    sent = [r["user_text"] for r in fake_api.main_requests("chat")]
    assert any(t.startswith("<system>\nAlways answer in Latin.\n</system>") for t in sent), sent


@pytest.mark.parametrize("backend", ["claude", "codex", "gemini"])
def test_mcp_prompt_is_answered_by_the_real_cli(backend, real_clis, fake_api, clinvk_env,
                                                workdir):
    result = mcp_prompt(clinvk_env, {"backend": backend, "prompt": "hello mcp",
                                     "workdir": workdir}, cwd=workdir)
    assert not result.get("isError"), result
    assert result["structuredContent"]["content"] == "FAKE-REPLY: hello mcp"
