"""JSON text in and out. In: text from outside the process (an HTTP body, an MCP line), parsed
so that every way it can fail is one exception, and checked for strings that are not Unicode
text. Out: the two ways clinvk writes JSON (compact lines, 2-space-indented files).

A leaf: the standard library only, shared by every module that reads or writes JSON.
"""

from __future__ import annotations

import json
from typing import Any, List, Optional, Tuple, Union


def loads(text: Union[str, bytes]) -> Any:
    """``json.loads(text)``, raising ValueError for anything that is not a JSON document:
    bad syntax, bytes in no JSON encoding, numbers too long to convert, and arrays or objects
    nested deeper than the parser can recurse (RFC 8259 §9 lets a parser limit nesting; the
    C parser raises RecursionError there, e.g. for a line of 100,000 ``[``)."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("arrays and objects are nested too deeply") from None


def dumps_compact(value: Any) -> str:
    """``value`` as compact JSON (no spaces, non-ASCII kept as it is): one line, since strings
    escape their newlines. For wire bodies, stream lines and the session index."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def dumps_pretty(value: Any) -> str:
    """``value`` as JSON indented by 2 spaces (non-ASCII kept) ending with a newline: the
    files and the terminal output a person reads."""
    return json.dumps(value, indent=2, ensure_ascii=False) + "\n"


def lone_surrogate_path(value: Any, root: str = "") -> Optional[str]:
    """Where in ``value`` (parsed JSON) a string or object key holds a lone surrogate such as
    ``"\\ud800"``: valid JSON syntax, but not Unicode text (RFC 8259 §8.2), so it cannot be
    encoded as UTF-8 for a file, a pipe or a reply. Returns a path like
    ``params.arguments.prompt`` or ``tasks[2].prompt`` (``root`` names the top), None when
    every string is text. Iterative, so any depth the parser accepted is safe."""
    stack: List[Tuple[str, Any]] = [(root, value)]
    while stack:
        path, node = stack.pop()
        if isinstance(node, str):
            if not _is_text(node):
                return path or "the document"
        elif isinstance(node, dict):
            for key, item in node.items():
                if not _is_text(key):
                    return "a key of %s" % path if path else "a key"
                stack.append(("%s.%s" % (path, key) if path else key, item))
        elif isinstance(node, list):
            stack.extend(("%s[%d]" % (path, i), item) for i, item in enumerate(node))
    return None


def _is_text(s: str) -> bool:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
