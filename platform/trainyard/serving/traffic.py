"""The traffic split of an endpoint: a weight per live model version.

A `Traffic` value is what travels in the Serve deployment's user_config, so a change of
weights or versions reaches every replica in about 0.3 s without a restart. `stable` is
the version that answers when a canary fails (fallback) and the one that keeps the
traffic when a canary is rolled back.
"""
from __future__ import annotations

import bisect
import random
from dataclasses import dataclass, field
from typing import Mapping

from trainyard.errors import ConflictError, SpecError

__all__ = ["Traffic", "WeightedPicker"]

_EPS = 1e-9


def _vkey(version: str) -> tuple:
    return (int(version),) if str(version).isdigit() else (1 << 62, str(version))


@dataclass(frozen=True)
class Traffic:
    weights: Mapping[str, float]
    stable: str
    canary: str | None = None
    generation: int = 0
    extra: Mapping[str, object] = field(default_factory=dict)

    def __post_init__(self):
        weights = {str(k): float(v) for k, v in self.weights.items()}
        object.__setattr__(self, "weights", weights)
        object.__setattr__(self, "stable", str(self.stable))
        if self.canary is not None:
            object.__setattr__(self, "canary", str(self.canary))
        self.validate()

    # ------------------------------------------------------------------ checks
    def validate(self) -> None:
        if not self.weights:
            raise SpecError("an endpoint needs at least one version", field="traffic.weights",
                            value={}, fix="deploy a model version first")
        for version, weight in self.weights.items():
            if not (0.0 <= weight <= 1.0):
                raise SpecError(f"must be within [0, 1], got {weight}", field=f"traffic.weights.{version}",
                                value=weight, fix="weights are traffic fractions")
        total = sum(self.weights.values())
        if abs(total - 1.0) > 1e-6:
            raise SpecError(f"weights must sum to 1, got {total:.6f}", field="traffic.weights",
                            value=dict(self.weights), fix="give fractions that add up to 1")
        if self.stable not in self.weights:
            raise SpecError(f"stable version {self.stable!r} is not among the versions "
                            f"{sorted(self.weights, key=_vkey)}", field="traffic.stable", value=self.stable)
        if self.canary is not None and self.canary not in self.weights:
            raise SpecError(f"canary version {self.canary!r} is not among the versions",
                            field="traffic.canary", value=self.canary)

    # ------------------------------------------------------------------ constructors / transitions
    @classmethod
    def single(cls, version: str, *, generation: int = 0) -> "Traffic":
        return cls({str(version): 1.0}, stable=str(version), generation=generation)

    def versions(self) -> list[str]:
        return sorted(self.weights, key=_vkey)

    def live(self) -> list[str]:
        """Versions that receive new requests."""
        return [v for v in self.versions() if self.weights[v] > _EPS]

    def _next(self, weights: Mapping[str, float], *, stable: str | None = None,
              canary: str | None = "__keep__") -> "Traffic":
        return Traffic(weights, stable=stable or self.stable,
                       canary=self.canary if canary == "__keep__" else canary,
                       generation=self.generation + 1, extra=self.extra)

    def with_canary(self, version: str, weight: float) -> "Traffic":
        """The stable version keeps 1 - weight; any other version is dropped."""
        version = str(version)
        if not (0.0 < weight < 1.0):
            raise SpecError(f"must be strictly between 0 and 1, got {weight}", field="canary_weight",
                            value=weight, fix="e.g. 0.1 sends a tenth of the requests to the canary")
        if version == self.stable:
            raise ConflictError(f"version {version} is already the stable version of this endpoint",
                                field="version", value=version)
        if self.canary is not None and self.canary != version:
            raise ConflictError(f"version {self.canary} is already in canary on this endpoint",
                                field="version", value=version,
                                fix="wait for its promotion to end, or roll it back")
        return self._next({self.stable: 1.0 - weight, version: weight}, canary=version)

    def shift_all_to(self, version: str) -> "Traffic":
        """Every new request to `version`; the others stay loaded with weight 0 (draining)."""
        version = str(version)
        if version not in self.weights:
            raise SpecError(f"version {version} is not deployed on this endpoint", field="version",
                            value=version, fix=f"deployed: {', '.join(self.versions())}")
        weights = {v: (1.0 if v == version else 0.0) for v in self.weights}
        return self._next(weights, stable=version, canary=None)

    def without(self, version: str) -> "Traffic":
        """Drop a version that no longer receives traffic (weight 0)."""
        version = str(version)
        if self.weights.get(version, 0.0) > _EPS:
            raise ConflictError(f"version {version} still receives {self.weights[version]:.0%} of the "
                                "traffic; shift it away before removing it", field="version", value=version)
        weights = {v: w for v, w in self.weights.items() if v != version}
        return self._next(weights, canary=None if self.canary == version else self.canary)

    def set_weights(self, weights: Mapping[str, float]) -> "Traffic":
        unknown = set(map(str, weights)) - set(self.weights)
        if unknown:
            raise SpecError(f"versions {sorted(unknown)} are not deployed", field="weights",
                            value=sorted(unknown), fix=f"deployed: {', '.join(self.versions())}")
        new = {v: float(weights.get(v, 0.0)) for v in self.weights}
        stable = max(new, key=lambda v: (new[v], _vkey(v)))
        return self._next(new, stable=stable if new.get(self.stable, 0) <= _EPS else self.stable)

    # ------------------------------------------------------------------ wire format (user_config)
    def to_dict(self) -> dict:
        return {"weights": dict(self.weights), "stable": self.stable, "canary": self.canary,
                "generation": self.generation, **({"extra": dict(self.extra)} if self.extra else {})}

    @classmethod
    def from_dict(cls, data: Mapping) -> "Traffic":
        return cls(dict(data["weights"]), stable=data["stable"], canary=data.get("canary"),
                   generation=int(data.get("generation", 0)), extra=dict(data.get("extra") or {}))


class WeightedPicker:
    """O(log n) weighted choice over the live versions. Cheap enough per request."""

    __slots__ = ("_versions", "_cum", "_rand")

    def __init__(self, weights: Mapping[str, float], *, seed: int | None = None):
        live = [(v, w) for v, w in sorted(weights.items(), key=lambda kv: _vkey(kv[0])) if w > _EPS]
        if not live:
            raise SpecError("no version receives traffic", field="traffic.weights", value=dict(weights))
        total = sum(w for _, w in live)
        self._versions = [v for v, _ in live]
        acc, cum = 0.0, []
        for _, w in live:
            acc += w / total
            cum.append(acc)
        cum[-1] = 1.0
        self._cum = cum
        self._rand = random.Random(seed).random

    def pick(self) -> str:
        if len(self._versions) == 1:
            return self._versions[0]
        return self._versions[bisect.bisect_right(self._cum, self._rand())]
