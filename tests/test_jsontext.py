"""How clinvk writes JSON (clinvk_lib/jsontext.py; reading is tested with the front ends that
read it)."""

from __future__ import annotations

import json

from clinvk_lib import jsontext

VALUE = {"text": "é\nfin", "n": [1, 2], "none": None}


def test_compact_json_is_one_line_without_spaces_and_keeps_non_ascii():
    text = jsontext.dumps_compact(VALUE)
    assert text == '{"text":"é\\nfin","n":[1,2],"none":null}'
    assert json.loads(text) == VALUE


def test_pretty_json_is_indented_by_two_spaces_and_ends_with_a_newline():
    text = jsontext.dumps_pretty(VALUE)
    assert text.startswith('{\n  "text": "é\\nfin",') and text.endswith("}\n")
    assert json.loads(text) == VALUE
