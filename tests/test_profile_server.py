"""Which profile a server run gets: the <backend>-chat model ids of the compatible APIs, the
X-Clinvk-Profile header and server.default_profile (server/profiles.py)."""

from __future__ import annotations

import pytest

from clinvk_lib import config
from clinvk_lib.server import models, profiles
from clinvk_lib.job_store import JobStore
from clinvk_lib.job_store_redis import RedisJobStore
from clinvk_lib.redisclient import Client
from tests.conftest import records
from tests.test_job_store import make
from tests.serverutil import server, start_server  # noqa: F401 (fixtures)
from tests.test_jobs import submit, wait_status
from tests.test_responses import poll

HI = [{"role": "user", "content": "hi"}]
CHAT_FLAG = "--tools="          # what only claude's chat profile passes


def last_argv(record) -> list:
    return records(record)[-1]["argv"]


def openai_chat(srv, model, headers=None):
    return srv.post("/openai/v1/chat/completions", {"model": model, "messages": HI},
                    headers=headers)


def native_prompt(srv, headers=None, backend="claude"):
    return srv.post("/api/v1/prompt", {"backend": backend, "prompt": "hi"}, headers=headers)


# -- model ids ------------------------------------------------------------------------------------

@pytest.mark.parametrize("model, expected", [
    ("claude-chat", ("claude", "chat")),
    ("codex-chat/gpt-5.5", ("codex/gpt-5.5", "chat")),
    ("opencode-chat/anthropic/claude-sonnet-4-5", ("opencode/anthropic/claude-sonnet-4-5", "chat")),
    ("claude", ("claude", "")),
    ("claude-sonnet-4-5", ("claude-sonnet-4-5", "")),
    ("nobody-chat", ("nobody-chat", "")),
    ("gpt-chat", ("gpt-chat", "")),
])
def test_a_backend_name_with_chat_names_the_chat_profile(model, expected):
    assert profiles.split_chat_model(model) == expected


def test_chat_model_ids_resolve_to_their_backend_and_model():
    cfg = config.load(env={})
    assert models.resolve_model("claude-chat", cfg) == ("claude", "")
    assert models.resolve_model("codex-chat/gpt-5.5", cfg) == ("codex", "gpt-5.5")


def test_a_chat_model_of_a_disabled_backend_is_not_found():
    cfg = config.load(env={}, flags={"backends.codex.enabled": False})
    with pytest.raises(Exception) as info:
        models.resolve_model("codex-chat", cfg)
    assert info.value.status == 404 and "'codex-chat'" in info.value.message


def test_chat_completions_with_a_chat_model_run_the_chat_profile(server, record):
    reply = openai_chat(server, "claude-chat")
    assert reply.status == 200 and reply.json()["model"] == "claude-chat"
    argv = last_argv(record)
    assert CHAT_FLAG in argv and not any(w.startswith("--model") for w in argv)


def test_a_chat_model_with_a_model_id_passes_it_to_the_cli(server, record):
    assert openai_chat(server, "codex-chat/gpt-5.5").status == 200
    argv = last_argv(record)
    assert "--model=gpt-5.5" in argv and "--ignore-rules" in argv


def test_the_anthropic_route_takes_chat_models(server, record):
    reply = server.post("/anthropic/v1/messages", {"model": "claude-chat", "max_tokens": 5,
                                                   "messages": HI})
    assert reply.status == 200 and CHAT_FLAG in last_argv(record)


def test_the_responses_route_takes_chat_models(server, record):
    reply = server.post("/openai/v1/responses", {"model": "claude-chat", "input": "hi"})
    assert reply.status == 200 and CHAT_FLAG in last_argv(record)


def test_the_models_list_names_each_chat_profile(server):
    ids = [m["id"] for m in server.get("/openai/v1/models").json()["data"]]
    assert "claude-chat" in ids and "codex-chat" in ids


def test_a_plain_model_runs_the_agent_profile(server, record):
    assert openai_chat(server, "claude").status == 200
    assert CHAT_FLAG not in last_argv(record)


# -- the header -----------------------------------------------------------------------------------

def test_the_header_picks_the_chat_profile_on_the_native_route(server, record):
    assert native_prompt(server, {"X-Clinvk-Profile": "chat"}).status == 200
    assert CHAT_FLAG in last_argv(record)


def test_the_header_picks_the_chat_profile_on_a_compatible_route(server, record):
    assert openai_chat(server, "claude", {"X-Clinvk-Profile": "Chat"}).status == 200
    assert CHAT_FLAG in last_argv(record)


def test_a_chat_model_wins_over_an_agent_header(server, record):
    assert openai_chat(server, "claude-chat", {"X-Clinvk-Profile": "agent"}).status == 200
    assert CHAT_FLAG in last_argv(record)


def test_an_unknown_header_value_is_a_native_400_naming_the_header(server, record):
    reply = native_prompt(server, {"X-Clinvk-Profile": "lean"})
    assert reply.status == 400
    body = reply.json()
    assert body["error"] == "invalid_request" and body["field"] == "X-Clinvk-Profile"
    assert body["message"] == "X-Clinvk-Profile must be one of agent, chat: got 'lean'"
    assert records(record) == []


def test_an_unknown_header_value_is_an_openai_400(server):
    reply = openai_chat(server, "claude", {"X-Clinvk-Profile": "lean"})
    assert reply.status == 400
    error = reply.json()["error"]
    assert "X-Clinvk-Profile must be one of agent, chat" in error["message"]
    assert error["type"] == "invalid_request_error"


def test_an_unknown_header_value_is_an_anthropic_400(server):
    reply = server.post("/anthropic/v1/messages", {"model": "claude", "max_tokens": 5,
                                                   "messages": HI},
                        headers={"X-Clinvk-Profile": "lean"})
    assert reply.status == 400
    body = reply.json()
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert "X-Clinvk-Profile must be one of agent, chat" in body["error"]["message"]


# -- server.default_profile -----------------------------------------------------------------------

def test_the_configured_default_profile_applies_without_a_header(start_server, record):
    srv = start_server(**{"server.default_profile": "chat"})
    assert native_prompt(srv).status == 200
    assert CHAT_FLAG in last_argv(record)
    assert native_prompt(srv, {"X-Clinvk-Profile": "agent"}).status == 200
    assert CHAT_FLAG not in last_argv(record)


def test_the_agent_profile_is_the_default(server, record):
    assert native_prompt(server).status == 200
    assert CHAT_FLAG not in last_argv(record)


def test_an_unknown_default_profile_is_a_config_error_naming_the_key():
    with pytest.raises(config.ConfigError) as info:
        config.load(env={"CLINVK_SERVER_DEFAULT_PROFILE": "lean"})
    assert "server.default_profile" in str(info.value)
    assert "one of agent, chat" in str(info.value)


# -- fan-out routes and durable jobs --------------------------------------------------------------

def test_the_header_makes_every_parallel_task_a_chat_run(server, record):
    reply = server.post("/api/v1/parallel", {"tasks": [{"backend": "claude", "prompt": "a"},
                                                       {"backend": "codex", "prompt": "b"}]},
                        headers={"X-Clinvk-Profile": "chat"})
    assert reply.status == 200 and reply.json()["completed"] == 2
    runs = {r["backend"]: r["argv"] for r in records(record)}
    assert CHAT_FLAG in runs["claude"] and "--ignore-rules" in runs["codex"]


def test_the_header_makes_every_chain_step_and_compared_backend_a_chat_run(server, record):
    headers = {"X-Clinvk-Profile": "chat"}
    assert server.post("/api/v1/chain", {"steps": [{"backend": "claude", "prompt": "a"}]},
                       headers=headers).status == 200
    assert server.post("/api/v1/compare", {"prompt": "a", "backends": ["claude"]},
                       headers=headers).status == 200
    assert [CHAT_FLAG in r["argv"] for r in records(record)] == [True, True]


def test_an_unknown_header_value_refuses_a_fan_out_before_any_run(server, record):
    reply = server.post("/api/v1/parallel", {"tasks": [{"backend": "claude", "prompt": "a"}]},
                        headers={"X-Clinvk-Profile": "lean"})
    assert reply.status == 400 and reply.json()["field"] == "X-Clinvk-Profile"
    assert records(record) == []


def submit_with(srv, headers, kind="prompt", request=None):
    body = {"kind": kind, "request": request or {"backend": "claude", "prompt": "hello"}}
    return srv.post("/api/v1/jobs", body, headers=headers)


def test_a_durable_job_keeps_the_header_profile_it_was_submitted_with(server, record):
    made = submit_with(server, {"X-Clinvk-Profile": "chat"})
    assert made.status == 202 and made.json()["profile"] == "chat"
    done = wait_status(server, made.json()["id"])
    assert done["status"] == "succeeded" and done["profile"] == "chat"
    assert CHAT_FLAG in last_argv(record)


def test_a_durable_job_without_the_header_keeps_the_default_of_its_submission(server, record):
    made = submit_with(server, {})
    assert made.status == 202 and made.json()["profile"] == "agent"
    assert wait_status(server, made.json()["id"])["status"] == "succeeded"
    assert CHAT_FLAG not in last_argv(record)


def test_an_agent_header_on_a_job_wins_over_a_chat_default(start_server, record):
    srv = start_server(**{"server.default_profile": "chat"})
    made = submit_with(srv, {"X-Clinvk-Profile": "agent"})
    assert made.status == 202
    assert wait_status(srv, made.json()["id"])["status"] == "succeeded"
    assert CHAT_FLAG not in last_argv(record)


def test_a_fan_out_job_runs_every_task_in_the_header_profile(server, record):
    made = submit_with(server, {"X-Clinvk-Profile": "chat"}, "parallel",
                       {"tasks": [{"backend": "claude", "prompt": "a"},
                                  {"backend": "codex", "prompt": "b"}]})
    assert made.status == 202
    assert wait_status(server, made.json()["id"])["status"] == "succeeded"
    runs = {r["backend"]: r["argv"] for r in records(record)}
    assert CHAT_FLAG in runs["claude"] and "--ignore-rules" in runs["codex"]


def test_an_unknown_header_value_refuses_a_job_naming_the_header(server, record):
    reply = submit_with(server, {"X-Clinvk-Profile": "lean"})
    assert reply.status == 400 and reply.json()["field"] == "X-Clinvk-Profile"
    assert "X-Clinvk-Profile must be one of agent, chat" in reply.json()["message"]
    assert server.get("/api/v1/jobs").json()["total"] == 0
    assert records(record) == []


def background(srv, model, headers=None):
    return srv.post("/openai/v1/responses", {"model": model, "input": "hi", "background": True},
                    headers=headers)


@pytest.mark.parametrize("model, headers", [("claude-chat", None),
                                            ("claude", {"X-Clinvk-Profile": "chat"})])
def test_a_background_response_runs_the_chat_profile_of_its_model_or_header(
        server, record, model, headers):
    made = background(server, model, headers)
    assert made.status == 200
    assert poll(server, made.json()["id"])["status"] == "completed"
    assert CHAT_FLAG in last_argv(record)


def test_a_background_response_with_an_unknown_header_value_is_an_openai_400(server, record):
    reply = background(server, "claude", {"X-Clinvk-Profile": "lean"})
    assert reply.status == 400
    assert "X-Clinvk-Profile must be one of agent, chat" in reply.json()["error"]["message"]
    assert records(record) == []


def test_a_job_read_back_from_the_disk_store_keeps_its_profile(tmp_path):
    written = make(JobStore(str(tmp_path)), profile="chat")
    assert JobStore(str(tmp_path)).get(written.id).profile == "chat"


def test_a_job_read_back_from_the_redis_store_on_another_node_keeps_its_profile(redis):
    def node():
        return RedisJobStore(Client(redis.url, prefix="t:", connect_attempts=1))
    written = make(node(), profile="chat")
    assert node().get(written.id).profile == "chat"


def test_a_job_stored_before_jobs_kept_a_profile_reads_as_none(tmp_path):
    store = JobStore(str(tmp_path))
    written = make(store)
    assert store.get(written.id).profile == ""
    assert "profile" not in store.get(written.id).public()


def test_a_durable_job_runs_in_the_configured_default_profile(start_server, record):
    srv = start_server(**{"server.default_profile": "chat"})
    job = submit(srv)
    assert wait_status(srv, job["id"])["status"] == "succeeded"
    assert CHAT_FLAG in last_argv(record)
