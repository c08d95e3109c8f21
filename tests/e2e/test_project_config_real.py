"""A workdir's own configuration never runs a command through `clinvk serve` (the built zipapp,
default settings), proved with the REAL claude, codex and gemini against the fake model API.

The workdir holds, for each CLI, configuration whose commands write a marker file: claude's
.claude/settings.json hooks and .mcp.json server, gemini's .gemini/settings.json hooks, MCP
server and tools.discoveryCommand plus a .gemini/.env NODE_OPTIONS, codex's .codex/config.toml
MCP server. After a server run no marker exists, while user-level configuration (in the CLIs'
HOME) still takes effect. The control: with server.allow_project_config the claude and gemini
markers appear; codex keeps an untrusted project's configuration off even then. Likewise a
workdir repository whose .git/config names programs for the CLIs' start-up `git status`
(core.fsmonitor, a filter driver) runs none of them through the server.
"""

from __future__ import annotations

import http.client
import json
import os
import shlex
import subprocess
from pathlib import Path
from typing import Any, Dict, List

import pytest

from tests.e2e.conftest import BACKENDS

# What each CLI's planted configuration can write (a file name under the markers directory).
PLANTED = {
    "claude": ["claude-hook-session-start", "claude-hook-prompt-submit", "claude-mcp"],
    "codex": ["codex-mcp"],
    "gemini": ["gemini-hook-session-start", "gemini-hook-before-agent", "gemini-mcp",
               "gemini-discovery", "gemini-env"],
}
USER_MODEL = "gemini-user-level-model"


def write_marker(markers: Path, name: str) -> List[str]:
    """argv of a command that creates markers/name (and prints [] for a discovery command)."""
    code = "open(%r, 'w').close(); print('[]')" % str(markers / name)
    return ["python3", "-c", code]


def command_line(argv: List[str]) -> str:
    return " ".join(json.dumps(a) for a in argv)


@pytest.fixture
def markers(tmp_path: Path) -> Path:
    path = tmp_path / "markers"
    path.mkdir()
    return path


@pytest.fixture
def opt_in() -> bool:
    return False


@pytest.fixture
def clinvk_env(clinvk_env: Dict[str, str], opt_in: bool) -> Dict[str, str]:
    """The server's environment, with server.allow_project_config when the test opts in."""
    return dict(clinvk_env, CLINVK_SERVER_ALLOW_PROJECT_CONFIG="true" if opt_in else "false")


@pytest.fixture
def planted(workdir: str, markers: Path) -> str:
    """``workdir`` holding every CLI's project configuration, each command writing a marker."""
    work = Path(workdir)
    hook = lambda name: [{"hooks": [{"type": "command",  # noqa: E731
                                     "command": command_line(write_marker(markers, name))}]}]

    def server(name: str) -> Dict[str, Any]:
        argv = write_marker(markers, name)
        return {"command": argv[0], "args": argv[1:]}

    (work / ".claude").mkdir()
    (work / ".claude" / "settings.json").write_text(json.dumps({
        "hooks": {"SessionStart": hook("claude-hook-session-start"),
                  "UserPromptSubmit": hook("claude-hook-prompt-submit")},
        "enableAllProjectMcpServers": True}))
    (work / ".mcp.json").write_text(json.dumps(
        {"mcpServers": {"planted": dict(server("claude-mcp"), type="stdio")}}))
    (work / ".gemini").mkdir()
    (work / ".gemini" / "settings.json").write_text(json.dumps({
        "hooks": {"SessionStart": hook("gemini-hook-session-start"),
                  "BeforeAgent": hook("gemini-hook-before-agent")},
        "mcpServers": {"planted": server("gemini-mcp")},
        "tools": {"discoveryCommand": command_line(write_marker(markers, "gemini-discovery"))}}))
    (work / "planted.js").write_text(
        "require('fs').writeFileSync(%s, '')\n" % json.dumps(str(markers / "gemini-env")))
    (work / ".gemini" / ".env").write_text("NODE_OPTIONS=--require=%s\n" % (work / "planted.js"))
    (work / ".codex").mkdir()
    argv = write_marker(markers, "codex-mcp")
    (work / ".codex" / "config.toml").write_text(
        "[mcp_servers.planted]\ncommand = %s\nargs = %s\n"
        % (json.dumps(argv[0]), json.dumps(argv[1:])))
    return workdir


@pytest.fixture
def user_level(real_home: str, markers: Path, real_env: Dict[str, str]) -> None:
    """User-level configuration in the CLIs' HOME (after real_env wrote its own): a claude
    SessionStart hook, a codex notify program and a gemini model name."""
    claude_dir = Path(real_home) / ".claude"
    claude_dir.mkdir(exist_ok=True)
    (claude_dir / "settings.json").write_text(json.dumps({"hooks": {"SessionStart": [
        {"hooks": [{"type": "command",
                    "command": command_line(write_marker(markers, "claude-user-hook"))}]}]}}))
    codex_config = Path(real_home) / ".codex" / "config.toml"
    notify = "notify = %s\n" % json.dumps(write_marker(markers, "codex-user-notify"))
    codex_config.write_text(notify + codex_config.read_text())     # top level, before tables
    gemini_settings = Path(real_home) / ".gemini" / "settings.json"
    settings = json.loads(gemini_settings.read_text())
    settings["model"] = {"name": USER_MODEL}
    gemini_settings.write_text(json.dumps(settings))


def run(port: int, backend: str, workdir: str) -> Dict[str, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=240)
    conn.request("POST", "/api/v1/prompt", json.dumps(
        {"backend": backend, "prompt": "hello project", "workdir": workdir}),
        {"Content-Type": "application/json"})
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    assert resp.status == 200, body
    answer = json.loads(body)
    assert answer["exit_code"] == 0 and answer["output"] == "FAKE-REPLY: hello project", answer
    return answer


def found(markers: Path) -> List[str]:
    return sorted(os.listdir(str(markers)))


@pytest.mark.parametrize("backend", BACKENDS)
def test_server_run_executes_nothing_the_workdir_configures(backend, planted, user_level,
                                                            serve_port, fake_api, markers):
    run(serve_port, backend, planted)
    assert not set(found(markers)) & set(sum(PLANTED.values(), []))
    if backend == "claude":
        assert found(markers) == ["claude-user-hook"]
    elif backend == "codex":
        assert found(markers) == ["codex-user-notify"]
    else:
        assert any(USER_MODEL in r["path"] for r in fake_api.main_requests("gemini"))


@pytest.mark.parametrize("opt_in", [True])
@pytest.mark.parametrize("backend", ["claude", "gemini"])
def test_opted_in_server_run_executes_the_workdirs_configuration(backend, opt_in, planted,
                                                                 serve_port, markers):
    run(serve_port, backend, planted)
    expected = {"claude": ["claude-hook-prompt-submit", "claude-hook-session-start",
                           "claude-mcp"],
                "gemini": ["gemini-discovery", "gemini-hook-before-agent",
                           "gemini-hook-session-start", "gemini-mcp"]}[backend]
    assert set(expected) <= set(found(markers))


@pytest.mark.parametrize("opt_in", [True])
def test_opted_in_server_codex_still_ignores_an_untrusted_project(opt_in, planted, serve_port,
                                                                  markers):
    run(serve_port, "codex", planted)
    assert found(markers) == []


# What the planted repository configuration writes, per CLI: claude 2.1.197's start-up
# `git status --short` runs both programs; codex 0.169.0 turns core.fsmonitor off itself but
# its `git status --porcelain` runs the filter.
GIT_PLANTED = {"claude": ["git-filter", "git-fsmonitor"], "codex": ["git-filter"]}


@pytest.fixture
def planted_repository(workdir: str, markers: Path) -> str:
    """``workdir`` as a git repository whose own .git/config sets core.fsmonitor and a clean
    filter that .gitattributes applies to its committed file, each writing a marker, with the
    file's stat data changed so that status must run the filter."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}

    def git(*args: str) -> None:
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
                       + list(args), cwd=workdir, env=env, check=True, capture_output=True)

    work = Path(workdir)
    git("init", "-q")
    (work / ".gitattributes").write_text("*.txt filter=planted\n")
    (work / "a.txt").write_text("a\n")
    git("add", ".")
    git("commit", "-q", "-m", "one")
    touch = lambda name: "touch %s" % shlex.quote(str(markers / name))  # noqa: E731
    git("config", "core.fsmonitor", touch("git-fsmonitor") + "; false")
    git("config", "filter.planted.clean", touch("git-filter") + "; cat")
    os.utime(str(work / "a.txt"), (1000000000, 1000000000))
    return workdir


@pytest.mark.parametrize("backend", sorted(GIT_PLANTED))
def test_server_run_starts_no_program_the_workdirs_git_configuration_names(
        backend, planted_repository, serve_port, markers):
    run(serve_port, backend, planted_repository)
    assert found(markers) == []


@pytest.mark.parametrize("opt_in", [True])
@pytest.mark.parametrize("backend", sorted(GIT_PLANTED))
def test_opted_in_server_run_starts_what_the_workdirs_git_configuration_names(
        backend, opt_in, planted_repository, serve_port, markers):
    run(serve_port, backend, planted_repository)
    assert found(markers) == GIT_PLANTED[backend]
