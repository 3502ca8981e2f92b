"""Make this process's Ray client see the auth variables now in os.environ.

Ray reads RAY_AUTH_MODE into its cached config when `ray` is imported, and its C++ token
loader caches the first token it reads. A process that imports ray and only later points
itself at a token-auth head (a test session, a benchmark that starts its own head, a second
head after a first) would otherwise send no token, or the old one, and fail `ray.init` with
InvalidAuthToken after ~20 s. Call `refresh_ray_auth()` after changing RAY_AUTH_* variables.
"""
from __future__ import annotations

import contextlib
import os
import sys


def refresh_ray_auth() -> None:
    """Re-read RAY_AUTH_MODE / RAY_AUTH_TOKEN(_PATH); a no-op when ray is not imported yet."""
    if "ray" not in sys.modules:
        return  # ray will read the environment when it is imported
    from ray._raylet import AuthenticationTokenLoader, Config

    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


@contextlib.contextmanager
def ray_client_env(env: dict[str, str]):
    """Point this process's Ray client at a head (its RayHead.env()) for the block, then put
    the previous variables back; Ray's cached auth follows both changes."""
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    refresh_ray_auth()
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        refresh_ray_auth()
