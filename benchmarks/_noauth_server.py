"""The Trainyard API exactly as `python -m trainyard.api` serves it, with authentication replaced
by one fixed caller: the baseline of benchmarks/auth_overhead.py.

Every route, its validation, its store work, its role checks (on a ready-made principal) and the
audit trail run as usual; only the bearer token's lookup (hash, cache, store) is skipped. Never a
way to run a server: it answers anyone as `bench`, a member of project `default`.
"""
from __future__ import annotations

import _bench  # first: import paths

import argparse
import logging


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args()
    logging.basicConfig(level=args.log_level.upper())
    import uvicorn

    from trainyard.api.app import create_app
    from trainyard.api.auth import current_principal
    from trainyard.auth.principal import Principal
    from trainyard.auth.roles import Role

    app = create_app()
    caller = Principal(user="bench", kind="user", admin=False, roles={"default": Role.MEMBER}, via="token")
    app.dependency_overrides[current_principal] = lambda: caller
    uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=args.port, log_level=args.log_level,
                                  lifespan="on", timeout_graceful_shutdown=5)).run()


if __name__ == "__main__":
    main()
