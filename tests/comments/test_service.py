"""The comments storage against this run's PostgreSQL database, and once on SQLite."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from src.comments import service
from src.comments.models import Comment
from src.comments.schemas import CommentOut, CommentPage, PostOut
from src.comments.service import UpsertCounts
from src.database import create_engine, create_sessionmaker
from tests.conftest import migrate

OWNER = -1001
POST = 7
T0 = 1_700_000_000  # 2023-11-14T22:13:20Z


def vk_comment(comment_id: int, **overrides: Any) -> dict[str, Any]:
    """A top-level comment as wall.getComments gives it."""
    comment: dict[str, Any] = {
        "id": comment_id,
        "from_id": 100 + comment_id,
        "post_id": POST,
        "owner_id": OWNER,
        "date": T0 + comment_id,
        "text": f"comment {comment_id}",
        "likes": {"count": 0, "user_likes": 0, "can_like": 1},
        "parents_stack": [],
        "thread": {"count": 0, "items": [], "can_post": True},
    }
    comment.update(overrides)
    return comment


def vk_reply(comment_id: int, *, parent: int, **overrides: Any) -> dict[str, Any]:
    """A thread reply, as given in `thread.items` or by wall.getComments(comment_id=parent)."""
    reply = vk_comment(comment_id, parents_stack=[parent], reply_to_comment=parent)
    del reply["thread"]
    reply.update(overrides)
    return reply


def vk_post(post_id: int, **overrides: Any) -> dict[str, Any]:
    post: dict[str, Any] = {
        "id": post_id,
        "owner_id": OWNER,
        "from_id": OWNER,
        "date": T0 + post_id,
        "text": f"post {post_id}",
        "comments": {"count": 3, "can_post": 1},
        "likes": {"count": 10},
        "reposts": {"count": 2},
        "views": {"count": 500},
        "is_pinned": 0,
    }
    post.update(overrides)
    return post


def at(seconds: int) -> datetime:
    return datetime.fromtimestamp(T0 + seconds, tz=UTC)


@pytest.fixture
async def db(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> async_sessionmaker[AsyncSession]:
    """This run's PostgreSQL database with the comments tables emptied."""
    async with sessionmaker.begin() as session:
        await session.execute(text("TRUNCATE comments, posts, communities"))
    return sessionmaker


async def upsert(
    maker: async_sessionmaker[AsyncSession],
    comments: list[dict[str, Any]],
    *,
    owner_id: int = OWNER,
    post_id: int = POST,
) -> UpsertCounts:
    async with maker.begin() as session:
        return await service.upsert_comments(
            session, owner_id=owner_id, post_id=post_id, comments=comments
        )


async def stored(maker: async_sessionmaker[AsyncSession], comment_id: int) -> Comment:
    async with maker() as session:
        comment = await service.get_comment(session, owner_id=OWNER, comment_id=comment_id)
    assert comment is not None
    return comment


async def row_count(maker: async_sessionmaker[AsyncSession]) -> int:
    async with maker() as session:
        return int(await session.scalar(select(func.count()).select_from(Comment)) or 0)


@contextmanager
def rows_per_insert(engine: AsyncEngine, table: str) -> Iterator[list[int]]:
    """The number of rows of each INSERT into `table` run inside the block."""
    sizes: list[int] = []
    width = len(Comment.__table__.columns)

    def before(conn: Any, cursor: Any, statement: str, params: Any, *_: Any) -> None:
        if statement.startswith(f"INSERT INTO {table} "):
            sizes.append(len(params) // width)

    event.listen(engine.sync_engine, "before_cursor_execute", before)
    try:
        yield sizes
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", before)


# -- normalisation ----------------------------------------------------------------------------


def test_normalize_comment_row_values() -> None:
    raw = vk_reply(
        12,
        parent=5,
        text="  Привет!\n ",
        likes={"count": 4},
        reply_to_user=333,
        attachments=[
            {
                "type": "photo",
                "photo": {
                    "id": 1,
                    "sizes": [
                        {"type": "s", "url": "https://img/s.jpg", "width": 75, "height": 50},
                        {"type": "x", "url": "https://img/x.jpg", "width": 604, "height": 403},
                    ],
                },
            },
            {"type": "link", "link": {"url": "https://example.org", "title": "Example"}},
            {"type": "video", "video": {"id": 9, "owner_id": -1, "title": "Clip"}},
            {"type": "sticker", "sticker": {"sticker_id": 1}},
            {"type": "graffiti"},
        ],
    )
    row = service.normalize_comment(raw, owner_id=OWNER, post_id=POST)
    assert row == {
        "owner_id": OWNER,
        "comment_id": 12,
        "post_id": POST,
        "from_id": 112,
        "date": at(12),
        "text": "Привет!",
        "search_text": "привет!",
        "likes": 4,
        "reply_to_user": 333,
        "reply_to_comment": 5,
        "parent_comment_id": 5,
        "thread_count": 0,
        "is_deleted": False,
        "attachments": [
            {"type": "photo", "url": "https://img/x.jpg"},
            {"type": "link", "url": "https://example.org", "title": "Example"},
            {"type": "video", "url": "https://vk.com/video-1_9", "title": "Clip"},
            {"type": "sticker"},
            {"type": "graffiti"},
        ],
    }
    assert row["date"].tzinfo is UTC


def test_normalize_deleted_comment_and_thread_context() -> None:
    deleted = {"id": 3, "date": T0, "text": "", "deleted": True, "from_id": 0}
    row = service.normalize_comment(deleted, owner_id=OWNER, post_id=POST)
    assert (row["is_deleted"], row["text"], row["from_id"], row["likes"]) == (True, "", None, 0)
    assert row["parent_comment_id"] is None
    inline = {"id": 4, "date": T0, "text": "a reply"}  # no parents_stack: the thread tells
    row = service.normalize_comment(inline, owner_id=OWNER, post_id=POST, parent_comment_id=2)
    assert row["parent_comment_id"] == 2


# -- comments ---------------------------------------------------------------------------------


async def test_the_same_upsert_twice_stores_each_comment_once(
    db: async_sessionmaker[AsyncSession],
) -> None:
    comments = [vk_comment(i) for i in (1, 2, 3)]
    assert await upsert(db, comments) == UpsertCounts(inserted=3)
    first = await stored(db, 2)
    assert await upsert(db, comments) == UpsertCounts(unchanged=3)
    assert await row_count(db) == 3
    again = await stored(db, 2)
    assert again.updated_at == first.updated_at == first.first_seen_at


async def test_likes_edits_and_deletion_update_only_what_changed(
    db: async_sessionmaker[AsyncSession],
) -> None:
    await upsert(db, [vk_comment(i, likes={"count": 1}) for i in (1, 2, 3, 4)])
    before = await stored(db, 3)

    changed = [
        vk_comment(1, likes={"count": 5}),
        vk_comment(2, likes={"count": 1}, text="comment 2 (edited)"),
        # VK's deleted comment: empty text, no likes.
        {"id": 3, "from_id": 103, "date": T0 + 3, "text": "", "deleted": True},
        vk_comment(4, likes={"count": 1}),
    ]
    assert await upsert(db, changed) == UpsertCounts(updated=3, unchanged=1)
    assert (await stored(db, 1)).likes == 5
    assert (await stored(db, 2)).text == "comment 2 (edited)"
    deleted = await stored(db, 3)
    assert deleted.is_deleted is True
    assert (deleted.text, deleted.likes) == ("comment 3", 1)  # the last seen, kept
    assert deleted.first_seen_at == before.first_seen_at
    assert deleted.updated_at > before.updated_at

    assert await upsert(db, changed) == UpsertCounts(unchanged=4)
    restored = vk_comment(3, text="back again")
    assert await upsert(db, [restored]) == UpsertCounts(updated=1)
    assert (await stored(db, 3)).is_deleted is False


async def test_deleted_comment_seen_first_is_kept_with_the_flag(
    db: async_sessionmaker[AsyncSession],
) -> None:
    deleted = vk_comment(8, text="", deleted=True, from_id=0, likes=None)
    deleted["thread"] = {"count": 1, "items": [vk_reply(9, parent=8)]}
    assert await upsert(db, [deleted]) == UpsertCounts(inserted=2)
    comment = await stored(db, 8)
    assert (comment.is_deleted, comment.text, comment.from_id) == (True, "", None)
    assert comment.thread_count == 1
    async with db() as session:
        rows, total = await service.list_comments(session, owner_id=OWNER)
    assert total == 2
    assert {c.comment_id: c.is_deleted for c in rows} == {8: True, 9: False}


async def test_thread_replies_get_their_top_level_comment(
    db: async_sessionmaker[AsyncSession],
) -> None:
    inline_without_stack = vk_reply(12, parent=10, parents_stack=[])
    top = vk_comment(
        10, thread={"count": 3, "items": [vk_reply(11, parent=10), inline_without_stack]}
    )
    # The rest of the thread, fetched with wall.getComments(comment_id=10) and flattened by the
    # caller; 11 arrives twice (inline and fetched), liked in between.
    fetched = [
        vk_reply(11, parent=10, likes={"count": 2}),
        vk_reply(13, parent=10, reply_to_comment=11, reply_to_user=111),
    ]
    assert await upsert(db, [top, vk_comment(20), *fetched]) == UpsertCounts(inserted=5)

    assert (await stored(db, 10)).thread_count == 3
    assert (await stored(db, 10)).parent_comment_id is None
    assert (await stored(db, 20)).parent_comment_id is None
    for reply_id in (11, 12, 13):
        assert (await stored(db, reply_id)).parent_comment_id == 10
    assert (await stored(db, 11)).likes == 2  # the later copy won
    reply = await stored(db, 13)
    assert (reply.reply_to_comment, reply.reply_to_user) == (11, 111)

    grown = vk_comment(10, thread={"count": 4, "items": []})
    assert await upsert(db, [grown]) == UpsertCounts(updated=1)
    assert (await stored(db, 10)).thread_count == 4


async def test_2500_comments_in_one_call_go_in_chunks_of_1000(
    db: async_sessionmaker[AsyncSession],
) -> None:
    engine = db.kw["bind"]
    comments = [vk_comment(i) for i in range(1, 2501)]
    with rows_per_insert(engine, "comments") as sizes:
        assert await upsert(db, comments) == UpsertCounts(inserted=2500)
    assert sizes == [1000, 1000, 500]
    assert await row_count(db) == 2500

    for comment in comments[::250]:
        comment["likes"] = {"count": 7}
    assert await upsert(db, comments) == UpsertCounts(updated=10, unchanged=2490)
    assert await row_count(db) == 2500


async def test_list_filters_pagination_and_get(
    db: async_sessionmaker[AsyncSession],
) -> None:
    await upsert(
        db,
        [
            vk_comment(1, text="Привет, мир"),
            vk_comment(2, text="ПРИВЕТ всем"),
            vk_comment(3, text="пока"),
            vk_comment(4, text="100% hello_world"),
        ],
    )
    await upsert(db, [vk_comment(5, text="привет из другого поста")], post_id=8)
    await upsert(db, [vk_comment(1, text="Hello")], owner_id=-2002, post_id=1)

    async with db() as session:

        async def ids(**filters: Any) -> tuple[list[tuple[int, int]], int]:
            filters.setdefault("limit", 50)
            rows, total = await service.list_comments(session, **filters)
            return [(c.owner_id, c.comment_id) for c in rows], total

        everything, total = await ids()
        assert total == 6
        assert everything[0] == (OWNER, 5)  # newest first
        assert everything[-2:] == [(-2002, 1), (OWNER, 1)]  # same second: by owner

        assert await ids(owner_id=OWNER, post_id=POST) == (
            [(OWNER, 4), (OWNER, 3), (OWNER, 2), (OWNER, 1)],
            4,
        )
        assert await ids(owner_id=OWNER, since=at(3)) == ([(OWNER, 5), (OWNER, 4), (OWNER, 3)], 3)
        assert await ids(owner_id=OWNER, since=at(2), until=at(4)) == (
            [(OWNER, 3), (OWNER, 2)],
            2,
        )
        assert await ids(q="привет") == ([(OWNER, 5), (OWNER, 2), (OWNER, 1)], 3)
        assert await ids(q="Привет", post_id=POST) == ([(OWNER, 2), (OWNER, 1)], 2)
        assert await ids(q="hello") == ([(OWNER, 4), (-2002, 1)], 2)
        assert await ids(q="%") == ([(OWNER, 4)], 1)  # LIKE wildcards are literal
        assert await ids(q="_") == ([(OWNER, 4)], 1)
        assert await ids(from_id=103) == ([(OWNER, 3)], 1)

        page_two = await ids(owner_id=OWNER, limit=2, offset=2)
        assert page_two == ([(OWNER, 3), (OWNER, 2)], 5)
        assert await ids(owner_id=OWNER, limit=2, offset=10) == ([], 5)

        comment = await service.get_comment(session, owner_id=OWNER, comment_id=1)
        assert comment is not None and comment.text == "Привет, мир"
        assert await service.get_comment(session, owner_id=OWNER, comment_id=99) is None

        rows, total = await service.list_comments(session, owner_id=OWNER, limit=2, offset=0)
        page = CommentPage(
            items=[CommentOut.model_validate(c) for c in rows], total=total, limit=2, offset=0
        )
        body = page.model_dump(mode="json")
        assert body["total"] == 5
        assert body["items"][0]["comment_id"] == 5
        assert body["items"][0]["date"] == "2023-11-14T22:13:25Z"


# -- posts and communities --------------------------------------------------------------------


async def test_posts_upsert_and_skip(db: async_sessionmaker[AsyncSession]) -> None:
    posts = [vk_post(1), vk_post(2, is_pinned=1), vk_post(3)]
    posts[2].pop("views")
    async with db.begin() as session:
        counts = await service.upsert_posts(session, owner_id=OWNER, posts=posts)
    assert counts == UpsertCounts(inserted=3)

    posts[0]["views"] = {"count": 501}
    async with db.begin() as session:
        counts = await service.upsert_posts(session, owner_id=OWNER, posts=posts)
        assert counts == UpsertCounts(updated=1, unchanged=2)
        assert await service.mark_post_skipped(
            session, owner_id=OWNER, post_id=2, code=212, reason="Access to post comments denied"
        )
        assert not await service.mark_post_skipped(
            session, owner_id=OWNER, post_id=99, code=15, reason="Access denied"
        )

    async with db() as session:
        first = await service.get_post(session, owner_id=OWNER, post_id=1)
        pinned = await service.get_post(session, owner_id=OWNER, post_id=2)
        no_views = await service.get_post(session, owner_id=OWNER, post_id=3)
    assert first is not None and pinned is not None and no_views is not None
    out = PostOut.model_validate(first)
    assert (out.views, out.likes, out.reposts, out.comments_count) == (501, 10, 2, 3)
    assert out.date == at(1)
    assert (pinned.is_pinned, pinned.skip_code) == (True, 212)
    assert pinned.skip_reason == "Access to post comments denied"
    assert no_views.views is None


async def test_community_upsert(db: async_sessionmaker[AsyncSession]) -> None:
    group = {"id": 1001, "name": "Клуб", "screen_name": "club_x", "is_closed": 0, "type": "page"}
    async with db.begin() as session:
        created = await service.upsert_community(session, group=group)
    async with db.begin() as session:
        same = await service.upsert_community(session, group=group)
    assert same.updated_at == created.updated_at

    parsed_at = datetime.now(UTC)
    async with db.begin() as session:
        renamed = await service.upsert_community(session, group={**group, "name": "Клуб 2"})
        await service.mark_community_parsed(session, community_id=1001, at=parsed_at)
    assert renamed.name == "Клуб 2"
    assert renamed.created_at == created.created_at
    assert renamed.updated_at > created.updated_at
    async with db() as session:
        community = await service.upsert_community(session, group={**group, "name": "Клуб 2"})
        assert community.last_parsed_at == parsed_at
        with pytest.raises(ValueError, match="positive"):
            await service.upsert_community(session, group={**group, "id": -1001})


# -- SQLite -----------------------------------------------------------------------------------


@pytest.fixture
async def sqlite_sessionmaker(tmp_path: Path) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'comments.db'}"
    await asyncio.to_thread(migrate, url)  # alembic runs its own event loop
    engine = create_engine(url)
    yield create_sessionmaker(engine)
    await engine.dispose()


async def test_the_same_storage_on_sqlite(
    sqlite_sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    maker = sqlite_sessionmaker
    comments = [vk_comment(i, text=f"Привет {i}") for i in range(1, 1201)]
    comments[0]["thread"] = {"count": 1, "items": [vk_reply(5000, parent=1, text="ПРИВЕТ")]}
    assert await upsert(maker, comments) == UpsertCounts(inserted=1201)
    assert await upsert(maker, comments) == UpsertCounts(unchanged=1201)

    comments[1] = {"id": 2, "date": T0 + 2, "text": "", "deleted": True}
    comments[2]["likes"] = {"count": 3}
    assert await upsert(maker, comments) == UpsertCounts(updated=2, unchanged=1199)

    async with maker() as session:
        deleted = await service.get_comment(session, owner_id=OWNER, comment_id=2)
        assert deleted is not None and deleted.is_deleted and deleted.text == "Привет 2"
        assert deleted.date == at(2)  # back as an aware UTC datetime
        reply = await service.get_comment(session, owner_id=OWNER, comment_id=5000)
        assert reply is not None and reply.parent_comment_id == 1
        rows, total = await service.list_comments(session, q="привет 11", limit=3, offset=1)
        assert total == 111  # 11 and 110-119 and 1100-1199
        assert [c.comment_id for c in rows] == [1198, 1197, 1196]
        rows, total = await service.list_comments(session, q="приВЕТ", since=at(5000), limit=5)
        assert ([c.comment_id for c in rows], total) == ([5000], 1)

    async with maker.begin() as session:
        counts = await service.upsert_posts(session, owner_id=OWNER, posts=[vk_post(1)])
        assert counts == UpsertCounts(inserted=1)
        assert await service.mark_post_skipped(
            session, owner_id=OWNER, post_id=1, code=30, reason="This profile is private"
        )
        community = await service.upsert_community(
            session, group={"id": 1001, "name": "Клуб", "screen_name": "club_x"}
        )
        assert community.is_closed == 0
    async with maker() as session:
        post = await service.get_post(session, owner_id=OWNER, post_id=1)
        assert post is not None and post.skip_code == 30
