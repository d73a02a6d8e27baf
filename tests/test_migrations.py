"""The migrations build exactly the schema the models declare (no drift either way)."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection

import src.arq.models
import src.comments.models
import src.maintenance.models
import src.reports.models  # noqa: F401  (the tables migrations/env.py registers)
from src.config import Settings
from src.database import Base, create_engine


def _differences(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(
        connection, opts={"compare_type": True, "compare_server_default": False}
    )
    return list(compare_metadata(context, Base.metadata))


async def test_migrated_database_matches_the_models(settings: Settings) -> None:
    engine = create_engine(settings.database_url)
    try:
        async with engine.connect() as connection:
            differences = await connection.run_sync(_differences)
    finally:
        await engine.dispose()
    # Alembic's own bookkeeping table is not a model.
    differences = [
        diff
        for diff in differences
        if not (diff[0] == "remove_table" and diff[1].name == "alembic_version")
    ]
    assert differences == []
