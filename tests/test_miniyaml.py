"""The YAML subset reader (clinvk_lib/miniyaml.py); the writer is tested in test_yamledit.py."""

from __future__ import annotations

import math

import pytest

from clinvk_lib.miniyaml import YAMLError, loads, loads_with_lines


# --- structure ---------------------------------------------------------------------------

def test_nested_block_mappings_become_nested_dicts():
    assert loads("server:\n  port: 8080\n  tls:\n    on: true\nname: x\n") == {
        "server": {"port": 8080, "tls": {"on": True}}, "name": "x"}


def test_block_list_of_scalars():
    assert loads("tags:\n  - a\n  - 2\n  - \"c\"\n") == {"tags": ["a", 2, "c"]}


def test_block_list_may_sit_at_its_keys_indentation():
    assert loads("tags:\n- a\n- b\nnext: 1\n") == {"tags": ["a", "b"], "next": 1}


def test_list_of_mappings_aligns_later_keys_with_the_first():
    text = "items:\n  - name: a\n    size: 1\n  - name: b\n"
    assert loads(text) == {"items": [{"name": "a", "size": 1}, {"name": "b"}]}


def test_list_item_on_its_own_line_takes_the_indented_block_below():
    assert loads("- \n  k: v\n-\n") == [{"k": "v"}, None]


def test_nested_block_lists():
    assert loads("- - a\n  - b\n- c\n") == [["a", "b"], "c"]


def test_flow_lists_with_quoted_and_nested_items():
    assert loads('x: [a, "b, c", \'d\', 3, [e], []]') == {"x": ["a", "b, c", "d", 3, ["e"], []]}


def test_flow_list_may_end_with_a_comma():
    assert loads("x: [a, b, ]") == {"x": ["a", "b"]}


def test_empty_flow_mapping_is_an_empty_dict():
    assert loads("x: {}\ny: { }\n") == {"x": {}, "y": {}}


def test_empty_document_is_none():
    assert loads("# only a comment\n\n") is None


def test_single_leading_document_marker_is_allowed():
    assert loads("---\na: 1\n") == {"a": 1}


def test_top_level_scalar_document():
    assert loads("hello") == "hello"


def test_crlf_line_endings_and_bom_are_accepted():
    assert loads("\ufeffa: 1\r\nb: [x]\r\n") == {"a": 1, "b": ["x"]}


# --- scalars -----------------------------------------------------------------------------

@pytest.mark.parametrize("text, value", [
    ("~", None), ("null", None), ("Null", None), ("NULL", None), ("", None),
    ("true", True), ("True", True), ("TRUE", True),
    ("false", False), ("False", False), ("FALSE", False),
    ("yes", "yes"), ("no", "no"), ("on", "on"), ("off", "off"), ("tRUE", "tRUE"),
    ("42", 42), ("-7", -7), ("+3", 3), ("007", 7), ("0o17", 15), ("0x1F", 31),
    ("1_000", "1_000"),
    ("1.5", 1.5), ("-.5", -0.5), ("1e3", 1000.0), ("2.", 2.0), (".inf", math.inf),
    ("-.Inf", -math.inf),
    ("http://x:80/a", "http://x:80/a"), ("a#b", "a#b"), ("it's", "it's"),
    ("two words", "two words"), ("-v", "-v"),
])
def test_plain_scalars_follow_the_yaml_1_2_core_schema(text, value):
    assert loads("v: " + text) == {"v": value}


def test_nan_reads_as_float_nan():
    assert math.isnan(loads("v: .nan")["v"])


def test_empty_value_is_null():
    assert loads("a:\nb: 1\n") == {"a": None, "b": 1}


def test_single_quotes_double_their_quote_and_keep_backslashes():
    assert loads("v: 'it''s a \\n'") == {"v": "it's a \\n"}


def test_double_quotes_understand_escapes():
    text = r'v: "tab\there \"q\" \\ \u00e9 \x41 \U0001F600 \/ \0"'
    assert loads(text) == {"v": "tab\there \"q\" \\ \u00e9 A \U0001F600 / \0"}


def test_quoted_scalars_stay_strings():
    assert loads("a: 'true'\nb: \"8080\"\nc: ''\n") == {"a": "true", "b": "8080", "c": ""}


def test_quoted_keys():
    assert loads("\"a: b\": 1\n'c': 2\n") == {"a: b": 1, "c": 2}


def test_keys_are_always_strings():
    assert loads("8080: x\ntrue: y\n") == {"8080": "x", "true": "y"}


# --- comments ----------------------------------------------------------------------------

def test_full_line_and_trailing_comments_are_ignored():
    text = "# head\na: 1  # one\n  # indented comment\nb: 'x # y'  # two\nc: [a, b] # three\n"
    assert loads(text) == {"a": 1, "b": "x # y", "c": ["a", "b"]}


def test_hash_without_preceding_space_is_part_of_the_value():
    assert loads("a: x#y") == {"a": "x#y"}


def test_comment_after_key_with_nested_value():
    assert loads("a:  # note\n  b: 1\n") == {"a": {"b": 1}}


# --- rejected constructs, each with its line -------------------------------------------------

@pytest.mark.parametrize("text, line, fragment", [
    ("a: 1\nb: &x 2\n", 2, "anchors (&name) are not supported"),
    ("a: 1\nb: *x\n", 2, "aliases (*name) are not supported"),
    ("a: !!str 1\n", 1, "tags (!tag) are not supported"),
    ("&a k: 1\n", 1, "anchors"),
    ("a: |\n  text\n", 1, "block scalars"),
    ("a: >-\n  text\n", 1, "block scalars"),
    ("a: 1\n---\nb: 2\n", 2, "multiple documents"),
    ("a: 1\n...\n", 2, "document end markers"),
    ("%YAML 1.2\n---\na: 1\n", 1, "directives"),
    ("a:\n\tb: 1\n", 2, "tabs are not allowed in indentation"),
    ("a: 1\nb: 2\na: 3\n", 3, "duplicate key 'a' (first set on line 1)"),
    ("a:\n    b: 1\n  c: 2\n", 3, "bad indentation"),
    ("a: 1\n  b: 2\n", 2, "bad indentation"),
    ("a: {b: 1}\n", 1, "flow mappings"),
    ("a: [b,\n  c]\n", 1, "'[' is not closed on the same line"),
    ("a: \"open\n", 1, "unterminated quoted string"),
    ("a: 'open\n", 1, "unterminated quoted string"),
    ("a: \"bad \\q\"\n", 1, "unknown escape"),
    ("a: \"x\" y\n", 1, "unexpected text after the value"),
    ("a: b: c\n", 1, "': ' cannot appear in an unquoted value"),
    ("a: - b\n", 1, "a list cannot start on the line of its key"),
    ("? a\n: b\n", 1, "complex keys"),
    ("a:\n  - x\n  y: 1\n", 3, "expected a list item"),
    ("a: 1\n- x\n", 2, "a list item cannot stand among the keys"),
    ("a:\n  plain\n  more\n", 3, "a value must fit on one line"),
    ("a: [x, , y]\n", 1, "empty item in a flow list"),
    ("a: [x {]\n", 1, "quote the item"),
    ("a: @x\n", 1, "'@' cannot start an unquoted value"),
])
def test_constructs_outside_the_subset_are_errors_with_their_line(text, line, fragment):
    with pytest.raises(YAMLError) as caught:
        loads(text, filename="config.yaml")
    assert caught.value.line == line
    assert fragment in str(caught.value)
    assert str(caught.value).startswith("config.yaml line %d: " % line)


def test_error_message_reads_file_line_reason():
    with pytest.raises(YAMLError) as caught:
        loads("\n\nx: 1\ny: &anchor 2\n", filename="config.yaml")
    assert str(caught.value) == "config.yaml line 4: anchors (&name) are not supported"


# --- line numbers ----------------------------------------------------------------------------

def test_loads_with_lines_maps_dotted_keys_to_lines():
    text = "# c\nserver:\n  port: 1\n\n  hosts:\n    - a\nitems:\n  - name: x\n"
    data, lines = loads_with_lines(text)
    assert lines == {"": 2, "server": 2, "server.port": 3, "server.hosts": 5, "items": 7,
                     "items.0.name": 8}
    assert data["server"]["hosts"] == ["a"]
