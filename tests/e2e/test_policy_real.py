"""The path policy against the REAL claude, codex and gemini behind `clinvk serve` (the built
zipapp): a path list with a blocked element is refused before the CLI starts, and an allowed
list reaches the real CLI in the form clinvk passes it on, which the CLI reads as both paths.

How each CLI reads its path flag (the declarations in clinvk_lib/backends/*.py): gemini 0.61.0
splits --include-directories on commas; codex-cli 0.169.0 splits --image on commas and takes
several words after it; claude 2.1.197 takes several words after --add-dir and no commas.
"""

from __future__ import annotations

import http.client
import json
import os
import stat
import struct
import zlib
from pathlib import Path
from typing import Any, Dict, List

import pytest

from tests.e2e.conftest import BACKENDS, KIND

# {a} and {b} are two allowed directories (codex: two PNG files in them).
BLOCKED = {
    "claude": ["--add-dir", "{a}", "/etc"],
    "codex": ["--image={a},/etc/passwd"],
    "gemini": ["--include-directories={a},/etc"],
}
ALLOWED = {
    "claude": ["--add-dir", "{a}", "{b}"],
    "codex": ["-i", "{a},{b}"],
    "gemini": ["--include-directories={a},{b}"],
}


def png() -> bytes:
    """A valid 1x1 PNG (codex reads and attaches the image)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00")) + chunk(b"IEND", b""))


@pytest.fixture
def started_log(tmp_path: Path) -> Path:
    """Where the wrappers in front of the real CLIs note each start."""
    return tmp_path / "started.log"


@pytest.fixture
def clinvk_env(clinvk_env: Dict[str, str], tmp_path: Path, real_clis: str,
               started_log: Path) -> Dict[str, str]:
    """The server's environment with a wrapper first on PATH for each CLI: it notes the start
    in ``started_log``, then execs the real CLI."""
    wrappers = tmp_path / "wrappers"
    wrappers.mkdir()
    for name in BACKENDS:
        script = wrappers / name
        script.write_text("#!/bin/sh\necho %s >> '%s'\nexec '%s' \"$@\"\n"
                          % (name, started_log, os.path.join(real_clis, name)))
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return dict(clinvk_env, PATH=str(wrappers) + os.pathsep + clinvk_env["PATH"])


@pytest.fixture
def paths(tmp_path: Path) -> Dict[str, str]:
    """{backend: {"a": ..., "b": ...}}-style values: two allowed directories, or for codex two
    images."""
    out = {}
    for name in ("a", "b"):
        folder = tmp_path / ("dir-" + name)
        folder.mkdir()
        (folder / "pixel.png").write_bytes(png())
        out[name] = os.path.realpath(str(folder))
    return out


def values(backend: str, flags: List[str], paths: Dict[str, str]) -> List[str]:
    if backend == "codex":
        paths = {k: os.path.join(v, "pixel.png") for k, v in paths.items()}
    return [f.format(**paths) for f in flags]


def post(port: int, body: Dict[str, Any]):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=240)
    try:
        conn.request("POST", "/api/v1/prompt", json.dumps(body),
                     {"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_path_list_with_a_blocked_element_never_starts_the_real_cli(
        backend, serve_port, fake_api, workdir, paths, started_log):
    status, body = post(serve_port, {"backend": backend, "prompt": "list", "workdir": workdir,
                                     "extra": values(backend, BLOCKED[backend], paths)})
    assert status == 400 and body["field"].startswith("extra["), body
    assert "blocked prefix /etc" in body["message"]
    assert not started_log.exists() and fake_api.requests == []


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_allowed_path_list_is_valid_argv_for_the_real_cli(
        backend, serve_port, fake_api, workdir, paths, started_log):
    extra = values(backend, ALLOWED[backend], paths)
    status, body = post(serve_port, {"backend": backend, "prompt": "two paths",
                                     "workdir": workdir, "extra": extra})
    assert status == 200 and body["exit_code"] == 0, body
    assert started_log.read_text().split() == [backend]
    turn = json.dumps(fake_api.main_requests(KIND[backend])[-1]["json"])
    wanted = values(backend, ["{a}", "{b}"], paths)
    assert all(json.dumps(p)[1:-1] in turn for p in wanted), (wanted, turn[:2000])
    # codex-cli 0.169.0 reports a word it took as an image it could not read ("-" among them).
    assert "could not read" not in turn
