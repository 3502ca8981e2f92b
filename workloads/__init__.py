"""Built-in model families.

One explicit table: family name -> "module:attribute" of its Workload. Listing the
families imports nothing (no torch); `trainyard.workload.resolve_workload` imports one.
A family's workload.py imports torch only inside its functions.
"""

REGISTRY: dict[str, str] = {
    "cnn": "workloads.cnn.workload:WORKLOAD",
}

__all__ = ["REGISTRY"]
