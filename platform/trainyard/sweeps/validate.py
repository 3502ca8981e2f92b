"""Checks of a sweep spec that need its workload: the space, the metric, the mode, counts.

Rules (docs/sweeps.md repeats them for users):
- The space is `sweep.search_space`, or the family's `Workload.search_space` when the spec
  leaves it out. An explicitly empty space, or no space at all, is an error.
- `sweep.metric` must be one the workload reports (`Workload.metrics`); default: its `metric`.
- `sweep.mode` defaults to the family's `mode` only when the metric is the family's primary
  metric. For any other metric the direction is unknown, and every algorithm and scheduler
  needs it (ASHA and PBT to cut trials, Optuna to steer, all to rank), so it is required.
- grid: every dimension must be discrete (choice or grid); num_trials must be a positive
  multiple of the grid size (default: the grid size). random: num_trials must be a multiple
  of the size of its `grid` dimensions (default: that size x... or 8). bayesian: no `grid`
  dimensions (Optuna samples; use choice). pbt: algorithm random or grid, and it mutates only
  keys of the space (default: the training.* keys).
"""
from __future__ import annotations

from typing import Any

from trainyard.errors import FieldIssue, SpecError, did_you_mean
from trainyard.sweeps import space as sp

__all__ = ["sweep_issues", "resolved_space", "resolved_metric", "num_trials", "pbt_mutable_keys",
           "DEFAULT_NUM_TRIALS", "MAX_SPACE_VALUES"]

DEFAULT_NUM_TRIALS = 8
MAX_SPACE_VALUES = 2048  # choice/grid values of all dimensions together


def resolved_space(spec, workload) -> dict[str, Any] | None:
    if spec.sweep.search_space is not None:
        return dict(spec.sweep.search_space)
    return dict(workload.search_space) if workload is not None else None


def resolved_metric(spec, workload) -> tuple[str, str | None]:
    """(metric, mode) after the family's defaults; mode None when it is unknown."""
    metric = spec.sweep.metric or (workload.metric if workload is not None else None)
    mode = spec.sweep.mode
    if mode is None and workload is not None and metric == workload.metric:
        mode = workload.mode
    return metric, mode


def num_trials(spec, dims: list[sp.Dimension]) -> int:
    if spec.sweep.num_trials is not None:
        return spec.sweep.num_trials
    if spec.sweep.algorithm == "grid":
        return sp.full_grid_size(dims)
    return max(sp.grid_size(dims), DEFAULT_NUM_TRIALS) if sp.grid_size(dims) == 1 else sp.grid_size(dims)


def pbt_mutable_keys(spec, dims: list[sp.Dimension]) -> list[str]:
    if spec.sweep.pbt.mutate is not None:
        return list(spec.sweep.pbt.mutate)
    return [d.key for d in dims if d.key.startswith("training.")]


def _job_field_issues(spec, dims: list[sp.Dimension], workload) -> list[FieldIssue]:
    """Each key must exist in the job spec, and each candidate value must be valid there.

    The models come from the parsed spec itself (its job, its sections), so this module
    needs nothing from trainyard.specs: specs' parsing calls down into it, never the reverse."""
    issues: list[FieldIssue] = []
    job = spec.job_spec()
    models = {"training": type(job.training), "deepspeed": type(job.deepspeed)}
    base = job.model_dump()
    for dim in dims:
        section, _, name = dim.key.partition(".")
        field = f"{sp.FIELD}.{dim.key}"
        if section in models:
            known = list(models[section].model_fields)
            if name not in known:
                issues.append(FieldIssue(field, f"{section} has no key {name!r};{did_you_mean(name, known)}".rstrip(";"),
                                         dim.key, f"{section} keys: {', '.join(known)}"))
                continue
        elif section == "hyperparameters" and workload is not None and workload.default_hparams:
            known = list(workload.default_hparams)
            if name.split(".")[0] not in known:
                issues.append(FieldIssue(field, f"{name!r} is not a hyperparameter of {workload.name};"
                                                f"{did_you_mean(name, known)}".rstrip(";"),
                                         dim.key, f"{workload.name} hyperparameters: {', '.join(known)}"))
                continue
        for value in sp.candidate_values(dim):
            problems = type(job).issues_for(sp.apply_params(base, {dim.key: value}))
            if problems:
                issues.append(FieldIssue(field, f"value {value!r} is not valid for the job: {problems[0]}", value,
                                         "narrow the range or change the values"))
                break
    return issues


def sweep_issues(spec, workload=None) -> list[FieldIssue]:
    """Every problem with a parsed SweepSpec (empty when it is fine).

    `workload`: the Workload (runner) or its WorkloadMeta (control plane); when None, the
    registered family's static metadata, if any. Without either, what needs the family
    (default space, metrics) is left to the driver, which re-checks with the real Workload."""
    if workload is None:
        from trainyard.families import meta_for

        try:
            workload = meta_for(spec.workload)
        except SpecError as exc:
            return exc.issues
    sw = spec.sweep
    issues: list[FieldIssue] = []
    raw = resolved_space(spec, workload)
    if raw is None or (not raw and sw.search_space is None):
        why = (f"workload {spec.workload!r} has no default search space" if workload is not None else
               f"the server does not know workload {spec.workload!r}'s default search space (the client "
               "sent no metadata: the module is not importable where the spec was submitted)")
        issues.append(FieldIssue(sp.FIELD, f"is empty: {why}", None, "give sweep.search_space"))
        dims: list[sp.Dimension] = []
    else:
        dims, problems = sp.parse_space(raw)
        issues.extend(problems)
        listed = sum(len(sp.candidate_values(d)) for d in dims)
        if listed > MAX_SPACE_VALUES:
            # each listed value is validated against the job spec: bound that work
            issues.append(FieldIssue(sp.FIELD, f"lists {listed} values in all, at most {MAX_SPACE_VALUES}", None,
                                     "use ranges (uniform, loguniform, randint) for wide dimensions"))
            dims = []
        else:
            issues.extend(_job_field_issues(spec, dims, workload))

    metric, mode = resolved_metric(spec, workload)
    if workload is not None:
        if metric not in workload.metrics:
            issues.append(FieldIssue("sweep.metric", f"workload {workload.name!r} does not report {metric!r};"
                                                     f"{did_you_mean(metric, workload.metrics)}".rstrip(";"),
                                     metric, f"{workload.name} reports: {', '.join(workload.metrics)}"))
        elif mode is None:
            issues.append(FieldIssue(
                "sweep.mode", f"is required: metric {metric!r} is not {workload.name}'s primary metric "
                              f"({workload.metric!r}, {workload.mode}), so its direction is unknown and "
                              f"{'the ' + sw.scheduler + ' scheduler' if sw.scheduler != 'fifo' else 'ranking trials'} "
                              "cannot work without it", None, "add mode: max or mode: min"))

    if dims:
        gsize = sp.grid_size(dims)
        continuous = [d.key for d in dims if not d.discrete]
        if sw.algorithm == "grid" and continuous:
            issues.append(FieldIssue("sweep.algorithm", f"grid needs discrete dimensions; "
                                                        f"{', '.join(continuous)} {'is' if len(continuous) == 1 else 'are'} continuous",
                                     "grid", "use choice/grid values there, or algorithm: random or bayesian"))
        if sw.algorithm == "bayesian" and gsize > 1:
            grids = [d.key for d in dims if d.kind == "grid"]
            issues.append(FieldIssue("sweep.algorithm", f"bayesian (Optuna) cannot enumerate grid dimensions "
                                                        f"({', '.join(grids)})", "bayesian",
                                     "use choice instead of grid there, or algorithm: random"))
        full = sp.full_grid_size(dims) if sw.algorithm == "grid" else gsize
        n = num_trials(spec, dims)
        if full > 1 and (n < full or n % full):
            what = "grid" if sw.algorithm == "grid" else "grid dimensions"
            issues.append(FieldIssue("sweep.num_trials", f"cannot be met: the {what} has {full} points and every "
                                                         f"point runs the same number of times, got {n}", n,
                                     f"use a multiple of {full} (e.g. {full}), or choice instead of grid"))
        if sw.scheduler == "pbt":
            if sw.algorithm == "bayesian":
                issues.append(FieldIssue("sweep.scheduler", "pbt explores by itself and cannot follow a bayesian "
                                                            "searcher", "pbt", "use algorithm: random with pbt"))
            keys = {d.key for d in dims}
            mutable = pbt_mutable_keys(spec, dims)
            for key in mutable:
                if key not in keys:
                    issues.append(FieldIssue("sweep.pbt.mutate", f"{key!r} is not a key of the search space;"
                                                                 f"{did_you_mean(key, keys)}".rstrip(";"), key,
                                             f"space keys: {', '.join(sorted(keys))}"))
            if not mutable:
                issues.append(FieldIssue("sweep.pbt.mutate", "nothing to mutate: the space has no training.* key",
                                         None, "list the keys PBT may change in sweep.pbt.mutate"))
    if sw.time_budget_s is not None and sw.time_budget_s < 1:
        issues.append(FieldIssue("sweep.time_budget_s", f"must be >= 1 second, got {sw.time_budget_s}",
                                 sw.time_budget_s))
    if spec.promote is not None and spec.promote.metric is not None and workload is not None \
            and spec.promote.metric not in workload.metrics:
        issues.append(FieldIssue("promote.metric", f"workload {workload.name!r} does not report "
                                                   f"{spec.promote.metric!r};"
                                                   f"{did_you_mean(spec.promote.metric, workload.metrics)}".rstrip(";"),
                                 spec.promote.metric, f"{workload.name} reports: {', '.join(workload.metrics)}"))
    return issues
