"""router.py: path templates, 404 vs 405 with Allow, HEAD via GET, odd paths never crash."""

from __future__ import annotations

import pytest

from clinvk_lib.server.router import Router


def make_router() -> Router:
    r = Router()
    r.add("GET", "/health", "health")
    r.add("POST", "/api/v1/prompt", "prompt")
    r.add("GET", "/api/v1/sessions", "list")
    r.add("GET", "/api/v1/sessions/{id}", "get")
    r.add("DELETE", "/api/v1/sessions/{id}", "delete")
    return r


def test_literal_path_matches_its_method():
    m = make_router().match("POST", "/api/v1/prompt")
    assert m.route.target == "prompt" and m.params == {}


def test_template_parameter_is_bound_by_name():
    m = make_router().match("DELETE", "/api/v1/sessions/abc123")
    assert m.route.target == "delete" and m.params == {"id": "abc123"}


def test_template_parameter_is_percent_decoded():
    m = make_router().match("GET", "/api/v1/sessions/a%20b")
    assert m.params == {"id": "a b"}


def test_encoded_slash_stays_inside_one_segment():
    m = make_router().match("GET", "/api/v1/sessions/a%2Fb")
    assert m.route.target == "get" and m.params == {"id": "a/b"}


def test_encoded_slash_does_not_join_literal_segments():
    assert make_router().match("POST", "/api%2Fv1/prompt").route is None


def test_unknown_path_has_no_route_and_no_allowed_methods():
    m = make_router().match("GET", "/api/v1/nothing")
    assert m.route is None and m.allow == ()


def test_known_path_with_wrong_method_lists_allowed_methods():
    m = make_router().match("POST", "/api/v1/sessions/abc")
    assert m.route is None
    assert m.allow == ("GET", "HEAD", "DELETE", "OPTIONS")


def test_head_is_served_by_the_get_route():
    assert make_router().match("HEAD", "/health").route.target == "health"


def test_head_is_not_allowed_where_there_is_no_get():
    m = make_router().match("HEAD", "/api/v1/prompt")
    assert m.route is None and m.allow == ("POST", "OPTIONS")


def test_trailing_slash_is_a_different_path():
    assert make_router().match("GET", "/health/").route is None


def test_empty_parameter_segment_does_not_match():
    m = make_router().match("GET", "/api/v1/sessions/")
    assert m.route is None and m.allow == ()


def test_allowed_lists_methods_of_a_template_path():
    assert make_router().allowed("/api/v1/sessions/x") == ("GET", "HEAD", "DELETE", "OPTIONS")


@pytest.mark.parametrize("path", [
    "/api/v1/sessions/..", "/api/v1/sessions/%2e%2e", "/../health", "/api/v1/../v1/prompt",
    "/%00", "/api/v1/sessions/%00", "/" + "a/" * 5000, "/" + "x" * 70000, "", "*",
    "relative/path", "/%zz", "/%", "/api/v1/sessions/%ff%fe",
])
def test_odd_paths_never_raise(path):
    r = make_router()
    m = r.match("GET", path)
    assert m.route is None or m.route.target == "get"


def test_dot_dot_is_not_resolved_to_another_route():
    assert make_router().match("POST", "/api/v1/../v1/prompt").route is None


def test_duplicate_route_is_refused():
    r = make_router()
    with pytest.raises(ValueError, match="already registered"):
        r.add("GET", "/api/v1/sessions/{id}", "again")


@pytest.mark.parametrize("template", ["health", "/a/{b", "/a/x{b}", "/a/{}"])
def test_malformed_template_is_refused(template):
    with pytest.raises(ValueError):
        Router().add("GET", template, "x")


def test_routes_keeps_registration_order():
    assert [r.target for r in make_router().routes] == ["health", "prompt", "list", "get",
                                                         "delete"]
