"""reports of all communities: `reports.group_id` may be NULL

`POST /api/v1/comments/report/async` without `group_id` makes a report over every stored
community, stored with a NULL `group_id`. SQLite alters the column through a table copy (batch
mode).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("reports") as batch:
        batch.alter_column("group_id", existing_type=sa.BigInteger(), nullable=True)


def downgrade() -> None:
    # Reports over all communities have no community to keep them under.
    op.execute("DELETE FROM reports WHERE group_id IS NULL")
    with op.batch_alter_table("reports") as batch:
        batch.alter_column("group_id", existing_type=sa.BigInteger(), nullable=False)
