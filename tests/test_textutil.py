"""The text every layer writes: echoed values, cut values, timestamps (clinvk_lib/textutil.py)."""

from __future__ import annotations

import datetime
import re

from clinvk_lib import textutil


def test_printable_escapes_control_characters_so_a_value_cannot_forge_a_log_line():
    assert textutil.printable("/x\nGET /admin 200\x1b[2J", 100) == "/x\\nGET /admin 200\\x1b[2J"


def test_printable_keeps_printable_text_as_it_is():
    assert textutil.printable("/api/v1/sessions/é", 100) == "/api/v1/sessions/é"


def test_printable_cuts_to_the_limit_and_says_it_did():
    assert textutil.printable("a" * 10, 4) == "aaaa..."
    assert textutil.printable("a" * 4, 4) == "aaaa"


def test_cut_puts_text_on_one_line_within_its_width():
    assert textutil.cut("fix\n\n  the   bug", 40) == "fix the bug"
    assert textutil.cut("refactor the session store", 12) == "refactor th\u2026"


def test_cut_never_leaves_a_space_before_the_ellipsis():
    assert textutil.cut("abcd efgh ij", 8, "...") == "abcd..."


def test_cut_of_nothing_is_empty():
    assert textutil.cut(None, 10) == "" and textutil.cut("", 10) == ""


def test_rfc3339_is_utc_with_the_digits_asked_and_a_z():
    local = datetime.datetime(2024, 5, 6, 9, 8, 7, 654321,
                              datetime.timezone(datetime.timedelta(hours=2)))
    assert textutil.rfc3339(local) == "2024-05-06T07:08:07.654Z"
    assert textutil.rfc3339(local, 6) == "2024-05-06T07:08:07.654321Z"


def test_rfc3339_now_has_a_fixed_width_so_timestamps_sort_as_text():
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", textutil.rfc3339())
