"""The YAML subset clinvk's config file uses, and its strict reader (``yamledit`` writes it).

Read: block mappings, block lists (items may be scalars, flow lists, mappings or lists),
one-line flow lists ``[a, "b", 3]``, the empty flow mapping ``{}``, plain, 'single-quoted'
and "double-quoted" scalars, the YAML 1.2 core schema for plain scalars (null ``~`` and empty,
true/false, decimal/0o/0x integers, floats, .inf/.nan), full-line and trailing comments, and
one optional leading ``---``. Mapping keys are always strings.

Everything else is a ``YAMLError`` naming the file and line rather than a guess: anchors,
aliases, tags, block scalars (``|`` ``>``), multi-document streams, directives, flow mappings
with content, scalars spanning lines, tabs in indentation, duplicate keys, bad indentation.
A config file therefore never means something its author did not see.

The parser also records where each mapping entry sits in the text (``Parser.spans``), so that
``yamledit`` can change one value and keep every other line as it was.
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, Optional, Tuple


class YAMLError(ValueError):
    """Text outside the supported subset, or malformed; ``line`` is 1-based (0 = unknown)."""

    def __init__(self, message: str, line: int = 0, filename: str = "<string>") -> None:
        self.message = message
        self.line = line
        self.filename = filename
        super().__init__(str(self))

    def __str__(self) -> str:
        if self.line:
            return "%s line %d: %s" % (self.filename, self.line, self.message)
        return "%s: %s" % (self.filename, self.message)


def loads(text: str, filename: str = "<string>") -> Any:
    """Parse ``text``; an empty document (blank or only comments) is ``None``."""
    return Parser(text, filename).parse()


def loads_with_lines(text: str, filename: str = "<string>") -> Tuple[Any, Dict[str, int]]:
    """Parse ``text`` and also return the line of every mapping key, by dotted path.

    Keys inside list items use the item's index as a path segment (``a.0.name``); the key
    ``""`` holds the line where the document's content starts (absent when empty).
    """
    parser = Parser(text, filename)
    data = parser.parse()
    lines = {".".join(str(p) for p in path): span.line for path, span in parser.spans.items()}
    return data, lines


# --- scalars ------------------------------------------------------------------------------

_INT = re.compile(r"[-+]?[0-9]+")
_OCT = re.compile(r"0o[0-7]+")
_HEX = re.compile(r"0x[0-9a-fA-F]+")
_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")
_INF = re.compile(r"[-+]?\.(inf|Inf|INF)")
_NAN = re.compile(r"\.(nan|NaN|NAN)")
_NULLS = ("", "~", "null", "Null", "NULL")
_TRUES = ("true", "True", "TRUE")
_FALSES = ("false", "False", "FALSE")

_ESCAPES = {"0": "\0", "a": "\a", "b": "\b", "t": "\t", "\t": "\t", "n": "\n", "v": "\v",
            "f": "\f", "r": "\r", "e": "\x1b", " ": " ", '"': '"', "/": "/", "\\": "\\",
            "N": "\x85", "_": "\xa0", "L": "\u2028", "P": "\u2029"}
_HEX_ESCAPES = {"x": 2, "u": 4, "U": 8}


def resolve_plain(raw: str) -> Any:
    """The YAML 1.2 core-schema value of a plain scalar (so ``yes`` and ``on`` stay strings)."""
    if raw in _NULLS:
        return None
    if raw in _TRUES:
        return True
    if raw in _FALSES:
        return False
    if _INT.fullmatch(raw):
        return int(raw, 10)
    if _OCT.fullmatch(raw):
        return int(raw[2:], 8)
    if _HEX.fullmatch(raw):
        return int(raw[2:], 16)
    if _FLOAT.fullmatch(raw):
        return float(raw)
    if _INF.fullmatch(raw):
        return float("-inf") if raw.startswith("-") else float("inf")
    if _NAN.fullmatch(raw):
        return float("nan")
    return raw


def _is_item(text: str) -> bool:
    return text == "-" or text.startswith("- ") or text.startswith("-\t")


def _find_colon(plain: str) -> int:
    """Index of the first ':' that ends a key (followed by whitespace or the line end)."""
    for index, char in enumerate(plain):
        if char == ":" and (index + 1 == len(plain) or plain[index + 1] in " \t"):
            return index
    return -1


def _comment_start(text: str, start: int) -> int:
    """Index of a '#' that starts a comment (preceded by whitespace) at or after ``start``."""
    for index in range(max(start, 1), len(text)):
        if text[index] == "#" and text[index - 1] in " \t":
            return index
    return len(text)


def _skip_blanks(text: str, pos: int) -> int:
    """Index of the first character at or after ``pos`` that is not a space or a tab."""
    while pos < len(text) and text[pos] in " \t":
        pos += 1
    return pos


# --- structure ----------------------------------------------------------------------------

class _Line:
    __slots__ = ("number", "indent", "text")

    def __init__(self, number: int, indent: int, text: str) -> None:
        self.number = number      # 1-based physical line
        self.indent = indent      # column where ``text`` starts
        self.text = text          # content, trailing whitespace removed, comments kept


class Span:
    """Where one mapping entry sits in the text (columns are physical, lines 1-based)."""

    __slots__ = ("line", "indent", "colon", "value_start", "value_end", "last_line",
                 "child_indent", "value")

    def __init__(self, line: int, indent: int, colon: int) -> None:
        self.line = line
        self.indent = indent
        self.colon = colon                            # column just after the ':'
        self.value_start = None  # type: Optional[int]  # inline value's columns, if any
        self.value_end = None  # type: Optional[int]
        self.last_line = line                         # last line of a nested block value
        self.child_indent = 0                         # indent of a nested mapping's keys
        self.value = None  # type: Any


_NOTHING = object()   # a key or list item whose value is not on its own line


class Parser:
    """One document: ``parse()`` returns its value (None when empty) and fills ``spans``,
    the Span of every mapping entry by its path (a tuple of keys and list indexes; ``()`` is
    the document's content). YAMLError for anything outside the subset."""

    def __init__(self, text: str, filename: str) -> None:
        self.filename = filename
        self.spans = {}  # type: Dict[Tuple[Any, ...], Span]
        self.lines = self._split(text[1:] if text.startswith("\ufeff") else text)

    def error(self, line: _Line, message: str) -> YAMLError:
        return YAMLError(message, line.number, self.filename)

    def _split(self, text: str) -> List[_Line]:
        lines = []  # type: List[_Line]
        for number, raw in enumerate(text.split("\n"), 1):
            body = raw.lstrip(" \t")
            content = body.rstrip(" \t\r")
            if not content or content.startswith("#"):
                continue
            indent = len(raw) - len(body)
            line = _Line(number, indent, content)
            if "\t" in raw[:indent]:
                raise self.error(line, "tabs are not allowed in indentation; indent with spaces")
            if indent == 0 and content[:3] in ("---", "...") and (
                    len(content) == 3 or content[3] in " \t"):
                rest = content[3:].strip()
                if content.startswith("---") and not lines and (not rest or rest[0] == "#"):
                    continue      # a lone leading "---" just opens the one document
                if content.startswith("..."):
                    raise self.error(line, "document end markers (...) are not supported")
                if not lines:
                    raise self.error(line, "content on the '---' line is not supported")
                raise self.error(line, "multiple documents (---) are not supported; "
                                       "keep one document per file")
            if indent == 0 and content.startswith("%"):
                raise self.error(line, "directives (%s) are not supported" % content.split()[0])
            lines.append(line)
        return lines

    def parse(self) -> Any:
        if not self.lines:
            return None
        first = self.lines[0]
        value, index = self._block(0, first.indent, ())
        if index < len(self.lines):
            line = self.lines[index]
            raise self.error(line, "bad indentation: expected %d spaces, found %d"
                             % (first.indent, line.indent))
        root = Span(first.number, first.indent, first.indent)
        root.child_indent = first.indent
        root.last_line = self.lines[-1].number
        root.value = value
        self.spans[()] = root
        return value

    def _block(self, index: int, indent: int, path: Tuple[Any, ...]) -> Tuple[Any, int]:
        """Parse the node starting at ``lines[index]``, whose indent is ``indent``."""
        line = self.lines[index]
        if _is_item(line.text):
            return self._list(index, indent, path, compact=False)
        if self._key(line) is not None:
            return self._mapping(index, indent, path)
        value, _, _ = self._value(line, 0)
        index += 1
        if index < len(self.lines) and self.lines[index].indent >= indent:
            raise self.error(self.lines[index], "a value must fit on one line; for several "
                             "lines write a double-quoted string with \\n")
        return value, index

    def _mapping(self, index: int, indent: int, path: Tuple[Any, ...]) -> Tuple[Any, int]:
        result = {}  # type: Dict[str, Any]
        while index < len(self.lines):
            line = self.lines[index]
            if line.indent < indent:
                break
            if line.indent > indent:
                raise self.error(line, "bad indentation: expected %d spaces, found %d"
                                 % (indent, line.indent))
            found = self._key(line)
            if found is None:
                if _is_item(line.text):
                    raise self.error(line, "a list item cannot stand among the keys of a "
                                           "mapping; indent it under its key")
                raise self.error(line, "expected 'key: value'")
            key, colon = found
            child = path + (key,)
            if key in result:
                raise self.error(line, "duplicate key '%s' (first set on line %d)"
                                 % (key, self.spans[child].line))
            span = Span(line.number, line.indent, line.indent + colon)
            self.spans[child] = span
            value, start, end = self._value(line, colon)
            index += 1
            if value is _NOTHING:
                following = self.lines[index] if index < len(self.lines) else None
                if following is not None and following.indent > indent:
                    span.child_indent = following.indent
                    value, index = self._block(index, following.indent, child)
                elif following is not None and following.indent == indent and _is_item(
                        following.text):
                    value, index = self._list(index, indent, child, compact=True)
                else:
                    value = None
            else:
                span.value_start = line.indent + start
                span.value_end = line.indent + end
            span.last_line = self.lines[index - 1].number
            span.value = value
            result[key] = value
        return result, index

    def _list(self, index: int, indent: int, path: Tuple[Any, ...],
              compact: bool) -> Tuple[Any, int]:
        """Parse list items at ``indent``; ``compact`` = the list sits at its key's indent."""
        result = []  # type: List[Any]
        while index < len(self.lines):
            line = self.lines[index]
            if line.indent < indent:
                break
            if line.indent > indent:
                raise self.error(line, "bad indentation: expected %d spaces, found %d"
                                 % (indent, line.indent))
            if not _is_item(line.text):
                if compact:
                    break
                raise self.error(line, "expected a list item ('- value') at this indentation")
            child = path + (len(result),)
            rest = line.text[1:]
            item = rest.lstrip(" ")
            if item.startswith("\t"):
                raise self.error(line, "tabs are not allowed in indentation; indent with spaces")
            if not item or item.startswith("#"):
                index += 1
                following = self.lines[index] if index < len(self.lines) else None
                if following is not None and following.indent > indent:
                    value, index = self._block(index, following.indent, child)
                else:
                    value = None
            else:
                column = line.indent + 1 + len(rest) - len(item)
                inner = _Line(line.number, column, item)
                if _is_item(item) or self._key(inner) is not None:
                    # "- key: v" opens a mapping whose later keys align with "key".
                    self.lines[index] = inner
                    value, index = self._block(index, column, child)
                else:
                    value, _, _ = self._value(inner, 0)
                    index += 1
            result.append(value)
        return result, index

    def _key(self, line: _Line) -> Optional[Tuple[str, int]]:
        """(key, index just after its ':') if the line is a mapping entry, else None."""
        text = line.text
        if text[0] in "\"'":
            key, end = self._quoted(line, 0)
            end = _skip_blanks(text, end)
            if end < len(text) and text[end] == ":" and (
                    end + 1 == len(text) or text[end + 1] in " \t"):
                return key, end + 1
            return None
        if text[0] == "?" and (len(text) == 1 or text[1] in " \t"):
            raise self.error(line, "complex keys ('? ') are not supported")
        if text[0] in "[{" or _is_item(text):
            return None
        plain = text[:_comment_start(text, 0)]
        colon = _find_colon(plain)
        if colon < 0:
            return None
        key = plain[:colon].rstrip()
        if not key:
            raise self.error(line, "a key is missing before ':'")
        self._check_plain_start(line, key)
        return key, colon + 1

    def _value(self, line: _Line, pos: int) -> Tuple[Any, int, int]:
        """The value starting at or after ``pos`` up to the line end: (value, start, end).

        Returns ``_NOTHING`` when only whitespace or a comment follows.
        """
        text = line.text
        pos = _skip_blanks(text, pos)
        if pos == len(text) or text[pos] == "#":
            return _NOTHING, pos, pos
        delimited = self._delimited(line, pos)
        if delimited is None:
            self._check_plain_start(line, text[pos:])
            raw = text[pos:_comment_start(text, pos)].rstrip(" \t")
            if _find_colon(raw) >= 0:
                raise self.error(line, "': ' cannot appear in an unquoted value; quote the value")
            return resolve_plain(raw), pos, pos + len(raw)
        value, end = delimited
        rest = text[end:]
        if rest.strip() and not (rest[0] in " \t" and rest.strip().startswith("#")):
            raise self.error(line, "unexpected text after the value: %r" % rest.strip())
        return value, pos, end

    def _delimited(self, line: _Line, pos: int) -> Optional[Tuple[Any, int]]:
        """The quoted scalar, flow list or flow mapping starting at ``pos``: (value, index
        after its closing character); None when a plain scalar starts there."""
        first = line.text[pos]
        if first in "\"'":
            return self._quoted(line, pos)
        if first == "[":
            return self._flow_list(line, pos)
        if first == "{":
            return self._flow_mapping(line, pos)
        return None

    def _check_plain_start(self, line: _Line, text: str) -> None:
        first = text[0]
        second = text[1:2]
        if first == "&":
            raise self.error(line, "anchors (&name) are not supported")
        if first == "*":
            raise self.error(line, "aliases (*name) are not supported")
        if first == "!":
            raise self.error(line, "tags (!tag) are not supported")
        if first in "|>":
            raise self.error(line, "block scalars (| and >) are not supported; write the text "
                                   "as a double-quoted string with \\n for line breaks")
        if first == "-" and second in ("", " ", "\t"):
            raise self.error(line, "a list cannot start on the line of its key; put the "
                                   "'- item' lines below the key, or write [a, b]")
        if first == "?" and second in ("", " ", "\t"):
            raise self.error(line, "complex keys ('? ') are not supported")
        if first in "%@`,]}#":
            raise self.error(line, "'%s' cannot start an unquoted value; quote the value" % first)

    def _quoted(self, line: _Line, pos: int) -> Tuple[str, int]:
        """The quoted scalar starting at ``pos``: (value, index after the closing quote)."""
        text = line.text
        unterminated = self.error(line, "unterminated quoted string (a quoted string must "
                                        "end on the line where it starts)")
        if text[pos] == "'":
            parts = []
            start = pos + 1
            while True:
                close = text.find("'", start)
                if close < 0:
                    raise unterminated
                parts.append(text[start:close])
                if text[close + 1:close + 2] != "'":
                    return "".join(parts), close + 1
                parts.append("'")
                start = close + 2
        parts = []
        index = pos + 1
        while index < len(text):
            char = text[index]
            if char == '"':
                return "".join(parts), index + 1
            if char != "\\":
                parts.append(char)
                index += 1
                continue
            escape = text[index + 1:index + 2]
            if escape in _ESCAPES:
                parts.append(_ESCAPES[escape])
                index += 2
            elif escape and escape in _HEX_ESCAPES:
                width = _HEX_ESCAPES[escape]
                digits = text[index + 2:index + 2 + width]
                if len(digits) != width or not all(c in "0123456789abcdefABCDEF" for c in digits):
                    raise self.error(line, "\\%s needs %d hex digits" % (escape, width))
                parts.append(chr(int(digits, 16)))
                index += 2 + width
            elif not escape:
                raise unterminated
            else:
                raise self.error(line, "unknown escape '\\%s' in a double-quoted string" % escape)
        raise unterminated

    def _flow_list(self, line: _Line, pos: int) -> Tuple[List[Any], int]:
        """The one-line flow list starting at ``pos``: (items, index after ']')."""
        text = line.text
        items = []  # type: List[Any]
        index = pos + 1
        while True:
            index = _skip_blanks(text, index)
            if index == len(text) or (text[index] == "#" and text[index - 1] in " \t"):
                raise self.error(line, "'[' is not closed on the same line; a flow list must "
                                       "fit on one line (or use '- item' lines)")
            first = text[index]
            if first == "]":
                return items, index + 1
            if first == ",":
                raise self.error(line, "empty item in a flow list")
            delimited = self._delimited(line, index)
            if delimited is not None:
                value, index = delimited
            else:
                self._check_plain_start(line, text[index:])
                end = index
                while end < len(text) and text[end] not in ",[]{}" and not (
                        text[end] == "#" and text[end - 1] in " \t"):
                    end += 1
                raw = text[index:end].rstrip(" \t")
                if _find_colon(raw) >= 0:
                    raise self.error(line, "mappings inside a flow list are not supported")
                value, index = resolve_plain(raw), index + len(raw)
            items.append(value)
            index = _skip_blanks(text, index)
            if index < len(text) and text[index] == ",":
                index += 1
            elif index < len(text) and text[index] == "]":
                return items, index + 1
            elif index < len(text) and text[index] in "[{}":
                raise self.error(line, "unexpected '%s' in a flow list; quote the item"
                                 % text[index])
            else:
                raise self.error(line, "expected ',' or ']' in the flow list")

    def _flow_mapping(self, line: _Line, pos: int) -> Tuple[Dict[str, Any], int]:
        text = line.text
        index = _skip_blanks(text, pos + 1)
        if text[index:index + 1] == "}":
            return {}, index + 1
        raise self.error(line, "flow mappings ({key: value}) are not supported; write the keys "
                               "as an indented block below")
