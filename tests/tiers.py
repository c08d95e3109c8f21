"""Which tests the whole-suite tier of ./test.sh still has to run after the unit tiers.

The unit tiers run every test that is neither ``sdk`` nor ``slow`` nor end-to-end, under the
oldest and the newest Python (3.8 and 3.13), each writing the tests it skipped to the file named
by TEST_TIER_SKIPS_OUT. The whole-suite tier then runs under ``python3`` with
TEST_TIER_REST naming those files (os.pathsep between them): it leaves out the unit tests
both unit tiers ran, and keeps the ones either skipped (a module that needs a dev-only package,
a feature of a newer Python, a tool missing from the host), the ``sdk`` and ``slow`` tests and
the end-to-end tier. Every test runs at least once; none runs three times. A skips file that is
missing (a unit tier did not run) means nothing is left out.
"""

from __future__ import annotations

import os
from typing import List, Optional, Set

# Read once, when conftest imports this module: fixtures such as ``clinvk_home`` clear the
# environment of the tests, not of the run.
SKIPS_OUT = os.environ.get("TEST_TIER_SKIPS_OUT", "")
REST = os.environ.get("TEST_TIER_REST", "")

E2E_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "e2e") + os.sep

_skipped: Set[str] = set()


def is_unit_test(item) -> bool:
    """True for a test the unit tiers select (``-m "not sdk and not slow"``, tests/e2e ignored)."""
    if str(item.fspath).startswith(E2E_DIR):
        return False
    return item.get_closest_marker("sdk") is None and item.get_closest_marker("slow") is None


def skipped_in_unit_tiers(value: str) -> Optional[Set[str]]:
    """The node ids the unit tiers skipped, from TEST_TIER_REST's files; None when one of
    the files is missing (that tier did not run, so nothing may be left out)."""
    skipped: Set[str] = set()
    for path in filter(None, value.split(os.pathsep)):
        if not os.path.isfile(path):
            return None
        with open(path, encoding="utf-8") as f:
            skipped.update(line.rstrip("\n") for line in f if line.strip())
    return skipped


def pytest_runtest_logreport(report) -> None:
    if report.skipped and SKIPS_OUT:
        _skipped.add(report.nodeid)


def pytest_collectreport(report) -> None:
    """A module or class skipped whole while collected (``importorskip`` at the top)."""
    if report.skipped and SKIPS_OUT:
        _skipped.add(report.nodeid)


def was_skipped(nodeid: str, skipped: Set[str]) -> bool:
    """The test, or the module or class holding it, is in ``skipped``."""
    parts = nodeid.split("::")
    return any("::".join(parts[:n]) in skipped for n in range(1, len(parts) + 1))


def pytest_sessionfinish(session, exitstatus) -> None:
    if SKIPS_OUT:
        with open(SKIPS_OUT, "w", encoding="utf-8") as f:
            f.writelines(node + "\n" for node in sorted(_skipped))


def pytest_collection_modifyitems(config, items: List) -> None:
    if not REST:
        return
    skipped = skipped_in_unit_tiers(REST)
    if skipped is None:
        return
    done = [item for item in items
            if is_unit_test(item) and not was_skipped(item.nodeid, skipped)]
    if done:
        config.hook.pytest_deselected(items=done)
        done_ids = {id(item) for item in done}
        items[:] = [item for item in items if id(item) not in done_ids]
