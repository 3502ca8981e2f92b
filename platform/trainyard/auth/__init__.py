"""Identities and what they may do: roles (pure policy), principals, API tokens.

No web framework, no torch, no Ray: the API layer (`trainyard.api.auth`) turns a request into
a `Principal` and asks these modules for decisions. `oidc.py` verifies single sign-on tokens.
"""
from trainyard.auth.principal import Principal
from trainyard.auth.roles import Role, parse_role

__all__ = ["Principal", "Role", "parse_role"]
