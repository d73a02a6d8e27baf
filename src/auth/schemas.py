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


@dataclass(frozen=True, slots=True)
class ApiKey:
    owner: str
    role: Role
    key: str = field(repr=False)
