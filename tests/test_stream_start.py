"""Streams answer at once: on every streaming route the response headers (and the first event
the dialect allows) go out before the backend has said anything, keep-alives fill its
silence, a wait for a run slot happens inside the stream, and errors known before the run
keep their HTTP status.

The fake CLIs stay silent until the test creates their gate file (FAKE_CLI_GATE), so "before
the backend said anything" is a fact of the test's order, not a timing."""

from __future__ import annotations

import json
from typing import Any, Dict, NamedTuple

import pytest

from tests.serverutil import (  # noqa: F401 (fixtures)
    encode_body, read_pid, server, start_server, sse_events)
from tests.test_jobs import submit

HI = [{"role": "user", "content": "hi"}]


class Route(NamedTuple):
    path: str
    body: Dict[str, Any]
    first: bytes            # the dialect's first event, sent before the backend's first
    keepalive: bytes


ROUTES = {
    "openai": Route("/openai/v1/chat/completions",
                    {"model": "claude", "messages": HI, "stream": True},
                    b'"delta":{"role":"assistant"', b": keep-alive\n\n"),
    "anthropic": Route("/anthropic/v1/messages",
                       {"model": "claude", "max_tokens": 64, "messages": HI, "stream": True},
                       b"event: message_start\n", b"event: ping\n"),
    "responses": Route("/openai/v1/responses",
                       {"model": "claude", "input": "hi", "stream": True},
                       b"event: response.created\n", b": keep-alive\n\n"),
    "native": Route("/api/v1/prompt",
                    {"backend": "claude", "prompt": "hi", "output_format": "stream-json"},
                    b"", b"\n"),
}
SSE_ROUTES = ["openai", "anthropic", "responses"]
# The same with the client's tools (bridged to the agent: toolcalls).
WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}}
BRIDGED = {
    "openai": dict(ROUTES["openai"].body, tools=[
        {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}}]),
    "anthropic": dict(ROUTES["anthropic"].body, tools=[
        {"name": "get_weather", "input_schema": WEATHER}]),
    "responses": dict(ROUTES["responses"].body, tools=[
        {"type": "function", "name": "get_weather", "parameters": WEATHER}]),
}


@pytest.fixture
def gate(monkeypatch, tmp_path):
    """The path whose creation lets the fake CLIs answer (their reply in one piece, so the
    tests can look for it in the stream's bytes)."""
    path = str(tmp_path / "gate")
    monkeypatch.setenv("FAKE_CLI_GATE", path)
    monkeypatch.setenv("FAKE_CLI_CHUNKS", "1")
    return path


def open_gate(path: str) -> None:
    with open(path, "w"):
        pass


def start(srv, route: Route, body: Any = None):
    """(connection, response) once the response headers have arrived."""
    conn = srv.connection(timeout=20)
    conn.request("POST", route.path, *encode_body(body or route.body))
    return conn, conn.getresponse()


def read_until(resp, marker: bytes) -> bytes:
    """What the stream sends up to and including ``marker`` (a whole line's end)."""
    seen = b""
    while marker not in seen:
        line = resp.readline()
        assert line, "the stream ended before %r: %r" % (marker, seen)
        seen += line
    return seen


@pytest.mark.parametrize("name", sorted(ROUTES))
def test_headers_first_event_and_keepalives_come_while_the_backend_is_silent(
        start_server, gate, name):
    route = ROUTES[name]
    srv = start_server(**{"server.sse_keepalive_secs": 1})
    conn, resp = start(srv, route)
    try:
        assert resp.status == 200
        early = read_until(resp, route.first) if route.first else b""
        keepalive = read_until(resp, route.keepalive)
        assert b"echo" not in early + keepalive
        if not route.first:
            assert keepalive == route.keepalive     # NDJSON: nothing before it but headers
        open_gate(gate)
        rest = resp.read()
    finally:
        conn.close()
    assert b"echo: hi" in rest


@pytest.mark.parametrize("name", SSE_ROUTES)
def test_a_stream_with_client_tools_starts_while_the_backend_is_silent(server, gate, name):
    route = ROUTES[name]
    conn, resp = start(server, route, BRIDGED[name])
    try:
        assert resp.status == 200 and resp.getheader("X-Clinvk-Session-Id")
        assert b"echo" not in read_until(resp, route.first)
        open_gate(gate)
        assert b"echo: hi" in resp.read()
    finally:
        conn.close()


@pytest.mark.parametrize("name", SSE_ROUTES)
def test_a_new_sessions_header_names_the_session_the_stream_saves(server, gate, name):
    conn, resp = start(server, ROUTES[name])
    try:
        session_id = resp.getheader("X-Clinvk-Session-Id")
        open_gate(gate)
        resp.read()
    finally:
        conn.close()
    saved = server.get("/api/v1/sessions/" + session_id)
    assert saved.status == 200 and saved.json()["turn_count"] == 1


@pytest.mark.sdk
def test_openai_sdk_returns_the_stream_before_the_backend_answers(server, gate):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=server.url + "/openai/v1", api_key="unused",
                           max_retries=0, timeout=20)
    stream = client.chat.completions.create(model="claude", messages=HI, stream=True)
    open_gate(gate)
    assert "".join(c.choices[0].delta.content or "" for c in stream) == "echo: hi"


@pytest.mark.sdk
def test_openai_sdk_returns_the_responses_stream_before_the_backend_answers(server, gate):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=server.url + "/openai/v1", api_key="unused",
                           max_retries=0, timeout=20)
    stream = client.responses.create(model="claude", input="hi", stream=True)
    open_gate(gate)
    done = [e for e in stream if e.type == "response.completed"]
    assert done[0].response.output_text == "echo: hi"


@pytest.mark.sdk
def test_anthropic_sdk_returns_the_stream_before_the_backend_answers(server, gate):
    anthropic = pytest.importorskip("anthropic")
    client = anthropic.Anthropic(base_url=server.url + "/anthropic", api_key="unused",
                                 max_retries=0, timeout=20)
    stream = client.messages.create(model="claude", max_tokens=64, messages=HI, stream=True)
    open_gate(gate)
    assert "".join(e.delta.text for e in stream if e.type == "content_block_delta") == \
        "echo: hi"


# -- waiting for a run slot ------------------------------------------------------------------


@pytest.fixture
def slot_held(start_server, gate, monkeypatch, tmp_path):
    """``start(**settings)``: a server with one run slot, held by a stream whose backend
    waits at the gate; returns the server."""
    held = []

    def run(**settings):
        monkeypatch.setenv("FAKE_CLI_PIDFILE", str(tmp_path / "fake.pid"))
        srv = start_server(**dict({"server.max_concurrent_runs": 1,
                                   "server.sse_keepalive_secs": 1}, **settings))
        held.append(start(srv, ROUTES["native"]))
        read_pid(str(tmp_path / "fake.pid"))
        return srv
    yield run
    open_gate(gate)
    for conn, _ in held:
        conn.close()


@pytest.mark.parametrize("name,tools", [(name, False) for name in sorted(ROUTES)]
                         + [(name, True) for name in SSE_ROUTES])
def test_a_stream_waits_for_a_run_slot_after_its_headers_with_keepalives(
        slot_held, gate, name, tools):
    route = ROUTES[name]
    srv = slot_held(**{"server.queue_timeout_secs": 60})
    conn, resp = start(srv, route, BRIDGED[name] if tools else None)
    try:
        assert resp.status == 200
        read_until(resp, route.keepalive)
        assert [r["state"] for r in srv.get("/api/v1/runs").json()["runs"]].count(
            "queued") == 1
        open_gate(gate)
        assert b"echo: hi" in resp.read()
    finally:
        conn.close()


def test_no_free_slot_before_the_queue_timeout_ends_the_stream_in_its_error_event(
        slot_held):
    srv = slot_held(**{"server.queue_timeout_secs": 1})
    conn, resp = start(srv, ROUTES["anthropic"])
    try:
        assert resp.status == 200
        events = sse_events(resp.read())
    finally:
        conn.close()
    assert events[-1][0] == "error"
    assert events[-1][1]["error"]["type"] == "overloaded_error"


@pytest.mark.parametrize("name", SSE_ROUTES)
def test_a_full_server_without_a_queue_is_a_503_before_the_stream(slot_held, name):
    srv = slot_held(**{"server.queue_timeout_secs": 0})
    conn, resp = start(srv, ROUTES[name])
    try:
        assert resp.status == 503 and resp.getheader("Retry-After")
        assert resp.getheader("Content-Type").startswith("application/json")
    finally:
        conn.close()


# -- errors before and after the start -------------------------------------------------------


@pytest.mark.parametrize("name", SSE_ROUTES)
def test_an_unknown_model_is_still_an_http_error_in_the_dialects_shape(server, name):
    route = ROUTES[name]
    conn, resp = start(server, route, dict(route.body, model="nope"))
    try:
        status, body = resp.status, json.loads(resp.read())
    finally:
        conn.close()
    assert 400 <= status < 500 and "nope" in json.dumps(body)


@pytest.mark.parametrize("name", SSE_ROUTES)
def test_a_backend_that_is_not_installed_is_still_a_503(server, monkeypatch, name):
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    conn, resp = start(server, ROUTES[name])
    try:
        assert resp.status == 503
        assert "not installed" in resp.read().decode()
    finally:
        conn.close()


def test_a_refused_workdir_is_still_a_400_on_the_native_stream(server, tmp_path):
    route = ROUTES["native"]
    conn, resp = start(server, route, dict(route.body, workdir="relative/dir"))
    try:
        assert resp.status == 400 and json.loads(resp.read())["field"] == "workdir"
    finally:
        conn.close()


@pytest.mark.parametrize("name,error", [
    ("openai", lambda e: e[-2][1]["error"]["type"] == "authentication_error"),
    ("anthropic", lambda e: e[-1][1]["error"]["type"] == "authentication_error"),
    ("responses", lambda e: e[-1][0] == "response.failed"
     and "cannot authenticate" in e[-1][1]["response"]["error"]["message"]),
])
def test_a_backend_failing_after_the_start_ends_the_stream_in_its_error_event(
        server, monkeypatch, name, error):
    monkeypatch.setenv("FAKE_CLI_AUTH", "none")
    conn, resp = start(server, ROUTES[name])
    try:
        assert resp.status == 200
        events = sse_events(resp.read())
    finally:
        conn.close()
    assert error(events), events


# -- job event streams ---------------------------------------------------------------------


def test_a_jobs_ndjson_events_get_blank_keepalive_lines_while_its_backend_is_silent(
        start_server, gate):
    srv = start_server(**{"server.sse_keepalive_secs": 1})
    made = submit(srv)
    conn = srv.connection(timeout=20)
    conn.request("GET", "/api/v1/jobs/%s/events" % made["id"])
    resp = conn.getresponse()
    try:
        seen = read_until(resp, b"\n\n")
        assert b"echo" not in seen
        open_gate(gate)
        assert b"echo: hello" in resp.read()
    finally:
        conn.close()

