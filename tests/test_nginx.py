"""clinvk behind a real nginx (Debian's package): deploy/nginx.conf in front of two
`clinvk serve` processes sharing one CLINVK_HOME, all on 127.0.0.1.

The site config is deploy/nginx.conf itself with only the listen ports, the upstream ports,
the certificate paths and the access log path substituted; the test adds the process-level
lines (pid file, temp paths, error log) that Debian's /etc/nginx/nginx.conf would provide.
TLS is terminated with a self-signed certificate made by `openssl req`; without openssl the
plain-HTTP variant of the same file is run (its ssl lines removed).

Clients connect from their own loopback addresses (127.0.0.x, x > 1) so that the address
clinvk reports can be told apart from nginx's (127.0.0.1, the trusted proxy).
"""

from __future__ import annotations

import http.client
import itertools
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import time
import uuid
from typing import Any, Dict, List, Optional

import pytest

from tests.serveproc import ServeProcess
from tests.serverutil import Reply, encode_body, pid_alive, read_pid, send_request, wait_for

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEPLOY_CONF = os.path.join(ROOT, "deploy", "nginx.conf")
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
OPENSSL = shutil.which("openssl")
HOSTNAME = "clinvk.example.com"

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not os.access(NGINX, os.X_OK),
                                 reason="nginx is not installed (Debian package nginx; "
                                        "test.sh installs it)")]

# Each test sends from its own addresses, so no two tests share a rate-limit bucket.
_addresses = ("127.0.0.%d" % n for n in itertools.count(10))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def site_config(upstream_ports: List[int], https_port: int, http_port: int,
                cert: Optional[str], key: Optional[str], access_log: str) -> str:
    """deploy/nginx.conf with this test's ports and paths; without a certificate, the
    plain-HTTP variant (listen without ssl, ssl_* lines dropped)."""
    with open(DEPLOY_CONF) as f:
        text = f.read()
    listen = "listen 127.0.0.1:%d ssl http2;" % https_port if cert \
        else "listen 127.0.0.1:%d;" % https_port
    substitutions = [
        ("listen 443 ssl http2;", listen),
        ("listen 80;", "listen 127.0.0.1:%d;" % http_port),
        ("server 127.0.0.1:8081 ", "server 127.0.0.1:%d " % upstream_ports[0]),
        ("server 127.0.0.1:8082 ", "server 127.0.0.1:%d " % upstream_ports[1]),
        ("/var/log/nginx/clinvk.access.log", access_log),
        ("/etc/ssl/clinvk/fullchain.pem", cert or "/etc/ssl/clinvk/fullchain.pem"),
        ("/etc/ssl/clinvk/privkey.pem", key or "/etc/ssl/clinvk/privkey.pem"),
    ]
    for old, new in substitutions:
        assert text.count(old) == 1, "deploy/nginx.conf no longer has exactly one %r: " \
            "update tests/test_nginx.py with it" % old
        text = text.replace(old, new)
    if not cert:
        text = "\n".join(line for line in text.splitlines()
                         if not line.strip().startswith("ssl_"))
    return text


def main_config(tmp: str, site: str) -> str:
    """What Debian's nginx.conf provides around a conf.d file, kept inside ``tmp``."""
    temp_paths = "".join("    %s_temp_path %s/%s;\n" % (kind, tmp, kind)
                         for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    user = "user root root;\n" if os.geteuid() == 0 else ""
    return ("daemon off;\n%sworker_processes 1;\npid %s/nginx.pid;\nerror_log %s/error.log;\n"
            "events { worker_connections 1024; }\nhttp {\n%s    include %s;\n}\n"
            % (user, tmp, tmp, temp_paths, site))


def self_signed_certificate(tmp: str):
    """(cert, key) for clinvk.example.com and 127.0.0.1, or (None, None) without openssl."""
    if not OPENSSL:
        return None, None
    cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
    subprocess.run([OPENSSL, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", key, "-out", cert, "-subj", "/CN=" + HOSTNAME,
                    "-addext", "subjectAltName=DNS:%s,IP:127.0.0.1" % HOSTNAME],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return cert, key


class Cluster:
    """nginx on 127.0.0.1 in front of two clinvk instances sharing one CLINVK_HOME."""

    def __init__(self, tmp: str, env: Dict[str, str]) -> None:
        self.tmp = tmp
        home = os.path.join(tmp, "clinvk-home")
        config = {"server": {"trusted_proxies": ["127.0.0.1"], "allowed_hosts": [HOSTNAME],
                             "rate_limit_enabled": True, "rate_limit_rps": 0.1,
                             "rate_limit_burst": 20, "shutdown_grace_secs": 10}}
        state = os.path.join(tmp, "fake-state")
        self.instances = [ServeProcess(home, env, config, state) for _ in range(2)]
        self.https_port, http_port = free_port(), free_port()
        self.cert, key = self_signed_certificate(tmp)
        self.access_log = os.path.join(tmp, "access.log")
        site = os.path.join(tmp, "clinvk.conf")
        with open(site, "w") as f:
            f.write(site_config([i.port for i in self.instances], self.https_port, http_port,
                                self.cert, key, self.access_log))
        conf = os.path.join(tmp, "nginx.conf")
        with open(conf, "w") as f:
            f.write(main_config(tmp, site))
        argv = [NGINX, "-p", tmp, "-c", conf, "-e", os.path.join(tmp, "error.log")]
        check = subprocess.run(argv + ["-t"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert check.returncode == 0, check.stdout.decode()
        self.nginx = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
        self.http_port = http_port
        assert wait_for(self._listening, 10), "nginx did not start: %s" % self.error_log()

    def _listening(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.https_port), 1).close()
            return True
        except OSError:
            return False

    def error_log(self) -> str:
        try:
            with open(os.path.join(self.tmp, "error.log")) as f:
                return f.read()
        except OSError:
            return ""

    def connection(self, source: str, timeout: float = 30.0) -> http.client.HTTPConnection:
        if self.cert:
            ctx = ssl.create_default_context(cafile=self.cert)
            return http.client.HTTPSConnection("127.0.0.1", self.https_port, timeout=timeout,
                                               source_address=(source, 0), context=ctx)
        return http.client.HTTPConnection("127.0.0.1", self.https_port, timeout=timeout,
                                          source_address=(source, 0))

    def request(self, source: str, method: str, path: str, body: Any = None,
                headers: Optional[Dict[str, str]] = None) -> Reply:
        return send_request(self.connection(source), method, path, body, with_host(headers))

    def served_by(self, request_id: str) -> "ServeProcess":
        """The instance that answered the request with this X-Request-Id (nginx's log)."""
        assert wait_for(lambda: self._upstream(request_id), 5), \
            "no access-log line for %s" % request_id
        port = int(self._upstream(request_id).rsplit(":", 1)[1])
        return next(i for i in self.instances if i.port == port)

    def _upstream(self, request_id: str) -> str:
        with open(self.access_log) as f:
            for line in f:
                if line.rstrip().endswith("id=" + request_id):
                    # "upstream=A, B" when A failed and B answered
                    return re.search(r"upstream=(.*) id=", line).group(1).split(",")[-1].strip()
        return ""

    def other(self, instance: "ServeProcess") -> "ServeProcess":
        return next(i for i in self.instances if i is not instance)

    def stop(self) -> None:
        if self.nginx.poll() is None:
            self.nginx.send_signal(signal.SIGQUIT)
            try:
                self.nginx.wait(10)
            except subprocess.TimeoutExpired:
                self.nginx.kill()
                self.nginx.wait()
        for instance in self.instances:
            instance.stop()


def with_host(headers: Optional[Dict[str, str]]) -> Dict[str, str]:
    """``headers`` after the Host name nginx serves clinvk under."""
    return dict({"Host": HOSTNAME}, **(headers or {}))


def encode(body: Any, headers: Optional[Dict[str, str]]):
    return encode_body(body, with_host(headers))


def request_id() -> str:
    return "nginx-test-" + uuid.uuid4().hex


@pytest.fixture
def cluster(tmp_path):
    """``cluster(**env)`` -> a running Cluster whose instances have ``env`` (FAKE_CLI_*)."""
    started: List[Cluster] = []

    def start(**env: str) -> Cluster:
        c = Cluster(str(tmp_path / ("cluster-%d" % len(started))), env)
        started.append(c)
        return c

    yield start
    for c in started:
        c.stop()


@pytest.fixture
def address() -> str:
    return next(_addresses)


# -- streaming -----------------------------------------------------------------------------------


def test_ndjson_stream_through_nginx_arrives_event_by_event(cluster, address, tmp_path):
    pidfile = str(tmp_path / "fake.pid")
    c = cluster(FAKE_CLI_MODE="slow", FAKE_CLI_DELAY="0.4", FAKE_CLI_PIDFILE=pidfile)
    conn = c.connection(address)
    conn.request("POST", "/api/v1/prompt", *encode(
        {"backend": "gemini", "prompt": "hi", "output_format": "stream-json"}, None))
    resp = conn.getresponse()
    assert resp.status == 200
    first = json.loads(resp.readline())
    first_at = time.monotonic()
    assert first["type"] == "init" and pid_alive(read_pid(pidfile))
    lines = [line for line in resp.read().splitlines() if line.strip()]
    last_at = time.monotonic()
    conn.close()
    assert json.loads(lines[-1])["type"] == "done"
    # The fake prints a line every 0.4 s: a proxy that buffered would deliver them together.
    assert last_at - first_at > 1.0


def test_sse_stream_through_nginx_arrives_event_by_event(cluster, address):
    c = cluster(FAKE_CLI_MODE="slow", FAKE_CLI_DELAY="0.4")
    conn = c.connection(address)
    conn.request("POST", "/openai/v1/chat/completions", *encode(
        {"model": "gemini", "stream": True, "messages": [{"role": "user", "content": "hi"}]},
        None))
    resp = conn.getresponse()
    if resp.status == 404:
        pytest.skip("the OpenAI-compatible API is not served")
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/event-stream")
    first = resp.readline()
    first_at = time.monotonic()
    assert first.startswith(b"data: ")
    rest = resp.read()
    last_at = time.monotonic()
    conn.close()
    assert rest.rstrip().endswith(b"data: [DONE]")
    assert last_at - first_at > 1.0


# -- sessions across instances -------------------------------------------------------------------


def test_requests_naming_one_session_in_a_header_go_to_one_instance(cluster, address):
    c = cluster()
    ids = [request_id() for _ in range(6)]
    for rid in ids:
        assert c.request(address, "GET", "/api/v1/backends", headers={
            "X-Clinvk-Session-Id": "affinity-probe", "X-Request-Id": rid}).status == 200
    assert len({c.served_by(rid).port for rid in ids}) == 1


def test_turns_naming_one_session_in_the_body_go_to_one_instance(cluster, address):
    c = cluster()
    first = c.request(address, "POST", "/api/v1/prompt", {"backend": "claude", "prompt": "one"})
    sid = first.json()["session_id"]
    ids = [request_id() for _ in range(3)]
    for n, rid in enumerate(ids, 1):
        reply = c.request(address, "POST", "/api/v1/prompt",
                          {"backend": "claude", "prompt": "more", "session_id": sid},
                          {"X-Request-Id": rid})
        assert reply.json()["output"] == "[history: %d turns] echo: more" % n
    assert len({c.served_by(rid).port for rid in ids}) == 1


def test_requests_without_a_session_spread_over_the_instances(cluster, address):
    c = cluster()
    ids = [request_id() for _ in range(16)]
    for rid in ids:
        assert c.request(address, "GET", "/api/v1/backends",
                         headers={"X-Request-Id": rid}).status == 200
    assert {c.served_by(rid).port for rid in ids} == {i.port for i in c.instances}


def test_session_created_through_one_instance_is_resumed_through_the_other(cluster, address):
    c = cluster()
    rid = request_id()
    created = c.request(address, "POST", "/api/v1/prompt",
                        {"backend": "codex", "prompt": "remember"}, {"X-Request-Id": rid})
    sid = created.json()["session_id"]
    other = c.other(c.served_by(rid))
    resumed = other.post("/api/v1/prompt", {"backend": "codex", "prompt": "again",
                                            "session_id": sid})
    assert resumed.status == 200, resumed
    assert resumed.json()["output"] == "[history: 1 turns] echo: again"
    assert other.get("/api/v1/sessions/" + sid).json()["turn_count"] == 2


# -- client tools: the result reaches the instance whose run waits for it -------------------------

WEATHER = [{"type": "function", "function": {
    "name": "get_weather", "parameters": {"type": "object",
                                          "properties": {"city": {"type": "string"}}}}}]
ASK_TOOL = [{"role": "user", "content": 'CALL-TOOL: get_weather {"city": "Paris"}'}]


def answered_call(first: Reply, result: str, **extra: Any) -> Dict[str, Any]:
    message = first.json()["choices"][0]["message"]
    return dict({"model": "claude", "tools": WEATHER, "messages": ASK_TOOL + [message, {
        "role": "tool", "tool_call_id": message["tool_calls"][0]["id"], "content": result}]},
        **extra)


def test_a_tool_result_sent_to_another_instance_reaches_the_parked_run(cluster, address):
    c = cluster()
    rid = request_id()
    first = c.request(address, "POST", "/openai/v1/chat/completions",
                      {"model": "claude", "tools": WEATHER, "messages": ASK_TOOL},
                      {"X-Request-Id": rid})
    assert first.json()["choices"][0]["finish_reason"] == "tool_calls", first
    other = c.other(c.served_by(rid))
    r = other.post("/openai/v1/chat/completions", answered_call(first, "sunny"))
    assert r.status == 200, r
    assert r.json()["choices"][0]["message"]["content"] == "TOOL-RESULT-SEEN: sunny"


def test_tool_results_through_nginx_reach_the_parked_runs_streamed(cluster, address):
    c = cluster()
    for n in range(4):              # nginx hashes each request on a random key
        rid = request_id()
        first = c.request(address, "POST", "/openai/v1/chat/completions",
                          {"model": "claude", "tools": WEATHER, "messages": ASK_TOOL},
                          {"X-Request-Id": rid})
        rid = request_id()
        r = c.request(address, "POST", "/openai/v1/chat/completions",
                      answered_call(first, "cloudy %d" % n, stream=True), {"X-Request-Id": rid})
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/event-stream")
        assert "TOOL-RESULT-SEEN: cloudy %d" % n in "".join(
            json.loads(line[6:])["choices"][0]["delta"].get("content") or ""
            for line in r.body.decode().splitlines()
            if line.startswith("data: {") and json.loads(line[6:])["choices"])


def test_responses_and_anthropic_results_sent_to_another_instance_reach_their_runs(
        cluster, address):
    c = cluster()
    rid = request_id()
    first = c.request(address, "POST", "/openai/v1/responses",
                      {"model": "codex", "input": ASK_TOOL[0]["content"],
                       "tools": [dict(WEATHER[0]["function"], type="function")]},
                      {"X-Request-Id": rid})
    call, = [item for item in first.json()["output"] if item["type"] == "function_call"]
    r = c.other(c.served_by(rid)).post("/openai/v1/responses", {
        "model": "codex", "previous_response_id": first.json()["id"], "stream": True,
        "input": [{"type": "function_call_output", "call_id": call["call_id"], "output": "fog"}]})
    assert r.status == 200 and b"TOOL-RESULT-SEEN: fog" in r.body
    rid = request_id()
    tools = [{"name": "get_weather", "input_schema": WEATHER[0]["function"]["parameters"]}]
    first = c.request(address, "POST", "/anthropic/v1/messages",
                      {"model": "claude", "max_tokens": 100, "messages": ASK_TOOL,
                       "tools": tools}, {"X-Request-Id": rid})
    use, = [b for b in first.json()["content"] if b["type"] == "tool_use"]
    r = c.other(c.served_by(rid)).post("/anthropic/v1/messages", {
        "model": "claude", "max_tokens": 100, "tools": tools, "messages": ASK_TOOL + [
            {"role": "assistant", "content": first.json()["content"]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use["id"],
                                          "content": "hail"}]}]})
    assert r.json()["content"][0]["text"] == "TOOL-RESULT-SEEN: hail"


def test_a_forwarded_request_is_not_forwarded_again_and_a_forged_mark_is_ignored(
        cluster, address):
    c = cluster()
    rid = request_id()
    first = c.request(address, "POST", "/openai/v1/chat/completions",
                      {"model": "claude", "tools": WEATHER, "messages": ASK_TOOL},
                      {"X-Request-Id": rid})
    other = c.other(c.served_by(rid))
    # A client's own mark (not the home's key) does not stop the forwarding.
    with open(os.path.join(c.tmp, "clinvk-home", "tool-bridge", "forward.key")) as f:
        key = f.read()
    # Marked with the home's key, as a forwarded request is: answered where it lands (404).
    r = other.post("/openai/v1/chat/completions", answered_call(first, "x"),
                   headers={"X-Clinvk-Forwarded": key})
    assert r.status == 404 and r.json()["error"]["code"] == "tool_call_not_found"
    # A client's own mark (not the home's key) does not stop the forwarding.
    r = other.post("/openai/v1/chat/completions", answered_call(first, "x"),
                   headers={"X-Clinvk-Forwarded": "guess"})
    assert r.json()["choices"][0]["message"]["content"] == "TOOL-RESULT-SEEN: x"


# -- the client's address ------------------------------------------------------------------------


def test_access_log_shows_the_original_client_not_nginx_or_a_forged_address(cluster, address):
    c = cluster()
    rid = request_id()
    reply = c.request(address, "GET", "/api/v1/backends",
                      headers={"X-Request-Id": rid, "X-Forwarded-For": "203.0.113.9"})
    assert reply.status == 200 and reply.headers["X-Request-Id"] == rid
    instance = c.served_by(rid)
    assert wait_for(lambda: instance.log_lines_with(rid), 5)
    line = instance.log_lines_with(rid)[0]
    assert line.split()[-1] == address, line


def test_rate_limit_counts_each_original_client_not_the_proxy(cluster, address):
    c = cluster()
    # One affinity key: every request reaches the same instance, and so the same buckets.
    same = {"X-Clinvk-Session-Id": "rate-probe"}
    statuses = [c.request(address, "GET", "/api/v1/backends", headers=same).status
                for _ in range(21)]
    assert statuses[:20] == [200] * 20 and statuses[20] == 429
    assert c.request(next(_addresses), "GET", "/api/v1/backends",
                     headers=same).status == 200


# -- an instance stopping -------------------------------------------------------------------------


def test_sigterm_during_a_run_loses_no_session_and_the_next_turn_goes_to_the_other(
        cluster, address, tmp_path):
    c = cluster(FAKE_CLI_MODE="slow", FAKE_CLI_DELAY="0.3")
    rid = request_id()
    sid = c.request(address, "POST", "/api/v1/prompt", {"backend": "gemini", "prompt": "one"},
                    ).json()["session_id"]
    # The session's later turns all go to one instance: find it with a quick request.
    c.request(address, "GET", "/api/v1/sessions/" + sid,
              headers={"X-Clinvk-Session-Id": sid, "X-Request-Id": rid})
    first = c.served_by(rid)
    events: List[Dict[str, Any]] = []
    conn = c.connection(address)
    running_id = request_id()
    conn.request("POST", "/api/v1/prompt", *encode(
        {"backend": "gemini", "prompt": "two", "session_id": sid,
         "output_format": "stream-json"}, {"X-Request-Id": running_id}))
    resp = conn.getresponse()
    events.append(json.loads(resp.readline()))          # the run has started
    first.signal(signal.SIGTERM)
    assert wait_for(lambda: refuses(first.port), 5)
    events.extend(json.loads(line) for line in resp.read().splitlines() if line.strip())
    conn.close()
    assert [e["type"] for e in events][0] == "init" and events[-1]["type"] == "done"
    assert not [e for e in events if e["type"] == "error"]
    assert c.served_by(running_id) is first

    next_id = request_id()
    third = c.request(address, "POST", "/api/v1/prompt",
                      {"backend": "gemini", "prompt": "three", "session_id": sid},
                      {"X-Request-Id": next_id})
    assert third.status == 200, third
    assert third.json()["output"] == "[history: 2 turns] echo: three"
    assert c.served_by(next_id) is c.other(first)
    assert first.proc.wait(15) == 0
    assert c.request(address, "GET", "/api/v1/sessions/" + sid).json()["turn_count"] == 3


def refuses(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), 1).close()
        return False
    except OSError:
        return True


def test_docs_behind_nginx_name_the_address_clients_use(cluster, address):
    c = cluster()
    scheme = "https" if c.cert else "http"
    servers = c.request(address, "GET", "/openapi.json").json()["servers"]
    assert servers[0]["url"] == "%s://%s" % (scheme, HOSTNAME)


def test_plain_http_is_redirected_to_https(cluster, address):
    c = cluster()
    if not c.cert:
        pytest.skip("no openssl: the plain-HTTP variant has no TLS to redirect to")
    conn = http.client.HTTPConnection("127.0.0.1", c.http_port, timeout=10,
                                      source_address=(address, 0))
    conn.request("GET", "/health", headers={"Host": HOSTNAME})
    resp = conn.getresponse()
    conn.close()
    assert resp.status == 301
    assert resp.headers["Location"] == "https://%s/health" % HOSTNAME
