"""The dashboards of deploy/grafana/dashboards against Grafana's published schema.

``@grafana/schema`` (npm, pinned in deploy/grafana/schema-check/package-lock.json) publishes
TypeScript types generated from Grafana's CUE kinds, no JSON schema: each dashboard is written
into a TypeScript file as object literals checked with ``satisfies`` against ``Dashboard`` and,
for each panel, its plugin's ``Options`` and ``FieldConfig`` (deploy/grafana/schema-check/
grafana.ts), and ``tsc --noEmit`` must accept it. Object literals get TypeScript's
excess-property checks, so a misspelt key fails as well as a wrong type. ``.ci/run`` installs
the packages (``npm ci``); without them this test fails rather than skips.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.deploy.grafana_support import SCHEMA_CHECK_DIR, dashboards, panels

TSC = SCHEMA_CHECK_DIR / "node_modules" / ".bin" / "tsc"
SCHEMA_PACKAGE = SCHEMA_CHECK_DIR / "node_modules" / "@grafana" / "schema" / "package.json"


def _typescript(boards: dict[str, dict[str, Any]]) -> tuple[str, list[str]]:
    """The TypeScript file, and which board each of its lines belongs to."""
    grafana = json.dumps(str(SCHEMA_CHECK_DIR / "grafana"))
    lines = [f"import type {{ DashboardJson, PanelTypes }} from {grafana};"]
    owners = [""]
    for index, (name, board) in enumerate(boards.items()):
        mine = [f"export const d{index} = {json.dumps(board)} satisfies DashboardJson;"]
        for panel in panels(board):
            kind = json.dumps(panel["type"])
            prefix = f"export const d{index}_p{panel['id']}"
            options = json.dumps(panel.get("options", {}))
            mine.append(f"{prefix}_options = {options} satisfies PanelTypes[{kind}]['options'];")
            custom = json.dumps(panel.get("fieldConfig", {}).get("defaults", {}).get("custom", {}))
            mine.append(f"{prefix}_custom = {custom} satisfies PanelTypes[{kind}]['custom'];")
        lines += mine
        owners += [name] * len(mine)
    return "\n".join(lines) + "\n", owners


def _tsc_errors(directory: Path, boards: dict[str, dict[str, Any]]) -> dict[str, list[str]]:
    """tsc's errors by the board whose lines they are on."""
    assert TSC.is_file() and SCHEMA_PACKAGE.is_file(), (
        f"the schema check needs its npm packages: cd {SCHEMA_CHECK_DIR} && npm ci"
    )
    text, owners = _typescript(boards)
    (directory / "dashboards.ts").write_text(text)
    config = {"extends": str(SCHEMA_CHECK_DIR / "tsconfig.json"), "files": ["dashboards.ts"]}
    (directory / "tsconfig.json").write_text(json.dumps(config))
    done = subprocess.run(
        [str(TSC), "--project", str(directory / "tsconfig.json"), "--pretty", "false"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    errors: dict[str, list[str]] = {}
    for line in done.stdout.splitlines():
        found = re.search(r"dashboards\.ts\((\d+),\d+\): (error .*)", line)
        if found is None:
            continue  # a continuation of the error above
        errors.setdefault(owners[int(found[1]) - 1], []).append(found[2])
    assert (done.returncode != 0) == bool(errors), done.stdout + done.stderr
    assert "" not in errors, errors[""]
    return errors


def test_the_schema_is_grafanas_13_2() -> None:
    assert json.loads(SCHEMA_PACKAGE.read_text())["version"].startswith("13.2.")
    lock = json.loads((SCHEMA_CHECK_DIR / "package-lock.json").read_text())
    assert lock["packages"]["node_modules/@grafana/schema"]["version"].startswith("13.2.")


MISTAKES: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "misspelt key": (lambda b: b.__setitem__("schemaVerson", 41), '"schemaVerson"'),
    "unknown variable type": (
        lambda b: b["templating"]["list"][1].__setitem__("type", "label_values"),
        '"label_values"',
    ),
    "string width": (
        lambda b: b["panels"][0]["gridPos"].__setitem__("w", "12"),
        "'string' is not assignable to type 'number'",
    ),
    "misspelt panel option": (
        lambda b: b["panels"][0]["options"].__setitem__("colourMode", "value"),
        '"colourMode"',
    ),
    "enum value": (
        lambda b: b["panels"][0]["options"].__setitem__("graphMode", "sparkline"),
        '"sparkline"',
    ),
}
"""Mistakes made to the cluster overview (its first panel is a stat panel), and what tsc's
error about each says."""


def test_the_dashboards_satisfy_grafanas_schema_and_mistakes_do_not(tmp_path: Path) -> None:
    """One tsc run: the dashboards as they are, and the cluster overview with each mistake."""
    boards = dashboards()
    assert boards["cluster-overview"]["panels"][0]["type"] == "stat"
    for name, (mistake, _said) in MISTAKES.items():
        board = copy.deepcopy(boards["cluster-overview"])
        mistake(board)
        boards[name] = board
    errors = _tsc_errors(tmp_path, boards)
    assert {name: errors.get(name) for name in dashboards()} == dict.fromkeys(dashboards())
    for name, (_mistake, said) in MISTAKES.items():
        assert any(said in error for error in errors.get(name, [])), (name, errors.get(name))
