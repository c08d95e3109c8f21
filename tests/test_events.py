"""events.py: the unified event envelope and reply collection."""

from __future__ import annotations

import json

from clinvk_lib import events as ev


def test_event_envelope_has_type_backend_session_timestamp_content():
    e = ev.message("claude", "hi")
    e.session_id = "abc"
    d = json.loads(json.dumps(e.to_dict()))
    assert set(d) == {"type", "backend", "session_id", "timestamp", "content"}
    assert d["content"] == {"text": "hi", "role": "assistant", "is_partial": False}
    assert d["timestamp"].endswith("Z") and "T" in d["timestamp"]


def test_partial_pieces_are_joined_without_separators():
    evs = [ev.message("gemini", "Hel", True), ev.message("gemini", "lo", True)]
    assert ev.collect_text(evs) == "Hello"


def test_whole_message_repeating_streamed_pieces_is_not_counted_twice():
    evs = [ev.message("claude", "Hel", True), ev.message("claude", "lo", True),
           ev.message("claude", "Hello")]
    assert ev.collect_text(evs) == "Hello"


def test_separate_whole_messages_are_separated_by_a_blank_line():
    evs = [ev.message("codex", "one"), ev.tool_use("codex", "t", "shell", {}),
           ev.message("codex", "two")]
    assert ev.collect_text(evs) == "one\n\ntwo"


def test_usage_round_trips_and_is_falsy_when_empty():
    u = ev.Usage(1, 2, 3, 4, 0.5)
    assert ev.Usage.from_dict(u.to_dict()) == u
    assert not ev.Usage()
    assert "cost_usd" not in ev.Usage(1).to_dict()
