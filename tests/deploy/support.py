"""Shared helpers for the deployment tests: rendering overlays, walking pod specs, parsing the
Dockerfile and the compose file. Pure functions over files in the repository; no network."""

from __future__ import annotations

import copy
import json
import re
import shlex
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
OVERLAYS_DIR = DEPLOY / "overlays"
COMPONENTS_DIR = DEPLOY / "components"
COMPOSE_FILE = REPO / "docker-compose.yml"
COMPOSE_CLUSTER_FILE = REPO / "docker-compose.cluster.yml"
DOCKERFILE = REPO / "Dockerfile"
SERVICEMONITOR_SCHEMA = DEPLOY / "schemas" / "monitoring.coreos.com_servicemonitors.v1.yaml"
PROMETHEUSRULE_SCHEMA = DEPLOY / "schemas" / "monitoring.coreos.com_prometheusrules.v1.yaml"
COMPOSE_SPEC_SCHEMA = Path(__file__).resolve().parent / "compose-spec.json"

APP_NAME = "kube-metrics-recorder"
WORKLOAD_KINDS = frozenset(
    {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob", "ReplicaSet", "Pod"}
)

Obj = dict[str, Any]


def overlay_names() -> list[str]:
    return sorted(p.name for p in OVERLAYS_DIR.iterdir() if (p / "kustomization.yaml").is_file())


def component_names() -> list[str]:
    return sorted(p.name for p in COMPONENTS_DIR.iterdir() if (p / "kustomization.yaml").is_file())


def project_version() -> str:
    with (REPO / "pyproject.toml").open("rb") as f:
        return str(tomllib.load(f)["project"]["version"])


def kubectl() -> str:
    found = shutil.which("kubectl")
    if found is None:
        raise RuntimeError("kubectl is needed to render the Kustomize overlays (kubectl kustomize)")
    return found


@cache
def _render_text(overlay: str) -> str:
    done = subprocess.run(
        [kubectl(), "kustomize", str(OVERLAYS_DIR / overlay)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        raise AssertionError(f"kubectl kustomize {overlay} failed:\n{done.stderr}")
    return done.stdout


def render(overlay: str) -> list[Obj]:
    """The overlay's objects, as `kubectl kustomize` renders them (a fresh copy each call)."""
    return [doc for doc in yaml.safe_load_all(_render_text(overlay)) if doc]


def ident(obj: Obj) -> str:
    meta = obj.get("metadata", {})
    where = f"{meta['namespace']}/" if "namespace" in meta else ""
    return f"{obj['kind']} {where}{meta.get('name')}"


def by_kind(objs: list[Obj], kind: str) -> list[Obj]:
    return [o for o in objs if o["kind"] == kind]


def one(objs: list[Obj], kind: str) -> Obj:
    found = by_kind(objs, kind)
    assert len(found) == 1, f"expected exactly one {kind}, found {[ident(o) for o in found]}"
    return found[0]


def pod_template(obj: Obj) -> Obj:
    """The pod template (metadata + spec) of a workload object."""
    kind = obj["kind"]
    if kind == "Pod":
        return obj
    spec: Obj = obj["spec"]["jobTemplate"]["spec"] if kind == "CronJob" else obj["spec"]
    template: Obj = spec["template"]
    return template


def workloads(objs: list[Obj]) -> list[Obj]:
    return [o for o in objs if o["kind"] in WORKLOAD_KINDS]


def containers(pod_spec: Obj, *, init: bool = True) -> Iterator[tuple[str, Obj]]:
    """("container"|"initContainer", container) for every container of a pod spec."""
    for c in pod_spec.get("containers", []):
        yield "container", c
    if init:
        for c in pod_spec.get("initContainers", []):
            yield "initContainer", c


def all_containers(objs: list[Obj]) -> Iterator[tuple[Obj, str, Obj]]:
    for w in workloads(objs):
        for role, c in containers(pod_template(w)["spec"]):
            yield w, role, c


def env_of(container: Obj) -> dict[str, Obj]:
    return {e["name"]: e for e in container.get("env", [])}


def selector_matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


# ---- Dockerfile -------------------------------------------------------------------------


@dataclass
class Instruction:
    keyword: str
    value: str
    line: int

    def exec_form(self) -> list[str] | None:
        """The JSON array of an exec-form instruction (ENTRYPOINT ["x"]), else None."""
        text = self.value.strip()
        if not text.startswith("["):
            return None
        parsed = json.loads(text)
        assert isinstance(parsed, list) and all(isinstance(p, str) for p in parsed)
        return parsed


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction | None:
        found = self.all(keyword)
        return found[-1] if found else None


@dataclass
class Dockerfile:
    global_args: dict[str, str]
    stages: list[Stage]

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def resolve(self, text: str) -> str:
        """Substitute ${ARG} / $ARG from the global ARG defaults (as FROM lines see them)."""

        def sub(match: re.Match[str]) -> str:
            name = match.group(1) or match.group(2)
            return self.global_args.get(name, match.group(0))

        return re.sub(r"\$\{(\w+)\}|\$(\w+)", sub, text)

    def environment(self) -> dict[str, str]:
        """The final stage's ENV, in order (key=value pairs; later ones win)."""
        env: dict[str, str] = {}
        for inst in self.final.all("ENV"):
            for token in shlex.split(inst.value):
                key, sep, value = token.partition("=")
                assert sep, f"line {inst.line}: use ENV key=value, not the legacy form"
                env[key] = re.sub(r"\$(\w+)|\$\{(\w+)\}", "", value) if key == "PATH" else value
        return env


def _logical_lines(text: str) -> Iterator[tuple[int, str]]:
    buf: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if buf and stripped.startswith("#"):
            continue  # comment lines inside a continuation are dropped, as BuildKit does
        if not buf:
            start = number
        if raw.rstrip().endswith("\\"):
            buf.append(raw.rstrip()[:-1])
            continue
        buf.append(raw)
        yield start, " ".join(part.strip() for part in buf)
        buf = []
    if buf:
        yield start, " ".join(part.strip() for part in buf)


def parse_dockerfile(path: Path = DOCKERFILE) -> Dockerfile:
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for number, line in _logical_lines(path.read_text()):
        keyword, _, value = line.partition(" ")
        keyword = keyword.upper()
        value = value.strip()
        if keyword == "FROM":
            words = [w for w in value.split() if not w.startswith("--")]
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=words[0], name=name))
            continue
        if not stages:
            assert keyword == "ARG", f"line {number}: only ARG may come before the first FROM"
            key, _, default = value.partition("=")
            global_args[key] = default.strip('"')
            continue
        stages[-1].instructions.append(Instruction(keyword, value, number))
    return Dockerfile(global_args, stages)


# ---- docker-compose ---------------------------------------------------------------------


class ComposeLoader(yaml.SafeLoader):
    """YAML loader that accepts Compose's merge-control tags (!reset, !override)."""


def _tagged(loader: ComposeLoader, _suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return loader.construct_scalar(node)  # type: ignore[arg-type]


ComposeLoader.add_multi_constructor("!", _tagged)


def load_compose(path: Path = COMPOSE_FILE) -> Obj:
    with path.open() as f:
        data = yaml.load(f, Loader=ComposeLoader)
    assert isinstance(data, dict)
    return data


def environment_of(service: Obj) -> dict[str, str | None]:
    env = service.get("environment", {})
    if isinstance(env, list):
        out: dict[str, str | None] = {}
        for item in env:
            key, sep, value = str(item).partition("=")
            out[key] = value if sep else None
        return out
    return {k: (None if v is None else str(v)) for k, v in env.items()}


def command_of(service: Obj) -> list[str]:
    command = service.get("command", [])
    return shlex.split(command) if isinstance(command, str) else [str(c) for c in command]


@dataclass(frozen=True)
class PublishedPort:
    host_ip: str | None
    published: str | None
    target: str


def published_ports(service: Obj) -> list[PublishedPort]:
    """Each `ports:` entry in either syntax, split into host IP, host port and target."""
    out: list[PublishedPort] = []
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            published = entry.get("published")
            out.append(
                PublishedPort(
                    entry.get("host_ip"),
                    None if published is None else str(published),
                    str(entry["target"]),
                )
            )
            continue
        text = str(entry).split("/", 1)[0]
        if text.startswith("["):  # [::1]:8080:8080
            host_ip, _, rest = text[1:].partition("]:")
            published, _, target = rest.rpartition(":")
            out.append(PublishedPort(host_ip, published or None, target))
            continue
        parts = text.split(":")
        if len(parts) == 3:
            out.append(PublishedPort(parts[0], parts[1] or None, parts[2]))
        elif len(parts) == 2:
            out.append(PublishedPort(None, parts[0], parts[1]))
        else:
            out.append(PublishedPort(None, None, parts[0]))
    return out


def image_services(compose: Obj) -> dict[str, Obj]:
    """Services that run the image built from this repository's Dockerfile."""
    return {
        name: svc
        for name, svc in compose["services"].items()
        if "build" in svc
        and _build_context(svc["build"]) in {".", "./"}
        and _build_dockerfile(svc["build"]) == "Dockerfile"
    }


def _build_context(build: Any) -> str:
    return build if isinstance(build, str) else str(build.get("context", "."))


def _build_dockerfile(build: Any) -> str:
    return "Dockerfile" if isinstance(build, str) else str(build.get("dockerfile", "Dockerfile"))


def crd_validator(path: Any) -> jsonschema.protocols.Validator:
    """A validator for a CRD's openAPIV3Schema that, like the API server's strict field
    validation, rejects fields the schema does not declare (below metadata)."""
    schema = yaml.safe_load(path.read_text())["openAPIV3Schema"]
    schema = copy.deepcopy(schema)

    def close(node: Any, under_metadata: bool = False) -> None:
        if isinstance(node, dict):
            if node.get("type") == "object" and "properties" in node and not under_metadata:
                node.setdefault("additionalProperties", False)
            for key, value in node.items():
                if key == "properties" and isinstance(value, dict):
                    for name, sub in value.items():
                        close(sub, under_metadata=name == "metadata")
                else:
                    close(value, under_metadata)
        elif isinstance(node, list):
            for item in node:
                close(item, under_metadata)

    close(schema)
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)
