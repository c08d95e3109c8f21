"""A backend's failure keeps its class whichever backend and whichever front end: a CLI that
cannot authenticate (exit 5; 401 ``backend_not_authenticated`` in each API's shape, with the
fix, never mistaken for clinvk's own 401), a model API's rate limit (exit 1; 429
``backend_rate_limited`` with Retry-After when the CLI said), any other model API failure
(exit 1; 200 with the error on the native API, 424 on the compatible ones), a missing CLI
(exit 3; 503). The fakes speak each CLI's real words (FAKE_CLI_AUTH=none,
FAKE_CLI_MODE=rate_limited)."""

from __future__ import annotations

import json

import pytest

from clinvk_lib import config, execute
from clinvk_lib.backends import base
from clinvk_lib.cli import common
from clinvk_lib.cli.main import main
from tests.serverutil import server, start_server  # noqa: F401 (fixtures)
from tests.test_mcp import mcp, start, text_of  # noqa: F401 (fixtures)

BACKENDS = ["claude", "codex", "gemini", "qwen", "copilot", "opencode"]
# What each fake CLI's rate-limit message says about when to retry (codex says nothing).
RETRY_AFTER = {"claude": "20", "codex": None, "gemini": "38", "qwen": "20", "copilot": "20",
               "opencode": "20"}
LOGIN_HINT = {"claude": "/login", "codex": "codex login", "gemini": "GEMINI_API_KEY",
              "qwen": "security.auth.selectedType", "copilot": "COPILOT_GITHUB_TOKEN",
              "opencode": "opencode auth login"}


@pytest.fixture
def logged_out(monkeypatch):
    monkeypatch.setenv("FAKE_CLI_AUTH", "none")


@pytest.fixture
def rate_limited(monkeypatch):
    monkeypatch.setenv("FAKE_CLI_MODE", "rate_limited")


def prompt(srv, backend, **fields):
    return srv.post("/api/v1/prompt", dict({"backend": backend, "prompt": "hi"}, **fields))


# -- the command line ----------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_cli_run_that_cannot_authenticate_exits_5_with_the_fix(clinvk_home, fake_path,
                                                               logged_out, capsys, backend):
    assert main(["-b", backend, "hi"]) == common.EXIT_NOT_AUTHENTICATED == 5
    err = capsys.readouterr().err
    assert "cannot authenticate" in err and LOGIN_HINT[backend] in err


@pytest.mark.parametrize("backend", BACKENDS)
def test_cli_run_rate_limited_upstream_exits_1(clinvk_home, fake_path, rate_limited, backend):
    assert main(["-b", backend, "-o", "json", "hi"]) == common.EXIT_FAILED


@pytest.mark.parametrize("backend", BACKENDS)
def test_cli_stream_of_a_logged_out_backend_ends_in_a_not_authenticated_error(
        clinvk_home, fake_path, logged_out, capsys, backend):
    assert main(["-b", backend, "-o", "stream-json", "hi"]) == 5
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    errors = [e["content"] for e in events if e["type"] == "error"]
    assert errors[0]["code"] == "not_authenticated" and LOGIN_HINT[backend] in \
        errors[0]["message"]
    assert events[-1]["type"] == "done"


# -- the CLIs' own words, where no HTTP status says it -----------------------------------

@pytest.mark.parametrize("backend, line, kind", [
    # copilot 1.0.102: your own provider refused the key; a 429 after its five retries.
    ("copilot", json.dumps({"type": "session.error", "data": {
        "errorType": "authentication", "message": "Authentication failed with provider at "
        "****** (HTTP 401).\n  Check your COPILOT_PROVIDER_API_KEY."}}), "not_authenticated"),
    ("copilot", json.dumps({"type": "session.error", "data": {
        "errorType": "rate_limit", "message": "Failed to get response from the AI model; "
        "retried 5 times (total retry wait time: 53.36 seconds) Last error: 429 slow down"}}),
     "rate_limited"),
    # opencode 1.18.33: its error names for a provider login and a key it cannot find, and
    # the quota of its own hosted models.
    ("opencode", json.dumps({"type": "error", "sessionID": "ses_a", "error": {
        "name": "ProviderAuthError", "data": {"providerID": "anthropic",
                                              "message": "token refresh failed"}}}),
     "not_authenticated"),
    ("opencode", json.dumps({"type": "error", "sessionID": "ses_a", "error": {
        "name": "LoadAPIKeyError", "data": {"message": "OpenAI API key is missing. Pass it "
                                                       "using the 'apiKey' parameter."}}}),
     "not_authenticated"),
    ("opencode", json.dumps({"type": "error", "sessionID": "ses_a", "error": {
        "name": "UnknownError", "data": {"message": "Free usage exceeded, subscribe to Go"}}}),
     "rate_limited"),
], ids=["copilot-key-refused", "copilot-429-after-retries", "opencode-provider-auth",
        "opencode-missing-key", "opencode-free-usage-exceeded"])
def test_a_failure_the_cli_names_without_a_status_keeps_its_class(backend, line, kind):
    parser = base.get(backend).new_stream_parser()
    parser.feed(line)
    parser.finish(1, "")
    assert parser.error and [e.content["code"] for e in parser.events
                             if e.type == "error" and e.content.get("fatal", True)][:1] == [kind]


# -- the native API ------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_native_run_that_cannot_authenticate_is_a_401_of_the_backend(server, logged_out,
                                                                     backend):
    reply = prompt(server, backend)
    body = reply.json()
    assert reply.status == 401 and body["error"] == "backend_not_authenticated"
    assert body["message"].startswith("the %s backend on the server cannot authenticate"
                                      % backend)
    assert LOGIN_HINT[backend] in body["message"] and body["session_id"]


def test_backend_401_is_told_apart_from_clinvks_own_key_check(start_server, logged_out):
    srv = start_server(**{"server.api_keys": ["k1"]})
    assert prompt(srv, "claude").json()["error"] == "unauthorized"
    reply = srv.post("/api/v1/prompt", {"backend": "claude", "prompt": "hi"},
                     headers={"X-Api-Key": "k1"})
    assert (reply.status, reply.json()["error"]) == (401, "backend_not_authenticated")


@pytest.mark.parametrize("backend", BACKENDS)
def test_native_run_rate_limited_upstream_is_a_429_with_retry_after_when_told(
        server, rate_limited, backend):
    reply = prompt(server, backend)
    assert (reply.status, reply.json()["error"]) == (429, "backend_rate_limited")
    assert reply.headers.get("Retry-After") == RETRY_AFTER[backend]


@pytest.mark.parametrize("backend", BACKENDS)
def test_native_run_of_another_model_api_failure_stays_a_200_with_the_error(
        server, monkeypatch, backend):
    monkeypatch.setenv("FAKE_CLI_MODE", "fail")
    body = prompt(server, backend).json()
    assert body["exit_code"] != 0 and body["error"]


def test_native_stream_error_event_carries_the_class_and_retry_after(server, rate_limited):
    reply = prompt(server, "gemini", output_format="stream-json")
    events = [json.loads(line) for line in reply.body.decode().splitlines()]
    error = next(e["content"] for e in events if e["type"] == "error")
    assert (error["code"], error["retry_after"]) == ("rate_limited", 38)


def test_qwen_not_installed_is_a_503(start_server, monkeypatch, tmp_path):
    srv = start_server()
    monkeypatch.setenv("PATH", str(tmp_path))
    reply = prompt(srv, "qwen")
    assert (reply.status, reply.json()["error"]) == (503, "backend_not_installed")


# -- the compatible APIs -------------------------------------------------------------------

def chat(srv, backend, stream=False):
    return srv.post("/openai/v1/chat/completions", {
        "model": backend, "stream": stream, "messages": [{"role": "user", "content": "hi"}]})


def message(srv, backend, stream=False):
    return srv.post("/anthropic/v1/messages", {
        "model": backend, "max_tokens": 64, "stream": stream,
        "messages": [{"role": "user", "content": "hi"}]})


@pytest.mark.parametrize("backend", BACKENDS)
def test_openai_run_that_cannot_authenticate_is_an_openai_authentication_error(
        server, logged_out, backend):
    reply = chat(server, backend)
    error = reply.json()["error"]
    assert reply.status == 401 and reply.headers["X-Should-Retry"] == "false"
    assert (error["type"], error["code"]) == ("authentication_error",
                                              "backend_not_authenticated")
    assert reply.headers["X-Clinvk-Session-Id"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_anthropic_run_rate_limited_upstream_is_an_anthropic_rate_limit_error(
        server, rate_limited, backend):
    reply = message(server, backend)
    assert reply.status == 429 and reply.json()["error"]["type"] == "rate_limit_error"
    assert reply.headers.get("Retry-After") == RETRY_AFTER[backend]
    assert reply.headers["X-Should-Retry"] == "false"


def test_anthropic_run_that_cannot_authenticate_is_an_anthropic_authentication_error(
        server, logged_out):
    reply = message(server, "qwen")
    assert reply.status == 401
    assert reply.json()["error"]["type"] == "authentication_error"
    assert "security.auth.selectedType" in reply.json()["error"]["message"]


def test_openai_stream_of_a_logged_out_backend_ends_in_an_authentication_error_event(
        server, logged_out):
    reply = chat(server, "claude", stream=True)
    data = [line[len("data: "):] for line in reply.body.decode().splitlines()
            if line.startswith("data: {")]
    assert json.loads(data[-1])["error"]["type"] == "authentication_error"


def test_compat_other_model_api_failure_stays_a_424(server, monkeypatch):
    monkeypatch.setenv("FAKE_CLI_MODE", "fail")
    reply = chat(server, "qwen")
    assert (reply.status, reply.json()["error"]["code"]) == (424, "backend_failed")


# -- MCP -------------------------------------------------------------------------------------

def test_mcp_prompt_that_cannot_authenticate_is_an_error_result_with_the_fix(mcp, logged_out):
    result = mcp.call("clinvk_prompt", {"backend": "qwen", "prompt": "hi"})["result"]
    assert result["isError"] and "security.auth.selectedType" in text_of(result)


def test_streamed_run_that_cannot_authenticate_records_the_fix_in_its_outcome(clinvk_home,
                                                                              fake_path,
                                                                              logged_out):
    prepared = execute.prepare(execute.Request(backend="qwen", prompt="hi", ephemeral=True),
                               config.load(flags={}), stream=True)
    outcomes = []
    list(execute.stream(prepared, outcome=outcomes))
    assert outcomes[0].error_kind == execute.ErrorKind.NOT_AUTHENTICATED
    assert "security.auth.selectedType" in outcomes[0].result.error
