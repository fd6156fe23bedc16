"""``foreach`` steps: a nested step list once per item, up to ``parallel`` at once
(spec 12 §3).

Theory of operation
-------------------
One execution of a ``foreach`` step is the whole pass over its items.  ``execute``
finds the items — the YAML list, the array a single ``${reference}`` holds, or the
lines a shell command prints (stage ``foreach_items``) — and then the frame waits in
stage ``foreach`` while *lanes* run.  A lane is one item's ``do`` list with a step
machine of its own (``Lane.stepper``, driven through ``stepper.begin_seq`` and
``stepper.on_event``), so several items can wait for the world at once; each lane sees
the enclosing scope's variables plus ``item``, ``index``, ``total``, ``item_index`` and
``item_total``, and its captures stay in the lane.  Command ids come from the enclosing
machine's counter, so they are unique across lanes, and an event is routed to the lane
waiting for its id.

When a lane ends, its item's result is recorded (``ForeachState.results``); an item
failure without ``continue_on_error`` stops new items from starting.  When no lane is
left and no item may start, the verdict becomes the execution's ``ExecResult`` and goes
through the usual checks and attempt loop (``step_checks``).

Resume: the run machine checkpoints ``progress`` of a top-level ``foreach`` whenever an
item finishes; a resumed run hands the finished items back (``Stepper.foreach_done``)
and only the others run.
"""

from __future__ import annotations

import hashlib
import json
import re

import attrs
from pyrsistent import PMap, pmap

from prodigy_core import analytics, step_checks, stepper
from prodigy_core.context import child_environment
from prodigy_core.effects import CancelCommands, LogEvent, Print, RunCommand, Sleep
from prodigy_core.events import ClaudeLine, CommandFinished, CommandNotStarted, Event, Slept
from prodigy_core.interpolate import Var, interpolate, lookup
from prodigy_core.json_values import JSON, dumps_compact
from prodigy_core.model import ForeachSpec
from prodigy_core.problems import InvalidTransition
from prodigy_core.results import ExecResult, seconds_text
from prodigy_core.step_frames import ForeachState, Lane, Outcome, StepFrame, Stepper, Tx
from prodigy_core.work_items import item_binding, output_lines

_REFERENCE = re.compile(r"^\s*\$\{([^${}]+)\}\s*$|^\s*\$([A-Za-z_][A-Za-z0-9_]*)\s*$")

Progress = tuple[tuple[int, bool, str, str], ...]


def item_key(item: JSON) -> str:
    """A short digest of an item's value: a resumed run finds a finished item again even
    when a command lists the items in another order or with new ones."""
    return hashlib.sha256(dumps_compact(item).encode("utf-8")).hexdigest()[:16]


def _spec(frame: StepFrame) -> ForeachSpec:
    assert frame.step.foreach is not None
    return frame.step.foreach


def progress(st: Stepper) -> Progress | None:
    """The finished items ``(index, success, error, key)`` of a top-level ``foreach`` in
    progress (None when the scope's step is not a running ``foreach``)."""
    if not st.stack:
        return None
    root = st.stack[0]
    if not isinstance(root, StepFrame) or not root.root or root.each is None:
        return None
    items = root.each.items
    return tuple((i, ok, err, item_key(items[i]) if i < len(items) else "")
                 for i, (ok, err) in sorted(root.each.results.items()))


# --- the items ----------------------------------------------------------------------------


def execute(tx: Tx, frame: StepFrame) -> None:
    """Start one execution: find the items (or plan the step in a dry run)."""
    if tx.ctx.dry_run:
        result = ExecResult(exit_code=0, passed=True, planned=True)
        tx.replace_top(attrs.evolve(frame, last=result))
        step_checks.after_result(tx, frame, result, 0.0)
        return
    spec = _spec(frame)
    if spec.items_json is not None:
        loaded = json.loads(spec.items_json)
        _start(tx, tuple(loaded) if isinstance(loaded, list) else ())
        return
    source = spec.source or ""
    reference = _REFERENCE.match(source)
    if reference is not None:
        name = (reference.group(1) or reference.group(2)).strip()
        var = lookup(name, tx.visible(), tx.ctx.environ_map)
        if var is None:
            _fail(tx, f"foreach: variable '{name}' is not set", "E2001")
            return
        value = var.value
        if isinstance(value, list):
            _start(tx, tuple(value))
        elif isinstance(value, str):
            _start(tx, tuple(output_lines(value)))  # one item per line (docs/decisions.md)
        else:
            _fail(tx, f"foreach: '{name}' is not a list (it is {dumps_compact(value)[:60]})",
                  "E3011")
        return
    text = interpolate(source, tx.visible(), shell=True, environ=tx.ctx.environ_map).text
    env = child_environment(
        tx.ctx, step_env=dict(frame.env), clear=frame.step.clear_env,
        iteration=tx.st.iteration, attempt=frame.executions, input_index=tx.st.input_index,
        timeout=frame.timeout)
    cid = tx.new_id()
    tx.replace_top(attrs.evolve(frame, stage="foreach_items", pending=cid))
    tx.emit(RunCommand(command_id=cid, argv=("sh", "-c", text), cwd=frame.cwd, env=env,
                       timeout=frame.timeout, stream_output=False,
                       display=f"{frame.display} (items)",
                       step_path=f"{frame.path}.foreach.items",
                       memory_limit_mb=tx.ctx.memory_limit_mb))


def on_items(tx: Tx, frame: StepFrame, event: Event) -> None:
    """The item command ended (stage ``foreach_items``)."""
    if not isinstance(event, CommandFinished | CommandNotStarted):
        raise InvalidTransition(f"foreach items cannot come from {type(event).__name__}")
    tx.replace_top(attrs.evolve(frame, stage="running"))
    if isinstance(event, CommandNotStarted):
        _fail(tx, f"foreach: the item command did not start: {event.message}", "E3011")
        return
    if event.timed_out or event.exit_code != 0:
        why = "timed out" if event.timed_out else f"failed with exit code {event.exit_code}"
        detail = (event.stderr.strip() or event.stdout.strip()).splitlines()[:3]
        text = f"foreach: the item command {why}"
        if detail:
            text += ": " + " / ".join(detail)
        _fail(tx, text, "E3011", duration=event.duration)
        return
    _start(tx, tuple(output_lines(event.stdout)), elapsed=event.duration)


def _fail(tx: Tx, message: str, code: str, duration: float = 0.0) -> None:
    """The items could not be found: the execution fails."""
    frame = tx.top
    assert isinstance(frame, StepFrame)
    result = ExecResult(exit_code=1, passed=False, error_class="command_failed",
                        error_code=code, message=message, duration=duration)
    tx.replace_top(attrs.evolve(frame, last=result, stage="running"))
    step_checks.after_result(tx, frame, result, 0.0)


def _start(tx: Tx, items: tuple[JSON, ...], elapsed: float = 0.0) -> None:
    frame = tx.top
    assert isinstance(frame, StepFrame)
    spec = _spec(frame)
    if spec.max_items is not None:
        items = items[:spec.max_items]
    results: PMap[int, tuple[bool, str]] = pmap()
    if frame.root and tx.st.foreach_done:
        results = pmap(_restore(items, tx.st.foreach_done))
        tx.st = attrs.evolve(tx.st, foreach_done=())
    stopping = not spec.continue_on_error and any(not ok for ok, _ in results.values())
    first = min((i for i, (ok, _) in results.items() if not ok), default=None)
    state = ForeachState(items=items, results=results, restored=frozenset(results),
                         elapsed=elapsed, stopping=stopping, first_failure=first)
    if frame.timeout is not None:
        cid = tx.new_id()
        state = attrs.evolve(state, timer=cid)
        tx.emit(Sleep(command_id=cid, seconds=max(frame.timeout - elapsed, 0.0)))
    note = f", {len(results)} finished before the resume" if results else ""
    tx.emit(Print(text=f"  foreach: {len(items)} items (parallel {spec.parallel}){note}"))
    tx.replace_top(attrs.evolve(frame, stage="foreach", each=state))
    _fill(tx)


def _restore(items: tuple[JSON, ...], done: tuple[tuple[int, bool, str, str], ...]
             ) -> dict[int, tuple[bool, str]]:
    """The finished items of a resumed step, found by value (their key) where it is
    known, else by position."""
    keys = [item_key(item) for item in items]
    found: dict[int, tuple[bool, str]] = {}
    for index, ok, err, key in done:
        if not key:
            if index < len(items):
                found.setdefault(index, (ok, err))
            continue
        if index < len(items) and keys[index] == key and index not in found:
            found[index] = (ok, err)
            continue
        for j, other in enumerate(keys):
            if other == key and j not in found:
                found[j] = (ok, err)
                break
    return found


# --- lanes ------------------------------------------------------------------------------


def _fill(tx: Tx) -> None:
    """Start items while lanes are free; conclude when nothing runs or may start."""
    frame = tx.top
    assert isinstance(frame, StepFrame) and frame.each is not None
    spec = _spec(frame)
    while True:
        frame = tx.top
        assert isinstance(frame, StepFrame) and frame.each is not None
        each = frame.each
        index = each.next
        while index < len(each.items) and index in each.results:
            index += 1
        if each.stopping or index >= len(each.items) or len(each.lanes) >= spec.parallel:
            tx.replace_top(attrs.evolve(frame, each=attrs.evolve(each, next=index)))
            break
        tx.replace_top(attrs.evolve(frame, each=attrs.evolve(each, next=index + 1)))
        _start_lane(tx, index)
    frame = tx.top
    assert isinstance(frame, StepFrame) and frame.each is not None
    each = frame.each
    if each.lanes or each.draining:
        return
    if each.timer is not None:
        if not each.closing:
            # the step's time limit is not needed any more: stop its Sleep, then conclude
            tx.replace_top(attrs.evolve(frame, each=attrs.evolve(each, closing=True)))
            tx.emit(CancelCommands(command_ids=(each.timer,)))
        return
    _conclude(tx)


def _item_locals(each: ForeachState, index: int) -> PMap[str, Var]:
    values = item_binding(each.items[index])
    total = len(each.items)
    values.update({"index": Var(value=index), "total": Var(value=total),
                   "item_index": Var(value=index), "item_total": Var(value=total)})
    return pmap(values)


def _lane_base(tx: Tx, lane: Lane) -> PMap[str, Var]:
    base: PMap[str, Var] = tx.visible().update(lane.locals)
    return base


def _start_lane(tx: Tx, index: int) -> None:
    frame = tx.top
    assert isinstance(frame, StepFrame) and frame.each is not None
    spec = _spec(frame)
    lane = Lane(index=index, locals=_item_locals(frame.each, index), stepper=Stepper(
        next_id=tx.st.next_id, iteration=tx.st.iteration, input_index=tx.st.input_index,
        step_number=tx.st.step_number, git_step=tx.st.git_step, git_base=tx.st.git_base,
        git_base_read=tx.st.git_base_read))
    prefix = f"{frame.path}.foreach[{index}]"
    paths = tuple(f"{prefix}.do[{i}]" for i in range(len(spec.do)))
    tx.emit(LogEvent(event_type="foreach_item_started", fields=(
        ("step_path", frame.path), ("index", index), ("session_id", tx.ctx.session_id))))
    done = stepper.begin_seq(lane.stepper, tx.ctx, _lane_base(tx, lane), spec.do, paths,
                             tx.breakers, base_env=frame.env, base_cwd=frame.cwd)
    _after_lane(tx, lane, done)


def on_event(tx: Tx, frame: StepFrame, event: Event) -> None:
    """An event for one of the lanes (stage ``foreach``)."""
    assert frame.each is not None
    frame = _observe(tx, frame, event)
    each = frame.each
    assert each is not None
    cid = getattr(event, "command_id", None)
    if cid is not None and cid == each.timer:
        _timer(tx, frame, event)
        return
    if cid in each.draining:
        if not isinstance(event, ClaudeLine):  # an answer of a cancelled item's command
            tx.replace_top(attrs.evolve(frame, each=attrs.evolve(
                each, draining=each.draining - {cid})))
            _fill(tx)
        return
    for lane in each.lanes:
        if cid in lane.stepper.pending_ids:
            st = attrs.evolve(lane.stepper, next_id=tx.st.next_id)
            done = stepper.on_event(st, tx.ctx, _lane_base(tx, lane), event, tx.breakers)
            _after_lane(tx, lane, done)
            return
    raise InvalidTransition(f"no foreach item waits for command {cid}")


def _observe(tx: Tx, frame: StepFrame, event: Event) -> StepFrame:
    """Widen the step's monotonic span with an event's clock reading."""
    assert frame.each is not None
    mono = getattr(event, "monotonic", 0.0) or 0.0
    if mono <= 0:
        return frame
    start = mono - (getattr(event, "duration", 0.0) or 0.0)
    span = frame.each.span
    span = (start, mono) if span is None else (min(span[0], start), max(span[1], mono))
    frame = attrs.evolve(frame, each=attrs.evolve(frame.each, span=span))
    tx.replace_top(frame)
    return frame


def _timer(tx: Tx, frame: StepFrame, event: Event) -> None:
    """The step's ``timeout`` Sleep ended: cancelled after the last item, or fired."""
    if not isinstance(event, Slept):
        raise InvalidTransition(f"the foreach time limit cannot receive {type(event).__name__}")
    each = frame.each
    assert each is not None
    if each.closing:
        tx.replace_top(attrs.evolve(frame, each=attrs.evolve(each, timer=None, closing=False)))
        _conclude(tx)
        return
    # out of time: the running items fail, their commands are stopped (spec 02 §10.2)
    running = tuple(each.lanes)
    draining = frozenset(cid for lane in running for cid in lane.stepper.pending_ids)
    results = each.results
    for lane in running:
        results = results.set(lane.index, (False, "timed out"))
    first = each.first_failure
    if running and first is None:
        first = min(lane.index for lane in running)
    each = attrs.evolve(each, timer=None, timed_out=True, stopping=True, lanes=(),
                        results=results, draining=draining, first_failure=first)
    tx.replace_top(attrs.evolve(frame, each=each))
    tx.emit(Print(text=f"  '{frame.display}' ran out of time; stopping its items",
                  stream="err"))
    if draining:
        tx.emit(CancelCommands(command_ids=tuple(sorted(draining))))
    _fill(tx)


def _after_lane(tx: Tx, lane: Lane, done: stepper.Stepped) -> None:
    """Take a lane transition's effects and ids; record the item when it ended."""
    tx.st = attrs.evolve(tx.st, next_id=max(tx.st.next_id, done.stepper.next_id))
    tx.breakers = done.breakers
    tx.effects.extend(done.effects)
    frame = tx.top
    assert isinstance(frame, StepFrame) and frame.each is not None
    each = frame.each
    others = tuple(other for other in each.lanes if other.index != lane.index)
    if done.outcome is None:
        lanes = tuple(sorted((*others, attrs.evolve(lane, stepper=done.stepper)),
                             key=lambda x: x.index))
        tx.replace_top(attrs.evolve(frame, each=attrs.evolve(each, lanes=lanes)))
        return
    outcome: Outcome = done.outcome
    used = done.stepper.usage
    tx.st = attrs.evolve(tx.st, usage=analytics.combine(tx.st.usage, used),
                         step_usage=analytics.combine(tx.st.step_usage, used))
    ok = outcome.status != "failed"
    error = "" if ok else (outcome.error or "failed").split("\n", 1)[0]
    stopping = each.stopping or (not ok and not _spec(frame).continue_on_error)
    first = each.first_failure
    if not ok and first is None:
        first = lane.index
    each = attrs.evolve(each, lanes=others, results=each.results.set(lane.index, (ok, error)),
                        stopping=stopping, first_failure=first,
                        elapsed=each.elapsed + outcome.duration)
    tx.replace_top(attrs.evolve(frame, each=each))
    mark = "✓" if ok else "✗"
    detail = "" if ok else f": {error}"
    tx.emit(Print(text=f"  {mark} item {lane.index + 1}/{len(each.items)}{detail}",
                  stream="out" if ok else "err"))
    tx.emit(LogEvent(event_type="foreach_item_finished", fields=(
        ("step_path", frame.path), ("index", lane.index), ("success", ok), ("error", error),
        ("item_key", item_key(each.items[lane.index])),
        ("iteration", tx.st.iteration), ("input_index", tx.st.input_index or 0),
        ("session_id", tx.ctx.session_id))))
    _fill(tx)


# --- the verdict ------------------------------------------------------------------------


def _conclude(tx: Tx) -> None:
    frame = tx.top
    assert isinstance(frame, StepFrame) and frame.each is not None
    spec, each = _spec(frame), frame.each
    total = len(each.items)
    ordered = sorted(each.results.items())
    failed = [i for i, (ok, _) in ordered if not ok]
    successful = len(ordered) - len(failed)
    output = f"Foreach completed: {total} total, {successful} successful, {len(failed)} failed"
    tx.emit(Print(text=f"  {output}"))
    results: list[JSON] = [{"index": i, "item": each.items[i], "success": ok,
                            "error": err or None} for i, (ok, err) in ordered]
    extra: dict[str, JSON] = {"output": output, "total": total, "successful": successful,
                              "failed": len(failed), "results": results}
    duration = each.span[1] - each.span[0] if each.span is not None else each.elapsed
    if each.timed_out:
        text = seconds_text(frame.timeout or 0)
        result = ExecResult(exit_code=-1, stdout=output, passed=False, duration=duration,
                            error_class="timeout", error_code="E3002",
                            message=f"Step timed out after {text} seconds ({output})")
    elif failed and not spec.continue_on_error:
        first = each.first_failure if each.first_failure is not None else failed[0]
        message = (f"foreach: {len(failed)} of {total} items failed; first failure: item "
                   f"{first + 1}/{total}: {each.results[first][1]}")
        result = ExecResult(exit_code=1, stdout=output, passed=False, duration=duration,
                            error_class="command_failed", error_code="E3011",
                            message=message)
    else:
        if failed:
            names = ", ".join(str(i + 1) for i in failed)
            tx.emit(Print(text=f"warning[W3007]: foreach '{frame.display}': {len(failed)} of "
                               f"{total} items failed (continue_on_error): item(s) {names}",
                          stream="err"))
        result = ExecResult(exit_code=0, stdout=output, passed=True, duration=duration)
    result = step_checks.record(tx, frame, result, extra)
    top = tx.top
    assert isinstance(top, StepFrame)
    tx.replace_top(attrs.evolve(top, last=result, each=None, stage="running"))
    step_checks.after_result(tx, top, result, 0.0)
