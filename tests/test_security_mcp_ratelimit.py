"""Odd input cannot stop `clinvk mcp`, MCP runs share the server's run slots, and the rate
limiter counts a host once however many addresses it sends from and whatever the size of a
flood of new clients."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys

import pytest

from clinvk_lib import config, jsontext
from clinvk_lib.mcp import protocol
from clinvk_lib.server.errors import ApiError
from clinvk_lib.server.ratelimit import RateLimiter, rate_key
from tests.conftest import FAKE_BIN, ROOT, records
from tests.test_guards import Ctx, make_guards
from tests.test_mcp import (  # noqa: F401  (start: a fixture)
    WAIT, Client, read_pid, start, text_of)
from tests.test_ratelimit import FakeClock
from tests.serverutil import start_server  # noqa: F401  (a fixture)

# -- clinvk mcp: odd input ------------------------------------------------------------------------


def test_mcp_line_of_100000_brackets_is_a_parse_error_and_the_server_keeps_serving(start):
    client = start()
    client.send_line(b"[" * 100000)
    msg = client.recv()
    assert msg["id"] is None and msg["error"]["code"] == protocol.PARSE_ERROR
    assert "nested too deeply" in msg["error"]["message"]
    assert client.request("ping")["result"] == {}


def test_clinvk_mcp_process_survives_deep_nesting_and_answers_the_next_request(clinvk_home,
                                                                               fake_path):
    lines = b"[" * 100000 + b"\n" + b'{"jsonrpc": "2.0", "id": 1, "method": "ping"}\n'
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "clinvk.py"), "mcp"],
                          input=lines, capture_output=True, timeout=WAIT)
    replies = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r.get("error", {}).get("code") for r in replies] == [protocol.PARSE_ERROR, None]
    assert replies[1] == {"jsonrpc": "2.0", "id": 1, "result": {}}
    assert proc.returncode == 0 and b"Traceback" not in proc.stderr


def test_mcp_lone_surrogate_in_a_prompt_is_invalid_params_naming_it_and_runs_nothing(
        start, record):
    client = start()
    client.initialize()
    client.send_line(b'{"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": '
                     b'{"name": "clinvk_prompt", "arguments": {"backend": "claude", '
                     b'"prompt": "hi \\ud800"}}}')
    msg = client.response(5)
    assert msg["error"]["code"] == protocol.INVALID_PARAMS
    assert "params.arguments.prompt" in msg["error"]["message"]
    assert records(record) == []
    assert client.request("ping")["result"] == {}


@pytest.mark.parametrize("line", [
    b'{"jsonrpc": "2.0", "id": "\\ud800", "method": "ping"}',
    b'{"jsonrpc": "2.0", "id": "\\udc00x", "method": "no/such/method"}',
], ids=["ping", "unknown-method"])
def test_mcp_lone_surrogate_request_id_is_echoed_as_sent_in_an_ascii_error_line(start, line):
    client = start()
    client.send_line(line)
    msg = client.recv()
    assert msg["error"]["code"] == protocol.INVALID_REQUEST and "id" in msg["error"]["message"]
    assert msg["id"] == json.loads(line)["id"]
    assert client.raw_lines[-1].decode("ascii")
    assert client.request("ping")["result"] == {}


def test_mcp_lone_surrogate_method_gets_an_error_and_the_server_keeps_serving(start):
    client = start()
    client.send_line(b'{"jsonrpc": "2.0", "id": 3, "method": "tools/\\ud800"}')
    msg = client.recv()
    assert msg["id"] == 3 and msg["error"]["code"] == protocol.INVALID_REQUEST
    assert "method" in msg["error"]["message"]
    assert client.request("ping")["result"] == {}


@pytest.mark.parametrize("request_id", [[], {}, [1, [2]], {"a": 1}])
def test_mcp_cancel_naming_an_unhashable_request_id_is_ignored(start, request_id):
    client = start()
    client.notify("notifications/cancelled", {"requestId": request_id})
    assert client.request("ping")["result"] == {}


@pytest.mark.parametrize("client_info", ["claude", 7, ["x"]])
def test_mcp_initialize_with_client_info_that_is_not_an_object_still_initializes(
        start, client_info):
    client = start()
    reply = client.request("initialize", {"protocolVersion": "2025-06-18",
                                          "clientInfo": client_info})
    assert reply["result"]["protocolVersion"] == "2025-06-18"


def test_mcp_unforeseen_error_costs_one_internal_error_not_the_server(start, monkeypatch):
    def broken(self, params):
        raise KeyError("a bug")
    monkeypatch.setattr(protocol.Server, "_initialize", broken)
    client = start()
    msg = client.request("initialize", {"protocolVersion": "2025-06-18"})
    assert msg["error"]["code"] == protocol.INTERNAL_ERROR
    assert client.request("ping")["result"] == {}


def test_mcp_line_longer_than_the_message_limit_is_refused_and_the_next_one_answered():
    client = Client(lambda out: protocol.Server([], out, name="clinvk", version="9.9",
                                                max_message_bytes=1000))
    try:
        client.send_line(b'{"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"pad": "'
                         + b"x" * 200000 + b'"}}')
        msg = client.recv()
        assert msg["id"] is None and msg["error"]["code"] == protocol.INVALID_REQUEST
        assert "server.max_request_body_bytes" in msg["error"]["message"]
        assert client.request("ping") == {"jsonrpc": "2.0", "id": 1, "result": {}}
    finally:
        client.close()


@pytest.mark.parametrize("value, where", [
    ({"tasks": [{"prompt": "ok"}, {"prompt": "bad \ud800"}]}, "tasks[1].prompt"),
    ({"extra": {"\udfff": "x"}}, "a key of extra"),
    ("\ud800", "the document"),
])
def test_lone_surrogate_path_names_where_the_string_that_is_not_text_is(value, where):
    assert jsontext.lone_surrogate_path(value) == where
    assert jsontext.lone_surrogate_path({"ok": ["text", "\U0001f600", 1, None]}) is None


# -- clinvk mcp: run slots -------------------------------------------------------------------------


def marking_backends(tmp_path, monkeypatch, *names):
    """Put first on PATH, for each backend named, a wrapper that appends ``start`` and
    ``stop`` to one log around the fake CLI's whole run; returns the log's path."""
    log = tmp_path / "runs.log"
    bindir = tmp_path / "marking-bin"
    bindir.mkdir()
    for name in names:
        script = bindir / name
        script.write_text("\n".join([
            "#!/bin/sh",
            "echo start >> %s" % shlex.quote(str(log)),
            '%s "$@"' % shlex.quote(os.path.join(FAKE_BIN, name)),
            "status=$?",
            "echo stop >> %s" % shlex.quote(str(log)),
            'exit "$status"']) + "\n")
        script.chmod(0o755)
    monkeypatch.setenv("PATH", str(bindir) + os.pathsep + os.environ["PATH"])
    return log


def most_at_once(log) -> int:
    """The largest number of runs between their start and stop marks at any one time."""
    running = peak = 0
    for line in log.read_text().split():
        running += 1 if line == "start" else -1
        peak = max(peak, running)
    return peak


def test_mcp_parallel_with_max_parallel_1000_runs_at_most_max_concurrent_runs_at_once(
        start, monkeypatch, tmp_path):
    log = marking_backends(tmp_path, monkeypatch, "claude")
    monkeypatch.setenv("FAKE_CLI_MODE", "slow")
    monkeypatch.setenv("FAKE_CLI_DELAY", "0.3")
    client = start({"server.max_concurrent_runs": 2})
    client.initialize()
    result = client.call("clinvk_parallel", {"max_parallel": 1000, "tasks": [
        {"backend": "claude", "prompt": "task %d" % i} for i in range(6)]})["result"]
    assert result["structuredContent"]["completed"] == 6
    assert log.read_text().split().count("stop") == 6
    assert most_at_once(log) == 2


def test_mcp_compare_runs_at_most_max_concurrent_runs_backends_at_once(start, monkeypatch,
                                                                      tmp_path):
    log = marking_backends(tmp_path, monkeypatch, "claude", "codex")
    monkeypatch.setenv("FAKE_CLI_MODE", "slow")
    monkeypatch.setenv("FAKE_CLI_DELAY", "0.3")
    client = start({"server.max_concurrent_runs": 1})
    client.initialize()
    result = client.call("clinvk_compare", {"prompt": "same question",
                                            "backends": ["claude", "codex"]})["result"]
    assert [r["status"] for r in result["structuredContent"]["results"]] == ["completed"] * 2
    assert most_at_once(log) == 1


def test_http_compare_runs_at_most_max_concurrent_runs_backends_at_once(start_server,
                                                                       monkeypatch, tmp_path):
    log = marking_backends(tmp_path, monkeypatch, "claude", "codex")
    monkeypatch.setenv("FAKE_CLI_MODE", "slow")
    monkeypatch.setenv("FAKE_CLI_DELAY", "0.3")
    srv = start_server(**{"server.max_concurrent_runs": 1})
    reply = srv.post("/api/v1/compare", {"prompt": "same question",
                                          "backends": ["claude", "codex"]})
    assert reply.status == 200, reply.body
    assert [r["exit_code"] for r in reply.json()["results"]] == [0, 0]
    assert most_at_once(log) == 1


def test_mcp_resume_of_a_busy_session_is_an_error_result_after_the_busy_wait(
        start, monkeypatch, tmp_path):
    client = start({"server.session_busy_wait_secs": 0})
    client.initialize()
    first = client.call("clinvk_prompt", {"backend": "claude", "prompt": "one"})["result"]
    sid = first["structuredContent"]["session_id"]
    monkeypatch.setenv("FAKE_CLI_MODE", "hang")
    monkeypatch.setenv("FAKE_CLI_PIDFILE", str(tmp_path / "pid"))
    client.start_call("clinvk_prompt", {"backend": "claude", "prompt": "two",
                                        "session_id": sid})
    read_pid(tmp_path / "pid")
    result = client.call("clinvk_prompt", {"backend": "claude", "prompt": "three",
                                           "session_id": sid})["result"]
    assert result["isError"] is True and "in use by another clinvk run" in text_of(result)


def test_mcp_prompt_call_finding_every_run_slot_taken_is_an_error_result(start, monkeypatch,
                                                                         tmp_path):
    monkeypatch.setenv("FAKE_CLI_MODE", "hang")
    monkeypatch.setenv("FAKE_CLI_PIDFILE", str(tmp_path / "pid"))
    client = start({"server.max_concurrent_runs": 1, "server.queue_timeout_secs": 0})
    client.initialize()
    client.start_call("clinvk_prompt", {"backend": "claude", "prompt": "holds the slot"})
    read_pid(tmp_path / "pid")
    os.unlink(str(tmp_path / "pid"))
    result = client.call("clinvk_prompt", {"backend": "codex", "prompt": "second"})["result"]
    assert result["isError"] is True
    assert "server.max_concurrent_runs" in text_of(result)
    assert not (tmp_path / "pid").exists()          # the second backend never started


# -- rate limiting: who is one client --------------------------------------------------------------


@pytest.mark.parametrize("address, key", [
    ("2001:db8:1:2:aaaa:bbbb:cccc:dddd", "2001:db8:1:2::/64"),
    ("2001:DB8:1:2::1", "2001:db8:1:2::/64"),
    ("::ffff:198.51.100.7", "198.51.100.7"),
    ("198.51.100.7", "198.51.100.7"),
    ("not-an-address", "not-an-address"),
])
def test_rate_key_is_the_ipv4_address_or_the_ipv6_64(address, key):
    assert rate_key(address) == key


def limit_rate(guards, client: str) -> bool:
    """Whether the guards let one request from ``client`` through the rate limit."""
    ctx = Ctx()
    ctx.client = client
    try:
        guards.limit_rate(ctx)
    except ApiError as exc:
        assert exc.status == 429
        return False
    return True


@pytest.fixture
def one_request_each(tmp_path):
    return make_guards(tmp_path, **{"server.rate_limit_enabled": True,
                                    "server.rate_limit_rps": 0.001,
                                    "server.rate_limit_burst": 1})


def test_every_address_of_one_ipv6_64_draws_from_one_bucket(one_request_each):
    assert limit_rate(one_request_each, "2001:db8:1:2::1")
    assert not limit_rate(one_request_each, "2001:db8:1:2::2")
    assert not limit_rate(one_request_each, "2001:db8:1:2:ffff:ffff:ffff:ffff")
    assert limit_rate(one_request_each, "2001:db8:1:3::1")          # the next /64 is another


def test_ipv4_mapped_ipv6_peer_draws_from_its_ipv4_bucket(one_request_each):
    assert limit_rate(one_request_each, "198.51.100.7")
    assert not limit_rate(one_request_each, "::ffff:198.51.100.7")


def test_rate_limit_max_clients_setting_bounds_the_guards_bucket_table(tmp_path):
    guards = make_guards(tmp_path, **{"server.rate_limit_enabled": True,
                                      "server.rate_limit_rps": 0.001,
                                      "server.rate_limit_max_clients": 3})
    for i in range(50):
        limit_rate(guards, "2001:db8:%x::1" % i)
    assert len(guards.limiter) == 3


def test_valid_api_key_keeps_a_bucket_of_its_own_when_a_flood_fills_the_table(tmp_path):
    guards = make_guards(tmp_path, ["the-key"], **{"server.rate_limit_enabled": True,
                                                   "server.rate_limit_rps": 0.001,
                                                   "server.rate_limit_burst": 1,
                                                   "server.rate_limit_max_clients": 1})
    limit_rate(guards, "198.51.100.1")                 # takes the only place
    limit_rate(guards, "198.51.100.2")                 # drains the shared overflow bucket
    ctx = Ctx(X_Api_Key="the-key")
    ctx.client = "198.51.100.3"
    guards.limit_rate(ctx)                             # no 429: its own, full bucket


def test_rate_limit_max_clients_must_be_at_least_one(tmp_path):
    with pytest.raises(config.ConfigError,
                       match="server.rate_limit_max_clients: expected an integer >= 1"):
        config.load(None, env={"CLINVK_HOME": str(tmp_path)},
                    flags={"server.rate_limit_max_clients": 0})


# -- rate limiting: the bucket table under a flood of new clients ----------------------------------


def small_table(max_clients=2, rps=1.0, burst=1):
    clock = FakeClock()
    return RateLimiter(rps, burst, clock=clock, max_clients=max_clients), clock


def test_bucket_table_never_holds_more_than_max_clients():
    rl, _ = small_table(max_clients=100)
    for i in range(10000):
        rl.check("client-%d" % i)
    assert len(rl) == 100


def test_a_flood_of_new_clients_cannot_reset_a_limited_clients_bucket():
    rl, _ = small_table(max_clients=2, burst=1)
    assert rl.check("victim-or-attacker").allowed
    for i in range(1000):
        rl.check("new-%d" % i)
    assert not rl.check("victim-or-attacker").allowed


def test_clients_beyond_a_full_table_share_one_bucket():
    rl, _ = small_table(max_clients=1, burst=2)
    rl.check("first")
    assert [rl.check(c).allowed for c in ("b", "c", "d")] == [True, True, False]
    assert rl.check("first").allowed                  # its own bucket is untouched


def test_a_new_client_gets_its_own_bucket_once_an_idle_one_has_refilled():
    rl, clock = small_table(max_clients=1, rps=1.0, burst=1)
    rl.check("first")
    rl.check("b")                                      # the overflow bucket is now empty
    assert not rl.check("c").allowed
    clock.advance(1.0)                                 # "first" has refilled: dropped
    assert rl.check("c").allowed
    assert len(rl) == 1                                # "c" has the freed place
