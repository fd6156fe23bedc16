"""What a MapReduce job shows on the terminal (spec 05 §10.6, §18): progress and failures.

Theory of operation
-------------------
While agents run, a ticker ``Sleep`` of ``progress_interval`` (set only for an interactive
console) prints ``progress_line`` every interval; each item that reaches a final status
prints one line (``job_agents``).  How the *failures* are reported is
``error_policy.error_collection``, which only affects the terminal:

``aggregate``   (default) the final summary lists the failed items
``immediate``   each final failure prints its error in full when it happens
``batched:N``   final failures are kept in ``unreported`` and printed N at a time; the
                rest when the map phase ends (or the job stops)

A failure the item retries (``on_item_failure: retry``) is not final and prints only
its one retry line.  Nothing here is saved: after a resume, failures of the earlier run
are in the summary only with ``aggregate``.
"""

from __future__ import annotations

import attrs

from prodigy_core.effects import Effect, Print, Sleep
from prodigy_core.job_state import JobState

Moves = tuple[JobState, list[Effect]]

SUMMARY_FAILURES = 20  # failed items listed in an ``aggregate`` summary
DETAIL_LINES = 20  # lines of an error printed by ``immediate``


# --- progress ------------------------------------------------------------------------


def arm_ticker(state: JobState) -> Moves:
    interval = state.ctx.progress_interval
    if interval is None or state.ticker is not None or state.phase != "map":
        return state, []
    state, cid = attrs.evolve(state, next_id=state.next_id + 1), state.next_id
    return attrs.evolve(state, ticker=cid), [Sleep(command_id=cid, seconds=interval)]


def on_tick(state: JobState) -> Moves:
    state = attrs.evolve(state, ticker=None)
    if state.phase != "map" or state.cancel_signal is not None:
        return state, []
    interval = state.ctx.progress_interval or 0.0
    if state.map_started is None:
        state = attrs.evolve(state, map_started=state.mono - interval)
    # agents that started before any clock reading: count from one tick ago
    started = state.agent_started
    for index in state.agents:
        if index not in started:
            started = started.set(index, state.mono - interval)
    state = attrs.evolve(state, agent_started=started)
    effects: list[Effect] = [Print(text=progress_line(state), level="progress")]
    state, more = arm_ticker(state)
    return state, [*effects, *more]


def note_starts(state: JobState) -> JobState:
    """Remember when each running agent started (for the progress line)."""
    started = state.agent_started
    for index in state.agents:
        if index not in started and state.mono:
            started = started.set(index, state.mono)
    for index in list(started):
        if index not in state.agents:
            started = started.remove(index)
    return attrs.evolve(state, agent_started=started)


def duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


def progress_line(state: JobState) -> str:
    """``Map: 3/10 done, 1 failed, 2 running, 4 pending · 1m20s · ETA 2m10s · $0.12``."""
    done, failed = state.count("succeeded"), state.count("failed")
    running = len(state.agents)
    merging = state.count("merging")
    pending = state.count("pending")
    parts = [f"Map: {done + failed}/{state.total} done, {failed} failed, {running} running, "
             f"{pending} pending" + (f", {merging} merging" if merging else "")]
    if state.map_started is not None:
        elapsed = state.mono - state.map_started
        parts.append(duration(elapsed))
        finished = state.finished_this_run
        left = pending + running + merging
        if finished and left:
            parts.append(f"ETA {duration(elapsed / finished * left)}")
    parts.append(f"${state.cost:.2f}")
    agents = sorted(state.agents.values(), key=lambda a: a.index)
    if agents:
        shown = ", ".join(
            f"{state.item_id(a.index)} {duration(state.mono - state.agent_started[a.index])}"
            if a.index in state.agent_started else state.item_id(a.index) for a in agents[:6])
        more = f" +{len(agents) - 6}" if len(agents) > 6 else ""
        parts.append(f"running: {shown}{more}")
    return " · ".join(parts)


# --- failures (error_collection) -------------------------------------------------------


def collection(state: JobState) -> tuple[str, int]:
    """``("aggregate", 0)``, ``("immediate", 0)`` or ``("batched", N)``."""
    mode = state.workflow.error_policy.error_collection
    if mode.startswith("batched:"):
        return "batched", max(1, int(mode[len("batched:"):].strip() or 1))
    return ("immediate", 0) if mode == "immediate" else ("aggregate", 0)


def failure_text(item_id: str, error_type: str, message: str, *, step: str | None,
                 attempt: int) -> str:
    """A failure in full: ``item_3 failed (CommandFailed) in step 'make', attempt 2:``
    and the error's lines, indented."""
    where = f" in step '{step}'" if step and step not in message else ""
    tries = f", attempt {attempt}" if attempt > 1 else ""
    lines = (message or "failed").splitlines() or ["failed"]
    shown = lines[:DETAIL_LINES]
    if len(lines) > DETAIL_LINES:
        shown.append(f"… {len(lines) - DETAIL_LINES} more lines")
    body = "\n".join(f"    {line}" for line in shown)
    return f"{item_id} failed ({error_type}){where}{tries}:\n{body}"


def item_failed(state: JobState, text: str) -> Moves:
    """An item failed for good; ``text`` is its ``failure_text``."""
    mode, size = collection(state)
    if mode == "immediate":
        return state, [Print(text=text, stream="err")]
    if mode != "batched":
        return state, []
    state = attrs.evolve(state, unreported=(*state.unreported, text))
    if len(state.unreported) < size:
        return state, []
    return flush_failures(state)


def flush_failures(state: JobState) -> Moves:
    """Print the failures ``batched:N`` still holds (at the end of the map phase)."""
    if not state.unreported:
        return state, []
    first, last = state.reported + 1, state.reported + len(state.unreported)
    head = f"Failures {first}–{last}:" if last > first else f"Failure {first}:"
    text = "\n".join([head, *state.unreported])
    state = attrs.evolve(state, unreported=(), reported=last)
    return state, [Print(text=text, stream="err")]


# --- the summary ---------------------------------------------------------------------


def summary_prints(state: JobState) -> list[Effect]:
    ok, failed = state.count("succeeded"), state.count("failed")
    pending = state.count("pending")
    lines = ["Summary", f"  Items: {ok} successful, {failed} failed, {pending} pending "
                        f"(total {state.total})"]
    if state.resumed:
        # spec 05 §16.12: a resumed job says how it ended overall
        steps = state.workflow.reduce.steps if state.workflow.reduce is not None else ()
        if not steps:
            reduce = "none"
        elif state.reduce_index >= len(steps):
            reduce = "completed"
        else:
            reduce = f"stopped at step {state.reduce_index + 1}/{len(steps)}" \
                if state.reduce_index else "not run"
        lines = ["MapReduce Resume Summary", f"  Total: {state.total}, successful: {ok}, "
                 f"failed: {failed}, reduce: {reduce}", *lines]
    if failed and collection(state)[0] == "aggregate":
        lines.append("  Failed items:")
        failures = [i for i, s in sorted(state.item_state.items()) if s == "failed"]
        for index in failures[:SUMMARY_FAILURES]:
            error = state.results.get(index, {}).get("error")
            first = str(error).splitlines()[0] if error else "failed"
            lines.append(f"    {state.item_id(index)}: {first}")
        if len(failures) > SUMMARY_FAILURES:
            lines.append(f"    … and {len(failures) - SUMMARY_FAILURES} more "
                         f"(prodigy dlq list --job-id {state.config.job_id})")
    if state.cost:
        lines.append(f"  Claude: ${state.cost:.2f}")
    return [Print(text="\n".join(lines))]
