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
import re
import shutil
import subprocess
from typing import Dict, List, Set, Tuple

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
        _check_honours_config_count(git, workdir, with_git_config(env, settings))
    elif git:
        fixed = with_git_config(env, settings)
        keys = repository_git_keys(git_config_scopes(git, workdir, fixed))
        settings += repository_git_overrides(keys)
        settings += [("submodule.%s.ignore" % name, "dirty")
                     for name in git_submodule_names(git, workdir, fixed)]
        variables = {name: value for key, (name, value)
                     in GIT_REPOSITORY_COMMAND_VARIABLES.items() if key in keys}
    out = with_git_config(env, list(dict.fromkeys(settings)))
    for name, value in variables.items():
        out.setdefault(name, value)     # the operator's own value already outranks the file
    return out


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


def _check_honours_config_count(git: str, workdir: str, env: Dict[str, str]) -> None:
    try:
        st = os.stat(git)
        identity = (os.path.realpath(git), st.st_size, st.st_mtime_ns)
    except OSError:
        identity = None
    if identity is not None and identity in _HONOURING_GITS:
        return
    git_config_scopes(git, workdir, env)          # SetupError when it does not
    if identity is not None:
        _HONOURING_GITS.add(identity)


def with_git_config(env: Dict[str, str], settings: List[Tuple[str, str]]) -> Dict[str, str]:
    """``env`` with ``settings`` ((key, value) pairs) after the command-line-level git
    configuration it holds (GIT_CONFIG_COUNT, GIT_CONFIG_KEY_<n>, GIT_CONFIG_VALUE_<n>). git
    reads them in order, so for a key it reads last-one-wins ``settings`` win; only
    GIT_CONFIG_PARAMETERS (what ``git -c`` hands to the commands it starts) comes after.
    SetupError when GIT_CONFIG_COUNT is not a count: git would refuse to run at all."""
    raw = env.get("GIT_CONFIG_COUNT", "")
    if not re.fullmatch("[0-9]*", raw):
        raise SetupError("GIT_CONFIG_COUNT in the server's environment must be a number of "
                         "git settings (GIT_CONFIG_KEY_<n>/GIT_CONFIG_VALUE_<n>): got %r" % raw)
    count = int(raw or "0")
    out = dict(env)
    for n, (key, value) in enumerate(settings, count):
        out["GIT_CONFIG_KEY_%d" % n] = key
        out["GIT_CONFIG_VALUE_%d" % n] = value
    out["GIT_CONFIG_COUNT"] = str(count + len(settings))
    return out


def git_config_scopes(git: str, workdir: str, env: Dict[str, str]) -> List[Tuple[str, str]]:
    """(scope, key) of every setting git reads in ``workdir`` under ``env``, included files
    too. SetupError when git cannot read them, or ignores the command-line-level settings
    ``env`` holds (git before 2.31 reads no GIT_CONFIG_COUNT; before 2.26, no --show-scope)."""
    code, out, err = _git(git, ["config", "--list", "--show-scope", "--name-only", "-z"],
                          workdir, env)
    if code != 0:
        raise SetupError("cannot read the git configuration of workdir %s (%s): fix it, or "
                         "set server.allow_project_config: true if every workdir's contents "
                         "are trusted" % (workdir, err or "git exited with code %d" % code))
    words = out.split("\0")
    entries = list(zip(words[0::2], words[1::2]))
    if not any(scope == "command" for scope, _ in entries):
        raise SetupError("%s ignores GIT_CONFIG_COUNT, which keeps the workdir's repository "
                         "from naming programs git runs: install git 2.31 or later, or set "
                         "server.allow_project_config: true if every workdir's contents are "
                         "trusted" % git)
    return entries


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


def git_submodule_names(git: str, workdir: str, env: Dict[str, str]) -> List[str]:
    """The submodule names in the .gitmodules git reads for the work tree holding ``workdir``:
    the work tree's file if it exists, else the index's, else HEAD's (git 2.39,
    config_from_gitmodules). None outside a work tree: status and diff cannot run there."""
    code, top, _ = _git(git, ["rev-parse", "--show-toplevel"], workdir, env)
    if code != 0:
        return []
    path = os.path.join(top.rstrip("\n"), ".gitmodules")
    sources = ([["--file", path]] if os.path.exists(path)
               else [["--blob", ":.gitmodules"], ["--blob", "HEAD:.gitmodules"]])
    for source in sources:
        code, out, _ = _git(git, ["config"] + source + ["--list", "--name-only", "-z"],
                            workdir, env)
        if code == 0:
            return sorted({key.partition(".")[2].rpartition(".")[0]
                           for key in out.split("\0") if key.startswith("submodule.")} - {""})
    return []


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
