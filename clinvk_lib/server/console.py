"""The web console: ``GET /`` in a browser, and its scripts and style sheet
(``GET /console/{name}``), all served by clinvk itself from the files in ``console/`` beside
this module (inside dist/clinvk.pyz too). No CDN, font or external script: the hosts clinvk
serves are often air-gapped.

The console is a client of the documented API and nothing more: it keeps no state on the
server, sends the API key the user typed (kept in the tab's sessionStorage) as X-Api-Key, and
its requests are same-origin, so the cross-site guards let them through as they would any
page of this origin. Every page it serves carries a Content-Security-Policy that allows this
origin only (``page_headers``).
"""

from __future__ import annotations

import base64
import hashlib
import pkgutil
import threading
from typing import Dict, List, Optional, Tuple

from . import errors, openapi
from .app import App
from .context import Context
from .http import Response

# name -> content type: the files of console/ that are served, and nothing else.
ASSETS = {
    "console.css": "text/css; charset=utf-8",
    "core.js": "text/javascript; charset=utf-8",
    "pages.js": "text/javascript; charset=utf-8",
    "chat.js": "text/javascript; charset=utf-8",
    "tryit.js": "text/javascript; charset=utf-8",
}
CONSOLE_SCRIPTS = ("core.js", "chat.js", "pages.js")     # the router (pages.js) last
DOCS_SCRIPTS = ("core.js", "tryit.js")

IMMUTABLE = "public, max-age=31536000, immutable"   # an asset asked for by its version
REVALIDATE = "no-cache"                             # anything else: ask again (ETag) each time

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'%s; img-src 'self' data:; "
       "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")

_loaded: Dict[str, Tuple[bytes, str]] = {}
_lock = threading.Lock()


def register(app: App) -> None:
    handlers = {"getConsole": console_page, "getConsoleAsset": asset}
    for spec in openapi.DEFAULT_ROUTES:
        handler = handlers.get(spec.operation_id)
        if handler is not None:
            app.add_route(spec, handler)


def load(name: str) -> Tuple[bytes, str]:
    """(bytes, version) of the asset ``name``; the version is a hash of its bytes."""
    with _lock:
        if name not in _loaded:
            data = pkgutil.get_data(__name__.rpartition(".")[0], "console/" + name)
            if data is None:
                raise FileNotFoundError(name)
            _loaded[name] = (data, hashlib.sha256(data).hexdigest()[:16])
        return _loaded[name]


def asset_url(name: str) -> str:
    """The versioned URL of an asset, relative to a page at the server's root."""
    return "console/%s?v=%s" % (name, load(name)[1])


def page_headers(inline_style: str = "") -> List[Tuple[str, str]]:
    """The headers of an HTML page: a CSP allowing this origin only (and ``inline_style``,
    by its hash, when the page has one <style> element), no sniffing, no referrer, no
    framing, revalidated on every load."""
    extra = ""
    if inline_style:
        digest = hashlib.sha256(inline_style.encode("utf-8")).digest()
        extra = " 'sha256-%s'" % base64.b64encode(digest).decode("ascii")
    return [("Content-Security-Policy", CSP % extra), ("X-Content-Type-Options", "nosniff"),
            ("Referrer-Policy", "no-referrer"), ("X-Frame-Options", "DENY"),
            ("Cache-Control", REVALIDATE)]


def head_tags(scripts: Tuple[str, ...]) -> str:
    """The <link> and <script> elements of a page that uses ``scripts``."""
    # The empty icon keeps the browser from asking for /favicon.ico.
    tags = ['<link rel="icon" href="data:,">',
            '<link rel="stylesheet" href="%s">' % asset_url("console.css")]
    tags += ['<script src="%s" defer></script>' % asset_url(s) for s in scripts]
    return "\n".join(tags)


def wants_html(accept: str) -> bool:
    """True when an Accept header asks for text/html (what a browser's navigation sends),
    unless with q=0."""
    for item in accept.split(","):
        media, _, params = item.partition(";")
        if media.strip().lower() == "text/html":
            return not any(p.strip().replace(" ", "") in ("q=0", "q=0.0", "q=0.00", "q=0.000")
                           for p in params.split(";"))
    return False


def console_page(ctx: Context) -> Response:
    """The console for a browser; the 404 a JSON client always got for anyone else."""
    if not wants_html(ctx.headers.get("Accept", "")):
        raise errors.not_found(ctx.method, ctx.path)
    return Response(200, render_console().encode("utf-8"), "text/html; charset=utf-8",
                    page_headers())


def render_console() -> str:
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>clinvk console</title>",
        head_tags(CONSOLE_SCRIPTS),
        "</head><body>",
        '<a class="skip" href="#main">Skip to content</a>',
        '<header class="top"><span class="brand">clinvk</span>',
        '<nav aria-label="Pages"><ul>',
        '<li><a href="#runs">Runs</a></li><li><a href="#sessions">Sessions</a></li>',
        '<li><a href="#chat">Chat</a></li><li><a href="#usage">Usage</a></li>',
        '<li><a href="docs">API &amp; Try it</a></li></ul></nav>',
        '<div id="key-slot"></div></header>',
        '<main id="main" tabindex="-1"><p>Loading...</p>',
        "<noscript><p>The console needs JavaScript. The API reference is at "
        '<a href="docs">docs</a>.</p></noscript></main>',
        "</body></html>", ""])


def asset(ctx: Context) -> Response:
    """A console file with its content type and an ETag; a year of caching when asked for by
    its current version (the pages do), else revalidated."""
    name = ctx.params["name"]
    if name not in ASSETS:
        raise errors.ApiError(404, "not_found", "no console file %r (there are: %s)"
                              % (name[:80], ", ".join(sorted(ASSETS))), "name")
    data, version = load(name)
    etag = '"%s"' % version
    caching = IMMUTABLE if ctx.query().get("v") == version else REVALIDATE
    headers = [("ETag", etag), ("Cache-Control", caching),
               ("X-Content-Type-Options", "nosniff"), ("Referrer-Policy", "no-referrer")]
    if _matches(ctx.headers.get("If-None-Match"), etag):
        return Response(304, b"", ASSETS[name], headers)
    return Response(200, data, ASSETS[name], headers)


def _matches(if_none_match: Optional[str], etag: str) -> bool:
    """RFC 9110 13.1.2: ``*`` or one of the listed tags (weak comparison)."""
    if not if_none_match:
        return False
    tags = [t.strip() for t in if_none_match.split(",")]
    return "*" in tags or any((t[2:] if t.startswith("W/") else t) == etag for t in tags)
