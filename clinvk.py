#!/usr/bin/env python3
"""clinvk: run claude, codex and gemini from one command line and one HTTP server.

This file is the entry point of the source tree and the ``__main__`` of dist/clinvk.pyz.
"""

import gc
import os
import sys


def use_unpacked_copy(archive):
    """Import clinvk_lib from a per-user copy of the zipapp's modules, so Python can keep
    their bytecode (zipimport compiles every module from source at every start: ~80 ms).

    The copy lives in ``$XDG_CACHE_HOME/clinvk/<archive size>-<archive mtime>`` (``~/.cache``
    by default), is made once per archive file (unpacked under a temporary name, then
    renamed), and is used only when that directory is a real directory owned by this user
    with mode 0700. Anything unusual (read-only home, other owner, CLINVK_NO_CACHE=1) keeps
    the in-zip import.
    """
    try:
        st = os.stat(archive)
        root = os.path.join(os.environ.get("XDG_CACHE_HOME") or
                            os.path.join(os.path.expanduser("~"), ".cache"), "clinvk")
        target = os.path.join(root, "%d-%d" % (st.st_size, st.st_mtime_ns))
        if not os.path.isdir(target):
            unpack(archive, root, target)
        st = os.lstat(target)
        if os.path.islink(target) or st.st_uid != os.getuid() or st.st_mode & 0o077:
            return
    except (OSError, ValueError):
        return
    sys.path.insert(0, target)


def unpack(archive, root, target):
    """Extract clinvk_lib/ (its modules and the console's files) from the archive into
    ``target`` (atomically, mode 0700)."""
    import shutil   # lazy: start-up (only the first run of an archive unpacks it)
    import zipfile  # lazy: start-up
    os.makedirs(root, mode=0o700, exist_ok=True)
    tmp = "%s.tmp-%d" % (target, os.getpid())
    try:
        with zipfile.ZipFile(archive) as z:
            for name in z.namelist():
                if name.startswith("clinvk_lib/") and name.endswith((".py", ".js", ".css")):
                    z.extract(name, tmp)
    except zipfile.BadZipFile as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ValueError(str(exc))
    os.chmod(tmp, 0o700)
    try:
        os.rename(tmp, target)
    except OSError:                    # another process won the race: use its copy
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    # `clinvk version` answers without importing anything else (start-up time is measured).
    if sys.argv[1:] in (["version"], ["--version"]):
        from clinvk_lib import version_line
        sys.stdout.write(version_line())
        sys.exit(0)
    if sys.version_info < (3, 8):
        sys.stderr.write("clinvk: Python 3.8 or newer is required (this is %d.%d)\n"
                         % sys.version_info[:2])
        sys.exit(2)
    # The collector stays off while the modules load: the objects they make live as long as
    # the process, so every collection among them would find nothing to free. Frozen, they are
    # never scanned again, at exit included (measured: ~6 ms of a prompt's run).
    gc.disable()
    here = os.path.dirname(os.path.abspath(__file__))
    if os.path.isfile(here) and not os.environ.get("CLINVK_NO_CACHE"):
        use_unpacked_copy(here)
    from clinvk_lib.cli.commands import starts_a_run
    if starts_a_run(sys.argv[1:]):
        # A run's supervisor is a Python interpreter too: it starts beside our imports.
        from clinvk_lib import supervisor
        supervisor.launch_ahead()
    from clinvk_lib.cli.main import run_main
    gc.freeze()
    gc.enable()
    run_main()
