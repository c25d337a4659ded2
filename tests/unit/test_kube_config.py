"""Loading cluster access: kubeconfig merging as kubectl does it, precedence, in-cluster, and
the credential sources (token files, exec plugins) with a fake clock and a fake runner."""

from __future__ import annotations

import base64
import json
import logging
import random
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from recorder.errors import (
    ConfigError,
    CredentialsError,
    MetricsApiForbidden,
    MetricsApiNotFound,
    MetricsApiTimeout,
    MetricsApiTLSError,
    MetricsApiUnauthorized,
    MetricsApiUnavailable,
)
from recorder.kube.config import ClusterConfig, Sources, load_cluster_config
from recorder.kube.credentials import FileToken, jwt_subject
from recorder.kube.exec_plugin import ExecPlugin, parse_exec_spec
from recorder.kube.retry import RetryPolicy, retryable
from recorder.kube.tls import ClientCertificate, TlsSettings, build_ssl_context
from recorder.simulator.tls import CertificateAuthority

PEM_CA = CertificateAuthority.generate()


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def write(path: Path, document: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(document))
    return path


def config_file(
    clusters: dict[str, dict[str, Any]] | None = None,
    users: dict[str, dict[str, Any]] | None = None,
    contexts: dict[str, dict[str, Any]] | None = None,
    current: str | None = None,
) -> dict[str, Any]:
    document: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": k, "cluster": v} for k, v in (clusters or {}).items()],
        "users": [{"name": k, "user": v} for k, v in (users or {}).items()],
        "contexts": [{"name": k, "context": v} for k, v in (contexts or {}).items()],
    }
    if current is not None:
        document["current-context"] = current
    return document


def load(
    *,
    kubeconfig: str | None = None,
    context: str | None = None,
    environ: dict[str, str] | None = None,
    api_url: str | None = None,
    sa_dir: Path | None = None,
    sources: Sources | None = None,
) -> ClusterConfig:
    return load_cluster_config(
        api_url=api_url,
        kubeconfig=kubeconfig,
        context=context,
        environ=environ if environ is not None else {},
        service_account_dir=sa_dir or Path("/nonexistent"),
        sources=sources,
    )


def headers(config: ClusterConfig) -> dict[str, str]:
    assert config.credentials is not None
    return dict(config.credentials.headers())


# --- merging several files ----------------------------------------------------------------


def test_first_file_wins_for_each_name_and_for_current_context(tmp_path: Path) -> None:
    first = write(
        tmp_path / "a" / "config",
        config_file(
            clusters={"prod": {"server": "https://prod-a:6443"}},
            users={"alice": {"token": "from-a"}},
            contexts={"prod": {"cluster": "prod", "user": "alice"}},
            current="prod",
        ),
    )
    second = write(
        tmp_path / "b" / "config",
        config_file(
            # Same names: ignored entirely, even fields the first file lacks.
            clusters={
                "prod": {"server": "https://prod-b:6443", "tls-server-name": "b"},
                "dev": {"server": "https://dev:6443"},
            },
            users={"alice": {"token": "from-b"}, "bob": {"token": "bob-token"}},
            contexts={"dev": {"cluster": "dev", "user": "bob"}},
            current="dev",
        ),
    )
    environ = {"KUBECONFIG": f"{first}:{tmp_path / 'missing'}::{second}:{first}"}
    chosen = load(environ=environ)
    assert chosen.server == "https://prod-a:6443"
    assert chosen.tls.server_name is None
    assert headers(chosen) == {"Authorization": "Bearer from-a"}
    assert "context 'prod'" in chosen.source
    other = load(environ=environ, context="dev")
    assert other.server == "https://dev:6443"
    assert headers(other) == {"Authorization": "Bearer bob-token"}


def test_current_context_comes_from_the_first_file_that_sets_it(tmp_path: Path) -> None:
    first = write(
        tmp_path / "1", config_file(clusters={"c1": {"server": "https://one"}}, current=None)
    )
    second = write(
        tmp_path / "2",
        config_file(
            clusters={"c2": {"server": "https://two"}},
            contexts={"x": {"cluster": "c1"}, "y": {"cluster": "c2"}},
            current="x",
        ),
    )
    third = write(tmp_path / "3", config_file(current="y"))
    chosen = load(environ={"KUBECONFIG": f"{first}:{second}:{third}"})
    assert chosen.server == "https://one"
    assert chosen.credentials is None  # a context without a user is anonymous


def test_relative_paths_resolve_against_the_file_that_defines_them(tmp_path: Path) -> None:
    pair = PEM_CA.issue_client("someone")
    (tmp_path / "clusters" / "pki").mkdir(parents=True)
    (tmp_path / "clusters" / "pki" / "ca.crt").write_bytes(PEM_CA.cert_pem)
    (tmp_path / "users" / "creds").mkdir(parents=True)
    (tmp_path / "users" / "creds" / "tls.crt").write_bytes(pair.cert_pem)
    (tmp_path / "users" / "creds" / "tls.key").write_bytes(pair.key_pem)
    (tmp_path / "users" / "creds" / "token").write_text("file-token\n")
    clusters = write(
        tmp_path / "clusters" / "config",
        config_file(
            clusters={"c": {"server": "https://c", "certificate-authority": "pki/ca.crt"}},
            contexts={"c": {"cluster": "c", "user": "u"}},
            current="c",
        ),
    )
    users = write(
        tmp_path / "users" / "config",
        config_file(
            users={
                "u": {
                    "client-certificate": "creds/tls.crt",
                    "client-key": "creds/tls.key",
                    "tokenFile": "creds/token",
                }
            }
        ),
    )
    chosen = load(environ={"KUBECONFIG": f"{clusters}:{users}"})
    assert chosen.tls.ca_pem == PEM_CA.cert_pem
    assert str(tmp_path / "clusters" / "pki" / "ca.crt") in chosen.tls.ca_source
    assert headers(chosen) == {"Authorization": "Bearer file-token"}
    assert chosen.credentials is not None
    certificate = chosen.credentials.certificate()
    assert certificate is not None and certificate.cert_pem == pair.cert_pem


def test_explicit_kubeconfig_must_exist_and_is_not_merged(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load(kubeconfig=str(tmp_path / "nope"))
    only = write(
        tmp_path / "only",
        config_file(
            clusters={"c": {"server": "https://explicit"}},
            contexts={"c": {"cluster": "c"}},
            current="c",
        ),
    )
    env_file = write(tmp_path / "env", config_file(current="other"))
    assert load(kubeconfig=str(only), environ={"KUBECONFIG": str(env_file)}).server == (
        "https://explicit"
    )


def test_kubeconfig_list_with_no_existing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no kubeconfig found"):
        load(environ={"KUBECONFIG": f"{tmp_path / 'a'}:{tmp_path / 'b'}"})


@pytest.mark.parametrize(
    ("document", "context", "message"),
    [
        (config_file(), None, "has no current-context: pass --context"),
        (config_file(contexts={"a": {"cluster": "x"}}), "b", "context 'b' is not defined"),
        (config_file(contexts={"a": {"cluster": "x"}}, current="a"), None, "cluster 'x'"),
        (
            config_file(
                clusters={"x": {"server": "https://x"}},
                contexts={"a": {"cluster": "x", "user": "ghost"}},
                current="a",
            ),
            None,
            "user 'ghost'",
        ),
        (
            config_file(clusters={"x": {}}, contexts={"a": {"cluster": "x"}}, current="a"),
            None,
            "has no server",
        ),
        (
            config_file(
                clusters={"x": {"server": "ftp://x"}}, contexts={"a": {"cluster": "x"}}, current="a"
            ),
            None,
            "http:// or https:// URL",
        ),
        ({"clusters": [{"cluster": {}}]}, None, r"clusters\[0\] .* has no name"),
    ],
)
def test_broken_kubeconfigs_say_what_is_wrong(
    tmp_path: Path, document: dict[str, Any], context: str | None, message: str
) -> None:
    path = write(tmp_path / "config", document)
    with pytest.raises(ConfigError, match=message):
        load(kubeconfig=str(path), context=context)


def test_not_yaml(tmp_path: Path) -> None:
    path = tmp_path / "config"
    path.write_text("clusters: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load(kubeconfig=str(path))


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


def test_jwt_subject_is_best_effort() -> None:
    assert jwt_subject("not-a-jwt") is None
    assert jwt_subject("a.%%%.c") is None


# --- token files ------------------------------------------------------------------------------


def test_token_file_is_read_again_on_a_timer_and_on_refresh(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("one\n")
    clock = Clock()
    token = FileToken(path, "test", reread_seconds=60, clock=clock)
    path.write_text("two")
    assert token.current() == "one"  # cached
    clock.now += 60
    assert token.current() == "two"  # the timer
    path.write_text("three")
    assert token.refresh() and token.current() == "three"  # a 401
    assert not token.refresh()
    path.write_text("")  # caught mid-rotation: keep the last good token
    assert not token.refresh() and token.current() == "three"
    path.unlink()
    clock.now += 60
    assert token.current() == "three"


# --- exec plugins (fake runner) ---------------------------------------------------------------

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


# --- TLS material and retry policy -----------------------------------------------------------


def test_client_key_is_not_left_on_disk(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    pair = PEM_CA.issue_client("me")
    build_ssl_context(
        TlsSettings(ca_pem=PEM_CA.cert_pem), ClientCertificate(pair.cert_pem, pair.key_pem, "t")
    )
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ConfigError, match="cannot be used"):
        build_ssl_context(TlsSettings(), ClientCertificate(pair.cert_pem, b"junk", "the test"))
    assert list(tmp_path.iterdir()) == []


def test_a_ca_that_is_not_pem_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="holds no usable PEM certificate"):
        build_ssl_context(TlsSettings(ca_pem=b"nope", ca_source="the test CA"), None)


def test_backoff_has_jitter_and_respects_the_budget() -> None:
    policy = RetryPolicy(
        max_attempts=4, base_delay_seconds=1, max_delay_seconds=3, budget_seconds=5
    )
    rng = random.Random(7)
    for attempt, (low, high) in enumerate([(0.5, 1), (1, 2), (1.5, 3)]):
        delays = {policy.delay(attempt, None, rng) for _ in range(50)}
        assert all(low <= d <= high for d in delays) and len(delays) == 50
    assert policy.delay(0, 2.5, rng) >= 2.5  # Retry-After, capped by max_delay
    unavailable = MetricsApiUnavailable("x", status=503)
    assert policy.next_delay(unavailable, attempt=0, elapsed_seconds=0, rng=rng) is not None
    assert policy.next_delay(unavailable, attempt=0, elapsed_seconds=4.6, rng=rng) is None
    assert policy.next_delay(unavailable, attempt=3, elapsed_seconds=0, rng=rng) is None


def test_what_is_retried() -> None:
    assert retryable(MetricsApiUnavailable("x"))
    assert retryable(MetricsApiTimeout("x"))
    assert not retryable(MetricsApiTLSError("x"))
    assert not retryable(MetricsApiForbidden("x"))
    assert not retryable(MetricsApiNotFound("x"))
    assert not retryable(MetricsApiUnauthorized("x"))
    assert retryable(MetricsApiUnauthorized("x"), credentials_refreshable=True)
