"""Reading a workflow file from disk: text → loader → parser (spec 01 §1, §7, §8).

Never raises for bad input: a missing, unreadable, non-UTF-8 or directory path becomes a
single E1001 problem with a hint and ``exit_code_if_unreadable`` set to 2.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from prodigy_core.model import Workflow
from prodigy_core.parse import parse_workflow
from prodigy_core.problems import Problem, sorted_problems
from prodigy_effects.loader import load_document


@dataclass(frozen=True)
class LoadOutcome:
    """The validated workflow (``None`` on any error), every problem sorted, and the text.

    ``positions`` maps the ``$.path`` of every value to its (line, column), so that
    problems found later (missing secrets or env files at start) can point at the field.
    """

    workflow: Workflow | None
    problems: tuple[Problem, ...]
    text: str | None
    exit_code_if_unreadable: int | None = None
    positions: Mapping[str, tuple[int, int]] = field(default_factory=dict)


def _unreadable(display_path: str, message: str, help: str) -> LoadOutcome:
    problem = Problem(
        severity="error", code="E1001", message=message, file=display_path, help=help
    )
    return LoadOutcome(workflow=None, problems=(problem,), text=None, exit_code_if_unreadable=2)


def read_workflow_text(path: Path, display_path: str) -> str | LoadOutcome:
    """The file's text, or an outcome describing why it cannot be read."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return _unreadable(
            display_path,
            f"workflow file not found: {display_path}",
            "check the path; relative paths are resolved against the current directory",
        )
    except IsADirectoryError:
        return _unreadable(
            display_path,
            f"{display_path} is a directory, not a workflow file",
            "give the path of a .yml, .yaml or .json file",
        )
    except PermissionError:
        return _unreadable(
            display_path, f"permission denied reading {display_path}", "check the file's permissions"
        )
    except OSError as exc:
        return _unreadable(
            display_path,
            f"cannot read {display_path}: {exc.strerror or exc}",
            "check that the path names a readable file",
        )
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        problem = Problem(
            severity="error",
            code="E1001",
            message=f"workflow file is not valid UTF-8 (byte 0x{raw[exc.start]:02x})",
            file=display_path,
            line=line,
            column=column,
            help="save the file as UTF-8",
        )
        return LoadOutcome(workflow=None, problems=(problem,), text=None, exit_code_if_unreadable=2)


def load_workflow_text(
    text: str,
    *,
    display_path: str,
    stem: str,
    environ: Mapping[str, str],
    params: Mapping[str, str] | None = None,
    profile: str | None = None,
    strict: bool = False,
    filename: str | None = None,
) -> LoadOutcome:
    """Load and validate ``text`` as if read from ``display_path``."""
    loaded = load_document(text, filename or display_path)
    if isinstance(loaded, list):
        problems = tuple(_with_file(p, display_path) for p in loaded)
        return LoadOutcome(workflow=None, problems=sorted_problems(problems), text=text)
    result = parse_workflow(
        loaded.data,
        file=display_path,
        positions=loaded.positions,
        key_positions=loaded.key_positions,
        scalar_info=loaded.scalar_info,
        stem=stem,
        environ=environ,
        params=params or {},
        profile=profile,
    )
    problems = result.problems
    workflow = result.workflow
    if strict:
        problems = tuple(p.as_error() for p in problems)
        if problems:
            workflow = None
    return LoadOutcome(workflow=workflow, problems=sorted_problems(problems), text=text,
                       positions=loaded.positions)


def load_workflow_file(
    path: Path,
    *,
    display_path: str,
    environ: Mapping[str, str],
    params: Mapping[str, str] | None = None,
    profile: str | None = None,
    strict: bool = False,
) -> LoadOutcome:
    """Read, load and validate the workflow file at ``path`` (spec 01 §7)."""
    text = read_workflow_text(Path(path), display_path)
    if isinstance(text, LoadOutcome):
        return text
    return load_workflow_text(
        text,
        display_path=display_path,
        stem=Path(path).stem,
        environ=environ,
        params=params,
        profile=profile,
        strict=strict,
        filename=Path(path).name,
    )


def _with_file(problem: Problem, file: str) -> Problem:
    if problem.file == file:
        return problem
    return Problem(
        severity=problem.severity,
        code=problem.code,
        message=problem.message,
        file=file,
        line=problem.line,
        column=problem.column,
        path=problem.path,
        suggestion=problem.suggestion,
        help=problem.help,
    )
