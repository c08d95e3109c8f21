"""Codex CLI as a CLIENT of clinvk: ``codex exec`` with a model provider whose ``base_url`` is
clinvk's ``/openai/v1`` and ``wire_api = "responses"`` completes a text-only turn answered by
any backend of ``clinvk serve`` (the built zipapp, the real CLIs behind it, the fake model API
behind them). This is "codex with claude or gemini as its model". Also: the Responses API's
``previous_response_id`` on the real CLIs, whose own sessions carry the conversation.
"""

from __future__ import annotations

import json
import os
from typing import Dict

import pytest

from tests.e2e import realclis
from tests.e2e.conftest import BACKENDS, KIND, user_texts


def client_env(fake_url: str, home: str, clinvk_url: str, model: str) -> Dict[str, str]:
    """The no-egress environment for a codex CLIENT whose only model provider is clinvk (its
    own CODEX_HOME, apart from the one the server's codex backend uses)."""
    env = realclis.no_egress_env(fake_url, home)
    config = "\n".join([
        'model = "%s"' % model,
        'model_provider = "clinvk"',
        "check_for_update_on_startup = false",
        "",
        "[analytics]",
        "enabled = false",
        "",
        "[model_providers.clinvk]",
        'name = "clinvk"',
        'base_url = "%s/openai/v1"' % clinvk_url,
        'env_key = "OPENAI_API_KEY"',
        'wire_api = "responses"',
        # One request is one agent turn on the server: never sent twice.
        "request_max_retries = 0",
        "stream_max_retries = 0",
        "stream_idle_timeout_ms = 300000",
        "",
    ])
    with open(os.path.join(env["CODEX_HOME"], "config.toml"), "w") as f:
        f.write(config)
    return env


@pytest.fixture
def base_url(serve_port: int) -> str:
    return "http://127.0.0.1:%d" % serve_port


def sdk_client(base_url: str):
    """The official openai SDK's client for clinvk (the test is skipped without the SDK)."""
    openai = pytest.importorskip("openai")
    return openai.OpenAI(base_url=base_url + "/openai/v1", api_key="unused", max_retries=0,
                         timeout=240)


@pytest.mark.parametrize("backend", BACKENDS)
def test_codex_exec_completes_a_turn_answered_by_each_backend(backend, base_url, fake_api,
                                                             tmp_path, workdir):
    env = client_env(fake_api.url, str(tmp_path / "client-home"), base_url, backend)
    out = realclis.run_cli(["codex", "exec", "--skip-git-repo-check", "-"],
                           "say hello to the fixture", env, workdir, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "FAKE-REPLY:" in out.stdout            # the backend's answer, through clinvk
    texts = user_texts(fake_api, backend)
    assert len(texts) == 1 and "say hello to the fixture" in texts[0]


def test_codex_exec_resume_continues_the_conversation(base_url, fake_api, tmp_path, workdir):
    env = client_env(fake_api.url, str(tmp_path / "client-home"), base_url, "claude")
    first = realclis.run_cli(["codex", "exec", "--skip-git-repo-check", "-"],
                             "remember PELICAN-42", env, workdir, timeout=240)
    assert first.returncode == 0, first.stderr[-3000:]
    second = realclis.run_cli(["codex", "exec", "--skip-git-repo-check", "resume", "--last",
                               "-"], "what was the code word?", env, workdir, timeout=240)
    assert second.returncode == 0, second.stderr[-3000:]
    # codex sends store: false and its whole history again: the backend gets both turns.
    last = fake_api.main_requests(KIND["claude"])[-1]
    assert "PELICAN-42" in json.dumps(last["json"])
    assert "what was the code word?" in last["user_text"]


@pytest.mark.sdk
@pytest.mark.parametrize("backend", BACKENDS)
def test_previous_response_id_continues_the_real_cli_session(backend, base_url, fake_api):
    client = sdk_client(base_url)
    first = client.responses.create(model=backend, input="remember PELICAN-42")
    second = client.responses.create(model=backend, input="what was the code word?",
                                     previous_response_id=first.id)
    assert second.output_text == "FAKE-REPLY: what was the code word?"
    last = fake_api.main_requests(KIND[backend])[-1]
    assert last["user_text"] == "what was the code word?"
    assert "PELICAN-42" in json.dumps(last["json"])   # the CLI resent its own history


@pytest.mark.sdk
@pytest.mark.parametrize("backend", BACKENDS)
def test_responses_stream_on_the_real_cli(backend, base_url, fake_api):
    client = sdk_client(base_url)
    with client.responses.stream(model=backend, input="stream responses") as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == final.output_text == "FAKE-REPLY: stream responses"
    assert final.usage.output_tokens > 0
