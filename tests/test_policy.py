"""policy.py: workdir resolution and prefixes, the extra-flag allowlist, dangerous modes."""

from __future__ import annotations

import os

import pytest

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
    ok = str(tmp_path / "docs")
    assert check_extra_flags("claude", ["--add-dir", ok, "--add-dir=" + ok], ALLOWED,
                             {"--add-dir"}, policy.check_path) == ["--add-dir", ok, "--add-dir=" + ok]
    for flags in (["--add-dir", "/etc"], ["--add-dir=/etc/ssh"], ["--add-dir", "relative"],
                  ["--add-dir", "/srv/elsewhere"]):
        with pytest.raises(PolicyError):
            check_extra_flags("claude", flags, ALLOWED, {"--add-dir"}, policy.check_path)
