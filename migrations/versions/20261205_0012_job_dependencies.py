"""job dependencies: a job may wait for other jobs to complete

`depends_on` on enqueue: the job is stored as `waiting` with one `arq_job_dependencies` row per
job it waits for, and is queued (with its own priority) once every one has completed; a failed
or aborted dependency ends it (`on_dependency_failure` "fail") or lets it run once every
dependency has ended ("run"). The waiting set lives here, not in Redis, so it survives killed
workers and a flushed Redis. The statistics rollup counts waiting jobs too.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("arq_jobs") as batch:
        batch.add_column(sa.Column("on_dependency_failure", sa.String(length=8), nullable=True))
    op.create_table(
        "arq_job_dependencies",
        sa.Column("job_id", sa.String(length=128), nullable=False),
        sa.Column("depends_on", sa.String(length=128), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["arq_jobs.job_id"],
            name="fk_arq_job_dependencies_job_id_arq_jobs",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("job_id", "depends_on", name="pk_arq_job_dependencies"),
    )
    op.create_index(
        "ix_arq_job_dependencies_depends_on", "arq_job_dependencies", ["depends_on"]
    )
    with op.batch_alter_table("arq_job_stats") as batch:
        batch.add_column(
            sa.Column("waiting", sa.Integer(), nullable=False, server_default=sa.text("0"))
        )
    # The rollup's columns have no defaults (the rollup writes every one).
    with op.batch_alter_table("arq_job_stats") as batch:
        batch.alter_column("waiting", server_default=None, existing_type=sa.Integer())


def downgrade() -> None:
    # Waiting jobs cannot be told apart once the column is gone: they end as failed.
    op.execute(
        "UPDATE arq_jobs SET status = 'failed', finished_at = CURRENT_TIMESTAMP, "
        "error = '{\"type\": \"DependencyFailed\", \"message\": \"dependencies were removed "
        "by a downgrade\"}' WHERE status = 'waiting'"
    )
    with op.batch_alter_table("arq_job_stats") as batch:
        batch.drop_column("waiting")
    op.drop_index("ix_arq_job_dependencies_depends_on", table_name="arq_job_dependencies")
    op.drop_table("arq_job_dependencies")
    with op.batch_alter_table("arq_jobs") as batch:
        batch.drop_column("on_dependency_failure")
