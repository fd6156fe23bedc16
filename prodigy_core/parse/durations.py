"""Durations (spec 01 §4.1) and the numeric fields that accept a variable reference (§3.4)."""

from __future__ import annotations

import math
import re

from prodigy_core.parse.context import Ctx

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_GROUP = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)")
_BARE = re.compile(r"\s*\d+(?:\.\d+)?\s*")


def parse_duration(value: object) -> float | None:
    """Seconds for a duration value, or ``None`` when it is not a valid duration.

    Accepted: a non-negative number of seconds, a numeric string (``"30"``), or one or
    more ``<number><unit>`` groups (``"500ms"``, ``"1h 30m"``).
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        number = float(value)
        return number if number >= 0 and math.isfinite(number) else None
    if not isinstance(value, str):
        return None
    if _BARE.fullmatch(value):
        return float(value.strip())
    text = value.strip()
    if not text:
        return None
    total = 0.0
    pos = 0
    while pos < len(value):
        match = _GROUP.match(value, pos)
        if match is None:
            if value[pos:].strip() == "":
                break
            return None
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    return total


def secs_nanos(value: object) -> float | None:
    """The original tool's serde ``{secs, nanos}`` duration, or ``None``."""
    if not isinstance(value, dict) or not set(value) <= {"secs", "nanos"} or "secs" not in value:
        return None
    secs, nanos = value.get("secs"), value.get("nanos", 0)
    if isinstance(secs, bool) or isinstance(nanos, bool):
        return None
    if isinstance(secs, int) and isinstance(nanos, int) and secs >= 0 and nanos >= 0:
        return secs + nanos / 1e9
    return None


def want_duration(ctx: Ctx, value: object, path: str, *, reference: bool = False) -> float | None:
    """Check a duration field, reporting E1011 (or E2002 for a bad reference)."""
    if reference:
        ok, resolved = ctx.resolve_reference(value, path)
        if not ok:
            return None
        if resolved is not value:
            seconds = parse_duration(resolved)
            if seconds is None:
                ctx.error(
                    "E2002",
                    f"field '{_field(path)}' has value {resolved!r} from {value!r}, "
                    "which is not a valid duration",
                    path,
                )
            return seconds
    legacy = secs_nanos(value)
    if legacy is not None:
        ctx.warning(
            "W1002",
            "the {secs, nanos} duration form is deprecated",
            path,
            help=f"write {legacy:g} (seconds) or a duration string such as \"{legacy:g}s\"",
        )
        return legacy
    seconds = parse_duration(value)
    if seconds is None:
        ctx.error(
            "E1011",
            f"invalid duration {value!r}: expected seconds or a string such as "
            "\"500ms\", \"90s\", \"5m\", \"1h 30m\"",
            path,
        )
    return seconds


def want_count(
    ctx: Ctx, value: object, path: str, *, minimum: int, reference: bool = False
) -> int | None:
    """Check an integer field, optionally accepting one variable reference (spec 01 §3.4)."""
    if reference and isinstance(value, str):
        ok, resolved = ctx.resolve_reference(value, path)
        if not ok:
            return None
        if resolved is not value:
            number = _as_int(resolved)
            if number is None:
                ctx.error(
                    "E2002",
                    f"field '{_field(path)}' has value {resolved!r} from {value!r}, "
                    "which is not a valid integer",
                    path,
                )
                return None
            return ctx.check_min(number, path, minimum)
    return ctx.want_int(value, path, minimum=minimum)


def _as_int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"\s*[-+]?\d+\s*", value):
        return int(value)
    return None


def _field(path: str) -> str:
    return path[2:] if path.startswith("$.") else path
