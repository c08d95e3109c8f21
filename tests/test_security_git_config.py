"""A server or MCP run (no project configuration) hands its backend an environment under which
git, run in the workdir by the CLI at start-up or by the model's read-only commands, starts no
program that the repository's own files name: planted .git/config entries, attributes, hooks
and submodule settings write a marker file with the plain environment (the control) and none
with the one clinvk builds. Checked with the real git binary; tests/e2e/test_project_config_real.py
proves it with the real claude."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

from clinvk_lib import config, execute
from clinvk_lib.backends import base, gitenv, options
from clinvk_lib.policy import Policy
from tests.conftest import records
from tests.serverutil import fresh_backend_probe, server, start_server  # noqa: F401 (fixtures)

GIT = shutil.which("git")
pytestmark = pytest.mark.skipif(GIT is None, reason="needs the git binary")
# gemini's child environment needs a root-owned system defaults file (see gemini_trust).
BACKENDS = [pytest.param(name, marks=pytest.mark.skipif(
    name == "gemini" and os.geteuid() != 0, reason="gemini's defaults file needs root"))
    for name in base.NAMES]


@pytest.fixture
def plain_env(tmp_path: Path) -> Dict[str, str]:
    """The host's environment without its git settings, with an empty HOME so the tester's own
    ~/.gitconfig stays out: what a backend gets when the workdir's configuration is allowed."""
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"), GIT_CONFIG_NOSYSTEM="1",
               GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.invalid",
               GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@example.invalid")
    return env


@pytest.fixture
def markers(tmp_path: Path) -> Path:
    path = tmp_path / "markers"
    path.mkdir()
    return path


def git(repo: Path, env: Dict[str, str], *args: str) -> "subprocess.CompletedProcess[str]":
    return subprocess.run([GIT] + list(args), cwd=str(repo), env=env, capture_output=True,
                          text=True, timeout=60)


def new_repo(path: Path, env: Dict[str, str]) -> Path:
    """A repository at ``path`` with one committed file, a.txt."""
    path.mkdir()
    git(path, env, "init", "-q")
    (path / "a.txt").write_text("a\n")
    git(path, env, "add", "a.txt")
    assert git(path, env, "commit", "-q", "-m", "one").returncode == 0
    return path


@pytest.fixture
def repo(tmp_path: Path, plain_env: Dict[str, str]) -> Path:
    return new_repo(tmp_path / "work", plain_env)


def touch(markers: Path, name: str) -> str:
    """A shell command that creates markers/name."""
    return "touch %s" % shlex.quote(str(markers / name))


def plant(repo: Path, env: Dict[str, str], key: str, value: str) -> None:
    """Write ``key = value`` into the repository's own .git/config."""
    assert git(repo, env, "config", key, value).returncode == 0


def server_env(plain_env: Dict[str, str], repo: Path, backend: str = "claude") -> Dict[str, str]:
    """The environment clinvk gives ``backend`` for a server run in ``repo``."""
    opts = options.Options(workdir=str(repo), project_config=False)
    return base.get(backend).child_env(plain_env, opts)


_STAT_TIME = [1000000000]


def status(repo: Path, env: Dict[str, str], file: str = "a.txt",
           write_index: bool = False) -> "subprocess.CompletedProcess[str]":
    """``git --no-optional-locks status --short`` as claude 2.1.197 runs it at start-up (or
    plain ``git status --short``, which may rewrite the index, with ``write_index``), after a
    new mtime on ``file`` so that git must read it again (through its clean filter)."""
    _STAT_TIME[0] += 1000
    os.utime(str(repo / file), (_STAT_TIME[0], _STAT_TIME[0]))
    flags = [] if write_index else ["--no-optional-locks"]
    return git(repo, env, *flags, "status", "--short")


def found(markers: Path) -> List[str]:
    return sorted(os.listdir(str(markers)))


def control_then_server(markers: Path, run_plain, run_server) -> None:
    """The planted program runs under the plain environment (so the test can fail) and not
    under the server's."""
    run_plain()
    assert found(markers), "the planted program did not run even without clinvk's settings"
    for name in found(markers):
        os.remove(str(markers / name))
    run_server()
    assert found(markers) == []


# -- what the CLIs run at start-up: status, log ------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_planted_fsmonitor_does_not_run_on_status_for_any_backend(backend, repo, plain_env,
                                                                   markers):
    plant(repo, plain_env, "core.fsmonitor", touch(markers, "fsmonitor") + "; false")
    env = server_env(plain_env, repo, backend)
    control_then_server(markers, lambda: status(repo, plain_env),
                        lambda: status(repo, env))
    assert status(repo, env).returncode == 0


@pytest.mark.parametrize("attributes", [".gitattributes", ".git/info/attributes"])
@pytest.mark.parametrize("kind", ["clean", "process"])
def test_planted_filter_driver_does_not_run_on_status(attributes, kind, repo, plain_env,
                                                      markers):
    (repo / attributes).write_text('*.txt filter=planted\n')
    plant(repo, plain_env, "filter.planted.%s" % kind, touch(markers, "filter") + "; cat")
    plant(repo, plain_env, "filter.planted.required", "true")
    env = server_env(plain_env, repo)
    control_then_server(markers, lambda: status(repo, plain_env), lambda: status(repo, env))
    assert status(repo, env).returncode == 0


def test_filter_driver_planted_in_an_included_file_does_not_run(repo, plain_env, markers):
    (repo / ".gitattributes").write_text("*.txt filter=Planted.Driver\n")
    included = repo / "planted.cfg"
    included.write_text('[filter "Planted.Driver"]\n\tclean = %s; cat\n'
                        % touch(markers, "filter"))
    plant(repo, plain_env, "include.path", str(included))
    env = server_env(plain_env, repo)
    control_then_server(markers, lambda: status(repo, plain_env), lambda: status(repo, env))


def test_planted_hook_does_not_run_when_status_rewrites_the_index(repo, plain_env, markers):
    hook = repo / ".git" / "hooks" / "post-index-change"
    hook.write_text("#!/bin/sh\n%s\n" % touch(markers, "hook"))
    hook.chmod(0o755)
    env = server_env(plain_env, repo)
    control_then_server(markers, lambda: status(repo, plain_env, write_index=True),
                        lambda: status(repo, env, write_index=True))


def signed_commit(repo: Path, env: Dict[str, str]) -> None:
    """Make HEAD a commit carrying a (fake) signature, which git log verifies with gpg."""
    tree = git(repo, env, "rev-parse", "HEAD^{tree}").stdout.strip()
    body = ("tree %s\nauthor t <t@x> 1 +0000\ncommitter t <t@x> 1 +0000\n"
            "gpgsig -----BEGIN PGP SIGNATURE-----\n \n x\n -----END PGP SIGNATURE-----\n\n"
            "signed\n" % tree)
    made = subprocess.run([GIT, "hash-object", "-t", "commit", "-w", "--stdin"], input=body,
                          cwd=str(repo), env=env, capture_output=True, text=True, check=True)
    git(repo, env, "update-ref", "HEAD", made.stdout.strip())


@pytest.mark.parametrize("key", ["gpg.program", "gpg.openpgp.program"])
def test_planted_gpg_program_does_not_run_on_log(key, repo, plain_env, markers, tmp_path):
    signed_commit(repo, plain_env)
    program = tmp_path / "gpg.sh"
    program.write_text("#!/bin/sh\n%s\n" % touch(markers, "gpg"))
    program.chmod(0o755)
    plant(repo, plain_env, key, str(program))
    plant(repo, plain_env, "log.showSignature", "true")
    env = server_env(plain_env, repo)
    control_then_server(markers, lambda: git(repo, plain_env, "log", "--oneline", "-n", "5"),
                        lambda: git(repo, env, "log", "--oneline", "-n", "5"))
    git(repo, env, "log", "--show-signature", "-n", "1")
    assert found(markers) == []


# -- what the model may run without asking: diff, show, blame, ls-remote -----------------------


@pytest.mark.parametrize("key, command", [
    ("diff.external", ["diff"]),
    ("diff.planted.command", ["diff"]),
    ("diff.planted.textconv", ["diff"]),
    ("diff.planted.textconv", ["blame", "a.txt"]),
    ("diff.planted.textconv", ["log", "-p"]),
])
def test_planted_diff_program_does_not_run(key, command, repo, plain_env, markers):
    (repo / ".gitattributes").write_text("*.txt diff=planted\n")
    (repo / "a.txt").write_text("b\n")
    plant(repo, plain_env, key, touch(markers, "diff") + "; cat")
    env = server_env(plain_env, repo)
    control_then_server(markers, lambda: git(repo, plain_env, "--no-pager", *command),
                        lambda: git(repo, env, "--no-pager", *command))


def remote_through(repo: Path, env: Dict[str, str], markers: Path, tmp_path: Path,
                   how: str) -> None:
    """Give ``repo`` an origin that makes ls-remote run a program, the way ``how`` says."""
    proxy = tmp_path / "proxy.sh"
    proxy.write_text("#!/bin/sh\n%s\n" % touch(markers, "remote"))
    proxy.chmod(0o755)
    url, settings = {
        "uploadpack": (str(repo), {"remote.origin.uploadpack":
                                   touch(markers, "remote") + "; git-upload-pack"}),
        "ext": ("ext::sh -c %s" % touch(markers, "remote").replace(" ", "% "),
                {"protocol.ext.allow": "always"}),
        "sshcommand": ("ssh://127.0.0.1:1/x",
                       {"core.sshCommand": touch(markers, "remote") + "; false"}),
        "gitproxy": ("git://127.0.0.1:1/x", {"core.gitProxy": str(proxy)}),
    }[how]
    plant(repo, env, "remote.origin.url", url)
    for key, value in settings.items():
        plant(repo, env, key, value)


@pytest.mark.parametrize("how", ["uploadpack", "ext", "sshcommand", "gitproxy"])
def test_planted_remote_program_does_not_run_on_ls_remote(how, repo, plain_env, markers,
                                                          tmp_path):
    remote_through(repo, plain_env, markers, tmp_path, how)
    env = server_env(plain_env, repo)
    control_then_server(markers, lambda: git(repo, plain_env, "ls-remote"),
                        lambda: git(repo, env, "ls-remote"))


@pytest.mark.parametrize("key, harmless", [
    ("core.pager", "cat"), ("pager.log", "false"), ("core.editor", ":"),
    ("sequence.editor", ":"), ("core.askPass", ""), ("credential.helper", ""),
    ("credential.https://example.invalid.helper", ""), ("core.sshCommand", "ssh"),
    ("core.alternateRefsCommand", ""), ("gpg.program", "gpg"), ("gpg.x509.program", "gpgsm"),
    ("gpg.ssh.program", "ssh-keygen"), ("merge.planted.driver", ""),
    ("filter.planted.smudge", ""),
])
def test_program_naming_key_planted_in_the_repository_reads_as_a_harmless_value(
        key, harmless, repo, plain_env, markers):
    plant(repo, plain_env, key, touch(markers, "never-run"))
    assert git(repo, plain_env, "config", "--get", key).stdout.strip() == touch(markers,
                                                                                "never-run")
    env = server_env(plain_env, repo)
    assert git(repo, env, "config", "--get", key).stdout == harmless + "\n"


# -- submodules --------------------------------------------------------------------------------


def superproject(tmp_path: Path, env: Dict[str, str], ignore: str = "") -> Path:
    """A repository (work) with one submodule, sub; ``ignore`` in its committed .gitmodules."""
    source = new_repo(tmp_path / "sub-source", env)
    top = new_repo(tmp_path / "work", env)
    added = git(top, env, "-c", "protocol.file.allow=always", "submodule", "add", "-q",
                str(source), "sub")
    assert added.returncode == 0, added.stderr
    if ignore:
        git(top, env, "config", "--file", ".gitmodules", "submodule.sub.ignore", ignore)
    git(top, env, "add", ".gitmodules")
    git(top, env, "commit", "-q", "-m", "sub")
    return top


@pytest.mark.parametrize("gitmodules", ["without ignore", "ignore=none in the work tree",
                                        "ignore=none in the index", "none"])
def test_status_does_not_enter_a_submodule_with_its_own_configuration(
        gitmodules, tmp_path, plain_env, markers):
    top = superproject(tmp_path, plain_env, "none" if "ignore=none" in gitmodules else "")
    if gitmodules == "none":
        git(top, plain_env, "rm", "-q", "--cached", ".gitmodules")
        git(top, plain_env, "commit", "-q", "-m", "no .gitmodules")
    if gitmodules in ("none", "ignore=none in the index"):
        os.remove(str(top / ".gitmodules"))
    (top / "sub" / ".gitattributes").write_text("*.txt filter=planted\n")
    plant(top / "sub", plain_env, "filter.planted.clean",
          touch(markers, "submodule-filter") + "; cat")
    env = server_env(plain_env, top)
    control_then_server(markers, lambda: status(top, plain_env, "sub/a.txt"),
                        lambda: status(top, env, "sub/a.txt"))


def test_status_summary_does_not_verify_signatures_in_a_submodule(tmp_path, plain_env,
                                                                   markers):
    top = superproject(tmp_path, plain_env)
    signed_commit(top / "sub", plain_env)
    program = tmp_path / "gpg.sh"
    program.write_text("#!/bin/sh\n%s\n" % touch(markers, "submodule-gpg"))
    program.chmod(0o755)
    plant(top / "sub", plain_env, "gpg.program", str(program))
    plant(top / "sub", plain_env, "log.showSignature", "true")
    plant(top, plain_env, "status.submoduleSummary", "true")
    env = server_env(plain_env, top)
    control_then_server(markers, lambda: git(top, plain_env, "--no-optional-locks", "status"),
                        lambda: git(top, env, "--no-optional-locks", "status"))


def test_diff_does_not_run_git_diff_in_a_submodule(tmp_path, plain_env, markers):
    top = superproject(tmp_path, plain_env)
    (top / "sub" / "a.txt").write_text("changed\n")
    git(top / "sub", plain_env, "commit", "-q", "-a", "-m", "two")
    plant(top, plain_env, "diff.submodule", "diff")
    plant(top / "sub", plain_env, "diff.external", touch(markers, "submodule-diff") + "; true")
    env = server_env(plain_env, top)
    control_then_server(markers, lambda: git(top, plain_env, "--no-pager", "diff"),
                        lambda: git(top, env, "--no-pager", "diff"))


# -- how the settings reach the child ----------------------------------------------------------


def test_git_settings_already_in_the_environment_are_kept_and_come_first(repo, plain_env,
                                                                         markers):
    plant(repo, plain_env, "core.fsmonitor", touch(markers, "fsmonitor") + "; false")
    operator = dict(plain_env, GIT_CONFIG_COUNT="2",
                    GIT_CONFIG_KEY_0="user.name", GIT_CONFIG_VALUE_0="Operator",
                    GIT_CONFIG_KEY_1="core.fsmonitor",
                    GIT_CONFIG_VALUE_1=touch(markers, "fsmonitor") + "; false")
    env = server_env(operator, repo)
    assert env["GIT_CONFIG_KEY_0"] == "user.name" and env["GIT_CONFIG_VALUE_0"] == "Operator"
    assert git(repo, env, "config", "--get", "user.name").stdout == "Operator\n"
    control_then_server(markers, lambda: status(repo, operator), lambda: status(repo, env))


def test_the_operators_own_git_settings_are_not_overridden(repo, plain_env):
    (Path(plain_env["HOME"]) / ".gitconfig").write_text(
        '[filter "lfs"]\n\tclean = git-lfs clean -- %f\n[core]\n\tpager = less\n')
    env = server_env(plain_env, repo)
    assert git(repo, env, "config", "--get", "filter.lfs.clean").stdout == "git-lfs clean -- %f\n"
    assert git(repo, env, "config", "--get", "core.pager").stdout == "less\n"


def test_a_command_line_run_leaves_the_repositorys_git_configuration_alone(repo, plain_env,
                                                                            markers):
    plant(repo, plain_env, "core.fsmonitor", touch(markers, "fsmonitor") + "; false")
    env = base.get("claude").child_env(plain_env, options.Options(workdir=str(repo)))
    assert "GIT_CONFIG_COUNT" not in env
    status(repo, env)
    assert found(markers) == ["fsmonitor"]


def test_a_git_config_count_that_is_not_a_number_refuses_the_run(repo, plain_env):
    with pytest.raises(options.SetupError, match="GIT_CONFIG_COUNT .* got 'two'"):
        server_env(dict(plain_env, GIT_CONFIG_COUNT="two"), repo)


def test_a_git_that_ignores_git_config_count_refuses_the_run(repo, plain_env, tmp_path):
    old = tmp_path / "old-git"
    old.mkdir()
    (old / "git").write_text("#!/bin/sh\nunset GIT_CONFIG_COUNT\nexec %s \"$@\"\n" % GIT)
    (old / "git").chmod(0o755)
    env = dict(plain_env, PATH=str(old) + os.pathsep + plain_env.get("PATH", ""))
    with pytest.raises(options.SetupError, match="ignores GIT_CONFIG_COUNT.*git 2.31 or later"):
        server_env(env, repo)


def test_an_unreadable_repository_configuration_refuses_the_run(repo, plain_env):
    (repo / ".git" / "config").write_text("[core\n")
    with pytest.raises(options.SetupError, match=r"\.git/config.*server\.allow_project_config"):
        server_env(plain_env, repo)


def test_a_pipe_planted_as_git_config_refuses_the_run_instead_of_hanging(repo, plain_env,
                                                                         monkeypatch):
    monkeypatch.setattr(gitenv, "GIT_TIMEOUT_SECS", 1)
    os.remove(str(repo / ".git" / "config"))
    os.mkfifo(str(repo / ".git" / "config"))
    with pytest.raises(options.SetupError, match="timed out"):
        server_env(plain_env, repo)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_server_run_prepares_its_backend_with_the_git_settings(backend, clinvk_home, fake_path,
                                                                 tmp_path, plain_env, markers):
    repo = new_repo(tmp_path / "served", plain_env)
    plant(repo, plain_env, "core.fsmonitor", touch(markers, "fsmonitor") + "; false")
    req = execute.Request(backend=backend, prompt="hi", workdir=str(repo))
    prepared = execute.prepare(req, config.load(flags={}), policy=Policy(), base_env=plain_env)
    control_then_server(markers, lambda: status(repo, plain_env),
                        lambda: status(repo, prepared.env))


@pytest.mark.usefixtures("fresh_backend_probe")
def test_a_server_run_whose_repository_configuration_git_cannot_read_is_refused_before_it_starts(
        server, record, tmp_path, plain_env):
    repo = new_repo(tmp_path / "served", plain_env)
    (repo / ".git" / "config").write_text("[core\n")
    reply = server.post("/api/v1/prompt", {"backend": "claude", "prompt": "hi",
                                           "workdir": str(repo)})
    assert reply.status == 503 and reply.json()["error"] == "backend_disabled"
    assert ".git/config" in reply.json()["message"]
    assert records(record) == []


# -- workdirs outside any repository: no git call once the git binary is known -----------------


def settings_of(env: Dict[str, str]) -> List[Tuple[str, str]]:
    return [(env["GIT_CONFIG_KEY_%d" % n], env["GIT_CONFIG_VALUE_%d" % n])
            for n in range(int(env["GIT_CONFIG_COUNT"]))]


def count_git_calls(monkeypatch) -> List[List[str]]:
    calls: List[List[str]] = []
    real = gitenv._git

    def counting(git_path, args, workdir, env):
        calls.append(args)
        return real(git_path, args, workdir, env)
    monkeypatch.setattr(gitenv, "_git", counting)
    return calls


def test_a_workdir_outside_any_repository_runs_git_once_per_binary(tmp_path, plain_env,
                                                                   monkeypatch):
    monkeypatch.setattr(gitenv, "_HONOURING_GITS", set())
    calls = count_git_calls(monkeypatch)
    for name in ("one", "two"):
        (tmp_path / name).mkdir()
        assert ("core.fsmonitor", "false") in settings_of(server_env(plain_env, tmp_path / name))
    assert calls == [["config", "--list", "--show-scope", "--show-origin", "-z"]]


def test_outside_a_repository_a_git_that_ignores_git_config_count_still_refuses_the_run(
        plain_env, tmp_path):
    old = tmp_path / "old-git"
    old.mkdir()
    (old / "git").write_text("#!/bin/sh\nunset GIT_CONFIG_COUNT\nexec %s \"$@\"\n" % GIT)
    (old / "git").chmod(0o755)
    (tmp_path / "plain").mkdir()
    env = dict(plain_env, PATH=str(old) + os.pathsep + plain_env.get("PATH", ""))
    for _ in range(2):                 # refused every time: only a pass is remembered
        with pytest.raises(options.SetupError, match="ignores GIT_CONFIG_COUNT"):
            server_env(env, tmp_path / "plain")


def bare_repo(tmp_path: Path, env: Dict[str, str]) -> Path:
    path = tmp_path / "bare.git"
    assert git(tmp_path, env, "init", "-q", "--bare", str(path)).returncode == 0
    return path


@pytest.mark.parametrize("where", ["bare", "bare-subdir", "gitfile", "git-dir-variable",
                                   "below-a-repository"])
def test_every_way_git_finds_a_repository_still_gets_its_overrides(where, tmp_path, plain_env,
                                                                   repo, monkeypatch):
    monkeypatch.setattr(gitenv, "_HONOURING_GITS", set())
    env = dict(plain_env)
    if where.startswith("bare"):
        holder = bare_repo(tmp_path, plain_env)
        workdir = holder
        if where == "bare-subdir":
            workdir = holder / "refs" / "heads"
    elif where == "gitfile":
        holder, workdir = repo, tmp_path / "linked"
        assert git(repo, plain_env, "worktree", "add", "-q", str(workdir)).returncode == 0
        assert (workdir / ".git").is_file()
    elif where == "git-dir-variable":
        holder, workdir = repo, tmp_path / "elsewhere"
        workdir.mkdir()
        env["GIT_DIR"] = str(repo / ".git")
    else:
        holder, workdir = repo, repo / "deep" / "down"
        workdir.mkdir(parents=True)
    assert git(holder, plain_env, "config", "core.pager", "touch planted").returncode == 0
    assert ("core.pager", "cat") in settings_of(server_env(env, workdir))
    assert gitenv.in_repository(str(workdir), env)
