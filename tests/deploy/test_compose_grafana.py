"""docker-compose.yml's Grafana: provisioned with the recorder as its Prometheus data source
and with the dashboards of deploy/grafana/dashboards, at the paths the provisioning files name;
the image is the Grafana whose published schema the dashboards are checked against."""

from __future__ import annotations

import json
from pathlib import PurePosixPath
from typing import Any

import yaml

from tests.deploy.grafana_support import (
    DASHBOARDS_DIR,
    DATASOURCE_FILE,
    PROVISIONING_DIR,
    SCHEMA_CHECK_DIR,
    dashboards,
    datasource_with_token,
    provisioning_file,
)
from tests.deploy.support import REPO, environment_of, load_compose

PROVIDER_FILE = provisioning_file("dashboards", "kube-metrics-recorder.yaml")


def _grafana() -> dict[str, Any]:
    service: dict[str, Any] = load_compose()["services"]["grafana"]
    return service


def _mounts() -> dict[str, str]:
    """Container path -> repository path of the service's bind mounts."""
    mounts = {}
    for volume in _grafana()["volumes"]:
        source, target, *_mode = str(volume).split(":")
        if source.startswith("./"):
            mounts[target] = source
    return mounts


def _datasource() -> dict[str, Any]:
    (source,) = yaml.safe_load(DATASOURCE_FILE.read_text())["datasources"]
    assert isinstance(source, dict)
    return source


def test_grafana_is_the_version_whose_schema_checks_the_dashboards() -> None:
    lock = json.loads((SCHEMA_CHECK_DIR / "package-lock.json").read_text())
    version = lock["packages"]["node_modules/@grafana/schema"]["version"]
    assert _grafana()["image"] == f"grafana/grafana:{version}"


def test_provisioning_and_dashboards_are_mounted_read_only() -> None:
    mounts = _mounts()
    assert REPO / mounts["/etc/grafana/provisioning"] == PROVISIONING_DIR
    (provider,) = yaml.safe_load(PROVIDER_FILE.read_text())["providers"]
    assert provider["type"] == "file" and provider["allowUiUpdates"] is False
    assert REPO / mounts[provider["options"]["path"]] == DASHBOARDS_DIR
    assert all(str(v).endswith(":ro") for v in _grafana()["volumes"] if str(v).startswith("./"))
    home = environment_of(_grafana())["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"] or ""
    home_path = PurePosixPath(home)
    assert str(home_path.parent) == provider["options"]["path"]
    assert (DASHBOARDS_DIR / home_path.name).is_file()


def test_the_data_source_is_the_recorders_prometheus_api() -> None:
    source = _datasource()
    services = load_compose()["services"]
    listen = environment_of(services["recorder"])["RECORDER_LISTEN"] or ""
    assert source["type"] == "prometheus" and source["access"] == "proxy"
    assert source["url"] == f"http://recorder:{listen.rpartition(':')[2]}/prometheus"
    assert source["jsonData"]["httpMethod"] == "POST"
    assert _grafana()["depends_on"]["recorder"]["condition"] == "service_started"
    for board in dashboards().values():
        (chooser,) = [v for v in board["templating"]["list"] if v["type"] == "datasource"]
        assert chooser["current"]["value"] == source["uid"]


def test_the_data_source_documents_how_to_send_a_bearer_token() -> None:
    """Commented out (the compose recorder runs without access control), but ready to use:
    uncommented, the lines are the custom header Grafana sends on every query."""
    text = DATASOURCE_FILE.read_text()
    assert "# httpHeaderName1: Authorization" in text
    assert "#   httpHeaderValue1: Bearer ${RECORDER_GRAFANA_TOKEN}" in text
    source = datasource_with_token()
    assert source["jsonData"]["httpHeaderName1"] == "Authorization"
    assert source["secureJsonData"]["httpHeaderValue1"] == "Bearer ${RECORDER_GRAFANA_TOKEN}"


def test_grafana_listens_on_loopback_and_is_locked_down() -> None:
    grafana = _grafana()
    assert grafana["ports"] == ["127.0.0.1:3000:3000"]
    assert grafana["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in grafana["security_opt"]
    assert "grafana-data" in load_compose()["volumes"]
