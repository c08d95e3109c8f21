"""Files a run hands its CLI (codex reads an output schema from a file, not from argv): each
is written just before the CLI starts, readable by this user only, and removed once the CLI
has exited.

They live in one directory per process that only this user can enter (0700, an unpredictable
name from ``mkdtemp``, removed at exit). Their paths are in the CLI's argv, which anyone on
the host can read in /proc, so it is the directory's mode that keeps other users out; each
file is created new (O_EXCL, O_NOFOLLOW), never opened through a name someone else made.
"""

from __future__ import annotations

import atexit
import os
import stat
import threading
from typing import Dict

from .fsutil import unlink_quietly

_lock = threading.Lock()
_directory = ""


def private_dir() -> str:
    """This process's directory for run files, made (again) when it is missing or is no
    longer this user's alone."""
    global _directory
    import shutil    # lazy: start-up (most runs have no files)
    import tempfile  # lazy: start-up
    with _lock:
        if not _directory or not is_private(_directory):
            _directory = tempfile.mkdtemp(prefix="clinvk-run-")
            atexit.register(shutil.rmtree, _directory, True)
        return _directory


def is_private(directory: str) -> bool:
    """A real directory (not a symlink) owned by this user that nobody else may enter."""
    try:
        st = os.lstat(directory)
    except OSError:
        return False
    return (stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid()
            and not st.st_mode & 0o077)


class RunFiles:
    """The files of one run. ``paths`` maps each key a backend asked for to its path, known
    when the run is prepared (argv and a dry run name it); ``write()`` creates the files,
    ``remove()`` deletes them (idempotent)."""

    def __init__(self, contents: Dict[str, str]) -> None:
        self._contents = dict(contents)
        self.paths: Dict[str, str] = {}
        if self._contents:
            directory = private_dir()
            self.paths = {key: os.path.join(directory, "%s-%s" % (os.urandom(8).hex(), key))
                          for key in self._contents}

    def write(self) -> None:
        """Create every file (0600). OSError, with nothing left behind, when one cannot be
        created, or when its directory is no longer private to this user."""
        try:
            for key, path in self.paths.items():
                if not is_private(os.path.dirname(path)):
                    raise PermissionError("%s is no longer a directory private to this user"
                                          % os.path.dirname(path))
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
                with os.fdopen(os.open(path, flags, 0o600), "w", encoding="utf-8") as f:
                    f.write(self._contents[key])
        except BaseException:
            self.remove()
            raise

    def remove(self) -> None:
        for path in self.paths.values():
            unlink_quietly(path)
