"""The REST API (FastAPI). `create_app(settings)` builds it; `python -m trainyard.api` serves it.

Importing this package imports nothing heavy; app.py imports FastAPI.
"""
__all__ = ["create_app"]


def __getattr__(name):
    if name == "create_app":
        from trainyard.api.app import create_app

        return create_app
    raise AttributeError(name)
