"""ndjson.py: one compact JSON line per event, and a stream that always ends with done."""

from __future__ import annotations

import json

from clinvk_lib import events as ev
from clinvk_lib.server.ndjson import encode_event, ndjson_lines


def decode(lines):
    return [json.loads(line) for line in lines]


def test_event_is_one_line_ending_in_newline():
    line = encode_event(ev.message("claude", "two\nlines"))
    assert line.endswith(b"\n") and line.count(b"\n") == 1


def test_event_line_keeps_non_ascii_text_as_utf8():
    line = encode_event(ev.message("claude", "ünïcødé ✓"))
    assert "ünïcødé ✓".encode("utf-8") in line


def test_event_line_has_the_unified_fields():
    e = ev.message("codex", "hi")
    e.session_id = "abc"
    assert json.loads(encode_event(e)) == {"type": "message", "backend": "codex",
                                           "session_id": "abc", "timestamp": e.timestamp,
                                           "content": {"text": "hi", "role": "assistant",
                                                       "is_partial": False}}


def test_each_event_is_its_own_chunk_in_order():
    events = [ev.init("claude"), ev.message("claude", "a"), ev.done("claude")]
    chunks = list(ndjson_lines(events, "claude"))
    assert [c["type"] for c in decode(chunks)] == ["init", "message", "done"]


def test_lines_are_produced_as_events_arrive():
    produced = []

    def source():
        for e in (ev.init("claude"), ev.message("claude", "a"), ev.done("claude")):
            produced.append(e.type)
            yield e

    lines = ndjson_lines(source(), "claude")
    first = next(lines)
    assert json.loads(first)["type"] == "init" and produced == ["init"]


def test_failing_source_ends_with_error_then_done():
    def source():
        yield ev.init("gemini")
        raise RuntimeError("pipe broke")

    out = decode(ndjson_lines(source(), "gemini", "sid1"))
    assert [e["type"] for e in out] == ["init", "error", "done"]
    assert out[1]["content"]["message"] == "pipe broke"
    assert out[1]["session_id"] == out[2]["session_id"] == "sid1"


def test_failure_before_any_event_still_gives_error_and_done():
    def source():
        raise RuntimeError("could not start")
        yield  # pragma: no cover

    out = decode(ndjson_lines(source(), "codex"))
    assert [e["type"] for e in out] == ["error", "done"]
    assert out[1]["content"]["exit_code"] == 1


def test_failure_message_comes_from_describe_failure():
    def source():
        raise ValueError("secret detail")
        yield  # pragma: no cover

    out = decode(ndjson_lines(source(), "codex", describe_failure=lambda exc: "internal error"))
    assert out[0]["content"]["message"] == "internal error"


def test_closing_the_lines_closes_the_event_source():
    closed = []

    def source():
        try:
            yield ev.init("claude")
            yield ev.message("claude", "a")
        finally:
            closed.append(True)

    events = source()                       # held here, so only an explicit close closes it
    lines = ndjson_lines(events, "claude")
    next(lines)
    lines.close()
    assert closed == [True]
