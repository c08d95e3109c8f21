"""``clinvk doctor`` and ``GET /api/v1/backends``: per backend, command found, version and the
tested range, whether it can authenticate (never by a model call unless --probe), and the
one-line reason it would fail; exit 0 only when every enabled backend is usable. The route
serves the same facts behind the usual guards, without secrets or home paths."""

from __future__ import annotations

import json
import os

import pytest

from clinvk_lib.backends import base, diagnose, qwen
from clinvk_lib.cli.main import main
from tests.conftest import records
from tests.serverutil import start_server  # noqa: F401 (fixture)

SECRET = "sk-do-not-show-me-1234"


@pytest.fixture
def logged_in(clinvk_home, fake_path, record, tmp_path, monkeypatch):
    """A HOME whose gemini and qwen settings select an API-key login, the keys set (the fake
    claude and codex say they are logged in unless FAKE_CLI_AUTH=none)."""
    home = tmp_path / "home"
    for cli, selected in ((".gemini", "gemini-api-key"), (".qwen", "openai")):
        (home / cli).mkdir(parents=True)
        (home / cli / "settings.json").write_text(json.dumps(
            {"security": {"auth": {"selectedType": selected}}}))
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("GEMINI_API_KEY", SECRET)
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.setattr(qwen, "private_cache_dir", lambda: str(tmp_path / "private"))
    return home


def doctor(capsys, *args):
    code = main(["doctor", "--json"] + list(args))
    report = json.loads(capsys.readouterr().out)
    return code, report, {b["name"]: b for b in report["backends"]}


def runs(record):
    """The fake CLI invocations that were model runs (not --version or a status command)."""
    return [r for r in records(record) if "--version" not in r["argv"]
            and r["argv"][1:3] not in (["auth", "status"], ["login", "status"])]


# -- clinvk doctor ---------------------------------------------------------------------------

def test_doctor_exits_0_when_every_enabled_backend_is_usable(logged_in, capsys):
    code, report, rows = doctor(capsys)
    assert code == 0 and report["usable"] is True
    assert list(rows) == list(base.NAMES)
    qwen_row = rows["qwen"]
    assert qwen_row["command"].endswith("/qwen") and qwen_row["version"] == "0.24.4"
    assert qwen_row["version_tested"] is True and qwen_row["tested_versions"] == "0.24.4 - 0.24.4"
    assert qwen_row["authenticated"] is True and qwen_row["reason"] == ""


def test_doctor_makes_no_model_call_without_probe(logged_in, capsys, record):
    doctor(capsys)
    assert records(record) and runs(record) == []


@pytest.mark.parametrize("backend, fix", [
    ("claude", "/login"), ("codex", "codex login"), ("gemini", "GEMINI_API_KEY"),
    ("qwen", "security.auth.selectedType"), ("copilot", "COPILOT_GITHUB_TOKEN")])
def test_doctor_says_a_backend_cannot_authenticate_and_how_to_fix_it(
        logged_in, capsys, monkeypatch, backend, fix):
    if backend in ("claude", "codex"):
        monkeypatch.setenv("FAKE_CLI_AUTH", "none")
    elif backend == "copilot":
        monkeypatch.setenv("GITHUB_TOKEN", "ghp_classic_token_copilot_refuses")
    else:
        (logged_in / (".%s" % backend) / "settings.json").write_text("{}")
    code, _, rows = doctor(capsys)
    row = rows[backend]
    assert code == 1 and row["authenticated"] is False and not row["usable"]
    assert row["reason"].startswith("not authenticated: ") and fix in row["reason"]


def test_doctor_finds_copilot_and_opencode_logins_without_running_them(logged_in, capsys,
                                                                       monkeypatch, record):
    monkeypatch.setenv("COPILOT_PROVIDER_BASE_URL", "http://127.0.0.1:9/v1")
    stored = logged_in / ".local" / "share" / "opencode"
    stored.mkdir(parents=True)
    (stored / "auth.json").write_text(json.dumps({"anthropic": {"type": "api", "key": SECRET}}))
    code, _, rows = doctor(capsys)
    assert code == 0 and runs(record) == []
    assert rows["copilot"]["authenticated"] is True and "COPILOT_PROVIDER_BASE_URL" in \
        rows["copilot"]["auth"]
    assert (rows["opencode"]["authenticated"], rows["opencode"]["auth"]) == (
        True, "1 stored login(s): anthropic")
    assert [r["argv"][1:] for r in records(record) if r["backend"] in ("copilot", "opencode")] \
        == [["--version"], ["--version"]]


@pytest.mark.parametrize("backend, package", [("copilot", "@github/copilot"),
                                              ("opencode", "opencode-ai")])
def test_doctor_names_the_npm_package_of_a_missing_copilot_or_opencode(
        logged_in, capsys, monkeypatch, tmp_path, backend, package):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in base.NAMES:
        if name != backend:
            os.symlink(os.path.join(os.environ["PATH"].split(os.pathsep)[0], name),
                       str(bin_dir / name))
    monkeypatch.setenv("PATH", str(bin_dir) + os.pathsep + "/usr/bin:/bin")
    _, _, rows = doctor(capsys)
    assert rows[backend]["reason"] == "not installed: no %r on PATH (npm install -g %s)" % (
        backend, package)


def test_doctor_names_a_missing_cli_and_its_package(logged_in, capsys, monkeypatch, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in base.NAMES:
        if name != "qwen":
            os.symlink(os.path.join(os.environ["PATH"].split(os.pathsep)[0], name),
                       str(bin_dir / name))
    monkeypatch.setenv("PATH", str(bin_dir) + os.pathsep + "/usr/bin:/bin")
    code, _, rows = doctor(capsys)
    assert code == 1 and rows["qwen"]["installed"] is False
    assert rows["qwen"]["reason"] == ("not installed: no 'qwen' on PATH "
                                      "(npm install -g @qwen-code/qwen-code)")


def test_a_disabled_backend_does_not_fail_the_doctor(logged_in, capsys, monkeypatch):
    monkeypatch.setenv("FAKE_CLI_AUTH", "none")
    disabled = {"backends": {n: {"enabled": False} for n in ("claude", "codex")}}
    (logged_in.parent / "clinvk-home" / "config.yaml").write_text(
        "backends:\n" + "".join("  %s:\n    enabled: false\n" % n for n in disabled["backends"]))
    code, report, rows = doctor(capsys)
    assert code == 0 and rows["claude"]["enabled"] is False
    assert rows["claude"]["reason"].startswith("disabled in the configuration")


def test_a_version_outside_the_tested_range_is_a_warning_not_a_failure(logged_in, capsys,
                                                                       monkeypatch):
    monkeypatch.setattr(base.get("qwen"), "tested_versions", ("0.25.0", "0.26.1"))
    code, _, rows = doctor(capsys)
    assert code == 0 and rows["qwen"]["version_tested"] is False
    assert rows["qwen"]["warnings"] == ["version 0.24.4 is outside the tested range "
                                        "0.25.0 - 0.26.1"]


def test_a_cli_whose_version_fails_is_not_usable(logged_in, capsys, monkeypatch, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "qwen").write_text("#!/bin/sh\necho 'SyntaxError: Unexpected token' >&2\nexit 1\n")
    (broken / "qwen").chmod(0o755)
    monkeypatch.setenv("PATH", str(broken) + os.pathsep + os.environ["PATH"])
    code, _, rows = doctor(capsys)
    assert code == 1 and "`qwen --version` failed" in rows["qwen"]["reason"]


def test_gemini_google_account_login_warns_about_ineligible_tier(logged_in, capsys):
    (logged_in / ".gemini" / "settings.json").write_text(json.dumps(
        {"security": {"auth": {"selectedType": "oauth-personal"}}}))
    (logged_in / ".gemini" / "oauth_creds.json").write_text("{}")
    _, _, rows = doctor(capsys)
    assert rows["gemini"]["usable"] and "IneligibleTierError" in rows["gemini"]["warnings"][0]


def test_probe_makes_one_ephemeral_run_per_usable_backend(logged_in, capsys, record):
    code, _, rows = doctor(capsys, "--probe")
    assert code == 0 and rows["qwen"]["probe"]["ok"] is True
    assert rows["qwen"]["probe"]["reply"].startswith("echo: Reply with the single word OK.")
    qwen_runs = [r for r in runs(record) if r["backend"] == "qwen"]
    assert len(qwen_runs) == 1 and "--chat-recording=false" in qwen_runs[0]["argv"]


def test_a_failed_probe_makes_the_backend_unusable(logged_in, capsys, monkeypatch):
    monkeypatch.setenv("FAKE_CLI_MODE", "fail")
    code, _, rows = doctor(capsys, "--probe")
    assert code == 1 and rows["qwen"]["reason"].startswith("the probe run failed: ")


def test_text_report_has_a_line_per_backend_with_its_reason(logged_in, capsys, monkeypatch):
    monkeypatch.setenv("FAKE_CLI_AUTH", "none")
    assert main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert [line.split()[0] for line in out.splitlines() if not line.startswith(" ")] == \
        list(base.NAMES)
    assert "NOT USABLE" in out and "reason:  not authenticated" in out


def test_report_never_shows_a_secret_or_the_home_directory(logged_in, capsys, monkeypatch):
    bad = logged_in / "qwen-system.json"
    bad.write_text("{ not json")
    monkeypatch.setenv("QWEN_CODE_SYSTEM_SETTINGS_PATH", str(bad))
    _, report, rows = doctor(capsys)
    assert "~/qwen-system.json" in rows["qwen"]["warnings"][0]
    assert rows["qwen"]["warnings"][0].startswith("server and MCP runs cannot be set up: ")
    assert SECRET not in json.dumps(report) and str(logged_in) not in json.dumps(report)


def test_version_range_compares_numbers_not_text():
    assert diagnose.version_in_range("2.1.197 (Claude Code)", ("2.1.197", "2.1.332")) is True
    assert diagnose.version_in_range("codex-cli 0.170.0", ("0.169.0", "0.171.0")) is True
    assert diagnose.version_in_range("2.1.4000", ("2.1.197", "2.1.332")) is False
    assert diagnose.version_in_range("garbled", ("1.0.0", "1.0.0")) is None


# -- GET /api/v1/backends ----------------------------------------------------------------------

def test_route_serves_the_doctors_facts(start_server, logged_in):
    body = start_server().get("/api/v1/backends").json()
    row = {b["name"]: b for b in body["backends"]}["qwen"]
    assert (row["available"], row["usable"], row["authenticated"]) == (True, True, True)
    assert row["version"] == "0.24.4" and row["tested_versions"] == "0.24.4 - 0.24.4"


def test_route_needs_an_api_key_when_the_server_has_keys(start_server, logged_in):
    srv = start_server(**{"server.api_keys": ["k1"]})
    assert srv.get("/api/v1/backends").status == 401
    assert srv.get("/api/v1/backends", headers={"X-Api-Key": "k1"}).status == 200


def test_route_makes_no_model_call_and_checks_at_most_once_per_ttl(start_server, logged_in,
                                                                    record):
    srv = start_server()
    first = srv.get("/api/v1/backends").json()
    checks = len(records(record))
    assert srv.get("/api/v1/backends").json() == first
    assert len(records(record)) == checks and runs(record) == []


def test_route_reports_why_server_runs_cannot_be_set_up_without_home_paths(
        start_server, logged_in, monkeypatch):
    bad = logged_in / "qwen-system.json"
    bad.write_text("{ not json")
    monkeypatch.setenv("QWEN_CODE_SYSTEM_SETTINGS_PATH", str(bad))
    body = start_server().get("/api/v1/backends")
    row = {b["name"]: b for b in body.json()["backends"]}["qwen"]
    assert row["usable"] is False and "~/qwen-system.json" in row["reason"]
    assert str(logged_in) not in body.body.decode()
    assert SECRET not in body.body.decode()


def test_route_of_an_opted_in_server_checks_runs_with_project_config(start_server, logged_in,
                                                                      monkeypatch):
    bad = logged_in / "qwen-system.json"
    bad.write_text("{ not json")
    monkeypatch.setenv("QWEN_CODE_SYSTEM_SETTINGS_PATH", str(bad))
    srv = start_server(**{"server.allow_project_config": True})
    row = {b["name"]: b for b in srv.get("/api/v1/backends").json()["backends"]}["qwen"]
    assert row["usable"] is True
