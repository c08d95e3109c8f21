"""Which backends are installed: PATH lookup, and the CLI's own ``--version`` on request."""

from __future__ import annotations

import os
import threading
import time
from typing import Any, Dict, List, Optional

from .. import runner
from . import base

VERSION_TIMEOUT = 10.0
_cache_lock = threading.Lock()
_cache: Dict[str, Any] = {}


def cli_version(backend: base.Backend, executable: str) -> str:
    """The first line the CLI prints for ``--version`` ("" when it fails or is slow). It runs
    like a backend run: supervised, in the backend's environment (no server secrets)."""
    try:
        out, outcome = runner.run(backend.version_argv(executable),
                                  env=backend.child_env(dict(os.environ)),
                                  timeout=VERSION_TIMEOUT)
    except runner.StartError:
        return ""
    lines = out.strip().splitlines()
    return lines[0].strip() if lines and not outcome.timed_out else ""


def probe_all(cfg=None, with_version: bool = True) -> List[Dict[str, Any]]:
    """One entry per backend, in stable order: name, available, enabled, path, version."""
    rows = []
    for name in base.NAMES:
        b = base.get(name)
        path = b.find_executable()
        enabled = cfg is None or cfg.backend_enabled(name)
        rows.append({"name": name, "available": path is not None, "enabled": enabled,
                     "path": path or "", "version": ""})
    if with_version:
        def fill(row: Dict[str, Any]) -> None:
            row["version"] = cli_version(base.get(row["name"]), row["path"])
        threads = [threading.Thread(target=fill, args=(r,), daemon=True)
                   for r in rows if r["available"]]
        for t in threads:
            t.start()
        for t in threads:
            t.join(VERSION_TIMEOUT + 1)
    return rows


def availability(ttl: float = 5.0, now: Optional[float] = None) -> Dict[str, bool]:
    """name -> on PATH, cached for ``ttl`` seconds (the server asks on every /health)."""
    now = time.monotonic() if now is None else now
    with _cache_lock:
        if _cache.get("at") is not None and now - _cache["at"] < ttl:
            return dict(_cache["value"])
    value = {r["name"]: r["available"] for r in probe_all(with_version=False)}
    with _cache_lock:
        _cache["at"], _cache["value"] = now, value
    return dict(value)
