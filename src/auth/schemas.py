"""Who is calling: roles and principals."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

# Owner names callers may not take: the job module files its own jobs under "system"
# (`src.arq.service.SYSTEM`), so a caller called that would see and steer them. Compared
# case-insensitively.
RESERVED_OWNERS: frozenset[str] = frozenset({"system"})
# The widest owner name the job history stores (`arq_jobs.owner` is VARCHAR(100)).
OWNER_MAX_LENGTH = 100


def is_reserved_owner(owner: str) -> bool:
    """Whether `owner` names one of `RESERVED_OWNERS` (in any case, with any outer spaces)."""
    return owner.strip().casefold() in RESERVED_OWNERS


class Role(StrEnum):
    USER = "user"
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: the owner name its jobs are filed under, and its role."""

    owner: str
    role: Role

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN

    # Who sees what, the one statement of it: a user sees what is filed under their own owner
    # name; an admin sees everything (jobs, reports, ...), whoever owns it.

    def may_see(self, owner: str | None) -> bool:
        """Whether the caller may see what `owner` owns (None: nobody's, so admins only)."""
        return self.is_admin or owner == self.owner

    def owner_filter(self, requested: str | None = None) -> str | None:
        """The owner a listing is limited to: the caller's own; for an admin, `requested`
        (None: every owner's)."""
        return requested if self.is_admin else self.owner


@dataclass(frozen=True, slots=True)
class ApiKey:
    owner: str
    role: Role
    key: str = field(repr=False)
