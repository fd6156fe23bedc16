"""``prodigy validate <workflow>`` (spec 08 §2.14, output of spec 01 §8)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import TextIO

from prodigy_core.envresolve import env_file_problems, position
from prodigy_core.masking import known_secrets
from prodigy_core.model import Workflow
from prodigy_core.problems import Problem, sorted_problems, summary_line
from prodigy_core.support import runtime_gaps
from prodigy_effects.masker import Masker
from prodigy_effects.workflow_io import LoadOutcome, load_workflow_file


def _git_top(directory: Path) -> Path | None:
    try:
        found = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=directory,
                               capture_output=True, text=True, check=False)
    except OSError:
        return None
    top = found.stdout.strip()
    return Path(top) if found.returncode == 0 and top else None


def repository_root(path: str, cwd: str | None) -> Path:
    """Where ``env_files`` are looked for (spec 11 §4.1): the top of the git checkout
    the command runs in, else the one holding the workflow file, else its directory."""
    folder = Path(path).resolve().parent
    for candidate in (Path(cwd) if cwd else None, folder):
        if candidate is not None and candidate.is_dir():
            top = _git_top(candidate)
            if top is not None:
                return top
    return folder


def _env_file_warnings(workflow: Workflow, outcome: LoadOutcome, path: str,
                       cwd: str | None) -> tuple[Problem, ...]:
    """W1005 for each ``env_files`` entry missing from the repository root (spec 01 §7)."""
    if not workflow.env_files:
        return ()
    root = repository_root(path, cwd)
    contents: dict[str, str | None] = {}
    for entry in workflow.env_files:
        try:
            contents[entry.path] = "" if (root / entry.path).is_file() else None
        except (OSError, ValueError):
            contents[entry.path] = None
    _, warnings = env_file_problems(workflow, contents, file=path,
                                    positions=outcome.positions, validating=True)
    return warnings


def cmd_validate(
    path: str,
    *,
    strict: bool,
    as_json: bool,
    profile: str | None,
    environ: Mapping[str, str],
    out: TextIO,
    err: TextIO,
    cwd: str | None = None,
) -> int:
    """Validate ``path``; exit 0 valid, 1 errors (or warnings with ``strict``), 2 unreadable.

    ``cwd`` is where the command runs: ``env_files`` are looked for at the top of its
    git checkout.  What is printed is masked like every output (spec 11 §9.2).
    """
    active_profile = profile or environ.get("PRODIGY_PROFILE") or None
    outcome = load_workflow_file(
        Path(path), display_path=path, environ=environ, profile=active_profile, strict=strict
    )
    problems = outcome.problems
    workflow = outcome.workflow
    mask = Masker()
    if workflow is not None:
        mask = Masker(known_secrets(workflow, environ))
        extra = _env_file_warnings(workflow, outcome, path, cwd)
        if strict:
            extra = tuple(p.as_error() for p in extra)
        problems = sorted_problems((*problems, *extra))
    errors = [p for p in problems if p.is_error]
    warnings = [p for p in problems if not p.is_error]
    valid = not errors and workflow is not None
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
        out.write(mask(json.dumps(document, ensure_ascii=False)) + "\n")
        return exit_code
    for problem in problems:
        err.write(mask(problem.render()) + "\n")
    out.write(summary_line(problems, path) + "\n")
    if workflow is not None and valid:
        # valid, but `prodigy run` of this version refuses it: say so now (spec principle 1)
        for gap in runtime_gaps(workflow, file=path):
            line, column = position(outcome.positions, gap.path)
            where = f"{path}:{line}:{column}" if line else path
            err.write(mask(f"note: `prodigy run` refuses this (E1016): {gap.message}\n"
                           f"  --> {where}  at {gap.path}") + "\n")
    if workflow is not None and valid:
        out.write(mask(f"  name: {workflow.name}") + "\n")
        out.write(f"  mode: {workflow.mode}\n")
        if workflow.description:
            out.write(mask(f"  description: {workflow.description}") + "\n")
        for profile in workflow.profiles:  # spec 11 §5.1: descriptions are shown here
            about = f" — {profile.description}" if profile.description else ""
            out.write(mask(f"  profile {profile.name}{about}") + "\n")
    return exit_code
