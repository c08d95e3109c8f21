"""policy.py: workdir resolution and prefixes, the extra-flag allowlist, dangerous modes."""

from __future__ import annotations

import os

import pytest

from clinvk_lib.backends.base import PathFlag
from clinvk_lib.policy import (Policy, PolicyError, check_extra_flags, resolve_workdir,
                               under_prefix)

ALLOWED = {"--add-dir": True, "--verbose": False, "-m": True}


def test_prefix_matches_whole_path_components_only():
    assert under_prefix("/srv/app", "/srv/app")
    assert under_prefix("/srv/app/src", "/srv/app")
    assert under_prefix("/srv/app/src", "/srv/app/")
    assert not under_prefix("/srv/application", "/srv/app")
    assert under_prefix("/anything", "/")


def test_relative_workdir_is_refused_when_absolute_is_required():
    with pytest.raises(PolicyError) as info:
        resolve_workdir("src", require_absolute=True)
    assert str(info.value) == "workdir: must be an absolute path: got 'src'"


def test_relative_workdir_resolves_against_the_base_on_the_command_line(tmp_path):
    (tmp_path / "src").mkdir()
    assert resolve_workdir("src", False, base=str(tmp_path)) == os.path.realpath(str(tmp_path / "src"))


def test_missing_workdir_names_the_path(tmp_path):
    with pytest.raises(PolicyError, match="directory does not exist: .*/nope"):
        resolve_workdir(str(tmp_path / "nope"), True)


def test_file_is_not_a_workdir(tmp_path):
    f = tmp_path / "f.txt"
    f.write_text("x")
    with pytest.raises(PolicyError, match="not a directory"):
        resolve_workdir(str(f), True)


def test_symlink_into_a_blocked_prefix_is_refused(tmp_path):
    link = tmp_path / "innocent"
    link.symlink_to("/etc")
    with pytest.raises(PolicyError, match="blocked prefix /etc"):
        Policy().check_workdir(str(link))


def test_symlink_out_of_the_allowed_prefix_is_refused(tmp_path):
    allowed = tmp_path / "projects"
    outside = tmp_path / "elsewhere"
    allowed.mkdir()
    outside.mkdir()
    (allowed / "escape").symlink_to(outside)
    policy = Policy(allowed_prefixes=[str(allowed)], blocked_prefixes=[])
    assert policy.check_workdir(str(allowed)) == os.path.realpath(str(allowed))
    with pytest.raises(PolicyError, match="not inside an allowed prefix"):
        policy.check_workdir(str(allowed / "escape"))


def test_sibling_with_a_common_name_prefix_is_not_allowed(tmp_path):
    (tmp_path / "app").mkdir()
    (tmp_path / "application").mkdir()
    policy = Policy(allowed_prefixes=[str(tmp_path / "app")], blocked_prefixes=[])
    with pytest.raises(PolicyError):
        policy.check_workdir(str(tmp_path / "application"))


def test_a_workdir_on_another_host_is_checked_as_written():
    """An API node checks a worker's workdir: it need not exist here, but must be absolute
    and within the prefixes (``..`` cannot climb out)."""
    policy = Policy(allowed_prefixes=["/srv/projects"])
    assert policy.check_workdir_elsewhere("/srv/projects/app") == "/srv/projects/app"
    with pytest.raises(PolicyError, match="absolute"):
        policy.check_workdir_elsewhere("projects/app")
    with pytest.raises(PolicyError, match="not inside an allowed prefix"):
        policy.check_workdir_elsewhere("/srv/projects/../other")
    with pytest.raises(PolicyError, match="blocked prefix /etc"):
        Policy().check_workdir_elsewhere("/etc/nginx")


def test_operator_can_remove_the_default_blocked_prefixes():
    assert Policy(blocked_prefixes=[]).check_workdir("/etc") == "/etc"


def test_allowed_flags_with_values_in_both_forms_pass():
    flags = ["--add-dir", "/tmp", "--add-dir=/srv", "--verbose", "-m", "x"]
    assert check_extra_flags("claude", flags, ALLOWED) == flags


@pytest.mark.parametrize("flags, field, fragment", [
    (["--dangerously-skip-permissions"], "extra[0]", "not allowed for claude"),
    (["--add-dir=/x", "--yolo=1"], "extra[1]", "'--yolo' is not allowed"),
    (["hello"], "extra[0]", "expected a flag"),
    (["--verbose", "stray"], "extra[1]", "expected a flag"),
    (["--add-dir"], "extra[0]", "needs a value"),
    (["--verbose=yes"], "extra[0]", "takes no value"),
    (["--"], "extra[0]", "expected a flag"),
    (["--add-dir", "a\nb"], "extra[1]", "NUL or newline"),
    (["--add-dir", "--yolo"], "extra[1]", "must not start with '-'"),
])
def test_refused_flags_name_the_index(flags, field, fragment):
    with pytest.raises(PolicyError) as info:
        check_extra_flags("claude", flags, ALLOWED)
    assert info.value.field == field
    assert fragment in str(info.value)


def test_dangerous_modes_need_the_operator_to_allow_them():
    with pytest.raises(PolicyError, match="allow_dangerous_modes"):
        Policy().check_modes("none", "default")
    with pytest.raises(PolicyError, match="sandbox_mode"):
        Policy().check_modes("auto", "full")
    Policy().check_modes("auto", "workspace")
    Policy(allow_dangerous_modes=True).check_modes("none", "full")


def test_path_flag_values_are_checked_in_both_forms(tmp_path):
    policy = Policy(allowed_prefixes=[str(tmp_path)], blocked_prefixes=["/etc"])
    ok = os.path.realpath(str(tmp_path / "docs"))
    path_flags = {"--add-dir": PathFlag()}
    assert check_extra_flags("claude", ["--add-dir", ok, "--add-dir=" + ok], ALLOWED,
                             path_flags, policy.check_path) == ["--add-dir=" + ok] * 2
    for flags in (["--add-dir", "/etc"], ["--add-dir=/etc/ssh"], ["--add-dir", "relative"],
                  ["--add-dir", "/srv/elsewhere"]):
        with pytest.raises(PolicyError):
            check_extra_flags("claude", flags, ALLOWED, path_flags, policy.check_path)


# -- path flags: every path the CLI will read --------------------------------------------------

GEMINI = {"--include-directories": PathFlag(separator=",", trims=True)}
CODEX = {"-i": PathFlag(separator=",", variadic=True), "--add-dir": PathFlag()}
CLAUDE = {"--add-dir": PathFlag(variadic=True)}
LIST_FLAGS = {"--include-directories": True, "-i": True, "--add-dir": True, "--verbose": False}


def checked(flags, path_flags, policy):
    return check_extra_flags("x", flags, LIST_FLAGS, path_flags, policy.check_path)


@pytest.fixture
def roots(tmp_path):
    """(policy allowing only tmp/allowed, real allowed/a, real allowed/b)."""
    (tmp_path / "allowed" / "a").mkdir(parents=True)
    (tmp_path / "allowed" / "b").mkdir()
    allowed = os.path.realpath(str(tmp_path / "allowed"))
    policy = Policy(allowed_prefixes=[allowed])
    return policy, os.path.join(allowed, "a"), os.path.join(allowed, "b")


@pytest.mark.parametrize("flags, path_flags", [
    (["--include-directories={a},/etc"], GEMINI),
    (["--include-directories", "{a}, /etc/ssh"], GEMINI),
    (["-i={a},/etc/passwd"], CODEX),
    (["-i", "{a},/root/x.png"], CODEX),
])
def test_a_blocked_element_of_a_comma_list_is_refused(roots, flags, path_flags):
    policy, a, _ = roots
    with pytest.raises(PolicyError) as info:
        checked([f.format(a=a) for f in flags], path_flags, policy)
    assert info.value.field == "extra[%d]" % (len(flags) - 1)
    assert "path 2 of 2" in str(info.value) and "blocked prefix" in str(info.value)


def test_each_path_of_an_allowed_comma_list_becomes_its_own_flag_word(roots):
    policy, a, b = roots
    assert checked(["--include-directories=%s , %s," % (a, b)], GEMINI, policy) == \
        ["--include-directories=" + a, "--include-directories=" + b]
    assert checked(["-i", "%s,%s" % (a, b)], CODEX, policy) == ["-i=" + a, "-i=" + b]


def test_gemini_trims_list_pieces_so_the_policy_checks_the_trimmed_path(roots):
    policy, a, _ = roots
    # gemini trims "..\u3000" to "..": the path it reads is the allowed tree's parent.
    with pytest.raises(PolicyError, match="not inside an allowed prefix"):
        checked(["--include-directories=%s/..\u3000" % os.path.dirname(a)], GEMINI, policy)


def test_a_comma_is_part_of_the_path_for_a_flag_the_cli_does_not_split(roots):
    policy, a, _ = roots
    assert checked(["--add-dir=%s,/etc" % a], CODEX, policy) == ["--add-dir=%s,/etc" % a]


def test_every_word_taken_by_a_variadic_flag_is_checked(roots):
    policy, a, b = roots
    assert checked(["--add-dir", a, b, "--verbose"], CLAUDE, policy) == \
        ["--add-dir=" + a, "--add-dir=" + b, "--verbose"]
    with pytest.raises(PolicyError) as info:
        checked(["--add-dir", a, b, "/etc"], CLAUDE, policy)
    assert info.value.field == "extra[3]" and "blocked prefix /etc" in str(info.value)


def test_a_word_after_the_joined_form_of_a_variadic_flag_is_refused(roots):
    # claude reads "--add-dir=A B" as one directory and B as part of the prompt.
    policy, a, b = roots
    with pytest.raises(PolicyError, match="expected a flag"):
        checked(["--add-dir=" + a, b], CLAUDE, policy)


def test_a_word_after_a_flag_that_is_not_variadic_is_refused(roots):
    policy, a, b = roots
    with pytest.raises(PolicyError, match="expected a flag"):
        checked(["--include-directories", a, b], GEMINI, policy)


def test_a_path_resolving_to_a_name_the_cli_would_split_is_refused(tmp_path):
    (tmp_path / "q," / "etc").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "q," / "etc")
    policy = Policy(allowed_prefixes=[str(tmp_path)])
    with pytest.raises(PolicyError, match="would not read as one path"):
        checked(["--include-directories=" + str(tmp_path / "link")], GEMINI, policy)


@pytest.mark.parametrize("value", ["", ",", " , "])
def test_a_list_value_without_a_path_is_refused(roots, value):
    with pytest.raises(PolicyError, match="needs a path|absolute path"):
        checked(["--include-directories=" + value], GEMINI, roots[0])


# -- ancestors of blocked prefixes --------------------------------------------------------------


@pytest.mark.parametrize("workdir", ["/", "/usr/..", "/proc/self/root", "//"])
def test_a_workdir_that_contains_a_blocked_prefix_is_refused(workdir):
    with pytest.raises(PolicyError) as info:
        Policy().check_workdir(workdir)
    assert info.value.field == "workdir"
    assert "/ contains the blocked prefix /etc" in str(info.value)


def test_a_path_flag_that_contains_a_blocked_prefix_is_refused():
    with pytest.raises(PolicyError, match="contains the blocked prefix /etc"):
        check_extra_flags("claude", ["--add-dir=/"], ALLOWED, CLAUDE, Policy().check_path)


def test_the_parent_of_an_operator_blocked_prefix_is_refused(tmp_path):
    (tmp_path / "secrets").mkdir()
    policy = Policy(allowed_prefixes=[str(tmp_path)], blocked_prefixes=[str(tmp_path / "secrets")])
    with pytest.raises(PolicyError, match="contains the blocked prefix .*secrets"):
        policy.check_workdir(str(tmp_path))


# -- paths the OS cannot resolve ---------------------------------------------------------------


def deny_readlink(monkeypatch, denied: str) -> None:
    """os.readlink fails with EACCES for ``denied``, as it does for another user's
    /proc/<pid>/cwd when the server does not run as root."""
    real_readlink = os.readlink

    def readlink(path, *a, **kw):
        if str(path) == denied:
            raise PermissionError(13, "Permission denied", str(path))
        return real_readlink(path, *a, **kw)
    monkeypatch.setattr(os, "readlink", readlink)


def test_a_link_the_server_may_not_read_is_a_policy_error(monkeypatch):
    deny_readlink(monkeypatch, "/proc/1/cwd")
    with pytest.raises(PolicyError) as info:
        Policy().check_workdir("/proc/1/cwd")
    assert info.value.field == "workdir"


def test_any_os_error_while_resolving_a_path_flag_is_a_policy_error(monkeypatch):
    real_realpath = os.path.realpath

    def realpath(path, *a, **kw):
        if path == "/srv/x":
            raise OSError(5, "Input/output error", path)
        return real_realpath(path, *a, **kw)
    monkeypatch.setattr(os.path, "realpath", realpath)
    with pytest.raises(PolicyError) as info:
        Policy().check_path("extra[0]", "/srv/x")
    assert str(info.value) == "extra[0]: cannot resolve '/srv/x': Input/output error"


@pytest.mark.parametrize("path", ["/tmp/\ud800", "/tmp/\udcff"])
def test_a_lone_surrogate_in_workdir_is_refused_with_an_encodable_message(path):
    with pytest.raises(PolicyError) as info:
        Policy().check_workdir(path)
    assert info.value.field == "workdir" and "surrogate" in str(info.value)
    assert "\\ud" in str(info.value).encode("utf-8").decode("utf-8")


def test_an_unencodable_workdir_on_the_command_line_is_a_policy_error():
    with pytest.raises(PolicyError) as info:
        resolve_workdir("\ud800", require_absolute=False)
    str(info.value).encode("utf-8")


def test_a_lone_surrogate_in_a_path_flag_is_refused():
    with pytest.raises(PolicyError, match="surrogate") as info:
        check_extra_flags("claude", ["--add-dir=/tmp/\ud800"], ALLOWED, CLAUDE,
                          Policy().check_path)
    str(info.value).encode("utf-8")


# -- the default workdir ---------------------------------------------------------------------


def test_the_configured_default_workdir_is_resolved_and_used(tmp_path):
    policy = Policy(default_workdir=str(tmp_path))
    assert policy.default_workdir() == os.path.realpath(str(tmp_path))


def test_without_a_configured_default_the_current_directory_is_checked(tmp_path, monkeypatch):
    monkeypatch.chdir(str(tmp_path))
    assert Policy().default_workdir() == os.path.realpath(str(tmp_path))
    monkeypatch.chdir("/")
    with pytest.raises(PolicyError) as info:
        Policy().default_workdir()
    assert info.value.field == "server.default_workdir"
    assert "the server's current directory" in str(info.value)
    assert "set server.default_workdir to an allowed directory" in str(info.value)


@pytest.mark.parametrize("configured, fragment", [
    ("/etc", "inside the blocked prefix /etc"),
    ("relative", "must be an absolute path"),
    ("/no/such/dir", "does not exist"),
])
def test_a_refused_default_workdir_names_the_setting_and_the_fix(configured, fragment):
    with pytest.raises(PolicyError) as info:
        Policy(default_workdir=configured).default_workdir()
    message = str(info.value)
    assert info.value.field == "server.default_workdir" and fragment in message
    assert "server.default_workdir (%s)" % configured in message and "Send a workdir" in message
