"""The web console as HTTP sees it: ``GET /`` gives a browser the console and any other client
the JSON 404 it always got; the console's files are served by clinvk with their content type
and caching headers; every page forbids any other origin (CSP) and builds no markup from data.
What it does in a browser is in test_browser_console.py."""

from __future__ import annotations

import base64
import hashlib
import os
import re

import pytest

from clinvk_lib.server import console, docs
from tests.serverutil import start_server  # noqa: F401  (fixture)

BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
CONSOLE_DIR = os.path.join(os.path.dirname(os.path.abspath(console.__file__)), "console")


@pytest.fixture
def srv(start_server):
    return start_server()


def test_a_browser_gets_the_console_at_the_root(srv):
    reply = srv.get("/", headers={"Accept": BROWSER_ACCEPT})
    assert reply.status == 200
    assert reply.headers["Content-Type"] == "text/html; charset=utf-8"
    assert b"<title>clinvk console</title>" in reply.body
    assert reply.headers["Cache-Control"] == "no-cache"


@pytest.mark.parametrize("accept", [None, "application/json", "*/*", "text/html;q=0"])
def test_any_other_client_keeps_getting_the_json_404(srv, accept):
    reply = srv.get("/", headers={"Accept": accept} if accept else {})
    assert reply.status == 404
    assert reply.headers["Content-Type"] == "application/json"
    assert reply.json()["error"] == "not_found"


def test_every_console_page_forbids_other_origins(srv):
    for path in ("/", "/docs"):
        csp = srv.get(path, headers={"Accept": BROWSER_ACCEPT}).headers["Content-Security-Policy"]
        directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
        assert directives["default-src"] == "'none'"
        for name in ("script-src", "connect-src", "img-src", "style-src"):
            assert not re.search(r"https?:|\*|'unsafe-", directives[name]), (path, name)
        assert directives["frame-ancestors"] == "'none'"


def test_the_docs_page_allows_its_own_inline_style_by_hash_only(srv):
    reply = srv.get("/docs")
    digest = base64.b64encode(hashlib.sha256(docs.CSS.encode("utf-8")).digest()).decode()
    assert "style-src 'self' 'sha256-%s'" % digest in reply.headers["Content-Security-Policy"]
    assert b"<style>" + docs.CSS.encode("utf-8") + b"</style>" in reply.body


def test_the_pages_ask_for_the_files_by_version_relative_to_the_server(srv):
    page = srv.get("/", headers={"Accept": BROWSER_ACCEPT}).body.decode()
    urls = re.findall(r'(?:src|href)="([^"#]+)"', page)
    assert sorted(u for u in urls if u.startswith("console/")) == sorted(
        "console/%s?v=%s" % (n, console.load(n)[1])
        for n in ("console.css",) + console.CONSOLE_SCRIPTS)


@pytest.mark.parametrize("name", sorted(console.ASSETS))
def test_each_file_has_its_content_type_an_etag_and_no_sniffing(srv, name):
    reply = srv.get("/console/" + name)
    assert reply.status == 200
    assert reply.headers["Content-Type"] == console.ASSETS[name]
    assert reply.headers["X-Content-Type-Options"] == "nosniff"
    with open(os.path.join(CONSOLE_DIR, name), "rb") as f:
        assert reply.body == f.read()
    assert reply.headers["ETag"] == '"%s"' % console.load(name)[1]


def test_a_file_asked_for_by_its_version_is_cached_for_a_year_else_revalidated(srv):
    version = console.load("core.js")[1]
    assert srv.get("/console/core.js?v=" + version).headers["Cache-Control"] == \
        "public, max-age=31536000, immutable"
    assert srv.get("/console/core.js?v=old").headers["Cache-Control"] == "no-cache"
    assert srv.get("/console/core.js").headers["Cache-Control"] == "no-cache"


def test_a_file_the_browser_has_is_a_304_without_a_body(srv):
    etag = srv.get("/console/core.js").headers["ETag"]
    reply = srv.get("/console/core.js", headers={"If-None-Match": etag})
    assert (reply.status, reply.body) == (304, b"")
    assert srv.get("/console/core.js", headers={"If-None-Match": '"other"'}).status == 200


@pytest.mark.parametrize("name", ["nope.js", "..%2fconsole.py", "core.js.map", "__init__.py"])
def test_only_the_consoles_own_files_are_served(srv, name):
    reply = srv.get("/console/" + name)
    assert reply.status == 404 and reply.json()["error"] == "not_found"


def test_the_console_and_its_files_need_no_key_but_the_api_behind_it_does(start_server):
    srv = start_server(**{"server.api_keys": ["k-0123456789abcdef"]})
    assert srv.get("/", headers={"Accept": BROWSER_ACCEPT}).status == 200
    assert srv.get("/console/core.js").status == 200
    assert srv.get("/api/v1/sessions").status == 401


def test_a_page_on_another_origin_cannot_load_the_console(srv):
    reply = srv.get("/", headers={"Accept": BROWSER_ACCEPT, "Sec-Fetch-Site": "cross-site",
                                  "Origin": "http://evil.example"})
    assert reply.status == 403


@pytest.mark.parametrize("name", sorted(n for n in console.ASSETS if n.endswith(".js")))
def test_the_scripts_build_no_markup_from_text_and_name_no_other_origin(name):
    with open(os.path.join(CONSOLE_DIR, name), encoding="utf-8") as f:
        source = f.read()
    assert not re.search(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval\(|"
                         r"new Function", source)
    assert not re.search(r"https?://", source)


def test_the_style_sheet_loads_nothing_from_elsewhere():
    with open(os.path.join(CONSOLE_DIR, "console.css"), encoding="utf-8") as f:
        css = f.read()
    assert "@import" not in css and "url(" not in css and "@font-face" not in css
