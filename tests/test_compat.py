"""compat.py and sse.py: model ids, the conversation-to-prompt format, token estimates, the
reply pieces of a stream, and SSE framing (no server, no SDK)."""

from __future__ import annotations

import pytest

from clinvk_lib import config
from clinvk_lib import events as ev
from clinvk_lib.backends import base
from clinvk_lib.server import compat, errors, models, sse
from clinvk_lib.server.compat import Conversation, Turn


def cfg(**settings):
    return config.load(None, env={}, flags=settings)


def convo(*turns, system=""):
    return Conversation(system, [Turn(role, text, i) for i, (role, text) in enumerate(turns)])


# -- models --------------------------------------------------------------------------------------


@pytest.mark.parametrize("model, expected", [
    ("claude", ("claude", "")),
    ("codex", ("codex", "")),
    ("gemini", ("gemini", "")),
    ("claude/claude-sonnet-4-5", ("claude", "claude-sonnet-4-5")),
    ("codex/gpt-5-codex", ("codex", "gpt-5-codex")),
    ("gemini/gemini-2.5-pro", ("gemini", "gemini-2.5-pro")),
    ("claude-opus-4-5-20251101", ("claude", "claude-opus-4-5-20251101")),
    ("gpt-5", ("codex", "gpt-5")),
    ("o3", ("codex", "o3")),
    ("o4-mini", ("codex", "o4-mini")),
    ("codex-mini-latest", ("codex", "codex-mini-latest")),
    ("gemini-2.5-flash", ("gemini", "gemini-2.5-flash")),
    ("qwen", ("qwen", "")),
    ("qwen/qwen3-coder-plus", ("qwen", "qwen3-coder-plus")),
    ("qwen-max", ("qwen", "qwen-max")),
    ("qwen3-coder-plus", ("qwen", "qwen3-coder-plus")),
])
def test_model_id_selects_backend_and_cli_model(model, expected):
    assert models.resolve_model(model, cfg()) == expected


@pytest.mark.parametrize("model", ["llama-3", "claude/", "openai/gpt-5", "omni", "Claude"])
def test_unknown_model_is_404_model_not_found(model):
    with pytest.raises(errors.ApiError) as info:
        models.resolve_model(model, cfg())
    assert (info.value.status, info.value.code, info.value.field) == (404, "model_not_found",
                                                                       "model")
    assert "claude-, gpt-, o<digit>, codex-, gemini- or qwen" in info.value.message


def test_model_of_a_disabled_backend_is_not_found_and_says_why():
    with pytest.raises(errors.ApiError) as info:
        models.resolve_model("gemini-2.5-pro", cfg(**{"backends.gemini.enabled": False}))
    assert info.value.status == 404
    assert "backends.gemini.enabled: false" in info.value.message


def test_models_list_has_each_enabled_backend_its_chat_profile_and_its_configured_model():
    listed = models.listed_models(cfg(**{"backends.claude.model": "claude-sonnet-4-5",
                                         "backends.codex.enabled": False}))
    assert listed[:5] == [("claude", "claude"), ("claude-chat", "claude"),
                          ("claude/claude-sonnet-4-5", "claude"),
                          ("gemini", "gemini"), ("gemini-chat", "gemini")]
    assert [m for m, _ in listed[5:]] == [m for n in base.NAMES[3:] for m in (n, n + "-chat")]


def test_vendor_of_each_backend():
    assert {n: models.vendor(n) for n in ("claude", "codex", "gemini", "qwen")} == {
        "claude": "anthropic", "codex": "openai", "gemini": "google", "qwen": "qwen"}


# -- the prompt ----------------------------------------------------------------------------------


def test_single_user_turn_is_the_prompt_verbatim():
    assert compat.render_prompt(convo(("user", "  --help me\n")), False) == "  --help me\n"


def test_history_is_tagged_by_role_oldest_first_then_the_newest_user_turn():
    prompt = compat.render_prompt(convo(("user", "first"), ("assistant", "answer"),
                                        ("tool", "42"), ("user", "second")), False)
    assert prompt == ("<conversation_history>\n<user>\nfirst\n</user>\n<assistant>\nanswer\n"
                      "</assistant>\n<tool>\n42\n</tool>\n</conversation_history>\n\nsecond")


def test_history_turns_without_text_are_left_out():
    prompt = compat.render_prompt(convo(("user", "a"), ("assistant", ""), ("user", "b")), False)
    assert prompt == "<conversation_history>\n<user>\na\n</user>\n</conversation_history>\n\nb"


def test_system_prompt_opens_the_prompt_only_when_the_backend_has_no_mechanism():
    conv = convo(("user", "hi"), system="Be brief.")
    assert compat.render_prompt(conv, True) == "<system>\nBe brief.\n</system>\n\nhi"
    assert compat.render_prompt(conv, False) == "hi"


def test_backends_with_a_system_prompt_mechanism_get_the_system_messages_there():
    assert {n: compat.honours_system_prompt(base.get(n))
            for n in ("claude", "codex", "gemini", "qwen")} == \
        {"claude": True, "codex": True, "gemini": False, "qwen": True}


def test_conversation_ending_with_an_assistant_turn_is_refused_naming_it():
    with pytest.raises(errors.ApiError) as info:
        compat.check_conversation(convo(("user", "a"), ("assistant", "prefill")))
    assert (info.value.status, info.value.field) == (400, "messages[1].role")


def test_conversation_without_turns_is_refused():
    with pytest.raises(errors.ApiError) as info:
        compat.check_conversation(convo(system="only a system prompt"))
    assert info.value.field == "messages"


def test_last_user_turn_without_text_is_refused():
    with pytest.raises(errors.ApiError) as info:
        compat.check_conversation(convo(("user", " \n")))
    assert info.value.field == "messages[0].content"


def test_text_parts_are_joined_by_a_newline():
    parts = [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}]
    assert compat.content_text(parts) == "one\ntwo"
    assert compat.content_text(None) == ""


# -- tokens --------------------------------------------------------------------------------------


def test_token_estimate_is_characters_over_four_rounded_up():
    assert compat.estimate_tokens("") == 0
    assert compat.estimate_tokens("abcd") == 1
    assert compat.estimate_tokens("abcd", "e") == 2


def test_reported_usage_wins_over_the_estimate():
    reported = ev.Usage(10, 20, 3)
    assert compat.counted_usage(reported, "x" * 400, "y") is reported
    assert compat.counted_usage(ev.Usage(), "x" * 400, "y" * 9).to_dict() == \
        ev.Usage(100, 3).to_dict()


# -- reply pieces --------------------------------------------------------------------------------


def pieces(events):
    def describe(exc):
        return errors.ApiError(500, "internal_error", "broken: %s" % exc)
    return list(compat.reply_pieces(iter(events), "claude", "prompt!!", describe))


def test_streamed_deltas_then_the_same_whole_message_are_sent_once():
    out = pieces([ev.init("claude"), ev.message("claude", "Hel", True),
                  ev.message("claude", "lo", True), ev.message("claude", "Hello"),
                  ev.done("claude", ev.Usage(5, 2))])
    assert out[:-1] == [compat.Delta("Hel"), compat.Delta("lo")]
    assert out[-1] == compat.Finished("Hello", ev.Usage(5, 2))


def test_whole_messages_are_one_piece_each_separated_by_a_blank_line():
    out = pieces([ev.message("codex", "one"), ev.tool_use("codex", "t", "shell", {}),
                  ev.message("codex", "two"), ev.done("codex")])
    assert out[:-1] == [compat.Delta("one"), compat.Delta("\n\ntwo")]


def test_finished_without_reported_usage_carries_estimates():
    out = pieces([ev.message("claude", "abcdefgh"), ev.done("claude")])
    assert out[-1].usage.to_dict() == ev.Usage(2, 2).to_dict()


def test_fatal_error_event_is_a_424_with_the_backend_text_and_stops_the_text():
    out = pieces([ev.message("claude", "partial", True),
                  ev.error("claude", "API Error: overloaded"),
                  ev.message("claude", "late", True), ev.done("claude", exit_code=1)])
    assert out[0] == compat.Delta("partial") and len(out) == 2
    err = out[1].error
    assert (err.status, err.code) == (424, "backend_failed")
    assert err.message == "the claude backend failed: API Error: overloaded"


def test_warning_events_do_not_fail_the_reply():
    out = pieces([ev.error("claude", "slow down", fatal=False), ev.message("claude", "ok"),
                  ev.done("claude")])
    assert isinstance(out[-1], compat.Finished)


def test_timeout_error_event_is_a_504():
    out = pieces([ev.error("claude", "claude timed out after 1s", code="timeout"),
                  ev.done("claude", exit_code=-9)])
    assert out[-1].error.status == 504


def test_nonzero_exit_without_an_error_event_fails():
    out = pieces([ev.message("claude", "x"), ev.done("claude", exit_code=3)])
    assert out[-1].error.message == "the claude backend failed: claude exited with code 3"


def test_a_broken_event_source_still_ends_with_failed():
    def broken():
        yield ev.message("claude", "a", True)
        raise RuntimeError("boom")
    out = list(compat.reply_pieces(broken(), "claude", "",
                                   lambda exc: errors.ApiError(500, "internal_error", str(exc))))
    assert out == [compat.Delta("a"), compat.Failed(out[1].error)]
    assert out[1].error.message == "boom"


def test_closing_the_pieces_closes_the_events():
    closed = []

    def events():
        try:
            yield ev.message("claude", "a", True)
            yield ev.message("claude", "b", True)
        finally:
            closed.append(True)
    stream = compat.reply_pieces(events(), "claude", "", lambda exc: None)
    next(stream)
    stream.close()
    assert closed == [True]


# -- SSE framing ---------------------------------------------------------------------------------


def test_sse_frame_is_one_data_line_of_compact_json():
    assert sse.frame({"a": "two\nlines"}) == b'data: {"a":"two\\nlines"}\n\n'


def test_sse_frame_with_an_event_name_and_a_raw_string():
    assert sse.frame({"type": "ping"}, "ping") == b'event: ping\ndata: {"type":"ping"}\n\n'
    assert sse.frame("[DONE]") == b"data: [DONE]\n\n"


def test_keepalives_are_a_comment_and_an_anthropic_ping():
    assert sse.COMMENT_KEEPALIVE.startswith(b":") and sse.COMMENT_KEEPALIVE.endswith(b"\n\n")
    assert sse.PING_KEEPALIVE == b'event: ping\ndata: {"type":"ping"}\n\n'
