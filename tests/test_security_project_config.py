"""Server and MCP runs do not load the configuration a workdir holds (project settings, hooks,
MCP servers, .env), unless the operator sets server.allow_project_config; the command line
keeps each CLI's own behaviour. Checked on the argv and environment each fake CLI receives;
tests/e2e/test_project_config_real.py proves it with the real CLIs."""

from __future__ import annotations

import json
import os
import stat

import pytest

from clinvk_lib import config, execute, fsutil
from clinvk_lib.backends import gemini_trust, options
from clinvk_lib.mcp.tools import ToolContext, all_tools
from clinvk_lib.mcp.protocol import Server
from clinvk_lib.policy import Policy
from clinvk_lib.sessions import SessionStore
from tests.conftest import records
from tests.serverutil import fresh_backend_probe, server, start_server  # noqa: F401 (fixtures)
from tests.test_mcp import Client

# Why gemini skips a file under tmp_path: its owner when clinvk is not root, else /tmp.
SKIPPED_UNDER_TMP = "is not owned by root" if os.geteuid() != 0 else \
    "is writable by group or others"
ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="gemini reads root-owned files only: "
                                                          "clinvk can write one only as root")


pytestmark = pytest.mark.usefixtures("fresh_backend_probe")


@pytest.fixture
def work(tmp_path):
    path = tmp_path / "work"
    path.mkdir()
    return str(path)


def run_on_server(srv, work, **fields):
    body = dict({"backend": "claude", "prompt": "hello", "workdir": work}, **fields)
    return srv.post("/api/v1/prompt", body)


def run_on_cli(work, backend, store=None, **fields):
    """One run the way the command line makes it: no policy."""
    cfg = config.load(flags={})
    req = execute.Request(backend=backend, prompt="hello", workdir=work, **fields)
    return execute.run(execute.prepare(req, cfg, store), store)


def received(record):
    """(argv, env) of the last fake CLI run."""
    last = records(record)[-1]
    return last["argv"], last["env"]


# -- claude ------------------------------------------------------------------------------------


def test_server_claude_run_reads_only_user_level_settings(server, record, work):
    assert run_on_server(server, work).status == 200
    argv, _ = received(record)
    assert "--setting-sources=user" in argv


def test_cli_claude_run_keeps_claudes_own_setting_sources(clinvk_home, fake_path, record, work):
    assert run_on_cli(work, "claude").ok
    argv, _ = received(record)
    assert not any(a.startswith("--setting-sources") for a in argv)


def test_opted_in_server_claude_run_reads_project_settings(start_server, record, work):
    srv = start_server(**{"server.allow_project_config": True})
    assert run_on_server(srv, work).status == 200
    argv, _ = received(record)
    assert not any(a.startswith("--setting-sources") for a in argv)


def test_server_parallel_tasks_read_only_user_level_settings(server, record, work):
    reply = server.post("/api/v1/parallel", {"tasks": [
        {"backend": "claude", "prompt": "one", "workdir": work},
        {"backend": "claude", "prompt": "two", "workdir": work}]})
    assert reply.status == 200
    assert [("--setting-sources=user" in r["argv"]) for r in records(record)] == [True, True]


def test_mcp_prompt_reads_only_user_level_claude_settings(clinvk_home, fake_path, record, work):
    cfg = config.load(flags={})
    ctx = ToolContext(cfg, SessionStore(cfg.home))
    client = Client(lambda out: Server(all_tools(ctx), out, name="clinvk", version="9.9"))
    try:
        client.initialize()
        result = client.call("clinvk_prompt", {"backend": "claude", "prompt": "hi",
                                               "workdir": work})["result"]
    finally:
        client.close()
    assert not result.get("isError")
    argv, _ = received(record)
    assert "--setting-sources=user" in argv


def test_allow_project_config_is_off_unless_the_operator_sets_it(clinvk_home, monkeypatch):
    assert Policy.from_config(config.load(flags={})).allow_project_config is False
    monkeypatch.setenv("CLINVK_SERVER_ALLOW_PROJECT_CONFIG", "true")
    assert Policy.from_config(config.load(flags={})).allow_project_config is True


# -- gemini ------------------------------------------------------------------------------------


@ROOT_ONLY
def test_server_gemini_run_is_untrusted_with_folder_trust_off_in_a_file_gemini_reads(
        server, record, work):
    assert run_on_server(server, work, backend="gemini").status == 200
    argv, env = received(record)
    assert "--skip-trust" not in argv
    assert env["GEMINI_CLI_TRUST_WORKSPACE"] == "false"
    defaults = env["GEMINI_CLI_SYSTEM_DEFAULTS_PATH"]
    assert gemini_trust.gemini_skips(defaults) == ""
    with open(defaults) as f:
        assert json.load(f) == {"security": {"folderTrust": {"enabled": False}}}


@ROOT_ONLY
def test_server_gemini_session_cleanup_runs_untrusted_too(server, record, work):
    assert run_on_server(server, work, backend="gemini", ephemeral=True).status == 200
    listing = [r for r in records(record) if "--list-sessions" in r["argv"]]
    assert listing and listing[0]["argv"] == ["gemini", "--list-sessions"]
    assert listing[0]["env"]["GEMINI_CLI_TRUST_WORKSPACE"] == "false"


def test_cli_gemini_run_stays_trusted(clinvk_home, fake_path, record, work):
    assert run_on_cli(work, "gemini").ok
    argv, env = received(record)
    assert "--skip-trust" in argv and env["GEMINI_CLI_TRUST_WORKSPACE"] == "true"
    assert "GEMINI_CLI_SYSTEM_DEFAULTS_PATH" not in env


def test_opted_in_server_gemini_run_is_trusted(start_server, record, work):
    srv = start_server(**{"server.allow_project_config": True})
    assert run_on_server(srv, work, backend="gemini").status == 200
    argv, env = received(record)
    assert "--skip-trust" in argv and env["GEMINI_CLI_TRUST_WORKSPACE"] == "true"


def test_server_gemini_run_is_refused_before_it_starts_when_no_readable_defaults_file_can_exist(
        server, record, work, tmp_path, monkeypatch):
    monkeypatch.setattr(gemini_trust, "PROVISIONED_DEFAULTS", str(tmp_path / "none.json"))
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    reply = run_on_server(server, work, backend="gemini")
    assert reply.status == 503 and reply.json()["error"] == "backend_disabled"
    message = reply.json()["message"]
    assert "uid 1000" in message and str(tmp_path / "none.json") in message
    assert "server.allow_project_config: true" in message
    assert records(record) == []


def test_provisioned_defaults_file_gemini_would_skip_is_refused(tmp_path, monkeypatch):
    provisioned = tmp_path / "defaults.json"
    provisioned.write_text('{"security": {"folderTrust": {"enabled": false}}}')
    monkeypatch.setattr(gemini_trust, "PROVISIONED_DEFAULTS", str(provisioned))
    with pytest.raises(options.SetupError, match=SKIPPED_UNDER_TMP):
        gemini_trust.untrusted_defaults_file()


def test_provisioned_defaults_file_that_keeps_folder_trust_on_is_refused(tmp_path, monkeypatch):
    provisioned = tmp_path / "defaults.json"
    provisioned.write_text('{"security": {"folderTrust": {"enabled": true}}}')
    monkeypatch.setattr(gemini_trust, "PROVISIONED_DEFAULTS", str(provisioned))
    monkeypatch.setattr(gemini_trust, "gemini_skips", lambda path: "")
    with pytest.raises(options.SetupError, match="must hold the JSON"):
        gemini_trust.untrusted_defaults_file()


def test_defaults_file_written_where_gemini_would_skip_it_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(gemini_trust, "PROVISIONED_DEFAULTS", str(tmp_path / "none.json"))
    monkeypatch.setattr(gemini_trust, "private_cache_dir", lambda: str(tmp_path / "private"))
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    with pytest.raises(options.SetupError, match=SKIPPED_UNDER_TMP):
        gemini_trust.untrusted_defaults_file()


def test_gemini_reads_a_root_owned_file_in_root_owned_directories():
    assert gemini_trust.gemini_skips("/etc/passwd") == ""


@ROOT_ONLY
def test_gemini_skips_a_file_below_a_world_writable_directory(tmp_path):
    os.chmod(str(tmp_path), 0o777)
    path = tmp_path / "settings.json"
    path.write_text("{}")
    assert gemini_trust.gemini_skips(str(path)) == (
        "%s is writable by group or others (mode 777)" % tmp_path)


def test_gemini_skips_a_file_not_owned_by_root(tmp_path):
    path = tmp_path / "settings.json"
    path.write_text("{}")
    if os.geteuid() == 0:
        os.chown(str(path), 1234, 1234)
    assert gemini_trust.gemini_skips(str(path)).startswith("%s is not owned by root" % path)


def test_defaults_file_is_written_once_0600_in_a_private_directory(tmp_path):
    path = tmp_path / "private" / "defaults.json"
    fsutil.write_if_changed(str(path), "one\n")
    first = os.stat(str(path))
    assert stat.S_IMODE(first.st_mode) == 0o600
    assert stat.S_IMODE(os.stat(str(path.parent)).st_mode) == 0o700
    fsutil.write_if_changed(str(path), "one\n")
    assert os.stat(str(path)).st_ino == first.st_ino          # same content: left alone
    fsutil.write_if_changed(str(path), "two\n")
    assert path.read_text() == "two\n" and os.listdir(str(path.parent)) == ["defaults.json"]


@ROOT_ONLY
def test_untrusted_gemini_auto_mode_warns_that_it_runs_as_default(clinvk_home, fake_path, work):
    req = execute.Request(backend="gemini", prompt="hi", workdir=work, approval_mode="auto")
    prepared = execute.prepare(req, config.load(flags={}), policy=Policy())
    assert any("runs approval_mode 'auto' as 'default'" in w for w in prepared.warnings)
    trusted = execute.prepare(req, config.load(flags={}), policy=Policy(
        allow_project_config=True))
    assert trusted.warnings == []


# -- codex -------------------------------------------------------------------------------------


def test_codex_server_run_never_trusts_the_project(server, record, work):
    assert run_on_server(server, work, backend="codex").status == 200
    server_argv, _ = received(record)
    assert run_on_cli(work, "codex").ok
    cli_argv, _ = received(record)
    assert server_argv == cli_argv and "--trust" not in server_argv


def test_request_cannot_make_codex_trust_the_project(server, record, work):
    reply = run_on_server(server, work, backend="codex", extra=["--trust"])
    assert reply.status == 400 and "'--trust' is not allowed" in reply.json()["message"]
    assert records(record) == []
