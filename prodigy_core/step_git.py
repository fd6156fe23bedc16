"""Git context variables in the step machine (spec 03 §7): when to read, when to list.

Theory of operation
-------------------
Only steps marked by ``prodigy_core.gitvars`` (``Step.git`` not None) do any of this,
and never in a dry run (the references then stay unresolved and the plan shows them as
written).

*Preflight.*  Before a marked step is prepared (condition, interpolation), its frame
works through ``git_todo``, one effect each, waiting in stage ``git_<task>``:

``base``      the first top-level step of a scope that reads ``workflow.*``, when the
              run has no worktree start commit: ``ReadGitHead`` — the scope's start
``workflow``  the step's texts read ``workflow.*``: ``ListCommits`` since the worktree's
              start commit (or ``base``) — ``workflow.*`` up to the working tree of now
``step``      a handler whose texts read ``step.*``: ``ListCommits`` since the ``HEAD``
              recorded before the owning top-level step — that step, as it stands now

The values become locals of the frame, visible to it and to its handlers.

*Recording.*  In a scope that reads ``step.*`` (``record_start``), a top-level step that
executes records ``HEAD`` first (stage ``git_start``; the ``HEAD`` read for its commit
checks or the ``base`` read serve as well).  When top-level steps read them
(``record_end``), a step that finished, unless skipped, lists what changed since then
(stage ``git_end``, the outcome held in ``ending``).  That listing becomes
``Stepper.git_step``: the ``step.*`` of every later step until the next one finishes.
Before the scope's first step they are empty lists and zeros.

A failed git answer prints a warning and binds nothing, so the references stay
unresolved (E2001 in strict mode).
"""

from __future__ import annotations

import attrs
from pyrsistent import pmap

from prodigy_core import gitvars, step_handlers, stepper
from prodigy_core.context import resolve_dir
from prodigy_core.effects import ListCommits, Print, ReadGitHead
from prodigy_core.events import CommitsListed, Event, GitFailed, GitHeadRead
from prodigy_core.interpolate import interpolate
from prodigy_core.problems import InvalidTransition
from prodigy_core.step_frames import Outcome, StepFrame, Tx


def preflight(tx: Tx, frame: StepFrame) -> bool:
    """Start the git work ``frame`` needs before preparation; False when there is none."""
    use = frame.step.git
    if use is None or tx.ctx.dry_run:
        return False
    todo: list[str] = []
    if frame.root and use.scope_workflow and tx.ctx.start_commit is None \
            and not tx.st.git_base_read:
        todo.append("base")
    if use.workflow:
        todo.append("workflow")
    if use.step and not frame.root and _owner(tx) is not None:
        todo.append("step")
    if not todo:
        return False
    tx.replace_top(attrs.evolve(frame, git_todo=tuple(todo)))
    _next(tx)
    return True


def _owner(tx: Tx) -> StepFrame | None:
    """The top-level step whose handler is running, once its ``HEAD`` was recorded."""
    for frame in tx.st.stack:
        if isinstance(frame, StepFrame) and frame.root:
            return frame if frame.git_started else None
    return None


def _cwd(tx: Tx, frame: StepFrame) -> str:
    """The directory the step will run in (its ``working_dir`` as far as it is known)."""
    wd = frame.step.working_dir
    if wd is None and frame.base_cwd is not None:
        return frame.base_cwd
    if wd is not None and "$" in wd:
        wd = interpolate(wd, tx.visible(), environ=tx.ctx.environ_map).text
    return resolve_dir(tx.ctx, wd)


def _next(tx: Tx) -> None:
    frame = tx.top
    assert isinstance(frame, StepFrame)
    if not frame.git_todo:
        stepper.prepare(tx)
        return
    task = frame.git_todo[0]
    cid = tx.new_id()
    tx.replace_top(attrs.evolve(frame, stage=f"git_{task}", pending=cid,
                                git_todo=frame.git_todo[1:]))
    cwd = _cwd(tx, frame)
    if task == "base":
        tx.emit(ReadGitHead(command_id=cid, cwd=cwd))
    elif task == "workflow":
        since = tx.ctx.start_commit if tx.ctx.start_commit is not None else tx.st.git_base
        tx.emit(ListCommits(command_id=cid, cwd=cwd, since=since))
    else:
        owner = _owner(tx)
        assert owner is not None
        tx.emit(ListCommits(command_id=cid, cwd=cwd, since=owner.git_start))


def records(tx: Tx, frame: StepFrame) -> bool:
    """Must ``HEAD`` be recorded before this step executes (its ``step.*`` are wanted)?"""
    use = frame.step.git
    return (frame.root and use is not None and use.record_start and not frame.git_started
            and not tx.ctx.dry_run)


def note_head(tx: Tx, frame: StepFrame, sha: str | None) -> StepFrame:
    """A ``HEAD`` read before the step's execution also serves as its recorded start."""
    if records(tx, frame):
        return attrs.evolve(frame, git_started=True, git_start=sha)
    return frame


def finishing(tx: Tx, frame: StepFrame, outcome: Outcome, print_failure: bool) -> bool:
    """Hold a finished top-level step back while its ``step.*`` are listed."""
    use = frame.step.git
    if not frame.git_started or outcome.status == "skipped" or use is None \
            or not use.record_end:
        return False
    cid = tx.new_id()
    tx.replace_top(attrs.evolve(frame, stage="git_end", pending=cid, ending=outcome,
                                ending_print=print_failure))
    tx.emit(ListCommits(command_id=cid, cwd=frame.cwd or tx.ctx.project_dir,
                        since=frame.git_start))
    return True


def _warn(tx: Tx, frame: StepFrame, event: GitFailed) -> None:
    first = event.message.strip().split("\n", 1)[0] or event.operation
    tx.emit(Print(text=f"warning: cannot read the git context of '{frame.display}': {first}",
                  stream="err"))


def on_event(tx: Tx, frame: StepFrame, event: Event) -> None:
    """An answer to one of this module's effects (the frame waits in a ``git_`` stage)."""
    stage = frame.stage
    if stage == "git_base" and isinstance(event, GitHeadRead):
        tx.st = attrs.evolve(tx.st, git_base=event.sha, git_base_read=True)
        tx.replace_top(note_head(tx, frame, event.sha))
        _next(tx)
    elif stage in ("git_workflow", "git_step") and isinstance(event, CommitsListed | GitFailed):
        if isinstance(event, GitFailed):
            _warn(tx, frame, event)
        elif not event.planned:
            values = gitvars.variables(stage[len("git_"):], event)
            frame = attrs.evolve(frame, locals=frame.locals.update(values))
            tx.replace_top(frame)
        _next(tx)
    elif stage == "git_start" and isinstance(event, GitHeadRead):
        tx.replace_top(attrs.evolve(frame, git_started=True, git_start=event.sha))
        stepper.execute(tx)
    elif stage == "git_end" and isinstance(event, CommitsListed | GitFailed):
        if isinstance(event, GitFailed):
            _warn(tx, frame, event)
            tx.st = attrs.evolve(tx.st, git_step=pmap())
        elif not event.planned:
            tx.st = attrs.evolve(tx.st, git_step=pmap(gitvars.variables("step", event)))
        outcome = frame.ending
        assert outcome is not None
        tx.replace_top(attrs.evolve(frame, git_started=False, ending=None))
        step_handlers.finish(tx, outcome, print_failure=frame.ending_print)
    else:
        raise InvalidTransition(f"stage {stage!r} cannot receive {type(event).__name__}")
