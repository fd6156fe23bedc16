"""Phase limits of a MapReduce job: ``setup.timeout`` and ``reduce.timeout`` (spec 05 §4.2,
§12.3).

Theory of operation
-------------------
The core reads no clock, so a limit is a ``Sleep`` of the limit's length, ``arm``-ed when
the phase starts (again after a resume: the limit runs anew from there) and recorded in
``state.timers`` and ``state.phase_timer``.  When the phase ends first, ``disarm`` cancels
the ``Sleep``; its ``Slept`` still comes and is ignored, as is any job timer whose phase is
over.

When the ``Sleep`` ends while its phase runs, ``expired`` cancels the phase's running
command (``CancelCommands`` with its ids: SIGTERM, grace period, SIGKILL, as for any
command) and marks the phase timed out.  Whatever the phase's step machine hears next —
the cancelled command ending — the job fails (``failed``): E6005 ``Setup phase timed out
after <n> seconds`` or E6009 ``Reduce phase timed out after <n> seconds``; nothing else
starts (no retry, handler or next step).  The job state keeps the phase's finished steps,
so ``prodigy resume-job`` continues at the step that was stopped.
"""

from __future__ import annotations

from typing import Literal

import attrs

from prodigy_core.effects import CancelCommands, Effect, Print, Sleep
from prodigy_core.job_endings import job_failed
from prodigy_core.job_state import JobState
from prodigy_core.retry import format_delay

Moves = tuple[JobState, list[Effect]]
Phase = Literal["setup", "reduce"]

_CODES: dict[Phase, str] = {"setup": "E6005", "reduce": "E6009"}


def limit(state: JobState, phase: Phase) -> float | None:
    block = state.workflow.setup if phase == "setup" else state.workflow.reduce
    return block.timeout if block is not None else None


def arm(state: JobState, phase: Phase) -> Moves:
    """Start the limit of ``phase`` (nothing when it has none)."""
    seconds = limit(state, phase)
    if seconds is None:
        return state, []
    state, tid = attrs.evolve(state, next_id=state.next_id + 1), state.next_id
    state = attrs.evolve(state, timers=state.timers.set(tid, phase), phase_timer=tid,
                         phase_timed_out=False)
    return state, [Sleep(command_id=tid, seconds=seconds)]


def disarm(state: JobState) -> Moves:
    """The phase ended in time: its limit no longer matters."""
    if state.phase_timer is None:
        return state, []
    tid = state.phase_timer
    return attrs.evolve(state, phase_timer=None), [CancelCommands(command_ids=(tid,))]


def live(state: JobState, command_id: int) -> bool:
    """Is ``command_id`` the limit of the phase that runs now?"""
    return state.phase_timer == command_id and state.phase in ("setup", "reduce") and \
        state.cancel_signal is None


def expired(state: JobState) -> Moves:
    """The limit of the running phase is over: stop its command; the job fails next."""
    phase: Phase = "setup" if state.phase == "setup" else "reduce"
    pending = (state.setup if phase == "setup" else state.reduce).pending_ids
    state = attrs.evolve(state, phase_timer=None, phase_timed_out=True)
    if not pending:
        return failed(state)
    seconds = limit(state, phase) or 0.0
    return state, [Print(text=f"{phase.capitalize()} phase time limit "
                              f"({format_delay(seconds)}) reached: stopping its command",
                         stream="err"),
                   CancelCommands(command_ids=pending)]


def failed(state: JobState) -> Moves:
    """The phase's limit expired: the job fails (E6005 / E6009)."""
    phase: Phase = "setup" if state.phase == "setup" else "reduce"
    seconds = limit(state, phase) or 0.0
    return job_failed(state, f"{phase.capitalize()} phase timed out after {seconds:g} "
                             f"seconds", _CODES[phase])
