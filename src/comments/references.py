"""Comment references: `{owner_id}_{comment_id}` as VK writes them, and plain comment ids.

A plain comment id (`25`) names a comment only while one stored comment has it: every wall
numbers its comments from 1, so once several communities are stored an id may be on several
walls. The API accepts plain ids where one stored comment (or one on the community given) has
each, and otherwise says which forms would do.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from src.comments.models import Comment

LISTED_MATCHES = 10  # the `{owner_id}_{comment_id}` forms an ambiguous plain id's error lists


@dataclass(frozen=True, slots=True)
class Unresolved:
    """A plain comment id that names no stored comment (`total` 0) or several."""

    comment_id: int
    total: int  # the stored comments that have it
    matches: list[str]  # the `{owner_id}_{comment_id}` forms of the first `LISTED_MATCHES`
    owner_id: int | None = None  # the wall searched, if one was given

    def explain(self) -> str:
        """What is wrong, for a person: the id, and the forms that would do."""
        if not self.total:
            where = f" on the wall {self.owner_id}" if self.owner_id is not None else ""
            return f"no stored comment has the id {self.comment_id}{where}"
        more = (
            f" and {self.total - len(self.matches)} more" if self.total > len(self.matches) else ""
        )
        return (
            f"comment id {self.comment_id} is on {self.total} walls: {', '.join(self.matches)}"
            f"{more}; name one as {{owner_id}}_{{comment_id}}, or give group_id"
        )


@dataclass(frozen=True, slots=True)
class ResolvedRefs:
    """Comment references with every plain id replaced by the one stored comment it names, and
    the plain ids that name none or several."""

    refs: list[str]
    unresolved: list[Unresolved]


async def resolve_comment_refs(
    session: AsyncSession, refs: Sequence[str], *, owner_id: int | None = None
) -> ResolvedRefs:
    """`{owner_id}_{comment_id}` references for `refs` (each of that form, or a plain comment
    id), in the order given, once each. A plain id stands for the one stored comment that has
    it (on the wall `owner_id`, if given); one that no stored comment has, or several have, is
    `unresolved` (with the forms of up to `LISTED_MATCHES` of those comments)."""
    plain = sorted({int(ref) for ref in refs if "_" not in ref})
    walls = await _walls_of(session, plain, owner_id=owner_id) if plain else {}
    resolved: list[str] = []
    unresolved: list[Unresolved] = []
    for ref in refs:
        if "_" in ref:
            resolved.append(ref)
            continue
        comment_id = int(ref)
        total, owners = walls.get(comment_id, (0, []))
        if total == 1:
            resolved.append(f"{owners[0]}_{comment_id}")
        else:
            forms = [f"{owner}_{comment_id}" for owner in owners]
            unresolved.append(Unresolved(comment_id, total, forms, owner_id))
    # "25" and "-1_25" are one comment: once, where it came first.
    return ResolvedRefs(list(dict.fromkeys(resolved)), unresolved)


async def _walls_of(
    session: AsyncSession, comment_ids: Sequence[int], *, owner_id: int | None
) -> dict[int, tuple[int, list[int]]]:
    """{comment id: (how many stored comments have it, the walls of the first
    `LISTED_MATCHES`, communities by id)} of the ids that some stored comment (on the wall
    `owner_id`, if given) has: one query, however many walls share an id."""
    conditions: list[ColumnElement[bool]] = [Comment.comment_id.in_(comment_ids)]
    if owner_id is not None:
        conditions.append(Comment.owner_id == owner_id)
    rank = func.row_number().over(partition_by=Comment.comment_id, order_by=Comment.owner_id.desc())
    total = func.count().over(partition_by=Comment.comment_id)
    ranked = (
        select(Comment.comment_id, Comment.owner_id, rank.label("rank"), total.label("total"))
        .where(*conditions)
        .subquery()
    )
    walls: dict[int, tuple[int, list[int]]] = {}
    for comment_id, wall, count in await session.execute(
        select(ranked.c.comment_id, ranked.c.owner_id, ranked.c.total)
        .where(ranked.c.rank <= LISTED_MATCHES)
        .order_by(ranked.c.comment_id, ranked.c.rank)
    ):
        walls.setdefault(comment_id, (int(count), []))[1].append(wall)
    return walls
