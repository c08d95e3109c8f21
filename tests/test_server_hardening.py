"""Server hardening end to end through a running server: API keys (in each API style), safe
binding, the Host check, CORS, rate limiting behind trusted proxies, body and time limits,
request ids, the execution policy and the Prometheus metrics."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from clinvk_lib.config import ConfigError
from tests.test_metrics import FAMILIES
from tests.serverutil import (  # noqa: F401 (fixtures)
    make_server, metrics_once_counted, pid_alive, raw_request, read_pid, read_until_closed,
    server, start_server, status_of, wait_for)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAKE_BIN = os.path.join(ROOT, "tests", "fakes", "bin")

KEYS = {"server.api_keys": ["sk-alpha-1111", "sk-beta-2222"]}
PROMPT = {"backend": "claude", "prompt": "hello"}
CHAT = {"model": "claude", "messages": [{"role": "user", "content": "hello"}]}
MESSAGE = {"model": "claude", "max_tokens": 64, "messages": [{"role": "user", "content": "hello"}]}


def prompt(srv, headers=None, **fields):
    return srv.post("/api/v1/prompt", dict(PROMPT, **fields), headers=headers)


def log_text(srv) -> str:
    return "\n".join(srv.app.log.lines)


def metric(srv, name: str, key: str = "sk-alpha-1111") -> float:
    text = srv.get("/metrics", headers={"X-Api-Key": key}).body.decode()
    match = re.search(r"^%s (\S+)$" % re.escape(name), text, re.M)
    assert match, "no sample %s" % name
    return float(match.group(1))


# -- authentication ----------------------------------------------------------------------------


def test_request_without_a_key_is_401_in_the_native_shape(start_server):
    reply = prompt(start_server(**KEYS))
    assert reply.status == 401 and reply.json()["error"] == "unauthorized"
    assert "X-Api-Key" in reply.json()["message"]
    assert reply.headers["WWW-Authenticate"].startswith("Bearer")


def test_request_without_a_key_is_401_in_the_openai_shape(start_server):
    reply = start_server(**KEYS).post("/openai/v1/chat/completions", CHAT)
    error = reply.json()["error"]
    assert reply.status == 401 and error["type"] == "authentication_error"
    assert set(error) == {"message", "type", "param", "code"}


def test_request_without_a_key_is_401_in_the_anthropic_shape(start_server):
    reply = start_server(**KEYS).post("/anthropic/v1/messages", MESSAGE)
    body = reply.json()
    assert reply.status == 401 and body["type"] == "error"
    assert body["error"]["type"] == "authentication_error"


def test_wrong_key_is_401_invalid(start_server):
    reply = prompt(start_server(**KEYS), headers={"X-Api-Key": "sk-alpha-1112"})
    assert reply.status == 401 and reply.json()["message"] == "invalid API key"


@pytest.mark.parametrize("header", [{"X-Api-Key": "sk-beta-2222"},
                                    {"x-api-key": "sk-beta-2222"},
                                    {"Authorization": "Bearer sk-alpha-1111"}])
def test_a_configured_key_in_either_header_lets_the_request_through(start_server, header):
    assert prompt(start_server(**KEYS), headers=header).status == 200


def test_keys_from_clinvk_api_keys_are_used(start_server, monkeypatch):
    monkeypatch.setenv("CLINVK_API_KEYS", "env-key-1,env-key-2")
    srv = start_server()
    assert prompt(srv).status == 401
    assert prompt(srv, headers={"X-Api-Key": "env-key-2"}).status == 200


def test_keys_from_the_key_file_are_used(start_server, tmp_path):
    path = tmp_path / "api-keys"
    path.write_text("# ops team\nfile-key-1\n")
    srv = start_server(**{"server.api_keys_file": str(path)})
    assert prompt(srv, headers={"X-Api-Key": "file-key-1"}).status == 200
    assert prompt(srv, headers={"X-Api-Key": "ops"}).status == 401


def test_openai_and_anthropic_routes_accept_their_sdks_headers(start_server):
    srv = start_server(**KEYS)
    assert srv.post("/openai/v1/chat/completions", CHAT,
                    headers={"Authorization": "Bearer sk-alpha-1111"}).status == 200
    assert srv.post("/anthropic/v1/messages", MESSAGE,
                    headers={"x-api-key": "sk-alpha-1111",
                             "anthropic-version": "2023-06-01"}).status == 200


@pytest.mark.parametrize("path", ["/health", "/openapi.json", "/docs"])
def test_public_routes_need_no_key(start_server, path):
    assert start_server(**KEYS).get(path).status == 200


def test_unknown_path_needs_a_key_before_it_is_a_404(start_server):
    srv = start_server(**KEYS)
    assert srv.get("/api/v1/nothing").status == 401
    assert srv.get("/api/v1/nothing", headers={"X-Api-Key": "sk-beta-2222"}).status == 404


def test_metrics_need_a_key_by_default(start_server):
    srv = start_server(**dict(KEYS, **{"server.metrics_enabled": True}))
    assert srv.get("/metrics").status == 401
    assert srv.get("/metrics", headers={"X-Api-Key": "sk-beta-2222"}).status == 200


def test_metrics_need_no_key_when_public(start_server):
    srv = start_server(**dict(KEYS, **{"server.metrics_enabled": True,
                                       "server.metrics_public": True}))
    assert srv.get("/metrics").status == 200


def test_keys_never_reach_the_access_log(start_server):
    srv = start_server(**KEYS)
    prompt(srv, headers={"X-Api-Key": "sk-alpha-1111"})
    prompt(srv, headers={"Authorization": "Bearer sk-wrong-9999"})
    assert wait_for(lambda: len(srv.app.log.lines) >= 2)
    assert "sk-alpha" not in log_text(srv) and "sk-wrong" not in log_text(srv)


def test_auth_failures_are_counted(start_server):
    srv = start_server(**dict(KEYS, **{"server.metrics_enabled": True}))
    prompt(srv)
    prompt(srv, headers={"X-Api-Key": "nope"})
    assert metric(srv, "clinvk_auth_failures_total") == 2


def test_unusable_key_file_is_a_startup_error(clinvk_home, fake_path, tmp_path):
    with pytest.raises(ConfigError) as info:
        make_server({"server.api_keys_file": str(tmp_path / "missing")})
    assert "no such file" in str(info.value)


# -- clinvk serve: safe binding and the start-up line ------------------------------------------


def serve_argv(*args: str):
    return [sys.executable, os.path.join(ROOT, "clinvk.py"), "serve", "--port", "0"] + list(args)


def serve_env(tmp_path, **extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLINVK_")}
    env.update(PATH=FAKE_BIN + os.pathsep + "/usr/local/bin:/usr/bin:/bin",
               CLINVK_HOME=str(tmp_path / "serve-home"), **extra)
    return env


def startup_line(tmp_path, **env) -> str:
    proc = subprocess.Popen(serve_argv("--host", "127.0.0.1"), stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=serve_env(tmp_path, **env), cwd=str(tmp_path))
    try:
        return proc.stderr.readline().decode()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)


def test_non_loopback_bind_without_keys_refuses_to_start(tmp_path):
    # Refused before binding: nothing listens on 0.0.0.0.
    done = subprocess.run(serve_argv("--host", "0.0.0.0"), stdin=subprocess.DEVNULL,
                          capture_output=True, env=serve_env(tmp_path), timeout=30)
    message = done.stderr.decode()
    assert done.returncode == 2
    assert "CLINVK_API_KEYS" in message and "--allow-unauthenticated" in message


def test_startup_line_says_auth_is_off_without_keys(tmp_path):
    assert "auth: off (no API keys)" in startup_line(tmp_path)


def test_startup_line_says_auth_is_on_with_the_key_count(tmp_path):
    line = startup_line(tmp_path, CLINVK_API_KEYS="k-one,k-two")
    assert "auth: on (2 keys)" in line and "k-one" not in line


def test_failing_gopass_is_a_startup_error(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    gopass = bin_dir / "gopass"
    gopass.write_text("#!/bin/sh\necho 'Error: gpg: decryption failed' >&2\nexit 1\n")
    gopass.chmod(0o755)
    env = serve_env(tmp_path, CLINVK_API_KEYS_GOPASS_PATH="team/clinvk")
    env["PATH"] = str(bin_dir) + os.pathsep + env["PATH"]
    done = subprocess.run(serve_argv("--host", "127.0.0.1"), stdin=subprocess.DEVNULL,
                          capture_output=True, env=env, timeout=30)
    assert done.returncode == 2
    assert "server.api_keys_gopass_path" in done.stderr.decode()
    assert "decryption failed" in done.stderr.decode()


# -- the Host check ----------------------------------------------------------------------------


def test_foreign_host_on_a_loopback_bind_is_403(server):
    reply = server.get("/health", headers={"Host": "attacker.example:8080"})
    assert reply.status == 403 and reply.json()["error"] == "forbidden_host"


def test_foreign_host_is_403_in_the_openai_shape(server):
    reply = server.get("/openai/v1/models", headers={"Host": "attacker.example"})
    assert reply.status == 403 and reply.json()["error"]["type"] == "permission_error"


@pytest.mark.parametrize("host", ["localhost", "localhost:%d", "127.0.0.1:%d", "[::1]:%d"])
def test_loopback_host_names_are_served(server, host):
    value = host % server.port if "%d" in host else host
    assert server.get("/health", headers={"Host": value}).status == 200


def test_allowed_hosts_let_a_name_through(start_server):
    srv = start_server(**{"server.allowed_hosts": ["devbox.lan"]})
    assert srv.get("/health", headers={"Host": "devbox.lan:%d" % srv.port}).status == 200
    assert srv.get("/health", headers={"Host": "other.lan"}).status == 403


def test_host_is_not_checked_on_a_non_loopback_bind(start_server):
    # The config says 0.0.0.0 (with a key); the test server itself still binds 127.0.0.1.
    srv = start_server(**dict(KEYS, **{"server.host": "0.0.0.0"}))
    assert srv.get("/health", headers={"Host": "clinvk.corp.example"}).status == 200


# -- CORS --------------------------------------------------------------------------------------

APP_ORIGIN = "https://app.example"
CORS = {"server.cors_allowed_origins": [APP_ORIGIN], "server.cors_max_age": 600}


def preflight(srv, origin=APP_ORIGIN, method="POST", req_headers="content-type, x-api-key",
              path="/api/v1/prompt"):
    hdrs = {"Origin": origin, "Access-Control-Request-Method": method}
    if req_headers:
        hdrs["Access-Control-Request-Headers"] = req_headers
    return srv.request("OPTIONS", path, headers=hdrs)


def test_no_cors_headers_at_all_by_default(server):
    replies = [server.get("/health", headers={"Origin": APP_ORIGIN}), preflight(server)]
    for reply in replies:
        assert not [h for h in reply.headers if h.lower().startswith("access-control-")]


def test_preflight_from_an_allowed_origin_is_answered_with_methods_and_headers(start_server):
    reply = preflight(start_server(**CORS))
    assert reply.status == 204
    assert reply.headers["Access-Control-Allow-Origin"] == APP_ORIGIN
    assert "POST" in reply.headers["Access-Control-Allow-Methods"]
    assert reply.headers["Access-Control-Allow-Headers"] == "content-type, x-api-key"
    assert reply.headers["Access-Control-Max-Age"] == "600"
    assert "Origin" in reply.headers.get_all("Vary")


def test_preflight_needs_no_key(start_server):
    reply = preflight(start_server(**dict(KEYS, **CORS)))
    assert reply.status == 204 and reply.headers["Access-Control-Allow-Origin"] == APP_ORIGIN


def test_preflight_allows_the_sdk_headers(start_server):
    reply = preflight(start_server(**CORS), path="/openai/v1/chat/completions",
                      req_headers="authorization, content-type, x-stainless-os, "
                                  "x-stainless-retry-count")
    assert reply.status == 204


def test_preflight_allows_an_idempotency_key_and_exposes_the_replay_header(start_server):
    srv = start_server(**CORS)
    reply = preflight(srv, path="/openai/v1/chat/completions",
                      req_headers="content-type, idempotency-key")
    assert reply.status == 204
    exposed = srv.get("/health", headers={"Origin": APP_ORIGIN}).headers
    assert "Idempotent-Replayed" in exposed["Access-Control-Expose-Headers"]


def test_preflight_from_another_origin_is_403_without_cors_headers(start_server):
    reply = preflight(start_server(**CORS), origin="https://evil.example")
    assert reply.status == 403 and "cors_allowed_origins" in reply.json()["message"]
    assert "Access-Control-Allow-Origin" not in reply.headers


def test_preflight_for_a_header_not_allowed_is_403_naming_it(start_server):
    reply = preflight(start_server(**CORS), req_headers="content-type, x-sneaky")
    assert reply.status == 403 and "x-sneaky" in reply.json()["message"]


def test_preflight_for_a_method_the_path_lacks_is_403(start_server):
    reply = preflight(start_server(**CORS), method="DELETE")
    assert reply.status == 403 and "DELETE" in reply.json()["message"]


def test_response_to_an_allowed_origin_carries_cors_headers(start_server):
    reply = start_server(**CORS).get("/health", headers={"Origin": APP_ORIGIN})
    assert reply.headers["Access-Control-Allow-Origin"] == APP_ORIGIN
    assert "X-Request-Id" in reply.headers["Access-Control-Expose-Headers"]
    assert "Access-Control-Allow-Credentials" not in reply.headers


def test_request_from_another_origin_is_403_without_allow_origin(start_server):
    reply = start_server(**CORS).get("/health", headers={"Origin": "https://evil.example"})
    assert reply.status == 403 and "Access-Control-Allow-Origin" not in reply.headers


def test_error_responses_carry_cors_headers_so_the_page_can_read_them(start_server):
    reply = prompt(start_server(**dict(KEYS, **CORS)), headers={"Origin": APP_ORIGIN})
    assert reply.status == 401 and reply.headers["Access-Control-Allow-Origin"] == APP_ORIGIN


def test_credentials_are_allowed_when_configured(start_server):
    srv = start_server(**dict(CORS, **{"server.cors_allow_credentials": True}))
    reply = srv.get("/health", headers={"Origin": APP_ORIGIN})
    assert reply.headers["Access-Control-Allow-Credentials"] == "true"


def test_any_origin_gets_a_star(start_server):
    reply = start_server(**{"server.cors_allowed_origins": ["*"]}).get(
        "/health", headers={"Origin": "https://whoever.example"})
    assert reply.headers["Access-Control-Allow-Origin"] == "*"


def test_credentials_with_any_origin_refuses_to_start(clinvk_home, fake_path):
    with pytest.raises(ConfigError):
        make_server({"server.cors_allowed_origins": ["*"],
                     "server.cors_allow_credentials": True})


# -- rate limiting -----------------------------------------------------------------------------


def limited(**extra):
    """One request per client, refilled so slowly that it never comes back in a test."""
    return dict({"server.rate_limit_enabled": True, "server.rate_limit_rps": 0.01,
                 "server.rate_limit_burst": 1}, **extra)


def test_over_the_limit_is_429_with_retry_after_and_ratelimit_headers(start_server):
    srv = start_server(**limited(**{"server.rate_limit_burst": 2}))
    first, second, third = (srv.get("/health") for _ in range(3))
    assert (first.status, second.status, third.status) == (200, 200, 429)
    assert first.headers["RateLimit-Limit"] == "2" and first.headers["RateLimit-Remaining"] == "1"
    assert third.headers["RateLimit-Remaining"] == "0"
    assert 1 <= int(third.headers["Retry-After"]) <= 100
    assert third.json()["error"] == "rate_limited"


def test_429_in_the_openai_shape(start_server):
    srv = start_server(**limited())
    srv.get("/health")
    reply = srv.post("/openai/v1/chat/completions", CHAT)
    assert reply.status == 429 and reply.json()["error"]["type"] == "rate_limit_error"
    assert reply.headers["Retry-After"]


def test_429_in_the_anthropic_shape(start_server):
    srv = start_server(**limited())
    srv.get("/health")
    reply = srv.post("/anthropic/v1/messages", MESSAGE)
    assert reply.status == 429 and reply.json()["error"]["type"] == "rate_limit_error"


def test_rate_limiting_is_off_by_default(server):
    assert all(server.get("/health").status == 200 for _ in range(30))
    assert "RateLimit-Limit" not in server.get("/health").headers


def test_forged_x_forwarded_for_from_an_untrusted_peer_keeps_its_bucket(start_server):
    srv = start_server(**limited())
    assert srv.get("/health", headers={"X-Forwarded-For": "198.51.100.1"}).status == 200
    assert srv.get("/health", headers={"X-Forwarded-For": "198.51.100.2"}).status == 429
    assert srv.get("/health", headers={"Forwarded": "for=198.51.100.3"}).status == 429


def test_trusted_proxy_x_forwarded_for_picks_the_bucket(start_server):
    srv = start_server(**limited(**{"server.trusted_proxies": ["127.0.0.1"]}))
    assert srv.get("/health", headers={"X-Forwarded-For": "198.51.100.1"}).status == 200
    assert srv.get("/health", headers={"X-Forwarded-For": "198.51.100.2"}).status == 200
    # A client prepending its own entry does not escape: the proxy appended the real address.
    assert srv.get("/health", headers={
        "X-Forwarded-For": "203.0.113.9, 198.51.100.1"}).status == 429


def test_client_behind_a_trusted_proxy_is_logged_by_its_own_address(start_server):
    srv = start_server(**{"server.trusted_proxies": ["127.0.0.0/8"]})
    srv.get("/health", headers={"X-Forwarded-For": "198.51.100.7"})
    assert wait_for(lambda: srv.app.log.lines)
    assert "198.51.100.7" in srv.app.log.lines[0]


def test_a_valid_key_has_one_bucket_from_every_address(start_server):
    srv = start_server(**limited(**dict(KEYS, **{"server.trusted_proxies": ["127.0.0.1"]})))
    key = {"X-Api-Key": "sk-alpha-1111"}
    assert srv.get("/api/v1/backends", headers=dict(key, **{
        "X-Forwarded-For": "198.51.100.1"})).status == 200
    assert srv.get("/api/v1/backends", headers=dict(key, **{
        "X-Forwarded-For": "198.51.100.2"})).status == 429
    # Another key is another client.
    assert srv.get("/api/v1/backends", headers={"X-Api-Key": "sk-beta-2222",
                                                "X-Forwarded-For": "198.51.100.2"}).status == 200


def test_guessing_keys_is_throttled_by_address(start_server):
    srv = start_server(**limited(**KEYS))
    assert srv.get("/api/v1/backends", headers={"X-Api-Key": "guess-1"}).status == 401
    assert srv.get("/api/v1/backends", headers={"X-Api-Key": "guess-2"}).status == 429


def test_rate_limited_requests_are_counted(start_server):
    srv = start_server(**limited(**{"server.metrics_enabled": True,
                                    "server.rate_limit_burst": 2}))
    for _ in range(4):
        srv.get("/health")
    text = srv.get("/metrics").body.decode()    # itself refused, and counted
    assert srv.app.metrics.rate_limited.value() == 3 and "clinvk_rate_limited_total" not in text


# -- body size and time limits -----------------------------------------------------------------


def post_head(path: str, extra: str) -> bytes:
    return ("POST %s HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n%s\r\n"
            % (path, extra)).encode()


def test_content_length_over_the_limit_is_413_before_the_body_is_sent(start_server):
    srv = start_server(**{"server.max_request_body_bytes": 1000})
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        s.sendall(post_head("/api/v1/prompt", "Content-Length: 1001\r\n"))
        raw = read_until_closed(s)               # answered without waiting for any body
    assert status_of(raw) == 413 and b"request_too_large" in raw


def test_content_length_over_the_limit_is_413_in_the_openai_shape(start_server):
    srv = start_server(**{"server.max_request_body_bytes": 100})
    reply = srv.post("/openai/v1/chat/completions", dict(CHAT, padding="x" * 200))
    assert reply.status == 413 and reply.json()["error"]["code"] == "request_too_large"


def test_chunked_body_is_refused_as_soon_as_it_passes_the_limit(start_server):
    srv = start_server(**{"server.max_request_body_bytes": 1000})
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        s.sendall(post_head("/api/v1/prompt", "Transfer-Encoding: chunked\r\n"))
        for _ in range(3):
            s.sendall(b"200\r\n" + b" " * 0x200 + b"\r\n")      # 1536 bytes so far, no end
        raw = read_until_closed(s)
    assert status_of(raw) == 413 and b"request_too_large" in raw


def test_body_within_the_limit_is_accepted(start_server):
    srv = start_server(**{"server.max_request_body_bytes": 1000})
    assert prompt(srv).status == 200


def test_client_that_stalls_in_its_headers_is_disconnected(start_server):
    srv = start_server(**{"server.read_timeout_secs": 1})
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\n")
        started = time.monotonic()
        assert read_until_closed(s) == b""
        assert time.monotonic() - started < 9               # closed by the server, not by us


def test_client_that_stalls_in_its_body_gets_408(start_server):
    srv = start_server(**{"server.read_timeout_secs": 1})
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        s.sendall(post_head("/api/v1/prompt", "Content-Length: 100\r\n") + b'{"backend"')
        raw = read_until_closed(s)
    assert status_of(raw) == 408


def test_client_that_trickles_its_headers_is_cut_off_at_the_read_timeout(start_server):
    srv = start_server(**{"server.read_timeout_secs": 1})
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\n")
        started = time.monotonic()
        s.settimeout(0.5)
        closed = False
        while not closed and time.monotonic() - started < 4:     # 4 read timeouts' worth
            try:
                s.sendall(b"X-Slow: 1\r\n")
                closed = s.recv(65536) == b""
            except socket.timeout:
                pass                                            # still open, still waiting
            except OSError:
                closed = True
        assert closed


def test_too_many_header_lines_are_431(server):
    raw = raw_request(server, b"GET /health HTTP/1.1\r\nHost: localhost\r\n" + b"".join(
        b"X-H%d: v\r\n" % i for i in range(101)) + b"\r\n")
    assert status_of(raw) == 431 and b"headers_too_large" in raw


def test_header_line_over_64_kib_is_431(server):
    raw = raw_request(server, b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Big: "
                      + b"a" * 70000 + b"\r\n\r\n")
    assert status_of(raw) == 431


def test_idle_keep_alive_connection_is_closed(start_server):
    srv = start_server(**{"server.idle_timeout_secs": 1})
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        time.sleep(0.2)
        assert status_of(s.recv(65536)) == 200
        started = time.monotonic()
        assert read_until_closed(s) == b""
        assert time.monotonic() - started < 9


# -- request ids -------------------------------------------------------------------------------


def test_sane_request_id_is_kept_and_logged(server):
    reply = server.get("/health", headers={"X-Request-Id": "trace-42.a/b"})
    assert reply.headers["X-Request-Id"] == "trace-42.a/b"
    assert wait_for(lambda: server.app.log.lines)
    assert "id=trace-42.a/b" in server.app.log.lines[0]


@pytest.mark.parametrize("given", ["has space", "x" * 129, "quote\"d", "semi;colon"])
def test_insane_request_id_is_replaced(server, given):
    assert re.fullmatch(r"[0-9a-f]{16}", server.get("/health", headers={
        "X-Request-Id": given}).headers["X-Request-Id"])


def test_request_id_is_generated_when_absent(server):
    ids = {server.get("/health").headers["X-Request-Id"] for _ in range(3)}
    assert len(ids) == 3 and all(re.fullmatch(r"[0-9a-f]{16}", i) for i in ids)


def test_refusals_carry_the_request_id_too(start_server):
    srv = start_server(**limited(**KEYS))
    replies = [srv.get("/api/v1/backends", headers={"X-Request-Id": "r-1"}),
               srv.get("/health", headers={"X-Request-Id": "r-2"}),
               srv.get("/health", headers={"X-Request-Id": "r-3", "Host": "evil.example"})]
    assert [r.status for r in replies] == [401, 429, 429]
    assert [r.headers["X-Request-Id"] for r in replies] == ["r-1", "r-2", "r-3"]


def test_forbidden_host_carries_the_request_id(server):
    reply = server.get("/health", headers={"X-Request-Id": "r-9", "Host": "evil.example"})
    assert reply.status == 403 and reply.headers["X-Request-Id"] == "r-9"


# -- execution policy --------------------------------------------------------------------------


@pytest.fixture
def tree(tmp_path):
    """allowed/proj (a project), allowed-not/ (a sibling sharing the name's prefix),
    outside/, and symlinks: allowed/escape -> outside, outside/into -> allowed/proj,
    allowed/etc -> /etc."""
    allowed = tmp_path / "allowed"
    (allowed / "proj").mkdir(parents=True)
    (tmp_path / "allowed-not").mkdir()
    (tmp_path / "outside").mkdir()
    os.symlink(str(tmp_path / "outside"), str(allowed / "escape"))
    os.symlink(str(allowed / "proj"), str(tmp_path / "outside" / "into"))
    os.symlink("/etc", str(allowed / "etc"))
    return tmp_path


def policy_server(start_server, tree):
    return start_server(**{"server.allowed_workdir_prefixes": [str(tree / "allowed")]})


def test_workdir_inside_an_allowed_prefix_runs(start_server, tree):
    reply = prompt(policy_server(start_server, tree), workdir=str(tree / "allowed" / "proj"))
    assert reply.status == 200 and reply.json()["exit_code"] == 0


def test_prefix_matches_whole_path_components(start_server, tree):
    reply = prompt(policy_server(start_server, tree), workdir=str(tree / "allowed-not"))
    assert reply.status == 400 and reply.json()["field"] == "workdir"


def test_symlink_out_of_the_allowed_prefix_is_400(start_server, tree):
    reply = prompt(policy_server(start_server, tree), workdir=str(tree / "allowed" / "escape"))
    assert reply.status == 400 and str(tree / "outside") in reply.json()["message"]


def test_symlink_into_the_allowed_prefix_runs_in_the_resolved_directory(start_server, tree):
    reply = prompt(policy_server(start_server, tree), workdir=str(tree / "outside" / "into"))
    assert reply.status == 200


def test_a_session_made_outside_the_allowed_prefixes_cannot_be_resumed_over_http(
        start_server, tree, clinvk_home):
    from clinvk_lib.sessions import SessionStore
    store = SessionStore(str(clinvk_home))      # as `clinvk` on the command line would
    made_by_cli = store.create("claude", str(tree / "outside"), initial_prompt="hi")
    store.record_turn(made_by_cli.id, "f9954454-b602-4fab-b326-b6992b171aac", {})
    reply = prompt(policy_server(start_server, tree), session_id=made_by_cli.id)
    assert reply.status == 400 and reply.json()["field"] == "workdir"
    assert "not inside an allowed prefix" in reply.json()["message"]
    assert store.get(made_by_cli.id).turn_count == 1


def test_symlink_into_a_blocked_prefix_is_400(start_server, tree):
    reply = prompt(start_server(), workdir=str(tree / "allowed" / "etc"))
    assert reply.status == 400 and "blocked prefix /etc" in reply.json()["message"]


@pytest.mark.parametrize("workdir", ["/etc", "/proc/self", "/root", "relative/dir", "/no/such"])
def test_blocked_relative_or_missing_workdir_is_400(server, workdir):
    reply = prompt(server, workdir=workdir)
    assert reply.status == 400 and reply.json()["field"] == "workdir"


def test_operator_may_unblock_the_default_prefixes_explicitly(start_server):
    srv = start_server(**{"server.blocked_workdir_prefixes": []})
    assert prompt(srv, workdir="/etc", dry_run=True).status == 200


@pytest.mark.parametrize("extra,flag", [
    (["--dangerously-skip-permissions"], "--dangerously-skip-permissions"),
    (["--permission-mode=bypassPermissions"], "--permission-mode"),
    (["--effort", "high", "--mcp-config", "/tmp/x.json"], "--mcp-config"),
])
def test_extra_flag_outside_the_allowlist_is_400_naming_it(server, extra, flag):
    reply = prompt(server, extra=extra)
    assert reply.status == 400 and flag in reply.json()["message"]


@pytest.mark.parametrize("extra", [["--effort", "high"], ["--effort=high"],
                                   ["--disable-slash-commands"]])
def test_allowed_extra_flags_run(server, extra):
    assert prompt(server, extra=extra).status == 200


@pytest.mark.parametrize("extra", [["--add-dir", "/etc"], ["--add-dir=/root/x"]])
def test_path_flag_value_is_checked_like_a_workdir(server, extra):
    reply = prompt(server, extra=extra)
    assert reply.status == 400 and "blocked prefix" in reply.json()["message"]


def test_flag_allowed_for_one_backend_is_refused_for_another(server):
    reply = prompt(server, backend="gemini", extra=["--effort=high"])
    assert reply.status == 400 and "--effort" in reply.json()["message"]


@pytest.mark.parametrize("field,value", [("approval_mode", "none"), ("sandbox_mode", "full")])
def test_dangerous_mode_is_refused_by_default(server, field, value):
    reply = prompt(server, **{field: value})
    assert reply.status == 400 and reply.json()["field"] == field
    assert "server.allow_dangerous_modes" in reply.json()["message"]


@pytest.mark.parametrize("field,value", [("approval_mode", "none"), ("sandbox_mode", "full")])
def test_dangerous_mode_runs_when_allowed(start_server, field, value):
    srv = start_server(**{"server.allow_dangerous_modes": True})
    assert prompt(srv, **{field: value}).status == 200


# -- metrics -----------------------------------------------------------------------------------


def busy_server_metrics(start_server) -> str:
    """/metrics of a server that answered a bit of everything: runs, streams, sessions,
    401s, 404s, compat calls, a job."""
    srv = start_server(**dict(KEYS, **{"server.metrics_enabled": True,
                                       "server.rate_limit_enabled": True,
                                       "server.rate_limit_rps": 1000.0,
                                       "server.rate_limit_burst": 1000}))
    key = {"X-Api-Key": "sk-alpha-1111"}
    sid = prompt(srv, headers=key).json()["session_id"]
    prompt(srv, headers=key, output_format="stream-json")
    srv.get("/api/v1/sessions/" + sid, headers=key)
    srv.get("/api/v1/sessions/nope", headers=key)
    srv.post("/openai/v1/chat/completions", CHAT, headers=key)
    srv.post("/api/v1/jobs", {"kind": "prompt", "request": {"backend": "claude",
                                                            "prompt": "hi"}}, headers=key)
    prompt(srv)
    srv.request("BREW", "/api/v1/prompt", headers=key)
    return metrics_once_counted(srv, 'method="OTHER"', headers=key)


def test_metrics_list_every_series_with_its_type(start_server):
    text = busy_server_metrics(start_server)
    for name, kind in FAMILIES.items():
        assert "# TYPE %s %s\n" % (name, kind) in text
    assert re.search(r'^clinvk_build_info\{version="[^"]+",python="[^"]+"\} 1$', text, re.M)
    assert re.search(r'^clinvk_backend_tokens_total\{backend="claude",kind="output"\} \d+$',
                     text, re.M)


def test_metrics_use_route_templates_and_known_methods_only(start_server):
    text = busy_server_metrics(start_server)
    routes = set(re.findall(r'route="([^"]*)"', text))
    assert "/api/v1/sessions/{id}" in routes
    assert not [r for r in routes if "nope" in r or re.search(r"[0-9a-f]{32}", r)]
    assert 'method="BREW"' not in text and 'method="OTHER"' in text


def test_metrics_pass_promtool_check(start_server):
    if not shutil.which("promtool"):
        if os.environ.get("CI") == "true":
            pytest.fail("promtool is missing in CI: install Debian's prometheus package")
        pytest.skip("promtool not installed")
    done = subprocess.run(["promtool", "check", "metrics"], capture_output=True, timeout=30,
                          input=busy_server_metrics(start_server).encode())
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()


def test_metrics_do_not_hold_back_a_stream(start_server, monkeypatch, tmp_path):
    pidfile = str(tmp_path / "fake.pid")
    monkeypatch.setenv("FAKE_CLI_MODE", "slow")
    monkeypatch.setenv("FAKE_CLI_DELAY", "0.3")
    monkeypatch.setenv("FAKE_CLI_PIDFILE", pidfile)
    srv = start_server(**{"server.metrics_enabled": True})
    conn = srv.connection()
    conn.request("POST", "/api/v1/prompt", json.dumps(dict(PROMPT, output_format="stream-json")),
                 {"Content-Type": "application/json"})
    resp = conn.getresponse()
    first, second = json.loads(resp.readline()), json.loads(resp.readline())
    assert first["type"] == "init" and second["type"] != "done"
    assert pid_alive(read_pid(pidfile))               # the backend is still printing
    conn.close()
