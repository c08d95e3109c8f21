"""The HTTP server end to end with the fake CLIs: every native route and meta endpoint, every
documented error status, streaming, disconnects, timeouts, the run limit and SIGTERM drain."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from clinvk_lib.backends import probe
from clinvk_lib.server import errors
from clinvk_lib.server.http import StreamResponse, json_response
from clinvk_lib.server.openapi import Operation as Spec
from tests.serverutil import (  # noqa: F401 (fixtures)
    Reply, fresh_backend_probe, metrics_once_counted, pid_alive, raw_request, read_pid, server, start_server,
    status_of, wait_for)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAKE_BIN = os.path.join(ROOT, "tests", "fakes", "bin")


pytestmark = pytest.mark.usefixtures("fresh_backend_probe")


@pytest.fixture
def only_backends(monkeypatch, tmp_path, fake_path):
    """``only_backends("claude", "codex")``: PATH holds just those fake CLIs."""
    def limit(*names):
        bin_dir = tmp_path / "some-bin"
        bin_dir.mkdir()
        for name in names:
            os.symlink(os.path.join(FAKE_BIN, name), str(bin_dir / name))
        monkeypatch.setenv("PATH", str(bin_dir) + os.pathsep + "/usr/local/bin:/usr/bin:/bin")
        probe._cache.clear()
    return limit


@pytest.fixture
def pidfile(monkeypatch, tmp_path):
    path = str(tmp_path / "fake.pid")
    monkeypatch.setenv("FAKE_CLI_PIDFILE", path)
    return path


def prompt(srv, **fields) -> Reply:
    body = dict({"backend": "claude", "prompt": "hello"}, **fields)
    return srv.post("/api/v1/prompt", body)


def ndjson(reply: Reply):
    return [json.loads(line) for line in reply.body.splitlines() if line.strip()]


def post_bytes(path: str, body: bytes, extra: str = "") -> bytes:
    return ("POST %s HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            "Content-Length: %d\r\nConnection: close\r\n%s\r\n" % (path, len(body), extra)
            ).encode() + body


# -- POST /api/v1/prompt ------------------------------------------------------------------------


def test_prompt_returns_the_contract_shape(server):
    reply = prompt(server)
    assert reply.status == 200
    body = reply.json()
    assert re.fullmatch(r"[0-9a-f]{32}", body["session_id"])
    assert body["backend"] == "claude" and body["exit_code"] == 0
    assert body["output"] == "echo: hello" and isinstance(body["duration_ms"], int)
    assert set(body["token_usage"]) == {"input_tokens", "output_tokens", "cached_tokens",
                                        "reasoning_tokens"}
    assert body["error"] == ""


def test_prompt_creates_a_session_tagged_api(server):
    sid = prompt(server).json()["session_id"]
    session = server.get("/api/v1/sessions/" + sid).json()
    assert session["backend"] == "claude" and session["turn_count"] == 1
    assert "api" in session["tags"]


def test_ephemeral_prompt_stores_no_session(server):
    body = prompt(server, ephemeral=True).json()
    assert "session_id" not in body
    assert server.get("/api/v1/sessions").json()["total"] == 0


def test_session_id_continues_that_session(server):
    first = prompt(server, backend="codex", prompt="one").json()
    second = prompt(server, backend="codex", prompt="two", session_id=first["session_id"])
    assert second.status == 200
    assert second.json()["session_id"] == first["session_id"]
    assert second.json()["output"].startswith("[history: 1 turns]")


def test_unknown_session_id_is_404(server):
    reply = prompt(server, session_id="0123456789abcdef0123456789abcdef")
    assert reply.status == 404 and reply.json()["error"] == "session_not_found"


def test_backend_that_fails_is_200_with_exit_code_and_error(server, monkeypatch):
    monkeypatch.setenv("FAKE_CLI_MODE", "fail")
    reply = prompt(server, backend="gemini")
    assert reply.status == 200
    body = reply.json()
    assert body["exit_code"] != 0 and "fake failure" in body["error"]


def test_backend_error_reported_with_exit_zero_is_exit_code_1(server, monkeypatch):
    monkeypatch.setenv("FAKE_CLI_MODE", "error_exit0")
    body = prompt(server).json()
    assert body["exit_code"] == 1 and body["error"]


def test_unknown_fields_are_ignored(server):
    assert prompt(server, colour="blue", nested={"x": 1}).status == 200


def test_dry_run_returns_the_command_and_runs_nothing(server, record):
    body = prompt(server, backend="codex", dry_run=True).json()
    assert body["dry_run"] is True and body["exit_code"] == 0
    assert body["command"][0].endswith("/codex")
    assert body["output"].startswith("would run: ")
    assert "hello" not in " ".join(body["command"])         # the prompt goes to stdin
    assert not record.exists()
    assert server.get("/api/v1/sessions").json()["total"] == 0


def test_dry_run_streams_init_message_done(server):
    reply = prompt(server, dry_run=True, output_format="stream-json")
    events = ndjson(reply)
    assert [e["type"] for e in events] == ["init", "message", "done"]
    assert events[1]["content"]["text"].startswith("would run: ")


# -- streaming ---------------------------------------------------------------------------------


def test_stream_json_answers_ndjson_with_init_first_and_done_last(server):
    reply = prompt(server, output_format="stream-json")
    assert reply.status == 200
    assert reply.headers["Content-Type"] == "application/x-ndjson"
    assert reply.headers["Transfer-Encoding"] == "chunked"
    assert reply.headers["Cache-Control"] == "no-cache"
    assert reply.headers["X-Accel-Buffering"] == "no"
    events = ndjson(reply)
    assert events[0]["type"] == "init" and events[-1]["type"] == "done"
    text = "".join(e["content"]["text"] for e in events
                   if e["type"] == "message" and e["content"].get("is_partial"))
    assert text == "echo: hello"


def test_stream_events_carry_the_session_id(server):
    events = ndjson(prompt(server, output_format="stream-json"))
    sids = {e.get("session_id") for e in events}
    assert len(sids) == 1 and re.fullmatch(r"[0-9a-f]{32}", sids.pop())


def test_stream_failure_midway_sends_error_then_done(server, monkeypatch):
    monkeypatch.setenv("FAKE_CLI_MODE", "crash_midstream")
    events = ndjson(prompt(server, output_format="stream-json"))
    assert [e["type"] for e in events][-2:] == ["error", "done"]


def test_first_event_arrives_while_the_backend_still_runs(server, monkeypatch, pidfile):
    monkeypatch.setenv("FAKE_CLI_MODE", "slow")
    monkeypatch.setenv("FAKE_CLI_DELAY", "0.5")
    conn = server.connection()
    conn.request("POST", "/api/v1/prompt", json.dumps(
        {"backend": "claude", "prompt": "hi", "output_format": "stream-json"}),
        {"Content-Type": "application/json"})
    resp = conn.getresponse()
    first = json.loads(resp.readline())
    assert first["type"] == "init"
    assert pid_alive(read_pid(pidfile))                  # the backend has not finished
    conn.close()


def test_http10_stream_ends_with_the_connection_instead_of_chunks(server):
    body = json.dumps({"backend": "claude", "prompt": "hi", "output_format": "stream-json"})
    raw = raw_request(server, ("POST /api/v1/prompt HTTP/1.0\r\nContent-Type: application/json"
                               "\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)).encode())
    head, _, payload = raw.partition(b"\r\n\r\n")
    assert b"Transfer-Encoding" not in head and b"Connection: close" in head
    assert json.loads(payload.splitlines()[-1])["type"] == "done"


# -- cancellation: client gone, timeout, shutdown ----------------------------------------------


def test_client_disconnect_mid_request_kills_the_backend(server, monkeypatch, pidfile):
    monkeypatch.setenv("FAKE_CLI_MODE", "hang")
    s = socket.create_connection(("127.0.0.1", server.port))
    s.sendall(post_bytes("/api/v1/prompt", json.dumps(
        {"backend": "claude", "prompt": "hi"}).encode()))
    pid = read_pid(pidfile)
    s.close()
    assert wait_for(lambda: not pid_alive(pid), 5)


def test_client_disconnect_mid_stream_kills_the_backend(server, monkeypatch, pidfile):
    monkeypatch.setenv("FAKE_CLI_MODE", "hang")
    conn = server.connection()
    conn.request("POST", "/api/v1/prompt", json.dumps(
        {"backend": "gemini", "prompt": "hi", "output_format": "stream-json"}),
        {"Content-Type": "application/json"})
    resp = conn.getresponse()
    assert json.loads(resp.readline())["type"] == "init"
    pid = read_pid(pidfile)
    conn.close()
    assert wait_for(lambda: not pid_alive(pid), 5)


def test_request_timeout_is_504_and_kills_the_backend(start_server, monkeypatch, pidfile):
    srv = start_server(**{"server.request_timeout_secs": 1})
    monkeypatch.setenv("FAKE_CLI_MODE", "hang")
    reply = prompt(srv)
    assert reply.status == 504 and reply.json()["error"] == "timeout"
    assert wait_for(lambda: not pid_alive(read_pid(pidfile)), 5)


def test_stream_timeout_ends_with_timeout_error_then_done(start_server, monkeypatch):
    srv = start_server(**{"server.request_timeout_secs": 1})
    monkeypatch.setenv("FAKE_CLI_MODE", "hang")
    events = ndjson(prompt(srv, output_format="stream-json"))
    errors = [e for e in events if e["type"] == "error"]
    assert errors and errors[0]["content"].get("code") == "timeout"
    assert events[-1]["type"] == "done"


def test_shutdown_after_the_grace_period_starts_no_further_task(start_server, monkeypatch,
                                                                 record, pidfile):
    srv = start_server(**{"server.shutdown_grace_secs": 0})
    monkeypatch.setenv("FAKE_CLI_MODE", "hang")
    replies = []
    caller = threading.Thread(target=lambda: replies.append(srv.post("/api/v1/parallel", {
        "tasks": [{"backend": "claude", "prompt": str(i)} for i in range(3)],
        "max_parallel": 1})))
    caller.start()
    first = read_pid(pidfile)
    srv.stop()
    caller.join(10)
    assert replies[0].status == 200
    assert [r["exit_code"] for r in replies[0].json()["results"]] == [-1, -1, -1]
    assert len(record.read_text().splitlines()) == 1 and not pid_alive(first)


# -- the run limit --------------------------------------------------------------------------------


def test_full_server_answers_503_with_retry_after(start_server, monkeypatch, pidfile):
    srv = start_server(**{"server.max_concurrent_runs": 1, "server.queue_timeout_secs": 0})
    monkeypatch.setenv("FAKE_CLI_MODE", "hang")
    s = socket.create_connection(("127.0.0.1", srv.port))
    s.sendall(post_bytes("/api/v1/prompt", json.dumps(
        {"backend": "claude", "prompt": "hold"}).encode()))
    read_pid(pidfile)                                     # the only slot is taken
    reply = prompt(srv, backend="codex")
    s.close()
    assert reply.status == 503 and reply.json()["error"] == "server_busy"
    assert int(reply.headers["Retry-After"]) >= 1


def test_request_waits_in_the_queue_for_a_free_slot(start_server, monkeypatch):
    srv = start_server(**{"server.max_concurrent_runs": 1, "server.queue_timeout_secs": 30})
    monkeypatch.setenv("FAKE_CLI_MODE", "slow")
    monkeypatch.setenv("FAKE_CLI_DELAY", "0.2")
    replies = []
    threads = [threading.Thread(target=lambda: replies.append(prompt(srv, ephemeral=True)))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert [r.status for r in replies] == [200, 200]


# -- errors of the prompt route ------------------------------------------------------------------


def test_unknown_backend_is_400(server):
    reply = prompt(server, backend="gpt")
    assert reply.status == 400 and reply.json()["field"] == "backend"


def test_backend_not_installed_is_503_naming_the_command(start_server, only_backends):
    only_backends("claude", "codex")
    reply = prompt(start_server(), backend="gemini")
    assert reply.status == 503
    assert reply.json()["error"] == "backend_not_installed" and "'gemini'" in \
        reply.json()["message"]


def test_disabled_backend_is_503(start_server):
    reply = prompt(start_server(**{"backends.codex.enabled": False}), backend="codex")
    assert reply.status == 503 and reply.json()["error"] == "backend_disabled"


@pytest.mark.parametrize("workdir", ["relative/dir", "/no/such/dir", "/etc"])
def test_invalid_workdir_is_400_naming_workdir(server, workdir):
    reply = prompt(server, workdir=workdir)
    assert reply.status == 400 and reply.json()["field"] == "workdir"


def test_extra_flag_outside_the_allowlist_is_400(server):
    reply = prompt(server, extra=["--dangerously-skip-permissions"])
    assert reply.status == 400 and reply.json()["field"] == "extra[0]"


def test_dangerous_mode_is_refused_unless_configured(server):
    reply = prompt(server, approval_mode="none")
    assert reply.status == 400 and reply.json()["field"] == "approval_mode"


def test_missing_field_is_400_naming_it(server):
    reply = server.post("/api/v1/prompt", {"backend": "claude"})
    assert reply.status == 400 and reply.json()["field"] == "prompt"


def test_wrong_type_is_400_saying_what_was_expected(server):
    reply = prompt(server, max_turns="ten")
    assert reply.status == 400
    assert reply.json()["field"] == "max_turns" and "integer" in reply.json()["message"]


def test_nested_field_path_is_named(server):
    reply = server.post("/api/v1/parallel", {"tasks": [{"backend": "claude", "prompt": "a"},
                                                       {"backend": 7, "prompt": "b"}]})
    assert reply.status == 400 and reply.json()["field"] == "tasks[1].backend"


@pytest.mark.parametrize("body", [b"{not json", b"", b"  ", b"\xff\xfe", b"[[[" * 100000])
def test_unparsable_body_is_400(server, body):
    reply = server.post("/api/v1/prompt", body, headers={"Content-Type": "application/json"})
    assert reply.status == 400 and reply.json()["error"] == "invalid_json"


@pytest.mark.parametrize("body", [b"[]", b"\"text\"", b"42", b"null"])
def test_body_that_is_not_an_object_is_400(server, body):
    reply = server.post("/api/v1/prompt", body, headers={"Content-Type": "application/json"})
    assert reply.status == 400 and "JSON object" in reply.json()["message"]


@pytest.mark.parametrize("ctype", ["text/plain", "application/x-www-form-urlencoded"])
def test_non_json_content_type_is_415(server, ctype):
    reply = server.post("/api/v1/prompt", b'{"backend":"claude","prompt":"x"}',
                        headers={"Content-Type": ctype})
    assert reply.status == 415


def test_body_over_the_limit_is_413_before_reading(start_server):
    srv = start_server(**{"server.max_request_body_bytes": 100})
    raw = raw_request(srv, post_bytes("/api/v1/prompt", b"{" + b" " * 200 + b"}"))
    assert status_of(raw) == 413 and b"request_too_large" in raw


def test_announced_oversized_body_is_refused_before_100_continue(start_server):
    srv = start_server(**{"server.max_request_body_bytes": 100})
    raw = raw_request(srv, b"POST /api/v1/prompt HTTP/1.1\r\nHost: localhost\r\nContent-Type: "
                           b"application/json\r\nContent-Length: 5000\r\n"
                           b"Expect: 100-continue\r\n\r\n")
    assert status_of(raw) == 413 and b"100 Continue" not in raw
    assert b"request_too_large" in raw


def test_chunked_body_over_the_limit_is_413(start_server):
    srv = start_server(**{"server.max_request_body_bytes": 100})
    chunk = b"{" + b" " * 150 + b"}"
    raw = raw_request(srv, b"POST /api/v1/prompt HTTP/1.1\r\nHost: localhost\r\nContent-Type: "
                           b"application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                      + b"%x\r\n%s\r\n0\r\n\r\n" % (len(chunk), chunk))
    assert status_of(raw) == 413


def test_chunked_body_is_read(server):
    body = json.dumps({"backend": "claude", "prompt": "chunked"}).encode()
    raw = raw_request(server, b"POST /api/v1/prompt HTTP/1.1\r\nHost: localhost\r\nContent-Type: "
                              b"application/json\r\nTransfer-Encoding: chunked\r\n"
                              b"Connection: close\r\n\r\n"
                      + b"5\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (body[:5], len(body) - 5,
                                                                 body[5:]))
    assert status_of(raw) == 200 and b"echo: chunked" in raw


# -- parallel, chain, compare ---------------------------------------------------------------------


def test_parallel_returns_results_in_request_order(server):
    reply = server.post("/api/v1/parallel", {"tasks": [
        {"backend": "codex", "prompt": "one"}, {"backend": "gemini", "prompt": "two"},
        {"backend": "claude", "prompt": "three"}]})
    body = reply.json()
    assert reply.status == 200
    assert (body["total_tasks"], body["completed"], body["failed"], body["cancelled"]) == \
        (3, 3, 0, 0)
    assert [(r["backend"], r["output"]) for r in body["results"]] == [
        ("codex", "echo: one"), ("gemini", "echo: two"), ("claude", "echo: three")]
    assert all("session_id" not in r for r in body["results"])
    assert server.get("/api/v1/sessions").json()["total"] == 0


def test_parallel_counts_a_failed_task(server, only_backends):
    only_backends("claude")
    body = server.post("/api/v1/parallel", {"tasks": [
        {"backend": "claude", "prompt": "a"}, {"backend": "codex", "prompt": "b"}]}).json()
    assert (body["completed"], body["failed"]) == (1, 1)
    assert "codex" in body["results"][1]["error"]


def test_chain_passes_the_previous_output_on(server):
    body = server.post("/api/v1/chain", {"steps": [
        {"name": "first", "backend": "claude", "prompt": "alpha"},
        {"backend": "codex", "prompt": "got {{previous}}"}]}).json()
    assert body["total_steps"] == 2 and body["completed_steps"] == 2
    assert body["failed_step"] == 0
    assert body["results"][0]["name"] == "first"
    assert body["results"][1]["output"] == "echo: got echo: alpha"


def test_chain_reports_the_failed_step(server, monkeypatch):
    monkeypatch.setenv("FAKE_CLI_MODE", "fail")
    body = server.post("/api/v1/chain", {"steps": [{"backend": "claude", "prompt": "a"}],
                                         "stop_on_failure": True}).json()
    assert body["failed_step"] == 1 and body["completed_steps"] == 0


def test_chain_session_placeholder_is_400(server):
    reply = server.post("/api/v1/chain", {"steps": [
        {"backend": "claude", "prompt": "use {{session}}"}]})
    assert reply.status == 400 and reply.json()["field"] == "steps[0].prompt"


def test_compare_answers_per_backend_in_order(server):
    body = server.post("/api/v1/compare", {"prompt": "q", "backends": ["gemini", "claude"]}
                       ).json()
    assert body["prompt"] == "q" and body["backends"] == ["gemini", "claude"]
    assert [r["backend"] for r in body["results"]] == ["gemini", "claude"]
    assert all(r["output"] == "echo: q" and r["model"] for r in body["results"])


def test_compare_skips_a_backend_that_is_not_installed(start_server, only_backends):
    only_backends("claude")
    body = start_server().post("/api/v1/compare", {"prompt": "q",
                                                   "backends": ["claude", "codex"]}).json()
    assert body["backends"] == ["claude"]
    assert body["skipped"][0]["backend"] == "codex"


def test_compare_with_no_installed_backend_is_503(start_server, only_backends):
    only_backends("claude")
    reply = start_server().post("/api/v1/compare", {"prompt": "q", "backends": ["gemini"]})
    assert reply.status == 503


# -- backends and sessions -----------------------------------------------------------------------


def test_backends_lists_every_backend_with_availability(start_server, only_backends):
    only_backends("claude", "gemini")
    body = start_server().get("/api/v1/backends").json()
    available = {b["name"]: b["available"] for b in body["backends"]}
    assert available == {"claude": True, "codex": False, "gemini": True, "qwen": False,
                         "copilot": False, "opencode": False}


def test_sessions_list_paginates_and_reports_the_total(server):
    for p in ("a", "b", "c"):
        prompt(server, prompt=p)
    body = server.get("/api/v1/sessions?limit=2&offset=1").json()
    assert (body["total"], body["limit"], body["offset"]) == (3, 2, 1)
    assert len(body["sessions"]) == 2
    assert "backend_session_id" not in body["sessions"][0]


def test_sessions_list_filters_by_backend(server):
    prompt(server, backend="claude")
    prompt(server, backend="gemini")
    body = server.get("/api/v1/sessions?backend=gemini").json()
    assert body["total"] == 1 and body["sessions"][0]["backend"] == "gemini"


def test_sessions_list_filters_by_a_part_of_the_workdir(server):
    for path in ("/srv/shop/api", "/srv/shop/web", "/home/ann/notes"):
        server.app.store.create("claude", path)
    body = server.get("/api/v1/sessions?workdir=shop/").json()
    assert body["total"] == 2
    assert sorted(s["working_dir"] for s in body["sessions"]) == ["/srv/shop/api",
                                                                  "/srv/shop/web"]
    assert server.get("/api/v1/sessions?workdir=nowhere").json()["total"] == 0


def test_sessions_list_bad_limit_is_400(server):
    reply = server.get("/api/v1/sessions?limit=many")
    assert reply.status == 400 and reply.json()["field"] == "limit"


def test_session_is_found_by_a_unique_prefix(server):
    sid = prompt(server).json()["session_id"]
    assert server.get("/api/v1/sessions/" + sid[:8]).json()["id"] == sid


@pytest.mark.parametrize("sid", ["0123456789abcdef", "..", "%2e%2e", "%00", "x" * 3000])
def test_unknown_or_odd_session_id_is_404(server, sid):
    reply = server.get("/api/v1/sessions/" + sid)
    assert reply.status == 404


def test_delete_session_then_it_is_gone(server):
    sid = prompt(server).json()["session_id"]
    reply = server.request("DELETE", "/api/v1/sessions/" + sid)
    assert reply.status == 200 and reply.json() == {"deleted": True, "id": sid}
    assert server.get("/api/v1/sessions/" + sid).status == 404
    assert server.request("DELETE", "/api/v1/sessions/" + sid).status == 404


# -- meta endpoints -------------------------------------------------------------------------------


def test_health_ok_when_every_backend_is_installed(server):
    reply = server.get("/health")
    body = reply.json()
    assert reply.status == 200 and body["status"] == "ok"
    assert re.fullmatch(r"(\d+h)?(\d+m)?\d+s", body["uptime"])
    assert isinstance(body["uptime_millis"], int) and body["version"]
    assert body["session_store"] == {"available": True, "session_count": 0, "error": ""}


def test_health_degraded_when_a_backend_is_missing(start_server, only_backends):
    only_backends("claude", "codex")
    reply = start_server().get("/health")
    assert reply.status == 200 and reply.json()["status"] == "degraded"


def test_health_unhealthy_is_503_when_the_store_is_unusable(start_server, clinvk_home):
    (clinvk_home / "sessions").write_text("not a directory")
    reply = start_server().get("/health")
    assert reply.status == 503
    body = reply.json()
    assert body["status"] == "unhealthy" and body["session_store"]["available"] is False
    assert body["session_store"]["error"]


def test_openapi_document_lists_the_served_routes(server):
    doc = server.get("/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    assert {"/api/v1/prompt", "/api/v1/sessions/{id}", "/health"} <= set(doc["paths"])
    assert "/metrics" not in doc["paths"]                 # metrics are off here


def test_docs_page_loads_scripts_and_styles_from_this_server_only(server):
    reply = server.get("/docs")
    assert reply.headers["Content-Type"].startswith("text/html")
    assert b"/api/v1/prompt" in reply.body
    sources = re.findall(rb'<(?:script|link)[^>]+(?:src|href)="([^"]*)"', reply.body)
    assert b"console/tryit.js" in b" ".join(sources)
    assert all(s == b"data:," or s.startswith(b"console/") for s in sources), sources
    assert "default-src 'none'" in reply.headers["Content-Security-Policy"]


def test_metrics_is_404_when_disabled(server):
    assert server.get("/metrics").status == 404


def test_metrics_count_requests_by_route_template(start_server):
    srv = start_server(**{"server.metrics_enabled": True})
    sid = prompt(srv).json()["session_id"]
    srv.get("/api/v1/sessions/" + sid)
    counted = 'clinvk_http_requests_total{method="GET",route="/api/v1/sessions/{id}",' \
              'status="200"} 1'
    text = metrics_once_counted(srv, counted)
    assert counted in text
    assert sid not in text
    assert 'clinvk_backend_runs_total{backend="claude",outcome="success"} 1' in text


# -- routing, HTTP details ------------------------------------------------------------------------


def test_unknown_path_is_404_in_the_native_shape(server):
    reply = server.get("/api/v1/nothing")
    assert reply.status == 404 and reply.json()["error"] == "not_found"


def test_wrong_method_is_405_with_allow(server):
    reply = server.request("DELETE", "/health")
    assert reply.status == 405 and reply.headers["Allow"] == "GET, HEAD, OPTIONS"


def test_options_answers_allow(server):
    reply = server.request("OPTIONS", "/api/v1/sessions/abc")
    assert reply.status == 204 and reply.headers["Allow"] == "GET, HEAD, DELETE, OPTIONS"


def test_head_has_the_headers_of_get_and_no_body(server):
    reply = server.request("HEAD", "/api/v1/backends")
    assert reply.status == 200 and reply.body == b""
    assert int(reply.headers["Content-Length"]) == len(server.get("/api/v1/backends").body)


@pytest.mark.parametrize("path", ["/..", "/%2e%2e/health", "/api/v1/../health", "/%00",
                                  "/a%zz", "/" + "p/" * 2000, "/api/v1/sessions/%ff"])
def test_odd_paths_are_never_a_server_error(server, path):
    assert server.get(path).status < 500


def test_request_line_too_long_is_414(server):
    raw = raw_request(server, b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert status_of(raw) == 414


def test_malformed_request_line_is_400_json(server):
    raw = raw_request(server, b"NONSENSE\r\n\r\n")
    assert status_of(raw) == 400 and b'"error"' in raw


def test_keep_alive_serves_several_requests_on_one_connection(server):
    conn = server.connection()
    for _ in range(3):
        conn.request("GET", "/health")
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 200
    conn.close()


def test_sane_request_id_is_echoed(server):
    assert server.get("/health", headers={"X-Request-Id": "abc-123"}).headers[
        "X-Request-Id"] == "abc-123"


def test_insane_request_id_is_replaced(server):
    rid = server.get("/health", headers={"X-Request-Id": "a b\tc" + "x" * 300}).headers[
        "X-Request-Id"]
    assert re.fullmatch(r"[0-9a-f]{16}", rid)


def test_every_response_carries_a_request_id(server):
    for reply in (server.get("/nothing"), prompt(server, backend="nope"),
                  prompt(server, output_format="stream-json")):
        assert reply.headers["X-Request-Id"]


def test_access_log_has_one_line_per_request_without_the_prompt(server):
    server.get("/health", headers={"X-Request-Id": "rid-1"})
    prompt(server, prompt="top secret prompt")
    lines = server.app.log.lines
    # A line is written once the response is out, so it may trail the reply a little.
    assert wait_for(lambda: len(lines) >= 2)
    assert len(lines) == 2
    assert "GET /health 200" in lines[0] and "id=rid-1" in lines[0] and "127.0.0.1" in lines[0]
    assert "top secret" not in "".join(lines)


def test_access_log_json_lines(start_server):
    srv = start_server(**{"server.log_format": "json"})
    srv.get("/health")
    assert wait_for(lambda: srv.app.log.lines)
    record = json.loads(srv.app.log.lines[-1])
    assert {k: record[k] for k in ("method", "path", "status")} == {
        "method": "GET", "path": "/health", "status": 200}
    assert record["request_id"] and record["client"] == "127.0.0.1"


# -- extension points for the compatibility and hardening layers --------------------------------


def test_added_route_is_served_and_documented(server):
    server.app.add_route(Spec("GET", "/extra/{name}", "getExtra", "Meta", "Extra"),
                         lambda ctx: json_response({"name": ctx.params["name"]}))
    assert server.get("/extra/x%20y").json() == {"name": "x y"}
    assert "/extra/{name}" in server.get("/openapi.json").json()["paths"]


def test_pipeline_step_answers_before_the_handler(server):
    def refuse_without_key(ctx):
        if not ctx.headers.get("X-Api-Key"):
            raise errors.ApiError(401, "unauthorized", "missing API key")
    server.app.steps.append(refuse_without_key)
    assert server.get("/api/v1/backends").status == 401
    assert server.get("/api/v1/nothing").status == 401     # unknown paths pass the steps too
    assert server.get("/api/v1/backends", headers={"X-Api-Key": "k"}).status == 200


def test_response_hook_adds_headers_to_errors_and_streams(server):
    server.app.response_hooks.append(lambda ctx, headers: headers.append(("X-Extra", "1")))
    for reply in (server.get("/health"), server.get("/nothing"),
                  prompt(server, output_format="stream-json")):
        assert reply.headers["X-Extra"] == "1"


def test_registered_error_style_renders_errors_under_its_prefix(server):
    server.app.error_styles.register("Other", lambda err: {"failure": {"why": err.message}},
                                     "/other/")
    assert "failure" in server.get("/other/v1/nothing").json()
    assert "error" in server.get("/api/v1/nothing").json()


def test_stream_keepalive_fills_silence(server):
    def slow_chunks():
        time.sleep(0.5)
        yield b"data\n"

    server.app.add_route(Spec("GET", "/extra/stream", "getStream", "Meta", "Stream"),
                         lambda ctx: StreamResponse(slow_chunks(), "text/event-stream",
                                                    keepalive_secs=0.05,
                                                    keepalive_chunk=b": ping\n"))
    body = server.get("/extra/stream").body
    assert body.startswith(b": ping\n") and body.endswith(b"data\n")


# -- clinvk serve as a process: start-up line, SIGTERM drain --------------------------------------


def serve_process(tmp_path, **env_extra):
    env = dict(os.environ, PATH=FAKE_BIN + os.pathsep + "/usr/local/bin:/usr/bin:/bin",
               CLINVK_HOME=str(tmp_path / "serve-home"),
               FAKE_CLI_STATE_DIR=str(tmp_path / "fake-state"), **env_extra)
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "clinvk.py"), "serve",
                             "--host", "127.0.0.1", "--port", "0"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=env, cwd=str(tmp_path))
    line = proc.stderr.readline().decode()
    match = re.search(r"listening on (http://127\.0\.0\.1:(\d+))", line)
    assert match, "no start-up line: %r" % line
    # Keep reading stderr so the access log never blocks the server.
    threading.Thread(target=proc.stderr.read, daemon=True).start()
    return proc, line, int(match.group(2))


def test_startup_line_names_url_console_docs_and_backends(tmp_path):
    proc, line, port = serve_process(tmp_path)
    try:
        assert "(console: http://127.0.0.1:%d/, docs: http://127.0.0.1:%d/docs)" % (port, port) \
            in line
        assert "backends installed: claude, codex, gemini" in line
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0


def test_sigterm_lets_the_running_request_finish_then_exits_0(tmp_path):
    pidfile = str(tmp_path / "fake.pid")
    proc, _, port = serve_process(tmp_path, FAKE_CLI_MODE="slow", FAKE_CLI_DELAY="1",
                                  FAKE_CLI_PIDFILE=pidfile)
    replies = []

    def call():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("POST", "/api/v1/prompt", json.dumps({"backend": "claude", "prompt": "x"}),
                     {"Content-Type": "application/json"})
        resp = conn.getresponse()
        replies.append((resp.status, json.loads(resp.read())))

    caller = threading.Thread(target=call)
    caller.start()
    child = read_pid(pidfile)
    proc.send_signal(signal.SIGTERM)
    caller.join(30)
    assert replies and replies[0][0] == 200 and replies[0][1]["output"] == "echo: x"
    assert proc.wait(15) == 0
    assert not pid_alive(child)


def test_sigterm_cancels_runs_still_going_after_the_grace_period(tmp_path):
    pidfile = str(tmp_path / "fake.pid")
    proc, _, port = serve_process(tmp_path, FAKE_CLI_MODE="hang", FAKE_CLI_PIDFILE=pidfile,
                                  CLINVK_SERVER_SHUTDOWN_GRACE_SECS="1")
    replies = []

    def call():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("POST", "/api/v1/prompt", json.dumps({"backend": "codex", "prompt": "x"}),
                     {"Content-Type": "application/json"})
        replies.append(conn.getresponse().status)

    caller = threading.Thread(target=call)
    caller.start()
    child = read_pid(pidfile)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 0
    caller.join(10)
    assert replies == [503]
    assert not pid_alive(child)
