"""Reading kubeconfig files the way kubectl does, down to the one context in use.

Rules (client-go's ``ClientConfigLoadingRules``):

- an explicit ``--kubeconfig`` names one file, which must exist; nothing is merged;
- ``KUBECONFIG`` is a ``:``-separated list: empty entries and missing files are skipped,
  duplicates are read once, and the files are merged. For clusters, users and contexts the
  first file that defines a name wins, as a whole (a later file's entry of the same name is
  ignored, even its fields the first one lacks); ``current-context`` comes from the first file
  that sets it;
- relative paths (``certificate-authority``, ``client-certificate``, ``client-key``,
  ``tokenFile``, and an ``exec`` command containing a ``/``) resolve against the directory of
  the file that defined the entry.

Nothing here opens a connection or reads credential files: the result is plain data.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from recorder.errors import ConfigError

_SECTIONS = (("clusters", "cluster"), ("users", "user"), ("contexts", "context"))
_CLUSTER_PATHS = ("certificate-authority",)
_USER_PATHS = ("client-certificate", "client-key", "tokenFile")


@dataclass(frozen=True, slots=True)
class Entry:
    """One named cluster, user or context, with the file it came from."""

    name: str
    fields: Mapping[str, Any]
    origin: Path


@dataclass(frozen=True, slots=True)
class KubeconfigSelection:
    """The context in use and its cluster and user, with relative paths already resolved."""

    context_name: str
    cluster_name: str
    cluster: Mapping[str, Any]
    cluster_origin: Path
    user_name: str | None
    user: Mapping[str, Any] = field(default_factory=dict)
    user_origin: Path | None = None
    namespace: str | None = None
    files: tuple[Path, ...] = ()


@dataclass(slots=True)
class MergedKubeconfig:
    files: list[Path] = field(default_factory=list)
    clusters: dict[str, Entry] = field(default_factory=dict)
    users: dict[str, Entry] = field(default_factory=dict)
    contexts: dict[str, Entry] = field(default_factory=dict)
    current_context: str | None = None
    missing: list[Path] = field(default_factory=list)
    """Files of the list that do not exist (skipped, as kubectl skips them)."""

    def describe_files(self) -> str:
        """The files read, and those of the list that were not found: ``a.yaml; not found:
        b.yaml, c.yaml``."""
        read = ", ".join(str(f) for f in self.files)
        missing = ", ".join(str(f) for f in self.missing)
        if not missing:
            return read or "no file"
        return f"{read}; not found: {missing}" if read else f"not found: {missing}"


def kubeconfig_paths(explicit: str | None, environ: Mapping[str, str]) -> tuple[list[Path], bool]:
    """The files to read and whether they were named explicitly (then they must exist).

    ``explicit`` (``--kubeconfig`` / ``RECORDER_KUBECONFIG``) may itself be a list; a single
    explicit file must exist, like kubectl's ``--kubeconfig``.
    """
    if explicit:
        parts = [p for p in explicit.split(os.pathsep) if p]
        return [Path(p) for p in parts], len(parts) == 1
    listed = environ.get("KUBECONFIG", "")
    if listed:
        seen: list[Path] = []
        for part in listed.split(os.pathsep):
            if part and Path(part) not in seen:
                seen.append(Path(part))
        return seen, False
    home = environ.get("HOME")
    return ([Path(home) / ".kube" / "config"] if home else []), False


def load_kubeconfig(paths: Sequence[Path], *, explicit: bool) -> MergedKubeconfig:
    """Read and merge ``paths`` (see the module docstring for the rules)."""
    merged = MergedKubeconfig()
    for path in paths:
        try:
            text = path.read_text()
        except FileNotFoundError as exc:
            if explicit:
                raise ConfigError(f"the kubeconfig {path} does not exist") from exc
            merged.missing.append(path)
            continue
        except OSError as exc:
            raise ConfigError(f"cannot read the kubeconfig {path}: {exc.strerror or exc}") from exc
        merged.files.append(path)
        _merge(merged, _parse(text, path), path)
    return merged


def _parse(text: str, path: Path) -> Mapping[str, Any]:
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(
            f"the kubeconfig {path} is not valid YAML: {_yaml_problem(exc)}"
        ) from None
    if document is None:
        return {}  # an empty file is an empty config, as for kubectl
    if not isinstance(document, dict):
        raise ConfigError(f"the kubeconfig {path} is not a mapping (kind: Config)")
    return document


_QUOTED = re.compile(r"'[^']{3,}'|\"[^\"]{3,}\"")


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """Where the YAML is broken (line and column) and what is wrong, never the text there:
    PyYAML quotes the offending line, which may be a token or a key. Quoted words longer than
    two characters (an alias' name) are left out too; a quoted character ('\\t') stays."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    what = _QUOTED.sub("...", str(problem)) if problem else "it cannot be parsed"
    return f"{where}: {what}" if where else what


def _merge(merged: MergedKubeconfig, document: Mapping[str, Any], path: Path) -> None:
    for section, field_name in _SECTIONS:
        entries = document.get(section) or []
        if not isinstance(entries, list):
            raise ConfigError(f"{section} in the kubeconfig {path} must be a list")
        # Within one file a repeated name replaces the earlier entry; across files the first
        # file wins.
        here: dict[str, Entry] = {}
        for position, item in enumerate(entries):
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                raise ConfigError(
                    f"{section}[{position}] in the kubeconfig {path} has no name; every entry "
                    f"needs `name:` and `{field_name}:`"
                )
            body = item.get(field_name) or {}
            if not isinstance(body, dict):
                raise ConfigError(
                    f"{section}[{position}] ({item['name']!r}) in the kubeconfig {path}: "
                    f"`{field_name}` must be a mapping"
                )
            here[item["name"]] = Entry(item["name"], body, path)
        target: dict[str, Entry] = getattr(merged, section)
        for name, entry in here.items():
            target.setdefault(name, entry)
    current = document.get("current-context")
    if merged.current_context is None and isinstance(current, str) and current:
        merged.current_context = current


def select_context(merged: MergedKubeconfig, context: str | None) -> KubeconfigSelection:
    """The context named by ``--context``, else ``current-context``, resolved."""
    where = merged.describe_files()
    if not merged.files:
        raise ConfigError(
            f"no kubeconfig found ({where}): fix the path(s), or pass --api-url or --kubeconfig"
        )
    name = context or merged.current_context
    if not name:
        raise ConfigError(
            f"the kubeconfig ({where}) has no current-context: pass --context "
            f"(one of: {_names(merged.contexts)})"
        )
    chosen = merged.contexts.get(name)
    if chosen is None:
        raise ConfigError(
            f"context {name!r} is not defined in the kubeconfig ({where}); "
            f"defined contexts: {_names(merged.contexts)}"
        )
    cluster_name = chosen.fields.get("cluster")
    if not isinstance(cluster_name, str) or not cluster_name:
        raise ConfigError(f"context {name!r} in {chosen.origin} names no cluster")
    cluster = merged.clusters.get(cluster_name)
    if cluster is None:
        raise ConfigError(
            f"context {name!r} uses cluster {cluster_name!r}, which is not defined in the "
            f"kubeconfig ({where})"
        )
    user_name = chosen.fields.get("user") or None
    user: Entry | None = None
    if user_name is not None:
        user = merged.users.get(str(user_name))
        if user is None:
            raise ConfigError(
                f"context {name!r} uses user {user_name!r}, which is not defined in the "
                f"kubeconfig ({where})"
            )
    namespace = chosen.fields.get("namespace")
    return KubeconfigSelection(
        context_name=name,
        cluster_name=cluster_name,
        cluster=_resolved(cluster.fields, _CLUSTER_PATHS, cluster.origin),
        cluster_origin=cluster.origin,
        user_name=str(user_name) if user_name is not None else None,
        user=_resolved_user(user) if user else {},
        user_origin=user.origin if user else None,
        namespace=str(namespace) if namespace else None,
        files=tuple(merged.files),
    )


def _names(entries: Mapping[str, Entry]) -> str:
    return ", ".join(sorted(entries)) or "none"


def resolve_path(value: Any, origin: Path) -> str:
    """A path from a kubeconfig, made absolute against the defining file's directory."""
    path = Path(str(value))
    if path.is_absolute():
        return str(path)
    return str(origin.resolve().parent / path)


def _resolved(fields: Mapping[str, Any], keys: Sequence[str], origin: Path) -> dict[str, Any]:
    out = dict(fields)
    for key in keys:
        if out.get(key):
            out[key] = resolve_path(out[key], origin)
    return out


def _resolved_user(user: Entry) -> dict[str, Any]:
    out = _resolved(user.fields, _USER_PATHS, user.origin)
    exec_spec = out.get("exec")
    if isinstance(exec_spec, dict):
        command = exec_spec.get("command")
        # Only a command with a path separator is a path; a bare name is looked up on PATH.
        if isinstance(command, str) and os.sep in command:
            out["exec"] = {**exec_spec, "command": resolve_path(command, user.origin)}
    return out
