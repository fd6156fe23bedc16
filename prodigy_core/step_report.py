"""What the step machine tells the user: a step's dry-run description and failure report."""

from __future__ import annotations

from typing import Literal

from prodigy_core.claude_config import invocation
from prodigy_core.display import display_name
from prodigy_core.effects import Print
from prodigy_core.json_values import JSON
from prodigy_core.model import Step
from prodigy_core.results import error_excerpt
from prodigy_core.step_frames import Outcome, StepFrame, Tx, retry_spec


def describe(tx: Tx, frame: StepFrame) -> JSON:
    step = frame.step
    spec = retry_spec(tx, step)
    handlers: list[str] = []
    if step.on_failure is not None:
        handlers.append("on_failure")
    if step.on_success is not None:
        handlers.append("on_success")
    if step.on_exit_code:
        handlers.append("on_exit_code")
    argv: list[JSON] = []
    if step.kind == "claude":
        model = step.model if step.model and "$" not in step.model else None
        argv = list(invocation(tx.ctx.claude, frame.text, model=model,
                               is_root=tx.ctx.is_root).argv)
    if step.kind == "shell":
        argv = ["sh", "-c", frame.text]
    return {
        "scope": "workflow",
        "index": tx.st.step_number,
        "display": frame.display,
        "kind": step.kind,
        "command": frame.text if step.kind != "write_file" else f"write {frame.text}",
        "argv": argv,
        "cwd": frame.cwd,
        "timeout": step.timeout,
        "retry": None if spec is None else {"attempts": spec.attempts},
        "when": step.when if isinstance(step.when, str) else None,
        "commit_required": step.commit_required,
        "auto_commit": step.auto_commit,
        "outputs": [name for name, _glob in step.outputs],
        "handlers": list(handlers),
        "validate": _validate_plan(step),
        "details": _repeat_plan(step),
    }


def _repeat_plan(step: Step) -> list[JSON]:
    """What a ``goal_seek`` or ``foreach`` step would repeat, as plan lines."""
    goal, each = step.goal_seek, step.foreach
    if goal is not None:
        budget = f", time budget {goal.timeout_seconds:g}s" if goal.timeout_seconds else ""
        return [f"goal: {goal.goal}",
                f"each attempt: {display_name(goal.command)}",
                f"score with: {goal.validate} (validator {goal.validator}, threshold "
                f"{goal.threshold:g}%, up to {goal.max_attempts} attempts{budget})",
                "not reached: " + ("fails the step" if goal.fail_on_incomplete
                                   else "allowed failure")]
    if each is not None:
        if each.items_json is not None:
            source = f"items: {each.items_json}"
        else:
            source = f"items from: {each.source} (known at run time)"
        limit = f", first {each.max_items}" if each.max_items else ""
        return [source + limit,
                f"per item ({each.parallel} at once): "
                + "; ".join(display_name(s) for s in each.do),
                "an item fails: " + ("the others still run" if each.continue_on_error
                                     else "no new item starts, the step fails")]
    return []


def _validate_plan(step: Step) -> JSON:
    """The completeness ``validate`` a real run would perform (a dry run does not)."""
    spec = step.validate
    if spec is None or step.skip_validation:
        return None
    handlers = spec.on_incomplete
    return {
        "commands": [display_name(c) for c in spec.commands],
        "result_file": spec.result_file,
        "threshold": spec.threshold,
        "on_incomplete": None if handlers is None else {
            "commands": [display_name(c) for c in handlers.commands],
            "max_attempts": handlers.max_attempts,
            "fail_workflow": handlers.fail_workflow,
        },
    }


def print_failure(tx: Tx, frame: StepFrame, outcome: Outcome) -> None:
    if outcome.status == "failed_allowed":
        first = (outcome.error or "").split("\n", 1)[0]
        prefix = f"Step '{frame.display}' failed"
        detail = first[len(prefix):] if first.startswith(prefix) else f": {first}"
        tx.emit(Print(text=f"  Step '{frame.display}' failed (allowed){detail}", stream="err"))
        return
    # a MapReduce agent's step failure is collected for the job's report (spec 05 §10.6);
    # its details show with -v
    level: Literal["info", "detail"] = "detail" if tx.ctx.quiet_failures else "info"
    if outcome.error_code == "E3001" and outcome.exit_code not in (None, 0):
        # spec 02 §15's line, with the code every reported error carries (spec 10 §8.1)
        tx.emit(Print(text=f"error[E3001]: Step '{frame.display}' failed with exit code "
                           f"{outcome.exit_code}", stream="err", level=level))
    else:
        tx.emit(Print(text=f"error[{outcome.error_code}]: {outcome.error}", stream="err", level=level))
    if outcome.stderr.strip():
        body, label = outcome.stderr, "stderr"
    else:
        body, label = outcome.output, "stdout"
    if body.strip():
        tx.emit(Print(text=f"=== Error Output ({label}) ===", stream="err", level=level))
        tx.emit(Print(text="\n".join(error_excerpt(body)), stream="err", level=level))
