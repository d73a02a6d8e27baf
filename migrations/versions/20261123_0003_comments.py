"""comments: communities, wall posts and their comments

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    op.create_table(
        "communities",
        sa.Column("id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("screen_name", sa.String(length=100), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("is_closed", sa.Integer(), nullable=False),
        sa.Column("last_parsed_at", TIMESTAMP, nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_communities")),
    )
    op.create_table(
        "posts",
        sa.Column("owner_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("post_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("from_id", sa.BigInteger(), nullable=True),
        sa.Column("date", TIMESTAMP, nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("comments_count", sa.Integer(), nullable=False),
        sa.Column("likes", sa.Integer(), nullable=False),
        sa.Column("reposts", sa.Integer(), nullable=False),
        sa.Column("views", sa.Integer(), nullable=True),
        sa.Column("is_pinned", sa.Boolean(), nullable=False),
        sa.Column("fetched_at", TIMESTAMP, nullable=False),
        sa.Column("skip_code", sa.Integer(), nullable=True),
        sa.Column("skip_reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("owner_id", "post_id", name=op.f("pk_posts")),
    )
    op.create_index("ix_posts_owner_date", "posts", ["owner_id", "date"])
    op.create_table(
        "comments",
        sa.Column("owner_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("comment_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("post_id", sa.BigInteger(), nullable=False),
        sa.Column("from_id", sa.BigInteger(), nullable=True),
        sa.Column("date", TIMESTAMP, nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("search_text", sa.Text(), nullable=False),
        sa.Column("likes", sa.Integer(), nullable=False),
        sa.Column("reply_to_user", sa.BigInteger(), nullable=True),
        sa.Column("reply_to_comment", sa.BigInteger(), nullable=True),
        sa.Column("parent_comment_id", sa.BigInteger(), nullable=True),
        sa.Column("thread_count", sa.Integer(), nullable=False),
        sa.Column("is_deleted", sa.Boolean(), nullable=False),
        sa.Column("attachments", JSON, nullable=False),
        sa.Column("first_seen_at", TIMESTAMP, nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("owner_id", "comment_id", name=op.f("pk_comments")),
    )
    op.create_index("ix_comments_owner_post_date", "comments", ["owner_id", "post_id", "date"])
    op.create_index("ix_comments_owner_date", "comments", ["owner_id", "date"])
    op.create_index("ix_comments_date", "comments", ["date"])
    op.create_index("ix_comments_from_id", "comments", ["from_id"])
    if postgres:
        # A trigram index serves LIKE '%q%'. pg_trgm is a trusted extension (PostgreSQL 13+):
        # the database owner may create it without being a superuser.
        op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        op.create_index(
            "ix_comments_search_text",
            "comments",
            ["search_text"],
            postgresql_using="gin",
            postgresql_ops={"search_text": "gin_trgm_ops"},
        )
    else:
        op.create_index("ix_comments_search_text", "comments", ["search_text"])


def downgrade() -> None:
    # pg_trgm stays: other objects may use it, and it costs nothing unused.
    op.drop_table("comments")
    op.drop_table("posts")
    op.drop_table("communities")
