"""Serialisation of effects and events: one cattrs converter, stable tags, versioned.

Journals, replay fixtures and golden files store effects and events as JSON objects
``{"type": <tag>, ...fields}``.  Tags come from ``EFFECT_TAGS`` / ``EVENT_TAGS`` in the
core, never from class names, so renaming a class cannot orphan old files.  A document
holding such records carries ``{"format": "prodigy.trace", "format_version": 1}``;
older versions pass through ``TRACE_MIGRATIONS`` (dict to dict) before structuring.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from functools import cache
from typing import Any

import cattrs
from cattrs.strategies import configure_tagged_union

from prodigy_core.effects import EFFECT_TAGS, Effect
from prodigy_core.events import EVENT_TAGS, Event
from prodigy_core.json_values import JSON

TRACE_FORMAT = "prodigy.trace"
TRACE_FORMAT_VERSION = 1
TRACE_MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {}


class CodecError(Exception):
    """A stored trace cannot be read (unknown tag, wrong shape, newer format)."""


def _is_json_type(t: Any) -> bool:
    """The JSON alias itself (also as re-created from string annotations)."""
    args = getattr(t, "__args__", ())
    return bool(t == JSON or (isinstance(t, types.UnionType) and str in args and bool in args
                              and type(None) in args))


@cache
def make_converter() -> cattrs.Converter:
    converter = cattrs.Converter()
    # JSON payloads (journal fields, checkpoints, outcomes) are plain data already
    converter.register_structure_hook_func(_is_json_type, lambda value, _t: value)
    # tuples of pairs (env, fields) round-trip as lists of lists
    configure_tagged_union(Effect, converter, tag_generator=lambda cls: EFFECT_TAGS[cls],
                           tag_name="type")
    configure_tagged_union(Event, converter, tag_generator=lambda cls: EVENT_TAGS[cls],
                           tag_name="type")
    return converter


def dump_effect(effect: Effect) -> dict[str, Any]:
    out: dict[str, Any] = make_converter().unstructure(effect, Effect)
    return out


def load_effect(data: dict[str, Any]) -> Effect:
    try:
        return make_converter().structure(data, Effect)  # type: ignore[arg-type]
    except (cattrs.BaseValidationError, KeyError, ValueError, TypeError) as exc:
        raise CodecError(f"not a recorded effect: {data.get('type')!r}: {exc}") from exc


def dump_event(event: Event) -> dict[str, Any]:
    out: dict[str, Any] = make_converter().unstructure(event, Event)
    return out


def load_event(data: dict[str, Any]) -> Event:
    try:
        return make_converter().structure(data, Event)  # type: ignore[arg-type]
    except (cattrs.BaseValidationError, KeyError, ValueError, TypeError) as exc:
        raise CodecError(f"not a recorded event: {data.get('type')!r}: {exc}") from exc


def dump_trace(events: list[Event]) -> dict[str, Any]:
    return {"format": TRACE_FORMAT, "format_version": TRACE_FORMAT_VERSION,
            "events": [dump_event(e) for e in events]}


def load_trace(doc: dict[str, Any]) -> list[Event]:
    if doc.get("format") != TRACE_FORMAT:
        raise CodecError(f"not a Prodigy trace (format {doc.get('format')!r})")
    version = int(doc.get("format_version", 0))
    if version > TRACE_FORMAT_VERSION:
        raise CodecError(f"trace format version {version} is newer than this Prodigy "
                         f"understands ({TRACE_FORMAT_VERSION}); upgrade Prodigy")
    while version < TRACE_FORMAT_VERSION:
        doc = TRACE_MIGRATIONS[version](doc)
        version += 1
    return [load_event(e) for e in doc.get("events", [])]
