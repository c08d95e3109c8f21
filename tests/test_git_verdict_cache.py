"""The verdict of a repository's git configuration scan (gitenv.repository_verdict) is kept
while every file the scan consulted keeps its stamp, and never outlives a change: a changed
configuration, a new include, a new branch, a new repository nearer the workdir or a new
.gitmodules each give the new verdict. Checked with the real git binary."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List

import pytest

from clinvk_lib.backends import filestamps, gitenv, options
from tests.test_security_git_config import (  # noqa: F401 (fixtures)
    GIT, count_git_calls, git, plain_env, plant, repo, server_env, settings_of)

pytestmark = pytest.mark.skipif(GIT is None, reason="needs the git binary")


@pytest.fixture(autouse=True)
def fresh_cache(monkeypatch) -> None:
    """An empty cache, and files written before a scan starts count as settled (the racy
    window's own test puts it back)."""
    monkeypatch.setattr(gitenv, "_VERDICTS", filestamps.StampedCache(64))
    monkeypatch.setattr(filestamps, "RACY_NS", 0)


def scanned_twice(env: Dict[str, str], workdir: Path, monkeypatch,
                  between=lambda: None) -> List[List[List[str]]]:
    """The git calls of a first and of a second server run in ``workdir``, ``between()``
    done between them; the second run's settings in the last element."""
    calls = count_git_calls(monkeypatch)
    server_env(env, workdir)
    first = list(calls)
    between()
    del calls[:]
    second = settings_of(server_env(env, workdir))
    return [first, list(calls), second]


def test_an_unchanged_repository_runs_no_git_on_the_next_run(repo, plain_env, monkeypatch):
    plant(repo, plain_env, "core.pager", "touch planted")
    first, second, settings = scanned_twice(plain_env, repo, monkeypatch)
    assert first and second == []
    assert ("core.pager", "cat") in settings


def test_a_setting_planted_after_a_run_is_overridden_on_the_next(repo, plain_env, monkeypatch):
    _, second, settings = scanned_twice(
        plain_env, repo, monkeypatch,
        lambda: plant(repo, plain_env, "core.pager", "touch planted"))
    assert second and ("core.pager", "cat") in settings


def test_a_setting_appended_in_place_is_overridden_on_the_next_run(repo, plain_env,
                                                                   monkeypatch):
    def append() -> None:
        with open(str(repo / ".git" / "config"), "a") as f:
            f.write("[core]\n\tpager = touch planted\n")
    _, _, settings = scanned_twice(plain_env, repo, monkeypatch, append)
    assert ("core.pager", "cat") in settings


@pytest.mark.parametrize("included_from", ["the repository's config", "an included file"])
def test_an_included_file_that_appears_is_read_on_the_next_run(included_from, repo, plain_env,
                                                               monkeypatch):
    plant(repo, plain_env, "include.path", "one.cfg")
    later = repo / ".git" / "one.cfg"
    if included_from == "an included file":
        later.write_text("[include]\n\tpath = two.cfg\n")
        later = repo / ".git" / "two.cfg"
    _, _, settings = scanned_twice(
        plain_env, repo, monkeypatch,
        lambda: later.write_text("[diff]\n\texternal = touch planted\n"))
    assert ("diff.external", "") in settings


def test_a_branch_switch_that_turns_an_include_on_is_seen(repo, plain_env, monkeypatch):
    plant(repo, plain_env, "includeIf.onbranch:other.path", "other.cfg")
    (repo / ".git" / "other.cfg").write_text("[core]\n\tpager = touch planted\n")
    git(repo, plain_env, "branch", "other")
    _, second, settings = scanned_twice(
        plain_env, repo, monkeypatch,
        lambda: git(repo, plain_env, "symbolic-ref", "HEAD", "refs/heads/other"))
    assert second and ("core.pager", "cat") in settings


def test_a_repository_linked_nearer_the_workdir_is_the_one_read(repo, plain_env, monkeypatch,
                                                                tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    git(other, plain_env, "init", "-q")
    plant(other, plain_env, "core.editor", "touch planted")
    workdir = repo / "inner"
    workdir.mkdir()
    _, _, settings = scanned_twice(
        plain_env, workdir, monkeypatch,
        lambda: (workdir / ".git").write_text("gitdir: %s\n" % (other / ".git")))
    assert ("core.editor", ":") in settings


def test_a_configuration_empty_at_the_first_run_is_watched(repo, plain_env, monkeypatch):
    (repo / ".git" / "config").write_text("")
    _, _, settings = scanned_twice(
        plain_env, repo, monkeypatch,
        lambda: (repo / ".git" / "config").write_text("[core]\n\tpager = touch planted\n"))
    assert ("core.pager", "cat") in settings


def test_a_gitmodules_file_that_appears_keeps_status_out_of_its_submodules(
        repo, plain_env, monkeypatch):
    _, _, settings = scanned_twice(
        plain_env, repo, monkeypatch,
        lambda: (repo / ".gitmodules").write_text('[submodule "sub"]\n\tpath = sub\n'))
    assert ("submodule.sub.ignore", "dirty") in settings


def test_a_gitmodules_staged_in_the_index_only_is_seen(repo, plain_env, monkeypatch):
    def stage() -> None:
        (repo / ".gitmodules").write_text('[submodule "sub"]\n\tpath = sub\n')
        git(repo, plain_env, "add", ".gitmodules")
        os.remove(str(repo / ".gitmodules"))      # git reads the index's then
    _, _, settings = scanned_twice(plain_env, repo, monkeypatch, stage)
    assert ("submodule.sub.ignore", "dirty") in settings


def test_a_gitmodules_committed_where_the_branch_moves_is_seen(repo, plain_env, monkeypatch):
    git(repo, plain_env, "checkout", "-q", "-b", "with-modules")
    (repo / ".gitmodules").write_text('[submodule "sub"]\n\tpath = sub\n')
    git(repo, plain_env, "add", ".gitmodules")
    git(repo, plain_env, "commit", "-q", "-m", "modules")
    git(repo, plain_env, "checkout", "-q", "-")
    branch = git(repo, plain_env, "symbolic-ref", "HEAD").stdout.strip()
    # Only the branch moves: the work tree and the index keep no .gitmodules, so git reads
    # HEAD's.
    _, _, settings = scanned_twice(
        plain_env, repo, monkeypatch,
        lambda: git(repo, plain_env, "update-ref", branch, "with-modules"))
    assert ("submodule.sub.ignore", "dirty") in settings


def test_a_change_in_the_global_configuration_scans_again(repo, plain_env, monkeypatch):
    gitconfig = Path(plain_env["HOME"]) / ".gitconfig"
    _, second, _ = scanned_twice(plain_env, repo, monkeypatch,
                                 lambda: gitconfig.write_text("[user]\n\tname = x\n"))
    assert second


def test_another_environment_is_another_verdict(repo, plain_env, monkeypatch, tmp_path):
    other_home = tmp_path / "other-home"
    other_home.mkdir()
    (other_home / ".gitconfig").write_text("[include]\n\tpath = %s\n" % (repo / "x.cfg"))
    server_env(plain_env, repo)
    calls = count_git_calls(monkeypatch)
    server_env(dict(plain_env, HOME=str(other_home)), repo)
    assert calls


def test_a_workdir_in_which_git_finds_no_repository_is_scanned_every_time(
        repo, plain_env, monkeypatch):
    workdir = repo / "sub"
    workdir.mkdir()
    env = dict(plain_env, GIT_CEILING_DIRECTORIES=str(repo))   # git stops above sub
    first, second, _ = scanned_twice(env, workdir, monkeypatch)
    assert first and second


def test_a_file_written_within_the_racy_window_is_scanned_again(repo, plain_env, monkeypatch):
    monkeypatch.setattr(filestamps, "RACY_NS", 2 * 10**9)
    plant(repo, plain_env, "core.pager", "touch planted")      # just now
    first, second, settings = scanned_twice(plain_env, repo, monkeypatch)
    assert first and second
    assert ("core.pager", "cat") in settings


def test_a_refused_repository_is_refused_again_until_it_is_fixed(repo, plain_env, monkeypatch):
    config = repo / ".git" / "config"
    good = config.read_text()
    config.write_text("[core\n")
    for _ in range(2):
        with pytest.raises(options.SetupError, match="cannot read the git configuration"):
            server_env(plain_env, repo)
    config.write_text(good)
    assert ("core.fsmonitor", "false") in settings_of(server_env(plain_env, repo))


def test_a_linked_worktree_sees_a_change_in_the_main_repository_configuration(
        repo, plain_env, monkeypatch, tmp_path):
    linked = tmp_path / "linked"
    assert git(repo, plain_env, "worktree", "add", "-q", str(linked)).returncode == 0
    _, second, settings = scanned_twice(
        plain_env, linked, monkeypatch,
        lambda: plant(repo, plain_env, "credential.helper", "touch planted"))
    assert second and ("credential.helper", "") in settings


def test_the_cache_keeps_only_its_most_recently_used_entries(tmp_path):
    cache = filestamps.StampedCache(2)
    path = tmp_path / "f"
    path.write_text("x")
    for key in ("a", "b"):
        cache.put(key, [str(path)], key.upper(), started_ns=2**62)
    assert cache.get("a") == "A"          # a is now the most recent
    cache.put("c", [str(path)], "C", started_ns=2**62)
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == ("A", None, "C")


def test_a_value_whose_file_changed_during_its_computation_is_not_kept(tmp_path):
    cache = filestamps.StampedCache(2)
    path = tmp_path / "f"
    path.write_text("x")
    cache.put("a", [str(path)], "A", started_ns=0)       # the file is newer than the start
    assert cache.get("a") is None


def test_a_file_that_appears_invalidates_the_value(tmp_path):
    cache = filestamps.StampedCache(2)
    path = tmp_path / "later"
    cache.put("a", [str(path)], "A", started_ns=2**62)
    assert cache.get("a") == "A"
    path.write_text("x")
    assert cache.get("a") is None

