"""Options several commands share: the settings flags, /metrics cardinality, the cluster
filter, and the duration type argparse checks them with."""

from __future__ import annotations

import argparse

from recorder import timeutil
from recorder.errors import DurationError, QueryError
from recorder.query import params
from recorder.query.formats import TIME_FORMATS
from recorder.selectors import LabelSelector
from recorder.settings import LOG_LEVELS, parse_log_level


def positive_seconds(text: str) -> float:
    """A duration flag (``timeutil``'s grammar) in seconds, more than zero; argparse names the
    flag in its message."""
    try:
        seconds = timeutil.parse_duration_seconds(text)
    except DurationError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if not seconds > 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be longer than zero, e.g. 30s")
    return seconds


def whole_seconds(text: str) -> int:
    """A duration flag in whole seconds, zero or more (``0s`` allowed)."""
    try:
        seconds = timeutil.parse_duration_seconds(text)
    except DurationError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if not (seconds >= 0 and seconds == int(seconds)):
        raise argparse.ArgumentTypeError(f"{text!r} must be whole seconds, 0s or more")
    return int(seconds)


def positive_int(text: str) -> int:
    """A count flag: a whole number, at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def selector(text: str | None) -> LabelSelector | None:
    """The ``-l/--selector`` flag's label selector (``None`` when not given)."""
    try:
        return params.parse_selector(text)
    except QueryError as exc:
        raise QueryError(f"-l/--selector: {exc}") from None


def log_level_name(text: str) -> str:
    """``--log-level``: one of ``LOG_LEVELS``, any case; argparse names the flag."""
    try:
        return parse_log_level(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


_LOG_LEVEL_HELP = (
    f"{', '.join(LOG_LEVELS)} (default INFO; also RECORDER_LOG_LEVEL); DEBUG adds the "
    "recorder's own detail, libraries stay at WARNING"
)


def database_url(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--database-url", help="SQLAlchemy URL (default sqlite:///recorder.db)")


def log_level(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--log-level", type=log_level_name, help=_LOG_LEVEL_HELP)


def common(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("common options (each also RECORDER_<NAME>)")
    group.add_argument("--database-url", help="SQLAlchemy URL (default sqlite:///recorder.db)")
    group.add_argument("--api-url", help="plain Metrics API base URL, e.g. kubectl proxy's")
    group.add_argument("--kubeconfig", help="kubeconfig file (default: KUBECONFIG)")
    group.add_argument("--context", help="kubeconfig context (default: current-context)")
    group.add_argument(
        "--cluster",
        help="name of this cluster, the cluster label of every series (default: the kubeconfig "
        "context's name for a new history, else default); set it before the first run: "
        "changing it starts new series",
    )
    group.add_argument(
        "--namespace",
        action="append",
        help="only pods of this namespace (repeatable); skips nodes",
    )
    group.add_argument(
        "--interval",
        type=positive_seconds,
        help="poll interval: a duration such as 30s, 1m30s or 45 (seconds) (default 30s)",
    )
    group.add_argument("--log-level", type=log_level_name, help=_LOG_LEVEL_HELP)


def exposition(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("/metrics cardinality (each also RECORDER_<NAME>)")
    group.add_argument(
        "--metrics-containers",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="per-container gauges on /metrics (default on; recording is not affected)",
    )
    group.add_argument(
        "--metrics-namespace",
        action="append",
        metavar="PATTERN",
        help="only containers of matching namespaces on /metrics (repeatable; e.g. 'team-*')",
    )
    group.add_argument(
        "--metrics-exclude-namespace",
        action="append",
        metavar="PATTERN",
        help="no containers of matching namespaces on /metrics (repeatable; wins)",
    )


def cluster_filter(parser: argparse.ArgumentParser) -> None:
    # Its own dest: the ``cluster`` setting names the cluster a recorder writes, not a filter.
    parser.add_argument(
        "--cluster", dest="only_cluster", metavar="NAME", help="only series of this cluster"
    )


def time_format(parser: argparse.ArgumentParser, what: str) -> None:
    """``--time-format rfc3339|unix``: how ``what`` are written."""
    parser.add_argument(
        "--time-format",
        default="rfc3339",
        choices=TIME_FORMATS,
        help=f"{what}: rfc3339 (default, 2026-11-28T16:00:00Z) or unix seconds",
    )


def non_negative_number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be 0 or more")
    return value


def simulated_changes(parser: argparse.ArgumentParser, *, rollout_every: str) -> None:
    """How the simulated cluster changes: pods replaced (churn) and Deployments rolled out."""
    parser.add_argument(
        "--churn",
        type=non_negative_number,
        default=0.05,
        metavar="PER_HOUR",
        help="how often each pod is replaced by a new one (new name), per hour, up to 60 "
        "(default 0.05: about once a day)",
    )
    parser.add_argument(
        "--rollout-every",
        type=whole_seconds,
        default=rollout_every,
        metavar="DURATION",
        help="roll out every Deployment once per DURATION (a new ReplicaSet, its pods replaced "
        f"one by one); 0s: never (default {rollout_every})",
    )


def access(parser: argparse.ArgumentParser) -> None:
    """Who may read the HTTP API, its limits and TLS (README "Access control")."""
    group = parser.add_argument_group("access control and TLS (each also RECORDER_<NAME>)")
    group.add_argument(
        "--auth",
        choices=("none", "tokens", "kubernetes"),
        help="who may read: none (default: anyone who reaches the port), tokens (bearer tokens "
        "from --auth-token-file), kubernetes (TokenReview + SubjectAccessReview per namespace)",
    )
    group.add_argument(
        "--auth-token-file",
        metavar="PATH",
        help="with --auth tokens: lines TOKEN[,NAME[,SCOPE]], SCOPE * or namespaces and "
        "/metrics separated by ';' (read again when the file changes)",
    )
    group.add_argument(
        "--rate-limit",
        type=non_negative_number,
        metavar="PER_SECOND",
        help="requests a second per client, its token's identity or else its address "
        "(default 20 with --auth tokens or kubernetes, off with none; 0: off)",
    )
    group.add_argument("--rate-limit-burst", type=positive_int, metavar="N", help="default 100")
    group.add_argument(
        "--tls-cert-file", metavar="PATH", help="serve HTTPS with this PEM certificate (chain)"
    )
    group.add_argument("--tls-key-file", metavar="PATH", help="the PEM key of --tls-cert-file")
