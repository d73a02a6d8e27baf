"""job stats rollup: hourly, daily and monthly sums of the history for the queue statistics

`GET /api/v1/arq/stats` over a long window read every job of it (an admin's year at 1 million
jobs: ~5.5 s). `arq_job_stats` holds, per UTC hour, day and month of enqueue time, per owner and
task and over every owner, the jobs' counts by status, retries and log-bucketed histograms of
run time and queue wait (`src.arq.stats_rollup` computes them from the history, never edits
them). A window then reads whole periods there and only its edges from the history.

What keeps it true: on PostgreSQL, statement triggers on `arq_jobs` append the enqueue hours of
the rows a statement inserted, deleted or changed in what the statistics read to
`arq_job_stats_dirty`, in the writer's own transaction and without locking anything shared;
the workers' roll-up recomputes those hours (and their days and months) and takes their rows;
a read takes a dirty hour from the history. TRUNCATE of the history empties both tables.
Every hour that has jobs now is marked dirty: the workers fill the rollup after the upgrade,
and until then the statistics read the history as before.

SQLite gets the tables (the same schema on both) but no triggers: there the statistics always
read the history.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STATUSES = ("queued", "deferred", "in_progress", "retrying", "complete", "failed", "aborted")
# An update marks the hours of the rows it changed in what the statistics read (job_id, owner,
# function, status, tries and the four times): a progress update, say, marks nothing.
FUNCTION = """
CREATE FUNCTION arq_job_stats_touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO arq_job_stats_dirty (hour)
        SELECT DISTINCT date_trunc('hour', enqueued_at, 'UTC') FROM new_jobs;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO arq_job_stats_dirty (hour)
        SELECT DISTINCT date_trunc('hour', enqueued_at, 'UTC') FROM old_jobs;
    ELSE
        INSERT INTO arq_job_stats_dirty (hour)
        SELECT DISTINCT date_trunc('hour', enqueued_at, 'UTC') FROM (
            (
                SELECT job_id, owner, function, status, tries,
                       enqueued_at, scheduled_for, started_at, finished_at FROM new_jobs
                EXCEPT
                SELECT job_id, owner, function, status, tries,
                       enqueued_at, scheduled_for, started_at, finished_at FROM old_jobs
            )
            UNION ALL
            (
                SELECT job_id, owner, function, status, tries,
                       enqueued_at, scheduled_for, started_at, finished_at FROM old_jobs
                EXCEPT
                SELECT job_id, owner, function, status, tries,
                       enqueued_at, scheduled_for, started_at, finished_at FROM new_jobs
            )
        ) AS changed;
    END IF;
    RETURN NULL;
END
$$
"""
TRUNCATE_FUNCTION = """
CREATE FUNCTION arq_job_stats_clear() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    TRUNCATE arq_job_stats, arq_job_stats_dirty;
    RETURN NULL;
END
$$
"""
TRIGGERS = {
    "arq_jobs_stats_insert": "AFTER INSERT ON arq_jobs REFERENCING NEW TABLE AS new_jobs",
    "arq_jobs_stats_update": (
        "AFTER UPDATE ON arq_jobs REFERENCING OLD TABLE AS old_jobs NEW TABLE AS new_jobs"
    ),
    "arq_jobs_stats_delete": "AFTER DELETE ON arq_jobs REFERENCING OLD TABLE AS old_jobs",
}


def upgrade() -> None:
    int_array = postgresql.ARRAY(sa.Integer()).with_variant(sa.JSON(), "sqlite")
    op.create_table(
        "arq_job_stats",
        sa.Column("grain", sa.String(length=8), nullable=False),
        sa.Column("all_owners", sa.Boolean(), nullable=False),
        sa.Column("owner", sa.String(length=100), nullable=False),
        sa.Column("period", sa.DateTime(timezone=True), nullable=False),
        sa.Column("function", sa.String(length=100), nullable=False),
        *(sa.Column(name, sa.Integer(), nullable=False) for name in STATUSES),
        sa.Column("retried_jobs", sa.Integer(), nullable=False),
        sa.Column("extra_tries", sa.Integer(), nullable=False),
        sa.Column("run_buckets", int_array, nullable=False),
        sa.Column("run_counts", int_array, nullable=False),
        sa.Column("wait_buckets", int_array, nullable=False),
        sa.Column("wait_counts", int_array, nullable=False),
        sa.PrimaryKeyConstraint(
            "grain", "all_owners", "owner", "period", "function", name="pk_arq_job_stats"
        ),
    )
    op.create_index("ix_arq_job_stats_grain_period", "arq_job_stats", ["grain", "period"])
    op.create_table(
        "arq_job_stats_dirty",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            sa.Identity(),
            nullable=False,
        ),
        sa.Column("hour", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_arq_job_stats_dirty"),
    )
    op.create_index("ix_arq_job_stats_dirty_hour", "arq_job_stats_dirty", ["hour"])
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(FUNCTION)
    op.execute(TRUNCATE_FUNCTION)
    for name, when in TRIGGERS.items():
        op.execute(
            f"CREATE TRIGGER {name} {when} FOR EACH STATEMENT "
            "EXECUTE FUNCTION arq_job_stats_touch()"
        )
    op.execute(
        "CREATE TRIGGER arq_jobs_stats_truncate AFTER TRUNCATE ON arq_jobs "
        "FOR EACH STATEMENT EXECUTE FUNCTION arq_job_stats_clear()"
    )
    op.execute(
        "INSERT INTO arq_job_stats_dirty (hour) "
        "SELECT DISTINCT date_trunc('hour', enqueued_at, 'UTC') FROM arq_jobs"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for name in [*TRIGGERS, "arq_jobs_stats_truncate"]:
            op.execute(f"DROP TRIGGER {name} ON arq_jobs")
        op.execute("DROP FUNCTION arq_job_stats_touch()")
        op.execute("DROP FUNCTION arq_job_stats_clear()")
    op.drop_index("ix_arq_job_stats_dirty_hour", table_name="arq_job_stats_dirty")
    op.drop_table("arq_job_stats_dirty")
    op.drop_index("ix_arq_job_stats_grain_period", table_name="arq_job_stats")
    op.drop_table("arq_job_stats")
