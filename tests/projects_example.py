"""The tenant ``projects`` example (``examples/projects``) on a database of its own, for the
role matrix, the row-level security test and the example's own tests (importable as
``projects_example``).

Its own database, not the suite's: the example's migration adds a revision of its own to
``alembic_version``, which ``authkeep migrate`` (run by other tests on the suite's database)
would not know. On PostgreSQL the app logs in as a role of its own, created here
``NOSUPERUSER NOBYPASSRLS`` like production's, so row-level security applies to it.

Use the fixtures by importing them into a test module::

    from projects_example import example_db, example_template  # noqa: F401
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import shutil
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from authkeep import Settings, run_migrations
from conftest import (
    CHEAP_HASHING,
    GENEROUS_LIMITS,
    TEST_SECRET,
    _pg_admin,
    _truncate_pg,
    pg_async_url,
    unavailable,
)

EXAMPLE_DIR = Path(__file__).resolve().parents[1] / "examples" / "projects"
BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@functools.cache
def load_example() -> Any:
    """``examples/projects/main.py``, imported the way uvicorn would (it is not a package)."""
    name = "projects_example_main"
    spec = importlib.util.spec_from_file_location(name, EXAMPLE_DIR / "main.py")
    assert spec is not None
    assert spec.loader is not None
    module: ModuleType = importlib.util.module_from_spec(spec)
    # Registered before running, as an import would: pydantic resolves the models'
    # postponed annotations through sys.modules.
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@dataclass(frozen=True)
class ExampleDB:
    """Where the example's data lives."""

    kind: str
    database_url: str
    """The app's login (on PostgreSQL: :attr:`app_role`, subject to row-level security)."""
    owner_url: str
    """The schema owner's login (on PostgreSQL a superuser: it bypasses row-level security)."""
    app_role: str | None = None
    database: str | None = None

    @property
    def is_postgres(self) -> bool:
        return self.kind == "postgres"

    def settings(self, **overrides: Any) -> Settings:
        """Test settings for the example app on this database."""
        values: dict[str, Any] = {
            "_env_file": None,
            "env": "test",
            "secret_key": TEST_SECRET,
            "database_url": self.database_url,
            "hash_workers": 1,
            **GENEROUS_LIMITS,
            **CHEAP_HASHING,
        }
        if self.is_postgres:
            values.update(migration_database_url=self.owner_url, database_app_role=self.app_role)
        values.update(overrides)
        return Settings(**values)

    def raw_url(self, owner: bool = False) -> str:
        """A plain ``postgresql://`` URL for asyncpg."""
        url = make_url(self.owner_url if owner else self.database_url)
        return url.set(drivername="postgresql").render_as_string(hide_password=False)


def _migrate(db: ExampleDB) -> None:
    asyncio.run(run_migrations(db.settings(), version_locations=[EXAMPLE_DIR / "migrations"]))


@pytest.fixture(scope="module", params=BACKENDS)
def example_template(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ExampleDB]:
    """The example's schema, migrated once per module: a SQLite file to copy, or a
    PostgreSQL database (and app role) dropped at the end of the module."""
    if request.param == "sqlite":
        path = tmp_path_factory.mktemp("projects") / "template.db"
        url = f"sqlite+aiosqlite:///{path}"
        template = ExampleDB("sqlite", url, url)
        _migrate(template)
        yield template
        return
    tag = uuid.uuid4().hex[:10]
    name, role = f"authkeep_projects_{tag}", f"authkeep_projects_app_{tag}"
    try:
        asyncio.run(
            _pg_admin(
                [
                    f'CREATE DATABASE "{name}"',
                    f"CREATE ROLE {role} LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE",
                ]
            )
        )
    except Exception as exc:
        unavailable("PostgreSQL", f"{type(exc).__name__}: {exc}")
    try:
        template = ExampleDB("postgres", pg_async_url(name, role), pg_async_url(name), role, name)
        _migrate(template)
        yield template
    finally:
        # The database first: a role that still holds grants in it cannot be dropped.
        asyncio.run(
            _pg_admin(
                [f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', f"DROP ROLE IF EXISTS {role}"]
            )
        )


@pytest.fixture
def example_db(example_template: ExampleDB, tmp_path: Path) -> ExampleDB:
    """An empty, migrated database for one test (a fresh SQLite copy, or PostgreSQL with
    every table emptied)."""
    if not example_template.is_postgres:
        path = tmp_path / "projects.db"
        shutil.copy(make_url(example_template.database_url).database or "", path)
        url = f"sqlite+aiosqlite:///{path}"
        return ExampleDB("sqlite", url, url)
    assert example_template.database is not None
    asyncio.run(_truncate_pg(example_template.database))
    return example_template
