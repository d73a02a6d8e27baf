"""What a report holds: counts by day, top authors, posts and keywords, totals and notes.

A report is of one community (`group_id`), or of every stored community (`group_id` None)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import date, datetime
from typing import Any

# A report lists the comment package's own figures as its queries return them.
from src.comments.queries import AuthorTotal as AuthorCount
from src.comments.queries import CommunityName as CommunityInfo
from src.comments.queries import PostTotal as PostCount

__all__ = [
    "ALL_COMMUNITIES",
    "AuthorCount",
    "CommunityInfo",
    "DayCount",
    "KeywordCount",
    "PostCount",
    "ReportData",
    "Totals",
    "author_url",
    "iso",
]


def author_url(from_id: int) -> str:
    return f"https://vk.com/id{from_id}" if from_id > 0 else f"https://vk.com/club{-from_id}"


@dataclass(frozen=True, slots=True)
class DayCount:
    day: date
    comments: int
    deleted: int


@dataclass(frozen=True, slots=True)
class KeywordCount:
    term: str
    count: int  # occurrences in the analysed comments
    comments: int  # analysed comments containing it


@dataclass(frozen=True, slots=True)
class Totals:
    comments: int  # deleted ones included
    deleted: int
    authors: int
    posts: int  # posts with at least one comment in the period
    days: int  # days in the series
    active_days: int  # days with at least one comment
    analysed: int  # comments (not deleted) with a stored analysis


ALL_COMMUNITIES = "all communities"


@dataclass(frozen=True)
class ReportData:
    group_id: int | None  # None: every stored community
    community: CommunityInfo | None
    since: datetime | None
    until: datetime | None
    generated_at: datetime
    first_comment_at: datetime | None
    last_comment_at: datetime | None
    totals: Totals
    days: list[DayCount]
    top_authors: list[AuthorCount]
    top_posts: list[PostCount]
    keywords: list[KeywordCount]
    notes: list[str]
    communities: int | None = None  # of a report over all communities: how many are stored

    @staticmethod
    def post_url(post: PostCount) -> str:
        return f"https://vk.com/wall{post.owner_id}_{post.post_id}"

    @property
    def title(self) -> str:
        if self.group_id is None:
            return ALL_COMMUNITIES
        if self.community is not None and self.community.name:
            return self.community.name
        return f"community {self.group_id}"

    @property
    def found(self) -> bool:
        """Whether the community (or, over all communities, any community) is stored."""
        if self.group_id is None:
            return bool(self.communities)
        return self.community is not None

    def post_label(self, post: PostCount) -> str:
        """How a post is named: its id, or over all communities `{owner_id}_{post_id}`."""
        return str(post.post_id) if self.group_id is not None else f"{post.owner_id}_{post.post_id}"

    def to_document(self) -> dict[str, Any]:
        """The JSON report."""
        return {
            "report": "vk-comments",
            "scope": ALL_COMMUNITIES if self.group_id is None else "community",
            "group_id": self.group_id,
            "community": asdict(self.community) if self.community is not None else None,
            "community_found": self.found,
            **({"communities": self.communities} if self.group_id is None else {}),
            "period": {
                "since": iso(self.since),
                "until": iso(self.until),
                "first_comment_at": iso(self.first_comment_at),
                "last_comment_at": iso(self.last_comment_at),
            },
            "generated_at": self.generated_at.isoformat(),
            "totals": asdict(self.totals),
            "days": [
                {"date": d.day.isoformat(), "comments": d.comments, "deleted": d.deleted}
                for d in self.days
            ],
            "top_authors": [
                {
                    "rank": rank,
                    "from_id": a.from_id,
                    "comments": a.comments,
                    "deleted": a.deleted,
                    "url": author_url(a.from_id),
                }
                for rank, a in enumerate(self.top_authors, 1)
            ],
            "top_posts": [
                {
                    "rank": rank,
                    "owner_id": p.owner_id,
                    "post_id": p.post_id,
                    "comments": p.comments,
                    "date": iso(p.date),
                    "text": p.excerpt,
                    "url": self.post_url(p),
                }
                for rank, p in enumerate(self.top_posts, 1)
            ],
            "keywords": [
                {"rank": rank, "term": k.term, "count": k.count, "comments": k.comments}
                for rank, k in enumerate(self.keywords, 1)
            ],
            "notes": self.notes,
        }


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
