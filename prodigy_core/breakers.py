"""Step circuit breakers (spec 10 §3.1–§3.3): shared, named, driven by event time.

Theory of operation
-------------------
A breaker is named (``circuit_breaker.name``, else the path of the step using it) and
shared by every execution in the run that names it; ``Breakers`` maps names to their
state and lives in the run's state, which hands it to the step machine for each
transition.  The core never reads a clock: ``now`` is the ``monotonic`` reading of the
latest completion event (``observe``), so a run replayed from its journal makes the
same decisions.

``admit`` is asked before an execution starts.  ``closed`` admits; ``open`` rejects
until ``recovery_timeout`` has passed since it opened, then becomes ``half_open``;
``half_open`` admits up to ``half_open_requests`` executions at a time.  ``record``
is told how an admitted execution ended: in ``closed``, ``failure_threshold``
consecutive failures open it (a pass resets the count); in ``half_open``, any failure
opens it again and ``success_threshold`` consecutive passes close it.  Both return the
transitions they made, ``(name, from, to)``, for the ``circuit_breaker_state_changed``
journal record.
"""

from __future__ import annotations

from typing import Literal

import attrs
from pyrsistent import PMap, pmap

from prodigy_core.model import CircuitBreakerSpec
from prodigy_core.reprs import value_class

BreakerStatus = Literal["closed", "open", "half_open"]
Change = tuple[str, str, str]


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class Breaker:
    status: BreakerStatus = "closed"
    failures: int = 0
    successes: int = 0
    opened_at: float = 0.0
    in_flight: int = 0


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class Breakers:
    """Every breaker of a run, and the latest time the run has heard of."""

    now: float = 0.0
    states: PMap[str, Breaker] = pmap()

    def get(self, name: str) -> Breaker:
        found: Breaker = self.states.get(name, Breaker())
        return found

    def _put(self, name: str, breaker: Breaker) -> Breakers:
        return attrs.evolve(self, states=self.states.set(name, breaker))


def observe(breakers: Breakers, monotonic: float | None) -> Breakers:
    """Advance ``now`` to an event's clock reading (never backwards)."""
    if monotonic is None or monotonic <= breakers.now:
        return breakers
    return attrs.evolve(breakers, now=monotonic)


def admit(breakers: Breakers, name: str,
          spec: CircuitBreakerSpec) -> tuple[Breakers, bool, tuple[Change, ...]]:
    """May an execution start now?  Counts it as in flight when it may."""
    breaker = breakers.get(name)
    changes: list[Change] = []
    if breaker.status == "open":
        if breakers.now - breaker.opened_at < spec.recovery_timeout:
            return breakers, False, ()
        breaker = Breaker(status="half_open")
        changes.append((name, "open", "half_open"))
    if breaker.status == "half_open":
        if breaker.in_flight >= spec.half_open_requests:
            return breakers._put(name, breaker), False, tuple(changes)
        breaker = attrs.evolve(breaker, in_flight=breaker.in_flight + 1)
    return breakers._put(name, breaker), True, tuple(changes)


def record(breakers: Breakers, name: str, spec: CircuitBreakerSpec,
           passed: bool) -> tuple[Breakers, tuple[Change, ...]]:
    """An admitted execution ended; ``passed`` says how."""
    breaker = breakers.get(name)
    if breaker.status == "closed":
        if passed:
            return breakers._put(name, attrs.evolve(breaker, failures=0)), ()
        failures = breaker.failures + 1
        if failures >= spec.failure_threshold:
            opened = Breaker(status="open", opened_at=breakers.now)
            return breakers._put(name, opened), ((name, "closed", "open"),)
        return breakers._put(name, attrs.evolve(breaker, failures=failures)), ()
    if breaker.status == "half_open":
        in_flight = max(0, breaker.in_flight - 1)
        if not passed:
            opened = Breaker(status="open", opened_at=breakers.now)
            return breakers._put(name, opened), ((name, "half_open", "open"),)
        successes = breaker.successes + 1
        if successes >= spec.success_threshold:
            return breakers._put(name, Breaker()), ((name, "half_open", "closed"),)
        return breakers._put(name, attrs.evolve(breaker, successes=successes,
                                                in_flight=in_flight)), ()
    # open: an execution admitted before another one opened it; nothing changes
    return breakers, ()
