"""A JSON Schema validator for the subset structured output uses (what pydantic, zod and
OpenAI's strict mode write), standard library only.

Keywords checked: ``type`` (a name or a list of names, ``null`` included), ``properties``,
``required``, ``additionalProperties`` (true, false or a schema), ``items`` (a schema, or a
list as in draft 4), ``prefixItems``, ``enum``, ``const``, ``anyOf`` / ``oneOf`` /
``allOf``, ``$ref`` to the same document (``#``, ``#/$defs/...``, ``#/definitions/...``, any
JSON pointer into it), ``minimum`` / ``maximum`` / ``exclusiveMinimum`` /
``exclusiveMaximum`` (numbers, or draft 4's booleans), ``minLength`` / ``maxLength`` (in code
points), ``pattern`` (searched, as JSON Schema says), ``minItems`` / ``maxItems``, and
OpenAPI's ``nullable: true``. ``format`` and every other keyword are ignored; a boolean schema
is ``true`` (anything) or ``false`` (nothing).

``check_schema(schema)`` refuses a schema that cannot be used (a bad type name, a ``$ref``
that does not resolve or leaves the document, a pattern that is not a regular expression or
can take exponential time to match: regexrisk.py) with
a ``SchemaError`` whose ``path`` names the keyword (``properties.age.type``).
``first_error(value, schema)`` is the first way ``value`` fails the schema, as a JSON path and
what was expected (``$.items[2].name: expected string, got 42``), or "" when it is valid.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Dict, List, Optional, Tuple
from urllib.parse import unquote

from . import regexrisk

TYPES = ("null", "boolean", "object", "array", "number", "integer", "string")
# Deeper than this, a schema is refused (check_schema) and a chain of $ref that never reaches
# a part of the value is taken for a loop ({"$ref": "#"} at the root).
MAX_DEPTH = 100
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SCHEMA_MAPS = ("properties", "$defs", "definitions")
_SCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_NUMBER_KEYWORDS = ("minimum", "maximum")
_COUNT_KEYWORDS = ("minLength", "maxLength", "minItems", "maxItems")


class SchemaError(ValueError):
    """A schema this validator cannot use: ``path`` names the keyword inside the schema
    (``properties.age.type``; "" for the whole schema), ``message`` says what is wrong."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__("%s: %s" % (path or "schema", message))
        self.path = path
        self.message = message


# -- checking a schema ---------------------------------------------------------------------


def check_schema(schema: Any) -> None:
    """Raise SchemaError unless ``schema`` is a schema this module can validate against."""
    _check_node(schema, schema, "", 0)


def _join(path: str, key: str) -> str:
    if _IDENTIFIER.match(key) or key.startswith("$"):
        return key if not path else path + "." + key
    return path + "[" + json.dumps(key) + "]"


def _check_node(node: Any, root: Any, path: str, depth: int) -> None:
    if isinstance(node, bool):
        return
    if not isinstance(node, dict):
        raise SchemaError(path, "a schema must be an object or a boolean, got %s" % _shown(node))
    if depth > MAX_DEPTH:
        raise SchemaError(path, "the schema nests deeper than %d levels" % MAX_DEPTH)
    _check_keywords(node, root, path)
    for key in _SCHEMA_MAPS:
        if key in node:
            members = node[key]
            if not isinstance(members, dict):
                raise SchemaError(_join(path, key), "expected an object of schemas")
            for name, sub in members.items():
                _check_node(sub, root, _join(_join(path, key), name), depth + 1)
    for key in _SCHEMA_LISTS:
        if key in node:
            subs = node[key]
            if not isinstance(subs, list) or (not subs and key != "prefixItems"):
                raise SchemaError(_join(path, key), "expected a non-empty array of schemas")
            for i, sub in enumerate(subs):
                _check_node(sub, root, "%s[%d]" % (_join(path, key), i), depth + 1)
    items = node.get("items")
    for i, sub in enumerate(items if isinstance(items, list) else []):
        _check_node(sub, root, "%s[%d]" % (_join(path, "items"), i), depth + 1)
    for key in ("additionalProperties", "items"):
        if key in node and not isinstance(node[key], list):
            _check_node(node[key], root, _join(path, key), depth + 1)


def _check_keywords(node: Dict[str, Any], root: Any, path: str) -> None:
    """The keywords of one schema object that are not sub-schemas."""
    if "type" in node:
        _check_type_keyword(node["type"], _join(path, "type"))
    required = node.get("required", [])
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        raise SchemaError(_join(path, "required"), "expected an array of property names")
    if "enum" in node and not isinstance(node["enum"], list):
        raise SchemaError(_join(path, "enum"), "expected an array of values")
    if "$ref" in node:
        _check_ref_chain(node, root, _join(path, "$ref"))
    if "pattern" in node:
        _compiled(node["pattern"], _join(path, "pattern"))
    for key in _NUMBER_KEYWORDS + ("exclusiveMinimum", "exclusiveMaximum"):
        if key in node and not _is_number(node[key]) and not (
                key.startswith("exclusive") and isinstance(node[key], bool)):
            raise SchemaError(_join(path, key), "expected a number, got %s" % _shown(node[key]))
    for key in _COUNT_KEYWORDS:
        value = node.get(key, 0)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise SchemaError(_join(path, key), "expected a non-negative integer, got %s"
                              % _shown(value))


def _check_ref_chain(node: Dict[str, Any], root: Any, path: str) -> None:
    """SchemaError unless following ``$ref`` from ``node`` ends at a schema without one
    ({"$ref": "#"} at the root would never reach a part of the value)."""
    seen = []
    while isinstance(node, dict) and "$ref" in node:
        if any(node is s for s in seen):
            raise SchemaError(path, "the reference %s loops back to itself"
                              % _shown(seen[0]["$ref"]))
        seen.append(node)
        node = _resolve(node["$ref"], root, path)


def _check_type_keyword(kind: Any, path: str) -> None:
    names = kind if isinstance(kind, list) else [kind]
    if not names:
        raise SchemaError(path, "expected a type name or a non-empty array of them")
    for name in names:
        if name not in TYPES:
            raise SchemaError(path, "unknown type %s (expected one of %s)"
                              % (_shown(name), ", ".join(TYPES)))


def _resolve(ref: Any, root: Any, path: str = "$ref") -> Any:
    """The schema a local ``$ref`` points at; SchemaError when it cannot be followed."""
    if not isinstance(ref, str) or not ref.startswith("#"):
        raise SchemaError(path, "only references inside the schema (#, #/$defs/...) are "
                                "supported, got %s" % _shown(ref))
    pointer = unquote(ref[1:])
    if pointer and not pointer.startswith("/"):
        raise SchemaError(path, "only JSON pointer references (#/$defs/Name) are supported, "
                                "got %s" % _shown(ref))
    node = root
    for token in pointer.split("/")[1:]:
        token = token.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
            node = node[int(token)]
        else:
            raise SchemaError(path, "%s does not resolve: no %s in the schema"
                              % (_shown(ref), _shown(token)))
    return node


def _compiled(pattern: Any, path: str) -> Any:
    if not isinstance(pattern, str):
        raise SchemaError(path, "expected a regular expression string, got %s"
                          % _shown(pattern))
    try:
        compiled = re.compile(pattern)
        risky = regexrisk.exponential(pattern)
    except re.error as exc:
        raise SchemaError(path, "not a regular expression: %s" % exc)
    if risky:
        # The client writes the schema and the server checks replies against it, with no
        # time limit (Python's re has none): (a+)+ on "aaaa...b" takes exponential time.
        raise SchemaError(path, "a repetition whose iterations can split the same text in "
                                "several ways (as in (a+)+, (a|aa)+ or (\\w+\\s?)*) is not "
                                "accepted: checking a reply against it can take exponential "
                                "time; separate the iterations by a character the repeated "
                                "part cannot match, as in [a-z]+(-[a-z]+)*; got %s"
                                % _shown(pattern))
    return compiled


# -- validating a value --------------------------------------------------------------------


def first_error(value: Any, schema: Any) -> str:
    """The first way ``value`` fails ``schema`` (``$.a[0].b: expected ..., got ...``), or
    "" when it satisfies it. SchemaError when the schema cannot be used."""
    try:
        return _Validator(schema).check(value, schema, "$", 0) or ""
    except RecursionError:
        return "$: the value nests too deeply to be checked"


def _child(path: str, key: str) -> str:
    if _IDENTIFIER.match(key):
        return path + "." + key
    return path + "[" + json.dumps(key, ensure_ascii=False) + "]"


class _Validator:
    """One validation against one root schema (the document local $refs point into)."""

    def __init__(self, root: Any) -> None:
        self.root = root

    def check(self, value: Any, schema: Any, path: str, hops: int) -> Optional[str]:
        """The first error of ``value`` at ``path`` (None when valid). ``hops`` counts the
        $ref and combinator steps taken since the last step into a part of the value."""
        if schema is True or schema == {}:
            return None
        if schema is False:
            return "%s: no value is allowed here (the schema is false)" % path
        if not isinstance(schema, dict):
            raise SchemaError("", "a schema must be an object or a boolean, got %s"
                              % _shown(schema))
        if hops > MAX_DEPTH:
            raise SchemaError("$ref", "the references loop without reaching a part of the "
                                      "value")
        for step in (self._ref, self._type, self._enum, self._const, self._number,
                     self._string, self._array, self._object, self._all_of, self._any_of,
                     self._one_of):
            problem = step(value, schema, path, hops)
            if problem:
                return problem
        return None

    def _ref(self, value: Any, schema: Dict[str, Any], path: str, hops: int) -> Optional[str]:
        if "$ref" not in schema:
            return None
        return self.check(value, _resolve(schema["$ref"], self.root), path, hops + 1)

    def _type(self, value: Any, schema: Dict[str, Any], path: str, hops: int) -> Optional[str]:
        if "type" not in schema:
            return None
        names = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if schema.get("nullable") is True:
            names = list(names) + ["null"]
        if any(is_type(value, name) for name in names):
            return None
        return "%s: expected %s, got %s" % (path, " or ".join(names), _shown(value))

    def _enum(self, value: Any, schema: Dict[str, Any], path: str, hops: int) -> Optional[str]:
        if "enum" not in schema or any(_equal(value, v) for v in schema["enum"]):
            return None
        return "%s: expected one of %s, got %s" % (
            path, ", ".join(_shown(v) for v in schema["enum"][:10]), _shown(value))

    def _const(self, value: Any, schema: Dict[str, Any], path: str, hops: int
               ) -> Optional[str]:
        if "const" not in schema or _equal(value, schema["const"]):
            return None
        return "%s: expected %s, got %s" % (path, _shown(schema["const"]), _shown(value))

    def _number(self, value: Any, schema: Dict[str, Any], path: str, hops: int
                ) -> Optional[str]:
        if not _is_number(value):
            return None
        for bound, above in _bounds(schema):
            limit, strict = bound
            if above and (value < limit or (strict and value == limit)):
                return "%s: expected a number %s %s, got %s" % (
                    path, ">" if strict else ">=", _shown(limit), _shown(value))
            if not above and (value > limit or (strict and value == limit)):
                return "%s: expected a number %s %s, got %s" % (
                    path, "<" if strict else "<=", _shown(limit), _shown(value))
        return None

    def _string(self, value: Any, schema: Dict[str, Any], path: str, hops: int
                ) -> Optional[str]:
        if not isinstance(value, str):
            return None
        if len(value) < schema.get("minLength", 0):
            return "%s: expected a string of at least %d characters, got %s" % (
                path, schema["minLength"], _shown(value))
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            return "%s: expected a string of at most %d characters, got %s" % (
                path, schema["maxLength"], _shown(value))
        if "pattern" in schema and not _compiled(schema["pattern"], "pattern").search(value):
            return "%s: expected a string matching %s, got %s" % (
                path, _shown(schema["pattern"]), _shown(value))
        return None

    def _array(self, value: Any, schema: Dict[str, Any], path: str, hops: int
               ) -> Optional[str]:
        if not isinstance(value, list):
            return None
        if len(value) < schema.get("minItems", 0):
            return "%s: expected at least %d items, got %d" % (path, schema["minItems"],
                                                                len(value))
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            return "%s: expected at most %d items, got %d" % (path, schema["maxItems"],
                                                               len(value))
        items = schema.get("items", True)
        prefix = schema.get("prefixItems", items if isinstance(items, list) else [])
        rest = schema.get("additionalItems", True) if isinstance(items, list) else items
        for i, item in enumerate(value):
            sub = prefix[i] if i < len(prefix) else rest
            problem = self.check(item, sub, "%s[%d]" % (path, i), 0)
            if problem:
                return problem
        return None

    def _object(self, value: Any, schema: Dict[str, Any], path: str, hops: int
                ) -> Optional[str]:
        if not isinstance(value, dict):
            return None
        for name in schema.get("required", []):
            if name not in value:
                return "%s: missing required property %s" % (path, _shown(name))
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for name, item in value.items():
            if name in properties:
                problem = self.check(item, properties[name], _child(path, name), 0)
            elif extra is False:
                problem = "%s: unexpected property %s (additionalProperties is false)" % (
                    path, _shown(name))
            else:
                problem = self.check(item, extra, _child(path, name), 0)
            if problem:
                return problem
        return None

    def _all_of(self, value: Any, schema: Dict[str, Any], path: str, hops: int
                ) -> Optional[str]:
        for sub in schema.get("allOf", []):
            problem = self.check(value, sub, path, hops + 1)
            if problem:
                return problem
        return None

    def _any_of(self, value: Any, schema: Dict[str, Any], path: str, hops: int
                ) -> Optional[str]:
        if "anyOf" not in schema:
            return None
        problems = []
        for sub in schema["anyOf"]:
            problem = self.check(value, sub, path, hops + 1)
            if not problem:
                return None
            problems.append(problem)
        return _closest("anyOf", path, problems)

    def _one_of(self, value: Any, schema: Dict[str, Any], path: str, hops: int
                ) -> Optional[str]:
        if "oneOf" not in schema:
            return None
        problems = [self.check(value, sub, path, hops + 1) for sub in schema["oneOf"]]
        matched = [i for i, p in enumerate(problems) if not p]
        if len(matched) == 1:
            return None
        if matched:
            return "%s: matches %d of the oneOf alternatives (%s), expected exactly one" % (
                path, len(matched), ", ".join(str(i) for i in matched))
        return _closest("oneOf", path, [p for p in problems if p])


def _closest(keyword: str, path: str, problems: List[str]) -> str:
    """What to say when no alternative fits: the error of the alternative that got deepest
    into the value (``anyOf: [Model, null]`` then names the bad field of Model), else
    every alternative's complaint at ``path``."""
    deepest = max(problems, key=lambda p: len(p.partition(": ")[0]))
    if len(deepest.partition(": ")[0]) > len(path):
        return deepest
    reasons = "; ".join(p.partition(": ")[2] for p in problems[:4])
    return "%s: matches none of the %s alternatives (%s)" % (path, keyword, reasons)


def _bounds(schema: Dict[str, Any]) -> List[Tuple[Tuple[Any, bool], bool]]:
    """((limit, exclusive), is_lower_bound) for each numeric bound, both drafts' spellings."""
    out = []
    for key, exclusive_key, lower in (("minimum", "exclusiveMinimum", True),
                                      ("maximum", "exclusiveMaximum", False)):
        flag = schema.get(exclusive_key)
        if key in schema:
            out.append(((schema[key], flag is True), lower))
        if _is_number(flag):
            out.append(((flag, True), lower))
    return out


def is_type(value: Any, name: str) -> bool:
    """Whether a decoded JSON value has the JSON Schema type ``name`` (3.0 is an integer;
    true is not a number)."""
    if name == "null":
        return value is None
    if name == "boolean":
        return isinstance(value, bool)
    if name == "object":
        return isinstance(value, dict)
    if name == "array":
        return isinstance(value, list)
    if name == "string":
        return isinstance(value, str)
    if name == "integer":
        return _is_number(value) and (isinstance(value, int) or float(value).is_integer())
    return name == "number" and _is_number(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and (
        isinstance(value, int) or math.isfinite(value))


def _equal(a: Any, b: Any) -> bool:
    """JSON equality: 1 == 1.0, but true is not 1 and an array is not an object."""
    if _is_number(a) and _is_number(b):
        return a == b
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    return bool(a == b)


def _shown(value: Any) -> str:
    """A value as JSON, cut to 40 characters so an error never echoes a whole reply."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
