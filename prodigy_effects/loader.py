"""Reading a workflow file's text into plain data with source positions (spec 01 §1).

Theory of operation
-------------------
YAML is *composed* with PyYAML (which gives a node tree with marks) and then
*constructed* by our own walker, so that the YAML 1.2 core schema applies: only
``true``/``false`` are booleans, ``0o17`` is octal and ``017`` is 17, ``null``/``~``/empty
are null.  While walking, the ``$.path`` of every value and key is recorded with its
1-based (line, column).  Duplicate keys, several documents, unsupported tags, complex
keys and recursive aliases are E1001.  JSON files are parsed with :mod:`json` (the
truth) and composed as YAML only to find positions.  Nothing here raises: every failure
becomes a ``Problem``.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from prodigy_core.parse import paths
from prodigy_core.problems import Problem

Position = tuple[int, int]
ScalarInfo = tuple[str, int, int]

_PLAIN_TAG = "tag:prodigy,plain"
_STR_TAG = "tag:yaml.org,2002:str"
_MAX_NODES = 1_000_000
_INT = re.compile(r"[-+]?[0-9]+")
_OCT = re.compile(r"0o[0-7]+")
_HEX = re.compile(r"0x[0-9a-fA-F]+")
_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")
_INF = re.compile(r"[-+]?\.(inf|Inf|INF)")
_NAN = re.compile(r"\.(nan|NaN|NAN)")
_NULL = frozenset({"", "~", "null", "Null", "NULL"})


@dataclass(frozen=True, eq=False)
class LoadedDocument:
    """Plain data plus where every value (``positions``) and key (``key_positions``) was."""

    data: object
    positions: dict[str, Position] = field(default_factory=dict)
    key_positions: dict[str, Position] = field(default_factory=dict)
    scalar_info: dict[str, ScalarInfo] = field(default_factory=dict)


class _Loader(yaml.SafeLoader):
    """Composes only; plain scalars get a private tag so we can apply YAML 1.2 rules."""

    def resolve(self, kind: type, value: object, implicit: tuple[bool, bool]) -> str:  # type: ignore[override]
        if kind is ScalarNode and implicit[0]:
            return _PLAIN_TAG
        return super().resolve(kind, value, implicit)  # type: ignore[no-any-return]


_Loader.yaml_implicit_resolvers = {}


class _LoadError(Exception):
    def __init__(
        self, message: str, node: Node | None = None, position: Position | None = None, path: str = "$"
    ) -> None:
        super().__init__(message)
        self.message = message
        self.path = path
        self.position = position or (_mark(node) if node is not None else (1, 1))


def _mark(node: Node) -> Position:
    return node.start_mark.line + 1, node.start_mark.column + 1


def load_document(text: str, filename: str) -> LoadedDocument | list[Problem]:
    """Parse ``text`` (the content of ``filename``) into data and positions, or problems."""
    try:
        if text.startswith("\ufeff"):
            text = text[1:]
        if filename.lower().endswith(".json"):
            return _load_json(text, filename)
        return _load_yaml(text, filename)
    except Exception as exc:  # the loader must never raise (spec 01 §1, E1001)
        return [_problem(filename, "E1001", f"could not read the workflow file: {exc}", (1, 1))]


def _problem(
    file: str,
    code: str,
    message: str,
    position: Position,
    help: str | None = None,
    path: str = "$",
) -> Problem:
    line, column = position
    return Problem(
        severity="error",
        code=code,
        message=message,
        file=file,
        line=line,
        column=column,
        path=path,
        help=help,
    )


def _empty(file: str) -> list[Problem]:
    return [_problem(file, "E1002", "workflow file is empty", (1, 1))]


def _load_yaml(text: str, file: str) -> LoadedDocument | list[Problem]:
    try:
        documents = list(yaml.compose_all(text, Loader=_Loader))
    except yaml.MarkedYAMLError as exc:
        return [_yaml_error(exc, file)]
    except yaml.YAMLError as exc:
        return [_problem(file, "E1001", f"YAML error: {exc}", _reader_position(exc, text))]
    except RecursionError:
        return [_problem(file, "E1001", "YAML document is nested too deeply", (1, 1))]
    if not documents:
        return _empty(file)
    if len(documents) > 1:
        second = documents[1]
        return [
            _problem(
                file,
                "E1001",
                f"a workflow file must contain exactly one YAML document; found {len(documents)}",
                _mark(second),
                help="remove the extra `---` document separators",
            )
        ]
    builder = _Builder(text)
    try:
        data = builder.build(documents[0], "$")
    except _LoadError as exc:
        return [_problem(file, "E1001", exc.message, exc.position, path=exc.path)]
    except RecursionError:
        return [_problem(file, "E1001", "YAML document is nested too deeply", (1, 1))]
    if data is None:
        return _empty(file)
    return LoadedDocument(
        data=data,
        positions=builder.positions,
        key_positions=builder.key_positions,
        scalar_info=builder.scalar_info,
    )


def _yaml_error(exc: yaml.MarkedYAMLError, file: str) -> Problem:
    mark = exc.problem_mark or exc.context_mark
    position = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
    message = (exc.problem or "invalid YAML").strip()
    if exc.context:
        context = exc.context.strip()
        if exc.context_mark is not None and exc.context_mark is not mark:
            cm = exc.context_mark
            context += f" at line {cm.line + 1}, column {cm.column + 1}"
        message = f"{message} ({context})"
    help = None
    if "mapping values are not allowed" in message:
        help = "a plain value cannot contain ': '; quote the whole value"
    elif "could not find expected ':'" in message:
        help = "check the indentation of the lines above (block scalar content must be indented)"
    return _problem(file, "E1001", f"YAML syntax error: {message}", position, help)


def _reader_position(exc: yaml.YAMLError, text: str) -> Position:
    offset = getattr(exc, "position", None)
    if not isinstance(offset, int):
        return (1, 1)
    line = text.count("\n", 0, offset) + 1
    return line, offset - (text.rfind("\n", 0, offset) + 1) + 1


class _Builder:
    """Walks a composed node tree into plain data, recording positions."""

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()
        self.positions: dict[str, Position] = {}
        self.key_positions: dict[str, Position] = {}
        self.scalar_info: dict[str, ScalarInfo] = {}
        self._active: set[int] = set()
        self._count = 0

    def build(self, node: Node, path: str) -> object:
        self._count += 1
        if self._count > _MAX_NODES:
            raise _LoadError("document is too large (alias expansion)", node)
        self.positions.setdefault(path, _mark(node))
        if isinstance(node, ScalarNode):
            self._record_scalar(node, path)
            return _scalar(node)
        if id(node) in self._active:
            raise _LoadError("recursive alias: a node contains itself", node)
        self._active.add(id(node))
        try:
            if isinstance(node, SequenceNode):
                self._check_tag(node, "tag:yaml.org,2002:seq")
                return [self.build(child, paths.index(path, i)) for i, child in enumerate(node.value)]
            if isinstance(node, MappingNode):
                self._check_tag(node, "tag:yaml.org,2002:map")
                return self._mapping(node, path)
        finally:
            self._active.discard(id(node))
        raise _LoadError("unsupported YAML node", node)

    @staticmethod
    def _check_tag(node: Node, expected: str) -> None:
        if node.tag not in (expected, "!"):
            raise _LoadError(f"unsupported YAML tag {node.tag!r}", node)

    def _record_scalar(self, node: ScalarNode, path: str) -> None:
        line, column = _mark(node)
        if node.style in ("|", ">"):
            first = node.start_mark.line + 1  # 0-based index of the first content line
            indent = 1
            for candidate in self.lines[first : first + 200]:
                if candidate.strip():
                    indent = len(candidate) - len(candidate.lstrip(" ")) + 1
                    break
            self.scalar_info[path] = ("block", first + 1, indent)
        elif node.style in ("'", '"'):
            self.scalar_info[path] = ("quoted", line, column + 1)
        else:
            self.scalar_info[path] = ("plain", line, column)

    def _mapping(self, node: MappingNode, path: str) -> dict[object, object]:
        explicit: list[tuple[Node, Node]] = []
        merged: list[tuple[Node, Node]] = []
        for key_node, value_node in node.value:
            if (isinstance(key_node, ScalarNode) and key_node.tag == _PLAIN_TAG and key_node.value == "<<") or (
                key_node.tag == "tag:yaml.org,2002:merge"
            ):
                merged.extend(self._merge_sources(value_node))
            else:
                explicit.append((key_node, value_node))
        result: dict[object, object] = {}
        seen: dict[object, Node] = {}
        for key_node, _ in explicit:
            key = self._key(key_node)
            if key in seen:
                first = _mark(seen[key])
                raise _LoadError(
                    f"duplicate key {key!r} (first at line {first[0]}, column {first[1]})",
                    key_node,
                    path=paths.child(path, key),
                )
            seen[key] = key_node
        explicit_keys = set(seen)
        for key_node, value_node in merged:
            key = self._key(key_node)
            if key in explicit_keys or key in result:
                continue
            child = paths.child(path, key)
            self.key_positions.setdefault(child, _mark(key_node))
            result[key] = self.build(value_node, child)
        for key_node, value_node in explicit:
            key = self._key(key_node)
            child = paths.child(path, key)
            self.key_positions[child] = _mark(key_node)
            self.positions[child] = _mark(value_node)
            result[key] = self.build(value_node, child)
        return result

    def _merge_sources(self, node: Node) -> list[tuple[Node, Node]]:
        sources = node.value if isinstance(node, SequenceNode) else [node]
        pairs: list[tuple[Node, Node]] = []
        for source in sources:
            if not isinstance(source, MappingNode):
                raise _LoadError("the merge key `<<` needs a mapping or a list of mappings", source)
            if id(source) in self._active:
                raise _LoadError("recursive alias: a node contains itself", source)
            for key_node, value_node in source.value:
                if isinstance(key_node, ScalarNode) and key_node.value == "<<" and key_node.tag == _PLAIN_TAG:
                    self._active.add(id(source))
                    try:
                        pairs.extend(self._merge_sources(value_node))
                    finally:
                        self._active.discard(id(source))
                else:
                    pairs.append((key_node, value_node))
        return pairs

    def _key(self, node: Node) -> object:
        if not isinstance(node, ScalarNode):
            raise _LoadError("complex mapping keys (lists or mappings as keys) are not supported", node)
        key = _scalar(node)
        if isinstance(key, float) and math.isnan(key):
            raise _LoadError("NaN is not a valid mapping key", node)
        return key


def _scalar(node: ScalarNode) -> object:
    value = str(node.value)
    tag = node.tag
    if tag == _PLAIN_TAG:
        return _resolve_plain(value)
    if tag in (_STR_TAG, "!"):
        return value
    if tag == "tag:yaml.org,2002:null":
        return None
    if tag == "tag:yaml.org,2002:bool" and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if tag == "tag:yaml.org,2002:int":
        number = _resolve_plain(value)
        if isinstance(number, int) and not isinstance(number, bool):
            return number
    if tag == "tag:yaml.org,2002:float":
        number = _resolve_plain(value)
        if isinstance(number, int | float) and not isinstance(number, bool):
            return float(number)
    if tag in ("tag:yaml.org,2002:null", "tag:yaml.org,2002:bool", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"):
        raise _LoadError(f"value {value!r} does not match its tag {tag!r}", node)
    raise _LoadError(f"unsupported YAML tag {tag!r}", node)


def _resolve_plain(value: str) -> object:
    """YAML 1.2 core schema resolution of a plain scalar."""
    if value in _NULL:
        return None
    lowered = value.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if _INT.fullmatch(value):
        return int(value)
    if _OCT.fullmatch(value):
        return int(value[2:], 8)
    if _HEX.fullmatch(value):
        return int(value[2:], 16)
    if _FLOAT.fullmatch(value):
        return float(value)
    if _INF.fullmatch(value):
        return -math.inf if value.startswith("-") else math.inf
    if _NAN.fullmatch(value):
        return math.nan
    return value


def _load_json(text: str, file: str) -> LoadedDocument | list[Problem]:
    if not text.strip():
        return _empty(file)
    duplicates: list[str] = []

    def pairs_hook(pairs: list[tuple[str, object]]) -> dict[str, object]:
        out: dict[str, object] = {}
        for key, value in pairs:
            if key in out:
                duplicates.append(key)
            out[key] = value
        return out

    try:
        data = json.loads(text, object_pairs_hook=pairs_hook)
    except json.JSONDecodeError as exc:
        return [_problem(file, "E1001", f"JSON syntax error: {exc.msg}", (exc.lineno, exc.colno))]
    except RecursionError:
        return [_problem(file, "E1001", "JSON document is nested too deeply", (1, 1))]
    if data is None:
        return _empty(file)
    # Positions: JSON is (nearly) YAML; tabs only occur between tokens in valid JSON.
    located = _load_yaml(text.replace("\t", " "), file)
    if isinstance(located, list):
        dup = [p for p in located if p.message.startswith("duplicate key")]
        if dup:
            return dup
        if duplicates:
            return [_problem(file, "E1001", f"duplicate key {duplicates[0]!r}", (1, 1))]
        return LoadedDocument(data=data)
    return LoadedDocument(
        data=data,
        positions=located.positions,
        key_positions=located.key_positions,
        scalar_info=located.scalar_info,
    )
