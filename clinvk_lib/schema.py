"""The shape vocabulary and its validator: one table describes a shape once, for every front end.

A shape is built from a small vocabulary (``String``, ``Integer``, ``Number``, ``Boolean``,
``Array``, ``Obj`` of ``Field``s, ``Map``, ``OneOf``, ``Any``). The same shape drives validation
(``validate``), the OpenAPI document (``to_json_schema``, used by ``server/openapi.py``), the MCP
tools' input schemas and the command line's task and chain files, so a shape is never described
twice and a bad value gets the same message whichever front end received it. The shapes
themselves live in ``shapes.py`` (those every front end takes) and ``server/api_shapes.py``
(those only the HTTP API speaks).

Validation rules, the same for every shape: an optional field sent as ``null`` counts as absent
(unless the field is ``nullable``); absent fields get their default; booleans are not numbers;
the first problem found is reported with the field's path (``tasks[1].backend``) and what was
expected. Unknown fields are dropped, not fatal, except with ``strict``: a file a person writes
by hand is read strictly, so a misspelt field (``promt``) is refused instead of silently doing
nothing, while API clients may send fields of newer or other versions. Fields an ``Obj``
``refuses`` (known names that would otherwise be silently dropped) are refused either way.
"""

from __future__ import annotations

import copy
import json
import math
import re
from typing import Any as AnyValue
from typing import Callable, Dict, Mapping, Optional, Sequence, Tuple, Union

_MISSING = object()
# A Field built with ``default=NO_DEFAULT`` is absent from the cleaned value when not sent.
NO_DEFAULT = _MISSING
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class ValidationError(ValueError):
    """A value that does not fit its shape: ``path`` names the field (``tasks[1].backend``;
    ``""`` for the whole body or file), ``message`` says what was expected."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__("%s: %s" % (path or "request body", message))
        self.path = path
        self.message = message


def _describe(value: AnyValue) -> str:
    """A short rendering of a received value for error messages (long strings are cut so an
    error never echoes a whole prompt)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return repr(value if len(value) <= 40 else value[:37] + "...")
    if isinstance(value, list):
        return "an array" if value else "an empty array"
    if isinstance(value, dict):
        return "an object" if value else "an empty object"
    return type(value).__name__


def _child(path: str, name: str) -> str:
    if _IDENTIFIER.match(name):
        return name if not path else path + "." + name
    return path + "[" + json.dumps(name) + "]"


def _bounds_phrase(minimum: Optional[float], maximum: Optional[float]) -> str:
    if minimum is not None and maximum is not None:
        return " between %s and %s" % (minimum, maximum)
    if minimum is not None:
        return " >= %s" % (minimum,)
    if maximum is not None:
        return " <= %s" % (maximum,)
    return ""


class Node:
    """One JSON type. ``clean`` returns the validated value or raises ValidationError;
    ``strict`` (passed down to nested objects) refuses unknown object fields."""

    def matches_kind(self, value: AnyValue) -> bool:
        raise NotImplementedError

    def expected(self) -> str:
        raise NotImplementedError

    def clean(self, value: AnyValue, path: str, strict: bool = False) -> AnyValue:
        raise NotImplementedError

    def json_schema(self, refs: Optional[Dict[str, dict]]) -> dict:
        raise NotImplementedError

    def _fail(self, value: AnyValue, path: str) -> ValidationError:
        return ValidationError(path, "expected %s, got %s" % (self.expected(), _describe(value)))


class Any(Node):
    """Any JSON value, kept as sent."""

    def matches_kind(self, value: AnyValue) -> bool:
        return True

    def expected(self) -> str:
        return "any value"

    def clean(self, value: AnyValue, path: str, strict: bool = False) -> AnyValue:
        return value

    def json_schema(self, refs: Optional[Dict[str, dict]]) -> dict:
        return {}


class String(Node):
    def __init__(self, enum: Sequence[str] = (), min_length: int = 0) -> None:
        self.enum = tuple(enum)
        self.min_length = min_length

    def matches_kind(self, value: AnyValue) -> bool:
        return isinstance(value, str)

    def expected(self) -> str:
        if self.enum:
            return "one of " + ", ".join(self.enum)
        if self.min_length == 1:
            return "a non-empty string"
        if self.min_length:
            return "a string of at least %d characters" % self.min_length
        return "a string"

    def clean(self, value: AnyValue, path: str, strict: bool = False) -> AnyValue:
        if not isinstance(value, str) or len(value) < self.min_length:
            raise self._fail(value, path)
        if self.enum and value not in self.enum:
            raise self._fail(value, path)
        return value

    def json_schema(self, refs: Optional[Dict[str, dict]]) -> dict:
        schema: Dict[str, AnyValue] = {"type": "string"}
        if self.enum:
            schema["enum"] = list(self.enum)
        if self.min_length:
            schema["minLength"] = self.min_length
        return schema


class Number(Node):
    """A JSON number (integer or fraction; never a boolean, NaN or infinity)."""

    json_type = "number"
    noun = "a number"

    def __init__(self, minimum: Optional[float] = None, maximum: Optional[float] = None) -> None:
        self.minimum = minimum
        self.maximum = maximum

    def matches_kind(self, value: AnyValue) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool)

    def expected(self) -> str:
        return self.noun + _bounds_phrase(self.minimum, self.maximum)

    def _convert(self, value: AnyValue) -> AnyValue:
        if not self.matches_kind(value) or not math.isfinite(value):
            return _MISSING
        return value

    def clean(self, value: AnyValue, path: str, strict: bool = False) -> AnyValue:
        number = self._convert(value)
        if number is _MISSING:
            raise self._fail(value, path)
        if self.minimum is not None and number < self.minimum:
            raise self._fail(value, path)
        if self.maximum is not None and number > self.maximum:
            raise self._fail(value, path)
        return number

    def json_schema(self, refs: Optional[Dict[str, dict]]) -> dict:
        schema: Dict[str, AnyValue] = {"type": self.json_type}
        if self.minimum is not None:
            schema["minimum"] = self.minimum
        if self.maximum is not None:
            schema["maximum"] = self.maximum
        return schema


class Integer(Number):
    """A whole number; ``3.0`` is accepted as 3 (some JSON encoders write integers that way)."""

    json_type = "integer"
    noun = "an integer"

    def _convert(self, value: AnyValue) -> AnyValue:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            return int(value)
        return _MISSING


class Boolean(Node):
    def matches_kind(self, value: AnyValue) -> bool:
        return isinstance(value, bool)

    def expected(self) -> str:
        return "true or false"

    def clean(self, value: AnyValue, path: str, strict: bool = False) -> AnyValue:
        if not isinstance(value, bool):
            raise self._fail(value, path)
        return value

    def json_schema(self, refs: Optional[Dict[str, dict]]) -> dict:
        return {"type": "boolean"}


class Array(Node):
    def __init__(self, items: Node, min_items: int = 0) -> None:
        self.items = items
        self.min_items = min_items

    def matches_kind(self, value: AnyValue) -> bool:
        return isinstance(value, list)

    def expected(self) -> str:
        if self.min_items == 1:
            return "a non-empty array"
        if self.min_items:
            return "an array of at least %d items" % self.min_items
        return "an array"

    def clean(self, value: AnyValue, path: str, strict: bool = False) -> AnyValue:
        if not isinstance(value, list) or len(value) < self.min_items:
            raise self._fail(value, path)
        return [self.items.clean(item, "%s[%d]" % (path, i), strict)
                for i, item in enumerate(value)]

    def json_schema(self, refs: Optional[Dict[str, dict]]) -> dict:
        schema: Dict[str, AnyValue] = {"type": "array", "items": self.items.json_schema(refs)}
        if self.min_items:
            schema["minItems"] = self.min_items
        return schema


class Map(Node):
    """An object with free-form keys whose values all have one type (e.g. ``metadata``)."""

    def __init__(self, values: Node) -> None:
        self.values = values

    def matches_kind(self, value: AnyValue) -> bool:
        return isinstance(value, dict)

    def expected(self) -> str:
        return "an object"

    def clean(self, value: AnyValue, path: str, strict: bool = False) -> AnyValue:
        if not isinstance(value, dict):
            raise self._fail(value, path)
        return {k: self.values.clean(v, _child(path, k), strict) for k, v in value.items()}

    def json_schema(self, refs: Optional[Dict[str, dict]]) -> dict:
        return {"type": "object", "additionalProperties": self.values.json_schema(refs)}


class OneOf(Node):
    """One of several alternatives that differ in JSON kind (string, array, object, ...).

    The alternative whose kind matches the value validates it, so an error inside an array
    alternative names the bad element rather than saying "expected a string or an array".
    """

    def __init__(self, *alternatives: Node) -> None:
        self.alternatives = alternatives

    def matches_kind(self, value: AnyValue) -> bool:
        return any(alt.matches_kind(value) for alt in self.alternatives)

    def expected(self) -> str:
        return " or ".join(alt.expected() for alt in self.alternatives)

    def clean(self, value: AnyValue, path: str, strict: bool = False) -> AnyValue:
        for alt in self.alternatives:
            if alt.matches_kind(value):
                return alt.clean(value, path, strict)
        raise self._fail(value, path)

    def json_schema(self, refs: Optional[Dict[str, dict]]) -> dict:
        return {"oneOf": [alt.json_schema(refs) for alt in self.alternatives]}


# What a Field's check returns: None when the value is fine, else a message about the field,
# or (sub-path, message) about a part of it: ("[0].prompt", "...") for a rule about an array.
Problem = Optional[Union[str, Tuple[str, str]]]


class Field:
    """A named member of an ``Obj``.

    ``check(value) -> Problem`` runs after the type check, for rules the type cannot say
    (``n`` must be 1, no ``{{session}}`` in a chain step). ``nullable`` keeps an explicit
    ``null`` instead of treating it as absent. ``but(**changes)`` is a copy with some
    attributes changed (a shape that takes the same field with another default).
    """

    __slots__ = ("name", "node", "required", "default", "nullable", "check", "description",
                 "example")

    def __init__(self, name: str, node: Node, required: bool = False,
                 default: AnyValue = _MISSING, nullable: bool = False,
                 check: Optional[Callable[[AnyValue], Problem]] = None,
                 description: str = "", example: AnyValue = None) -> None:
        self.name = name
        self.node = node
        self.required = required
        self.default = default
        self.nullable = nullable
        self.check = check
        self.description = description
        self.example = example

    def but(self, **changes: AnyValue) -> "Field":
        kw = {k: getattr(self, k) for k in self.__slots__ if k != "name"}
        kw.update(changes)
        return Field(self.name, **kw)

    def problem(self, value: AnyValue, path: str) -> Optional[ValidationError]:
        """The check's verdict on a cleaned ``value`` at ``path``, as an error (or None)."""
        problem = self.check(value) if self.check else None
        if not problem:
            return None
        if isinstance(problem, tuple):
            return ValidationError(path + problem[0], problem[1])
        return ValidationError(path, problem)

    def json_schema(self, refs: Optional[Dict[str, dict]]) -> dict:
        schema = self.node.json_schema(refs)
        if "$ref" in schema and (self.description or self.nullable):
            # OpenAPI 3.0 ignores siblings of $ref; allOf carries them.
            schema = {"allOf": [schema]}
        if self.description:
            schema["description"] = self.description
        if self.nullable:
            schema["nullable"] = True
        if self.default is not _MISSING:
            schema["default"] = self.default
        if self.example is not None:
            schema["example"] = self.example
        return schema


class Obj(Node):
    """An object with declared fields. A ``name`` makes it a reusable component
    (``#/components/schemas/<name>``) in the OpenAPI document. ``refuses`` maps field names
    the object does not take, but a sender may expect it to, to the reason it does not (the
    message a sender gets whether or not validation is ``strict``); they are not documented
    as fields."""

    def __init__(self, *fields: Field, name: str = "", description: str = "",
                 example: AnyValue = None, refuses: Optional[Mapping[str, str]] = None) -> None:
        self.fields = fields
        self.name = name
        self.description = description
        self.example = example
        self.refuses = dict(refuses or {})

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(name)

    def matches_kind(self, value: AnyValue) -> bool:
        return isinstance(value, dict)

    def expected(self) -> str:
        return "an object"

    def clean(self, value: AnyValue, path: str, strict: bool = False) -> AnyValue:
        if not isinstance(value, dict):
            raise self._fail(value, path)
        self._check_names(value, path, strict)
        out: Dict[str, AnyValue] = {}
        for f in self.fields:
            fpath = _child(path, f.name)
            item = value.get(f.name, _MISSING)
            if item is None and f.nullable:
                out[f.name] = None
                continue
            if item is _MISSING or (item is None and not f.required):
                if f.required:
                    raise ValidationError(fpath, "field required")
                if f.default is not _MISSING:
                    out[f.name] = copy.deepcopy(f.default)
                continue
            item = f.node.clean(item, fpath, strict)
            problem = f.problem(item, fpath)
            if problem is not None:
                raise problem
            out[f.name] = item
        return out

    def _check_names(self, value: Dict[str, AnyValue], path: str, strict: bool) -> None:
        # Names first: a misspelt field explains a "field required" that would follow it.
        for name, item in value.items():
            if name in self.refuses and item is not None:
                raise ValidationError(_child(path, name), self.refuses[name])
        if not strict:
            return
        known = [f.name for f in self.fields]
        for name in value:
            if name not in known and name not in self.refuses:
                raise ValidationError(_child(path, name), "unknown field (expected one of %s)"
                                      % ", ".join(known))

    def json_schema(self, refs: Optional[Dict[str, dict]]) -> dict:
        if refs is not None and self.name:
            if self.name not in refs:
                refs[self.name] = self._inline(refs)
            return {"$ref": "#/components/schemas/" + self.name}
        return self._inline(refs)

    def _inline(self, refs: Optional[Dict[str, dict]]) -> dict:
        schema: Dict[str, AnyValue] = {"type": "object"}
        if self.description:
            schema["description"] = self.description
        schema["properties"] = {f.name: f.json_schema(refs) for f in self.fields}
        required = [f.name for f in self.fields if f.required]
        if required:
            schema["required"] = required
        if self.example is not None:
            schema["example"] = self.example
        return schema


def validate(schema: Node, data: AnyValue, strict: bool = False) -> AnyValue:
    """``data`` checked against ``schema``: the cleaned value (defaults filled in; unknown
    fields dropped, or with ``strict`` refused). Raises ValidationError naming the first bad
    field."""
    return schema.clean(data, "", strict)


def validate_query(schema: Obj, params: Mapping[str, str]) -> Dict[str, AnyValue]:
    """Query-string (or path) parameters checked against ``schema``. Values arrive as strings;
    integer and boolean fields are converted first, so ``limit=abc`` reports
    "limit: expected an integer >= 0, got 'abc'"."""
    converted: Dict[str, AnyValue] = {}
    for f in schema.fields:
        if f.name not in params:
            continue
        raw = params[f.name]
        # ASCII digits only (\d also takes "٣"), and few enough that int() is cheap and never
        # refuses (Python 3.11+ raises past 4300 digits); anything else stays a string and
        # is reported as "expected an integer".
        if isinstance(f.node, Integer) and re.match(r"[+-]?[0-9]{1,18}\Z", raw.strip()):
            converted[f.name] = int(raw)
        elif isinstance(f.node, Boolean) and raw.lower() in ("true", "false", "1", "0"):
            converted[f.name] = raw.lower() in ("true", "1")
        else:
            converted[f.name] = raw
    return schema.clean(converted, "")


def to_json_schema(schema: Node, refs: Optional[Dict[str, dict]] = None) -> dict:
    """The JSON Schema (OpenAPI 3.0 dialect: ``nullable``, ``example``) of ``schema``.

    Without ``refs`` everything is inline (for a standalone consumer such as an MCP tool).
    With a ``refs`` dict, every named ``Obj`` becomes a ``$ref`` to
    ``#/components/schemas/<name>`` and its schema is added to ``refs``.
    """
    return schema.json_schema(refs)
