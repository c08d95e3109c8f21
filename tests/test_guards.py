"""The request guards' decisions on their own: which key a request presents, which binds and
Host headers are loopback, which CORS origins and headers are allowed, which steps a
configuration switches on, and which routes need no key."""

from __future__ import annotations

import email.message

import pytest

from clinvk_lib import config
from clinvk_lib.config import ConfigError
from clinvk_lib.server import guards
from clinvk_lib.server.errors import ApiError
from clinvk_lib.server.keys import ApiKeys
from clinvk_lib.server.openapi import DEFAULT_ROUTES


def headers(**fields: str) -> email.message.Message:
    msg = email.message.Message()
    for name, value in fields.items():
        msg[name.replace("_", "-")] = value
    return msg


def load(tmp_path, **settings):
    return config.load(None, env={"CLINVK_HOME": str(tmp_path)}, flags=settings)


def make_guards(tmp_path, keys=(), **settings) -> guards.Guards:
    return guards.Guards(load(tmp_path, **settings), ApiKeys(keys), lambda path: ())


class Ctx:
    """The parts of a request context the steps read."""

    def __init__(self, operation_id: str = "", method: str = "GET", **fields: str) -> None:
        self.method = method
        self.path = "/"
        self.client = "127.0.0.1"
        self.headers = headers(**fields)
        self.endpoint = None
        if operation_id:
            spec = next(r for r in DEFAULT_ROUTES if r.operation_id == operation_id)
            self.endpoint = type("Endpoint", (), {"spec": spec})()


# -- the key on the request --------------------------------------------------------------------


def test_x_api_key_is_the_presented_key():
    assert guards.presented_key(headers(X_Api_Key=" sk-1 ")) == "sk-1"


@pytest.mark.parametrize("value", ["Bearer sk-1", "bearer sk-1", "BEARER   sk-1 "])
def test_bearer_token_is_the_presented_key_whatever_the_scheme_case(value):
    assert guards.presented_key(headers(Authorization=value)) == "sk-1"


@pytest.mark.parametrize("value", ["Basic dXNlcjpwdw==", "Bearer", "Bearer   ", "sk-1", ""])
def test_authorization_without_a_bearer_token_presents_no_key(value):
    assert guards.presented_key(headers(Authorization=value)) is None


def test_x_api_key_wins_over_authorization():
    assert guards.presented_key(headers(X_Api_Key="a", Authorization="Bearer b")) == "a"


# -- binds and Host headers --------------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "127.3.2.1", "::1", "[::1]", "localhost",
                                  "LOCALHOST."])
def test_loopback_binds(host):
    assert guards.is_loopback_host(host)


@pytest.mark.parametrize("host", ["", "0.0.0.0", "::", "192.168.1.10", "10.0.0.1"])
def test_binds_that_are_not_loopback(host):
    assert not guards.is_loopback_host(host)


@pytest.mark.parametrize("value", ["localhost", "localhost:8080", "LocalHost.:80",
                                   "app.localhost:3000", "127.0.0.1:8080", "127.9.9.9",
                                   "[::1]:8080", "[::1]"])
def test_host_headers_naming_loopback_are_local(value):
    assert guards.is_local_host_header(value, frozenset())


@pytest.mark.parametrize("value", ["evil.example", "evil.example:8080", "0.0.0.0:8080",
                                   "127.0.0.1.evil.example", "localhost.evil.example",
                                   "192.168.1.10:8080", "[::]:8080"])
def test_host_headers_naming_anything_else_are_foreign(value):
    assert not guards.is_local_host_header(value, frozenset())


def test_allowed_hosts_are_matched_by_name_ignoring_port_and_case(tmp_path):
    g = make_guards(tmp_path, **{"server.allowed_hosts": ["Box.LAN:9999"]})
    assert guards.is_local_host_header("box.lan:8080", g.allowed_hosts)
    assert not guards.is_local_host_header("box.lan.evil.example", g.allowed_hosts)


def test_request_without_host_header_passes_the_host_check(tmp_path):
    make_guards(tmp_path).check_host(Ctx())


def test_foreign_host_is_403(tmp_path):
    with pytest.raises(ApiError) as info:
        make_guards(tmp_path).check_host(Ctx(Host="rebind.evil.example"))
    assert info.value.status == 403 and "server.allowed_hosts" in info.value.message


# -- CORS --------------------------------------------------------------------------------------


@pytest.mark.parametrize("origin", ["https://app.example", "HTTPS://APP.EXAMPLE",
                                    "https://app.example/"])
def test_listed_origin_is_allowed_whatever_its_case(origin):
    assert guards.origin_allowed(origin, ("https://app.example",))


@pytest.mark.parametrize("origin", ["http://app.example", "https://app.example:8443",
                                    "https://app.example.evil.example", "null"])
def test_origin_differing_in_scheme_port_or_host_is_not_allowed(origin):
    assert not guards.origin_allowed(origin, ("https://app.example",))


def test_star_allows_every_origin():
    assert guards.origin_allowed("https://anything.example", ("*",))


@pytest.mark.parametrize("origin,allowed", [("http://localhost:3000", True),
                                            ("http://localhost", False),
                                            ("http://localhost.evil.example:80", False)])
def test_one_star_in_an_origin_stands_for_at_least_one_character(origin, allowed):
    assert guards.origin_allowed(origin, ("http://localhost:*",)) is allowed


@pytest.mark.parametrize("name", ["authorization", "x-api-key", "content-type",
                                  "anthropic-version", "x-stainless-os",
                                  "x-stainless-retry-count"])
def test_headers_the_sdks_send_are_allowed_cross_origin(name):
    assert guards.header_allowed(name)


@pytest.mark.parametrize("name", ["cookie", "x-forwarded-for", "x-whatever"])
def test_other_headers_are_not_allowed_cross_origin(name):
    assert not guards.header_allowed(name)


def test_credentials_with_any_origin_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError) as info:
        make_guards(tmp_path, **{"server.cors_allowed_origins": ["*"],
                                 "server.cors_allow_credentials": True})
    assert "list the origins" in str(info.value)


# -- what a configuration switches on ----------------------------------------------------------


def test_default_settings_check_the_host_cross_site_requests_and_json_bodies(tmp_path):
    g = make_guards(tmp_path)
    assert g.steps == [g.check_host, g.refuse_cross_site, guards.require_json_body]
    assert g.hooks == []


def test_every_guard_is_on_when_configured_in_pipeline_order(tmp_path):
    g = make_guards(tmp_path, ["k"], **{"server.trusted_proxies": ["10.0.0.0/8"],
                                        "server.rate_limit_enabled": True,
                                        "server.cors_allowed_origins": ["https://a.example"]})
    assert g.steps == [g.resolve_client, g.limit_rate, g.check_host, g.refuse_cross_site,
                       g.answer_preflight, g.authenticate, guards.require_json_body]
    assert g.hooks == [g.add_cors_headers, g.add_rate_limit_headers]


def test_non_loopback_bind_has_no_host_check(tmp_path):
    g = make_guards(tmp_path, **{"server.host": "0.0.0.0"})
    assert g.check_host not in g.steps


# -- which routes need a key -------------------------------------------------------------------


@pytest.mark.parametrize("operation", ["healthCheck", "getOpenAPI", "getDocs"])
def test_public_routes_need_no_key(tmp_path, operation):
    make_guards(tmp_path, ["k"]).authenticate(Ctx(operation))


@pytest.mark.parametrize("operation", ["executePrompt", "getMetrics", "openaiChatCompletions",
                                       "anthropicCreateMessage", ""])
def test_other_routes_and_unknown_paths_need_a_key(tmp_path, operation):
    with pytest.raises(ApiError) as info:
        make_guards(tmp_path, ["k"]).authenticate(Ctx(operation))
    assert info.value.status == 401 and info.value.headers["WWW-Authenticate"].startswith(
        "Bearer")


def test_metrics_need_no_key_when_metrics_are_public(tmp_path):
    make_guards(tmp_path, ["k"], **{"server.metrics_public": True}).authenticate(
        Ctx("getMetrics"))


def test_wrong_key_is_401_without_echoing_it(tmp_path):
    with pytest.raises(ApiError) as info:
        make_guards(tmp_path, ["k"]).authenticate(Ctx("executePrompt", X_Api_Key="guess-123"))
    assert info.value.status == 401 and "guess-123" not in info.value.message


def test_right_key_passes(tmp_path):
    make_guards(tmp_path, ["k"]).authenticate(Ctx("executePrompt", Authorization="Bearer k"))
