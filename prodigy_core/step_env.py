"""Workflow env values computed when a step's environment is built (spec 11 §2.2, §2.3).

Theory of operation
-------------------
Static workflow env values are computed once, at start (``prodigy_core.envresolve``).
Conditional values and dynamic values (``{command: CMD}``) are computed again each time
a step's environment is built.  ``RunContext.late_env`` lists those entries in
evaluation order (only entries that are the final definition of their name).  Before a
step's condition and interpolation (``stepper.prepare``), ``evaluate`` walks the list
for the top frame:

- a conditional value is its ``when`` expression evaluated against the variables of that
  moment: the step's visible variables, with the values computed so far;
- a dynamic value runs ``sh -c CMD`` in the session worktree (``RunContext.project_dir``)
  with a 60 s limit: a ``RunCommand`` whose ``CommandFinished`` comes back to
  ``on_command`` (stage ``env``), which takes the stdout without its trailing newlines
  and goes on with the next entry;
- a dynamic value with ``cache: true`` runs once per run: a value known before the run
  (``RunContext.env_cache``) or computed by an earlier step (the scope variable
  ``workflow.cached_env.NAME``, which the checkpoint saves with the other variables, so
  that a resumed run reuses it) is taken as it is.

The values are kept in ``StepFrame.wf_env``: they replace the start values as
interpolation variables (``Tx.visible``) and lie under the step's own ``env`` in its
child environment.  A dynamic command that fails or times out fails the step with E2005.
In a dry run no dynamic command runs (the start value, if any, stays).
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from prodigy_core import step_handlers, stepper
from prodigy_core.context import RunContext, child_environment
from prodigy_core.effects import RunCommand
from prodigy_core.envresolve import conditional_value
from prodigy_core.events import CommandFinished, CommandNotStarted
from prodigy_core.interpolate import Var
from prodigy_core.model import EnvConditional, EnvDynamic
from prodigy_core.step_frames import StepFrame, Tx, fail_outcome

DYNAMIC_TIMEOUT = 60.0
CACHE_PREFIX = "workflow.cached_env."


def evaluate(tx: Tx) -> bool:
    """Compute the top frame's entries from ``env_index`` on; True while a command runs."""
    frame = tx.top
    assert isinstance(frame, StepFrame)
    late = tx.ctx.late_env
    values = dict(frame.wf_env)
    index = frame.env_index
    while index < len(late):
        name, entry = late[index]
        if isinstance(entry, EnvConditional):
            values[name] = conditional_value(entry, tx.visible(), tx.ctx.environ_map)
            frame = attrs.evolve(frame, wf_env=tuple(values.items()))
            tx.replace_top(frame)  # a later entry sees this value
        else:
            known = _cached(tx, name) if entry.cache else None
            if known is not None:
                values[name] = known
            elif not tx.ctx.dry_run:
                _run(tx, attrs.evolve(frame, wf_env=tuple(values.items()), env_index=index),
                     name, entry)
                return True
        index += 1
    tx.replace_top(attrs.evolve(frame, wf_env=tuple(values.items()), env_index=index,
                                env_ready=True))
    return False


def _cached(tx: Tx, name: str) -> str | None:
    var = tx.visible().get(CACHE_PREFIX + name)
    if var is not None and isinstance(var.value, str):
        return var.value
    return dict(tx.ctx.env_cache).get(name)


def _run(tx: Tx, frame: StepFrame, name: str, entry: EnvDynamic) -> None:
    cid = tx.new_id()
    tx.replace_top(attrs.evolve(frame, stage="env", pending=cid))
    tx.emit(_command(tx.ctx, name, entry, cid, step_env=dict(frame.wf_env),
                     iteration=tx.st.iteration, input_index=tx.st.input_index,
                     path=f"{frame.path}.env.{name}"))


def _command(ctx: RunContext, name: str, entry: EnvDynamic, command_id: int, *,
             step_env: Mapping[str, str], iteration: int, input_index: int | None,
             path: str) -> RunCommand:
    """``sh -c CMD`` of a dynamic entry: in the session worktree, 60 s limit."""
    env = child_environment(ctx, step_env=step_env, clear=False, iteration=iteration,
                            attempt=1, input_index=input_index, timeout=None)
    return RunCommand(command_id=command_id, argv=("sh", "-c", entry.command),
                      cwd=ctx.project_dir, env=env, timeout=DYNAMIC_TIMEOUT,
                      stream_output=False, display=f"env {name}", step_path=path)


def on_command(tx: Tx, frame: StepFrame, event: CommandFinished | CommandNotStarted) -> None:
    """The dynamic command of entry ``env_index`` ended (stage ``env``)."""
    name, entry = tx.ctx.late_env[frame.env_index]
    assert isinstance(entry, EnvDynamic)
    frame = attrs.evolve(frame, stage="start")
    tx.replace_top(frame)
    found = dynamic_value(tx.ctx, frame.env_index, event)
    if isinstance(found, str):
        code = None if isinstance(event, CommandNotStarted) else \
            (-1 if event.timed_out else event.exit_code)
        step_handlers.finish(tx, fail_outcome(found, "E2005", "command_failed", code),
                             print_failure=True)
        return
    value = str(found[1].value)
    if entry.cache:
        tx.st = attrs.evolve(tx.st, vars=tx.st.vars.set(CACHE_PREFIX + name, Var(value=value)))
    values = {**dict(frame.wf_env), name: value}
    tx.replace_top(attrs.evolve(frame, wf_env=tuple(values.items()),
                                env_index=frame.env_index + 1))
    stepper.prepare(tx)


# --- ``cache: true`` values computed when the run starts (spec 11 §2.2) -------------------


def next_cached(ctx: RunContext, variables: Mapping[str, Var], start: int,
                command_id: int) -> tuple[int, RunCommand] | None:
    """The first ``cache: true`` dynamic entry from ``start`` on whose value is not known
    yet, and the command that computes it (in the session worktree, 60 s limit)."""
    if ctx.dry_run:
        return None
    known = dict(ctx.env_cache)
    for index in range(start, len(ctx.late_env)):
        name, entry = ctx.late_env[index]
        if not isinstance(entry, EnvDynamic) or not entry.cache:
            continue
        if CACHE_PREFIX + name in variables or name in known:
            continue
        return index, _command(ctx, name, entry, command_id, step_env={}, iteration=1,
                               input_index=None, path=f"env.{name}")
    return None


def dynamic_value(ctx: RunContext, index: int,
                  event: CommandFinished | CommandNotStarted) -> tuple[str, Var] | str:
    """The scope variable holding dynamic entry ``index``'s value (``cache: true`` ones
    are kept under it), or the E2005 message of a command that failed."""
    name, entry = ctx.late_env[index]
    assert isinstance(entry, EnvDynamic)
    if isinstance(event, CommandNotStarted) or event.timed_out or event.exit_code != 0:
        if isinstance(event, CommandNotStarted):
            why = f"did not start: {event.message}"
        elif event.timed_out:
            why = f"timed out after {int(DYNAMIC_TIMEOUT)} s"
        else:
            why = f"failed with exit code {event.exit_code}"
        message = f"dynamic env '{name}' command {why}: {entry.command}"
        detail = event.stderr.strip() if isinstance(event, CommandFinished) else ""
        return message + ("\n" + "\n".join(detail.splitlines()[:5]) if detail else "") + \
            _where(ctx, name)
    return CACHE_PREFIX + name, Var(value=event.stdout.rstrip("\n"))


def _where(ctx: RunContext, name: str) -> str:
    """The ``  --> file:line:column  at $.path`` line of an env entry, if known."""
    source = dict(ctx.env_sources).get(name)
    return f"\n  --> {source}" if source else ""


def cached_names(variables: Mapping[str, Var]) -> dict[str, Var]:
    """The ``cache: true`` values kept in ``variables``, under their own names (a
    MapReduce job's map input is interpolated and run with them)."""
    return {name[len(CACHE_PREFIX):]: var for name, var in variables.items()
            if name.startswith(CACHE_PREFIX)}
