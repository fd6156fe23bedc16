"""``goal_seek`` steps: run a command, score the result, repeat (spec 12 §1).

Theory of operation
-------------------
One execution of a ``goal_seek`` step is the whole loop.  ``execute`` starts it with a
fresh ``GoalState`` on the step's frame.  Each attempt runs the goal's command as a
child step (role ``goal_command``; its failure is recorded, scoring still runs) with
``goal_seek.*`` of the previous attempt as handler-local variables and the
``PRODIGY_VALIDATION_*`` environment, then runs ``validate`` directly (stage
``goal_validate``: ``sh -c`` with ``PRODIGY_VALIDATION=true``), reads the score
(``read_score``) and decides: achieved, converged, out of attempts, out of time, or
another attempt.  The loop's verdict becomes the execution's ``ExecResult``, which goes
through the usual checks and attempt loop (``step_checks``), so ``retry``,
``on_failure`` and ``commit_required`` apply to the step as a whole — except that a
goal not reached without ``fail_on_incomplete`` is an allowed failure at once.

Time is the summed duration of the attempts' commands (the core reads no clock):
``timeout_seconds`` is checked before each attempt and caps each command's timeout;
the step's own ``timeout`` caps the whole execution (E3002 when it runs out).
"""

from __future__ import annotations

import json
import re

import attrs
from pyrsistent import pmap

from prodigy_core import step_checks, step_handlers, stepper
from prodigy_core.context import child_environment
from prodigy_core.effects import Print, RunCommand
from prodigy_core.events import CommandFinished, CommandNotStarted, Event
from prodigy_core.interpolate import Var, interpolate
from prodigy_core.json_values import JSON, dumps_compact
from prodigy_core.model import GoalSeekSpec
from prodigy_core.problems import InvalidTransition
from prodigy_core.results import ExecResult, cut, seconds_text
from prodigy_core.step_frames import GoalState, Outcome, StepFrame, Tx

ENV_VALUE_LIMIT = 32 * 1024
_PATTERNS = (
    re.compile(r"score:\s*(\d+(?:\.\d+)?)", re.IGNORECASE),
    re.compile(r"(\d+(?:\.\d+)?)%"),
    re.compile(r"(\d+(?:\.\d+)?)/100"),
    re.compile(r"(\d+(?:\.\d+)?)\s*out\s*of\s*100", re.IGNORECASE),
)


def read_score(validator: str, stdout: str, exit_code: int) -> tuple[float, JSON]:
    """The score (clamped to 0–100) and gaps of one validation (spec 12 §1.3)."""
    if validator == "exit_code":
        return (100.0 if exit_code == 0 else 0.0), (stdout or None)
    data = _json_object(stdout)
    if validator == "json":
        if data is None:
            return 0.0, None
        number = _number(data.get("score"))
        if number is None:
            number = _number(data.get("completion_percentage"))
        return _clamp(number or 0.0), data.get("gaps")
    if data is not None:
        return _clamp(_number(data.get("score")) or 0.0), data.get("gaps")
    for pattern in _PATTERNS:
        found = pattern.search(stdout)
        if found:
            return _clamp(float(found.group(1))), None
    return 0.0, None


def has_score(validator: str, stdout: str) -> bool:
    """Whether the output holds a score at all (a missing one reads as 0, W3006)."""
    if validator == "exit_code":
        return True
    data = _json_object(stdout)
    if validator == "json":
        return data is not None and (_number(data.get("score")) is not None or
                                     _number(data.get("completion_percentage")) is not None)
    if data is not None:
        return _number(data.get("score")) is not None
    return any(pattern.search(stdout) for pattern in _PATTERNS)


def _json_object(text: str) -> dict[str, JSON] | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _number(value: JSON) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _clamp(value: float) -> float:
    return max(0.0, min(100.0, value))


def pct(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def converged(scores: tuple[float, ...]) -> bool:
    """From the third attempt on: the last three scores within 2 points."""
    if len(scores) < 3:
        return False
    last = scores[-3:]
    return max(last) - min(last) <= 2


def _spec(frame: StepFrame) -> GoalSeekSpec:
    assert frame.step.goal_seek is not None
    return frame.step.goal_seek


# --- the loop ---------------------------------------------------------------------------


def execute(tx: Tx, frame: StepFrame) -> None:
    """Start one execution of the loop (or plan it in a dry run)."""
    if tx.ctx.dry_run:
        result = ExecResult(exit_code=0, passed=True, planned=True)
        tx.replace_top(attrs.evolve(frame, last=result))
        step_checks.after_result(tx, frame, result, 0.0)
        return
    tx.replace_top(attrs.evolve(frame, goal=GoalState()))
    _next_attempt(tx)


def _remaining(frame: StepFrame, goal: GoalState) -> tuple[float | None, float | None]:
    """Time left of ``timeout_seconds`` and of the step's ``timeout`` (None: no limit)."""
    spec = _spec(frame)
    soft = None if spec.timeout_seconds is None else spec.timeout_seconds - goal.elapsed
    hard = None if frame.timeout is None else frame.timeout - goal.elapsed
    return soft, hard


def _limit(*values: float | None) -> float | None:
    given = [max(v, 0.001) for v in values if v is not None]
    return min(given) if given else None


def _next_attempt(tx: Tx) -> None:
    frame = tx.top
    assert isinstance(frame, StepFrame) and frame.goal is not None
    spec, goal = _spec(frame), frame.goal
    soft, hard = _remaining(frame, goal)
    if hard is not None and hard <= 0:
        _timed_out(tx, frame)
        return
    if soft is not None and soft <= 0:
        _conclude(tx, "timeout")
        return
    if goal.attempt >= spec.max_attempts:
        _conclude(tx, "max_attempts")
        return
    attempt = goal.attempt + 1
    values: dict[str, Var] = {"goal_seek.attempt": Var(value=attempt)}
    env = list(frame.env)
    if goal.history:
        score = goal.history[-1][1]
        values["goal_seek.score"] = Var(value=_json_number(score))
        values["goal_seek.output"] = Var(value=goal.output, trusted=False)
        values["goal_seek.gaps"] = Var(value=goal.gaps, trusted=False)
        env.append(("PRODIGY_VALIDATION_SCORE", pct(score)))
        env.append(("PRODIGY_VALIDATION_OUTPUT", _env_text(goal.output)))
        if goal.gaps is not None:
            env.append(("PRODIGY_VALIDATION_GAPS", _env_text(_render(goal.gaps))))
    tx.replace_top(attrs.evolve(frame, stage="child", child_role="goal_command",
                                goal=attrs.evolve(goal, attempt=attempt)))
    command = spec.command
    stepper.start_step(tx, command, f"{frame.path}.goal_seek.{command.kind}", pmap(values),
                       default_timeout=_limit(soft, hard), base_env=tuple(env),
                       base_cwd=frame.cwd, show_output=True)


def _json_number(value: float) -> JSON:
    return int(value) if float(value).is_integer() else value


def _render(value: JSON) -> str:
    return value if isinstance(value, str) else dumps_compact(value)


def _env_text(text: str) -> str:
    data = text.encode("utf-8", "replace")
    if len(data) <= ENV_VALUE_LIMIT:
        return text
    return data[:ENV_VALUE_LIMIT].decode("utf-8", "ignore")


def command_done(tx: Tx, frame: StepFrame, outcome: Outcome) -> None:
    """The attempt's command ended (role ``goal_command``): score the result."""
    goal = frame.goal
    assert goal is not None
    spec = _spec(frame)
    goal = attrs.evolve(goal, command_ok=outcome.status in ("succeeded", "recovered"),
                        command_duration=outcome.duration,
                        elapsed=goal.elapsed + outcome.duration)
    visible = tx.visible().update({"goal_seek.attempt": Var(value=goal.attempt)})
    text = interpolate(spec.validate, visible, shell=True, environ=tx.ctx.environ_map).text
    soft, hard = _remaining(frame, goal)
    timeout = _limit(soft, hard)
    env = child_environment(
        tx.ctx, step_env=dict((*frame.env, ("PRODIGY_VALIDATION", "true"))),
        clear=frame.step.clear_env, iteration=tx.st.iteration, attempt=goal.attempt,
        input_index=tx.st.input_index, timeout=timeout)
    cid = tx.new_id()
    tx.replace_top(attrs.evolve(frame, stage="goal_validate", pending=cid, goal=goal))
    tx.emit(RunCommand(command_id=cid, argv=("sh", "-c", text), cwd=frame.cwd, env=env,
                       timeout=timeout, stream_output=True,
                       display=f"{frame.display} (validate)",
                       step_path=f"{frame.path}.goal_seek.validate",
                       memory_limit_mb=tx.ctx.memory_limit_mb))


def on_validated(tx: Tx, frame: StepFrame, event: Event) -> None:
    """``validate`` ended: record the attempt and decide what comes next."""
    if not isinstance(event, CommandFinished | CommandNotStarted):
        raise InvalidTransition(f"goal validation cannot receive {type(event).__name__}")
    goal = frame.goal
    assert goal is not None
    spec = _spec(frame)
    if isinstance(event, CommandNotStarted):
        stdout, exit_code, duration, timed_out = "", -1, 0.0, False
        tx.emit(Print(text=f"  validate of '{frame.display}' did not start: {event.message}",
                      stream="err"))
    else:
        stdout, exit_code, duration = event.stdout, event.exit_code, event.duration
        timed_out = event.timed_out
    goal = attrs.evolve(goal, elapsed=goal.elapsed + duration)
    soft, hard = _remaining(frame, goal)
    if timed_out and hard is not None and hard <= 0:
        frame = attrs.evolve(frame, goal=goal)
        tx.replace_top(frame)
        _timed_out(tx, frame)
        return
    if timed_out and soft is not None and soft <= 0:
        # the time budget ran out while scoring: this attempt has no score
        ms = round((goal.command_duration + duration) * 1000)
        goal = attrs.evolve(goal, output=stdout,
                            history=(*goal.history, (goal.attempt, 0.0, goal.command_ok, ms)))
        tx.replace_top(attrs.evolve(frame, stage="running", goal=goal))
        tx.emit(Print(text=f"  Attempt {goal.attempt}/{spec.max_attempts}: validate ran out "
                           "of time", stream="err"))
        _conclude(tx, "timeout")
        return
    score, gaps = read_score(spec.validator, stdout, exit_code)
    if not has_score(spec.validator, stdout):
        first = stdout.strip().splitlines()[0][:120] if stdout.strip() else "(no output)"
        tx.emit(Print(text=f"warning[W3006]: validate of '{frame.display}' printed no score "
                           f"(validator {spec.validator}); counted as 0: {first}",
                      stream="err"))
    ms = round((goal.command_duration + duration) * 1000)
    goal = attrs.evolve(goal, output=stdout, gaps=gaps,
                        history=(*goal.history, (goal.attempt, score, goal.command_ok, ms)))
    frame = attrs.evolve(frame, stage="running", goal=goal)
    tx.replace_top(frame)
    tx.emit(Print(text=f"  Attempt {goal.attempt}/{spec.max_attempts}: score {pct(score)}% "
                       f"(threshold {pct(spec.threshold)}%)"))
    if score >= spec.threshold:
        _conclude(tx, "achieved")
    elif converged(tuple(h[1] for h in goal.history)):
        _conclude(tx, "converged")
    else:
        _next_attempt(tx)


def _variables(frame: StepFrame, status: str) -> dict[str, JSON]:
    goal = frame.goal
    assert goal is not None
    last = goal.history[-1][1] if goal.history else 0.0
    history: list[JSON] = [
        {"attempt": a, "score": _json_number(s), "command_success": ok, "duration_ms": ms}
        for a, s, ok, ms in goal.history]
    return {"status": status, "score": _json_number(last), "attempts": len(goal.history),
            "output": goal.output, "gaps": goal.gaps, "history": history}


def _conclude(tx: Tx, status: str) -> None:
    frame = tx.top
    assert isinstance(frame, StepFrame) and frame.goal is not None
    spec, goal = _spec(frame), frame.goal
    attempts = len(goal.history)
    best = max((h[1] for h in goal.history), default=0.0)
    last = goal.history[-1][1] if goal.history else 0.0
    duration = goal.elapsed
    if status == "achieved":
        text = f"Goal '{frame.text}' achieved in {attempts} attempts ({pct(last)}%)"
        tx.emit(Print(text=f"  {text}"))
        result = ExecResult(exit_code=0, stdout=text, passed=True, duration=duration)
    else:
        text = (f"Goal '{frame.text}' not achieved: {status} after {attempts} attempts, "
                f"best {pct(best)}%")
        result = ExecResult(exit_code=1, stdout=text, passed=False, duration=duration,
                            error_class="goal_not_achieved", error_code="E3012",
                            message=text)
    result = step_checks.record(tx, frame, result, _variables(frame, status))
    top = tx.top
    assert isinstance(top, StepFrame)
    tx.replace_top(attrs.evolve(top, last=result, goal=None))
    if status != "achieved" and not spec.fail_on_incomplete:
        # a goal not reached is an allowed failure: no retry, no on_failure (§1.4)
        top = attrs.evolve(top, total_duration=top.total_duration + duration)
        tx.replace_top(top)
        step_handlers.finish_failed(tx, top, result, allowed=True)
        return
    step_checks.after_result(tx, top, result, 0.0)


def _timed_out(tx: Tx, frame: StepFrame) -> None:
    """The step's own ``timeout`` ran out during the loop: a timeout failure (E3002)."""
    goal = frame.goal
    assert goal is not None
    secs = frame.timeout or 0
    result = ExecResult(exit_code=-1, passed=False, error_class="timeout", error_code="E3002",
                        message=f"Step timed out after {seconds_text(secs)} "
                                "seconds",
                        duration=goal.elapsed, stdout=cut(goal.output))
    result = step_checks.record(tx, frame, result, _variables(frame, "timeout"))
    top = tx.top
    assert isinstance(top, StepFrame)
    tx.replace_top(attrs.evolve(top, last=result, goal=None, stage="running"))
    step_checks.after_result(tx, top, result, 0.0)
