"""schemacheck.py: the JSON Schema subset structured output uses, and errors that name the
JSON path of the first problem."""

from __future__ import annotations

import json

import pytest

from clinvk_lib import schemacheck
from clinvk_lib.schemacheck import SchemaError, check_schema, first_error

# What pydantic writes for: class Item(BaseModel): name: str; qty: int = Field(ge=1)
# class Order(BaseModel): items: list[Item]; note: Optional[str]; status: Literal["a", "b"]
ORDER = {
    "$defs": {"Item": {"type": "object", "title": "Item",
                       "properties": {"name": {"type": "string", "title": "Name"},
                                      "qty": {"type": "integer", "minimum": 1}},
                       "required": ["name", "qty"], "additionalProperties": False}},
    "type": "object", "title": "Order",
    "properties": {"items": {"type": "array", "items": {"$ref": "#/$defs/Item"}},
                   "note": {"anyOf": [{"type": "string"}, {"type": "null"}]},
                   "status": {"enum": ["a", "b"], "type": "string"}},
    "required": ["items", "note", "status"], "additionalProperties": False,
}
GOOD_ORDER = {"items": [{"name": "x", "qty": 1}, {"name": "y", "qty": 2}], "note": None,
              "status": "a"}


def with_item(**changes):
    order = json.loads(json.dumps(GOOD_ORDER))
    order["items"].append(dict({"name": "z", "qty": 3}, **changes))
    return order


def test_a_valid_value_has_no_error():
    check_schema(ORDER)
    assert first_error(GOOD_ORDER, ORDER) == ""


def test_error_names_the_json_path_of_the_bad_value():
    assert first_error(with_item(name=42), ORDER) == "$.items[2].name: expected string, got 42"


def test_missing_required_property_names_the_object_and_the_property():
    order = dict(GOOD_ORDER)
    del order["status"]
    assert first_error(order, ORDER) == '$: missing required property "status"'


def test_additional_property_is_refused_when_additional_properties_is_false():
    assert first_error(with_item(colour="red"), ORDER) == \
        '$.items[2]: unexpected property "colour" (additionalProperties is false)'


def test_additional_properties_as_a_schema_checks_each_extra_value():
    schema = {"type": "object", "additionalProperties": {"type": "integer"}}
    assert first_error({"a": 1, "b": "2"}, schema) == '$.b: expected integer, got "2"'


def test_keys_that_are_not_identifiers_are_quoted_in_the_path():
    schema = {"type": "object", "properties": {"a b": {"type": "string"}}}
    assert first_error({"a b": 1}, schema) == '$["a b"]: expected string, got 1'


@pytest.mark.parametrize("value, ok", [(None, True), ("s", True), (1, False)])
def test_type_list_and_nullable_accept_null(value, ok):
    assert (first_error(value, {"type": ["string", "null"]}) == "") is ok
    assert (first_error(value, {"type": "string", "nullable": True}) == "") is ok


def test_type_list_error_lists_every_type():
    assert first_error(1, {"type": ["string", "null"]}) == "$: expected string or null, got 1"


@pytest.mark.parametrize("value, kind, ok", [
    (3, "integer", True), (3.0, "integer", True), (3.5, "integer", False),
    (True, "integer", False), (True, "number", False), (True, "boolean", True),
    (0, "boolean", False), ([], "object", False), ({}, "array", False), (None, "null", True),
])
def test_json_types_keep_booleans_and_numbers_apart(value, kind, ok):
    assert (first_error(value, {"type": kind}) == "") is ok


def test_enum_and_const():
    assert first_error("c", {"enum": ["a", "b"]}) == '$: expected one of "a", "b", got "c"'
    assert first_error(1, {"enum": [True]}) != ""        # 1 is not true in JSON
    assert first_error(1.0, {"const": 1}) == ""
    assert first_error("x", {"const": "y"}) == '$: expected "y", got "x"'


@pytest.mark.parametrize("schema, value, message", [
    ({"minimum": 1}, 0, "$: expected a number >= 1, got 0"),
    ({"maximum": 1}, 2, "$: expected a number <= 1, got 2"),
    ({"exclusiveMinimum": 1}, 1, "$: expected a number > 1, got 1"),
    ({"exclusiveMaximum": 1}, 1, "$: expected a number < 1, got 1"),
    ({"minimum": 1, "exclusiveMinimum": True}, 1, "$: expected a number > 1, got 1"),
])
def test_numeric_bounds_in_both_drafts(schema, value, message):
    assert first_error(value, schema) == message


def test_string_length_counts_characters_and_pattern_is_searched():
    assert first_error("é", {"maxLength": 1}) == ""
    assert first_error("ab", {"minLength": 3}) == \
        '$: expected a string of at least 3 characters, got "ab"'
    assert first_error("xx-12-yy", {"pattern": "[0-9]+"}) == ""
    assert first_error("abc", {"pattern": "^[0-9]+$"}) == \
        '$: expected a string matching "^[0-9]+$", got "abc"'


def test_array_length_prefix_items_and_draft4_item_lists():
    assert first_error([], {"minItems": 1}) == "$: expected at least 1 items, got 0"
    assert first_error([1, 2, 3], {"maxItems": 2}) == "$: expected at most 2 items, got 3"
    tuple_schema = {"prefixItems": [{"type": "string"}, {"type": "integer"}],
                    "items": {"type": "boolean"}}
    assert first_error(["a", 1, True], tuple_schema) == ""
    assert first_error(["a", 1, 2], tuple_schema) == "$[2]: expected boolean, got 2"
    assert first_error(["a", "b"], {"items": [{"type": "string"}, {"type": "integer"}]}) == \
        '$[1]: expected integer, got "b"'


def test_any_of_names_the_problem_of_the_alternative_that_got_furthest():
    schema = {"$defs": ORDER["$defs"],
              "anyOf": [{"$ref": "#/$defs/Item"}, {"type": "null"}]}
    assert first_error(None, schema) == ""
    assert first_error({"name": "a", "qty": 0}, schema) == \
        "$.qty: expected a number >= 1, got 0"
    assert first_error(3, schema) == \
        "$: matches none of the anyOf alternatives (expected object, got 3; " \
        "expected null, got 3)"


def test_one_of_needs_exactly_one_match():
    schema = {"oneOf": [{"type": "integer"}, {"type": "number"}]}
    assert first_error(1.5, schema) == ""
    assert first_error(1, schema) == \
        "$: matches 2 of the oneOf alternatives (0, 1), expected exactly one"


def test_all_of_needs_every_schema():
    schema = {"allOf": [{"type": "object", "required": ["a"]}, {"required": ["b"]}]}
    assert first_error({"a": 1, "b": 2}, schema) == ""
    assert first_error({"a": 1}, schema) == '$: missing required property "b"'


def test_refs_to_definitions_and_the_root_follow_recursive_models():
    tree = {"type": "object", "properties": {"v": {"type": "integer"},
                                             "kids": {"type": "array", "items": {"$ref": "#"}}},
            "required": ["v"]}
    assert first_error({"v": 1, "kids": [{"v": 2, "kids": [{"v": 3}]}]}, tree) == ""
    assert first_error({"v": 1, "kids": [{"v": 2, "kids": [{"v": "x"}]}]}, tree) == \
        '$.kids[0].kids[0].v: expected integer, got "x"'
    legacy = {"definitions": {"N": {"type": "integer"}}, "$ref": "#/definitions/N"}
    assert first_error("1", legacy) == '$: expected integer, got "1"'


def test_boolean_schemas_format_and_unknown_keywords():
    assert first_error(1, True) == ""
    assert first_error(1, False) == "$: no value is allowed here (the schema is false)"
    assert first_error("not a date", {"type": "string", "format": "date-time",
                                      "x-anything": 1, "title": "T"}) == ""


def test_long_values_are_cut_in_messages():
    assert first_error("x" * 500, {"type": "integer"}) == \
        '$: expected integer, got "' + "x" * 36 + "..."


def test_a_value_nested_beyond_the_recursion_limit_is_an_error_not_a_crash():
    value: object = 1
    for _ in range(5000):
        value = [value]
    assert "too deeply" in first_error(value, {"items": {"$ref": "#"}})


@pytest.mark.parametrize("schema, path", [
    ({"type": "int"}, "type"),
    ({"properties": {"a": {"type": ["string", "date"]}}}, "properties.a.type"),
    ({"properties": {"a b": {"type": "strin"}}}, 'properties["a b"].type'),
    ({"required": "a"}, "required"),
    ({"items": {"$ref": "#/$defs/Missing"}}, "items.$ref"),
    ({"$ref": "https://example.com/s.json"}, "$ref"),
    ({"$ref": "#"}, "$ref"),
    ({"pattern": "("}, "pattern"),
    ({"pattern": "^(a+)+$"}, "pattern"),
    ({"properties": {"host": {"pattern": r"^([a-z]+\.?)*[a-z]+$"}}}, "properties.host.pattern"),
    ({"minLength": -1}, "minLength"),
    ({"anyOf": []}, "anyOf"),
    ({"anyOf": [{"type": "string"}, 3]}, "anyOf[1]"),
    (["type", "object"], ""),
])
def test_unusable_schema_is_refused_naming_the_keyword(schema, path):
    with pytest.raises(SchemaError) as info:
        check_schema(schema)
    assert info.value.path == path


@pytest.mark.parametrize("pattern", [
    r"(a+)+", r"(a|aa)+", r"(a?a)+", r"(\w+\s?)*", r"(x+|y)*", r"(\d+)*", r"(a+){2}",
    r"(?=(a+)+)", r"(.*,)*", r"^(\w+\s?)*$", r"(?i)(a+A)+",
])
def test_a_pattern_whose_repetition_can_split_text_several_ways_is_refused(pattern):
    with pytest.raises(SchemaError) as info:
        check_schema({"type": "string", "pattern": pattern})
    assert info.value.path == "pattern" and "exponential" in info.value.message


@pytest.mark.parametrize("pattern, good, bad", [
    # A mandatory character the repeated part cannot match fixes where each iteration starts.
    (r"^[a-z]+(-[a-z]+)*$", "my-slug-name", "my--slug"),
    (r"^([a-z0-9]+\.)+[a-z]{2,}$", "api.example.com", "api..com"),
    (r"^[a-zA-Z0-9._%+-]+@[a-zA-Z0-9.-]+\.[a-zA-Z]{2,}$", "a.b@c.de", "a@b"),
    (r"^(\d{3}-){2}\d{4}$", "555-123-4567", "555-1234567"),
    (r"^(foo|bar)*$", "foobarfoo", "foob"),
    (r"^(ab|a)+$", "abaab", "abb"),
    (r"^(a|b)+$", "abba", "abc"),
])
def test_everyday_patterns_with_nested_repetition_are_accepted_and_checked(pattern, good, bad):
    schema = {"type": "string", "pattern": pattern}
    check_schema(schema)
    assert first_error(good, schema) == ""
    error = first_error(bad, schema)
    assert error.startswith("$: expected a string matching") and error.endswith('"%s"' % bad)


def test_schema_nesting_is_bounded():
    schema: dict = {"type": "string"}
    for _ in range(schemacheck.MAX_DEPTH + 5):
        schema = {"type": "array", "items": schema}
    with pytest.raises(SchemaError) as info:
        check_schema(schema)
    assert "deeper than" in info.value.message


def test_a_bounded_or_flat_pattern_is_accepted_and_checked():
    for pattern in (r"^\d{3}-\d{4}$", r"(\d{3}-){2}", r"^[^@]+@[^@]+\.[^@]+$", "(a|b)+"):
        check_schema({"type": "string", "pattern": pattern})
    assert first_error("123-456-", {"pattern": r"^(\d{3}-){2}$"}) == ""
