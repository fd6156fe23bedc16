"""The validation context: where problems are collected and values are checked.

Theory of operation
-------------------
Every checker receives one ``Ctx``.  It knows the file name and the position tables the
loader produced, and appends ``Problem`` values instead of raising, so a single pass
reports every problem in the file (spec 01 §7).  The small ``want_*`` helpers check one
value's type, report a problem at that value's position and return ``None`` when the
value cannot be used; callers then simply leave the field at its default.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Literal

from prodigy_core.parse import paths
from prodigy_core.problems import Problem

Position = tuple[int, int]
ScalarInfo = tuple[str, int, int]
Phase = Literal["workflow", "setup", "agent", "reduce", "merge"]

_SIMPLE_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def type_name(value: object) -> str:
    """A YAML-flavoured name for the type of ``value``, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "mapping"
    return type(value).__name__


class Ctx:
    """Collects problems for one file and knows where every value came from."""

    def __init__(
        self,
        *,
        file: str,
        positions: Mapping[str, Position],
        key_positions: Mapping[str, Position],
        scalar_info: Mapping[str, ScalarInfo],
        environ: Mapping[str, str],
        params: Mapping[str, str],
        profile: str | None,
    ) -> None:
        self.file = file
        self.positions = positions
        self.key_positions = key_positions
        self.scalar_info = scalar_info
        self.environ = environ
        self.params = params
        self.profile = profile
        self.problems: list[Problem] = []
        self.strict_variables = False
        # Static values of the workflow environment, for numeric references (spec 01 §3.4).
        self.static_env: dict[str, str] = {}
        self.step_ids: set[str] = set()

    # --- positions --------------------------------------------------------------------

    def pos(self, path: str, *, key: bool = False) -> Position:
        """(line, column) of the key (``key=True``) or value at ``path``, or its nearest parent."""
        current: str | None = path
        while current is not None:
            first, second = (
                (self.key_positions, self.positions) if key else (self.positions, self.key_positions)
            )
            found = first.get(current) or second.get(current)
            if found is not None:
                return found
            current = paths.parent(current)
        return self.positions.get("$", (1, 1)) if self.positions else (0, 0)

    def locate(self, path: str, text: str, offset: int) -> Position:
        """Line and column of ``text[offset]`` where ``text`` is the value at ``path``."""
        info = self.scalar_info.get(path)
        if info is None:
            return self.pos(path)
        style, first_line, first_col = info
        offset = max(0, min(offset, len(text)))
        newlines = text.count("\n", 0, offset)
        if newlines == 0:
            return first_line, first_col + offset
        if style != "block":
            return self.pos(path)
        line_start = text.rfind("\n", 0, offset) + 1
        return first_line + newlines, first_col + (offset - line_start)

    # --- reporting --------------------------------------------------------------------

    def problem(
        self,
        severity: Literal["error", "warning"],
        code: str,
        message: str,
        path: str,
        *,
        key: bool = False,
        at: Position | None = None,
        suggestion: str | None = None,
        help: str | None = None,
    ) -> None:
        line, column = at if at is not None else self.pos(path, key=key)
        self.problems.append(
            Problem(
                severity=severity,
                code=code,
                message=message,
                file=self.file,
                line=line,
                column=column,
                path=path,
                suggestion=suggestion,
                help=help,
            )
        )

    def error(
        self,
        code: str,
        message: str,
        path: str,
        *,
        key: bool = False,
        at: Position | None = None,
        suggestion: str | None = None,
        help: str | None = None,
    ) -> None:
        self.problem("error", code, message, path, key=key, at=at, suggestion=suggestion, help=help)

    def warning(
        self,
        code: str,
        message: str,
        path: str,
        *,
        key: bool = False,
        at: Position | None = None,
        suggestion: str | None = None,
        help: str | None = None,
    ) -> None:
        self.problem(
            "warning", code, message, path, key=key, at=at, suggestion=suggestion, help=help
        )

    def wrong_type(self, value: object, expected: str, path: str) -> None:
        self.error("E1004", f"expected {expected}, found {type_name(value)}", path)

    # --- typed getters ----------------------------------------------------------------

    def want_str(self, value: object, path: str, *, numbers: bool = False) -> str | None:
        if isinstance(value, str):
            return value
        if numbers and isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        self.wrong_type(value, "a string", path)
        return None

    def want_bool(self, value: object, path: str) -> bool | None:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            self.warning(
                "W1007",
                f"string {value!r} used where a boolean is expected",
                path,
                help=f"write {value.strip().lower()} without quotes",
            )
            return value.strip().lower() == "true"
        self.wrong_type(value, "a boolean (true or false)", path)
        return None

    def want_int(self, value: object, path: str, *, minimum: int | None = None) -> int | None:
        if isinstance(value, bool) or not isinstance(value, int):
            self.wrong_type(value, "an integer", path)
            return None
        return self.check_min(value, path, minimum)

    def check_min(self, value: int, path: str, minimum: int | None) -> int | None:
        if minimum is not None and value < minimum:
            self.error("E1005", f"value {value} is out of range: must be at least {minimum}", path)
            return None
        return value

    def want_number(
        self, value: object, path: str, *, low: float | None = None, high: float | None = None
    ) -> float | None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.wrong_type(value, "a number", path)
            return None
        number = float(value)
        if (low is not None and number < low) or (high is not None and number > high):
            self.error(
                "E1005", f"value {value} is out of range: must be between {low} and {high}", path
            )
            return None
        return number

    def want_enum(
        self, value: object, path: str, choices: tuple[str, ...], aliases: Mapping[str, str] = {}
    ) -> str | None:
        if isinstance(value, str):
            text = value.strip()
            if text in choices:
                return text
            if text in aliases:
                return aliases[text]
        accepted = ", ".join(choices)
        self.error("E1005", f"invalid value {value!r}: expected one of {accepted}", path)
        return None

    def want_mapping(self, value: object, path: str, what: str = "a mapping") -> dict[object, object] | None:
        if isinstance(value, dict):
            return value
        self.wrong_type(value, what, path)
        return None

    def want_list(self, value: object, path: str, what: str = "a list") -> list[object] | None:
        if isinstance(value, list):
            return value
        self.wrong_type(value, what, path)
        return None

    def want_str_list(self, value: object, path: str) -> tuple[str, ...] | None:
        items = self.want_list(value, path, "a list of strings")
        if items is None:
            return None
        out: list[str] = []
        for i, item in enumerate(items):
            text = self.want_str(item, paths.index(path, i))
            if text is not None:
                out.append(text)
        return tuple(out)

    # --- numeric fields that accept one variable reference (spec 01 §3.4) -------------

    def resolve_reference(self, value: object, path: str) -> tuple[bool, object]:
        """Replace a string that is exactly one reference by its value.

        Returns ``(ok, value)``; ``ok`` is False when an E2002 was reported.
        """
        if not isinstance(value, str):
            return True, value
        match = _SIMPLE_REF.fullmatch(value.strip())
        if match is None:
            return True, value
        name = match.group(1) or match.group(2)
        for source in (self.params, self.static_env, self.environ):
            if name in source:
                return True, source[name]
        self.error(
            "E2002",
            f"variable '{name}' not found in workflow env, parameters or the process environment",
            path,
        )
        return False, None
