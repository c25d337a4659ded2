"""``recorder simulate`` beyond plain HTTP: TLS, authentication, RBAC, faults, a kubeconfig.

`SimulatorOptions` is what the flags ask for; `arm` turns it into the pieces `serve` takes (TLS
material, middleware, the credential to hand out); `run` serves until Ctrl-C, writing the
kubeconfig once the URL is known and rotating the token / re-arming faults on their timers.
"""

from __future__ import annotations

import argparse
import base64
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.middleware import Middleware

from recorder import timeutil
from recorder.errors import ConfigError, DurationError
from recorder.simulator.access import AccessControl, AccessMiddleware, Identity, RotatingToken
from recorder.simulator.faults import FaultMiddleware, FaultPlan, Faults
from recorder.simulator.kubeconfig import check_writable, kubeconfig_document, write_kubeconfig
from recorder.simulator.model import SimulatorConfig
from recorder.simulator.reviews import ReviewMiddleware, ReviewPolicy
from recorder.simulator.server import ServerTls, serve

__all__ = ["Armed", "SimulatorOptions", "add_arguments", "arm", "options_from_args", "run"]

log = logging.getLogger(__name__)

AUTH_MODES = ("none", "token", "client-cert")
SERVICE_ACCOUNT = "system:serviceaccount:monitoring:kube-metrics-recorder"
CERTIFICATE_USER = "kube-metrics-recorder"


@dataclass(frozen=True, slots=True)
class SimulatorOptions:
    tls: bool = False
    auth: str = "none"
    namespaces: tuple[str, ...] = ()
    """Namespaces the handed-out identity may read; empty: cluster-wide."""
    token_file: Path | None = None
    rotate_token_every_seconds: float | None = None
    write_kubeconfig: Path | None = None
    core_api: bool = False
    faults: FaultPlan = field(default_factory=FaultPlan)
    faults_every_seconds: float | None = None
    review_policy: Path | None = None
    """A JSON ``ReviewPolicy``: serve TokenReviews and SubjectAccessReviews by it."""

    def __post_init__(self) -> None:
        if self.auth not in AUTH_MODES:
            raise ConfigError(f"--auth must be one of {', '.join(AUTH_MODES)}")
        if self.auth == "client-cert" and not self.tls:
            raise ConfigError("--auth client-cert needs --tls")
        if self.rotate_token_every_seconds and (self.auth != "token" or not self.token_file):
            raise ConfigError(
                "--rotate-token-every needs --auth token and --token-file (where the current "
                "token is written for clients to read)"
            )
        if self.namespaces and self.auth == "none":
            raise ConfigError("--identity-namespace needs --auth token or client-cert")
        if self.write_kubeconfig is not None:
            check_writable(self.write_kubeconfig)
        if self.token_file is not None:
            check_writable(self.token_file, "--token-file")


@dataclass
class Armed:
    """What `arm` built: pass ``tls``, ``middleware`` and ``core_api`` to `serve`."""

    tls: ServerTls | None
    middleware: list[Middleware]
    faults: Faults
    access: AccessControl | None
    rotating: RotatingToken | None
    ca_pem: bytes | None
    user: dict[str, Any] = field(default_factory=dict, repr=False)
    """The kubeconfig ``user`` fields of the handed-out credential."""

    def kubeconfig(self, url: str) -> dict[str, Any]:
        return kubeconfig_document(url, ca_pem=self.ca_pem, extra_user=self.user)


def arm(options: SimulatorOptions) -> Armed:
    faults = Faults()
    faults.apply(options.faults)
    middleware = [Middleware(FaultMiddleware, faults=faults)]
    tls = None
    ca_pem = None
    ca = None
    if options.tls:
        from recorder.simulator.tls import CertificateAuthority

        ca = CertificateAuthority.generate()
        served = ca.issue_server()
        ca_pem = ca.cert_pem
        tls = ServerTls(
            served.cert_pem,
            served.key_pem,
            client_ca_pem=ca_pem if options.auth == "client-cert" else None,
        )
    access = None
    rotating = None
    user: dict[str, Any] = {}
    namespaces = frozenset(options.namespaces) or None
    if options.auth == "token":
        access = AccessControl()
        identity = Identity(SERVICE_ACCOUNT, namespaces=namespaces)
        if options.token_file is not None:
            rotating = access.add_rotating_token(identity, options.token_file)
            user["tokenFile"] = str(options.token_file.resolve())
        else:
            user["token"] = access.add_token(identity)
    elif options.auth == "client-cert":
        assert ca is not None
        access = AccessControl()
        identity = Identity(CERTIFICATE_USER, ("recorders",), namespaces)
        access.add_certificate_user(identity)
        pair = ca.issue_client(identity.user, identity.groups)
        user["client-certificate-data"] = base64.b64encode(pair.cert_pem).decode()
        user["client-key-data"] = base64.b64encode(pair.key_pem).decode()
    if options.review_policy is not None:
        policy = ReviewPolicy.from_file(options.review_policy)
        middleware.insert(0, Middleware(ReviewMiddleware, policy=policy))
    if access is not None:
        middleware.insert(0, Middleware(AccessMiddleware, control=access))
    return Armed(tls, middleware, faults, access, rotating, ca_pem, user)


class _Every:
    """Calls ``action`` every ``seconds`` in a daemon thread."""

    def __init__(self, seconds: float, action: Callable[[], None], name: str) -> None:
        self._stop = threading.Event()

        def loop() -> None:
            while not self._stop.wait(seconds):
                action()

        threading.Thread(target=loop, name=name, daemon=True).start()

    def stop(self) -> None:
        self._stop.set()


def run(
    config: SimulatorConfig,
    host: str,
    port: int,
    options: SimulatorOptions,
    *,
    serve_v1: bool = False,
    log_level: str = "warning",
) -> None:
    """``recorder simulate``: serve until Ctrl-C with the requested extras."""
    armed = arm(options)
    timers: list[_Every] = []

    def listening(url: str) -> None:
        if options.write_kubeconfig is not None:
            write_kubeconfig(options.write_kubeconfig, armed.kubeconfig(url))
            log.info(
                "wrote %s; try: kubectl --kubeconfig %s top nodes",
                options.write_kubeconfig,
                options.write_kubeconfig,
            )
        rotating = armed.rotating
        if rotating is not None and options.rotate_token_every_seconds:
            timers.append(
                _Every(options.rotate_token_every_seconds, _rotate(rotating), "token-rotation")
            )
        if options.faults_every_seconds and options.faults.any:
            timers.append(
                _Every(
                    options.faults_every_seconds,
                    lambda: armed.faults.apply(options.faults),
                    "faults",
                )
            )

    try:
        serve(
            config,
            host,
            port,
            serve_v1=serve_v1,
            log_level=log_level,
            core_api=options.core_api or options.write_kubeconfig is not None,
            middleware=armed.middleware,
            tls=armed.tls,
            on_listening=listening,
        )
    finally:
        for timer in timers:
            timer.stop()


def _rotate(token: RotatingToken) -> Callable[[], None]:
    def rotate() -> None:
        token.rotate()
        log.info("rotated the token in %s (rotation %d)", token.file, token.rotations)

    return rotate


# --- command line ---------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("TLS, authentication and faults")
    group.add_argument("--tls", action="store_true", help="serve HTTPS with a generated CA")
    group.add_argument(
        "--auth",
        choices=AUTH_MODES,
        default="none",
        help="how clients authenticate: none (default), a bearer token, a client certificate",
    )
    group.add_argument(
        "--identity-namespace",
        action="append",
        default=[],
        metavar="NS",
        help="the handed-out identity may only read pods of NS (repeatable): cluster-wide "
        "lists get 403, as for a RoleBinding per namespace",
    )
    group.add_argument(
        "--token-file", type=Path, help="with --auth token: keep the current token in this file"
    )
    group.add_argument(
        "--rotate-token-every",
        metavar="DURATION",
        help="replace the token on this period; only the current one is accepted",
    )
    group.add_argument(
        "--write-kubeconfig",
        type=Path,
        metavar="PATH",
        help="write a kubeconfig for this simulator (kubectl and the recorder can use it); "
        "implies --core-api",
    )
    group.add_argument(
        "--core-api",
        action="store_true",
        help="also serve cluster objects with list and watch: pods, nodes, Deployments, "
        "ReplicaSets, StatefulSets, DaemonSets, Jobs, CronJobs, HPAs (and /version)",
    )
    group.add_argument(
        "--review-policy",
        type=Path,
        metavar="FILE",
        help="answer TokenReviews and SubjectAccessReviews by this JSON policy (tokens to "
        "users, users to namespaces, clusterWide, nonResourceURLs): see "
        "recorder/simulator/reviews.py",
    )
    group.add_argument("--fail-503", type=int, default=0, metavar="N", help="503 for N requests")
    group.add_argument("--slow", metavar="DURATION", help="delay each request this long")
    group.add_argument(
        "--truncate", type=int, default=0, metavar="N", help="cut N response bodies in half"
    )
    group.add_argument(
        "--malformed", type=int, default=0, metavar="N", help="answer N requests with HTML"
    )
    group.add_argument(
        "--without-metrics-api",
        action="store_true",
        help="act as a cluster without metrics-server (404 on /apis/metrics.k8s.io)",
    )
    group.add_argument(
        "--faults-every",
        metavar="DURATION",
        help="arm the --fail-503/--truncate/--malformed counts again on this period",
    )


def _seconds(text: str | None, flag: str) -> float | None:
    """A duration flag in ``timeutil``'s grammar, in seconds (more than zero); none if absent."""
    if not text:
        return None
    try:
        seconds = timeutil.parse_duration_seconds(text)
    except DurationError as exc:
        raise ConfigError(f"{flag}: {exc}") from None
    if not seconds > 0:
        raise ConfigError(f"{flag}: {text!r} must be longer than zero, e.g. 30s")
    return seconds


def options_from_args(args: argparse.Namespace) -> SimulatorOptions:
    return SimulatorOptions(
        tls=args.tls,
        auth=args.auth,
        namespaces=tuple(args.identity_namespace),
        token_file=args.token_file,
        rotate_token_every_seconds=_seconds(args.rotate_token_every, "--rotate-token-every"),
        write_kubeconfig=args.write_kubeconfig,
        core_api=args.core_api,
        faults=FaultPlan(
            unavailable=args.fail_503,
            truncate=args.truncate,
            malformed=args.malformed,
            slow_seconds=_seconds(args.slow, "--slow") or 0.0,
            missing=args.without_metrics_api,
        ),
        faults_every_seconds=_seconds(args.faults_every, "--faults-every"),
        review_policy=args.review_policy,
    )
