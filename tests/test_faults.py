"""A backend that misbehaves: it dies mid-stream, prints invalid JSON, stays silent past the
request timeout, floods stderr, or reports an error while exiting 0. Each answer is the
documented one, in the native JSON form (a 200 with exit_code and error, or 504 on timeout)
and as NDJSON (an error event, then done), and the backend's process is gone afterwards.
"""

from __future__ import annotations

import json
import os
import signal

import pytest

from clinvk_lib import runner
from tests.serverutil import (  # noqa: F401 (fixtures)
    pid_alive, read_pid, start_server, wait_for)

BACKENDS = ("claude", "codex", "gemini")


@pytest.fixture
def srv(start_server):
    return start_server(**{"server.request_timeout_secs": 1})


@pytest.fixture
def fault(monkeypatch, tmp_path):
    """``fault(mode)``: the fake CLIs misbehave that way and write their pid to a file;
    returns the pid file's path."""
    pidfile = str(tmp_path / "fake.pid")

    def set_mode(mode: str) -> str:
        monkeypatch.setenv("FAKE_CLI_MODE", mode)
        monkeypatch.setenv("FAKE_CLI_PIDFILE", pidfile)
        return pidfile
    return set_mode


def run_json(srv, backend: str):
    return srv.post("/api/v1/prompt", {"backend": backend, "prompt": "hi"})


def run_ndjson(srv, backend: str):
    reply = srv.post("/api/v1/prompt", {"backend": backend, "prompt": "hi",
                                        "output_format": "stream-json"})
    assert reply.status == 200 and reply.headers["Content-Type"] == "application/x-ndjson"
    return [json.loads(line) for line in reply.body.splitlines() if line.strip()]


def closing(events):
    """The (error event, done event) a failed stream ends with."""
    types = [e["type"] for e in events]
    assert types[0] == "init" and types[-1] == "done" and types.count("done") == 1, types
    errors = [e for e in events if e["type"] == "error"]
    assert errors, "no error event in %s" % types
    assert types.index("error") < types.index("done")
    return errors[-1], events[-1]


def assert_nothing_left(pidfile: str) -> None:
    pid = read_pid(pidfile)
    assert wait_for(lambda: not pid_alive(pid), 5), "backend %d outlived its run" % pid
    assert wait_for(lambda: runner.live_count() == 0, 5)


# -- dies mid-stream (SIGKILL) -------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_backend_killed_mid_output_is_200_with_the_signal_as_error(srv, fault, backend):
    pidfile = fault("crash_midstream")
    body = run_json(srv, backend).json()
    assert body["exit_code"] == -signal.SIGKILL
    assert "killed by signal 9" in body["error"]
    assert_nothing_left(pidfile)


@pytest.mark.parametrize("backend", BACKENDS)
def test_backend_killed_mid_stream_ends_the_stream_with_error_then_done(srv, fault, backend):
    pidfile = fault("crash_midstream")
    error, done = closing(run_ndjson(srv, backend))
    assert "killed by signal 9" in error["content"]["message"]
    assert done["content"]["exit_code"] == -signal.SIGKILL
    assert_nothing_left(pidfile)


def test_backend_killed_from_outside_while_streaming_ends_the_stream(srv, fault):
    pidfile = fault("hang")
    conn = srv.connection()
    conn.request("POST", "/api/v1/prompt", json.dumps(
        {"backend": "gemini", "prompt": "hi", "output_format": "stream-json"}),
        {"Content-Type": "application/json"})
    resp = conn.getresponse()
    events = [json.loads(resp.readline())]
    os.kill(read_pid(pidfile), signal.SIGKILL)
    events += [json.loads(line) for line in resp.read().splitlines() if line.strip()]
    conn.close()
    error, done = closing(events)
    assert error["content"]["code"] == "exit_-9" and done["content"]["exit_code"] == -9
    assert_nothing_left(pidfile)


# -- invalid JSON on stdout, exit 0 ---------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_backend_printing_invalid_json_is_a_failure_naming_it(srv, fault, backend):
    pidfile = fault("invalid_json")
    body = run_json(srv, backend).json()
    assert body["exit_code"] != 0 and body["output"] == ""
    assert "no JSON result" in body["error"] or "no result" in body["error"]
    assert_nothing_left(pidfile)


@pytest.mark.parametrize("backend", BACKENDS)
def test_backend_printing_invalid_json_ends_the_stream_with_error_then_done(srv, fault, backend):
    pidfile = fault("invalid_json")
    error, _ = closing(run_ndjson(srv, backend))
    assert error["content"]["message"]
    assert_nothing_left(pidfile)


# -- silent past the request timeout --------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_silent_backend_is_504_timeout_after_the_request_timeout(srv, fault, backend):
    pidfile = fault("hang")
    reply = run_json(srv, backend)
    assert reply.status == 504
    assert reply.json()["error"] == "timeout" and "request_timeout_secs" in reply.json()["message"]
    assert_nothing_left(pidfile)


@pytest.mark.parametrize("backend", BACKENDS)
def test_silent_backend_stream_ends_with_a_timeout_error_then_done(srv, fault, backend):
    pidfile = fault("hang")
    error, _ = closing(run_ndjson(srv, backend))
    assert error["content"]["code"] == "timeout"
    assert_nothing_left(pidfile)


# -- megabytes on stderr --------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_stderr_flood_neither_blocks_the_run_nor_reaches_the_client(srv, fault, backend):
    pidfile = fault("stderr_flood")
    reply = run_json(srv, backend)
    assert reply.json()["exit_code"] == 0 and reply.json()["output"] == "echo: hi"
    assert b"stderr flood" not in reply.body
    assert_nothing_left(pidfile)


@pytest.mark.parametrize("backend", BACKENDS)
def test_stderr_flood_does_not_disturb_the_stream(srv, fault, backend):
    pidfile = fault("stderr_flood")
    events = run_ndjson(srv, backend)
    assert [e["type"] for e in events if e["type"] == "error"] == []
    assert events[-1]["type"] == "done" and events[-1]["content"]["exit_code"] == 0
    assert_nothing_left(pidfile)


# -- an error reported with exit code 0 -----------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_error_reported_with_exit_zero_is_exit_code_1_with_the_error(srv, fault, backend):
    pidfile = fault("error_exit0")
    body = run_json(srv, backend).json()
    assert body["exit_code"] == 1 and "fake failure" in body["error"]
    assert_nothing_left(pidfile)


@pytest.mark.parametrize("backend", BACKENDS)
def test_error_reported_with_exit_zero_streams_error_then_done(srv, fault, backend):
    pidfile = fault("error_exit0")
    error, _ = closing(run_ndjson(srv, backend))
    assert "fake failure" in error["content"]["message"]
    assert_nothing_left(pidfile)
