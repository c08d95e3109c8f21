"""``Idempotency-Key`` on every route that starts backend runs, over raw HTTP against an
in-process server with the fake CLIs: a retry gets the first answer and never starts a second
run; keys are per caller; the table of keys is bounded."""

from __future__ import annotations

import socket
import threading

import pytest

from clinvk_lib.server import openapi
from tests.conftest import records
from tests.serverutil import encode_body, start_server, wait_for  # noqa: F401 (fixtures)

HI = [{"role": "user", "content": "hi"}]
PROMPT = ("/api/v1/prompt", {"backend": "claude", "prompt": "hi"})
CHAT = ("/openai/v1/chat/completions", {"model": "claude", "messages": HI})
MESSAGES = ("/anthropic/v1/messages", {"model": "claude", "max_tokens": 5, "messages": HI})

# (path, body, backend runs the request starts) for every route that starts runs.
RUN_ROUTES = [
    PROMPT + (1,),
    ("/api/v1/parallel", {"tasks": [{"backend": "claude", "prompt": "a"},
                                    {"backend": "codex", "prompt": "b"}]}, 2),
    ("/api/v1/chain", {"steps": [{"backend": "claude", "prompt": "a"},
                                 {"backend": "codex", "prompt": "{{previous}} b"}]}, 2),
    ("/api/v1/compare", {"prompt": "x", "backends": ["claude", "codex"]}, 2),
    CHAT + (1,),
    MESSAGES + (1,),
    ("/openai/v1/responses", {"model": "claude", "input": "hi"}, 1),
    ("/openai/v1/responses", {"model": "claude", "input": "hi", "stream": True}, 1),
    ("/openai/v1/responses", {"model": "claude", "input": "hi", "store": False}, 1),
]


def post(srv, path, body, key="key-1", **headers):
    if key is not None:
        headers["Idempotency-Key"] = key
    return srv.post(path, body, headers=headers)


def replayed(reply) -> bool:
    return reply.headers.get("Idempotent-Replayed") == "true"


@pytest.fixture
def srv(start_server):
    return start_server()


# -- a retry is answered, not run ----------------------------------------------------------------


@pytest.mark.parametrize("path,body,runs", RUN_ROUTES, ids=[r[0] for r in RUN_ROUTES])
def test_retry_with_the_same_key_gets_the_first_answer_and_starts_no_run(srv, record, path,
                                                                          body, runs):
    first = post(srv, path, body)
    assert first.status == 200 and not replayed(first), first
    assert len(records(record)) == runs
    again = post(srv, path, body)
    assert (again.status, again.body) == (first.status, first.body)
    assert replayed(again)
    assert again.headers["Content-Type"] == first.headers["Content-Type"]
    assert len(records(record)) == runs


def test_replay_keeps_the_first_answers_headers_and_gets_its_own_request_id(srv, record):
    first = post(srv, *CHAT)
    again = post(srv, *CHAT, **{"X-Request-Id": "retry-1"})
    assert again.headers["X-Clinvk-Session-Id"] == first.headers["X-Clinvk-Session-Id"]
    assert again.headers["X-Request-Id"] == "retry-1"


def test_requests_without_a_key_still_run_every_time(srv, record):
    post(srv, *PROMPT, key=None)
    again = post(srv, *PROMPT, key=None)
    assert not replayed(again) and len(records(record)) == 2


def test_retry_of_a_failed_turn_gets_the_same_failure_without_running_again(srv, record,
                                                                             monkeypatch):
    monkeypatch.setenv("FAKE_CLI_MODE", "fail")
    first = post(srv, *CHAT)
    assert first.status == 424 and first.json()["error"]["code"] == "backend_failed"
    again = post(srv, *CHAT)
    assert (again.status, again.body, replayed(again)) == (424, first.body, True)
    assert again.headers["X-Should-Retry"] == "false"
    assert len(records(record)) == 1


def test_concurrent_duplicate_waits_for_the_first_and_gets_its_answer(srv, record,
                                                                      monkeypatch):
    monkeypatch.setenv("FAKE_CLI_MODE", "slow")
    monkeypatch.setenv("FAKE_CLI_DELAY", "0.3")
    answers = {}
    first = threading.Thread(target=lambda: answers.update(first=post(srv, *PROMPT)))
    first.start()
    assert wait_for(lambda: len(records(record)) == 1, 10)
    second = post(srv, *PROMPT)
    first.join(30)
    assert answers["first"].status == 200 and not replayed(answers["first"])
    assert (second.status, second.body) == (200, answers["first"].body) and replayed(second)
    assert len(records(record)) == 1


# -- a key means one request ---------------------------------------------------------------------


def test_same_key_with_a_different_body_is_a_422_naming_the_header(srv, record):
    post(srv, *PROMPT)
    other = post(srv, PROMPT[0], dict(PROMPT[1], prompt="something else"))
    assert other.status == 422
    body = other.json()
    assert (body["error"], body["field"]) == ("idempotency_key_reused", "Idempotency-Key")
    assert len(records(record)) == 1


def test_same_key_on_another_route_is_a_422_in_that_routes_error_shape(srv, record):
    post(srv, *PROMPT)
    other = post(srv, *CHAT)
    assert other.status == 422
    error = other.json()["error"]
    assert (error["type"], error["param"], error["code"]) == (
        "invalid_request_error", "Idempotency-Key", "idempotency_key_reused")
    assert len(records(record)) == 1


def test_same_key_with_another_session_header_is_a_different_request(srv, record):
    first = post(srv, *CHAT)
    session = first.headers["X-Clinvk-Session-Id"]
    other = post(srv, *CHAT, **{"X-Clinvk-Session-Id": session})
    assert other.status == 422 and len(records(record)) == 1


def test_key_of_another_api_key_starts_its_own_run_and_cannot_read_the_first(start_server,
                                                                              record):
    srv = start_server(**{"server.api_keys": ["k-alice", "k-bob"]})
    alice = post(srv, PROMPT[0], dict(PROMPT[1], prompt="alice's secret"),
                 **{"X-Api-Key": "k-alice"})
    bob_guess = post(srv, PROMPT[0], dict(PROMPT[1], prompt="alice's secret"),
                     **{"X-Api-Key": "k-bob"})
    assert bob_guess.status == 200 and not replayed(bob_guess)
    assert bob_guess.json()["session_id"] != alice.json()["session_id"]
    bob_other = post(srv, PROMPT[0], dict(PROMPT[1], prompt="bob's own"),
                     **{"X-Api-Key": "k-bob"})
    assert bob_other.status == 422          # bob's own key, reused: alice's is not in his scope
    assert len(records(record)) == 2


@pytest.mark.parametrize("key,problem", [
    ("k" * 256, "256 characters"),
    ("has space", "9 characters"),
    ("bell\x07", "not printable"),
])
def test_malformed_key_is_a_400_naming_the_header_before_anything_runs(srv, record, key,
                                                                       problem):
    reply = post(srv, *PROMPT, key=key)
    assert reply.status == 400, reply
    body = reply.json()
    assert (body["error"], body["field"]) == ("invalid_idempotency_key", "Idempotency-Key")
    assert "Idempotency-Key" in body["message"] and problem in body["message"]
    assert records(record) == []


def test_key_sent_twice_is_a_400(srv, record):
    data, headers = encode_body(PROMPT[1])
    head = "".join("%s: %s\r\n" % kv for kv in headers.items())
    request = ("POST /api/v1/prompt HTTP/1.1\r\nHost: 127.0.0.1\r\n%sContent-Length: %d\r\n"
               "Idempotency-Key: a\r\nIdempotency-Key: b\r\nConnection: close\r\n\r\n"
               % (head, len(data))).encode() + data
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        s.sendall(request)
        answer = s.makefile("rb").read()
    assert answer.startswith(b"HTTP/1.1 400 ") and b"send it once" in answer
    assert records(record) == []


def test_key_on_a_route_that_starts_no_run_is_ignored(srv):
    assert srv.get("/api/v1/sessions", headers={"Idempotency-Key": "x" * 300}).status == 200


def test_every_post_route_that_runs_a_backend_is_flagged_so_it_takes_keys():
    not_running = {op.operation_id for op in openapi.DEFAULT_ROUTES if op.method == "POST"
                   and not op.starts_runs}
    assert all("count" in op_id.lower() or "cancel" in op_id.lower() for op_id in not_running), \
        not_running


def test_openapi_documents_the_header_and_the_replay_marker(srv):
    op = srv.get("/openapi.json").json()["paths"]["/openai/v1/chat/completions"]["post"]
    assert "Idempotency-Key" in [p["name"] for p in op["parameters"] if p["in"] == "header"]
    assert "Idempotent-Replayed" in op["responses"]["200"]["headers"]
    assert {"409", "422"} <= set(op["responses"])


# -- bounds and expiry ---------------------------------------------------------------------------


def test_kept_answer_is_forgotten_after_the_window(start_server, record):
    srv = start_server(**{"server.idempotency_window_secs": 60})
    now = [1000.0]
    srv.app.idempotency.clock = lambda: now[0]
    post(srv, *PROMPT)
    now[0] += 59
    assert replayed(post(srv, *PROMPT)) and len(records(record)) == 1
    now[0] += 2
    late = post(srv, *PROMPT)
    assert late.status == 200 and not replayed(late) and len(records(record)) == 2
    assert len(srv.app.idempotency) == 1


def test_past_max_keys_the_oldest_kept_answer_is_forgotten(start_server, record):
    srv = start_server(**{"server.idempotency_max_keys": 2})
    for key in ("a", "b", "c"):
        post(srv, *PROMPT, key=key)
    assert len(srv.app.idempotency) == 2
    assert replayed(post(srv, *PROMPT, key="c"))
    assert not replayed(post(srv, *PROMPT, key="a"))
    assert len(records(record)) == 4


def test_when_every_key_is_a_running_request_a_new_key_is_refused(start_server, record,
                                                                  monkeypatch):
    monkeypatch.setenv("FAKE_CLI_MODE", "slow")
    monkeypatch.setenv("FAKE_CLI_DELAY", "0.3")
    srv = start_server(**{"server.idempotency_max_keys": 1})
    running = threading.Thread(target=post, args=(srv,) + PROMPT, kwargs={"key": "a"})
    running.start()
    assert wait_for(lambda: len(records(record)) == 1, 10)
    refused = post(srv, *PROMPT, key="b")
    running.join(30)
    assert refused.status == 503 and refused.json()["error"] == "idempotency_keys_full"
    assert refused.headers["Retry-After"] == "1"
    assert len(records(record)) == 1


def test_answer_over_the_size_limit_is_not_kept_and_its_retry_is_a_409_not_a_run(
        start_server, record):
    srv = start_server(**{"server.idempotency_max_answer_bytes": 50})
    first = post(srv, *PROMPT)
    assert first.status == 200 and first.json()["output"] == "echo: hi"
    again = post(srv, *PROMPT)
    assert again.status == 409 and again.json()["error"] == "idempotent_answer_not_kept"
    assert "server.idempotency_max_answer_bytes" in again.json()["message"]
    assert again.headers["X-Should-Retry"] == "false"
    assert len(records(record)) == 1


def test_stored_answers_past_the_byte_budget_forget_the_oldest(start_server, record):
    srv = start_server(**{"server.idempotency_max_stored_bytes": 1000})
    first = post(srv, *PROMPT, key="a")
    kept_per_answer = len(first.body)
    later = "bcdefghijklmnop"[:1000 // kept_per_answer]
    for key in later:
        post(srv, *PROMPT, key=key)
    assert len(srv.app.idempotency) <= 1000 // kept_per_answer
    assert replayed(post(srv, *PROMPT, key=later[-1]))
    assert not replayed(post(srv, *PROMPT, key="a"))


# -- streams -------------------------------------------------------------------------------------


@pytest.mark.parametrize("path,body", [
    (CHAT[0], dict(CHAT[1], stream=True)),
    (MESSAGES[0], dict(MESSAGES[1], stream=True)),
    (PROMPT[0], dict(PROMPT[1], output_format="stream-json")),
], ids=["openai-sse", "anthropic-sse", "native-ndjson"])
def test_streamed_answer_is_replayed_whole_without_a_second_run(srv, record, path, body):
    first = post(srv, path, body)
    assert first.status == 200 and first.body.count(b"\n") > 3
    again = post(srv, path, body)
    assert (again.status, again.body) == (200, first.body) and replayed(again)
    assert again.headers["Content-Type"] == first.headers["Content-Type"]
    assert len(records(record)) == 1


def test_stream_retried_while_it_runs_waits_and_gets_the_whole_stream(srv, record,
                                                                      monkeypatch):
    monkeypatch.setenv("FAKE_CLI_MODE", "slow")
    monkeypatch.setenv("FAKE_CLI_DELAY", "0.3")
    path, body = CHAT[0], dict(CHAT[1], stream=True)
    answers = {}
    first = threading.Thread(target=lambda: answers.update(first=post(srv, path, body)))
    first.start()
    assert wait_for(lambda: len(records(record)) == 1, 10)
    second = post(srv, path, body)
    first.join(30)
    assert second.body == answers["first"].body and second.body.endswith(b"data: [DONE]\n\n")
    assert replayed(second) and len(records(record)) == 1


# -- a first request whose client hung up --------------------------------------------------------


def test_retry_after_the_first_client_hung_up_is_a_409_not_a_second_run(srv, record,
                                                                         monkeypatch):
    monkeypatch.setenv("FAKE_CLI_MODE", "hang")
    data, headers = encode_body(PROMPT[1], {"Idempotency-Key": "gone"})
    head = "".join("%s: %s\r\n" % kv for kv in headers.items())
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        s.sendall(("POST /api/v1/prompt HTTP/1.1\r\nHost: 127.0.0.1\r\n%sContent-Length: %d"
                   "\r\n\r\n" % (head, len(data))).encode() + data)
        assert wait_for(lambda: len(records(record)) == 1, 10)
    retry = post(srv, *PROMPT, key="gone")
    assert retry.status == 409, retry
    body = retry.json()
    assert (body["error"], body["field"]) == ("idempotent_request_cancelled", "Idempotency-Key")
    assert "new Idempotency-Key" in body["message"]
    assert len(records(record)) == 1
