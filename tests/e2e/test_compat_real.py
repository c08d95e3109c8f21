"""The OpenAI- and Anthropic-compatible APIs of `clinvk serve` (the built zipapp) with the REAL
claude, codex and gemini behind them, driven by the official Python SDKs, against the fake model
API: whole and streamed replies on every backend, the system prompt, a session continued by
header, and a model API failure raised by the SDK.
"""

from __future__ import annotations

import json

import pytest

from tests.e2e.conftest import BACKENDS, KIND, user_texts

openai = pytest.importorskip("openai")
anthropic = pytest.importorskip("anthropic")
pytestmark = pytest.mark.sdk


@pytest.fixture
def base_url(serve_port: int) -> str:
    """The URL of a running ``clinvk serve`` (see serve_port)."""
    return "http://127.0.0.1:%d" % serve_port


def oa(base_url: str):
    return openai.OpenAI(base_url=base_url + "/openai/v1", api_key="unused", max_retries=0,
                         timeout=240)


def an(base_url: str):
    return anthropic.Anthropic(base_url=base_url + "/anthropic", api_key="unused",
                               max_retries=0, timeout=240)


@pytest.mark.parametrize("backend", BACKENDS)
def test_openai_chat_completion_on_the_real_cli(backend, base_url, fake_api):
    completion = oa(base_url).chat.completions.create(
        model=backend, messages=[{"role": "user", "content": "hello openai"}])
    assert completion.choices[0].message.content == "FAKE-REPLY: hello openai"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.completion_tokens > 0
    assert user_texts(fake_api, backend) == ["hello openai"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_openai_stream_on_the_real_cli(backend, base_url, fake_api):
    chunks = list(oa(base_url).chat.completions.create(
        model=backend, messages=[{"role": "user", "content": "stream openai"}], stream=True,
        stream_options={"include_usage": True}))
    deltas = [c.choices[0].delta.content for c in chunks if c.choices and
              c.choices[0].delta.content]
    assert "".join(deltas) == "FAKE-REPLY: stream openai"
    if backend != "codex":        # codex prints its message whole
        assert len(deltas) > 1
    assert chunks[-1].usage.completion_tokens > 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_anthropic_message_on_the_real_cli(backend, base_url, fake_api):
    message = an(base_url).messages.create(
        model=backend, max_tokens=256, messages=[{"role": "user", "content": "hello anthropic"}])
    assert message.content[0].text == "FAKE-REPLY: hello anthropic"
    assert message.stop_reason == "end_turn" and message.usage.output_tokens > 0
    assert user_texts(fake_api, backend) == ["hello anthropic"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_anthropic_stream_on_the_real_cli(backend, base_url, fake_api):
    with an(base_url).messages.stream(
            model=backend, max_tokens=256,
            messages=[{"role": "user", "content": "stream anthropic"}]) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert "".join(pieces) == "FAKE-REPLY: stream anthropic"
    if backend != "codex":
        assert len(pieces) > 1
    assert final.content[0].text == "FAKE-REPLY: stream anthropic"


@pytest.mark.parametrize("backend", BACKENDS)
def test_system_prompt_reaches_the_model(backend, base_url, fake_api):
    oa(base_url).chat.completions.create(model=backend, messages=[
        {"role": "system", "content": "Always answer in Latin."},
        {"role": "user", "content": "hi"}])
    sent = json.dumps(fake_api.main_requests(KIND[backend])[-1]["json"])
    assert "Always answer in Latin." in sent


@pytest.mark.parametrize("backend", BACKENDS)
def test_session_header_continues_the_real_cli_session(backend, base_url, fake_api):
    raw = oa(base_url).chat.completions.with_raw_response.create(
        model=backend, messages=[{"role": "user", "content": "remember PELICAN-42"}])
    session = raw.headers["x-clinvk-session-id"]
    second = oa(base_url).chat.completions.create(
        model=backend, extra_headers={"X-Clinvk-Session-Id": session},
        messages=[{"role": "user", "content": "remember PELICAN-42"},
                  {"role": "assistant", "content": raw.parse().choices[0].message.content},
                  {"role": "user", "content": "what was the code word?"}])
    assert second.choices[0].message.content == "FAKE-REPLY: what was the code word?"
    last = fake_api.main_requests(KIND[backend])[-1]
    assert last["user_text"] == "what was the code word?"
    assert "PELICAN-42" in json.dumps(last["json"])   # the CLI resent its own history


def test_model_api_failure_is_raised_by_the_sdk(base_url, fake_api):
    fake_api.fail_every(400)
    with pytest.raises(anthropic.APIStatusError) as info:
        an(base_url).messages.create(model="claude", max_tokens=64,
                                     messages=[{"role": "user", "content": "hi"}])
    assert info.value.status_code == 424
    assert "the claude backend failed" in info.value.body["error"]["message"]


def test_a_system_prompt_too_long_for_argv_reaches_the_real_claude_from_a_file(base_url,
                                                                              fake_api):
    # 150 KB: over Linux's 128 KiB per argv word, so clinvk passes --system-prompt-file.
    rule = "Always answer in Latin. " + "Rule %d. " * 15000 % tuple(range(15000))
    reply = oa(base_url).chat.completions.create(model="claude", messages=[
        {"role": "system", "content": rule}, {"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content == "FAKE-REPLY: hi"
    sent = json.dumps(fake_api.main_requests(KIND["claude"])[-1]["json"])
    assert "Always answer in Latin." in sent and "Rule 14999." in sent
