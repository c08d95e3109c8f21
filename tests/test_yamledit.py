"""Writing the YAML subset: one-line values that read back equal, and edits of a config file
that keep every other line."""

from __future__ import annotations

import pytest

from clinvk_lib.miniyaml import YAMLError, loads
from clinvk_lib.yamledit import dumps_inline, set_key


# --- dumps_inline --------------------------------------------------------------------------

@pytest.mark.parametrize("value, text", [
    (None, "null"), (True, "true"), (False, "false"), (8080, "8080"), (1.5, "1.5"),
    ("plain", "plain"), ("two words", "two words"), ("", '""'), ("8080", '"8080"'),
    ("true", '"true"'), ("null", '"null"'), ("a: b", '"a: b"'), ("x #y", '"x #y"'),
    ("-v", '"-v"'), (" pad", '" pad"'), ("line\nbreak", '"line\\nbreak"'), ("a,b", '"a,b"'),
    (["a", "b c", "1"], '[a, b c, "1"]'), ([], "[]"), ({}, "{}"),
])
def test_dumps_inline_quotes_only_when_needed(value, text):
    assert dumps_inline(value) == text


@pytest.mark.parametrize("value", [
    "it's", 'say "hi"', "back\\slash", "tab\there", "é ü", "\u2028", "#x", "&a", "*a", "!t",
    "|", ">", "[x]", "{x}", "~", "0x10", "1e3", ".inf", ["--flag=a,b", "x: y"], -3, 2.5e-07,
])
def test_dumps_inline_reads_back_equal(value):
    assert loads("v: " + dumps_inline(value)) == {"v": value}


def test_dumps_inline_refuses_a_non_empty_mapping():
    with pytest.raises(ValueError):
        dumps_inline({"a": 1})


# --- set_key -----------------------------------------------------------------------------

SAMPLE = """\
# clinvk config
default_backend: claude   # the usual one

server:
  # network
  host: 127.0.0.1
  port: 8080  # change me

# trailing comment
"""


def test_set_key_replaces_an_inline_value_keeping_its_comment():
    result = set_key(SAMPLE, "server.port", 9000)
    assert result == SAMPLE.replace("port: 8080  # change me", "port: 9000  # change me")


def test_set_key_adds_a_key_after_the_last_line_of_its_section():
    result = set_key(SAMPLE, "server.api_keys", ["k1", "k2"])
    assert result == SAMPLE.replace("  port: 8080  # change me\n",
                                    "  port: 8080  # change me\n  api_keys: [k1, k2]\n")


def test_set_key_adds_missing_parent_sections():
    result = set_key(SAMPLE, "backends.claude.model", "opus")
    assert loads(result)["backends"] == {"claude": {"model": "opus"}}
    assert result.startswith(SAMPLE.split("\n\n# trailing")[0])
    assert "# trailing comment" in result


def test_set_key_on_an_empty_text_creates_the_key():
    assert set_key("", "session.retention_days", 7) == "session:\n  retention_days: 7\n"


def test_set_key_on_a_comment_only_file_appends():
    assert set_key("# nothing yet", "a", 1) == "# nothing yet\na: 1\n"


def test_set_key_replaces_a_block_list_with_an_inline_one():
    text = "a:\n  - x\n  - y\nb: 1\n"
    assert set_key(text, "a", ["z"]) == "a: [z]\nb: 1\n"


def test_set_key_fills_an_empty_section():
    assert set_key("server:\nother: 1\n", "server.port", 1) == "server:\n  port: 1\nother: 1\n"


def test_set_key_fills_a_null_section_keeping_its_comment():
    assert set_key("server: ~  # later\n", "server.port", 1) == "server:  # later\n  port: 1\n"


def test_set_key_follows_the_existing_indentation_of_a_section():
    text = "server:\n    host: x\n"
    assert set_key(text, "server.port", 1) == "server:\n    host: x\n    port: 1\n"


def test_set_key_keeps_crlf_line_endings():
    assert set_key("a: 1\r\n", "b", 2) == "a: 1\r\nb: 2\r\n"


def test_set_key_refuses_to_put_keys_under_a_scalar():
    with pytest.raises(YAMLError) as caught:
        set_key("server: 8080\n", "server.port", 1)
    assert "server holds the value 8080, not a mapping" in str(caught.value)
    assert caught.value.line == 1


def test_set_key_refuses_a_text_that_does_not_parse():
    with pytest.raises(YAMLError):
        set_key("a: &x 1\n", "b", 2)


def test_set_key_output_round_trips_through_loads():
    result = SAMPLE
    for key, value in [("server.port", 1), ("server.host", "0.0.0.0"), ("x.y.z", ["a b"]),
                       ("default_backend", "codex"), ("x.y.w", "it's: \"q\"")]:
        result = set_key(result, key, value)
    assert loads(result) == {"default_backend": "codex",
                             "server": {"host": "0.0.0.0", "port": 1},
                             "x": {"y": {"z": ["a b"], "w": "it's: \"q\""}}}

