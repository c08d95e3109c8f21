"""The system defaults file that lets gemini run untrusted, and gemini's rule for reading it.

Server runs start gemini untrusted (``GEMINI_CLI_TRUST_WORKSPACE=false``) rather than trusted
with overriding settings: trusted, gemini 0.61.0 loads the workdir's ``.gemini/.env`` whatever
the settings say (a ``NODE_OPTIONS`` there ran code inside a user-level MCP server), and the
workspace keys no system file names still apply (``tools.discoveryCommand`` runs a command at
start-up). Untrusted, it reads none of the workdir's configuration. But a headless untrusted
run exits 55 unless folder trust is off in a layer the workdir cannot write: this system
defaults file (``GEMINI_CLI_SYSTEM_DEFAULTS_PATH``). It is the lowest layer, so the operator's
own system settings (``/etc/gemini-cli/settings.json``) still apply on top of it.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from typing import Any, Dict, List, Optional

from ..fsutil import private_cache_dir, write_if_changed
from .options import SetupError

UNTRUSTED_DEFAULTS = {"security": {"folderTrust": {"enabled": False}}}
# gemini reads a system file only when root owns it and every directory above it
# (isFileAndDirectorySecureSync), so when clinvk is not root the operator provides it here.
PROVISIONED_DEFAULTS = "/etc/clinvk/gemini-system-defaults.json"
FILE_NAME = "gemini-system-defaults.json"

_NEEDS_ROOT = ("gemini cannot run here without loading the workdir's configuration: clinvk runs "
               "it untrusted, which needs a system defaults file that turns folder trust off, "
               "and gemini 0.61.0 reads one only when root owns it and every directory above "
               "it. clinvk runs as uid %d, so create %s once as root: sudo mkdir -p %s && echo "
               "'%s' | sudo tee %s (or set server.allow_project_config: true if the contents "
               "of every workdir are trusted)")
_BRIDGE_NEEDS_ROOT = ("gemini takes the client's tools from an MCP server in its system defaults "
                      "file, which gemini 0.61.0 reads only when root owns it and every "
                      "directory above it. clinvk runs as uid %d, so create %s once as root: "
                      "sudo mkdir -p %s && echo '%s' | sudo tee %s")


def untrusted_defaults_file() -> str:
    """A system defaults file holding UNTRUSTED_DEFAULTS that gemini will read: the operator's
    PROVISIONED_DEFAULTS when it exists, else one clinvk writes (once, atomically, 0600) in
    ``fsutil.private_cache_dir()`` when it runs as root. SetupError naming the fix otherwise: gemini would
    skip the file and exit 55."""
    provisioned = PROVISIONED_DEFAULTS
    if os.path.lexists(provisioned):
        return _checked(provisioned)
    return _written(FILE_NAME, UNTRUSTED_DEFAULTS, provisioned, _NEEDS_ROOT)


def bridge_defaults_file(settings: Dict[str, Any]) -> str:
    """A system defaults file holding ``settings`` (the tool bridge's MCP server, for a run
    that loads the workdir's configuration), which gemini will read: written by clinvk when
    it runs as root (named by its content, which is the same for every run of this clinvk);
    else the operator's copy at PROVISIONED_BRIDGE. SetupError naming the fix otherwise."""
    text = json.dumps(settings, sort_keys=True)
    name = "gemini-tool-bridge-%s.json" % hashlib.sha256(text.encode()).hexdigest()[:12]
    provisioned = os.path.join(os.path.dirname(PROVISIONED_DEFAULTS), name)
    if os.path.lexists(provisioned):
        return _checked(provisioned, settings)
    return _written(name, settings, provisioned, _BRIDGE_NEEDS_ROOT)


def _written(name: str, settings: Dict[str, Any], provisioned: str, needs_root: str) -> str:
    euid = os.geteuid()
    if euid != 0:
        raise SetupError(needs_root % (euid, provisioned, os.path.dirname(provisioned),
                                       json.dumps(settings), provisioned))
    try:
        # In clinvk's own directory: gemini skips a file whose directories are not the
        # account's (a test's $HOME under /tmp).
        path = os.path.join(private_cache_dir(), name)
        write_if_changed(path, json.dumps(settings) + "\n")
    except (OSError, KeyError) as exc:
        raise SetupError("cannot write gemini's system defaults file (%s): create %s as root "
                         "instead, or set server.allow_project_config: true" % (exc, provisioned))
    return _checked(path, settings)


def _checked(path: str, settings: Optional[Dict[str, Any]] = None) -> str:
    """``path`` when gemini would read it and it holds ``settings`` (default: turns folder
    trust off); else SetupError."""
    problem = gemini_skips(path)
    if settings is not None:
        if not problem and _read(path) != settings:
            problem = "it must hold the JSON %s" % json.dumps(settings)
    elif not problem and _folder_trust(path) is not False:
        problem = "it must hold the JSON %s" % json.dumps(UNTRUSTED_DEFAULTS)
    if problem:
        raise SetupError("gemini's system defaults file %s cannot be used: %s (or set "
                         "server.allow_project_config: true)" % (path, problem))
    return path


def _read(path: str) -> object:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _folder_trust(path: str) -> object:
    """The file's security.folderTrust.enabled (None when unreadable or absent)."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)["security"]["folderTrust"]["enabled"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def gemini_skips(path: str) -> str:
    """Why gemini 0.61.0 would skip the system settings file ``path`` ("" when it reads it).

    Its rule (isFileAndDirectorySecureSync): the file and every directory above it, as given
    and as resolved, belong to root and are not writable by group or others, and a symlink
    among them belongs to root.
    """
    given = os.path.abspath(path)
    paths = _self_and_ancestors(given)
    real = os.path.realpath(given)
    if real != given:
        paths += _self_and_ancestors(real)
    for p in paths:
        try:
            link, target = os.lstat(p), os.stat(p)
        except OSError as exc:
            return "%s: %s" % (p, exc.strerror)
        if stat.S_ISLNK(link.st_mode) and link.st_uid != 0:
            return "the symlink %s is not owned by root" % p
        if target.st_uid != 0:
            return "%s is not owned by root (uid %d)" % (p, target.st_uid)
        if target.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            return "%s is writable by group or others (mode %o)" % (
                p, stat.S_IMODE(target.st_mode))
    return ""


def _self_and_ancestors(path: str) -> List[str]:
    out = [path]
    while os.path.dirname(out[-1]) != out[-1]:
        out.append(os.path.dirname(out[-1]))
    return out
