"""Problems found while loading or validating input, and the single bug error.

Theory of operation
-------------------
Validation never stops at the first problem: every check appends a ``Problem`` and the
caller reports them all, sorted by file, line and column (spec 01 §8).  A ``Problem`` is
plain data; rendering it for people or as JSON is done here too because both forms are
pure functions of the data.

``InvalidTransition`` is the one exception the core raises: it means a bug (an event a
state cannot receive, a corrupt checkpoint).  Domain failures are never exceptions.
"""

from __future__ import annotations

from typing import Literal

import attrs

from prodigy_core.reprs import value_class

Severity = Literal["error", "warning"]


class InvalidTransition(Exception):
    """A state machine received an event it cannot handle: a bug, never a domain failure."""


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class Problem:
    severity: Severity
    code: str
    message: str
    file: str = ""
    line: int = 0
    column: int = 0
    path: str = "$"
    suggestion: str | None = None
    help: str | None = None

    @property
    def is_error(self) -> bool:
        return self.severity == "error"

    def sort_key(self) -> tuple[str, int, int, str]:
        return (self.file, self.line, self.column, self.code)

    def as_error(self) -> Problem:
        """The same problem promoted to an error (``--strict``)."""
        if self.severity == "error":
            return self
        code = "E1006" if self.code == "W1001" else self.code
        return attrs.evolve(self, severity="error", code=code)

    def render(self) -> str:
        lines = [f"{self.severity}[{self.code}]: {self.message}"]
        if self.file or self.line:
            where = f"{self.file}:{self.line}:{self.column}" if self.line else self.file
            lines.append(f"  --> {where}  at {self.path}")
        hint = self.help
        if hint is None and self.suggestion is not None:
            hint = f"did you mean '{self.suggestion}'?"
        if hint:
            lines.append(f"  = help: {hint}")
        return "\n".join(lines)

    def to_json(self) -> dict[str, object]:
        return {
            "code": self.code,
            "message": self.message,
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "path": self.path,
            "suggestion": self.suggestion,
        }


def sorted_problems(problems: tuple[Problem, ...] | list[Problem]) -> tuple[Problem, ...]:
    return tuple(sorted(problems, key=Problem.sort_key))


def summary_line(problems: tuple[Problem, ...], file: str) -> str:
    errors = sum(1 for p in problems if p.is_error)
    warnings = len(problems) - errors
    if errors:
        return f"✗ {errors} error(s), {warnings} warning(s)"
    return f"✓ Workflow is valid: {file}"
