"""No web page may drive an agent: a request body must be declared JSON, and a request a
browser sends from another origin (another site, or another port on this host) is refused
with 403 before authentication and before any handler, unless its origin is listed in
server.cors_allowed_origins. A refusal is checked through the fake CLIs: no backend ran and
no session was stored."""

from __future__ import annotations

import json

import pytest

from clinvk_lib.server import guards
from clinvk_lib.server.openapi import build_openapi
from tests.conftest import records
from tests.serverutil import server, start_server  # noqa: F401 (fixtures)

PROMPT = {"backend": "claude", "prompt": "hello from a page"}
PROMPT_BYTES = json.dumps(PROMPT).encode("utf-8")
CHAT = {"model": "claude", "messages": [{"role": "user", "content": "hello"}]}
MESSAGE = {"model": "claude", "max_tokens": 64,
           "messages": [{"role": "user", "content": "hello"}]}
EVIL = "https://evil.example"
APP_ORIGIN = "https://app.example"
KEY = "sk-crosssite-1111"


def assert_nothing_ran(srv, record) -> None:
    """No fake CLI started and no session was stored."""
    assert records(record) == []
    assert srv.app.store.count() == 0


def own_origin(srv) -> str:
    return "http://127.0.0.1:%d" % srv.port


# -- the body must be declared JSON ------------------------------------------------------------


def test_missing_content_type_is_415_naming_the_header_and_no_backend_starts(server, record):
    # What fetch(url, {method: "POST", mode: "no-cors", body: new Blob([json])}) sends.
    reply = server.post("/api/v1/prompt", PROMPT_BYTES)
    assert reply.status == 415 and reply.json()["error"] == "unsupported_media_type"
    message = reply.json()["message"]
    assert "Content-Type" in message and "application/json" in message
    assert "missing" in message
    assert_nothing_ran(server, record)


@pytest.mark.parametrize("ctype", ["text/plain", "text/plain;charset=UTF-8",
                                   "application/x-www-form-urlencoded", "multipart/form-data",
                                   "text/x-whatever+json"])
def test_non_json_content_type_is_415_and_no_backend_starts(server, record, ctype):
    reply = server.post("/api/v1/prompt", PROMPT_BYTES, headers={"Content-Type": ctype})
    assert reply.status == 415 and ctype.split(";")[0] in reply.json()["message"]
    assert_nothing_ran(server, record)


@pytest.mark.parametrize("ctype", ["application/json", "application/json; charset=utf-8",
                                   "Application/JSON", "application/merge-patch+json"])
def test_json_media_types_with_parameters_are_accepted(server, record, ctype):
    reply = server.post("/api/v1/prompt", PROMPT_BYTES, headers={"Content-Type": ctype})
    assert reply.status == 200 and len(records(record)) == 1


def test_a_body_on_any_method_must_be_json_before_the_handler_runs(server):
    # The handler would answer 404 (no such session); the body is refused first.
    reply = server.request("DELETE", "/api/v1/sessions/abc", b"{}",
                           headers={"Content-Type": "text/plain"})
    assert reply.status == 415


def test_missing_content_type_is_415_in_the_openai_shape(server, record):
    reply = server.post("/openai/v1/chat/completions", json.dumps(CHAT).encode())
    assert reply.status == 415
    error = reply.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and "Content-Type" in error["message"]
    assert_nothing_ran(server, record)


def test_missing_content_type_is_415_in_the_anthropic_shape(server, record):
    reply = server.post("/anthropic/v1/messages", json.dumps(MESSAGE).encode())
    assert reply.status == 415
    body = reply.json()
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert "Content-Type" in body["error"]["message"]
    assert_nothing_ran(server, record)


# -- requests from another origin are refused --------------------------------------------------


def test_post_from_a_disallowed_origin_is_403_and_no_backend_starts(server, record):
    reply = server.post("/api/v1/prompt", PROMPT, headers={"Origin": EVIL})
    assert reply.status == 403 and reply.json()["error"] == "cross_site_forbidden"
    message = reply.json()["message"]
    assert EVIL in message and "server.cors_allowed_origins" in message
    assert_nothing_ran(server, record)


def test_get_from_a_disallowed_origin_is_403_and_shows_no_prompt(server, record):
    assert server.post("/api/v1/prompt", PROMPT).status == 200
    reply = server.get("/api/v1/sessions", headers={"Origin": EVIL})
    assert reply.status == 403 and b"hello from a page" not in reply.body


@pytest.mark.parametrize("site", ["cross-site", "same-site"])
def test_sec_fetch_site_from_another_site_is_403_without_an_origin(server, record, site):
    # A no-cors GET (<img src>, <script src>) carries Sec-Fetch-Site but no Origin.
    reply = server.get("/api/v1/sessions", headers={"Sec-Fetch-Site": site})
    assert reply.status == 403 and "Sec-Fetch-Site" in reply.json()["message"]


def test_sec_fetch_site_cross_site_post_is_403_and_no_backend_starts(server, record):
    reply = server.post("/api/v1/prompt", PROMPT, headers={"Sec-Fetch-Site": "cross-site"})
    assert reply.status == 403
    assert_nothing_ran(server, record)


def test_a_page_on_another_loopback_port_is_refused(server, record):
    # Browsers call another port of the same host "same-site": the attack on loopback.
    headers = {"Origin": "http://127.0.0.1:9000", "Sec-Fetch-Site": "same-site"}
    reply = server.post("/api/v1/prompt", PROMPT, headers=headers)
    assert reply.status == 403
    assert_nothing_ran(server, record)


def test_null_origin_is_refused(server, record):
    # Sandboxed iframes and file:// pages send "Origin: null".
    assert server.post("/api/v1/prompt", PROMPT, headers={"Origin": "null"}).status == 403
    assert_nothing_ran(server, record)


def test_cross_site_refusal_comes_before_authentication(start_server, record):
    srv = start_server(**{"server.api_keys": [KEY]})
    with_key = srv.post("/api/v1/prompt", PROMPT, headers={"Origin": EVIL, "X-Api-Key": KEY})
    without_key = srv.post("/api/v1/prompt", PROMPT, headers={"Origin": EVIL})
    assert (with_key.status, without_key.status) == (403, 403)
    assert_nothing_ran(srv, record)


def test_preflight_from_a_page_is_refused_when_no_origin_is_allowed(server):
    reply = server.request("OPTIONS", "/api/v1/prompt", headers={
        "Origin": EVIL, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type", "Sec-Fetch-Site": "cross-site"})
    assert reply.status == 403
    assert "Access-Control-Allow-Origin" not in reply.headers


def test_disallowed_origin_is_403_in_the_openai_shape(server, record):
    reply = server.post("/openai/v1/chat/completions", CHAT, headers={"Origin": EVIL})
    assert reply.status == 403
    error = reply.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "permission_error" and EVIL in error["message"]
    assert_nothing_ran(server, record)


def test_disallowed_origin_is_403_in_the_anthropic_shape(server, record):
    reply = server.post("/anthropic/v1/messages", MESSAGE, headers={"Origin": EVIL})
    assert reply.status == 403
    body = reply.json()
    assert body["type"] == "error" and body["error"]["type"] == "permission_error"
    assert EVIL in body["error"]["message"]
    assert_nothing_ran(server, record)


@pytest.mark.sdk
def test_openai_sdk_sees_a_permission_denied_error_for_a_disallowed_origin(server, record):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=server.url + "/openai/v1", api_key="unused", max_retries=0,
                           default_headers={"Origin": EVIL})
    with pytest.raises(openai.PermissionDeniedError) as info:
        client.chat.completions.create(model="claude", messages=CHAT["messages"])
    assert EVIL in str(info.value)
    assert_nothing_ran(server, record)


@pytest.mark.sdk
def test_anthropic_sdk_sees_a_permission_denied_error_for_a_disallowed_origin(server, record):
    anthropic = pytest.importorskip("anthropic")
    client = anthropic.Anthropic(base_url=server.url + "/anthropic", api_key="unused",
                                 max_retries=0, default_headers={"Origin": EVIL})
    with pytest.raises(anthropic.PermissionDeniedError) as info:
        client.messages.create(**MESSAGE)
    assert EVIL in str(info.value)
    assert_nothing_ran(server, record)


# -- what stays allowed ------------------------------------------------------------------------


def test_same_origin_request_is_allowed(server, record):
    headers = {"Origin": own_origin(server), "Sec-Fetch-Site": "same-origin"}
    assert server.post("/api/v1/prompt", PROMPT, headers=headers).status == 200
    assert len(records(record)) == 1


def test_same_origin_by_origin_and_host_alone_is_allowed(server, record):
    # Browsers without Sec-Fetch-* headers: the Origin is compared with scheme://Host.
    reply = server.post("/api/v1/prompt", PROMPT, headers={"Origin": own_origin(server)})
    assert reply.status == 200 and len(records(record)) == 1


def test_same_origin_compares_default_ports(server, record):
    reply = server.post("/api/v1/prompt", PROMPT,
                        headers={"Origin": "http://localhost", "Host": "localhost:80"})
    assert reply.status == 200


def test_user_typed_navigation_is_allowed(server):
    reply = server.get("/api/v1/sessions", headers={"Sec-Fetch-Site": "none"})
    assert reply.status == 200


def test_same_origin_behind_a_trusted_tls_proxy_is_allowed(start_server, record):
    srv = start_server(**{"server.trusted_proxies": ["127.0.0.1"]})
    headers = {"Origin": "https://localhost:8443", "Host": "localhost:8443",
               "X-Forwarded-Proto": "https"}
    assert srv.post("/api/v1/prompt", PROMPT, headers=headers).status == 200


def test_forwarded_proto_from_an_untrusted_peer_does_not_make_an_origin_same(server, record):
    headers = {"Origin": "https://localhost:8443", "Host": "localhost:8443",
               "X-Forwarded-Proto": "https"}
    assert server.post("/api/v1/prompt", PROMPT, headers=headers).status == 403
    assert_nothing_ran(server, record)


def test_browser_vouched_same_origin_is_allowed_when_a_proxy_rewrote_host(server, record):
    # nginx's default Host is the upstream address; the browser's Sec-Fetch-Site still says
    # the page and the URL it fetched share an origin.
    headers = {"Origin": "https://clinvk.example", "Sec-Fetch-Site": "same-origin"}
    assert server.post("/api/v1/prompt", PROMPT, headers=headers).status == 200


def test_allowed_cors_origin_is_allowed_cross_site(start_server, record):
    srv = start_server(**{"server.cors_allowed_origins": [APP_ORIGIN]})
    headers = {"Origin": APP_ORIGIN, "Sec-Fetch-Site": "cross-site"}
    reply = srv.post("/api/v1/prompt", PROMPT, headers=headers)
    assert reply.status == 200 and reply.headers["Access-Control-Allow-Origin"] == APP_ORIGIN
    assert len(records(record)) == 1


def test_preflight_from_an_allowed_origin_is_still_answered(start_server):
    srv = start_server(**{"server.cors_allowed_origins": [APP_ORIGIN]})
    reply = srv.request("OPTIONS", "/api/v1/prompt", headers={
        "Origin": APP_ORIGIN, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type", "Sec-Fetch-Site": "cross-site"})
    assert reply.status == 204 and reply.headers["Access-Control-Allow-Origin"] == APP_ORIGIN


def test_other_origins_stay_refused_when_cors_is_configured(start_server, record):
    srv = start_server(**{"server.cors_allowed_origins": [APP_ORIGIN]})
    assert srv.post("/api/v1/prompt", PROMPT, headers={"Origin": EVIL}).status == 403
    assert_nothing_ran(srv, record)


def test_clients_that_are_not_browsers_are_unaffected(server, record):
    # No Origin, no Sec-Fetch-Site: curl, the SDKs, scripts.
    assert server.post("/api/v1/prompt", PROMPT).status == 200
    assert server.get("/api/v1/sessions").status == 200


# -- the decision as a function ----------------------------------------------------------------


@pytest.mark.parametrize("origin, parts", [
    ("http://LocalHost", ("http", "localhost", 80)),
    ("https://app.example:443/", ("https", "app.example", 443)),
    ("http://[::1]:8080", ("http", "::1", 8080)),
    ("null", None), ("file://", None), ("ftp://host", None), ("http://h:99999", None),
    ("http://user@127.0.0.1", None), ("http://h/path", None), ("", None),
])
def test_origin_parts_fill_in_default_ports_and_refuse_what_is_not_an_origin(origin, parts):
    assert guards.origin_parts(origin) == parts


def test_an_origin_differing_only_in_scheme_or_port_is_not_the_same_origin():
    assert guards.same_origin("http://localhost:80", "http://localhost")
    assert not guards.same_origin("https://localhost", "http://localhost")
    assert not guards.same_origin("http://localhost:9000", "http://localhost:8080")


@pytest.mark.parametrize("origin, site, allowed, refused", [
    (None, "", (), False),                                  # curl, SDKs, scripts
    (None, "none", (), False),                              # a typed URL
    (None, "cross-site", (), True),                         # <img src>, <script src>
    ("http://127.0.0.1:9000", "same-site", (), True),       # another port on loopback
    ("http://127.0.0.1:8080", "", (), False),               # own origin, old browser
    ("http://127.0.0.1:8080", "same-site", (), True),       # the browser's verdict wins
    ("https://elsewhere.example", "same-origin", (), False),  # a proxy rewrote Host
    (EVIL, "", (), True),
    (EVIL, "cross-site", ("https://*.example",), False),    # an allowed CORS request
    ("null", "cross-site", ("*",), False),                  # the operator allowed any origin
])
def test_cross_site_refusal_decisions(origin, site, allowed, refused):
    reason = guards.cross_site_refusal(origin, site, "http://127.0.0.1:8080", allowed)
    assert bool(reason) is refused


def test_openapi_documents_the_cross_site_403_on_every_operation():
    doc = build_openapi()
    assert "server.cors_allowed_origins" in doc["info"]["description"]
    for path, item in doc["paths"].items():
        for method, op in item.items():
            assert "cors_allowed_origins" in op["responses"]["403"]["description"], (method, path)
