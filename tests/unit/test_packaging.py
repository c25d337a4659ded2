"""The wheel ships every package of the source tree (pyproject lists them explicitly, because
the Alembic scripts of the top-level migrations/ folder ship as recorder._migrations)."""

from __future__ import annotations

import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_every_package_is_listed_in_pyproject() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = {
        ".".join(init.parent.relative_to(REPO).parts)
        for init in (REPO / "recorder").rglob("__init__.py")
        if "__pycache__" not in init.parts
    }
    assert found <= listed, f"add to [tool.setuptools] packages: {sorted(found - listed)}"
    mapped = {name for name in listed if name.startswith("recorder._migrations")}
    assert mapped == {"recorder._migrations", "recorder._migrations.versions"}
    assert config["package-dir"]["recorder._migrations"] == "migrations"
    assert (REPO / "migrations" / "env.py").exists()
