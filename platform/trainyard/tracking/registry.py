"""Registered models belong to a project: the registered model's `trainyard.project` tag.

MLflow's model names are global, so the first project to register a name owns it; another
project registering under that name is refused (a version of its model would otherwise land in
a model the first project serves from). A model registered before projects existed has no tag
and belongs to `default`. Serving reads the tag with `model_project`.
"""
from __future__ import annotations

from typing import Mapping

from trainyard.errors import ConflictError
from trainyard.tracking import PROJECT_TAG

__all__ = ["DEFAULT_PROJECT", "model_project", "claim_model"]

DEFAULT_PROJECT = "default"


def model_project(tags: Mapping[str, str] | None) -> str:
    """The project of a registered model, from its tags."""
    return (tags or {}).get(PROJECT_TAG) or DEFAULT_PROJECT


def claim_model(client, name: str, *, project: str) -> None:
    """Make sure registered model `name` exists and belongs to `project`, before a version is
    added to it. ConflictError when another project owns the name."""
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name, tags={PROJECT_TAG: project})
        return
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    owner_tags = client.get_registered_model(name).tags
    owner = model_project(owner_tags)
    if owner != project:
        raise ConflictError(f"registered model {name!r} belongs to project {owner!r}, not {project!r}",
                            field="tracking.model_name", value=name,
                            fix="give tracking.model_name a name of this project's own")
    if PROJECT_TAG not in (owner_tags or {}):
        client.set_registered_model_tag(name, PROJECT_TAG, project)  # registered before projects
