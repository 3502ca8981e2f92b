"""/v1/me, /v1/users, /v1/tokens, /v1/projects (+ members), /v1/audit: who may use the server.

Users and the audit trail are for admins. Anyone manages their own tokens (an admin those of
others too). Projects: admins create them; a project's maintainers manage its members.
"""
from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from typing import Annotated, Literal, Optional

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from trainyard.api.audit import audit_note
from trainyard.api.auth import authenticator, authorize, current_principal, require_admin
from trainyard.api.context import ServerContext, get_ctx
from trainyard.api.errors import error_responses
from trainyard.api.models import (AuditEvent, AuditList, BudgetUse, CreatedToken, Me, Member, Membership, Project,
                                  ProjectList, ProjectSummary, QuotaView, Token, TokenList, User, UserList)
from trainyard.api.params import NAME_RE, Limit, Name, Offset
from trainyard.auth.principal import Principal
from trainyard.auth.roles import ROLE_NAMES, Role, parse_role, role_name
from trainyard.auth.tokens import TOKEN_ID_RE, new_token
from trainyard.controller.views import iso
from trainyard.errors import ConflictError, NotFoundError, SpecError
from trainyard.controller import quotas
from trainyard.scheduler.budgets import budget_status
from trainyard.scheduler.model import DAY
from trainyard.store import quotas as quotas_repo
from trainyard.store import teams as repo

__all__ = ["me_router", "users_router", "tokens_router", "projects_router", "audit_router"]

# users are named like everything else (specs' NAME_RE), but may be 64 long (contract)
USER_RE = NAME_RE
UserName = Annotated[str, Field(min_length=1, max_length=63, pattern=USER_RE,
                                description="Lower-case letters, digits and '-', at most 63.")]
TokenId = Annotated[str, Path(min_length=12, max_length=12, pattern=TOKEN_ID_RE,
                              description="A token's id, as `trainyard tokens list` shows it.")]

me_router = APIRouter(prefix="/v1", tags=["auth"], responses=error_responses(401, 403))
users_router = APIRouter(prefix="/v1/users", tags=["auth"], dependencies=[Depends(require_admin)],
                         responses=error_responses(401, 403, 422))
tokens_router = APIRouter(prefix="/v1/tokens", tags=["auth"], dependencies=[Depends(current_principal)],
                          responses=error_responses(401, 403, 422))
projects_router = APIRouter(prefix="/v1/projects", tags=["projects"], dependencies=[Depends(current_principal)],
                            responses=error_responses(401, 403, 422))
audit_router = APIRouter(prefix="/v1/audit", tags=["auth"], dependencies=[Depends(require_admin)],
                         responses=error_responses(401, 403, 422))


# ----------------------------------------------------------------------------- /v1/me (answers: trainyard.apitypes)


@me_router.get("/me", summary="Who the token belongs to, and its roles", response_model=Me)
def me(principal: Principal = Depends(current_principal), ctx: ServerContext = Depends(get_ctx)) -> Me:
    if principal.admin:
        with ctx.db.session() as s:
            projects = {p.name: "admin" for p in repo.list_projects(s)}
    else:
        projects = {p: role_name(r) for p, r in sorted(principal.roles.items())}
    return Me(user=principal.user, kind=principal.kind, admin=principal.admin, via=principal.via, projects=projects)


# ----------------------------------------------------------------------------- /v1/users
class CreateUserRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: UserName
    kind: Literal["user", "service"] = Field("user", description="'user' (a person) or 'service' (CI, pipelines).")
    admin: bool = False


def _user(row: repo.UserRow) -> User:
    return User(name=row.name, kind=row.kind, admin=bool(row.admin), disabled=bool(row.disabled),
                created_at=iso(row.created_at))


@users_router.post("", status_code=201, summary="Add a user or service account", response_model=User,
                   responses=error_responses(409))
def create_user(body: CreateUserRequest, request: Request, ctx: ServerContext = Depends(get_ctx)) -> User:
    audit_note(request).object_id = body.name
    with ctx.db.session() as s:
        row = repo.create_user(s, body.name, kind=body.kind, admin=body.admin)
        return _user(row)


@users_router.get("", summary="List users", response_model=UserList)
def list_users(ctx: ServerContext = Depends(get_ctx)) -> UserList:
    with ctx.db.session() as s:
        return UserList(users=[_user(r) for r in repo.list_users(s)])


@users_router.delete("/{name}", status_code=204, summary="Remove a user: disables it and revokes its tokens",
                     responses=error_responses(404, 409))
def remove_user(name: Name, ctx: ServerContext = Depends(get_ctx)) -> Response:
    if name == repo.ADMIN_USER:
        raise ConflictError("user 'admin' cannot be removed", field="name", value=name,
                            fix="it is the server's first admin; revoke its tokens instead")
    with ctx.db.session() as s:
        repo.disable_user(s, name)
    authenticator(ctx).forget()
    return Response(status_code=204)


# ----------------------------------------------------------------------------- /v1/tokens
class CreateTokenRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
                      description="What the token is for (laptop, ci, ...).")
    expires_in_days: Optional[int] = Field(None, ge=1, le=3650, description="Days until it expires; null: never.")
    user: Optional[str] = Field(None, min_length=1, max_length=63, pattern=USER_RE,
                                description="Whose token (admins only, for another user or a service account); "
                                            "default: the caller.")


def _token(row: repo.ApiTokenRow) -> Token:
    return Token(id=row.id, name=row.name, user=row.user, created_at=iso(row.created_at),
                 expires_at=iso(row.expires_at), last_used_at=iso(row.last_used_at), revoked_at=iso(row.revoked_at))


def _other_user(principal: Principal, user: Optional[str], *, doing: str) -> str:
    if user is None or user == principal.user:
        return principal.user
    if not principal.admin:
        from trainyard.errors import AuthError

        raise AuthError(f"only admins may {doing} of another user", status=403,
                        fix="leave `user` out to act on your own tokens")
    return user


@tokens_router.post("", status_code=201, summary="Create an API token (shown once)", response_model=CreatedToken,
                    responses=error_responses(404))
def create_token(body: CreateTokenRequest, request: Request, principal: Principal = Depends(current_principal),
                 ctx: ServerContext = Depends(get_ctx)) -> CreatedToken:
    user = _other_user(principal, body.user, doing="create tokens")
    made = new_token()
    audit_note(request).object_id = made.id
    expires = (datetime.now(timezone.utc) + timedelta(days=body.expires_in_days)
               if body.expires_in_days is not None else None)
    with ctx.db.session() as s:
        owner = repo.get_user(s, user)
        if owner.disabled:
            raise ConflictError(f"user {user!r} is disabled", field="user", value=user,
                                fix="tokens are for active users")
        row = repo.add_token(s, token_id=made.id, user=user, name=body.name, sha256=made.sha256, expires_at=expires)
        return CreatedToken(id=row.id, name=row.name, user=row.user, token=made.token,
                            created_at=iso(row.created_at), expires_at=iso(row.expires_at))


@tokens_router.get("", summary="List API tokens (never their text)", response_model=TokenList)
def list_tokens(user: Annotated[Optional[str], Query(max_length=63, pattern=USER_RE)] = None,
                principal: Principal = Depends(current_principal), ctx: ServerContext = Depends(get_ctx)) -> TokenList:
    whose = _other_user(principal, user, doing="list the tokens")
    with ctx.db.session() as s:
        return TokenList(tokens=[_token(r) for r in repo.list_tokens(s, user=whose)])


@tokens_router.delete("/{token_id}", status_code=204, summary="Revoke a token (your own; admins: any)",
                      responses=error_responses(404))
def revoke_token(token_id: TokenId,
                 principal: Principal = Depends(current_principal), ctx: ServerContext = Depends(get_ctx)) -> Response:
    with ctx.db.session() as s:
        row = repo.find_token(s, token_id)
        if row is None or (row.user != principal.user and not principal.admin):
            raise NotFoundError("token", token_id, fix="list yours with `trainyard tokens list`")
        repo.revoke_token(s, row)
    authenticator(ctx).forget()
    return Response(status_code=204)


# ----------------------------------------------------------------------------- /v1/projects
class CreateProjectRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., min_length=1, max_length=63, pattern=NAME_RE)
    description: str = Field("", max_length=1000)


class BudgetBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # no "4" -> 4.0, no true -> 1.0

    gpu_hours: Optional[float] = Field(None, description="GPU-hours the project may use per window; null: no limit.")
    cpu_hours: Optional[float] = Field(None, description="CPU-hours the project may use per window; null: no limit.")
    window_days: float = Field(30.0, description="The rolling window, in days (at most 366).")


Amounts = Optional[dict[str, float]]


class SetQuotaRequest(BaseModel):
    """Replaces the project's scheduling settings as a whole (what is left out is unset)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    weight: float = Field(1.0, description="Fair-share weight (> 0): shares are weight / sum of weights.")
    nominal: Amounts = Field(None, description="Guaranteed amounts per resource: CPU, GPU, memory (bytes), "
                                               "accelerator_type:<T> (GPUs of type T).")
    borrowing_limit: Amounts = Field(None, description="How much beyond nominal it may borrow, per resource "
                                                       "(a resource left out: no limit; null: no limit at all).")
    lending_limit: Amounts = Field(None, description="How much of its unused nominal others may borrow, per "
                                                     "resource (left out: all of it).")
    budget: Optional[BudgetBody] = None


class SetMemberRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: str = Field(..., max_length=32, description=f"One of: {', '.join(ROLE_NAMES)}.")


def _role_label(principal: Principal, project: str) -> str:
    if principal.admin:
        return "admin"
    role = principal.role_in(project)
    return role_name(role) if role is not None else ""


def _summary(principal: Principal, row: repo.ProjectRow) -> ProjectSummary:
    return ProjectSummary(name=row.name, description=row.description or "", created_at=iso(row.created_at),
                          role=_role_label(principal, row.name))


@projects_router.post("", status_code=201, summary="Create a project (admins)", response_model=ProjectSummary,
                      responses=error_responses(409))
def create_project(body: CreateProjectRequest, request: Request, principal: Principal = Depends(require_admin),
                   ctx: ServerContext = Depends(get_ctx)) -> ProjectSummary:
    note = audit_note(request)
    note.object_id = note.project = body.name
    with ctx.db.session() as s:
        return _summary(principal, repo.create_project(s, body.name, description=body.description))


@projects_router.get("", summary="List the projects you can see, with your role", response_model=ProjectList)
def list_projects(principal: Principal = Depends(current_principal),
                  ctx: ServerContext = Depends(get_ctx)) -> ProjectList:
    with ctx.db.session() as s:
        rows = repo.list_projects(s, names=principal.visible_projects())
        return ProjectList(projects=[_summary(principal, r) for r in rows])


def _visible_project(s, principal: Principal, name: str) -> repo.ProjectRow:
    row = repo.find_project(s, name)
    if row is None or not principal.can_see(name):
        raise NotFoundError("project", name)
    return row


@projects_router.get("/{name}", summary="Show a project and its members", response_model=Project,
                     responses=error_responses(404))
def get_project(name: Name, principal: Principal = Depends(current_principal),
                ctx: ServerContext = Depends(get_ctx)) -> Project:
    with ctx.db.session() as s:
        row = _visible_project(s, principal, name)
        members = [Member(user=m.user, role=m.role) for m in repo.members(s, name)]
        return Project(**_summary(principal, row).model_dump(), members=members, quota=_quota_view(s, row))


def _quota_view(s, row: repo.ProjectRow) -> QuotaView:
    settings = quotas.project_of(row.name, weight=row.weight, quota=row.quota, budget=row.budget)
    window = settings.budget.window_s if settings.budget is not None else 30 * DAY
    now = time.time()
    records = quotas.usage_for(s, row.name, window_s=window, now=datetime.fromtimestamp(now, tz=timezone.utc))
    status = budget_status(row.name, records, settings.budget, now=now, burn_window_s=DAY)
    usage = {}
    for kind in ("gpu", "cpu"):
        at = getattr(status, f"{kind}_exhausted_at")
        usage[kind] = BudgetUse(used_hours=getattr(status, f"{kind}_hours_used"),
                                budget_hours=getattr(status, f"{kind}_hours_budget"),
                                remaining_hours=getattr(status, f"{kind}_hours_remaining"),
                                burn_per_day=getattr(status, f"{kind}_burn_per_hour") * 24.0,
                                exhausted_at=iso(datetime.fromtimestamp(at, tz=timezone.utc)) if at else None)
    quota = row.quota or {}
    return QuotaView(weight=row.weight if row.weight is not None else 1.0, nominal=quota.get("nominal"),
                     borrowing_limit=quota.get("borrowing_limit"), lending_limit=quota.get("lending_limit"),
                     budget=row.budget, usage=usage, updated_at=iso(row.quota_updated_at))


@projects_router.put("/{name}/quota", summary="Set a project's fair-share weight, quota and budget (admins)",
                     response_model=QuotaView, responses=error_responses(404))
def set_quota(name: Name, body: SetQuotaRequest, request: Request, principal: Principal = Depends(require_admin),
              ctx: ServerContext = Depends(get_ctx)) -> QuotaView:
    note = audit_note(request)
    note.object_type, note.object_id, note.project = "project_quota", name, name
    settings = quotas.check_settings(
        name, weight=body.weight, nominal=body.nominal, borrowing_limit=body.borrowing_limit,
        lending_limit=body.lending_limit, budget=body.budget.model_dump() if body.budget is not None else None)
    with ctx.db.session() as s:
        row = _visible_project(s, principal, name)
        quotas_repo.set_quota(s, row, settings)
        answer = _quota_view(s, row)
    ctx.controller.projects_changed()
    return answer


@projects_router.put("/{name}/members/{user}", summary="Give a user a role in the project (maintainers)",
                     response_model=Membership, responses=error_responses(404))
def set_member(name: Name, user: Name, body: SetMemberRequest, request: Request,
               principal: Principal = Depends(current_principal), ctx: ServerContext = Depends(get_ctx)) -> Membership:
    note = audit_note(request)
    note.object_type, note.object_id, note.project = "project_member", user, name
    role = parse_role(body.role)
    with ctx.db.session() as s:
        _visible_project(s, principal, name)
        authorize(principal, project=name, need=Role.MAINTAINER, what="project", ident=name,
                  doing="manage its members")
        target = repo.get_user(s, user)
        if target.disabled:
            raise SpecError(f"user {user!r} is disabled", field="user", value=user, fix="pick an active user")
        row = repo.set_member(s, project=name, user=user, role=role_name(role))
        answer = Membership(project=row.project, user=row.user, role=row.role)
    authenticator(ctx).forget()
    return answer


@projects_router.delete("/{name}/members/{user}", status_code=204,
                        summary="Take a user's role in the project away (maintainers)",
                        responses=error_responses(404))
def remove_member(name: Name, user: Name, request: Request, principal: Principal = Depends(current_principal),
                  ctx: ServerContext = Depends(get_ctx)) -> Response:
    note = audit_note(request)
    note.object_type, note.object_id, note.project = "project_member", user, name
    with ctx.db.session() as s:
        _visible_project(s, principal, name)
        authorize(principal, project=name, need=Role.MAINTAINER, what="project", ident=name,
                  doing="manage its members")
        repo.get_user(s, user)  # an unknown user is a 404; a user without a role: nothing to do (204)
        repo.remove_member(s, project=name, user=user)
    authenticator(ctx).forget()
    return Response(status_code=204)


# ----------------------------------------------------------------------------- /v1/audit


@audit_router.get("", summary="The audit trail, newest first (admins)", response_model=AuditList)
def list_audit(actor: Annotated[Optional[str], Query(max_length=64)] = None,
               action: Annotated[Optional[str], Query(max_length=200, description="A method and route, or a prefix "
                                                                                  "of one: 'POST /v1/jobs'.")] = None,
               project: Annotated[Optional[str], Query(max_length=128)] = None,
               object_id: Annotated[Optional[str], Query(max_length=128)] = None,
               outcome: Annotated[Optional[Literal["ok", "refused", "error"]], Query()] = None,
               since: Annotated[Optional[datetime], Query(description="ISO 8601 time; events at or after it.")] = None,
               limit: Limit = 100, offset: Offset = 0, ctx: ServerContext = Depends(get_ctx)) -> AuditList:
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=timezone.utc)
    with ctx.db.session() as s:
        rows, total = repo.list_audit(s, actor=actor, action=action, project=project, object_id=object_id,
                                      outcome=outcome, since=since, limit=limit, offset=offset)
        events = [AuditEvent(id=r.id, at=iso(r.at), actor=r.actor, action=r.action, object_type=r.object_type,
                             object_id=r.object_id, project=r.project, status_code=r.status_code, outcome=r.outcome,
                             source_ip=r.source_ip) for r in rows]
    return AuditList(events=events, total=total)
