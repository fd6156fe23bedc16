"""Layer 1: step circuit breakers (spec 10 §3.1–§3.3) with hand-fed events.

Time comes only from the events: the driver's clock advances by each command's
``duration`` and each ``Sleep``, and every completion event reports it as
``monotonic``.  The assertions are on the commands actually run, the E3009 rejections,
and the ``circuit_breaker_state_changed`` records in order.
"""

from __future__ import annotations

from typing import Any

import attrs
import pytest

from prodigy_core import run_machine
from prodigy_core.breakers import Breaker, Breakers, admit, observe, record
from prodigy_core.effects import RunCommand
from prodigy_core.events import CommandFinished
from prodigy_core.model import (
    Backoff,
    CircuitBreakerSpec,
    RetryMatcher,
    RetrySpec,
    Step,
    Workflow,
)
from tests.core._machine_driver import Driver, R, make_ctx, shell

FAIL = R(exit_code=1)


def breaker(name: str | None = None, **options: Any) -> CircuitBreakerSpec:
    return CircuitBreakerSpec(name=name, **options)


def retry(attempts: int, delay: float = 1.0, **more: Any) -> RetrySpec:
    return RetrySpec(attempts=attempts, backoff=Backoff(kind="fixed"), initial_delay=delay,
                     **more)


def changes(d: Driver) -> list[tuple[str, str, str]]:
    return [(e["name"], e["from"], e["to"]) for e in d.logs("circuit_breaker_state_changed")]


def retry_errors(d: Driver) -> list[str | None]:
    return [e.get("error_code") for e in d.logs("step_retrying")]


@attrs.frozen(kw_only=True)
class Case:
    id: str
    steps: tuple[Step, ...]
    script: dict[str, Any] = attrs.field(factory=dict)
    retry_defaults: RetrySpec | None = None
    exit_code: int = 0
    error_code: str | None = None
    commands: tuple[str, ...]
    changes: tuple[tuple[str, str, str], ...] = ()
    statuses: tuple[str, ...] | None = None
    retry_errors: tuple[str | None, ...] | None = None


OPEN = ("closed", "open")
HALF = ("open", "half_open")
REOPEN = ("half_open", "open")
CLOSE = ("half_open", "closed")

CASES = [
    Case(id="10#18 opens after 2 failures, rejects until the recovery timeout, half-opens",
         steps=(shell("exit 1", retry=retry(6, circuit_breaker=breaker(
             failure_threshold=2, recovery_timeout=2.5))),),
         script={"exit 1": FAIL}, exit_code=1, error_code="E3009",
         commands=("exit 1",) * 3,
         changes=(("steps[0]", *OPEN), ("steps[0]", *HALF), ("steps[0]", *REOPEN)),
         retry_errors=("E3001", "E3001", "E3009", "E3009", "E3001")),
    Case(id="a success in half_open closes it",
         steps=(shell("flaky", retry=retry(5, circuit_breaker=breaker(
             "api", failure_threshold=2, recovery_timeout=1.5))),),
         script={"flaky": [FAIL, FAIL, R()]}, commands=("flaky",) * 3,
         changes=(("api", *OPEN), ("api", *HALF), ("api", *CLOSE)),
         statuses=("succeeded",), retry_errors=("E3001", "E3001", "E3009")),
    Case(id="named breakers are shared by steps; success_threshold 2 needs two passes",
         steps=(shell("a", allow_failure=True, retry=retry(2, 0.0, circuit_breaker=breaker(
                    "api", failure_threshold=2, recovery_timeout=3, success_threshold=2))),
                shell("b", retry=retry(2, 5.0, circuit_breaker=breaker(
                    "api", failure_threshold=2, recovery_timeout=3, success_threshold=2))),
                shell("c", retry=retry(1, circuit_breaker=breaker(
                    "api", failure_threshold=2, recovery_timeout=3, success_threshold=2)))),
         script={"a": FAIL}, commands=("a", "a", "b", "c"),
         changes=(("api", *OPEN), ("api", *HALF), ("api", *CLOSE)),
         statuses=("failed_allowed", "succeeded", "succeeded")),
    Case(id="retry_on without circuit_open does not retry a rejection",
         steps=(shell("a", allow_failure=True, retry=retry(2, 0.0, circuit_breaker=breaker(
                    "api", failure_threshold=2))),
                shell("b", retry=retry(3, 0.0, retry_on=(RetryMatcher(
                    kind="exit_code", exit_codes=(1,)),), circuit_breaker=breaker("api")))),
         script={"a": FAIL}, exit_code=1, error_code="E3009", commands=("a", "a"),
         changes=(("api", *OPEN),), statuses=("failed_allowed", "failed")),
    Case(id="retry_on circuit_open retries a rejection after the backoff",
         steps=(shell("a", allow_failure=True, retry=retry(2, 0.0, circuit_breaker=breaker(
                    "api", failure_threshold=2, recovery_timeout=10))),
                shell("b", retry=retry(2, 30.0, retry_on=(RetryMatcher(kind="circuit_open"),),
                                       circuit_breaker=breaker("api", recovery_timeout=10)))),
         script={"a": FAIL}, commands=("a", "a", "b"),
         changes=(("api", *OPEN), ("api", *HALF), ("api", *CLOSE)),
         statuses=("failed_allowed", "succeeded")),
    Case(id="unnamed breakers belong to their step",
         steps=(shell("a", allow_failure=True, retry=retry(2, 0.0, circuit_breaker=breaker(
                    failure_threshold=2))),
                shell("b", retry=retry(1, circuit_breaker=breaker(failure_threshold=2)))),
         script={"a": FAIL}, commands=("a", "a", "b"), changes=(("steps[0]", *OPEN),),
         statuses=("failed_allowed", "succeeded")),
    Case(id="a pass resets the consecutive failures",
         steps=tuple(shell(text, allow_failure=True, retry=retry(1, circuit_breaker=breaker(
             "api", failure_threshold=2))) for text in ("f1", "ok", "f2", "ok")),
         script={"f1": FAIL, "f2": FAIL}, commands=("f1", "ok", "f2", "ok"), changes=()),
    Case(id="retry_defaults breakers apply to steps without retry",
         steps=(shell("x"), shell("y")),
         retry_defaults=retry(2, 0.0, circuit_breaker=breaker("all", failure_threshold=2)),
         script={"x": FAIL}, exit_code=1, error_code="E3001", commands=("x", "x"),
         changes=(("all", *OPEN),)),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_breaker_table(case: Case) -> None:
    d = Driver(run_machine.start(Workflow(name="t", steps=case.steps),
                                 make_ctx(retry_defaults=case.retry_defaults)))
    finish = d.run(case.script)
    assert finish.exit_code == case.exit_code, d.printed
    assert tuple(d.commands) == case.commands
    assert tuple(changes(d)) == case.changes
    if case.error_code is not None:
        assert finish.outcome["error_code"] == case.error_code  # type: ignore[index]
    if case.statuses is not None:
        assert tuple(d.statuses) == case.statuses
    if case.retry_errors is not None:
        assert tuple(retry_errors(d)) == case.retry_errors


def test_rejection_is_reported_and_uses_event_time() -> None:
    step = shell("x", retry=retry(3, 1.0, circuit_breaker=breaker(
        "api", failure_threshold=1, recovery_timeout=60)))
    d = Driver(run_machine.start(Workflow(name="t", steps=(step,)), make_ctx()), now=100.0)
    d.finish_command(1, duration=2.0)  # opens at t=102
    assert changes(d) == [("api", *OPEN)]
    d.sleep_done()  # t=103: rejected
    assert "Circuit breaker 'api' is open; 'shell: x' was not started" in d.printed
    (retrying,) = d.logs("step_retrying")[1:]
    assert retrying["error"] == "Circuit breaker 'api' is open"
    d.sleep_done()  # t=104: rejected again, attempts exhausted
    assert d.finish.exit_code == 1
    assert d.finish.outcome["error_code"] == "E3009"  # type: ignore[index]
    assert "error[E3009]: Circuit breaker 'api' is open" in d.printed
    assert d.state.breakers.get("api").status == "open"
    assert len(d.of(RunCommand)) == 1


def test_dry_run_ignores_breakers() -> None:
    step = shell("x", retry=retry(2, circuit_breaker=breaker(failure_threshold=1)))
    d = Driver(run_machine.start(Workflow(name="t", steps=(step,)), make_ctx(dry_run=True)))
    command = d.pending(RunCommand)
    d.send(CommandFinished(command_id=command.command_id, exit_code=0, planned=True))
    assert d.finish.exit_code == 0 and not changes(d)


def test_breaker_state_machine() -> None:
    spec = CircuitBreakerSpec(failure_threshold=1, recovery_timeout=10, success_threshold=2,
                              half_open_requests=1)
    b = Breakers()
    b, ok, _ = admit(b, "n", spec)
    b, moved = record(b, "n", spec, passed=False)
    assert ok and moved == (("n", "closed", "open"),)
    b, ok, moved = admit(observe(b, 9.9), "n", spec)
    assert not ok and moved == ()
    b, ok, moved = admit(observe(b, 10.0), "n", spec)
    assert ok and moved == (("n", "open", "half_open"),)
    # one execution at a time while half-open
    b, ok, moved = admit(b, "n", spec)
    assert not ok and moved == ()
    b, moved = record(b, "n", spec, passed=True)
    assert moved == () and b.get("n") == Breaker(status="half_open", successes=1)
    b, ok, _ = admit(b, "n", spec)
    b, moved = record(b, "n", spec, passed=True)
    assert ok and moved == (("n", "half_open", "closed"),) and b.get("n") == Breaker()
    # time never goes backwards
    assert observe(b, 3.0).now == 10.0
