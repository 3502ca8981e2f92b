"""Bounded path and query parameters, shared by every route.

Every parameter has a type, a length and, for names, a pattern: a value outside them is a
422 that names the parameter, before any route code (or SQL, or outbound URL) sees it.
"""
from __future__ import annotations

from typing import Annotated, Optional

from fastapi import Path, Query

__all__ = ["NAME_RE", "JOB_ID_RE", "MODEL_RE", "VERSION_RE", "ALIAS_RE", "PROMOTION_RE", "MAX_OFFSET",
           "MAX_LIMIT", "Name", "JobId", "ModelName", "PromotionId", "OptName", "OptCluster", "Limit",
           "Offset", "LogOffset", "BODY_LIMIT", "SUBMIT_BODY_LIMIT", "PREDICT_BODY_LIMIT"]

# lower-case letters, digits and '-', at most 63 (specs' names, clusters, endpoints, projects)
NAME_RE = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
# a job or sweep id: `<name>-<suffix>`, at most 64 (store.jobs.new_job_id)
JOB_ID_RE = r"^[a-z0-9][a-z0-9-]{0,63}$"
# MLflow registered model names: letters, digits, '.', '_', '-'
MODEL_RE = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
VERSION_RE = r"^[1-9][0-9]{0,8}$"
ALIAS_RE = r"^[A-Za-z][A-Za-z0-9_-]{0,63}$"
PROMOTION_RE = r"^[0-9a-f]{1,32}$"

MAX_LIMIT = 1000
# far past any real table, far below SQLite's and PostgreSQL's 64-bit integers
MAX_OFFSET = 1_000_000_000
MAX_LOG_OFFSET = 2**40

# request bodies: 1 MiB for ordinary JSON; submissions carry a zipped working_dir (<= 100 MiB,
# base64 is 4/3 of that); predictions carry images
BODY_LIMIT = 1024 * 1024
SUBMIT_BODY_LIMIT = 136 * 1024 * 1024
PREDICT_BODY_LIMIT = 32 * 1024 * 1024

Name = Annotated[str, Path(min_length=1, max_length=63, pattern=NAME_RE,
                           description="Lower-case letters, digits and '-', at most 63.")]
JobId = Annotated[str, Path(min_length=1, max_length=64, pattern=JOB_ID_RE,
                            description="A job or sweep id, as `submit` returned it.")]
ModelName = Annotated[str, Path(min_length=1, max_length=128, pattern=MODEL_RE,
                                description="A registered model name.")]
PromotionId = Annotated[str, Path(min_length=1, max_length=32, pattern=PROMOTION_RE,
                                  description="A promotion id, as `promote` returned it.")]
OptName = Annotated[Optional[str], Query(max_length=63, pattern=NAME_RE)]
OptCluster = Annotated[Optional[str], Query(max_length=63, pattern=NAME_RE,
                                            description="A registered cluster; default 'local'.")]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description=f"At most {MAX_LIMIT}.")]
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description=f"Rows to skip, at most {MAX_OFFSET}.")]
LogOffset = Annotated[int, Query(ge=0, le=MAX_LOG_OFFSET, description="Characters of the log to skip.")]
