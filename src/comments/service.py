"""Storage of the comments pipeline: idempotent bulk upserts of VK data and the queries on it.

Functions take the session first and flush at most; the caller commits.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, Table, case, func, literal_column, or_, select, true, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from src.comments.models import Comment, Community, Post

CHUNK_SIZE = 1000  # rows per INSERT statement: ~16k bind parameters, under both backends' limits

_communities: Table = Community.__table__  # type: ignore[assignment]
_posts: Table = Post.__table__  # type: ignore[assignment]
_comments: Table = Comment.__table__  # type: ignore[assignment]


@dataclass(frozen=True, slots=True)
class UpsertCounts:
    """What an upsert did: rows new to the table, rows changed, rows already as given."""

    inserted: int = 0
    updated: int = 0
    unchanged: int = 0

    @property
    def total(self) -> int:
        return self.inserted + self.updated + self.unchanged

    def __add__(self, other: UpsertCounts) -> UpsertCounts:
        return UpsertCounts(
            self.inserted + other.inserted,
            self.updated + other.updated,
            self.unchanged + other.unchanged,
        )

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


# -- VK dicts to rows -------------------------------------------------------------------------


def _count(value: Any) -> int:
    """VK's `{"count": N}` counters (likes, reposts, views, comments)."""
    if isinstance(value, Mapping):
        return int(value.get("count") or 0)
    return 0


def _id(value: Any) -> int | None:
    """An id VK may omit or give as 0 (e.g. the author of a deleted comment)."""
    return int(value) if value else None


def _timestamp(unix: Any) -> datetime:
    return datetime.fromtimestamp(int(unix), tz=UTC)


def _text(value: Any) -> str:
    return str(value or "").strip()


def _largest_photo_url(photo: Mapping[str, Any]) -> str | None:
    sizes = [s for s in photo.get("sizes") or [] if isinstance(s, Mapping) and s.get("url")]
    if not sizes:
        return None
    largest = max(sizes, key=lambda s: int(s.get("width") or 0) * int(s.get("height") or 0))
    return str(largest["url"])


def summarize_attachment(attachment: Mapping[str, Any]) -> dict[str, Any]:
    """`{"type": T}` plus a url and/or title where VK gives an obvious one."""
    kind = str(attachment.get("type") or "unknown")
    body = attachment.get(kind)
    summary: dict[str, Any] = {"type": kind}
    if not isinstance(body, Mapping):
        return summary
    url: Any = None
    title: Any = None
    if kind == "photo":
        url = _largest_photo_url(body)
    elif kind in ("link", "doc", "article"):
        url, title = body.get("url"), body.get("title")
    elif kind == "video":
        title = body.get("title")
        if body.get("owner_id") is not None and body.get("id") is not None:
            url = f"https://vk.com/video{body['owner_id']}_{body['id']}"
    elif kind == "audio":
        artist, name = body.get("artist"), body.get("title")
        title = " - ".join(str(part) for part in (artist, name) if part) or None
    elif kind == "poll":
        title = body.get("question")
    elif kind in ("market", "podcast"):
        title = body.get("title")
    if url:
        summary["url"] = str(url)
    if title:
        summary["title"] = str(title)
    return summary


def normalize_comment(
    raw: Mapping[str, Any], *, owner_id: int, post_id: int, parent_comment_id: int | None = None
) -> dict[str, Any]:
    """The row values of one VK comment.

    The thread's top-level comment is `parents_stack[0]`; `parent_comment_id` is the fallback
    for a reply taken from its parent's `thread.items` without a `parents_stack`.
    """
    parents = raw.get("parents_stack") or []
    text = _text(raw.get("text"))
    attachments = raw.get("attachments") or []
    return {
        "owner_id": owner_id,
        "comment_id": int(raw["id"]),
        "post_id": post_id,
        "from_id": _id(raw.get("from_id")),
        "date": _timestamp(raw["date"]),
        "text": text,
        "search_text": text.casefold(),
        "likes": _count(raw.get("likes")),
        "reply_to_user": _id(raw.get("reply_to_user")),
        "reply_to_comment": _id(raw.get("reply_to_comment")),
        "parent_comment_id": int(parents[0]) if parents else parent_comment_id,
        "thread_count": _count(raw.get("thread")),
        "is_deleted": bool(raw.get("deleted")),
        "attachments": [summarize_attachment(a) for a in attachments if isinstance(a, Mapping)],
    }


def normalize_post(raw: Mapping[str, Any], *, owner_id: int) -> dict[str, Any]:
    """The row values of one VK wall post."""
    views = raw.get("views")
    return {
        "owner_id": owner_id,
        "post_id": int(raw["id"]),
        "from_id": _id(raw.get("from_id")),
        "date": _timestamp(raw["date"]),
        "text": _text(raw.get("text")),
        "comments_count": _count(raw.get("comments")),
        "likes": _count(raw.get("likes")),
        "reposts": _count(raw.get("reposts")),
        "views": _count(views) if isinstance(views, Mapping) else None,
        "is_pinned": bool(raw.get("is_pinned")),
    }


def _flatten(
    comments: Sequence[Mapping[str, Any]],
) -> Iterator[tuple[Mapping[str, Any], int | None]]:
    """Each comment and each reply given inline in its `thread.items`, with the thread's id."""
    for raw in comments:
        yield raw, None
        thread = raw.get("thread")
        if isinstance(thread, Mapping):
            for reply in thread.get("items") or []:
                yield reply, int(raw["id"])


# -- upserts ----------------------------------------------------------------------------------


def _insert_for(session: AsyncSession) -> Callable[[Table], Any]:
    dialect = session.get_bind().dialect.name
    return postgresql.insert if dialect == "postgresql" else sqlite.insert


def _chunks(rows: Sequence[dict[str, Any]]) -> Iterator[Sequence[dict[str, Any]]]:
    for start in range(0, len(rows), CHUNK_SIZE):
        yield rows[start : start + CHUNK_SIZE]


async def _upsert(
    session: AsyncSession,
    *,
    table: Table,
    key: str,
    owner_id: int,
    rows: Sequence[dict[str, Any]],
    changes: Callable[[Any], dict[str, ColumnElement[Any]]],
    stamp: str,
) -> UpsertCounts:
    """INSERT .. ON CONFLICT DO UPDATE of `rows` (all of `owner_id`, unique by `key`), in chunks.

    `changes(excluded)` gives the new value of each mutable column; a stored row is rewritten
    (and `stamp` set) only if one of them differs, so a repeated upsert writes nothing.
    """
    counts = UpsertCounts()
    owner_column, key_column = table.c.owner_id, table.c[key]
    postgres = session.get_bind().dialect.name == "postgresql"
    # One statement with bound parameters, run for many rows at once (SQLAlchemy batches them
    # into multi-row INSERTs and caches the compiled form); a statement with the values inlined
    # would be compiled anew for every chunk, which costs more than the database's work.
    statement = _insert_for(session)(table)
    new_values = changes(statement.excluded)
    statement = statement.on_conflict_do_update(
        index_elements=[owner_column, key_column],
        set_={**new_values, stamp: statement.excluded[stamp]},
        where=or_(*(table.c[name].is_distinct_from(v) for name, v in new_values.items())),
    )
    if postgres:
        # xmax = 0 marks a row this statement inserted (not one it updated): no lookup needed.
        statement = statement.returning(key_column, literal_column("xmax = 0").label("inserted"))
    else:
        statement = statement.returning(key_column)
    for chunk in _chunks(rows):
        if postgres:
            written = (await session.execute(statement, list(chunk))).all()
            inserted = sum(1 for row in written if row.inserted)
            counts += UpsertCounts(inserted, len(written) - inserted, len(chunk) - len(written))
            continue
        # SQLite: which keys exist decides inserted vs updated among the rows returned.
        ids = [row[key] for row in chunk]
        existing = set(
            await session.scalars(
                select(key_column).where(owner_column == owner_id, key_column.in_(ids))
            )
        )
        returned = set((await session.execute(statement, list(chunk))).scalars())
        updated = len(returned & existing)
        counts += UpsertCounts(len(returned) - updated, updated, len(chunk) - len(returned))
    return counts


def _comment_changes(excluded: Any) -> dict[str, ColumnElement[Any]]:
    # A deleted comment comes back with empty text and no likes: keep what was last seen.
    def unless_deleted(name: str) -> ColumnElement[Any]:
        return case((excluded.is_deleted, _comments.c[name]), else_=excluded[name])

    return {
        "text": unless_deleted("text"),
        "search_text": unless_deleted("search_text"),
        "likes": unless_deleted("likes"),
        "attachments": unless_deleted("attachments"),
        "is_deleted": excluded.is_deleted,
        "thread_count": excluded.thread_count,
    }


def _post_changes(excluded: Any) -> dict[str, ColumnElement[Any]]:
    names = ("from_id", "text", "comments_count", "likes", "reposts", "views", "is_pinned")
    return {name: excluded[name] for name in names}


async def upsert_comments(
    session: AsyncSession, *, owner_id: int, post_id: int, comments: Sequence[Mapping[str, Any]]
) -> UpsertCounts:
    """Store raw VK comments of one post (replies inline in `thread.items` included).

    A comment given twice counts once (the last copy wins). Changed likes, text, attachments,
    deletion and thread size update the row; a deleted comment keeps its last known text.
    """
    by_id: dict[int, dict[str, Any]] = {}
    for raw, thread_id in _flatten(comments):
        row = normalize_comment(
            raw, owner_id=owner_id, post_id=post_id, parent_comment_id=thread_id
        )
        by_id[row["comment_id"]] = row
    now = datetime.now(UTC)
    rows = [{**row, "first_seen_at": now, "updated_at": now} for row in by_id.values()]
    return await _upsert(
        session,
        table=_comments,
        key="comment_id",
        owner_id=owner_id,
        rows=rows,
        changes=_comment_changes,
        stamp="updated_at",
    )


async def upsert_posts(
    session: AsyncSession, *, owner_id: int, posts: Sequence[Mapping[str, Any]]
) -> UpsertCounts:
    """Store raw VK wall posts of one wall; a post given twice counts once (the last wins)."""
    by_id = {row["post_id"]: row for row in (normalize_post(p, owner_id=owner_id) for p in posts)}
    now = datetime.now(UTC)
    rows = [{**row, "fetched_at": now} for row in by_id.values()]
    return await _upsert(
        session,
        table=_posts,
        key="post_id",
        owner_id=owner_id,
        rows=rows,
        changes=_post_changes,
        stamp="fetched_at",
    )


async def upsert_community(session: AsyncSession, *, group: Mapping[str, Any]) -> Community:
    """Store a community as `groups.getById` gives it (positive `id`)."""
    community_id = int(group["id"])
    if community_id <= 0:
        raise ValueError(f"a community id is positive, got {community_id}")
    now = datetime.now(UTC)
    statement = _insert_for(session)(_communities).values(
        id=community_id,
        screen_name=str(group.get("screen_name") or f"club{community_id}"),
        name=str(group.get("name") or ""),
        is_closed=int(group.get("is_closed") or 0),
        created_at=now,
        updated_at=now,
    )
    excluded = statement.excluded
    new_values = {name: excluded[name] for name in ("screen_name", "name", "is_closed")}
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=[_communities.c.id],
            set_={**new_values, "updated_at": excluded.updated_at},
            where=or_(*(_communities.c[n].is_distinct_from(v) for n, v in new_values.items())),
        )
    )
    community = await session.get(Community, community_id, populate_existing=True)
    assert community is not None
    return community


async def mark_community_parsed(session: AsyncSession, *, community_id: int, at: datetime) -> None:
    """Record when the community's wall was last parsed."""
    await session.execute(
        update(Community).where(Community.id == community_id).values(last_parsed_at=at)
    )


async def mark_post_skipped(
    session: AsyncSession, *, owner_id: int, post_id: int, code: int, reason: str
) -> bool:
    """Record why a post's comments were not collected; False if the post is not stored."""
    outcome = await session.execute(
        update(Post)
        .where(Post.owner_id == owner_id, Post.post_id == post_id)
        .values(skip_code=code, skip_reason=reason)
    )
    return bool(getattr(outcome, "rowcount", 0))


# -- queries ----------------------------------------------------------------------------------


def _like_pattern(q: str) -> str:
    escaped = q.casefold().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


async def list_comments(
    session: AsyncSession,
    *,
    owner_id: int | None = None,
    post_id: int | None = None,
    from_id: int | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    q: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[Comment], int]:
    """Comments newest first, with the total matching the filters.

    `since` is inclusive and `until` exclusive; `q` is a case-insensitive substring of the text.
    """
    conditions: list[ColumnElement[bool]] = []
    if owner_id is not None:
        conditions.append(Comment.owner_id == owner_id)
    if post_id is not None:
        conditions.append(Comment.post_id == post_id)
    if from_id is not None:
        conditions.append(Comment.from_id == from_id)
    if since is not None:
        conditions.append(Comment.date >= since)
    if until is not None:
        conditions.append(Comment.date < until)
    if q:
        conditions.append(Comment.search_text.like(_like_pattern(q), escape="\\"))
    where = conditions or [true()]
    total = await session.scalar(select(func.count()).select_from(Comment).where(*where))
    rows = await session.scalars(
        select(Comment)
        .where(*where)
        .order_by(Comment.date.desc(), Comment.owner_id, Comment.comment_id.desc())
        .limit(limit)
        .offset(offset)
        .execution_options(populate_existing=True)
    )
    return list(rows), int(total or 0)


async def get_comment(session: AsyncSession, *, owner_id: int, comment_id: int) -> Comment | None:
    """One comment by its VK id on the owner's wall, or None."""
    return await session.get(Comment, (owner_id, comment_id), populate_existing=True)


async def get_post(session: AsyncSession, *, owner_id: int, post_id: int) -> Post | None:
    """One wall post, or None."""
    return await session.get(Post, (owner_id, post_id), populate_existing=True)
