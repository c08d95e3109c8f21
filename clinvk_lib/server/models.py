"""Which backend a model id of the OpenAI- and Anthropic-compatible APIs names.

Model ids (``resolve_model``), in this order, after a chat profile's ``-chat`` suffix is
taken off the backend name (``claude-chat``, ``codex-chat/gpt-5.5``: ``profiles``):
- a backend name (``claude``, ``codex``, ``gemini``): that backend with its configured model;
- ``backend/model-id`` (``claude/claude-sonnet-4-5``): that backend, ``model-id`` passed to
  the CLI as its model;
- a vendor model id, by prefix: ``claude-*`` -> claude, ``gpt-*``, ``o<digit>*`` (o3,
  o4-mini) and ``codex-*`` -> codex, ``gemini-*`` -> gemini, ``qwen*`` (qwen-max,
  qwen3-coder-plus) -> qwen, the id passed to the CLI;
- anything else, or a backend disabled in the configuration: 404 ``model_not_found``.
"""

from __future__ import annotations

import re
from typing import List, Tuple

from ..backends import base
from ..config import Config
from . import errors
from .profiles import CHAT_SUFFIX, split_chat_model

_VENDOR_PREFIXES = (("claude-", "claude"), ("gpt-", "codex"), ("codex-", "codex"),
                    ("gemini-", "gemini"), ("qwen", "qwen"))
_OPENAI_REASONING_MODEL = re.compile(r"o[0-9]")           # o1, o3-mini, o4-mini, ...


def resolve_model(model: str, cfg: Config) -> Tuple[str, str]:
    """(backend name, model for the CLI: "" = the configured one) for a request's ``model``;
    a 404 ``model_not_found`` ApiError when no enabled backend serves it."""
    names = base.NAMES
    asked = model
    model = split_chat_model(model)[0]
    backend, cli_model = "", ""
    if model in names:
        backend = model
    elif "/" in model:
        prefix, _, rest = model.partition("/")
        if prefix in names and rest:
            backend, cli_model = prefix, rest
    else:
        lowered = model.lower()
        for prefix, name in _VENDOR_PREFIXES:
            if lowered.startswith(prefix):
                backend = name
        if _OPENAI_REASONING_MODEL.match(lowered):
            backend = "codex"
        cli_model = model
    if not backend:
        raise model_not_found(asked, "use a backend name (%s), backend/model-id "
                                     "(claude/claude-sonnet-4-5), <backend>-chat for the "
                                     "chat profile (claude-chat, codex-chat/gpt-5.5), or a "
                                     "model id starting with claude-, gpt-, o<digit>, codex-, "
                                     "gemini- or qwen" % ", ".join(names))
    if not cfg.backend_enabled(backend):
        raise model_not_found(asked, "its backend %r is disabled in the configuration "
                                     "(backends.%s.enabled: false)" % (backend, backend))
    return backend, cli_model


def model_not_found(model: str, hint: str) -> errors.ApiError:
    return errors.ApiError(404, "model_not_found", "model %r not found: %s"
                           % (model[:100], hint), field="model")


def listed_models(cfg: Config) -> List[Tuple[str, str]]:
    """(model id, backend) of every enabled backend, then ``backend-chat`` (its chat
    profile), followed by ``backend/model`` when ``backends.<name>.model`` is configured."""
    out: List[Tuple[str, str]] = []
    for name in base.NAMES:
        if not cfg.backend_enabled(name):
            continue
        out += [(name, name), (name + CHAT_SUFFIX, name)]
        configured = cfg.get("backends.%s.model" % name)
        if configured:
            out.append(("%s/%s" % (name, configured), name))
    return out


def vendor(backend: str) -> str:
    """Who makes the backend's models (OpenAI's ``owned_by``): anthropic, openai, google."""
    return base.get(backend).vendor
