"""Writing the YAML subset ``miniyaml`` reads: a value as one line of YAML, and a
line-preserving edit of a config file (``clinvk config set``) that changes one key and keeps
every other line, comment and blank line as it was.
"""

from __future__ import annotations

import json
import math
from typing import Any, List, Tuple

from .miniyaml import Parser, Span, YAMLError, loads, resolve_plain


def dumps_inline(value: Any) -> str:
    """Render a scalar, or a list of them, as one line of YAML that reads back equal.

    Strings stay plain when that is unambiguous and are double-quoted otherwise.
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return ".nan"
        if math.isinf(value):
            return ".inf" if value > 0 else "-.inf"
        return repr(value)
    if isinstance(value, str):
        return value if _plain_is_safe(value) else json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(dumps_inline(item) for item in value) + "]"
    if isinstance(value, dict) and not value:
        return "{}"
    raise ValueError("cannot write %s as one line of YAML" % type(value).__name__)


def _plain_is_safe(text: str) -> bool:
    return (text != "" and text == text.strip() and text.isprintable()
            and resolve_plain(text) == text and text[0] not in "-?:,[]{}#&*!|>'\"%@`"
            and not any(c in text for c in ",[]{}") and ": " not in text
            and " #" not in text and not text.endswith(":"))


def set_key(text: str, dotted_key: str, value: Any, filename: str = "<string>") -> str:
    """Return ``text`` with ``dotted_key`` (``server.port``) set to ``value``.

    Every other line, comment and blank line is kept as it was. An existing inline value is
    replaced in place (its trailing comment kept); an existing nested block value is replaced
    by the inline form and its lines (comments inside it included) removed. A missing key is
    added, with any missing parent mappings, after the last line of its closest existing
    parent. Raises ``YAMLError`` if ``text`` does not parse or a parent is not a mapping.
    """
    parts = tuple(dotted_key.split("."))
    if not all(parts):
        raise ValueError("empty segment in key %r" % dotted_key)
    rendered = dumps_inline(value)
    bom = "\ufeff" if text.startswith("\ufeff") else ""
    text = text[len(bom):]
    parser = Parser(text, filename)
    data = parser.parse()
    if data is not None and not isinstance(data, dict):
        raise YAMLError("the document is not a mapping, so %s cannot be set in it" % dotted_key,
                        parser.spans[()].line, filename)
    eol = "\r" if "\r\n" in text else ""
    lines = text.split("\n")

    known = len(parts)
    while known and parts[:known] not in parser.spans:
        known -= 1
    if known == len(parts):
        _replace_value(lines, parser.spans[parts], rendered)
    else:
        if known == 0 and not data:
            if data == {}:                # the whole document was "{}"
                del lines[parser.spans[()].line - 1]
            at = len(lines) - 1 if lines[-1] == "" else len(lines)
            indent = 0
        else:
            at, indent = _make_room(lines, parser.spans[parts[:known]], parts[:known], filename)
        lines[at:at] = _nested_lines(parts[known:], rendered, indent, eol)
    result = bom + "\n".join(lines)
    if not result.endswith("\n"):
        result += eol + "\n"
    _check_written(result, parts, value, filename)
    return result


def _replace_value(lines: List[str], span: Span, rendered: str) -> None:
    index = span.line - 1
    line = lines[index]
    if span.value_start is not None:
        lines[index] = line[:span.value_start] + rendered + line[span.value_end:]
        return
    tail = line[span.colon:]                    # a comment, or the "\r" of a CRLF line
    lines[index] = line[:span.colon] + " " + rendered + (
        tail if tail.strip() else tail.lstrip(" \t"))
    del lines[span.line:span.last_line]


def _make_room(lines: List[str], span: Span, path: Tuple[str, ...],
               filename: str) -> Tuple[int, int]:
    """Where (list index, indent) new children of the mapping at ``path`` go."""
    if isinstance(span.value, dict) and span.value:
        return span.last_line, span.child_indent
    if span.value is None or span.value == {}:
        if span.value_start is not None:      # "key: ~" or "key: {}" becomes "key:"
            index = span.line - 1
            lines[index] = lines[index][:span.colon] + lines[index][span.value_end:]
        return span.line, span.indent + 2
    raise YAMLError("%s holds %s, not a mapping, so keys cannot be added under it"
                    % (".".join(path), _kind_name(span.value)), span.line, filename)


def _nested_lines(keys: Tuple[str, ...], rendered: str, indent: int, eol: str) -> List[str]:
    out = []
    for depth, key in enumerate(keys):
        pad = " " * (indent + 2 * depth)
        last = depth == len(keys) - 1
        out.append(pad + dumps_inline(key) + (": " + rendered if last else ":") + eol)
    return out


def _check_written(text: str, parts: Tuple[str, ...], value: Any, filename: str) -> None:
    """Guard against an edit that would not read back as intended (a bug, never user error)."""
    node = loads(text, filename)
    for part in parts:
        node = node[part]
    if node != value and not (isinstance(value, tuple) and node == list(value)):
        raise YAMLError("internal error: %s did not read back as written" % ".".join(parts),
                        0, filename)


def _kind_name(value: Any) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return "the value %s" % dumps_inline(value)
