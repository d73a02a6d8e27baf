"""job completion webhooks: notify_url, notify_secret, notification_job_id

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PENDING = sa.text("notify_url IS NOT NULL AND notification_job_id IS NULL")


def upgrade() -> None:
    op.add_column("arq_jobs", sa.Column("notify_url", sa.Text(), nullable=True))
    op.add_column("arq_jobs", sa.Column("notify_secret", sa.String(length=256), nullable=True))
    op.add_column(
        "arq_jobs", sa.Column("notification_job_id", sa.String(length=128), nullable=True)
    )
    op.create_index(
        "ix_arq_jobs_notify_pending",
        "arq_jobs",
        ["finished_at"],
        postgresql_where=PENDING,
        sqlite_where=PENDING,
    )


def downgrade() -> None:
    op.drop_index("ix_arq_jobs_notify_pending", table_name="arq_jobs")
    with op.batch_alter_table("arq_jobs") as batch:
        batch.drop_column("notification_job_id")
        batch.drop_column("notify_secret")
        batch.drop_column("notify_url")
