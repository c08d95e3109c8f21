"""dist/clinvk.pyz: reproducible, only our modules, runs on 3.8 and 3.13, caches bytecode safely."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
import zipfile

import pytest

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


def test_archive_holds_only_our_modules_and_a_python3_shebang(pyz):
    with open(pyz, "rb") as f:
        assert f.readline() == b"#!/usr/bin/env python3\n"
    names = zipfile.ZipFile(pyz).namelist()
    assert names[0] == "__main__.py"
    assert all(n == "__main__.py" or (n.startswith("clinvk_lib/") and n.endswith(".py"))
               for n in names)
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
