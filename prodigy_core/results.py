"""Execution results, captures and the result variables they set (spec 02 §11).

Theory of operation
-------------------
Every execution of a step's command ends in an ``ExecResult``: exit code, output,
duration, and — when it did not pass — an error class, code and message.  From it the
step machine derives the variables of spec 02 §11: the kind-named result variables
(``shell.output``…), ``last.*``, and ``capture`` with its format and companions.
Captured and output values are *data* (``trusted=False``), so the interpolation engine
escapes them in shell text.
"""

from __future__ import annotations

import json
import math

import attrs

from prodigy_core.interpolate import Var
from prodigy_core.json_values import JSON
from prodigy_core.model import Step
from prodigy_core.reprs import value_class

OUTPUT_LIMIT = 64 * 1024


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class ExecResult:
    """The outcome of one execution of a command."""

    exit_code: int
    stdout: str = ""
    stderr: str = ""
    duration: float = 0.0
    passed: bool = False
    error_class: str | None = None
    error_code: str | None = None
    message: str | None = None
    finished_at: str = ""
    planned: bool = False


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class CaptureError:
    code: str
    message: str


def seconds_text(value: float) -> str:
    """``5``, ``0.47``: a number of seconds as messages print it."""
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.2f}".rstrip("0").rstrip(".")


def cut(text: str, limit: int = OUTPUT_LIMIT) -> str:
    """Cut text to ``limit`` bytes (UTF-8) keeping the end, for records and events."""
    data = text.encode("utf-8", errors="replace")
    if len(data) <= limit:
        return text
    return "…[truncated]…" + data[-limit:].decode("utf-8", errors="ignore")


def parse_capture(stdout: str, fmt: str, success: bool) -> JSON | CaptureError:
    """Parse stdout by ``capture_format`` (spec 02 §11.2)."""
    if fmt == "string":
        return stdout[:-1] if stdout.endswith("\n") else stdout
    if fmt == "json":
        if stdout.strip() == "":
            return None
        try:
            value: JSON = json.loads(stdout)
        except ValueError as exc:
            return CaptureError(code="E3006", message=f"captured output is not valid JSON: {exc}")
        return value
    if fmt == "lines":
        lines = stdout.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        return list(lines)
    if fmt == "number":
        text = stdout.strip()
        try:
            return int(text)
        except ValueError:
            pass
        try:
            number = float(text)
        except ValueError:
            return CaptureError(
                code="E3006", message=f"captured output is not a number: {text[:80]!r}"
            )
        if math.isnan(number) or math.isinf(number):
            return CaptureError(
                code="E3006", message=f"captured output is not a finite number: {text[:80]!r}"
            )
        return number
    if fmt == "boolean":
        text = stdout.strip().lower()
        if text == "true":
            return True
        if text == "false":
            return False
        return success
    return CaptureError(code="E3006", message=f"unknown capture format {fmt!r}")


def result_variables(kind: str, result: ExecResult, extra: dict[str, JSON]) -> dict[str, Var]:
    """The kind-named result variables and ``last.*`` for one execution (spec 02 §11.1)."""
    success = result.passed
    out: dict[str, Var] = {}

    def data(name: str, value: JSON) -> None:
        out[name] = Var(value=value, trusted=False)

    if kind == "shell":
        data("shell.output", result.stdout)
        data("shell.stderr", result.stderr)
        data("shell.exit_code", result.exit_code)
        data("shell.success", success)
    elif kind == "write_file":
        data("write_file.output", result.stdout)
        data("write_file.path", extra.get("path", ""))
    elif kind == "claude":
        data("claude.output", result.stdout)
        data("claude.exit_code", result.exit_code)
        data("claude.success", success)
        data("claude.session_id", extra.get("session_id"))
        data("claude.cost_usd", extra.get("cost_usd", 0.0))
        data("claude.json_log_location", extra.get("json_log_location"))
    elif kind in ("goal_seek", "foreach"):
        for name, value in extra.items():
            data(f"{kind}.{name}", value)
    data("last.output", result.stdout)
    data("last.exit_code", result.exit_code)
    data("last.success", success)
    return out


def capture_variables(step: Step, result: ExecResult) -> dict[str, Var] | CaptureError:
    """The ``capture`` variable and its companions (spec 02 §11.2)."""
    name = step.capture
    if name is None:
        return {}
    streams = step.capture_streams
    out: dict[str, Var] = {}
    if streams.stdout:
        value = parse_capture(result.stdout, step.capture_format, result.passed)
        if isinstance(value, CaptureError):
            return value
    else:
        value = ""
    out[name] = Var(value=value, trusted=False)
    out["CAPTURED_OUTPUT"] = Var(value=value, trusted=False)
    if streams.stderr:
        out[f"{name}.stderr"] = Var(value=result.stderr, trusted=False)
    if streams.exit_code:
        out[f"{name}.exit_code"] = Var(value=result.exit_code, trusted=False)
    if streams.success:
        out[f"{name}.success"] = Var(value=result.passed, trusted=False)
    if streams.duration:
        out[f"{name}.duration"] = Var(value=round(result.duration, 3), trusted=False)
    return out


def tail_lines(text: str, count: int) -> tuple[list[str], int]:
    lines = text.rstrip("\n").split("\n") if text.strip() else []
    if len(lines) <= count:
        return lines, 0
    return lines[-count:], len(lines) - count


def error_excerpt(text: str) -> list[str]:
    """First 25 and last 25 lines of long error output (spec 02 §15)."""
    lines = text.rstrip("\n").split("\n")
    if len(lines) <= 50:
        return lines
    omitted = len(lines) - 50
    return [*lines[:25], f"… {omitted} lines omitted …", *lines[-25:]]
