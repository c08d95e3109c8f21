"""Shared fixtures: an isolated CLINVK_HOME, and the fake CLIs on PATH."""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Dict, List

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAKE_BIN = os.path.join(ROOT, "tests", "fakes", "bin")
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from tests.tiers import (  # noqa: F401  (hooks: what the whole-suite tier still runs)
    pytest_collection_modifyitems, pytest_collectreport, pytest_runtest_logreport,
    pytest_sessionfinish)


def pytest_configure(config):
    config.addinivalue_line("markers", "sdk: needs the official openai/anthropic SDKs (dev venv)")
    config.addinivalue_line("markers", "slow: load, proxy, fuzz and browser tests (run once, in "
                                       "the whole-suite tier, not in the per-interpreter unit "
                                       "tiers)")


@pytest.fixture
def clinvk_home(tmp_path, monkeypatch):
    """A private CLINVK_HOME with no config file, and no CLINVK_* leaking in from the host."""
    for key in list(os.environ):
        if key.startswith("CLINVK_") and key != "CLINVK_TEST_CACHE":
            monkeypatch.delenv(key)
    home = tmp_path / "clinvk-home"
    home.mkdir()
    monkeypatch.setenv("CLINVK_HOME", str(home))
    return home


def records(path) -> List[Dict[str, Any]]:
    """What each fake CLI run received (argv, stdin, cwd, env), in order, as recorded in
    ``path`` (FAKE_CLI_RECORD); [] before the first run."""
    if not os.path.exists(str(path)):
        return []
    with open(str(path), encoding="utf-8") as f:
        return [json.loads(line) for line in f]


@pytest.fixture
def record(monkeypatch, tmp_path):
    """The FAKE_CLI_RECORD file of this test; read it with ``records``."""
    path = tmp_path / "record.jsonl"
    monkeypatch.setenv("FAKE_CLI_RECORD", str(path))
    return path


@pytest.fixture
def fake_path(monkeypatch, tmp_path):
    """PATH with only the fake claude/codex/gemini (plus the system dirs for python3)."""
    monkeypatch.setenv("PATH", FAKE_BIN + os.pathsep + "/usr/local/bin:/usr/bin:/bin")
    monkeypatch.setenv("FAKE_CLI_STATE_DIR", str(tmp_path / "fake-state"))
    return FAKE_BIN


@pytest.fixture
def redis(tmp_path):
    """A throwaway ``redis-server`` on loopback for one test (tests/redisutil.py)."""
    from tests.redisutil import RedisServer
    with RedisServer(str(tmp_path / "redis")) as server:
        yield server
