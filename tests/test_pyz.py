"""dist/clinvk.pyz: reproducible, only our modules, runs on 3.8 and 3.13, caches bytecode safely."""

from __future__ import annotations

import hashlib
import os
import re
import stat
import subprocess
import sys
import urllib.request
import zipfile

import pytest

from clinvk_lib.server import console
from clinvk_lib.server.console import ASSETS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYZ = os.path.join(ROOT, "dist", "clinvk.pyz")
PYENV = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")


@pytest.fixture(scope="module")
def pyz():
    subprocess.run([os.path.join(ROOT, "build_pyz.sh")], check=True, stdout=subprocess.DEVNULL)
    return PYZ


def sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def test_the_same_sources_give_the_same_bytes(pyz):
    first = sha(pyz)
    subprocess.run([os.path.join(ROOT, "build_pyz.sh")], check=True, stdout=subprocess.DEVNULL)
    assert sha(pyz) == first


def test_archive_holds_only_our_modules_the_console_files_and_a_python3_shebang(pyz):
    with open(pyz, "rb") as f:
        assert f.readline() == b"#!/usr/bin/env python3\n"
    names = zipfile.ZipFile(pyz).namelist()
    assert names[0] == "__main__.py"
    console = [n for n in names if n.startswith("clinvk_lib/server/console/")]
    assert sorted(os.path.basename(n) for n in console) == sorted(ASSETS)
    assert all(n == "__main__.py" or (n.startswith("clinvk_lib/") and n.endswith(".py"))
               for n in names if n not in console)
    assert os.stat(pyz).st_mode & stat.S_IXUSR


@pytest.mark.parametrize("version", ["3.8.18", "3.9.18", "3.10.13", "3.11.7", "3.12.1", "3.13.0"])
def test_runs_a_prompt_on_every_supported_python(pyz, version, fake_path, clinvk_home,
                                                       tmp_path):
    py = os.path.join(PYENV, "versions", version, "bin", "python3")
    if not os.path.exists(py):
        pytest.skip("Python %s not installed" % version)
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"))
    out = subprocess.run([py, pyz, "version"], capture_output=True, env=env, timeout=60)
    assert out.stdout.decode().startswith("clinvk ") and version in out.stdout.decode()
    out = subprocess.run([py, pyz, "-b", "codex", "hello"], capture_output=True, env=env,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout == b"echo: hello\n"


def test_bytecode_cache_is_private_and_reused(pyz, fake_path, clinvk_home, tmp_path):
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    for _ in range(2):
        out = subprocess.run([sys.executable, pyz, "backends"], capture_output=True, env=env,
                             timeout=60)
        assert out.returncode == 0, out.stderr
    root = tmp_path / "cache" / "clinvk"
    (copy,) = list(root.iterdir())
    assert stat.S_IMODE(copy.stat().st_mode) == 0o700
    assert (copy / "clinvk_lib" / "__pycache__").is_dir()
    assert sorted(p.name for p in copy.iterdir()) == ["clinvk_lib"]


def test_a_cache_others_can_write_is_not_used(pyz, fake_path, clinvk_home, tmp_path):
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"))
    subprocess.run([sys.executable, pyz, "backends"], check=True, env=env, capture_output=True)
    (copy,) = list((tmp_path / "cache" / "clinvk").iterdir())
    os.chmod(str(copy), 0o777)
    (copy / "clinvk_lib" / "cli" / "main.py").write_text("raise SystemExit('tampered copy was imported')")
    out = subprocess.run([sys.executable, pyz, "-b", "claude", "hi"], capture_output=True,
                         env=env, timeout=60)
    assert out.returncode == 0 and out.stdout == b"echo: hi\n", out.stderr


def test_no_cache_when_asked(pyz, fake_path, clinvk_home, tmp_path):
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"), CLINVK_NO_CACHE="1")
    subprocess.run([sys.executable, pyz, "backends"], check=True, env=env, capture_output=True)
    assert not (tmp_path / "cache" / "clinvk").exists()



@pytest.mark.parametrize("no_cache", ["1", ""])
def test_the_console_is_served_from_inside_the_archive(pyz, clinvk_home, tmp_path, no_cache):
    """Its files come out of the archive itself, and out of the unpacked copy of it."""
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"), CLINVK_NO_CACHE=no_cache)
    proc = subprocess.Popen([sys.executable, pyz, "serve", "--port", "0"], env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, cwd=str(tmp_path))
    try:
        line = proc.stderr.readline().decode("utf-8", "replace")
        port = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line).group(1)
        for name, data in ((n, console.load(n)[0]) for n in ASSETS):
            with urllib.request.urlopen("http://127.0.0.1:%s/console/%s" % (port, name),
                                        timeout=30) as reply:
                assert reply.read() == data
                assert reply.headers["Content-Type"] == ASSETS[name]
    finally:
        proc.terminate()
        proc.wait(30)
