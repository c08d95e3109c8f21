"""Method + path-template routing (``/api/v1/sessions/{id}``) for the HTTP server.

A template is split on ``/``; a ``{name}`` segment matches any one non-empty segment of the
request path and is handed to the handler, percent-decoded. Matching is exact: no trailing
slash tolerance, no ``..`` resolution (a path that is not a template simply does not match).
``HEAD`` is served by the ``GET`` route of a path; ``OPTIONS`` is answered by the server with
the ``Allow`` list (``allowed()``) unless a route claims it.
"""

from __future__ import annotations

from typing import Any, Dict, List, NamedTuple, Optional, Tuple
from urllib.parse import unquote


class Route(NamedTuple):
    method: str
    template: str
    target: Any                     # whatever the caller registered (handler, spec, ...)


class Match(NamedTuple):
    """What ``Router.match`` found. ``route`` is None when nothing answers this method here:
    then ``allow`` is empty for an unknown path (404) or lists the path's methods (405)."""

    route: Optional[Route]
    params: Dict[str, str]
    allow: Tuple[str, ...]


_NO_MATCH = Match(None, {}, ())


def split_template(template: str) -> Tuple[str, ...]:
    """The segments of a template; raises ValueError for a malformed one."""
    if not template.startswith("/"):
        raise ValueError("route template must start with '/': %r" % template)
    segments = tuple(template[1:].split("/"))
    for seg in segments:
        if "{" in seg or "}" in seg:
            if not (seg.startswith("{") and seg.endswith("}") and len(seg) > 2
                    and "{" not in seg[1:-1] and "}" not in seg[1:-1]):
                raise ValueError("a template segment is a literal or one {name}: %r in %r"
                                 % (seg, template))
    return segments


def _is_param(segment: str) -> bool:
    return segment.startswith("{")


class Router:
    """Routes registered with ``add``; ``match`` finds the one for a request."""

    def __init__(self) -> None:
        self._routes: List[Route] = []
        # Literal templates by path, for one dict lookup; templates with parameters by length.
        self._static: Dict[str, Dict[str, Route]] = {}
        self._dynamic: Dict[int, List[Tuple[Tuple[str, ...], Dict[str, Route]]]] = {}

    @property
    def routes(self) -> List[Route]:
        """Every route, in registration order."""
        return list(self._routes)

    def add(self, method: str, template: str, target: Any) -> Route:
        """Register ``target`` for ``method`` on ``template``; a duplicate is a ValueError."""
        method = method.upper()
        segments = split_template(template)
        if any(_is_param(s) for s in segments):
            by_method = None
            for known, methods in self._dynamic.get(len(segments), []):
                if known == segments:
                    by_method = methods
            if by_method is None:
                by_method = {}
                self._dynamic.setdefault(len(segments), []).append((segments, by_method))
        else:
            by_method = self._static.setdefault(template, {})
        if method in by_method:
            raise ValueError("route %s %s is already registered" % (method, template))
        route = Route(method, template, target)
        by_method[method] = route
        self._routes.append(route)
        return route

    def match(self, method: str, path: str) -> Match:
        """The route for ``method`` on ``path`` (the request target without its query)."""
        by_method, params = self._lookup(path)
        if by_method is None:
            return _NO_MATCH
        route = by_method.get(method)
        if route is None and method == "HEAD":
            route = by_method.get("GET")
        if route is None:
            return Match(None, params, _allow(by_method))
        return Match(route, params, ())

    def allowed(self, path: str) -> Tuple[str, ...]:
        """The methods ``path`` answers (empty for an unknown path)."""
        by_method, _ = self._lookup(path)
        return _allow(by_method) if by_method is not None else ()

    def _lookup(self, path: str) -> Tuple[Optional[Dict[str, Route]], Dict[str, str]]:
        if not path.startswith("/"):
            return None, {}
        parts = path[1:].split("/")
        decoded = [unquote(p, errors="replace") for p in parts]
        # A segment holding an encoded "/" (%2F) is one segment, never a path separator.
        if not any("/" in d for d in decoded):
            by_method = self._static.get("/" + "/".join(decoded))
            if by_method is not None:
                return by_method, {}
        for segments, methods in self._dynamic.get(len(parts), ()):
            params = _bind(segments, decoded)
            if params is not None:
                return methods, params
        return None, {}


def _bind(segments: Tuple[str, ...], parts: List[str]) -> Optional[Dict[str, str]]:
    params: Dict[str, str] = {}
    for seg, part in zip(segments, parts):
        if _is_param(seg):
            if not part:
                return None
            params[seg[1:-1]] = part
        elif seg != part:
            return None
    return params


def _allow(by_method: Dict[str, Route]) -> Tuple[str, ...]:
    methods = set(by_method)
    if "GET" in methods:
        methods.add("HEAD")
    methods.add("OPTIONS")
    order = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
    return tuple(sorted(methods, key=lambda m: (order.index(m) if m in order else len(order), m)))
