"""Least privilege and the restricted Pod Security Standard, checked on every rendered overlay.

RBAC: read-only access to metrics.k8s.io nodes and pods (get, list) and, with the cluster-objects
component, get, list and watch on pods, nodes, ReplicaSets, Jobs and HPAs; nothing else, no
wildcards.
Pods: every container (init containers included) non-root, read-only root, no privilege
escalation, all capabilities dropped, RuntimeDefault seccomp, requests and limits; every
long-running container has liveness and readiness probes; images pinned, never `latest`.

Each rule is a function returning the violations it finds, so that the last tests can show it
catches a manifest that breaks it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from tests.deploy.support import (
    Obj,
    all_containers,
    by_kind,
    ident,
    one,
    overlay_names,
    pod_template,
    render,
    workloads,
)

OVERLAYS = overlay_names()
RBAC_KINDS = ("ClusterRole", "Role")
ALLOWED = {
    # API group: (resources, verbs)
    "metrics.k8s.io": ({"nodes", "pods"}, {"get", "list"}),
    "": ({"nodes", "pods"}, {"get", "list", "watch"}),
    "apps": ({"replicasets"}, {"get", "list", "watch"}),
    "batch": ({"jobs"}, {"get", "list", "watch"}),
    "autoscaling": ({"horizontalpodautoscalers"}, {"get", "list", "watch"}),
}
"""Everything a role may grant: metrics.k8s.io in the recorder's own roles, the other groups only
in the cluster-objects component's role."""
IDENTITY_RULE = {
    "apiGroups": [""],
    "resources": ["namespaces"],
    "resourceNames": ["kube-system"],
    "verbs": ["get"],
}
"""The cluster's identity (the UID of kube-system): get on that one namespace, in the recorder's
own ClusterRole, and nothing wider; the only rule with resourceNames."""
METRICS_RULES = [
    {"apiGroups": ["metrics.k8s.io"], "resources": ["nodes", "pods"], "verbs": ["get", "list"]},
    IDENTITY_RULE,
]
OBJECT_VERBS = ["get", "list", "watch"]
CLUSTER_OBJECTS_RULES = [
    {"apiGroups": [""], "resources": ["nodes", "pods"], "verbs": OBJECT_VERBS},
    {"apiGroups": ["apps"], "resources": ["replicasets"], "verbs": OBJECT_VERBS},
    {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": OBJECT_VERBS},
    {
        "apiGroups": ["autoscaling"],
        "resources": ["horizontalpodautoscalers"],
        "verbs": OBJECT_VERBS,
    },
]
AUTH_DELEGATOR = "system:auth-delegator"
"""The built-in ClusterRole that lets the recorder create TokenReviews and
SubjectAccessReviews (--auth kubernetes): bound, never defined, by the kubernetes-auth
component."""
METRICS_ROLE = "kube-metrics-recorder"
OBJECTS_ROLE = "kube-metrics-recorder-cluster-objects"
# Volume types the restricted Pod Security Standard admits.
RESTRICTED_VOLUME_TYPES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}
RESOURCES = ("cpu", "memory")


def _walk_strings(node: Any) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for v in node.values() for s in _walk_strings(v)]
    if isinstance(node, list):
        return [s for v in node for s in _walk_strings(v)]
    return []


# ---- the rules --------------------------------------------------------------------------


def rbac_violations(objs: list[Obj]) -> list[str]:
    problems: list[str] = []
    roles = [o for o in objs if o["kind"] in RBAC_KINDS]
    if not roles:
        problems.append("no Role or ClusterRole: the recorder could not read metrics")
    for role in roles:
        if "aggregationRule" in role:
            problems.append(f"{ident(role)}: aggregationRule")
        if not role.get("rules"):
            problems.append(f"{ident(role)}: no rules")
        for rule in role.get("rules", []):
            where = f"{ident(role)} rule {rule}"
            if rule == IDENTITY_RULE and (role["kind"], role["metadata"]["name"]) == (
                "ClusterRole",
                METRICS_ROLE,
            ):
                continue  # exactly this, or one of the violations below
            if "*" in " ".join(_walk_strings(rule)):
                problems.append(f"wildcard in {where}")
            if not set(rule) <= {"apiGroups", "resources", "verbs"}:
                problems.append(f"resourceNames or nonResourceURLs in {where}")
            groups = rule.get("apiGroups", [])
            objects_role = role["metadata"]["name"] == OBJECTS_ROLE
            allowed = {g for g in ALLOWED if (g == "metrics.k8s.io") != objects_role}
            if len(groups) != 1 or groups[0] not in allowed:
                problems.append(f"API group other than one of {sorted(allowed)} in {where}")
                continue
            resources, verbs = ALLOWED[groups[0]]
            if not set(rule.get("resources", [])) <= resources:
                problems.append(f"resource other than {sorted(resources)} in {where}")
            if not set(rule.get("verbs", [])) <= verbs:
                problems.append(f"verb other than {sorted(verbs)} in {where}")
    return problems


def binding_violations(objs: list[Obj]) -> list[str]:
    problems: list[str] = []
    account = one(objs, "ServiceAccount")["metadata"]
    subject = {"kind": "ServiceAccount", "name": account["name"], "namespace": account["namespace"]}
    roles = {(o["kind"], o["metadata"]["name"], o["metadata"].get("namespace")) for o in objs}
    bindings = by_kind(objs, "ClusterRoleBinding") + by_kind(objs, "RoleBinding")
    if not bindings:
        problems.append("no bindings")
    for binding in bindings:
        ref = binding["roleRef"]
        namespace = binding["metadata"].get("namespace") if ref["kind"] == "Role" else None
        built_in = (ref["kind"], ref["name"]) == ("ClusterRole", AUTH_DELEGATOR)
        if (ref["kind"], ref["name"], namespace) not in roles and not built_in:
            problems.append(f"{ident(binding)}: binds {ref}, which this overlay does not define")
        if binding.get("subjects") != [subject]:
            problems.append(f"{ident(binding)}: subjects {binding.get('subjects')}")
    problems.extend(
        f"{ident(workload)}: not our ServiceAccount"
        for workload in workloads(objs)
        if pod_template(workload)["spec"].get("serviceAccountName") != account["name"]
    )
    return problems


def pod_violations(objs: list[Obj]) -> list[str]:
    problems: list[str] = []
    for workload in workloads(objs):
        spec = pod_template(workload)["spec"]
        where = ident(workload)
        problems.extend(
            f"{where}: {host}" for host in ("hostNetwork", "hostPID", "hostIPC") if spec.get(host)
        )
        context = spec.get("securityContext", {})
        if context.get("runAsNonRoot") is not True:
            problems.append(f"{where}: pod runAsNonRoot")
        if context.get("runAsUser", 1) == 0:
            problems.append(f"{where}: pod runs as UID 0")
        if context.get("seccompProfile") != {"type": "RuntimeDefault"}:
            problems.append(f"{where}: pod seccompProfile")
        problems.extend(
            f"{where}: volume {volume}"
            for volume in spec.get("volumes", [])
            if not set(volume) - {"name"} <= RESTRICTED_VOLUME_TYPES
        )
    return problems


def container_violations(objs: list[Obj]) -> list[str]:
    problems: list[str] = []
    for workload, role, container in all_containers(objs):
        where = f"{ident(workload)} {role} {container['name']}"
        context = container.get("securityContext", {})
        expected = {
            "runAsNonRoot": True,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        }
        for key, value in expected.items():
            if context.get(key) != value:
                problems.append(f"{where}: securityContext.{key} is {context.get(key)!r}")
        if context.get("privileged", False) or context.get("runAsUser", 1) == 0:
            problems.append(f"{where}: privileged or UID 0")
        if any("hostPort" in port for port in container.get("ports", [])):
            problems.append(f"{where}: hostPort")
        resources = container.get("resources", {})
        problems.extend(
            f"{where}: {bound} must set cpu and memory"
            for bound in ("requests", "limits")
            if not set(resources.get(bound, {})) >= set(RESOURCES)
        )
        problems += _probe_violations(where, role, container)
        problems += _image_violations(where, container)
        mounts = {
            m["mountPath"] for m in container.get("volumeMounts", []) if not m.get("readOnly")
        }
        allowed = {"/tmp", "/data", "/var/lib/recorder/spool"}
        if "/tmp" not in mounts or not mounts <= allowed:
            problems.append(
                f"{where}: writable mounts {mounts}, want /tmp (and /data or the spool folder)"
            )
    return problems


def _probe_violations(where: str, role: str, container: Obj) -> list[str]:
    probes = {k for k in container if k.endswith("Probe")}
    if role == "initContainer":
        return [f"{where}: init containers take no probes"] if probes else []
    problems: list[str] = []
    port_names = {p["name"] for p in container.get("ports", [])}
    for probe, path in (("livenessProbe", "/livez"), ("readinessProbe", "/readyz")):
        get = container.get(probe, {}).get("httpGet", {})
        if get.get("path") != path or get.get("port") not in port_names:
            problems.append(f"{where}: {probe} must GET {path} on a named port")
    startup = container.get("startupProbe")
    if startup is not None and startup.get("httpGet", {}).get("path") != "/livez":
        problems.append(f"{where}: startupProbe must GET /livez")
    return problems


def _image_violations(where: str, container: Obj) -> list[str]:
    image = container.get("image", "")
    last = image.rsplit("/", 1)[-1]
    if "@sha256:" not in image and ":" not in last:
        return [f"{where}: {image} has no tag"]
    if image.endswith(":latest"):
        return [f"{where}: {image} is :latest"]
    if container.get("imagePullPolicy") not in {None, "IfNotPresent"}:
        return [f"{where}: imagePullPolicy {container.get('imagePullPolicy')}"]
    return []


RULES: dict[str, Callable[[list[Obj]], list[str]]] = {
    "rbac": rbac_violations,
    "bindings": binding_violations,
    "pods": pod_violations,
    "containers": container_violations,
}


# ---- the overlays keep them -------------------------------------------------------------


@pytest.mark.parametrize("rule", sorted(RULES))
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_keeps_the_rule(overlay: str, rule: str) -> None:
    objs = render(overlay)
    assert workloads(objs), f"{overlay} has no workload"
    problems = RULES[rule](objs)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("overlay", [o for o in OVERLAYS if o != "namespaced"])
def test_cluster_roles_are_exactly_metrics_and_the_cluster_objects(overlay: str) -> None:
    objs = render(overlay)
    roles = {r["metadata"]["name"]: r["rules"] for r in by_kind(objs, "ClusterRole")}
    assert roles == {METRICS_ROLE: METRICS_RULES, OBJECTS_ROLE: CLUSTER_OBJECTS_RULES}
    bound = {b["roleRef"]["name"] for b in by_kind(objs, "ClusterRoleBinding")}
    assert bound == set(roles) | {AUTH_DELEGATOR}
    assert not by_kind(objs, "Role")


def test_the_namespaced_overlay_has_no_cluster_objects_rights() -> None:
    objs = render("namespaced")
    for role in by_kind(objs, "Role") + by_kind(objs, "ClusterRole"):
        assert all(rule["apiGroups"] == ["metrics.k8s.io"] for rule in role["rules"]), ident(role)


def test_namespaced_roles_grant_only_pod_metrics() -> None:
    roles = by_kind(render("namespaced"), "Role")
    assert roles
    for role in roles:
        assert role["rules"] == [
            {"apiGroups": ["metrics.k8s.io"], "resources": ["pods"], "verbs": ["get", "list"]}
        ], ident(role)


def test_the_namespaced_overlay_needs_no_cluster_wide_binding() -> None:
    """It exists to avoid cluster-wide rights: static tokens instead of reviews."""
    objs = render("namespaced")
    assert not by_kind(objs, "ClusterRoleBinding") and not by_kind(objs, "ClusterRole")


def test_no_secrets_are_rendered() -> None:
    """Credentials never live in the manifests: the PostgreSQL URL is a Secret you create."""
    for overlay in OVERLAYS:
        for obj in render(overlay):
            assert obj["kind"] != "Secret", ident(obj)
            for text in _walk_strings(obj):
                assert "postgresql" not in text.lower(), f"{ident(obj)}: {text}"


# ---- and the rules catch what they are meant to -----------------------------------------


def _mutated(overlay: str, change: Callable[[list[Obj]], None]) -> list[Obj]:
    objs = copy.deepcopy(render(overlay))
    change(objs)
    return objs


def _container(objs: list[Obj], init: bool = False) -> Obj:
    spec = pod_template(one(objs, "Deployment"))["spec"]
    container: Obj = spec["initContainers" if init else "containers"][0]
    return container


def _rule(objs: list[Obj], kind: str, name: str = METRICS_ROLE, index: int = 0) -> Obj:
    (role,) = [o for o in by_kind(objs, kind) if o["metadata"]["name"] == name]
    rule: Obj = role["rules"][index]
    return rule


MUTATIONS: dict[str, tuple[str, str, Callable[[list[Obj]], None]]] = {
    "wildcard verb": ("sqlite", "rbac", lambda o: _rule(o, "ClusterRole").update(verbs=["*"])),
    "watch verb": ("sqlite", "rbac", lambda o: _rule(o, "ClusterRole")["verbs"].append("watch")),
    "secrets": ("namespaced", "rbac", lambda o: _rule(o, "Role")["resources"].append("secrets")),
    "core group": ("sqlite", "rbac", lambda o: _rule(o, "ClusterRole").update(apiGroups=[""])),
    "watch on metrics": (
        "postgres",
        "rbac",
        lambda o: _rule(o, "ClusterRole")["verbs"].append("watch"),
    ),
    "secrets beside pods": (
        "sqlite",
        "rbac",
        lambda o: _rule(o, "ClusterRole", OBJECTS_ROLE)["resources"].append("secrets"),
    ),
    "deployments too": (
        "sqlite",
        "rbac",
        lambda o: _rule(o, "ClusterRole", OBJECTS_ROLE, 1)["resources"].append("deployments"),
    ),
    "delete jobs": (
        "sqlite",
        "rbac",
        lambda o: _rule(o, "ClusterRole", OBJECTS_ROLE, 2)["verbs"].append("delete"),
    ),
    "two groups in a rule": (
        "sqlite",
        "rbac",
        lambda o: _rule(o, "ClusterRole", OBJECTS_ROLE)["apiGroups"].append("apps"),
    ),
    "every namespace": (
        "sqlite",
        "rbac",
        lambda o: _rule(o, "ClusterRole", METRICS_ROLE, 1).pop("resourceNames"),
    ),
    "another namespace": (
        "postgres",
        "rbac",
        lambda o: _rule(o, "ClusterRole", METRICS_ROLE, 1)["resourceNames"].append("default"),
    ),
    "list namespaces": (
        "sqlite",
        "rbac",
        lambda o: _rule(o, "ClusterRole", METRICS_ROLE, 1)["verbs"].append("list"),
    ),
    "secrets of kube-system": (
        "sqlite",
        "rbac",
        lambda o: _rule(o, "ClusterRole", METRICS_ROLE, 1)["resources"].append("secrets"),
    ),
    "another built-in role": (
        "sqlite",
        "bindings",
        lambda o: next(
            b for b in by_kind(o, "ClusterRoleBinding") if b["roleRef"]["name"] == AUTH_DELEGATOR
        )["roleRef"].update(name="cluster-admin"),
    ),
    "writable secret mount": (
        "namespaced",
        "containers",
        lambda o: next(m for m in _container(o)["volumeMounts"] if m["name"] == "tokens").update(
            readOnly=False
        ),
    ),
    "foreign subject": (
        "sqlite",
        "bindings",
        lambda o: by_kind(o, "ClusterRoleBinding")[-1]["subjects"][0].update(name="default"),
    ),
    "host network": (
        "sqlite",
        "pods",
        lambda o: pod_template(one(o, "Deployment"))["spec"].update(hostNetwork=True),
    ),
    "capability kept": (
        "postgres",
        "containers",
        lambda o: _container(o, init=True)["securityContext"]["capabilities"].update(add=["NET"]),
    ),
    "writable root": (
        "sqlite",
        "containers",
        lambda o: _container(o)["securityContext"].update(readOnlyRootFilesystem=False),
    ),
    "no limits": ("sqlite", "containers", lambda o: _container(o)["resources"].pop("limits")),
    "no readiness": ("sqlite", "containers", lambda o: _container(o).pop("readinessProbe")),
    "latest image": (
        "sqlite",
        "containers",
        lambda o: _container(o).update(image="ghcr.io/x/recorder:latest"),
    ),
}


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
def test_rules_catch_a_violation(mutation: str) -> None:
    overlay, rule, change = MUTATIONS[mutation]
    assert not RULES[rule](render(overlay))
    assert RULES[rule](_mutated(overlay, change)), f"{rule} missed: {mutation}"
