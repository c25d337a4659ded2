"""The Kustomize overlays render offline and every object is valid for Kubernetes.

Each overlay is rendered with `kubectl kustomize`; the built-in kinds are checked with
kubernetes-validate's strict schemas (unknown fields rejected), the ServiceMonitor against the
CRD schema kept in deploy/schemas/.
"""

from __future__ import annotations

import copy
import subprocess
import sys

import kubernetes_validate
import pytest
import yaml

from tests.deploy.support import (
    APP_NAME,
    PROMETHEUSRULE_SCHEMA,
    SERVICEMONITOR_SCHEMA,
    Obj,
    by_kind,
    component_names,
    crd_validator,
    ident,
    one,
    overlay_names,
    pod_template,
    project_version,
    render,
    selector_matches,
    workloads,
)

# The newest Kubernetes whose schemas kubernetes-validate ships, and the oldest we support.
KUBERNETES_VERSIONS = ["1.31.0", "1.37.0"]
CRD_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): SERVICEMONITOR_SCHEMA,
    ("monitoring.coreos.com/v1", "PrometheusRule"): PROMETHEUSRULE_SCHEMA,
}
EXPECTED_OVERLAYS = {
    "sqlite",
    "sqlite-servicemonitor",
    "postgres",
    "postgres-servicemonitor",
    "namespaced",
}
COMMON_LABELS = {
    "app.kubernetes.io/name": APP_NAME,
    "app.kubernetes.io/instance": APP_NAME,
    "app.kubernetes.io/part-of": APP_NAME,
    "app.kubernetes.io/managed-by": "kustomize",
}

OVERLAYS = overlay_names()


def test_overlays_and_components_are_the_documented_ones() -> None:
    assert set(OVERLAYS) == EXPECTED_OVERLAYS
    assert set(component_names()) == {
        "servicemonitor",
        "postgres",
        "namespaced",
        "cluster-objects",
        "kubernetes-auth",
        "token-auth",
        "prometheusrule",
    }


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders(overlay: str) -> None:
    objs = render(overlay)
    assert objs, f"{overlay} rendered nothing"
    idents = [ident(o) for o in objs]
    assert len(idents) == len(set(idents)), f"duplicate objects in {overlay}: {idents}"
    one(objs, "Deployment")
    one(objs, "Service")
    one(objs, "ServiceAccount")
    one(objs, "Namespace")


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_validates_strictly(overlay: str, version: str) -> None:
    problems = []
    for obj in render(overlay):
        crd = CRD_SCHEMAS.get((obj["apiVersion"], obj["kind"]))
        if crd is not None:
            errors = list(crd_validator(crd).iter_errors(obj))
            problems += [f"{ident(obj)}: {'.'.join(map(str, e.path))}: {e.message}" for e in errors]
            continue
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            problems.append(f"{ident(obj)}: {path}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            problems.append(f"{ident(obj)}: {exc.message} (add its CRD schema to CRD_SCHEMAS)")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kubernetes_validate_cli_passes(overlay: str) -> None:
    """The same check through the command line a reader would run by hand."""
    version = ["--kubernetes-version", KUBERNETES_VERSIONS[-1]]
    done = subprocess.run(
        [sys.executable, "-m", "kubernetes_validate", "--strict", "--quiet", *version, "-"],
        input=yaml.safe_dump_all(render(overlay)),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ERROR" not in done.stdout, done.stdout
    unknown = [line for line in done.stdout.splitlines() if line.startswith("WARN")]
    assert all("ServiceMonitor" in line or "PrometheusRule" in line for line in unknown), unknown


def test_strict_validation_rejects_an_unknown_field() -> None:
    """Guards the test above against a validator that accepts anything."""
    deployment = one(render("sqlite"), "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["securityContxt"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[-1], strict=True)


def test_servicemonitor_schema_rejects_unknown_and_mistyped_fields() -> None:
    validator = crd_validator(SERVICEMONITOR_SCHEMA)
    monitor = one(render("postgres-servicemonitor"), "ServiceMonitor")
    assert not list(validator.iter_errors(monitor))
    typo = copy.deepcopy(monitor)
    typo["spec"]["endpoints"][0]["honourLabels"] = True
    assert list(validator.iter_errors(typo))
    wrong = copy.deepcopy(monitor)
    wrong["spec"]["endpoints"][0]["interval"] = "30 seconds"
    assert list(validator.iter_errors(wrong))
    missing = copy.deepcopy(monitor)
    del missing["spec"]["selector"]
    assert list(validator.iter_errors(missing))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_carries_the_recommended_labels(overlay: str) -> None:
    expected = {**COMMON_LABELS, "app.kubernetes.io/version": project_version()}
    for obj in render(overlay):
        labels = obj["metadata"].get("labels", {})
        missing = {k: v for k, v in expected.items() if labels.get(k) != v}
        assert not missing, f"{ident(obj)} lacks or differs on labels {missing}"
        if obj["kind"] != "Namespace":
            assert labels.get("app.kubernetes.io/component") == "recorder", ident(obj)
    for workload in workloads(render(overlay)):
        labels = pod_template(workload)["metadata"]["labels"]
        assert {k: labels.get(k) for k in expected} == expected, ident(workload)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_namespaced_objects_live_in_the_recorder_namespace(overlay: str) -> None:
    objs = render(overlay)
    namespace = one(objs, "Namespace")["metadata"]["name"]
    assert namespace == APP_NAME
    for obj in objs:
        if obj["kind"] in {"Namespace", "ClusterRole", "ClusterRoleBinding"}:
            assert "namespace" not in obj["metadata"], ident(obj)
        elif obj["kind"] in {"Role", "RoleBinding"}:
            continue  # namespaced mode: these go into the watched namespaces
        else:
            assert obj["metadata"].get("namespace") == namespace, ident(obj)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_service_reaches_the_pods_on_the_named_http_port(overlay: str) -> None:
    objs = render(overlay)
    service = one(objs, "Service")
    deployment = one(objs, "Deployment")
    template = pod_template(deployment)
    assert selector_matches(service["spec"]["selector"], template["metadata"]["labels"])
    assert selector_matches(
        deployment["spec"]["selector"]["matchLabels"], template["metadata"]["labels"]
    )
    (port,) = service["spec"]["ports"]
    assert port["name"] == "http"
    assert port["port"] == 8080
    container_ports = {
        p["name"]: p["containerPort"] for p in template["spec"]["containers"][0]["ports"]
    }
    assert container_ports == {"http": 8080}
    assert port["targetPort"] == "http"


@pytest.mark.parametrize("overlay", [o for o in OVERLAYS if "servicemonitor" in o])
def test_servicemonitor_scrapes_the_service_honoring_labels(overlay: str) -> None:
    objs = render(overlay)
    monitor = one(objs, "ServiceMonitor")
    service = one(objs, "Service")
    assert monitor["metadata"]["namespace"] == service["metadata"]["namespace"]
    assert selector_matches(
        monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"]
    )
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["honorLabels"] is True
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"
    (drop,) = endpoint["relabelings"]
    assert drop["action"] == "labeldrop"
    dropped = {"namespace", "service", "pod", "container", "endpoint"}
    assert set(drop["regex"].strip("()").split("|")) == dropped


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlays_without_the_component_have_no_servicemonitor(overlay: str) -> None:
    has_monitor = bool(by_kind(render(overlay), "ServiceMonitor"))
    assert has_monitor == ("servicemonitor" in overlay)
    assert bool(by_kind(render(overlay), "PrometheusRule")) == has_monitor


def _deployment(overlay: str) -> Obj:
    return one(render(overlay), "Deployment")


@pytest.mark.parametrize("overlay", ["sqlite", "sqlite-servicemonitor", "namespaced"])
def test_sqlite_mode_is_one_replica_on_a_claim(overlay: str) -> None:
    objs = render(overlay)
    deployment = one(objs, "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    claim = one(objs, "PersistentVolumeClaim")
    pod = spec["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    data = next(n for n, v in volumes.items() if "persistentVolumeClaim" in v)
    assert volumes[data]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    (container,) = pod["containers"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts["/data"] == data
    assert "emptyDir" in volumes[mounts["/tmp"]]
    env = {e["name"]: e for e in container["env"]}
    assert env["RECORDER_DATABASE_URL"]["value"].startswith("sqlite:////data/")
    assert not by_kind(objs, "PodDisruptionBudget")


@pytest.mark.parametrize("overlay", ["postgres", "postgres-servicemonitor"])
def test_postgres_mode_is_two_replicas_without_local_state(overlay: str) -> None:
    objs = render(overlay)
    deployment = one(objs, "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 2
    assert spec["strategy"]["type"] == "RollingUpdate"
    assert spec["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    assert not by_kind(objs, "PersistentVolumeClaim")
    pod = spec["template"]["spec"]
    assert all("persistentVolumeClaim" not in v for v in pod["volumes"])

    labels = spec["template"]["metadata"]["labels"]
    anti = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    (term,) = anti
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert selector_matches(term["podAffinityTerm"]["labelSelector"]["matchLabels"], labels)

    budget = one(objs, "PodDisruptionBudget")
    assert selector_matches(budget["spec"]["selector"]["matchLabels"], labels)
    assert budget["spec"].get("maxUnavailable", 0) == 1 or budget["spec"].get("minAvailable") == 1

    everything = pod["containers"] + pod["initContainers"]
    for container in everything:
        (url,) = [e for e in container["env"] if e["name"] == "RECORDER_DATABASE_URL"]
        assert "value" not in url, f"{container['name']}: the URL must come from a Secret"
        ref = url["valueFrom"]["secretKeyRef"]
        assert ref == {"name": "kube-metrics-recorder-database", "key": "url"}
    migrate = [c for c in pod["initContainers"] if c.get("args") == ["migrate"]]
    assert migrate, "an init container must run `recorder migrate` before the recorder starts"
    assert pod["containers"][0]["args"] == ["run"]


def test_namespaced_mode_has_a_role_for_every_watched_namespace() -> None:
    objs = render("namespaced")
    assert not by_kind(objs, "ClusterRole")
    assert not by_kind(objs, "ClusterRoleBinding")
    (container,) = pod_template(one(objs, "Deployment"))["spec"]["containers"]
    args = container["args"]
    assert args[0] == "run"
    watched = {a.removeprefix("--namespace=") for a in args if a.startswith("--namespace=")}
    assert watched, "namespaced mode needs --namespace arguments"
    roles = {r["metadata"]["namespace"]: r for r in by_kind(objs, "Role")}
    bindings = {b["metadata"]["namespace"]: b for b in by_kind(objs, "RoleBinding")}
    assert set(roles) == watched == set(bindings)
    account = one(objs, "ServiceAccount")["metadata"]
    for namespace, binding in bindings.items():
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": roles[namespace]["metadata"]["name"],
        }
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": account["name"], "namespace": account["namespace"]}
        ]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_images_are_pinned_to_the_release(overlay: str) -> None:
    version = project_version()
    images = {c["image"] for w in workloads(render(overlay)) for c in _pod_containers(w)}
    assert len(images) == 1, f"every container runs the same image, got {images}"
    (image,) = images
    name, _, tag = image.rpartition(":")
    assert name and "/" in name, image
    assert tag == version, f"{image}: tag should be the release {version}"


def _pod_containers(workload: Obj) -> list[Obj]:
    spec = pod_template(workload)["spec"]
    return list(spec.get("containers", [])) + list(spec.get("initContainers", []))


# ---- access control ---------------------------------------------------------------------

CLUSTER_WIDE = [o for o in OVERLAYS if o != "namespaced"]


def _env(overlay: str) -> dict[str, str]:
    (container,) = pod_template(_deployment(overlay))["spec"]["containers"]
    return {e["name"]: e.get("value", "") for e in container.get("env", [])}


@pytest.mark.parametrize("overlay", CLUSTER_WIDE)
def test_cluster_wide_overlays_check_callers_with_reviews(overlay: str) -> None:
    assert _env(overlay)["RECORDER_AUTH"] == "kubernetes"
    objs = render(overlay)
    (binding,) = [
        b
        for b in by_kind(objs, "ClusterRoleBinding")
        if b["roleRef"]["name"] == "system:auth-delegator"
    ]
    account = one(objs, "ServiceAccount")["metadata"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["name"], "namespace": account["namespace"]}
    ]


def test_the_namespaced_overlay_uses_static_tokens_from_a_secret() -> None:
    env = _env("namespaced")
    assert env["RECORDER_AUTH"] == "tokens"
    spec = pod_template(_deployment("namespaced"))["spec"]
    (mount,) = [
        m
        for m in spec["containers"][0]["volumeMounts"]
        if env["RECORDER_AUTH_TOKEN_FILE"].startswith(m["mountPath"] + "/")
    ]
    assert mount["readOnly"] is True and "subPath" not in mount  # a changed Secret arrives
    (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
    assert volume["secret"]["secretName"] == "kube-metrics-recorder-tokens"
    objs = render("namespaced")
    assert not [
        b for b in by_kind(objs, "ClusterRoleBinding") if "auth-delegator" in b["roleRef"]["name"]
    ]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_overlay_admits_traffic_to_the_http_port_only(overlay: str) -> None:
    objs = render(overlay)
    policy = one(objs, "NetworkPolicy")
    template = pod_template(_deployment(overlay))
    assert selector_matches(
        policy["spec"]["podSelector"]["matchLabels"], template["metadata"]["labels"]
    )
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    (rule,) = policy["spec"]["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": "http"}]
    ports = {p["name"] for p in template["spec"]["containers"][0]["ports"]}
    assert ports == {"http"}


@pytest.mark.parametrize("overlay", [o for o in OVERLAYS if "servicemonitor" in o])
def test_the_servicemonitor_sends_its_service_account_token(overlay: str) -> None:
    (endpoint,) = one(render(overlay), "ServiceMonitor")["spec"]["endpoints"]
    assert endpoint["bearerTokenFile"] == "/var/run/secrets/kubernetes.io/serviceaccount/token"
    assert _env(overlay)["RECORDER_AUTH"] == "kubernetes"
