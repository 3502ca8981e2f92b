"""Trainyard: train deep-learning models at scale.

The public surface is small: `Client` (the SDK), the spec models, and the errors.
Importing `trainyard` imports no torch.
"""
from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["Client", "__version__"]


def __getattr__(name):  # lazy: `import trainyard` stays cheap
    if name == "Client":
        from trainyard.sdk import Client

        return Client
    raise AttributeError(f"module 'trainyard' has no attribute {name!r}")
