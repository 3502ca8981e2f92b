"""Where a job's checkpoints live: file:// or s3:// (through s3fs), as Ray Train storage.

Torch-free. A job's checkpoints go under <storage>/<project>/<job_id>: Ray Train's
RunConfig(name=job_id, storage_path=<storage>/<project>) puts them exactly there, and
a TorchTrainer with the same name finds them again (resubmission resumes).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

from trainyard.errors import SpecError
from trainyard.specs import NAME_RE

__all__ = ["StorageTarget", "resolve_storage", "default_storage", "s3_filesystem"]

_PROJECT_RE = re.compile(NAME_RE)


@dataclass
class StorageTarget:
    uri: str  # what users see: file:///x/project or s3://bucket/prefix/project
    path: str  # what Ray Train gets as storage_path (no scheme for s3)
    filesystem: Any = None  # pyarrow.fs.FileSystem for s3, None for local

    def job_uri(self, job_id: str) -> str:
        return f"{self.uri.rstrip('/')}/{job_id}"


def default_storage() -> str:
    from trainyard.config import home

    return os.environ.get("TRAINYARD_STORAGE") or f"file://{home() / 'storage'}"


def s3_filesystem(endpoint_url: str | None = None):
    """An s3fs filesystem from the environment (key/secret/endpoint)."""
    import s3fs

    endpoint_url = (endpoint_url or os.environ.get("TRAINYARD_S3_ENDPOINT_URL")
                    or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"))
    kwargs: dict[str, Any] = {}
    if os.environ.get("AWS_ACCESS_KEY_ID"):
        kwargs["key"] = os.environ["AWS_ACCESS_KEY_ID"]
        kwargs["secret"] = os.environ.get("AWS_SECRET_ACCESS_KEY")
    client_kwargs = {}
    if endpoint_url:
        client_kwargs["endpoint_url"] = endpoint_url
    region = os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION")
    if region:
        client_kwargs["region_name"] = region
    return s3fs.S3FileSystem(client_kwargs=client_kwargs, **kwargs)


def resolve_storage(storage: str | None, *, project: str = "default",
                    endpoint_url: str | None = None) -> StorageTarget:
    """Turn a storage URI into Ray Train's (storage_path, storage_filesystem), under the
    project's prefix <storage>/<project>."""
    if not isinstance(project, str) or not _PROJECT_RE.match(project):
        # it becomes a path segment: nothing that could climb out of the storage root
        raise SpecError(f"project name {str(project)[:80]!r} is not valid", field="project", value=str(project)[:80],
                        fix="lower-case letters, digits and '-', at most 63")
    storage = storage or default_storage()
    if storage.startswith("file://"):
        root = storage[len("file://"):]
        if not root.startswith("/"):
            raise SpecError(f"must be an absolute file:// path, got {storage!r}",
                            field="checkpoint.storage", value=storage, fix="write file:///abs/path")
        path = os.path.join(root, project)
        os.makedirs(path, exist_ok=True)
        return StorageTarget(uri=f"file://{path}", path=path, filesystem=None)
    if storage.startswith("s3://"):
        import pyarrow.fs

        bare = storage[len("s3://"):].strip("/")
        if not bare:
            raise SpecError("names no bucket", field="checkpoint.storage", value=storage,
                            fix="write s3://bucket/prefix")
        path = f"{bare}/{project}"
        fs = pyarrow.fs.PyFileSystem(pyarrow.fs.FSSpecHandler(s3_filesystem(endpoint_url)))
        return StorageTarget(uri=f"s3://{path}", path=path, filesystem=fs)
    raise SpecError(f"must start with file:// or s3://, got {storage!r}", field="checkpoint.storage",
                    value=storage, fix="use file:///path or s3://bucket/prefix")
