"""The ``/docs`` page: the OpenAPI document rendered as one self-contained HTML page.

Rendered on the server, with inline CSS and no script, font, image or stylesheet from
anywhere else: the hosts clinvk serves are often air-gapped.
"""

from __future__ import annotations

import html
import json
import shlex
from typing import Any, Dict, List, Tuple

_METHOD_ORDER = ("get", "post", "put", "patch", "delete")

CSS = """
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1d2330;
background:#f7f8fa}
nav{position:fixed;top:0;bottom:0;left:0;width:270px;overflow:auto;background:#1d2330;
color:#d6dae3;padding:16px;box-sizing:border-box;font-size:14px}
nav a{color:#d6dae3;text-decoration:none;display:block;padding:2px 0;overflow-wrap:anywhere}
nav a:hover{color:#fff}
nav h2{font-size:13px;text-transform:uppercase;letter-spacing:.05em;color:#8b93a5;
margin:18px 0 6px}
main{margin-left:270px;padding:24px 40px;max-width:1000px}
h1{margin-top:0}
section.op{background:#fff;border:1px solid #dde1e8;border-radius:6px;padding:16px 20px;
margin:16px 0}
.op h3{margin:0 0 6px;font-size:17px;font-family:ui-monospace,Menlo,Consolas,monospace}
.m{display:inline-block;min-width:58px;text-align:center;border-radius:4px;color:#fff;
font-size:12px;padding:2px 6px;margin-right:8px;font-family:system-ui,sans-serif}
.get{background:#2f7d4f}.post{background:#2c5fa8}.delete{background:#b23b3b}
.put,.patch{background:#8a5a14}
.summary{font-weight:600}
table{border-collapse:collapse;width:100%;margin:8px 0;font-size:14px}
th,td{border-bottom:1px solid #e6e9ef;text-align:left;padding:4px 8px;vertical-align:top}
th{background:#f0f2f6}
code,pre{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:13px}
pre{background:#1d2330;color:#e8ebf2;padding:12px;border-radius:4px;overflow:auto}
.req{color:#b23b3b;font-size:12px}
.muted{color:#545c6c}
.op h3,td{overflow-wrap:anywhere}
@media (max-width:800px){nav{position:static;width:auto;max-height:45vh}
main{margin-left:0;padding:12px 14px}table{display:block;overflow-x:auto}}
"""


def render_docs_html(openapi_doc: Dict[str, Any], head: str = "") -> str:
    """One HTML page listing every operation of ``openapi_doc`` grouped by tag: method, path,
    summary, parameters, request fields and a curl example. Every text is HTML-escaped;
    ``head`` (trusted markup: the console's <link> and <script> elements) goes in <head>."""
    info = openapi_doc.get("info", {})
    servers = openapi_doc.get("servers") or [{"url": "http://127.0.0.1:8080"}]
    base_url = servers[0]["url"].rstrip("/")
    groups = _operations_by_tag(openapi_doc)
    title = "%s %s" % (info.get("title", "API"), info.get("version", ""))

    nav: List[str] = []
    body: List[str] = []
    for tag, ops in groups:
        nav.append("<h2>%s</h2>" % _e(tag))
        body.append('<h2 id="%s">%s</h2>' % (_e(_anchor(tag)), _e(tag)))
        description = _tag_description(openapi_doc, tag)
        if description:
            body.append('<p class="muted">%s</p>' % _e(description))
        for method, path, op in ops:
            anchor = _anchor(op.get("operationId") or method + path)
            nav.append('<a href="#%s"><code>%s %s</code></a>'
                       % (_e(anchor), _e(method.upper()), _e(path)))
            body.append(_render_operation(openapi_doc, base_url, method, path, op, anchor))

    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>%s</title>" % _e(title),
        head,                           # before the page's own style, which wins over it
        "<style>%s</style>" % CSS,
        "</head><body>",
        "<nav><strong>%s</strong>%s</nav>" % (_e(title), "".join(nav)),
        '<main id="main"><p class="muted"><a href="./">Console</a> (runs, sessions, chat, '
        'usage)</p><h1>%s</h1>' % _e(title),
        "<p>%s</p>" % _e(info.get("description", "")),
        '<p class="muted">Machine-readable: <a href="openapi.json">openapi.json</a></p>',
        "\n".join(body),
        "</main></body></html>",
        "",
    ])


def _operations_by_tag(doc: Dict[str, Any]) -> List[Tuple[str, List[Tuple[str, str, dict]]]]:
    order = [t["name"] for t in doc.get("tags", [])]
    groups: Dict[str, List[Tuple[str, str, dict]]] = {}
    for path, item in doc.get("paths", {}).items():
        for method in _METHOD_ORDER:
            if method in item:
                op = item[method]
                tag = (op.get("tags") or ["Other"])[0]
                groups.setdefault(tag, []).append((method, path, op))
                if tag not in order:
                    order.append(tag)
    return [(tag, groups[tag]) for tag in order if tag in groups]


def _tag_description(doc: Dict[str, Any], tag: str) -> str:
    for t in doc.get("tags", []):
        if t.get("name") == tag:
            return t.get("description", "")
    return ""


def _render_operation(doc: Dict[str, Any], base_url: str, method: str, path: str, op: dict,
                      anchor: str) -> str:
    out = ['<section class="op" id="%s" data-op="%s" data-method="%s" data-path="%s">'
           % (_e(anchor), _e(op.get("operationId", "")), _e(method), _e(path)),
           '<h3><span class="m %s">%s</span>%s</h3>' % (_e(method), _e(method.upper()), _e(path)),
           '<div class="summary">%s</div>' % _e(op.get("summary", ""))]
    if op.get("description"):
        out.append("<p>%s</p>" % _e(op["description"]))
    if op.get("security") == []:
        out.append('<p class="muted">No API key needed.</p>')

    params = op.get("parameters", [])
    if params:
        out.append("<h4>Parameters</h4>")
        rows = [(p["name"], p.get("in", ""), _type_name(doc, p.get("schema", {})),
                 p.get("required", False), _field_notes(doc, p.get("schema", {}),
                                                        p.get("description", "")))
                for p in params]
        out.append(_table(("Name", "In", "Type", "Required", "Description"), rows))

    media = op.get("requestBody", {}).get("content", {}).get("application/json")
    if media:
        out.append("<h4>Request body <span class=\"muted\">(application/json)</span></h4>")
        rows = [(name, "body", type_name, required, notes)
                for name, type_name, required, notes in _fields(doc, media["schema"], "")]
        out.append(_table(("Field", "In", "Type", "Required", "Description"), rows))

    out.append("<h4>Responses</h4><ul>")
    for status, resp in op.get("responses", {}).items():
        types = ", ".join(resp.get("content", {}))
        out.append("<li><code>%s</code> %s%s</li>" % (
            _e(status), _e(resp.get("description", "")),
            ' <span class="muted">(%s)</span>' % _e(types) if types else ""))
    out.append("</ul>")

    out.append("<h4>Example</h4><pre>%s</pre>" % _e(_curl(base_url, method, path, op)))
    placeholders = _placeholder_notes(op)
    if placeholders:
        out.append('<p class="muted">%s</p>' % _e(" ".join(placeholders)))
    out.append("</section>")
    return "\n".join(out)


def _table(headers: Tuple[str, ...], rows: List[Tuple[str, str, str, bool, str]]) -> str:
    head = "".join("<th>%s</th>" % _e(h) for h in headers)
    lines = []
    for name, where, type_name, required, notes in rows:
        lines.append("<tr><td><code>%s</code></td><td>%s</td><td>%s</td><td>%s</td><td>%s</td></tr>"
                     % (_e(name), _e(where), _e(type_name),
                        '<span class="req">required</span>' if required else "", _e(notes)))
    return "<table><tr>%s</tr>%s</table>" % (head, "".join(lines))


def _resolve(doc: Dict[str, Any], schema: dict) -> dict:
    while True:
        if "$ref" in schema:
            schema = doc["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
        elif "allOf" in schema and len(schema["allOf"]) == 1:
            merged = dict(_resolve(doc, schema["allOf"][0]))
            merged.update({k: v for k, v in schema.items() if k != "allOf"})
            schema = merged
        else:
            return schema


def _type_name(doc: Dict[str, Any], schema: dict) -> str:
    if "$ref" in schema:
        return schema["$ref"].rsplit("/", 1)[-1]
    if "allOf" in schema and len(schema["allOf"]) == 1:
        return _type_name(doc, schema["allOf"][0])
    if "oneOf" in schema:
        return " | ".join(_type_name(doc, alt) for alt in schema["oneOf"])
    kind = schema.get("type", "any")
    if kind == "array":
        return "array of " + _type_name(doc, schema.get("items", {}))
    if kind == "object" and "additionalProperties" in schema:
        return "map of " + _type_name(doc, schema["additionalProperties"])
    return kind


def _field_notes(doc: Dict[str, Any], schema: dict, description: str) -> str:
    schema = _resolve(doc, schema)
    notes = [description or schema.get("description", "")]
    if "enum" in schema:
        notes.append("One of: %s." % ", ".join(str(v) for v in schema["enum"]))
    bounds = [("minimum", ">="), ("maximum", "<=")]
    for key, sign in bounds:
        if key in schema:
            notes.append("%s %s." % (sign, schema[key]))
    if schema.get("default") not in (None, "", [], {}):
        notes.append("Default: %s." % json.dumps(schema["default"]))
    if schema.get("nullable"):
        notes.append("May be null.")
    return " ".join(n for n in notes if n)


def _fields(doc: Dict[str, Any], schema: dict, prefix: str) -> List[Tuple[str, str, bool, str]]:
    """(dotted name, type, required, notes) for every property, descending into objects and
    arrays of objects (``tasks[].backend``)."""
    schema = _resolve(doc, schema)
    required = set(schema.get("required", []))
    rows = []
    for name, prop in schema.get("properties", {}).items():
        full = prefix + name
        rows.append((full, _type_name(doc, prop), name in required,
                     _field_notes(doc, prop, prop.get("description", ""))))
        target = _resolve(doc, prop)
        if target.get("type") == "array":
            item = _resolve(doc, target.get("items", {}))
            if "properties" in item:
                rows.extend(_fields(doc, item, full + "[]."))
        elif "properties" in target:
            rows.extend(_fields(doc, target, full + "."))
    return rows


def _path_value(param: dict) -> str:
    """What the example puts in the URL for a path parameter: its example value, else its
    name in capitals, a placeholder the page tells the reader to replace."""
    return str(param.get("example", param["name"].upper()))


def _placeholder_notes(op: dict) -> List[str]:
    """One sentence per path parameter without an example value (a session id, which no
    example can know): the curl example runs once the reader puts a real one in its place."""
    return ["Replace %s in the URL with a real {%s}%s" % (
                _path_value(p), p["name"], ": " + p["description"] if p.get("description")
                else ".")
            for p in op.get("parameters", []) if p.get("in") == "path" and "example" not in p]


def _curl(base_url: str, method: str, path: str, op: dict) -> str:
    """A curl command that runs as written (path parameters without an example aside: see
    _placeholder_notes)."""
    for param in op.get("parameters", []):
        if param.get("in") == "path":
            path = path.replace("{%s}" % param["name"], _path_value(param))
    parts = ["curl"]
    streams = op.get("responses", {}).get("200", {}).get("content", {})
    if "text/event-stream" in streams or "application/x-ndjson" in streams:
        parts.append("-N")              # print events as they arrive
    if method != "get":
        parts.append("-X " + method.upper())
    parts.append(shlex.quote(base_url + path))
    lines = [" ".join(parts)]
    if "text/html" in streams:
        lines.append("-H 'Accept: text/html'")    # what a browser asks for (the console)
    if op.get("security") != []:
        lines.append('-H "X-Api-Key: $CLINVK_API_KEY"')
    media = op.get("requestBody", {}).get("content", {}).get("application/json")
    if media or method in ("post", "put", "patch"):
        # Even without a body: the cross-site guard refuses a POST that is not JSON.
        lines.append("-H 'Content-Type: application/json'")
    if media:
        example = media.get("example", {})
        lines.append("-d " + shlex.quote(json.dumps(example, indent=2, ensure_ascii=False)))
    return " \\\n  ".join(lines)


def _anchor(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text).strip("-").lower()


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)
