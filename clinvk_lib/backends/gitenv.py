"""Git in the workdir, kept from running programs the repository names.

The CLIs run git in the workdir at start-up (claude 2.1.197: status, log, config; codex
0.169.0: status, rev-parse, remote; gemini 0.61.0: rev-parse) and let the model run read-only
git commands without asking (claude 2.1.197: status, diff, log, show, blame, describe,
ls-remote, ...). git reads the repository's own configuration on every call, and some of it
names programs that such commands run (claude's start-up `git status` runs core.fsmonitor,
--setting-sources user or not), so one run allowed to edit files could plant a command for
the next. Command-line-level settings (GIT_CONFIG_COUNT, git 2.31+) outrank every
configuration file and reach every git the agent starts, its tools' included.

Used by ``base.Backend.child_env`` for every run without project configuration.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import subprocess
import time
from typing import Dict, List, Optional, Set, Tuple

from .filestamps import StampedCache
from .options import SetupError
from .parsing import error_line

# Set for every run without project configuration, whatever the repository's configuration
# says: hooks are files, not settings, and a submodule's own configuration is not read here.
GIT_FIXED_CONFIG = (
    ("core.fsmonitor", "false"),         # the fsmonitor hook: status, diff, describe --dirty
    ("core.hooksPath", "/dev/null"),     # .git/hooks: status runs post-index-change
    ("log.showSignature", "false"),      # log runs gpg.program on signed commits (in a
                                         # submodule too, for status.submoduleSummary)
    ("protocol.ext.allow", "never"),     # an "ext::" remote URL is a command (ls-remote)
    # status and diff run git in submodules, whose own configuration is not read here (a
    # .gitmodules "ignore" entry outranks diff.ignoreSubmodules: see git_submodule_names).
    ("diff.ignoreSubmodules", "dirty"),
    ("diff.submodule", "short"),
)

# Keys that name a program, spelled as `git config --list` prints them (section and key in
# lower case; "*" stands for a subsection or a command name), and what clinvk sets when the
# repository's own configuration holds one: a value that runs nothing ("" where git then runs
# no command or reports that it cannot run "", else git's own default). "{key}" is the key
# found, "{sub}" its subsection. The operator's system and global settings are left alone.
GIT_REPOSITORY_COMMANDS = (
    # A filter runs on status once a file's stat data changed; git 2.39 reads an empty
    # clean/smudge/process as no filter, and a required filter without one fails every status.
    ("filter.*.*", (("filter.{sub}.clean", ""), ("filter.{sub}.smudge", ""),
                    ("filter.{sub}.process", ""), ("filter.{sub}.required", "false"))),
    ("diff.*.textconv", (("{key}", ""),)),          # diff, log -p, blame
    ("diff.*.command", (("{key}", ""),)),
    ("diff.external", (("{key}", ""),)),
    ("merge.*.driver", (("{key}", ""),)),
    ("core.pager", (("{key}", "cat"),)),            # "cat": git starts no pager
    ("pager.*", (("{key}", "false"),)),
    ("core.editor", (("{key}", ":"),)),             # ":": git starts no editor
    ("sequence.editor", (("{key}", ":"),)),
    ("core.askpass", (("{key}", ""),)),
    ("credential.helper", (("{key}", ""),)),        # "": no helpers (ls-remote over https)
    ("credential.*.helper", (("{key}", ""),)),
    ("core.sshcommand", (("{key}", "ssh"),)),
    ("core.alternaterefscommand", (("{key}", ""),)),
    ("gpg.program", (("{key}", "gpg"),)),
    ("gpg.openpgp.program", (("{key}", "gpg"),)),
    ("gpg.x509.program", (("{key}", "gpgsm"),)),
    ("gpg.ssh.program", (("{key}", "ssh-keygen"),)),
    # git keeps the first uploadpack/receivepack it reads, so an override would lose: refuse
    # the local transport instead, the one that runs them on this machine (ls-remote, fetch).
    ("remote.*.uploadpack", (("protocol.file.allow", "never"),)),
    ("remote.*.receivepack", (("protocol.file.allow", "never"),)),
)
# Program-naming keys git reads first-one-wins: only an environment variable outranks them.
GIT_REPOSITORY_COMMAND_VARIABLES = {"core.gitproxy": ("GIT_PROXY_COMMAND", "")}
# The scopes of `git config --show-scope` the operator owns; any other is the repository's.
GIT_OPERATOR_SCOPES = ("system", "global", "command")
# A named pipe planted as .git/config blocks every git call that reads it.
GIT_TIMEOUT_SECS = 10


def without_repository_git_commands(env: Dict[str, str], workdir: str) -> Dict[str, str]:
    """``env`` plus git settings under which git, run in ``workdir`` by the CLI or its tools,
    starts no program that the repository's own files name: GIT_FIXED_CONFIG, the overrides
    of GIT_REPOSITORY_COMMANDS for what the repository holding ``workdir`` configures now
    (read with the git on ``env``'s PATH) and ``ignore = dirty`` for each of its submodules.
    No git on that PATH: GIT_FIXED_CONFIG only. SetupError when that git ignores the settings
    or cannot read the configuration."""
    git = shutil.which("git", path=env.get("PATH", os.defpath))
    settings = list(GIT_FIXED_CONFIG)
    variables: Dict[str, str] = {}
    if git and not in_repository(workdir, env):
        # Nothing for git to read but the operator's own files: no overrides to find, and the
        # check that this git honours GIT_CONFIG_COUNT is kept per binary (no git call at all
        # once it passed: ~7 ms a run).
        _check_honours_config_count(git, workdir, env, settings)
    elif git:
        overrides, variables = repository_verdict(git, workdir, with_git_config(env, settings))
        settings += overrides
    out = with_git_config(env, list(dict.fromkeys(settings)))
    for name, value in variables.items():
        out.setdefault(name, value)     # the operator's own value already outranks the file
    return out


# A repository's verdict: (settings, environment variables) that override what it configures.
Verdict = Tuple[List[Tuple[str, str]], Dict[str, str]]
# Verdicts kept per (git binary, workdir, environment) while every file the scan read, or
# would read once it appears, keeps its stamp: a run then starts no git (the scan's 2-3 git
# calls are ~8-14 ms before a stream's first byte).
_VERDICTS = StampedCache(64)


def repository_verdict(git: str, workdir: str, env: Dict[str, str]) -> Verdict:
    """What overrides the configuration of the repository holding ``workdir`` as git reads it
    under ``env``: the last scan's verdict while none of the files it consulted changed, else
    a new scan (SetupError as ``git_config_entries``; a refusal is never kept)."""
    key = (file_identity(git), os.path.realpath(workdir), tuple(sorted(env.items())))
    kept = _VERDICTS.get(key)
    if kept is not None:
        return list(kept[0]), dict(kept[1])
    started = time.time_ns()
    entries = git_config_entries(git, workdir, env)
    keys = repository_git_keys([(scope, key) for scope, _, key, _ in entries])
    layout = repository_layout(git, workdir, env)
    settings = repository_git_overrides(keys)
    settings += [("submodule.%s.ignore" % name, "dirty")
                 for name in git_submodule_names(git, workdir, env, layout[2])]
    variables = {name: value for key, (name, value)
                 in GIT_REPOSITORY_COMMAND_VARIABLES.items() if key in keys}
    consulted = consulted_paths(workdir, env, entries, layout)
    if consulted is not None:
        _VERDICTS.put(key, consulted, (settings, variables), started)
    return settings, variables


# Environment variables that point git at a repository wherever the workdir is.
GIT_REPOSITORY_VARIABLES = ("GIT_DIR", "GIT_WORK_TREE", "GIT_COMMON_DIR", "GIT_CONFIG")
# The git binaries (path, size, mtime) seen to honour GIT_CONFIG_COUNT in this process.
_HONOURING_GITS: Set[Tuple[str, int, int]] = set()


def in_repository(workdir: str, env: Dict[str, str]) -> bool:
    """Whether git run in ``workdir`` under ``env`` may read a repository's configuration:
    a ``.git`` (directory or file) in the workdir or any directory above it, a directory
    there that is itself a repository (bare: HEAD, objects/, refs/), or a variable that
    points git elsewhere. Errs towards True: GIT_CEILING_DIRECTORIES is not honoured here."""
    if any(env.get(name) for name in GIT_REPOSITORY_VARIABLES):
        return True
    path = os.path.realpath(workdir)
    while True:
        if (os.path.lexists(os.path.join(path, ".git"))
                or (os.path.lexists(os.path.join(path, "HEAD"))
                    and os.path.isdir(os.path.join(path, "objects"))
                    and os.path.isdir(os.path.join(path, "refs")))):
            return True
        parent = os.path.dirname(path)
        if parent == path:
            return False
        path = parent


def file_identity(path: str) -> Optional[Tuple[str, int, int]]:
    """(real path, size, mtime) of the file at ``path``; None when it cannot be read."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return os.path.realpath(path), st.st_size, st.st_mtime_ns


def _check_honours_config_count(git: str, workdir: str, env: Dict[str, str],
                                settings: List[Tuple[str, str]]) -> None:
    identity = file_identity(git)
    if identity is not None and identity in _HONOURING_GITS:
        return
    git_config_entries(git, workdir, with_git_config(env, settings))   # SetupError if not
    if identity is not None:
        _HONOURING_GITS.add(identity)


def with_git_config(env: Dict[str, str], settings: List[Tuple[str, str]]) -> Dict[str, str]:
    """``env`` with ``settings`` ((key, value) pairs) after the command-line-level git
    configuration it holds (GIT_CONFIG_COUNT, GIT_CONFIG_KEY_<n>, GIT_CONFIG_VALUE_<n>). git
    reads them in order, so for a key it reads last-one-wins ``settings`` win; only
    GIT_CONFIG_PARAMETERS (what ``git -c`` hands to the commands it starts) comes after.
    SetupError when GIT_CONFIG_COUNT is not a count: git would refuse to run at all."""
    raw = env.get("GIT_CONFIG_COUNT", "")
    if raw and not (raw.isascii() and raw.isdigit()):
        raise SetupError("GIT_CONFIG_COUNT in the server's environment must be a number of "
                         "git settings (GIT_CONFIG_KEY_<n>/GIT_CONFIG_VALUE_<n>): got %r" % raw)
    count = int(raw or "0")
    out = dict(env)
    for n, (key, value) in enumerate(settings, count):
        out["GIT_CONFIG_KEY_%d" % n] = key
        out["GIT_CONFIG_VALUE_%d" % n] = value
    out["GIT_CONFIG_COUNT"] = str(count + len(settings))
    return out


def git_config_entries(git: str, workdir: str,
                       env: Dict[str, str]) -> List[Tuple[str, str, str, str]]:
    """(scope, origin, key, value) of every setting git reads in ``workdir`` under ``env``,
    included files too (origin as ``--show-origin`` prints it: ``file:<path>``, a relative
    path relative to ``workdir``). SetupError when git cannot read them, or ignores the
    command-line-level settings ``env`` holds (git before 2.31 reads no GIT_CONFIG_COUNT;
    before 2.26, no --show-scope)."""
    code, out, err = _git(git, ["config", "--list", "--show-scope", "--show-origin", "-z"],
                          workdir, env)
    if code != 0:
        raise SetupError("cannot read the git configuration of workdir %s (%s): fix it, or "
                         "set server.allow_project_config: true if every workdir's contents "
                         "are trusted" % (workdir, err or "git exited with code %d" % code))
    words = out.split("\0")
    # -z: scope, origin, then "key\nvalue" (a key without "=" has no "\n"), each NUL-ended.
    entries = [(scope, origin) + _key_value(pair)
               for scope, origin, pair in zip(words[0::3], words[1::3], words[2::3])]
    if not any(scope == "command" for scope, _, _, _ in entries):
        raise SetupError("%s ignores GIT_CONFIG_COUNT, which keeps the workdir's repository "
                         "from naming programs git runs: install git 2.31 or later, or set "
                         "server.allow_project_config: true if every workdir's contents are "
                         "trusted" % git)
    return entries


def _key_value(pair: str) -> Tuple[str, str]:
    key, _, value = pair.partition("\n")
    return key, value


def repository_git_keys(entries: List[Tuple[str, str]]) -> List[str]:
    """The keys of ``entries`` ((scope, key)) that the repository's own files set."""
    return [key for scope, key in entries if scope not in GIT_OPERATOR_SCOPES]


def repository_git_overrides(keys: List[str]) -> List[Tuple[str, str]]:
    """The settings GIT_REPOSITORY_COMMANDS gives for each program-naming key in ``keys``."""
    out: List[Tuple[str, str]] = []
    for key in keys:
        sub = key.partition(".")[2].rpartition(".")[0]
        for pattern, settings in GIT_REPOSITORY_COMMANDS:
            if fnmatch.fnmatchcase(key, pattern):
                out += [(name.format(key=key, sub=sub), value) for name, value in settings]
    return out


# (git directory, common directory, top of the work tree or "" outside one), absolute.
Layout = Tuple[str, str, str]


def repository_layout(git: str, workdir: str, env: Dict[str, str]) -> Layout:
    """Where the repository holding ``workdir`` keeps its files (see Layout); ("", "", "")
    when git finds none."""
    code, out, _ = _git(git, ["rev-parse", "--path-format=absolute", "--git-dir",
                              "--git-common-dir", "--show-toplevel"], workdir, env)
    # Outside a work tree (a bare repository, its .git directory) --show-toplevel fails
    # after the two directories are printed.
    lines = out.splitlines() + ["", "", ""]
    return lines[0], lines[1], lines[2] if code == 0 else ""


def git_submodule_names(git: str, workdir: str, env: Dict[str, str], top: str) -> List[str]:
    """The submodule names in the .gitmodules git reads for the work tree ``top`` holding
    ``workdir``: the work tree's file if it exists, else the index's, else HEAD's (git 2.39,
    config_from_gitmodules). None outside a work tree (``top`` ""): status and diff cannot
    run there."""
    if not top:
        return []
    path = os.path.join(top, ".gitmodules")
    sources = ([["--file", path]] if os.path.exists(path)
               else [["--blob", ":.gitmodules"], ["--blob", "HEAD:.gitmodules"]])
    for source in sources:
        code, out, _ = _git(git, ["config"] + source + ["--list", "--name-only", "-z"],
                            workdir, env)
        if code == 0:
            return sorted({key.partition(".")[2].rpartition(".")[0]
                           for key in out.split("\0") if key.startswith("submodule.")} - {""})
    return []


def consulted_paths(workdir: str, env: Dict[str, str], entries: List[Tuple[str, str, str, str]],
                    layout: Layout) -> Optional[List[str]]:
    """Every file whose change (appearing included) could change the verdict of a scan that
    found ``entries`` and ``layout`` in ``workdir``: what tells git where the repository is,
    the configuration files it read or would read (their includes, conditional or not: HEAD
    decides "onbranch:"), and the sources of .gitmodules. None when one cannot be named
    (git found no repository, or an include git resolves against its install prefix or
    another user's home)."""
    git_dir, common, top = layout
    if not (git_dir and common):
        return None
    paths = [os.path.join(directory, name) for directory in _ancestors(workdir)
             for name in (".git", "HEAD", "objects", "refs")]
    paths += [os.path.join(git_dir, name) for name in ("HEAD", "commondir", "config.worktree",
                                                       "index")]
    paths += [os.path.join(common, name) for name in ("config", "packed-refs",
                                                      "reftable/tables.list")]
    paths += _head_ref(git_dir, common)
    if top:
        paths += [os.path.join(top, ".git"), os.path.join(top, ".gitmodules")]
    paths += [os.path.join(workdir, env[name]) for name in ("GIT_INDEX_FILE", "GIT_CONFIG")
              if env.get(name)]
    paths += _operator_config_paths(env)
    for _, origin, key, value in entries:
        # git prints a relative origin from where it runs: the top of the work tree, else
        # the workdir (a bare repository, a .git directory).
        files = [os.path.join(base, origin[len("file:"):]) for base in (top, workdir)
                 if base and origin.startswith("file:")]
        paths += files
        if key == "include.path" or (key.startswith("includeif.") and key.endswith(".path")):
            if value.startswith("%(prefix)/") or (value.startswith("~")
                                                   and not value.startswith("~/")):
                return None
            paths += [os.path.join(os.path.dirname(path), _expand_home(value, env))
                      for path in files or [workdir + os.sep]]
    return list(dict.fromkeys(paths))


def _ancestors(workdir: str) -> List[str]:
    path = os.path.realpath(workdir)
    out = [path]
    while os.path.dirname(path) != path:
        path = os.path.dirname(path)
        out.append(path)
    return out


def _head_ref(git_dir: str, common: str) -> List[str]:
    """The loose ref file HEAD names (HEAD:.gitmodules is read through it), if any."""
    try:
        with open(os.path.join(git_dir, "HEAD"), encoding="utf-8", errors="replace") as f:
            head = f.read(4096)
    except OSError:
        return []
    ref = head.strip()[len("ref:"):].strip() if head.startswith("ref:") else ""
    return [os.path.join(common, ref)] if ref.startswith("refs/") else []


def _operator_config_paths(env: Dict[str, str]) -> List[str]:
    """The system and global configuration files git reads under ``env``, existing or not."""
    home = env.get("HOME", "")
    xdg = env.get("XDG_CONFIG_HOME") or os.path.join(home, ".config")
    paths = [env.get("GIT_CONFIG_SYSTEM") or "/etc/gitconfig"]
    if env.get("GIT_CONFIG_GLOBAL"):
        return paths + [env["GIT_CONFIG_GLOBAL"]]
    return paths + [os.path.join(xdg, "git", "config"), os.path.join(home, ".gitconfig")]


def _expand_home(path: str, env: Dict[str, str]) -> str:
    return os.path.join(env.get("HOME", ""), path[2:]) if path.startswith("~/") else path


def _git(git: str, args: List[str], workdir: str, env: Dict[str, str]) -> Tuple[int, str, str]:
    """(exit code, stdout, the line of stderr that says why) of one git command that only
    reads; SetupError when it cannot start or runs longer than GIT_TIMEOUT_SECS."""
    try:
        proc = subprocess.run([git] + args, cwd=workdir, env=env, stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              timeout=GIT_TIMEOUT_SECS)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SetupError("cannot read the git configuration of workdir %s: %s (fix the "
                         "repository, or set server.allow_project_config: true if every "
                         "workdir's contents are trusted)" % (workdir, exc))
    return proc.returncode, os.fsdecode(proc.stdout), error_line(os.fsdecode(proc.stderr))
