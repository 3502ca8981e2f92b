"""Project roles, ordered: a higher role may do everything a lower one may (pure policy)."""
from __future__ import annotations

import enum

from trainyard.errors import SpecError, did_you_mean

__all__ = ["Role", "parse_role", "ROLE_NAMES", "role_name", "higher"]


class Role(enum.IntEnum):
    VIEWER = 1  # reads jobs, sweeps, logs, endpoints, models
    MEMBER = 2  # submits into the project, cancels their own
    MAINTAINER = 3  # cancels any, manages members and endpoints, promotes, rolls back


ROLE_NAMES = tuple(r.name.lower() for r in Role)


def role_name(role: Role) -> str:
    return role.name.lower()


def parse_role(text: str, *, field: str = "role") -> Role:
    """'viewer' | 'member' | 'maintainer' (any case) -> Role; else a SpecError naming `field`."""
    value = text.strip().lower() if isinstance(text, str) else text
    if isinstance(value, str) and value in ROLE_NAMES:
        return Role[value.upper()]
    shown = str(text)[:40]
    hint = did_you_mean(shown.lower(), ROLE_NAMES) if isinstance(text, str) else ""
    raise SpecError(f"unknown role {shown!r};{hint} known: {', '.join(ROLE_NAMES)}", field=field,
                    value=shown, fix=f"use one of: {', '.join(ROLE_NAMES)}")


def higher(a: Role | None, b: Role | None) -> Role | None:
    """The stronger of two roles (None: no role)."""
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)
