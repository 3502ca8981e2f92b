"""Built-in model families.

One explicit table: family name -> "module:attribute" of its Workload. Listing the
families imports nothing (no torch); `trainyard.workload.resolve_workload` imports one.
A family's workload.py imports torch only inside its functions.
"""

REGISTRY: dict[str, str] = {
    "cnn": "workloads.cnn.workload:WORKLOAD",
    "rnn": "workloads.rnn.workload:WORKLOAD",
    # the rnn family's forecasting task: same models and code, its own primary metric (MASE, min)
    "rnn-forecast": "workloads.rnn.workload:FORECAST",
    "autoencoder": "workloads.autoencoder.workload:WORKLOAD",
    "gan": "workloads.gan.workload:WORKLOAD",
    "diffusion": "workloads.diffusion.workload:WORKLOAD",
    "transformer": "workloads.transformer.workload:WORKLOAD",
}

__all__ = ["REGISTRY"]
