"""The bad-input corpus (tests/corpus/bad_specs): load each case as the bytes a user would send."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent / "bad_specs"


@dataclass
class Case:
    file: str
    kind: str  # job | sweep
    field: str
    data: bytes  # the spec file's bytes, expanded
    rest: list[str] = field(default_factory=lambda: ["yaml", "json"])
    match: str | None = None
    status: int | None = None
    server_only: bool = False
    json_field: str | None = None
    note: str | None = None

    @property
    def id(self) -> str:
        return self.file.removesuffix(".yaml")

    def text(self) -> str:
        return self.data.decode("utf-8")

    def json_body(self) -> str:
        """The POST body that sends the spec as a JSON mapping (NaN/Infinity as Python's json writes them)."""
        if self.data.lstrip().startswith(b"{"):
            return '{"spec": ' + self.text() + "}"  # JSON text already (JSON is YAML)
        mapping = yaml.safe_load(self.text())  # the plain reader: what a JSON client would have built
        return json.dumps({"spec": mapping}, allow_nan=True)


def _expand(data: bytes, expand: dict[str, list] | None, storage: str) -> bytes:
    data = data.replace(b"@STORAGE@", storage.encode())
    for token, pieces in (expand or {}).items():
        data = data.replace(token.encode(), b"".join(str(text).encode() * int(times) for text, times in pieces))
    return data


def load_cases(*, storage: str = "/srv/trainyard/storage") -> list[Case]:
    index = yaml.safe_load((HERE / "index.yaml").read_text())
    cases = []
    for entry in index:
        entry = dict(entry)
        data = _expand((HERE / entry.pop("file_bytes", entry["file"])).read_bytes(), entry.pop("expand", None),
                       storage)
        json_field = entry.pop("json_field", entry["field"])
        cases.append(Case(data=data, json_field=json_field, **entry))
    return cases


def names_field(text: str, field_name: str) -> bool:
    """Whether an error text names `field_name` (as the field, or inside the message)."""
    return field_name in text


def body_names_field(body: Any, field_name: str) -> bool:
    if not isinstance(body, dict):
        return False
    fields = [str(i.get("field") or "") for i in body.get("issues") or [] if isinstance(i, dict)]
    fields.append(str(body.get("field") or ""))
    return any(f == field_name or f.startswith(field_name + ".") or f.startswith(field_name + "[")
               for f in fields) or field_name in str(body.get("message", ""))


__all__ = ["Case", "load_cases", "names_field", "body_names_field"]
