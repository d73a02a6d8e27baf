"""job history

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "arq_jobs",
        sa.Column("job_id", sa.String(length=128), nullable=False),
        sa.Column("function", sa.String(length=100), nullable=False),
        sa.Column("queue_name", sa.String(length=200), nullable=False),
        sa.Column("args", JSON, nullable=False),
        sa.Column("owner", sa.String(length=100), nullable=False),
        sa.Column("priority", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("progress", sa.Integer(), nullable=False),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("tries", sa.Integer(), nullable=False),
        sa.Column("enqueued_at", TIMESTAMP, nullable=False),
        sa.Column("scheduled_for", TIMESTAMP, nullable=False),
        sa.Column("started_at", TIMESTAMP, nullable=True),
        sa.Column("finished_at", TIMESTAMP, nullable=True),
        sa.Column("result", JSON, nullable=True),
        sa.Column("error", JSON, nullable=True),
        sa.Column("abort_requested_by", sa.String(length=100), nullable=True),
        sa.Column("abort_requested_at", TIMESTAMP, nullable=True),
        sa.PrimaryKeyConstraint("job_id", name=op.f("pk_arq_jobs")),
    )
    op.create_index("ix_arq_jobs_enqueued", "arq_jobs", ["enqueued_at"])
    op.create_index("ix_arq_jobs_finished_status", "arq_jobs", ["finished_at", "status"])
    op.create_index("ix_arq_jobs_owner_enqueued", "arq_jobs", ["owner", "enqueued_at"])
    op.create_index("ix_arq_jobs_status_function", "arq_jobs", ["status", "function"])


def downgrade() -> None:
    op.drop_table("arq_jobs")
