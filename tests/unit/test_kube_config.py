"""Where the API is and how to authenticate (recorder/kube/config.py): cluster and user fields,
precedence of the sources, and the in-cluster service account."""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from recorder.errors import ConfigError, CredentialsError
from recorder.kube.config import ClusterConfig, load_cluster_config
from recorder.kube.tls import TlsSettings
from tests.kube_support import PEM_CA, config_file, headers, load, write

# --- cluster and user fields ----------------------------------------------------------------


def single(
    tmp_path: Path, cluster: dict[str, Any], user: dict[str, Any] | None = None
) -> ClusterConfig:
    document = config_file(
        clusters={"c": {"server": "https://api.example:6443", **cluster}},
        users={"u": user or {}},
        contexts={"c": {"cluster": "c", "user": "u", "namespace": "shop"}},
        current="c",
    )
    return load(kubeconfig=str(write(tmp_path / "config", document)))


def test_ca_data_wins_over_ca_file_and_names_itself(tmp_path: Path) -> None:
    data = base64.b64encode(PEM_CA.cert_pem).decode()
    chosen = single(
        tmp_path,
        {"certificate-authority-data": data, "certificate-authority": str(tmp_path / "missing")},
    )
    assert chosen.tls.ca_pem == PEM_CA.cert_pem
    assert chosen.tls.ca_source.startswith("certificate-authority-data of cluster 'c'")
    assert chosen.namespace == "shop"


def test_invalid_base64_names_the_field_not_the_data(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="client-key-data of user 'u'") as caught:
        single(
            tmp_path,
            {},
            {"client-certificate-data": "QUJD", "client-key-data": "not*base64*secret"},
        )
    assert "secret" not in str(caught.value)


def test_insecure_skip_tls_verify_warns_and_refuses_a_ca_beside_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        chosen = single(tmp_path, {"insecure-skip-tls-verify": True, "tls-server-name": "api"})
    assert chosen.tls.insecure and chosen.tls.server_name == "api"
    assert "NOT checked" in caplog.text
    with pytest.raises(ConfigError, match="both insecure-skip-tls-verify and a certificate"):
        single(
            tmp_path,
            {"insecure-skip-tls-verify": True, "certificate-authority": str(tmp_path / "ca")},
        )


def test_not_insecure_unless_asked(tmp_path: Path) -> None:
    assert single(tmp_path, {}).tls == TlsSettings()


def test_token_file_wins_over_token_which_is_its_fallback(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("from-file")
    chosen = single(tmp_path, {}, {"token": "inline", "tokenFile": str(token_file)})
    assert headers(chosen) == {"Authorization": "Bearer from-file"}
    fallback = single(tmp_path, {}, {"token": "inline", "tokenFile": str(tmp_path / "nope")})
    assert headers(fallback) == {"Authorization": "Bearer inline"}
    with pytest.raises(CredentialsError, match="cannot read the token file"):
        single(tmp_path, {}, {"tokenFile": str(tmp_path / "nope")})


def test_basic_auth_and_impersonation(tmp_path: Path) -> None:
    chosen = single(
        tmp_path, {}, {"username": "admin", "password": "pw", "as": "jane", "as-groups": ["a", "b"]}
    )
    assert chosen.credentials is not None
    assert chosen.credentials.headers() == [
        ("Authorization", "Basic " + base64.b64encode(b"admin:pw").decode()),
        ("Impersonate-User", "jane"),
        ("Impersonate-Group", "a"),
        ("Impersonate-Group", "b"),
    ]
    assert chosen.identity == 'user "jane" (impersonated)'


def test_client_certificate_needs_its_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no client-key"):
        single(tmp_path, {}, {"client-certificate-data": "QUJD"})


def test_auth_provider_points_to_exec_plugins(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"auth-provider 'gcp'.*exec credential plugin"):
        single(tmp_path, {}, {"auth-provider": {"name": "gcp"}})


def test_proxy_url(tmp_path: Path) -> None:
    assert single(tmp_path, {"proxy-url": "socks5://127.0.0.1:1080"}).proxy == (
        "socks5://127.0.0.1:1080"
    )
    with pytest.raises(ConfigError, match="proxy-url of cluster 'c'"):
        single(tmp_path, {"proxy-url": "ftp://proxy"})


def test_exec_command_with_a_slash_resolves_against_the_kubeconfig(tmp_path: Path) -> None:
    exec_spec = {
        "apiVersion": "client.authentication.k8s.io/v1beta1",
        "command": "./bin/plugin",
    }
    chosen = single(tmp_path, {}, {"exec": exec_spec})
    assert chosen.credentials is not None
    plugin = chosen.credentials._exec
    assert plugin is not None and plugin.spec.command == str(tmp_path / "bin" / "plugin")
    bare = single(tmp_path, {}, {"exec": {**exec_spec, "command": "aws"}})
    assert bare.credentials is not None and bare.credentials._exec is not None
    assert bare.credentials._exec.spec.command == "aws"
    # A static token wins over exec, as in kubectl.
    both = single(tmp_path, {}, {"exec": exec_spec, "token": "t"})
    assert both.credentials is not None and both.credentials._exec is None


# --- precedence and in-cluster ------------------------------------------------------------


def service_account(directory: Path, token: str = "sa-token", ca: bool = True) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "token").write_text(token)
    (directory / "namespace").write_text("monitoring")
    if ca:
        (directory / "ca.crt").write_bytes(PEM_CA.cert_pem)
    return directory


def test_precedence(tmp_path: Path) -> None:
    sa = service_account(tmp_path / "sa")
    home = tmp_path / "home"
    write(
        home / ".kube" / "config",
        config_file(
            clusters={"h": {"server": "https://home"}},
            contexts={"h": {"cluster": "h"}},
            current="h",
        ),
    )
    env_file = write(
        tmp_path / "env",
        config_file(
            clusters={"e": {"server": "https://env"}}, contexts={"e": {"cluster": "e"}}, current="e"
        ),
    )
    pod = {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    everything = {**pod, "HOME": str(home), "KUBECONFIG": str(env_file)}
    assert load(api_url="http://127.0.0.1:8001/", environ=everything, sa_dir=sa).server == (
        "http://127.0.0.1:8001"
    )
    assert load(environ=everything, sa_dir=sa).server == "https://env"
    assert load(environ={**pod, "HOME": str(home)}, sa_dir=sa).server == "https://home"
    assert load(environ={**pod, "HOME": str(tmp_path)}, sa_dir=sa).server == "https://10.0.0.1:443"
    with pytest.raises(ConfigError, match=r"no cluster is configured.*recorder demo"):
        load(environ={"HOME": str(tmp_path)}, sa_dir=sa)
    write(home / ".kube" / "config", config_file())  # selects nothing: the pod's account
    assert load(environ={**pod, "HOME": str(home)}, sa_dir=sa).server == "https://10.0.0.1:443"


def test_in_cluster(tmp_path: Path) -> None:
    token = ".".join(
        base64.urlsafe_b64encode(json.dumps(part).encode()).decode().rstrip("=")
        for part in ({"alg": "RS256"}, {"sub": "system:serviceaccount:monitoring:recorder"})
    )
    sa = service_account(tmp_path, token=token + ".sig")
    environ = {"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "6443"}
    chosen = load(environ=environ, sa_dir=sa)
    assert chosen.server == "https://[fd00::1]:6443"
    assert chosen.tls.ca_pem == PEM_CA.cert_pem and str(sa / "ca.crt") in chosen.tls.ca_source
    assert chosen.namespace == "monitoring"
    assert chosen.identity == 'user "system:serviceaccount:monitoring:recorder"'
    with pytest.raises(ConfigError, match="KUBERNETES_SERVICE_PORT"):
        load(environ={"KUBERNETES_SERVICE_HOST": "10.0.0.1"}, sa_dir=sa)
    (sa / "token").unlink()
    with pytest.raises(ConfigError, match="automountServiceAccountToken"):
        load(environ=environ, sa_dir=sa)


# --- credentials never in a URL that is shown ------------------------------------------------


@pytest.mark.parametrize(
    ("api_url", "server"),
    [
        ("http://reader:p%40ss@127.0.0.1:8001/", "http://127.0.0.1:8001"),
        ("https://reader:p%40ss@[::1]:8443", "https://[::1]:8443"),
        ("http://reader:p%40ss@proxy", "http://proxy"),
    ],
)
def test_credentials_in_api_url_become_basic_auth_and_leave_the_url(
    api_url: str, server: str
) -> None:
    chosen = load(api_url=api_url)
    assert (chosen.server, chosen.source) == (server, f"--api-url {server}")
    assert headers(chosen) == {
        "Authorization": "Basic " + base64.b64encode(b"reader:p@ss").decode()
    }
    assert "p%40ss" not in repr(chosen)


def test_api_url_without_credentials_sends_none() -> None:
    chosen = load(api_url="http://127.0.0.1:8001")
    assert chosen.credentials is None and chosen.source == "--api-url http://127.0.0.1:8001"


def test_a_kubeconfig_server_with_credentials_is_refused_without_echoing_them(
    tmp_path: Path,
) -> None:
    document = config_file(
        clusters={"c": {"server": "https://admin:s3cret@api.example:6443"}},
        contexts={"c": {"cluster": "c"}},
        current="c",
    )
    with pytest.raises(ConfigError, match="holds credentials") as caught:
        load(kubeconfig=str(write(tmp_path / "config", document)))
    assert "s3cret" not in str(caught.value) and "admin:***@api.example" in str(caught.value)


def test_the_worker_process_does_not_repeat_the_configuration_warnings(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    document = config_file(
        clusters={"c": {"server": "https://api.example:6443", "insecure-skip-tls-verify": True}},
        contexts={"c": {"cluster": "c"}},
        current="c",
    )
    path = write(tmp_path / "config", document)
    with caplog.at_level(logging.WARNING):
        load_cluster_config(
            api_url=None, kubeconfig=str(path), context=None, environ={}, announce=False
        )
    assert caplog.records == []
