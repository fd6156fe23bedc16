"""Helpers shared by the parse tests: load YAML text and validate it in one call."""

from __future__ import annotations

from prodigy_core.problems import Problem
from prodigy_effects.workflow_io import LoadOutcome, load_workflow_text


def load(
    text: str,
    *,
    file: str = "wf.yml",
    environ: dict[str, str] | None = None,
    profile: str | None = None,
    strict: bool = False,
) -> LoadOutcome:
    return load_workflow_text(
        text,
        display_path=file,
        stem=file.rsplit(".", 1)[0],
        environ=environ or {},
        profile=profile,
        strict=strict,
    )


def codes(outcome: LoadOutcome) -> list[str]:
    return [p.code for p in outcome.problems]


def only(outcome: LoadOutcome, code: str) -> Problem:
    found = [p for p in outcome.problems if p.code == code]
    assert len(found) == 1, outcome.problems
    return found[0]
