"""Serving: endpoints on Ray Serve, the traffic split between model versions, promotion.

Layout (pure parts first; none of these import ray or torch at module level):
    traffic.py    weights per version, validated; the per-request weighted pick
    stats.py      cumulative request/error counters and latency histograms, diffable
    policy.py     promotion decisions: metric comparison, canary gates, the state machine
    config.py     the declarative Serve application config (what PUT /api/serve/applications/ takes)
    client.py     the Serve REST client (dashboard, bearer token) and the endpoint HTTP client
    registry.py   MLflow registry: versions, aliases, metrics, promotion events
    endpoints.py  deploy / list / show / predict / delete, against a cluster
    promotion.py  the promotion flow: compare -> canary -> promote or roll back
    batching.py   how a family's requests stack into one forward pass (serve.batch), pure
    app.py        the Serve application itself (imported only inside Serve replicas)
"""
from __future__ import annotations

__all__ = ["EndpointManager", "Promoter", "Traffic", "promote", "deploy_endpoint"]


def __getattr__(name):  # keep `import trainyard.serving` free of ray, mlflow and torch
    if name == "EndpointManager" or name == "deploy_endpoint":
        from trainyard.serving import endpoints

        return getattr(endpoints, name)
    if name in ("Promoter", "promote"):
        from trainyard.serving import promotion

        return getattr(promotion, name)
    if name == "Traffic":
        from trainyard.serving.traffic import Traffic

        return Traffic
    raise AttributeError(f"module 'trainyard.serving' has no attribute {name!r}")
