"""Fixtures for end-to-end tests that run the real claude, codex and gemini CLIs offline.

Policy when the pinned CLIs are not installed: skip on a developer machine, FAIL when CI=true,
so a CI run can never pass by silently skipping every end-to-end test.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Iterator

import pytest

from tests.e2e import realclis
from tests.fakes.fake_model_api import FakeModelAPI

NOT_INSTALLED = ("real CLIs not installed; run ./test.sh or python3 -m tests.e2e.realclis install"
                 " (pinned: %s)" % ", ".join("%s@%s" % kv for kv in realclis.PACKAGES.items()))
E2E_DIR = Path(__file__).resolve().parent


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "e2e: runs the real agent CLIs against a fake model API on 127.0.0.1")


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
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(NOT_INSTALLED + " -- CI=true, so this is an error, not a skip")
    pytest.skip(NOT_INSTALLED)


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
