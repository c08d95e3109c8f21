"""The README stays true: every setting, command, route, exit code and backend mode is in it."""

from __future__ import annotations

import os
import re

import pytest

from clinvk_lib import config
from clinvk_lib.cli import common, main
from clinvk_lib.backends import base
from clinvk_lib.server.openapi import DEFAULT_ROUTES

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def readme():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        return f.read()


def test_every_setting_is_documented(readme):
    missing = [s.key for s in config.SETTINGS if "`%s`" % s.key not in readme]
    assert missing == []


def test_every_command_has_a_usage_example(readme):
    for command in list(main.COMMANDS) + list(main.BUILT_IN):
        if command != "help":
            assert re.search(r"clinvk %s\b" % command, readme), command


def test_every_route_is_documented(readme):
    for route in DEFAULT_ROUTES:
        assert route.path in readme, route.path


def test_every_exit_code_is_documented(readme):
    codes = [v for k, v in vars(common).items() if k.startswith("EXIT_") and isinstance(v, int)]
    for code in codes:
        assert re.search(r"^\| %d \|" % code, readme, re.M), code


def test_every_backend_mode_note_is_in_the_readme(readme):
    for name in base.NAMES:
        for notes in base.get(name).mode_notes.values():
            for text in notes.values():
                assert text.replace("|", "/") in readme, (name, text[:50])


def test_every_backend_option_note_is_in_the_readme(readme):
    for name in base.NAMES:
        for option, text in base.get(name).option_notes.items():
            assert text.replace("|", "/") in readme, (name, option, text[:50])


def test_the_two_commands_are_the_ones_ci_runs(readme):
    assert "./build_pyz.sh && python3 dist/clinvk.pyz serve" in readme
    assert "./test.sh" in readme
    with open(os.path.join(ROOT, ".ci", "run")) as f:
        assert "./test.sh" in f.read()
