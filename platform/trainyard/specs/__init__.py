"""The YAML specs users write: jobs (and, built on them, sweeps and endpoints).

The public surface. Inside, one way down:
  parsing          text or mapping -> caps -> model -> workload and sweep checks
    sweeps.validate  the checks of a sweep's search space (takes the parsed spec)
  models           the pydantic models (strict, bounded, extra="forbid")
    issues         pydantic errors -> FieldIssues in the house style
    limits         size, depth and number caps; the walk of free-form parts
    storage        storage URLs: syntax, normalisation, confinement to the server's roots
  safe_yaml        YAML without aliases, duplicate keys or deep nesting

`python -m trainyard.specs` prints the JSON Schemas (`make schemas` keeps
trainyard/schemas/specs.json in step). Nothing here imports torch.
"""
from __future__ import annotations

from trainyard.specs.issues import spec_issues_from_validation
from trainyard.specs.models import (NAME_RE, SEARCH_ALGORITHMS, SWEEP_SCHEDULERS, AshaSpec, AutoscalingSpec,
                                    BatchingSpec, CheckpointSpec, DeepSpeedSpec, EndpointSpec, FailureSpec,
                                    JobSpec, PbtSpec, PromotionGates, PromotionPolicy, Resources, SweepConfig,
                                    SweepSpec, TrackingSpec, TrainingSpec, json_schemas)
from trainyard.specs.parsing import (load_spec_file, load_yaml, parse_endpoint_spec, parse_job_spec,
                                     parse_promotion_policy, parse_sweep_spec, read_spec_file,
                                     validate_workload_fields)

__all__ = [
    "JobSpec",
    "Resources",
    "DeepSpeedSpec",
    "TrainingSpec",
    "CheckpointSpec",
    "FailureSpec",
    "TrackingSpec",
    "parse_job_spec",
    "load_yaml",
    "read_spec_file",
    "load_spec_file",
    "spec_issues_from_validation",
    "json_schemas",
    "EndpointSpec",
    "AutoscalingSpec",
    "BatchingSpec",
    "PromotionPolicy",
    "PromotionGates",
    "parse_endpoint_spec",
    "parse_promotion_policy",
    "SweepSpec",
    "SweepConfig",
    "AshaSpec",
    "PbtSpec",
    "parse_sweep_spec",
    "validate_workload_fields",
    "NAME_RE",
    "SEARCH_ALGORITHMS",
    "SWEEP_SCHEDULERS",
]
