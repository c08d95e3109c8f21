"""Fixtures for end-to-end tests that run the real claude, codex and gemini CLIs offline.

Policy when the pinned CLIs are not installed: skip on a developer machine, FAIL when CI=true,
so a CI run can never pass by silently skipping every end-to-end test. CLINVK_E2E_VERSIONS=latest
runs the same tests on the newest published CLIs (python3 -m tests.e2e.realclis install-latest).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Dict, Iterator, List

import pytest

from tests.e2e import realclis
from tests.fakes.fake_model_api import FakeModelAPI

NOT_INSTALLED = ("real CLIs not installed; run ./test.sh or python3 -m tests.e2e.realclis install"
                 " (pinned: %s)" % ", ".join("%s@%s" % kv for kv in realclis.PACKAGES.items()))
LATEST_NOT_INSTALLED = ("the latest real CLIs are not installed (CLINVK_E2E_VERSIONS=latest); run "
                        "python3 -m tests.e2e.realclis install-latest")
E2E_DIR = Path(__file__).resolve().parent
PYZ = str(realclis.REPO_ROOT / "dist" / "clinvk.pyz")
BACKENDS = ["claude", "codex", "gemini"]
# The API style each backend's CLI speaks to the fake model API (FakeModelAPI.main_requests).
KIND = {"claude": "anthropic", "codex": "openai", "gemini": "gemini", "qwen": "chat",
        "copilot": "chat", "opencode": "chat"}


def user_texts(fake_api: FakeModelAPI, backend: str) -> List[str]:
    """The user turns the model API received from ``backend``'s CLI, in order; a turn sent by
    several requests in a row counts once, since how many requests a CLI makes for one turn
    (its own retries, a request it re-sends reshaped) changes from release to release."""
    texts: List[str] = []
    for request in fake_api.main_requests(KIND[backend]):
        if not texts or texts[-1] != request["user_text"]:
            texts.append(request["user_text"])
    return texts


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "e2e: runs the real agent CLIs against a fake model API on 127.0.0.1")


def pytest_report_header(config: pytest.Config) -> str:
    """Which CLI versions the end-to-end tier runs, at the top of pytest's report."""
    found = realclis.installed_versions()
    return "real CLIs (%s): %s" % (realclis.version_set(), ", ".join(
        "%s %s" % kv for kv in found.items()) or "none installed")


def not_installed(message: str) -> None:
    """Skip, or fail under CI=true, a test whose real CLI is missing."""
    if realclis.version_set() == "latest":
        message = LATEST_NOT_INSTALLED
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message + " -- CI=true, so this is an error, not a skip")
    pytest.skip(message)


def pytest_collection_modifyitems(config: pytest.Config, items: list) -> None:
    for item in items:
        if E2E_DIR in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def real_clis() -> str:
    """The bin folder of the installed CLIs; skips (or fails under CI=true) when they are missing."""
    found = realclis.bin_dir()
    if found:
        return found
    not_installed(NOT_INSTALLED)


@pytest.fixture
def fake_api() -> Iterator[FakeModelAPI]:
    """A fresh fake model API on 127.0.0.1 for one test."""
    with FakeModelAPI() as api:
        yield api


@pytest.fixture
def real_home(tmp_path: Path) -> str:
    """A throwaway HOME (and CODEX_HOME under it) so no user settings leak in or out."""
    home = tmp_path / "home"
    home.mkdir()
    return str(home)


@pytest.fixture
def workdir(tmp_path: Path) -> str:
    """An empty working directory for the CLI under test."""
    work = tmp_path / "work"
    work.mkdir()
    return str(work)


@pytest.fixture
def real_env(real_clis: str, fake_api: FakeModelAPI, real_home: str) -> Dict[str, str]:
    """The no-egress environment for the real CLIs, bound to this test's fake_api and real_home."""
    return realclis.no_egress_env(fake_api.url, real_home)


@pytest.fixture(scope="module")
def built_pyz() -> str:
    """dist/clinvk.pyz, built from this checkout (once per test module)."""
    subprocess.run([str(realclis.REPO_ROOT / "build_pyz.sh")], check=True,
                   stdout=subprocess.DEVNULL)
    return PYZ


@pytest.fixture
def clinvk_env(real_env: Dict[str, str], tmp_path: Path) -> Dict[str, str]:
    """real_env with a private CLINVK_HOME."""
    return dict(real_env, CLINVK_HOME=str(tmp_path / "clinvk-home"))


def serving(built_pyz: str, env: Dict[str, str], log_path: str, workdir: str) -> Iterator[int]:
    """Run ``clinvk serve --port 0`` (the built zipapp) with ``env`` in ``workdir``, logging to
    ``log_path``: yields its port, and the server must exit 0 when terminated."""
    log = open(log_path, "w+")
    proc = subprocess.Popen([sys.executable, built_pyz, "serve", "--port", "0"], env=env,
                            cwd=workdir, stdout=log, stderr=subprocess.STDOUT)
    port = 0
    deadline = time.monotonic() + 30
    while not port and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)
        log.seek(0)
        m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", log.read())
        port = int(m.group(1)) if m else 0
    assert port, "server did not start"
    try:
        yield port
    finally:
        proc.terminate()
        assert proc.wait(timeout=60) == 0
        log.close()


@pytest.fixture
def serve_port(built_pyz: str, clinvk_env: Dict[str, str], tmp_path: Path,
               workdir: str) -> Iterator[int]:
    """The port of a running ``clinvk serve`` (``serving``) with clinvk_env, in the empty
    ``workdir`` (compat runs use the server's working directory)."""
    yield from serving(built_pyz, clinvk_env, str(tmp_path / "serve.log"), workdir)


def require_more_cli(binary: str) -> str:
    """The bin folder holding ``binary``, one of realclis.MORE_BINARIES at its pinned version;
    skips (or fails under CI=true) when it is not installed."""
    found = realclis.more_bin_dir(binary)
    if found:
        return found
    not_installed("%s not installed; run python3 -m tests.e2e.realclis install-more (pinned: %s)"
                  % (binary, ", ".join("%s@%s" % kv for kv in realclis.MORE_PACKAGES.items())))


def mcp_prompt(env: Dict[str, str], arguments: Dict[str, object], cwd: str,
               timeout: float = 240) -> Dict[str, object]:
    """The result of one ``clinvk_prompt`` tool call to ``clinvk mcp`` (the built zipapp) over
    stdio: initialize, initialized, tools/call; input stays open until the result arrives (end
    of input cancels running calls)."""
    messages = [
        {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "e2e", "version": "1"}}},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
         "params": {"name": "clinvk_prompt", "arguments": arguments}}]
    proc = subprocess.Popen([sys.executable, PYZ, "mcp"], cwd=cwd, env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    try:
        proc.stdin.write("".join(json.dumps(m) + "\n" for m in messages).encode())
        proc.stdin.flush()
        for line in proc.stdout:
            reply = json.loads(line)
            if reply.get("id") == 2:
                return reply["result"]
        raise AssertionError("clinvk mcp ended without answering the tool call")
    finally:
        timer.cancel()
        proc.stdin.close()
        proc.wait(timeout=60)
        proc.stdout.close()
