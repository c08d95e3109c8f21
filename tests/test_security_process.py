"""The backend processes a request starts: a prompt that cannot be sent starts nothing, no
server secret reaches a backend's environment, no backend outlives a killed server, and a
descendant that leaves the process group cannot hold a request or its run slot."""

from __future__ import annotations

import signal
import threading
import time

import pytest

from clinvk_lib import config, execute, runner
from clinvk_lib.backends import base, probe
from tests.conftest import records
from tests.serveproc import ServeProcess
from tests.serverutil import (  # noqa: F401 (fixtures)
    pid_alive, read_pid, server, start_server, wait_for)
from tests.test_runner import kill_pids_in

SURROGATE_BODY = b'{"backend": "claude", "prompt": "hello \\ud800"}'
SECRETS = {"CLINVK_API_KEYS": "sk-env-1", "CLINVK_SERVER_API_KEYS": "sk-env-2",
           "CLINVK_ADMIN_API_KEYS": "sk-admin-1", "CLINVK_SERVER_ADMIN_API_KEYS": "sk-admin-2",
           "CLINVK_API_KEYS_GOPASS_PATH": "team/clinvk",
           "CLINVK_SERVER_API_KEYS_GOPASS_PATH": "team/clinvk"}


# -- a prompt with no UTF-8 form -----------------------------------------------------------------


def test_prompt_with_a_lone_surrogate_is_invalid_and_starts_nothing(clinvk_home, fake_path,
                                                                   record):
    cfg = config.load()
    with pytest.raises(execute.ExecError) as info:
        execute.prepare(execute.Request(backend="claude", prompt="hello \ud800"), cfg)
    assert (info.value.kind, info.value.field) == ("invalid", "prompt")
    assert str(info.value).startswith("prompt: cannot be encoded as UTF-8")
    # A Prepared whose prompt changed after prepare() is refused by the start itself.
    prepared = execute.prepare(execute.Request(backend="claude", prompt="hello"), cfg)
    prepared.request.prompt = "hello \ud800"
    with pytest.raises(execute.ExecError) as info:
        execute.run(prepared)
    assert (info.value.kind, info.value.field) == ("invalid", "prompt")
    assert runner.live_count() == 0
    assert records(record) == []


@pytest.mark.parametrize("path, body", [
    ("/api/v1/prompt", SURROGATE_BODY),
    ("/openai/v1/chat/completions",
     b'{"model": "claude", "messages": [{"role": "user", "content": "hi \\ud800"}]}'),
], ids=["native", "openai"])
def test_http_prompt_with_a_lone_surrogate_is_400_and_starts_no_backend(server, record, path,
                                                                       body):
    reply = server.post(path, body, headers={"Content-Type": "application/json"})
    assert reply.status == 400, reply
    assert "surrogate" in reply.body.decode()
    assert runner.live_count() == 0
    assert records(record) == []
    assert server.get("/api/v1/sessions").json()["sessions"] == []


# -- server secrets never reach a child ---------------------------------------------------------


def test_secret_list_names_every_secret_setting_and_every_key_source():
    for s in config.SETTINGS:
        if s.secret or "api_keys" in s.key:
            names = [s.env_var] + [a for a, key in config.ENV_ALIASES.items() if key == s.key]
            missing = [n for n in names if n not in base.SERVER_SECRET_VARIABLES]
            assert not missing, "%s: add %s to SERVER_SECRET_VARIABLES" % (s.key, missing)


def test_no_server_secret_reaches_a_backend_run_or_its_cleanup_runs(clinvk_home, fake_path,
                                                                   record, monkeypatch):
    for name in base.SERVER_SECRET_VARIABLES:
        monkeypatch.setenv(name, SECRETS.get(name, "/srv/secret/" + name))
    cfg = config.load(None, env={"CLINVK_HOME": str(clinvk_home)})
    for backend in ("claude", "codex", "gemini"):
        # gemini keeps an ephemeral session anyway: it is deleted by two more gemini runs.
        prepared = execute.prepare(execute.Request(backend=backend, prompt="hi",
                                                   ephemeral=True), cfg)
        assert execute.run(prepared).result.ok
    seen = records(record)
    assert any("--list-sessions" in r["argv"] for r in seen)
    assert len(seen) >= 4
    for r in seen:
        assert r["env"]["CLINVK_HOME"] == str(clinvk_home)     # CLINVK_* is recorded
        leaked = sorted(set(r["env"]) & set(base.SERVER_SECRET_VARIABLES))
        assert not leaked, "%s got %s" % (r["argv"], leaked)


def test_api_keys_of_a_running_server_are_not_in_its_backends_environment(
        start_server, record, monkeypatch, tmp_path):
    key_file = tmp_path / "keys"
    key_file.write_text("sk-file-1\n")
    monkeypatch.setenv("CLINVK_API_KEYS", "sk-env-1")
    monkeypatch.setenv("CLINVK_SERVER_API_KEYS_FILE", str(key_file))
    srv = start_server()
    reply = srv.post("/api/v1/prompt", {"backend": "claude", "prompt": "hi"},
                     headers={"X-Api-Key": "sk-env-1"})
    assert reply.status == 200, reply
    (run,) = records(record)
    assert "CLINVK_HOME" in run["env"]
    assert not set(run["env"]) & set(base.SERVER_SECRET_VARIABLES)
    assert "sk-env-1" not in repr(run["env"]) and "sk-file-1" not in repr(run["env"])


def test_version_probe_runs_without_server_secrets(clinvk_home, fake_path, record,
                                                   monkeypatch):
    monkeypatch.setenv("CLINVK_API_KEYS", "sk-env-1")
    claude = base.get("claude")
    assert probe.cli_version(claude, claude.find_executable()).startswith("2.")
    (run,) = records(record)
    assert "--version" in run["argv"] and "CLINVK_API_KEYS" not in run["env"]


# -- nothing outlives the server ----------------------------------------------------------------


def test_sigkill_of_the_server_kills_every_backend_and_its_process_group(tmp_path):
    backend_pid, child_pids = str(tmp_path / "backend.pid"), tmp_path / "children"
    srv = ServeProcess(str(tmp_path / "home"), env={
        "FAKE_CLI_MODE": "hang", "FAKE_CLI_PIDFILE": backend_pid,
        "FAKE_CLI_CHILD": str(child_pids)})
    try:
        threading.Thread(target=lambda: _post_ignoring_errors(srv), daemon=True).start()
        pids = [read_pid(backend_pid)]
        assert wait_for(lambda: child_pids.exists() and child_pids.read_text().strip())
        pids += [int(p) for p in child_pids.read_text().split()]
        assert all(pid_alive(p) for p in pids)
        srv.signal(signal.SIGKILL)
        srv.proc.wait(10)
        for pid in pids:
            assert wait_for(lambda: not pid_alive(pid), 5), "%d outlived the server" % pid
    finally:
        srv.stop()
        kill_pids_in(backend_pid)
        kill_pids_in(child_pids)


def _post_ignoring_errors(srv) -> None:
    try:
        srv.post("/api/v1/prompt", {"backend": "claude", "prompt": "hi"}, timeout=60)
    except OSError:
        pass                    # the server is killed under this request


# -- a descendant that left the group -----------------------------------------------------------


def test_descendant_that_calls_setsid_and_holds_stdout_does_not_hold_the_request_or_its_slot(
        start_server, monkeypatch, tmp_path):
    strays = tmp_path / "strays"
    monkeypatch.setenv("FAKE_CLI_CHILD", str(strays))
    monkeypatch.setenv("FAKE_CLI_CHILD_SETSID", "1")
    monkeypatch.setenv("FAKE_CLI_CHILD_SECS", "60")
    srv = start_server(**{"server.max_concurrent_runs": 1, "server.queue_timeout_secs": 0})
    try:
        for attempt in range(2):        # the second one needs the only run slot back
            started = time.monotonic()
            reply = srv.post("/api/v1/prompt", {"backend": "claude", "prompt": "hi"},
                             timeout=90)
            assert reply.status == 200 and reply.json()["output"] == "echo: hi", reply
            assert time.monotonic() - started < 5
        pids = [int(p) for p in strays.read_text().split()]
        assert len(pids) == 2 and all(pid_alive(p) for p in pids)   # they held stdout
    finally:
        kill_pids_in(strays)


def test_an_interrupt_while_reading_a_json_run_stops_and_reaps_the_backend(
        clinvk_home, fake_path, monkeypatch, tmp_path):
    """A KeyboardInterrupt (Ctrl-C) that lands while execute.run reads the backend's output
    must not leave the process group running."""
    monkeypatch.setenv("FAKE_CLI_MODE", "hang")
    monkeypatch.setenv("FAKE_CLI_PIDFILE", str(tmp_path / "pid"))

    def interrupted(self):
        read_pid(tmp_path / "pid")
        raise KeyboardInterrupt

    monkeypatch.setattr(runner.Process, "lines", interrupted)
    prepared = execute.prepare(execute.Request(backend="claude", prompt="hi", ephemeral=True),
                               config.load())
    with pytest.raises(KeyboardInterrupt):
        execute.run(prepared)
    assert wait_for(lambda: not pid_alive(int((tmp_path / "pid").read_text())))
    assert runner.live_count() == 0
