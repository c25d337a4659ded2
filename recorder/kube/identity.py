"""The cluster's identity: the UID of its ``kube-system`` namespace.

In a pod, the API server's address (``https://10.96.0.1:443``) is the same in every cluster,
so it cannot tell clusters apart; the ``kube-system`` namespace exists in every cluster, is
never deleted, and its UID is unique to the cluster. A recorder running in-cluster without
``--cluster`` records under a name made from it (``recorder.store.clusters``), and the UID is
kept beside the name in the database, so that two clusters never share a history by accident.

The read is one bounded ``GET /api/v1/namespaces/kube-system`` (the client's deadline and
retries, a small size limit). It needs ``get`` on that one namespace; without it (a
namespaced installation) or when it fails, ``cluster_uid`` says why once and returns
``None``: the recorder then chooses its name as it would without the identity.
"""

from __future__ import annotations

import logging

import msgspec

from recorder.errors import MalformedResponseError, RecorderError
from recorder.kube.client import MetricsClient
from recorder.kube.config import ClusterConfig
from recorder.kube.retry import RetryPolicy

__all__ = ["KUBE_SYSTEM", "MAX_NAMESPACE_BYTES", "RBAC_RULE", "cluster_uid", "read_uid"]

log = logging.getLogger(__name__)

KUBE_SYSTEM = "kube-system"
RBAC_RULE = (
    'a ClusterRole with apiGroups [""], resources [namespaces], resourceNames [kube-system], '
    "verbs [get] and a ClusterRoleBinding to it"
)
MAX_NAMESPACE_BYTES = 256 * 1024
"""A namespace object is a few hundred bytes; managed fields and annotations stay far below."""
MAX_UID_CHARS = 128


class _Metadata(msgspec.Struct, gc=False):
    uid: str = ""


class _Namespace(msgspec.Struct, gc=False):
    metadata: _Metadata


_decoder = msgspec.json.Decoder(_Namespace)


def read_uid(client: MetricsClient) -> str:
    """The UID of the ``kube-system`` namespace; a ``MetricsApiError`` (403 names the RBAC
    rule) or ``MalformedResponseError`` when it cannot be read."""
    what = f"the namespace {KUBE_SYSTEM}"
    body = client.get_object(f"/api/v1/namespaces/{KUBE_SYSTEM}", what=what, rbac_rule=RBAC_RULE)
    try:
        uid = _decoder.decode(body).metadata.uid.strip()
    except msgspec.DecodeError as exc:
        raise MalformedResponseError(
            f"{what} from {client.config.server} is not a Namespace: {exc}"
        ) from exc
    if not uid or len(uid) > MAX_UID_CHARS or not uid.isprintable():
        raise MalformedResponseError(
            f"{what} from {client.config.server} has no usable metadata.uid ({uid[:40]!r})"
        )
    return uid


def cluster_uid(
    config: ClusterConfig, *, timeout_seconds: float, named: str | None = None
) -> str | None:
    """The cluster's ``kube-system`` UID, or ``None`` after one line saying why it could not
    be read: a warning that ``--cluster`` names the cluster instead, or, when it was given
    (``named``), a note that the name is not checked against the cluster's identity."""
    try:
        with MetricsClient(
            config,
            timeout_seconds=timeout_seconds,
            retry=RetryPolicy(budget_seconds=timeout_seconds),
            max_response_bytes=MAX_NAMESPACE_BYTES,
        ) as client:
            return read_uid(client)
    except RecorderError as exc:
        if named is not None:
            log.info(
                "cannot read this cluster's identity (the UID of namespace %s), so the "
                "database cannot check that --cluster %s names no other cluster: %s",
                KUBE_SYSTEM,
                named,
                exc,
            )
            return None
        log.warning(
            "cannot read this cluster's identity (the UID of namespace %s), so the cluster's "
            "name is chosen without it: %s. Pass --cluster NAME (RECORDER_CLUSTER) to name "
            "this cluster",
            KUBE_SYSTEM,
            exc,
        )
        return None
