"""Files that survive a crash in the middle of a write: written to a temporary file in the same
directory, flushed to disk, then renamed over the old one (rename is atomic within a
filesystem, POSIX rename(2)), so a reader sees the old content or the new, never half.

A leaf: the standard library only, shared by the session store, the config file, the fan-out
output files and the backends' own files.
"""

from __future__ import annotations

import errno
import json
import os
import pwd
from typing import Any, Dict, Optional

from . import jsontext

# A directory fsync some filesystems refuse (EINVAL, e.g. some network and FUSE mounts): the
# rename is done, only its durability is the filesystem's business.
_UNSUPPORTED_DIR_FSYNC = (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP)


def write_atomically(path: str, data: bytes, mode: int = 0o600, temp_prefix: str = "",
                     sync_dir: bool = True) -> None:
    """Replace ``path`` with ``data`` (file mode ``mode``) atomically: a temporary file in the
    same directory named ``temp_prefix`` + 16 hex digits (default ``.<name>.tmp-``, so a
    caller that sweeps leftovers can recognise its own), fsync, rename. With ``sync_dir``,
    the directory is fsynced too, making the rename durable; a caller renaming several files
    passes False and calls :func:`fsync_dir` once. Raises OSError (nothing left behind)."""
    directory = os.path.dirname(path) or "."
    prefix = temp_prefix or "." + os.path.basename(path) + ".tmp-"
    temp = os.path.join(directory, prefix + os.urandom(8).hex())
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if mode != 0o600:
            os.chmod(temp, mode)
        os.replace(temp, path)
    except BaseException:
        try:
            os.unlink(temp)
        except OSError:
            pass            # the error that matters is the one being raised
        raise
    if sync_dir:
        fsync_dir(directory)


def fsync_dir(path: str) -> None:
    """Make the renames and new names in directory ``path`` durable. OSError if the disk
    refuses, except where the filesystem cannot fsync a directory at all."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in _UNSUPPORTED_DIR_FSYNC:
            raise
    finally:
        os.close(fd)


def private_cache_dir() -> str:
    """~/.cache/clinvk of the account clinvk runs as, from the password database: $HOME may
    point anywhere (a test's /tmp directory). Where clinvk keeps the settings files it hands
    to the CLIs."""
    return os.path.join(pwd.getpwuid(os.geteuid()).pw_dir, ".cache", "clinvk")


def write_if_changed(path: str, text: str) -> None:
    """Make ``path`` hold ``text`` (0600; a missing directory is made 0700), through a temporary
    file and a rename, and only when it holds something else."""
    try:
        with open(path, encoding="utf-8") as f:
            if f.read() == text:
                return
    except (OSError, ValueError):
        pass
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    write_atomically(path, text.encode("utf-8"), sync_dir=False)


def read_json(path: str) -> Any:
    """The JSON value in file ``path``; None when it is missing, unreadable or not JSON."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def read_json_record(path: str) -> Optional[Dict[str, Any]]:
    """The JSON object a store keeps in file ``path``; None when the file is missing or holds
    no JSON object (a damaged record cannot be served, so it is not there). OSError when the
    file cannot be read."""
    try:
        with open(path, "rb") as f:
            data = jsontext.loads(f.read())
    except (FileNotFoundError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def unlink_quietly(path: str) -> None:
    """Remove ``path`` if it is there."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
