"""./test.sh's tiers: the whole-suite tier leaves out only the unit tests the unit tiers ran
(tests/tiers.py), run here on a throwaway test tree by a real pytest."""

import os
import subprocess
import sys
import textwrap

from tests.tiers import was_skipped

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CONFTEST = """
from tests.tiers import (  # noqa: F401
    pytest_collection_modifyitems, pytest_collectreport, pytest_runtest_logreport,
    pytest_sessionfinish)

def pytest_configure(config):
    config.addinivalue_line("markers", "sdk: dev venv")
    config.addinivalue_line("markers", "slow: whole tier")
"""

TESTS = {
    "test_plain.py": """
        import pytest

        def test_ran_by_unit_tiers():
            pass

        def test_skipped_inside():
            pytest.skip("needs something the unit venv lacks")

        @pytest.mark.sdk
        def test_sdk():
            pass

        @pytest.mark.slow
        def test_slow():
            pass
    """,
    "test_module_skip.py": """
        import pytest
        pytest.importorskip("no_such_module_anywhere_for_the_tiers_test")

        def test_in_a_skipped_module():
            pass
    """,
}


def pytest_run(tree, *args, **env):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("TEST_TIER_")}
    full_env.update(env, PYTHONPATH=ROOT)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rA", str(tree)] + list(args),
        cwd=str(tree), env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        universal_newlines=True, timeout=120)


def make_tree(tmp_path):
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "conftest.py").write_text(CONFTEST)
    for name, body in TESTS.items():
        (tree / name).write_text(textwrap.dedent(body))
    return tree


def passed(output):
    return sorted(line.split("::", 1)[1] for line in output.splitlines()
                  if line.startswith("PASSED "))


def test_the_whole_tier_runs_what_the_unit_tier_skipped_or_deselected(tmp_path):
    tree = make_tree(tmp_path)
    skips = tmp_path / "skipped-3.x"
    unit = pytest_run(tree, "-m", "not sdk and not slow", TEST_TIER_SKIPS_OUT=str(skips))
    assert unit.returncode == 0, unit.stdout
    assert passed(unit.stdout) == ["test_ran_by_unit_tiers"], unit.stdout
    recorded = skips.read_text().split()
    assert "test_module_skip.py" in recorded and "test_plain.py::test_skipped_inside" in recorded

    # The module-level skip now passes: the whole tier's venv has the module.
    (tree / "no_such_module_anywhere_for_the_tiers_test.py").write_text("")
    rest = pytest_run(tree, TEST_TIER_REST=str(skips))
    assert rest.returncode == 0, rest.stdout
    assert passed(rest.stdout) == ["test_in_a_skipped_module", "test_sdk", "test_slow"], rest.stdout
    assert "1 deselected" in rest.stdout


def test_a_unit_tier_that_did_not_run_leaves_nothing_out(tmp_path):
    tree = make_tree(tmp_path)
    skips = tmp_path / "skipped-3.8"
    skips.write_text("")
    rest = pytest_run(tree, TEST_TIER_REST=str(skips) + os.pathsep + str(tmp_path / "missing"))
    assert "test_ran_by_unit_tiers" in passed(rest.stdout), rest.stdout
    assert "deselected" not in rest.stdout


def test_a_test_counts_as_skipped_when_its_module_or_class_was():
    skipped = {"tests/test_a.py", "tests/test_b.py::TestC"}
    assert was_skipped("tests/test_a.py::test_x[1]", skipped)
    assert was_skipped("tests/test_b.py::TestC::test_y", skipped)
    assert not was_skipped("tests/test_b.py::TestD::test_y", skipped)
    assert not was_skipped("tests/test_ab.py::test_x", skipped)
