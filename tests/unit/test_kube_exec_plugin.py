"""Exec credential plugins (recorder/kube/exec_plugin.py) with a fake clock and a fake runner."""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from recorder.errors import ConfigError, CredentialsError
from recorder.kube.exec_plugin import ExecPlugin, parse_exec_spec
from tests.kube_support import Clock

V1 = "client.authentication.k8s.io/v1"
V1BETA1 = "client.authentication.k8s.io/v1beta1"


def fake_runner(
    outputs: list[dict[str, Any]], seen: list[dict[str, Any]]
) -> Callable[..., subprocess.CompletedProcess[bytes]]:
    def run(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
        seen.append({"command": command, **kwargs})
        return subprocess.CompletedProcess(command, 0, json.dumps(outputs.pop(0)).encode(), b"")

    return run


def credential(token: str, expires: str | None = None, version: str = V1) -> dict[str, Any]:
    status: dict[str, Any] = {"token": token}
    if expires:
        status["expirationTimestamp"] = expires
    return {"apiVersion": version, "kind": "ExecCredential", "status": status}


def spec(**raw: Any) -> Any:
    base = {"apiVersion": V1, "command": "plugin", "interactiveMode": "Never"}
    return parse_exec_spec(
        {**base, **raw},
        user_name="u",
        cluster={"server": "https://api", "extensions": []},
        ca_pem=b"CA",
    )


def test_exec_credential_is_cached_until_it_expires() -> None:
    clock = Clock(1_700_000_000.0)  # 2023-11-14T22:13:20Z
    seen: list[dict[str, Any]] = []
    outputs = [credential("a", "2023-11-14T22:23:20Z"), credential("b"), credential("c")]
    plugin = ExecPlugin(
        spec(env=[{"name": "X", "value": "1"}], args=["--flag"], provideClusterInfo=True),
        environ={"PATH": "/bin"},
        clock=clock,
        run=fake_runner(outputs, seen),
    )
    assert plugin.credential().token == "a"
    clock.now += 590  # 10 s before expiry: still cached
    assert plugin.credential().token == "a" and plugin.runs == 1
    clock.now += 6  # inside the safety margin: run again
    assert plugin.credential().token == "b" and plugin.runs == 2
    assert plugin.credential().token == "b" and plugin.runs == 2  # no expiry: cached
    assert plugin.refresh() and plugin.credential().token == "c"  # after a 401
    call = seen[0]
    assert call["command"] == ["plugin", "--flag"]
    assert call["env"]["X"] == "1" and call["env"]["PATH"] == "/bin"
    info = json.loads(call["env"]["KUBERNETES_EXEC_INFO"])
    assert info == {
        "apiVersion": V1,
        "kind": "ExecCredential",
        "spec": {
            "interactive": False,
            "cluster": {
                "server": "https://api",
                "certificate-authority-data": base64.b64encode(b"CA").decode(),
            },
        },
    }
    assert call["stdin"] == subprocess.DEVNULL


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"interactiveMode": None}, "must set interactiveMode"),
        ({"apiVersion": "client.authentication.k8s.io/v1alpha1"}, "v1alpha1 was removed"),
        ({"interactiveMode": "Sometimes"}, "interactiveMode 'Sometimes'"),
        ({"command": ""}, "has no command"),
    ],
)
def test_exec_spec_validation(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        spec(**raw)


def test_v1beta1_defaults_to_if_available() -> None:
    assert spec(apiVersion=V1BETA1, interactiveMode=None).interactive_mode == "IfAvailable"


def test_interactive_always_without_a_terminal_is_a_clear_error() -> None:
    plugin = ExecPlugin(spec(interactiveMode="Always"), environ={}, stdin_is_terminal=lambda: False)
    with pytest.raises(CredentialsError, match="interactiveMode: Always but standard input"):
        plugin.credential()


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ({"apiVersion": V1BETA1, "kind": "ExecCredential", "status": {"token": "t"}}, "expected"),
        ({"apiVersion": V1, "kind": "ExecCredential"}, "without status"),
        ({"apiVersion": V1, "kind": "ExecCredential", "status": {}}, "neither a token"),
        (
            {"apiVersion": V1, "kind": "ExecCredential", "status": {"clientKeyData": "k"}},
            "only one of",
        ),
        (credential("t", "yesterday"), "not RFC 3339"),
    ],
)
def test_bad_plugin_output(output: dict[str, Any], message: str) -> None:
    plugin = ExecPlugin(spec(), environ={}, run=fake_runner([output], []))
    with pytest.raises(CredentialsError, match=message):
        plugin.credential()


def test_missing_plugin_shows_the_install_hint() -> None:
    plugin = ExecPlugin(
        spec(command="/nonexistent/gke-gcloud-auth-plugin", installHint="Install it with gcloud."),
        environ={},
    )
    with pytest.raises(CredentialsError, match=r"was not found.*Install it with gcloud"):
        plugin.credential()


def test_failing_plugin_reports_its_stderr(tmp_path: Path) -> None:
    script = tmp_path / "fail.sh"
    script.write_text("#!/bin/sh\necho 'session expired, run aws sso login' >&2\nexit 3\n")
    script.chmod(0o755)
    plugin = ExecPlugin(spec(command=str(script)), environ={})
    with pytest.raises(CredentialsError, match="exit code 3; it said: session expired"):
        plugin.credential()
