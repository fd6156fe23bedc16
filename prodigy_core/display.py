"""Display names of steps (spec 02 §1 "Display name")."""

from __future__ import annotations

from prodigy_core.model import Step

MAX_TEXT = 80


def display_name(step: Step) -> str:
    """``name`` if set, else ``<kind>: <first line of the command>`` cut to 80 characters."""
    if step.name:
        return step.name
    if step.kind == "write_file" and step.write_file is not None:
        text = step.write_file.path
    else:
        text = step.command
    lines = text.strip().splitlines()
    first = lines[0].strip() if lines else ""
    if len(first) > MAX_TEXT:
        first = first[: MAX_TEXT - 1] + "…"
    return f"{step.kind}: {first}"
