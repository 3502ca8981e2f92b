"""YAML for specs: PyYAML's safe loader, closed further.

- Aliases (`*name`) are refused. They are how a small document expands into gigabytes
  ("billion laughs"); a spec has no use for them. Merge keys (`<<`) go with them.
- A key given twice is an error naming it: PyYAML silently keeps the last one, so a
  second `training:` block would replace the first.
- Nesting deeper than limits.MAX_DEPTH stops the read at once (PyYAML's composer
  recurses, so deep nesting would otherwise end in a RecursionError).
- Dates stay strings (`description: 2024-01-01`); a spec holds only JSON types.
- The text is capped at limits.MAX_SPEC_BYTES before it is read at all.

Pure Python on purpose: libyaml's composer recurses in C, where no recursion limit applies.
"""
from __future__ import annotations

import re
from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError
from yaml.events import AliasEvent, MappingEndEvent
from yaml.nodes import MappingNode, ScalarNode

from trainyard.errors import SpecError, SpecTooLargeError
from trainyard.specs import limits

__all__ = ["load_document", "decode_spec_bytes"]

_MERGE_TAG = "tag:yaml.org,2002:merge"


class _Refused(yaml.YAMLError):
    def __init__(self, problem: str, mark, *, field: str | None = None, fix: str | None = None):
        super().__init__(problem)
        self.problem, self.problem_mark, self.field, self.fix = problem, mark, field, fix


class _TooDeep(Exception):
    def __init__(self, path: str):
        self.path = path


class SpecLoader(yaml.SafeLoader):
    """SafeLoader without aliases, duplicate keys, deep nesting or timestamps."""

    def __init__(self, stream):
        super().__init__(stream)
        self._path: list[str] = []

    def compose_node(self, parent, index):
        if self.check_event(AliasEvent):
            event = self.peek_event()
            raise _Refused(f"aliases (*{event.anchor}) are not allowed in a spec", event.start_mark,
                           field=self._where(), fix="write the value out instead of referring to an anchor")
        if len(self._path) >= limits.MAX_DEPTH:
            raise _TooDeep(self._where())
        return super().compose_node(parent, index)

    def compose_sequence_node(self, anchor):
        # index the path so that errors say where they are
        self._path.append("[]")
        try:
            return super().compose_sequence_node(anchor)
        finally:
            self._path.pop()

    def compose_mapping_node(self, anchor):
        start_event = self.get_event()
        tag = start_event.tag
        if tag is None or tag == "!":
            tag = self.resolve(MappingNode, None, start_event.implicit)
        node = MappingNode(tag, [], start_event.start_mark, None, flow_style=start_event.flow_style)
        if anchor is not None:
            self.anchors[anchor] = node
        seen: dict[tuple[str, str], Any] = {}
        while not self.check_event(MappingEndEvent):
            key = self.compose_node(node, None)
            if isinstance(key, ScalarNode):
                if key.tag == _MERGE_TAG:
                    raise _Refused("merge keys (<<) are not allowed in a spec", key.start_mark,
                                   field=self._where(), fix="write the keys out")
                ident = (key.tag, key.value)
                if ident in seen:
                    first = seen[ident]
                    raise _Refused(f"duplicate key {key.value!r} (first at line {first.line + 1})",
                                   key.start_mark, field=self._where(key.value),
                                   fix=f"give {key.value!r} once; merge the two blocks")
                seen[ident] = key.start_mark
            self._path.append(str(key.value) if isinstance(key, ScalarNode) else "?")
            try:
                value = self.compose_node(node, key)
            finally:
                self._path.pop()
            node.value.append((key, value))
        end_event = self.get_event()
        node.end_mark = end_event.end_mark
        return node

    def _where(self, last: str | None = None) -> str:
        parts = [p for p in self._path if p != "[]"] + ([last] if last is not None else [])
        return ".".join(parts) or "spec"


# YAML 1.1 timestamps would turn `2024-01-01` into a date, which JSON cannot hold. Its
# floats need a dot, so `1e-7` would stay a string; read floats as YAML 1.2 and JSON do.
_FLOAT_TAG = "tag:yaml.org,2002:float"
_FLOAT_RE = re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?
    |[0-9][0-9_]*[eE][-+]?[0-9]+)
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X)
SpecLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers
            if tag not in ("tag:yaml.org,2002:timestamp", _FLOAT_TAG)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
for _first in "-+0123456789.":
    SpecLoader.yaml_implicit_resolvers.setdefault(_first, []).insert(0, (_FLOAT_TAG, _FLOAT_RE))


def decode_spec_bytes(data: bytes, *, source: str = "spec") -> str:
    """UTF-8 text of a spec file, or a SpecError that says which byte is wrong."""
    if len(data) > limits.MAX_SPEC_BYTES:
        raise SpecTooLargeError(f"the spec is {len(data)} bytes, more than {limits.MAX_SPEC_BYTES}",
                                source=source, limit=limits.MAX_SPEC_BYTES, unit="bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(f"is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})",
                        source=source, field="spec", fix="save the file as UTF-8") from None
    return text[1:] if text.startswith("\ufeff") else text


def load_document(text: str, *, source: str = "spec") -> Any:
    """Parse one YAML document under the rules above. Raises SpecError (or
    SpecTooLargeError) with the line and column."""
    if len(text) > limits.MAX_SPEC_BYTES or len(text.encode("utf-8", "surrogatepass")) > limits.MAX_SPEC_BYTES:
        raise SpecTooLargeError(f"the spec is more than {limits.MAX_SPEC_BYTES} bytes", source=source,
                                limit=limits.MAX_SPEC_BYTES, unit="bytes")
    loader = None
    try:
        loader = SpecLoader(text)  # the reader checks the characters here already
        return loader.get_single_data()
    except _TooDeep as exc:
        raise SpecTooLargeError(f"the spec is nested more than {limits.MAX_DEPTH} levels deep",
                                source=source, field=exc.path.split(".")[0], limit=limits.MAX_DEPTH,
                                unit="levels") from None
    except _Refused as exc:
        raise SpecError(f"{exc.problem}{_at(exc.problem_mark)}", source=source, field=exc.field or "spec",
                        fix=exc.fix) from None
    except (ComposerError, ConstructorError) as exc:
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        if "expected a single document" in str(exc):
            problem = "a spec is one YAML document; found a second one (---)"
        raise SpecError(f"malformed YAML{_at(getattr(exc, 'problem_mark', None))}: {problem}", source=source,
                        field="spec", fix="check indentation and quoting") from None
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SpecError(f"malformed YAML{_at(getattr(exc, 'problem_mark', None))}: {problem}", source=source,
                        field="spec", fix="check indentation and quoting") from None
    except ValueError:  # Python refuses integers of more than 4300 digits
        raise SpecError("a number in the spec is too long (more than 4300 digits)", source=source,
                        field="spec", fix="use a smaller number") from None
    finally:
        if loader is not None:
            loader.dispose()


def _at(mark) -> str:
    return f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
