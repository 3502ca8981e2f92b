"""Who is calling: a user or service account, with its project roles (pure data)."""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

from trainyard.auth.roles import Role

__all__ = ["Principal"]


@dataclass(frozen=True)
class Principal:
    user: str
    kind: str = "user"  # "user" | "service"
    admin: bool = False
    roles: Mapping[str, Role] = field(default_factory=dict)
    via: str = "token"  # "token" | "oidc"

    def __post_init__(self) -> None:
        # read-only: a principal is shared by cached lookups and must not be changed in place
        object.__setattr__(self, "roles", MappingProxyType({p: Role(r) for p, r in dict(self.roles).items()}))

    def role_in(self, project: str) -> Role | None:
        """The caller's role in `project`; admins are maintainers everywhere."""
        if self.admin:
            return Role.MAINTAINER
        return self.roles.get(project)

    def visible_projects(self) -> frozenset[str] | None:
        """Projects whose objects the caller may see; None: all of them (admin)."""
        if self.admin:
            return None
        return frozenset(self.roles)

    def can_see(self, project: str) -> bool:
        return self.role_in(project) is not None
