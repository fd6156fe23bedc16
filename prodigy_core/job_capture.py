"""``setup.capture_outputs``: variables taken from setup step output (spec 05 §4.3).

Theory of operation
-------------------
Right after setup step *k* completes (not failed), every ``capture_outputs`` entry with
``command_index`` *k* is extracted from that step's ``Outcome``, in a fixed pipeline:

1. the text of ``source``: ``stdout``, ``stderr`` or ``both`` (stdout, a newline,
   stderr), one trailing newline removed;
2. ``pattern``: the first match (re.search) — its group 1 if the pattern has a group,
   else the whole match;
3. ``max_size``: the text is cut to that many bytes (UTF-8, never inside a character),
   with warning W6005;
4. ``json_path``: the text is parsed as JSON and the path applied — one match is the
   value, several an array of them; without ``json_path``, ``multiline`` shapes the text
   (``preserve``, ``join`` with spaces, ``first_line``, ``last_line``, ``array`` of lines).

When a stage finds nothing (no match, not JSON, no ``json_path`` match, or a skipped
step, which has no output) the entry's ``default`` is the value; without a default the
extraction fails and so does setup (E6004).  Captured values are data (untrusted, escaped
in shell text, spec 03 §4.3); a default is the author's, so it is trusted.  The job stores
them with the setup variables, so agents, reduce, a resumed job and ``dlq retry`` see them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

import attrs
from pyrsistent import PMap

from prodigy_core.interpolate import Var
from prodigy_core.json_path import ItemsError, apply_json_path
from prodigy_core.json_values import JSON
from prodigy_core.model import CaptureOutputSpec
from prodigy_core.reprs import value_class
from prodigy_core.step_frames import Outcome


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class Captured:
    """What the entries of one setup step produced."""

    values: tuple[tuple[str, Var], ...] = ()
    warnings: tuple[str, ...] = ()
    error: str | None = None  # the first entry that failed without a default


@value_class
@attrs.frozen(repr=False, eq=False)
class Miss:
    """Extraction found nothing: the default is used, or setup fails (E6004)."""

    reason: str


def capture(entries: Sequence[tuple[str, CaptureOutputSpec]], step_index: int,
            outcome: Outcome) -> Captured:
    """The variables of the entries for setup step ``step_index``, which ended so."""
    values: list[tuple[str, Var]] = []
    warnings: list[str] = []
    for name, spec in entries:
        if spec.command_index != step_index:
            continue
        found = Miss(f"setup step {step_index} was skipped") \
            if outcome.status == "skipped" else extract(spec, outcome.output, outcome.stderr)
        if isinstance(found, Miss):
            if not spec.has_default:
                return Captured(values=tuple(values), warnings=tuple(warnings),
                                error=f"capture_outputs '{name}': {found.reason}")
            values.append((name, Var(value=thaw(spec.default), trusted=True)))
            continue
        value, cut = found
        if cut:
            warnings.append(f"capture_outputs '{name}' was cut to {spec.max_size} bytes")
        values.append((name, Var(value=value, trusted=False)))
    return Captured(values=tuple(values), warnings=tuple(warnings))


def bind(variables: PMap[str, Var], captured: Captured) -> PMap[str, Var]:
    bound: PMap[str, Var] = variables.update(dict(captured.values))
    return bound


def extract(spec: CaptureOutputSpec, stdout: str, stderr: str) -> tuple[JSON, bool] | Miss:
    """The value of one entry and whether ``max_size`` cut it."""
    text = _source(spec.source, stdout, stderr)
    if spec.pattern is not None:
        matched = _search(spec.pattern, text)
        if isinstance(matched, Miss):
            return matched
        text = matched
    text, cut = _cut(text, spec.max_size)
    if spec.json_path is None:
        return _shape(text, spec.multiline), cut
    value = _json_value(text, spec.json_path)
    return value if isinstance(value, Miss) else (value, cut)


def _chomp(text: str) -> str:
    return text[:-1] if text.endswith("\n") else text


def _source(source: str, stdout: str, stderr: str) -> str:
    if source == "stderr":
        return _chomp(stderr)
    if source == "both":
        return _chomp("\n".join(part for part in (_chomp(stdout), stderr) if part))
    return _chomp(stdout)


def _search(pattern: str, text: str) -> str | Miss:
    try:
        found = re.search(pattern, text)
    except re.error as exc:  # validation checked it; a pattern Python rejects anyway
        return Miss(f"invalid pattern '{pattern}': {exc}")
    if found is None:
        return Miss(f"pattern '{pattern}' did not match")
    if found.re.groups:
        return found.group(1) or ""
    return found.group(0)


def _cut(text: str, limit: int) -> tuple[str, bool]:
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text, False
    return data[:limit].decode("utf-8", errors="ignore"), True


def _json_value(text: str, path: str) -> JSON | Miss:
    try:
        document: JSON = json.loads(text)
    except (ValueError, RecursionError):
        return Miss("the output is not JSON")
    found = apply_json_path(document, path)
    if isinstance(found, ItemsError):
        return Miss(found.message)
    if not found:
        return Miss(f"json_path '{path}' matched nothing")
    return found[0] if len(found) == 1 else list(found)


def _shape(text: str, mode: str) -> JSON:
    lines = text.splitlines()
    if mode == "join":
        return " ".join(lines)
    if mode == "first_line":
        return lines[0] if lines else ""
    if mode == "last_line":
        return lines[-1] if lines else ""
    if mode == "array":
        return list(lines)
    return text


def thaw(value: object) -> JSON:
    """A default as the parser froze it (mappings as ``PMap``, lists as tuples) → JSON."""
    if isinstance(value, PMap):
        return {str(k): thaw(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [thaw(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)
