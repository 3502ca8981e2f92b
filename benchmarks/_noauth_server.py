"""The Trainyard API exactly as `python -m trainyard.api` serves it, with authentication replaced
by one fixed caller: the baseline of benchmarks/auth_overhead.py.

Every route, its validation, its store work, its role checks (on a ready-made principal) and the
audit trail run as usual; only the bearer token's lookup (hash, cache, store) is skipped. Never a
way to run a server: it answers anyone as `bench`, a member of project `default`.
"""
from __future__ import annotations

import _bench  # first: import paths

import sys

from fastapi import Request  # module level: FastAPI resolves the override's annotation here


def main() -> None:
    """`python -m trainyard.api`'s own main (logging, log filter, umask, uvicorn settings), with
    create_app wrapped so that the app it builds has the fixed caller."""
    import trainyard.api.app as app_module
    from trainyard.api.__main__ import main as serve
    from trainyard.api.auth import current_principal, remember_caller
    from trainyard.auth.principal import Principal
    from trainyard.auth.roles import Role

    caller = Principal(user="bench", kind="user", admin=False, roles={"default": Role.MEMBER}, via="token")
    build = app_module.create_app

    def create_app(*args, **kwargs):
        app = build(*args, **kwargs)
        async def fixed_caller(request: Request) -> Principal:
            # recorded as current_principal records it: the audit trail and the submit routes
            # (which read the router's caller through principal_of) need it
            return remember_caller(request, caller)

        app.dependency_overrides[current_principal] = fixed_caller
        return app

    app_module.create_app = create_app
    serve(sys.argv[1:])


if __name__ == "__main__":
    main()
