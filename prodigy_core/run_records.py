"""A run's finished steps as the checkpoint stores them, and reading them back.

``StepRecord`` is one finished step of the current iteration (spec 09 §4.2
``completed_steps``); the ``restore_*`` functions rebuild the records and the variables
from a checkpoint document when a run resumes.  Pure data and functions.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs
from pyrsistent import PMap, pmap

from prodigy_core.interpolate import Var
from prodigy_core.json_values import JSON
from prodigy_core.reprs import value_class
from prodigy_core.results import cut


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class StepRecord:
    """A finished step of the current iteration, as stored in the checkpoint."""

    step_index: int
    command: str
    status: str
    exit_code: int | None
    output: str
    stderr: str
    duration: float
    variables: tuple[tuple[str, JSON], ...]
    completed_at: str
    error: str | None = None
    attempts: int = 1
    max_attempts: int = 1
    failure_history: tuple[str, ...] = ()
    step_id: str | None = None
    analytics: dict[str, JSON] | None = attrs.field(default=None, eq=False)
    json_log_location: str | None = None
    # The checkpoint form, built once: a run rewrites its checkpoint after every step and
    # repeats every earlier record each time (the storage encoder memoises by identity).
    doc: dict[str, JSON] = attrs.field(eq=False, repr=False, factory=dict)

    def with_doc(self) -> StepRecord:
        return attrs.evolve(self, doc=self.to_json())

    def checkpoint_json(self) -> dict[str, JSON]:
        return self.doc if self.doc else self.to_json()

    def to_json(self) -> dict[str, JSON]:
        secs = int(self.duration)
        return {
            "step_index": self.step_index,
            "step_id": self.step_id,
            "command": self.command,
            "success": self.status in ("succeeded", "recovered", "skipped"),
            "status": self.status,
            "exit_code": self.exit_code,
            "output": cut(self.output),
            "stderr": cut(self.stderr),
            "error": self.error,
            "captured_variables": dict(self.variables),
            "duration": {"secs": secs, "nanos": int((self.duration - secs) * 1e9)},
            "completed_at": self.completed_at,
            "retry_state": {"current_attempt": self.attempts,
                            "max_attempts": max(self.max_attempts, self.attempts),
                            "failure_history": list(self.failure_history),
                            "in_retry_loop": False},
            "analytics": self.analytics,
            "json_log_location": self.json_log_location,
        }


def as_int(value: object, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def opt_int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def str_list(value: object) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def restore_vars(checkpoint: dict[str, JSON]) -> PMap[str, Var]:
    raw = checkpoint.get("variable_state")
    meta = checkpoint.get("variable_meta")
    untrusted = set(str_list(meta.get("untrusted"))) if isinstance(meta, dict) else set()
    if not isinstance(raw, dict):
        return pmap()
    return pmap({k: Var(value=v, trusted=k not in untrusted) for k, v in raw.items()})


def restore_records(checkpoint: dict[str, JSON]) -> tuple[StepRecord, ...]:
    raw = checkpoint.get("completed_steps")
    if not isinstance(raw, list):
        return ()
    out: list[StepRecord] = []
    for item in raw:
        if not isinstance(item, dict):
            continue
        captured = item.get("captured_variables")
        out.append(StepRecord(
            step_index=as_int(item.get("step_index"), 0), command=str(item.get("command", "")),
            status=str(item.get("status", "succeeded")), exit_code=opt_int(item.get("exit_code")),
            output=str(item.get("output", "")), stderr=str(item.get("stderr", "") or ""),
            duration=0.0,
            variables=tuple(captured.items()) if isinstance(captured, dict) else (),
            completed_at=str(item.get("completed_at", "")),
            step_id=item.get("step_id") if isinstance(item.get("step_id"), str) else None,  # type: ignore[arg-type]
            doc=dict(item),  # stored as it was: duration, retry_state and analytics kept
        ))
    return tuple(out)


def positions(value: object) -> tuple[tuple[int, int, int], ...]:
    """``[[input, iteration, step], …]``; an older ``[input, step]`` pair is iteration 1."""
    if not isinstance(value, list):
        return ()
    out: list[tuple[int, int, int]] = []
    for p in value:
        if not isinstance(p, list) or len(p) not in (2, 3) or \
                not all(isinstance(x, int) and not isinstance(x, bool) for x in p):
            continue
        out.append((p[0], p[1], p[2]) if len(p) == 3 else (p[0], 1, p[1]))
    return tuple(out)


def foreach_done(
    checkpoint: dict[str, JSON], later_events: Sequence[dict[str, JSON]], *,
    step_index: int, iteration: int, input_index: int,
) -> tuple[tuple[int, bool, str, str], ...]:
    """The finished items of the ``foreach`` step the run stopped in: the checkpoint's
    ``foreach_state`` plus items logged as finished after it (spec 12 §3.5), with the key
    of each item's value (matched again when the step's items are listed anew)."""
    done: dict[int, tuple[bool, str, str]] = {}
    saved = checkpoint.get("foreach_state")
    if isinstance(saved, dict) and as_int(saved.get("step_index"), -1) == step_index and \
            as_int(saved.get("iteration"), 1) == iteration and \
            as_int(saved.get("input_index"), 0) == input_index:
        errors = saved.get("errors")
        errors = errors if isinstance(errors, dict) else {}
        keys = saved.get("item_keys")
        keys = keys if isinstance(keys, dict) else {}
        for field, ok in (("completed_items", True), ("failed_items", False)):
            items = saved.get(field)
            for i in items if isinstance(items, list) else ():
                index = as_int(i, -1)
                if index >= 0:
                    done[index] = (ok, "" if ok else str(errors.get(str(index), "failed")),
                                   str(keys.get(str(index)) or ""))
    path = f"steps[{step_index}]"
    for event in later_events:
        body = event.get("event")
        if not isinstance(body, dict) or body.get("event_type") != "foreach_item_finished":
            continue
        if body.get("step_path") != path or \
                as_int(body.get("iteration"), 1) != iteration or \
                as_int(body.get("input_index"), 0) != input_index:
            continue
        index = as_int(body.get("index"), -1)
        if index >= 0:
            done[index] = (body.get("success") is True, str(body.get("error") or ""),
                           str(body.get("item_key") or ""))
    return tuple((i, ok, err, key) for i, (ok, err, key) in sorted(done.items()))
