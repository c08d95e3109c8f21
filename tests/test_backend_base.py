"""What every backend parser shares: noise tolerance and the missing-final-line rule."""

from __future__ import annotations

import pytest

from clinvk_lib.backends import base


@pytest.mark.parametrize("name", base.NAMES)
def test_exit_0_without_the_final_line_is_an_error_naming_the_bad_output(name):
    parser = base.get(name).new_stream_parser()
    parser.feed("Segmentation fault (core dumped)")
    parser.feed('{"type": "something_else"}')
    closing = parser.finish(0, "")
    assert [e.type for e in closing] == ["error", "done"]
    assert "printed no JSON result" in parser.error and "Segmentation fault" in parser.error
    assert not parser.result(0).ok


@pytest.mark.parametrize("name", base.NAMES)
def test_a_failed_exit_keeps_its_own_error(name):
    parser = base.get(name).new_stream_parser()
    parser.finish(3, "fatal: boom\n")
    assert "exited with code 3" in parser.error


def test_unknown_backend_lists_the_known_ones():
    with pytest.raises(KeyError, match="claude, codex, gemini"):
        base.get("gpt")
