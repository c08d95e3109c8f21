"""Which run profile (``backends.options.PROFILES``) a request of the HTTP server asks for.

In this order: a ``<backend>-chat`` model id of the OpenAI-, Responses- and Anthropic-
compatible APIs (``claude-chat``, ``codex-chat/gpt-5.5``: the chat profile), the
``X-Clinvk-Profile`` request header (``chat`` or ``agent``, on every route that runs a
backend through ``Context.prepare``), then ``server.default_profile``.
"""

from __future__ import annotations

from typing import Mapping, Tuple

from ..backends import base, options
from ..config import Config
from . import errors

PROFILE_HEADER = "X-Clinvk-Profile"
# A backend name followed by this is the backend in the chat profile.
CHAT_SUFFIX = "-" + options.CHAT_PROFILE


def split_chat_model(model: str) -> Tuple[str, str]:
    """(the model id without a chat profile's suffix, the profile it names: "chat" or "").
    ``claude-chat`` -> (``claude``, chat); ``codex-chat/gpt-5.5`` -> (``codex/gpt-5.5``,
    chat); anything else is returned as it is, with ""."""
    head, slash, rest = model.partition("/")
    backend = head[:-len(CHAT_SUFFIX)] if head.endswith(CHAT_SUFFIX) else ""
    if backend not in base.NAMES:
        return model, ""
    return backend + slash + rest, options.CHAT_PROFILE


def requested_profile(headers: Mapping[str, str], cfg: Config) -> str:
    """The X-Clinvk-Profile header's profile, else server.default_profile; a 400 naming the
    header and the accepted values when the header holds another."""
    value = (headers.get(PROFILE_HEADER) or "").strip()
    if not value:
        return cfg.get("server.default_profile") or options.AGENT_PROFILE
    if value.lower() not in options.PROFILES:
        raise errors.ApiError(400, "invalid_request", "%s must be one of %s: got %r"
                              % (PROFILE_HEADER, ", ".join(options.PROFILES), value[:100]),
                              field=PROFILE_HEADER)
    return value.lower()
