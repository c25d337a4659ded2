"""`recorder simulate` flags become the simulator's TLS, authentication and fault switches."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
import yaml

from recorder.cli import build_parser
from recorder.errors import ConfigError
from recorder.simulator.faults import FaultPlan
from recorder.simulator.kubeconfig import write_kubeconfig
from recorder.simulator.options import (
    CERTIFICATE_USER,
    SERVICE_ACCOUNT,
    SimulatorOptions,
    arm,
    options_from_args,
)
from recorder.simulator.tls import subject_of


def options(*flags: str) -> SimulatorOptions:
    return options_from_args(build_parser().parse_args(["simulate", *flags]))


def test_defaults_keep_the_plain_simulator() -> None:
    plain = options()
    assert plain == SimulatorOptions()
    armed = arm(plain)
    assert armed.tls is None and armed.access is None and armed.user == {}
    assert len(armed.middleware) == 1  # fault switches only, all off
    assert not plain.faults.any


def test_fault_flags() -> None:
    chosen = options(
        "--fail-503", "3", "--slow", "250ms", "--truncate", "2", "--malformed", "1",
        "--without-metrics-api", "--faults-every", "1m",
    )  # fmt: skip
    assert chosen.faults == FaultPlan(
        unavailable=3, truncate=2, malformed=1, slow_seconds=0.25, missing=True
    )
    assert chosen.faults_every_seconds == 60
    faults = arm(chosen).faults
    assert faults.slow_seconds == 0.25 and faults.missing
    assert [faults.take() for _ in range(7)] == [
        "unavailable", "unavailable", "unavailable", "malformed", "truncate", "truncate", None,
    ]  # fmt: skip


def test_rotating_token_file_and_kubeconfig(tmp_path: Path) -> None:
    chosen = options(
        "--tls", "--auth", "token", "--token-file", str(tmp_path / "token"),
        "--rotate-token-every", "30s", "--identity-namespace", "shop",
    )  # fmt: skip
    armed = arm(chosen)
    assert armed.rotating is not None and armed.tls is not None
    assert armed.rotating.identity.user == SERVICE_ACCOUNT
    assert armed.rotating.identity.namespaces == frozenset({"shop"})
    assert (tmp_path / "token").read_text().strip() == armed.rotating.current
    assert (tmp_path / "token").stat().st_mode & 0o777 == 0o600
    path = write_kubeconfig(tmp_path / "kc", armed.kubeconfig("https://127.0.0.1:1"))
    assert path.stat().st_mode & 0o777 == 0o600
    document = yaml.safe_load(path.read_text())
    assert document["current-context"] == "recorder-simulator"
    (cluster,) = document["clusters"]
    assert base64.b64decode(cluster["cluster"]["certificate-authority-data"]) == armed.ca_pem
    assert document["users"][0]["user"] == {"tokenFile": str((tmp_path / "token").resolve())}
    old = armed.rotating.current
    armed.rotating.rotate()
    assert (tmp_path / "token").read_text().strip() == armed.rotating.current != old


def test_client_certificate_mode() -> None:
    armed = arm(options("--tls", "--auth", "client-cert"))
    assert armed.tls is not None and armed.tls.client_ca_pem == armed.ca_pem
    cert = base64.b64decode(armed.user["client-certificate-data"])
    assert subject_of(cert) == (CERTIFICATE_USER, ("recorders",))


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--auth", "client-cert"], "needs --tls"),
        (["--auth", "token", "--rotate-token-every", "1s"], "needs --auth token and --token-file"),
        (["--identity-namespace", "shop"], "needs --auth token or client-cert"),
    ],
)
def test_inconsistent_flags(flags: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        options(*flags)


@pytest.mark.parametrize("flag", ["--write-kubeconfig", "--token-file"])
def test_files_to_write_are_checked_before_anything_starts(flag: str, tmp_path: Path) -> None:
    missing = tmp_path / "missing" / "folder" / "file"
    extra = ("--auth", "token") if flag == "--token-file" else ()
    with pytest.raises(ConfigError) as caught:
        options(*extra, flag, str(missing))
    assert str(caught.value) == (
        f"{flag} {missing}: the folder {missing.parent} does not exist; create it first "
        f"(mkdir -p {missing.parent})"
    )
    assert not (tmp_path / "missing").exists()
    with pytest.raises(ConfigError, match=f"^{flag} {tmp_path}: is a folder"):
        options(*extra, flag, str(tmp_path))


def test_write_kubeconfig_says_why_it_cannot_write(tmp_path: Path) -> None:
    (tmp_path / "kc").mkdir()
    with pytest.raises(ConfigError, match=r"^cannot write the kubeconfig .*: is a directory$"):
        write_kubeconfig(tmp_path / "kc", {"kind": "Config"})


def test_review_policy_file(tmp_path: Path) -> None:
    from recorder.simulator.reviews import ReviewMiddleware

    policy = tmp_path / "policy.json"
    policy.write_text(
        '{"tokens": {"t0123456789abcdef": "alice"},'
        ' "users": {"alice": {"namespaces": ["a"], "nonResourceURLs": ["/metrics"]}}}'
    )
    armed = arm(options("--review-policy", str(policy)))
    (reviews,) = [m for m in armed.middleware if m.cls is ReviewMiddleware]
    loaded = reviews.kwargs["policy"]
    assert loaded.user_of("t0123456789abcdef") == "alice" and loaded.user_of("other") is None
    namespace_a = {
        "user": "alice",
        "resourceAttributes": {
            "group": "metrics.k8s.io",
            "resource": "pods",
            "verb": "get",
            "namespace": "a",
        },
    }
    assert loaded.review_access(namespace_a)
    namespace_a["resourceAttributes"]["namespace"] = "b"
    assert not loaded.review_access(namespace_a)
    metrics = {"user": "alice", "nonResourceAttributes": {"path": "/metrics", "verb": "get"}}
    assert loaded.review_access(metrics)
    policy.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="is not a review policy"):
        arm(options("--review-policy", str(policy)))


def test_the_scrape_spread_flag_takes_whole_seconds() -> None:
    parse = build_parser().parse_args
    assert parse(["simulate"]).scrape_spread == 0
    assert parse(["simulate", "--scrape-spread", "14s"]).scrape_spread == 14
    for bad in ("1.5s", "-2s", "soon"):
        with pytest.raises(SystemExit):
            parse(["simulate", "--scrape-spread", bad])
