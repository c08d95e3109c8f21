"""Files replaced atomically: the old content or the new, never half, nothing left behind
(clinvk_lib/fsutil.py)."""

from __future__ import annotations

import errno
import os
import stat

import pytest

from clinvk_lib import fsutil


def test_write_atomically_replaces_the_file_with_the_mode_asked(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("old\n")
    fsutil.write_atomically(str(path), b"new\n", 0o640)
    assert path.read_bytes() == b"new\n"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
    assert os.listdir(tmp_path) == ["config.yaml"]


def test_a_new_file_is_private_by_default(tmp_path):
    path = tmp_path / "summary.json"
    fsutil.write_atomically(str(path), b"{}\n")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    path = tmp_path / "index.json"
    path.write_bytes(b"old")

    def full_disk(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space left"):
        fsutil.write_atomically(str(path), b"new")
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["index.json"]


def test_the_temporary_file_is_named_with_the_callers_prefix(tmp_path, monkeypatch):
    seen = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: seen.append(a) or real_replace(a, b))
    fsutil.write_atomically(str(tmp_path / "abc.json"), b"{}", temp_prefix=".abc.json.tmp-")
    fsutil.write_atomically(str(tmp_path / "index.json"), b"{}")
    names = [os.path.basename(p) for p in seen]
    assert names[0].startswith(".abc.json.tmp-") and names[1].startswith(".index.json.tmp-")
    assert all(len(n.rsplit("-", 1)[1]) == 16 for n in names)


def test_fsync_dir_accepts_a_filesystem_that_cannot_fsync_a_directory(tmp_path, monkeypatch):
    def unsupported(fd):
        raise OSError(errno.EINVAL, "Invalid argument")

    monkeypatch.setattr(os, "fsync", unsupported)
    fsutil.fsync_dir(str(tmp_path))


def test_fsync_dir_reports_a_disk_error(tmp_path, monkeypatch):
    def broken(fd):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", broken)
    with pytest.raises(OSError, match="Input/output"):
        fsutil.fsync_dir(str(tmp_path))
