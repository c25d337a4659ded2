"""``RECORDER_CLUSTER`` / ``--cluster``: a Kubernetes label value, ``default`` when unset."""

from __future__ import annotations

import pytest

from recorder.cli import build_parser
from recorder.commands import settings_from_args
from recorder.domain import DEFAULT_CLUSTER
from recorder.errors import ConfigError
from recorder.settings import load_settings


def test_cluster_defaults_to_the_domain_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RECORDER_CLUSTER", raising=False)
    assert load_settings().cluster == DEFAULT_CLUSTER == "default"


def test_cluster_from_environment_and_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECORDER_CLUSTER", "prod-eu-1")
    assert load_settings().cluster == "prod-eu-1"
    assert load_settings(cluster="staging_2.a").cluster == "staging_2.a"


@pytest.mark.parametrize("name", ["a", "A9", "prod-eu-1", "x.y_z", "7", "a" * 63])
def test_label_values_are_accepted(name: str) -> None:
    assert load_settings(cluster=name).cluster == name


@pytest.mark.parametrize(
    "name",
    ["", "-prod", "prod-", "prod.", "_a", "a b", "prod/eu", 'a"b', "a\nb", "é", "a" * 64],
)
def test_other_names_are_refused_naming_the_setting(name: str) -> None:
    with pytest.raises(ConfigError, match=r"^--cluster: must"):
        load_settings(cluster=name)


def test_a_bad_name_from_the_environment_names_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RECORDER_CLUSTER", "prod eu")
    with pytest.raises(
        ConfigError, match=r"^RECORDER_CLUSTER: must be a Kubernetes label"
    ) as caught:
        load_settings()
    assert "--cluster" not in str(caught.value)


@pytest.mark.parametrize("command", ["run", "demo", "poll"])
def test_cluster_flag_of_the_polling_commands(
    command: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RECORDER_CLUSTER", "from-environment")
    args = build_parser().parse_args([command, "--cluster", "prod-eu-1"])
    assert settings_from_args(args).cluster == "prod-eu-1"
    assert settings_from_args(build_parser().parse_args([command])).cluster == "from-environment"
