"""The job circuit breaker (spec 05 §10.5, spec 10 §3.4): it pauses the dispatch of agents.

Theory of operation
-------------------
``error_policy.circuit_breaker`` watches the items of the map phase and, unlike a step
breaker (``prodigy_core.breakers``), rejects nothing: it only decides how many new agents
``dispatch`` may start (``allowance``).  Every agent run that ends is ``record``-ed: a run
whose item failed (also one the item retries), or one whose item succeeded (after its
merge).  An agent interrupted by CancelRequested is ``forget``-ten: it proves nothing.

``closed``     agents start as usual; ``failure_threshold`` consecutive failures open it
               (a success resets the count)
``open``       no agent starts; a ``Sleep`` of ``timeout`` is the open period (the core
               reads no clock).  Results of agents still running — the breaker never
               interrupts them — change nothing.  ``Slept`` → half-open
``half_open``  at most ``half_open_requests`` agents started while half-open run at once
               (its *trials*); ``success_threshold`` consecutive successes close it; a
               failure opens it again with a new ``Sleep``

Each transition is logged (``circuit_breaker_state_changed``, name ``job``) and printed
(``⏸ circuit breaker open: pausing new agents for 30s``).  The breaker is not saved: a
resumed job starts with it closed.  Its timer ending after the map phase means nothing
(``job_machine`` ignores it).
"""

from __future__ import annotations

import attrs

from prodigy_core.effects import Effect, LogEvent, Print, Sleep
from prodigy_core.job_state import BreakerStatus, DispatchBreaker, JobState
from prodigy_core.model import JobBreaker
from prodigy_core.retry import format_delay

Moves = tuple[JobState, list[Effect]]


def config(state: JobState) -> JobBreaker | None:
    return state.workflow.error_policy.circuit_breaker


def allowance(state: JobState) -> int | None:
    """How many more agents may start now (None: the breaker sets no limit)."""
    spec = config(state)
    breaker = state.dispatch_breaker
    if spec is None or breaker.status == "closed":
        return None
    if breaker.status == "open":
        return 0
    return max(0, spec.half_open_requests - len(breaker.trials))


def started(state: JobState, index: int) -> JobState:
    """An agent started for item ``index`` (a trial while half-open)."""
    breaker = state.dispatch_breaker
    if breaker.status != "half_open":
        return state
    return _put(state, attrs.evolve(breaker, trials=breaker.trials | {index}))


def forget(state: JobState, index: int) -> JobState:
    """Item ``index``'s agent was interrupted: its run is not a result."""
    breaker = state.dispatch_breaker
    if index not in breaker.trials:
        return state
    return _put(state, attrs.evolve(breaker, trials=breaker.trials - {index}))


def record(state: JobState, index: int, *, passed: bool) -> Moves:
    """An agent run of item ``index`` ended; ``passed`` when its item succeeded."""
    spec = config(state)
    if spec is None:
        return state, []
    breaker = attrs.evolve(state.dispatch_breaker,
                           trials=state.dispatch_breaker.trials - {index})
    state = _put(state, breaker)
    if breaker.status == "closed":
        if passed:
            return _put(state, attrs.evolve(breaker, failures=0)), []
        if breaker.failures + 1 < spec.failure_threshold:
            return _put(state, attrs.evolve(breaker, failures=breaker.failures + 1)), []
        return _open(state, spec, "closed")
    if breaker.status == "half_open":
        if not passed:
            return _open(state, spec, "half_open")
        if breaker.successes + 1 < spec.success_threshold:
            return _put(state, attrs.evolve(breaker, successes=breaker.successes + 1)), []
        state = _put(state, DispatchBreaker())
        return state, _changed(state, "half_open", "closed",
                               "▶ circuit breaker closed: dispatch resumes")
    return state, []  # open: an agent that was running when it opened


def owns(state: JobState, command_id: int | None) -> bool:
    return command_id is not None and state.dispatch_breaker.timer == command_id


def timer_over(state: JobState) -> Moves:
    """The open period is over: half-open (``dispatch`` starts the trials)."""
    spec = config(state)
    breaker = state.dispatch_breaker
    if spec is None or breaker.status != "open":
        return state, []
    state = _put(state, DispatchBreaker(status="half_open"))
    return state, _changed(
        state, "open", "half_open",
        f"▶ circuit breaker half-open: trying up to {spec.half_open_requests} agent(s)")


def _open(state: JobState, spec: JobBreaker, old: BreakerStatus) -> Moves:
    effects = _changed(state, old, "open", f"⏸ circuit breaker open: pausing new agents "
                                           f"for {format_delay(spec.timeout)}")
    if state.stop_reason is not None or state.cancel_signal is not None:
        # nothing starts again anyway: no open period to wait for
        return _put(state, DispatchBreaker(status="open")), effects
    state, tid = attrs.evolve(state, next_id=state.next_id + 1), state.next_id
    state = attrs.evolve(state, timers=state.timers.set(tid, "breaker"))
    state = _put(state, DispatchBreaker(status="open", timer=tid))
    return state, [*effects, Sleep(command_id=tid, seconds=spec.timeout)]


def _changed(state: JobState, old: str, new: str, text: str) -> list[Effect]:
    return [LogEvent(event_type="circuit_breaker_state_changed", fields=(
        ("name", "job"), ("from", old), ("to", new), ("scope", "map"),
        ("job_id", state.config.job_id))),
        Print(text=text)]


def _put(state: JobState, breaker: DispatchBreaker) -> JobState:
    return attrs.evolve(state, dispatch_breaker=breaker)
