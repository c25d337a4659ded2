"""Schema migrations through Alembic, driven from code (``recorder migrate``, ``run``)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from recorder.errors import StoreError


def _migrations_dir() -> Path:
    # Shipped inside the package as recorder._migrations (see pyproject.toml); in a source
    # checkout the same files live in the top-level migrations/ folder.
    try:
        shipped = Path(str(resources.files("recorder._migrations")))
    except ModuleNotFoundError:
        shipped = None
    if shipped is not None and (shipped / "env.py").exists():
        return shipped
    return Path(__file__).resolve().parents[2] / "migrations"


def alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(_migrations_dir()))
    config.attributes["engine"] = engine
    return config


def head_revision(engine: Engine) -> str | None:
    return ScriptDirectory.from_config(alembic_config(engine)).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine) -> None:
    try:
        command.upgrade(alembic_config(engine), "head")
    except Exception as exc:
        raise StoreError(f"migrating the database failed: {exc}") from exc


def is_current(engine: Engine) -> bool:
    return current_revision(engine) == head_revision(engine)
