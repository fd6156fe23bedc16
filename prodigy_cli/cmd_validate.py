"""``prodigy validate <workflow>`` (spec 08 §2.14, output of spec 01 §8)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TextIO

from prodigy_core.problems import summary_line
from prodigy_effects.workflow_io import load_workflow_file


def cmd_validate(
    path: str,
    *,
    strict: bool,
    as_json: bool,
    profile: str | None,
    environ: Mapping[str, str],
    out: TextIO,
    err: TextIO,
) -> int:
    """Validate ``path``; exit 0 valid, 1 errors (or warnings with ``strict``), 2 unreadable."""
    active_profile = profile or environ.get("PRODIGY_PROFILE") or None
    outcome = load_workflow_file(
        Path(path), display_path=path, environ=environ, profile=active_profile, strict=strict
    )
    errors = [p for p in outcome.problems if p.is_error]
    warnings = [p for p in outcome.problems if not p.is_error]
    valid = not errors and outcome.workflow is not None
    workflow = outcome.workflow
    exit_code = 0 if valid else (outcome.exit_code_if_unreadable or 1)
    if as_json:
        document = {
            "file": path,
            "valid": valid,
            "mode": workflow.mode if workflow is not None else None,
            "errors": [p.to_json() for p in errors],
            "warnings": [p.to_json() for p in warnings],
        }
        if workflow is not None:
            document["name"] = workflow.name
            document["description"] = workflow.description
        out.write(json.dumps(document, ensure_ascii=False) + "\n")
        return exit_code
    for problem in outcome.problems:
        err.write(problem.render() + "\n")
    out.write(summary_line(outcome.problems, path) + "\n")
    if workflow is not None and valid:
        out.write(f"  name: {workflow.name}\n")
        out.write(f"  mode: {workflow.mode}\n")
        if workflow.description:
            out.write(f"  description: {workflow.description}\n")
    return exit_code
