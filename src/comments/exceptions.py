"""Errors of the comments pipeline."""

from __future__ import annotations

from src.exceptions import AppError


class CommentsError(AppError):
    status_code = 400


class CommunityNotFound(CommentsError):
    status_code = 404


class CommentNotFound(CommentsError):
    status_code = 404

    def __init__(self, comment_ref: str) -> None:
        super().__init__(f"comment {comment_ref!r} not found")


class UnresolvedCommentIds(CommentsError):
    """Plain comment ids that name no stored comment, or several (`errors` lists the forms)."""

    status_code = 422


class VKNotConfigured(CommentsError):
    """The worker has no VK token, so it cannot call VK."""

    status_code = 503

    def __init__(self) -> None:
        super().__init__("VK_TOKEN is not set for the workers: they cannot call the VK API")


class AnalysisNotFound(CommentsError):
    status_code = 404

    def __init__(self, comment_ref: str) -> None:
        super().__init__(
            f"comment {comment_ref!r} has not been analysed yet "
            "(POST /api/v1/comments/analyze/async)"
        )
