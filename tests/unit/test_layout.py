"""The test tree mirrors the package: every module of recorder/ with logic has a test module
named after it, or an entry below saying which tests cover it instead.

A module ``recorder/a/b.py`` is mirrored by any ``tests/**/test_<name>.py`` or
``tests/**/test_<name>_<more>.py`` where ``<name>`` is ``b`` or ``a_b`` (the last parts of its
dotted path): ``recorder/kube/tls.py`` by ``tests/unit/test_kube_tls.py``.
"""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "recorder"
MIN_LINES = 40
"""Modules with at most this many non-blank lines hold no logic worth a module of tests."""

COVERED_ELSEWHERE: dict[str, str] = {
    # The HTTP API: routes, parameters, envelopes, limits, through real HTTP.
    "api/app.py": "tests/integration/test_api_history.py, test_api_probes.py, "
    "test_api_errors.py, test_api_fuzz.py, test_queries.py (create_app assembles them)",
    "api/deps.py": "tests/integration/conftest.py (client), test_api_probes.py, "
    "test_api_limits.py (AppDeps built with each limit and poller status)",
    "api/exposition.py": "tests/integration/test_metrics_endpoint.py",
    "api/httpmetrics.py": "tests/integration/test_api_limits.py (http metrics by route)",
    "api/schemas.py": "tests/e2e/test_openapi.py (schemathesis against /openapi.json)",
    "api/server.py": "tests/integration/test_api_limits.py (build_server's limits)",
    # Access control: through real HTTP, the simulator answering the reviews.
    "api/guard.py": "tests/integration/test_api_access.py (route walk, 401/403/429/503)",
    "api/visibility.py": "tests/integration/test_api_access.py, test_api_tokens.py (filtered)",
    "api/kubernetes_access.py": "tests/integration/test_api_access.py (reviews, cache)",
    "api/bodylimit.py": "tests/integration/test_api_access.py (413 on every route)",
    "kube/reviews.py": "tests/integration/test_api_access.py (the simulator's review endpoints)",
    "simulator/reviews.py": "tests/integration/test_api_access.py (its policy allows, denies)",
    # The commands, run as processes.
    "cli/options.py": "tests/unit/test_timeutil.py, test_settings_cluster.py (flags parsed)",
    "cli/maintenance.py": "tests/integration/test_copy.py, tests/e2e/test_database_failures.py",
    "cli/history.py": "tests/integration/test_queries.py, test_api_cluster.py (query = API)",
    "commands.py": "tests/e2e/test_run.py, test_kube_cli.py (every command as a process)",
    "exporter/collector.py": "tests/unit/test_exporter_registry.py (the reference rendering)",
    "exporter/families.py": "tests/integration/test_metrics_table.py, test_exporter_registry.py",
    "exporter/selfmetrics.py": "tests/integration/test_metrics_endpoint.py, test_metrics_table.py",
    "kube/wire.py": "tests/unit/test_kube_decode.py, test_kube_decode_fuzz.py",
    "kube/objects_wire.py": "tests/integration/test_kube_objects.py (the simulator's pods, "
    "ReplicaSets, Jobs, nodes, HPAs and watch events decoded through it)",
    "selectors.py": "tests/integration/test_simulator_server.py, test_queries.py",
    # The simulator's parts, through its server and the clients that talk to it.
    "simulator/access.py": "tests/integration/test_kube_client_access.py (TLS, tokens, RBAC)",
    "simulator/catalog.py": "tests/unit/test_simulator_model.py (names and labels it draws)",
    "simulator/discovery.py": "tests/integration/test_simulator_core.py (discovery documents), "
    "tests/e2e/test_simulator_core_kubectl.py (kubectl resolves short names through them)",
    "simulator/listing.py": "tests/integration/test_simulator_core.py (selectors, pages, 410)",
    "simulator/objects.py": "tests/integration/test_simulator_core.py (owner chains, HPAs), "
    "tests/unit/test_simulator_resources.py",
    "simulator/pods.py": "tests/integration/test_simulator_core.py, test_simulator_watch.py",
    "simulator/replies.py": "tests/integration/test_simulator_server.py (gzip, cached bodies)",
    "simulator/faults.py": "tests/e2e/test_kube_cli.py, tests/unit/test_simulator_options.py",
    "simulator/kubeconfig.py": "tests/e2e/test_kubectl.py, tests/unit/test_simulator_options.py",
    "simulator/tls.py": "tests/integration/test_kube_client_access.py, test_kube_limits.py",
    "simulator/topology.py": "tests/unit/test_simulator_model.py",
    "simulator/wire.py": "tests/integration/test_simulator_server.py, test_one_decoder.py",
    "store/workload_compaction.py": "tests/integration/test_store_workload_stats.py (taken at "
    "compaction on both databases, read back through kind=workload histories)",
}
"""Modules without a test module of their own, each with the tests that cover it."""


def modules_with_logic() -> list[Path]:
    return sorted(
        path
        for path in PACKAGE.rglob("*.py")
        if path.name not in ("__init__.py", "__main__.py")
        and sum(1 for line in path.read_text().splitlines() if line.strip()) > MIN_LINES
    )


def mirror_names() -> list[str]:
    return [path.stem.removeprefix("test_") for path in (REPO / "tests").rglob("test_*.py")]


def mirrored(module: Path, tests: list[str]) -> bool:
    parts = module.relative_to(PACKAGE).with_suffix("").parts
    names = {"_".join(parts[-n:]) for n in range(1, len(parts) + 1)}
    return any(test == name or test.startswith(f"{name}_") for test in tests for name in names)


def test_every_module_with_logic_has_a_test_module_named_after_it() -> None:
    tests = mirror_names()
    lacking = [
        module.relative_to(PACKAGE).as_posix()
        for module in modules_with_logic()
        if not mirrored(module, tests)
    ]
    unlisted = [module for module in lacking if module not in COVERED_ELSEWHERE]
    assert unlisted == [], (
        "give each a test module named after it (see this file's docstring), or an entry in "
        "COVERED_ELSEWHERE naming the tests that cover it"
    )


def test_no_entry_outlives_its_reason() -> None:
    """An entry whose module is gone, or now has a test module of its own, is removed."""
    tests = mirror_names()
    stale = [
        entry
        for entry in COVERED_ELSEWHERE
        if not (PACKAGE / entry).is_file() or mirrored(PACKAGE / entry, tests)
    ]
    assert stale == [], "remove these entries from COVERED_ELSEWHERE"
