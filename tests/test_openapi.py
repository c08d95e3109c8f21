"""The OpenAPI document and the /docs page rendered from it."""

from __future__ import annotations

import html
import os
import json
import re
import shutil
import subprocess

import pytest

from tests.serverutil import start_server  # noqa: F401  (fixture)

from clinvk_lib.schema import to_json_schema, validate
from clinvk_lib.shapes import PromptRequest
from clinvk_lib.server.docs import render_docs_html
from clinvk_lib.server.openapi import DEFAULT_ROUTES, Operation, build_openapi

EVERY_ROUTE = {
    ("get", "/health"), ("get", "/metrics"), ("get", "/openapi.json"), ("get", "/docs"),
    ("post", "/api/v1/prompt"), ("post", "/api/v1/parallel"), ("post", "/api/v1/chain"),
    ("post", "/api/v1/compare"), ("get", "/api/v1/backends"), ("get", "/api/v1/sessions"),
    ("get", "/api/v1/sessions/{id}"), ("delete", "/api/v1/sessions/{id}"),
    ("post", "/api/v1/jobs"), ("get", "/api/v1/jobs"), ("get", "/api/v1/jobs/{id}"),
    ("delete", "/api/v1/jobs/{id}"), ("get", "/api/v1/jobs/{id}/events"),
    ("get", "/openai/v1/models"), ("get", "/openai/v1/models/{id}"),
    ("post", "/openai/v1/chat/completions"), ("post", "/openai/v1/responses"),
    ("get", "/openai/v1/responses/{id}"), ("delete", "/openai/v1/responses/{id}"),
    ("post", "/openai/v1/responses/{id}/cancel"), ("get", "/openai/v1/responses/{id}/input_items"),
    ("post", "/anthropic/v1/messages"),
    ("post", "/anthropic/v1/messages/count_tokens"),
    ("get", "/api/v1/runs"), ("get", "/api/v1/runs/{id}/events"), ("delete", "/api/v1/runs/{id}"),
    ("get", "/api/v1/usage"), ("get", "/"), ("get", "/console/{name}"),
}
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


@pytest.fixture(scope="module")
def doc():
    return build_openapi(version="9.9.9")


def operations(doc):
    for path, item in doc["paths"].items():
        for method, op in item.items():
            yield method, path, op


def structural_problems(doc) -> list:
    """The OpenAPI 3.0 rules this project relies on, checked without third-party code."""
    problems = []
    if doc.get("openapi") != "3.0.3":
        problems.append("openapi version")
    if not doc.get("info", {}).get("title") or not doc["info"].get("version"):
        problems.append("info.title/version")
    known_tags = {t["name"] for t in doc.get("tags", [])}
    schemes = doc["components"]["securitySchemes"]
    for requirement in doc.get("security", []):
        problems.extend("unknown security scheme " + k for k in requirement if k not in schemes)
    seen_ids = set()
    for path, item in doc["paths"].items():
        if not path.startswith("/"):
            problems.append("path %s must start with /" % path)
        for method, op in item.items():
            where = "%s %s" % (method, path)
            if method not in METHODS:
                problems.append(where + ": unknown method")
            if op["operationId"] in seen_ids:
                problems.append(where + ": duplicate operationId")
            seen_ids.add(op["operationId"])
            problems.extend(where + ": unknown tag " + t for t in op["tags"] if t not in known_tags)
            if not op.get("responses"):
                problems.append(where + ": no responses")
            for status, resp in op["responses"].items():
                if not re.match(r"^[1-5]\d\d$", status) or not resp.get("description"):
                    problems.append("%s: response %s" % (where, status))
            declared = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            if declared != set(re.findall(r"{([^}]+)}", path)):
                problems.append(where + ": path parameters")
            for p in op.get("parameters", []):
                if p["in"] == "path" and p.get("required") is not True:
                    problems.append(where + ": path parameter must be required")
    text = json.dumps(doc)
    for ref in re.findall(r'"\$ref": "([^"]+)"', text):
        name = ref.rsplit("/", 1)[-1]
        if not ref.startswith("#/components/schemas/") or name not in doc["components"]["schemas"]:
            problems.append("dangling $ref " + ref)
    return problems


def test_document_has_no_structural_problems(doc):
    assert structural_problems(doc) == []


def test_structural_check_notices_a_dangling_reference(doc):
    broken = json.loads(json.dumps(doc))
    del broken["components"]["schemas"]["PromptRequest"]
    assert "dangling $ref #/components/schemas/PromptRequest" in structural_problems(broken)


def test_document_passes_openapi_spec_validator(doc):
    validator = pytest.importorskip("openapi_spec_validator")
    validator.validate(doc)


def test_every_route_of_the_api_is_documented(doc):
    assert {(m, p) for m, p, _ in operations(doc)} == EVERY_ROUTE


def test_document_is_plain_json(doc):
    assert json.loads(json.dumps(doc)) == doc


def test_version_and_server_url_are_the_callers():
    doc = build_openapi(version="1.2.3", server_url="http://10.0.0.5:9000")
    assert doc["info"]["version"] == "1.2.3"
    assert doc["servers"] == [{"url": "http://10.0.0.5:9000"}]


def test_request_bodies_come_from_the_schema_table(doc):
    media = doc["paths"]["/api/v1/prompt"]["post"]["requestBody"]["content"]["application/json"]
    assert media["schema"] == {"$ref": "#/components/schemas/PromptRequest"}
    assert doc["components"]["schemas"]["PromptRequest"] == to_json_schema(PromptRequest)


def test_every_request_body_has_an_example_that_validates(doc):
    for route in DEFAULT_ROUTES:
        if route.request is None:
            continue
        media = doc["paths"][route.path][route.method.lower()]["requestBody"]["content"]
        validate(route.request, media["application/json"]["example"])


def test_health_docs_and_document_need_no_api_key(doc):
    public = {(m, p) for m, p, op in operations(doc) if op.get("security") == []}
    assert public == {("get", "/health"), ("get", "/docs"), ("get", "/openapi.json"),
                      ("get", "/"), ("get", "/console/{name}")}


def test_both_key_headers_are_security_schemes(doc):
    schemes = doc["components"]["securitySchemes"]
    assert schemes["ApiKeyAuth"] == {"type": "apiKey", "in": "header", "name": "X-Api-Key"}
    assert schemes["BearerAuth"] == {"type": "http", "scheme": "bearer"}


def test_streaming_routes_list_their_stream_media_types(doc):
    def media(path):
        return set(doc["paths"][path]["post"]["responses"]["200"]["content"])
    assert media("/api/v1/prompt") == {"application/json", "application/x-ndjson"}
    assert media("/openai/v1/chat/completions") == {"application/json", "text/event-stream"}
    assert media("/anthropic/v1/messages") == {"application/json", "text/event-stream"}


def test_errors_use_each_api_styles_body(doc):
    def error_ref(method, path, status):
        schema = doc["paths"][path][method]["responses"][status]["content"]["application/json"]
        return schema["schema"]["$ref"].rsplit("/", 1)[-1]
    assert error_ref("post", "/api/v1/prompt", "400") == "Error"
    assert error_ref("post", "/openai/v1/chat/completions", "404") == "OpenAIError"
    assert error_ref("post", "/anthropic/v1/messages", "400") == "AnthropicError"


def test_rate_limit_response_documents_its_headers(doc):
    headers = doc["paths"]["/api/v1/prompt"]["post"]["responses"]["429"]["headers"]
    assert set(headers) == {"Retry-After", "RateLimit-Limit", "RateLimit-Remaining"}


def test_session_list_query_parameters_are_documented(doc):
    params = doc["paths"]["/api/v1/sessions"]["get"]["parameters"]
    assert [(p["name"], p["in"]) for p in params] == \
        [("backend", "query"), ("workdir", "query"), ("status", "query"), ("limit", "query"),
         ("offset", "query")]


def required_of(doc, name):
    return set(doc["components"]["schemas"][name].get("required", []))


@pytest.mark.parametrize("schema,fields", [
    ("PromptResponse", {"output", "error"}),
    ("TaskResult", {"output", "error"}),
    ("ChainStepResult", {"output", "error"}),
    ("CompareResult", {"output", "error"}),
    ("ParallelResponse", {"completed", "failed", "cancelled", "total_tasks"}),
    ("ChainResponse", {"failed_step"}),
    ("SessionStoreHealth", {"error"}),
    ("SessionsList", {"limit"}),
    ("SessionDetail", {"metadata"}),
])
def test_fields_every_reply_carries_are_required_in_the_document(doc, schema, fields):
    assert fields <= required_of(doc, schema)


def missing_required(doc, schema, value, path=""):
    """The paths of the required properties ``value`` (a reply or an example) lacks, through
    the $ref, allOf, objects and arrays of ``schema`` in the OpenAPI document ``doc``."""
    while "$ref" in schema or "allOf" in schema:
        schema = doc["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]] \
            if "$ref" in schema else schema["allOf"][0]
    if isinstance(value, list):
        return [p for i, v in enumerate(value)
                for p in missing_required(doc, schema.get("items", {}), v, "%s[%d]" % (path, i))]
    if not isinstance(value, dict):
        return []
    out = ["%s.%s" % (path, k) for k in schema.get("required", []) if k not in value]
    for k, prop in schema.get("properties", {}).items():
        if k in value:
            out += missing_required(doc, prop, value[k], path + "." + k)
    return out


def success(op):
    """The operation's documented success answer (200, or 202 for one accepted to run)."""
    return next(v for k, v in op["responses"].items() if k.startswith("2"))


def test_every_response_example_has_every_required_field(doc):
    for method, path, op in operations(doc):
        media = success(op)["content"].get("application/json", {})
        if "example" in media:
            assert missing_required(doc, media["schema"], media["example"]) == [], \
                (method, path)


def test_session_details_document_the_metadata(doc):
    schema = doc["paths"]["/api/v1/sessions/{id}"]["get"]["responses"]["200"]["content"][
        "application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/SessionDetail"}
    assert "metadata" in doc["components"]["schemas"]["SessionDetail"]["properties"]
    assert "metadata" not in doc["components"]["schemas"]["Session"]["properties"]


def test_session_list_limit_defaults_to_100(doc):
    limit = [p for p in doc["paths"]["/api/v1/sessions"]["get"]["parameters"]
             if p["name"] == "limit"][0]
    assert limit["schema"]["default"] == 100


def test_no_example_carries_a_made_up_path_that_would_be_refused(doc):
    assert "/path/to/" not in json.dumps(doc)


def test_starting_a_job_documents_202_with_its_location(doc):
    responses = doc["paths"]["/api/v1/jobs"]["post"]["responses"]
    assert "200" not in responses and "Location" in responses["202"]["headers"]
    assert responses["202"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Job"}


def test_job_events_document_ndjson_and_sse(doc):
    ok = doc["paths"]["/api/v1/jobs/{id}/events"]["get"]["responses"]["200"]
    assert set(ok["content"]) == {"application/x-ndjson", "text/event-stream"}
    assert "Accept: text/event-stream" in ok["description"]


def test_non_json_routes_declare_their_media_type(doc):
    assert set(doc["paths"]["/metrics"]["get"]["responses"]["200"]["content"]) == {"text/plain"}
    assert set(doc["paths"]["/docs"]["get"]["responses"]["200"]["content"]) == {"text/html"}


# --- /docs ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def page(doc):
    return render_docs_html(doc)


def test_docs_page_lists_every_path_with_its_method(page):
    for method, path in EVERY_ROUTE:
        assert "%s</span>%s</h3>" % (method.upper(), html.escape(path)) in page


def test_docs_page_groups_endpoints_by_api_style(page):
    positions = [page.index('<h2 id="%s">' % tag) for tag in
                 ("native-api", "openai-compatible", "anthropic-compatible", "meta")]
    assert positions == sorted(positions)


def test_docs_page_loads_nothing_from_elsewhere(page):
    assert not re.search(r"<(script|link|img|iframe)\b", page, re.I)
    assert "@import" not in page and "url(" not in page
    for href in re.findall(r'href="([^"]*)"', page):
        assert href.startswith("#") or href in ("openapi.json", "./"), href


def test_docs_page_lists_nested_request_fields(page):
    assert "<code>tasks[].backend</code>" in page
    assert "<code>messages[].content</code>" in page


def test_docs_page_shows_a_curl_example_with_the_json_body(page):
    text = html.unescape(page)
    assert "curl -N -X POST http://127.0.0.1:8080/api/v1/prompt" in text
    assert '"prompt": "explain this code"' in text


def test_docs_curl_fills_path_parameters_with_their_example(page):
    assert "curl http://127.0.0.1:8080/openai/v1/models/claude" in html.unescape(page)


def test_docs_curl_marks_a_session_id_as_a_placeholder_to_replace(page):
    text = html.unescape(page)
    assert "curl -X DELETE http://127.0.0.1:8080/api/v1/sessions/ID" in text
    assert "Replace ID in the URL with a real {id}: Session id, or a unique prefix of one." \
        in text


def test_docs_page_escapes_every_text():
    route = Operation("GET", "/x", "x", "Meta", "<script>alert(1)</script>",
                      description='"quoted" & <b>')
    page = render_docs_html(build_openapi([route]))
    assert "<script>" not in page and "<b>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_served_docs_page_renders_every_endpoint_in_headless_chromium(start_server, tmp_path):
    server = start_server(**{"server.metrics_enabled": True})    # so /metrics is served too
    if not shutil.which("chromium"):
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is not installed (./test.sh installs it); CI requires this test")
        pytest.skip("chromium not installed")
    # Flags as the machine notes say: no background networking, no first-run, empty profile.
    dom = subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--user-data-dir=%s" % (tmp_path / "profile"), "--dump-dom",
         server.url + "/docs"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=90, check=True,
    ).stdout.decode("utf-8")
    rendered = re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", dom)))
    for method, route_path in EVERY_ROUTE:
        assert "%s %s" % (method.upper(), route_path) in rendered
