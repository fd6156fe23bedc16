"""The worktrees of MapReduce agents: ``worktree_config`` (spec 06 §5, §9).

Theory of operation
-------------------
Every agent holds one worktree from the moment it starts until its steps are over
(``prodigy_core.job_agents`` drives the agent; this module decides which worktree, and
what happens to it afterwards).  ``allocation_strategy`` chooses:

``on_demand``  a fresh ``mapreduce-agent-<agent_id>`` under ``<storage>/worktrees/<session
               id>/`` (``CreateWorktree`` mode ``agent``), removed when the steps end —
               kept when the agent failed and ``keep_failed`` is set.
``dedicated``  the same fresh worktree, always kept for inspection; when the agent
               succeeded its ``HEAD`` is detached so that its branch can be merged and
               deleted.  ``prodigy worktree clean --mapreduce`` removes them.
``pooled``     a worktree ``pool-<n>`` of the job's pool (mode ``pool``): an idle one when
               there is one, else a new one with the lowest free ``n``.  At most as many
               exist as agents run at once, so never more than the concurrency limit.
               When the steps end the worktree is detached and goes back to the pool;
               the next agent's ``CreateWorktree`` recycles it (ignored files survive).
               It leaves the pool instead when it is older than ``max_age_secs`` (then
               removed) or when its agent failed with ``keep_failed`` (then moved to
               ``mapreduce-agent-<agent_id>``, so the pool's names stay free); an idle
               one unused for ``idle_timeout_secs`` is rebuilt instead of recycled.  When
               the job ends — completed, failed or interrupted — ``RemovePool`` removes
               every ``pool-<n>`` (with ``cleanup_on_complete``), also ones a crash left.
``reuse``      a worktree of the repository's pool ``<storage>/worktrees/<repo>/.pool/``
               (mode ``shared_pool``).  Which one, and the lock file that keeps other
               jobs away from it, only the performer can know (other processes use the
               pool too); the answer names them.  Release detaches it and unlocks it;
               idle and age limits are applied by the performer at both ends.

The agent's ``FinishAgent`` says what happens to its worktree; an interrupted agent's
branch is always dropped (spec 05 §15.1), and its pool worktree simply goes back.

Crash safety: pool names are derived (``pool-<n>``), so a resumed job finds the pool a
crashed process left: taking ``pool-<n>`` recycles what is there, and ``RemovePool``
sweeps the directory.  One process runs a job at a time (the job lock), and the pool
map in the state gives each worktree to one agent at a time.

``parallel_worktrees`` caps the agents running at once (with ``max_parallel``); worktrees
kept for inspection (``dedicated``, ``keep_failed``) are outside that count.
"""

from __future__ import annotations

import attrs
from pyrsistent import pmap

from prodigy_core import work_items as wi
from prodigy_core.effects import Effect, LogEvent
from prodigy_core.job_ops import FinishAgent
from prodigy_core.job_state import Agent, Failure, JobState, PoolWorktree
from prodigy_core.model import ItemRetry, PoolStrategy, Workflow, WorktreeConfig
from prodigy_core.problems import InvalidTransition
from prodigy_core.worktree_ops import CreateWorktree, RemovePool, WorktreeCreated

DEFAULT = WorktreeConfig()


def settings(state: JobState) -> WorktreeConfig:
    return state.workflow.worktree_config or DEFAULT


def strategy(state: JobState) -> PoolStrategy:
    return settings(state).allocation_strategy


def agent_limit(workflow: Workflow) -> int:
    """Agents at once: ``max_parallel``, capped by ``parallel_worktrees`` (spec 05 §7.1)."""
    spec = workflow.map
    limit = max(1, spec.max_parallel if spec is not None else 1)
    cap = (workflow.worktree_config or DEFAULT).parallel_worktrees
    return min(limit, cap) if cap is not None else limit


def concurrency(state: JobState) -> int:
    return agent_limit(state.workflow)


def _session_path(state: JobState) -> str:
    """Agent worktrees are made from the session worktree (and git runs there)."""
    if state.ctx.worktree is None:
        raise InvalidTransition("a MapReduce job needs a session worktree")
    return state.ctx.worktree.path


def _kept_path(state: JobState, agent: Agent) -> str:
    return f"{state.config.agents_dir}/{wi.agent_worktree_name(agent.agent_id)}"


# --- taking a worktree -----------------------------------------------------------------


def _idle_too_long(state: JobState, slot: PoolWorktree) -> bool:
    limit = settings(state).cleanup_policy.idle_timeout_secs
    return slot.idle_since > 0 and state.mono > 0 and state.mono - slot.idle_since > limit


def _free_name(state: JobState) -> str:
    n = 0
    while f"pool-{n}" in state.pool:
        n += 1
    return f"pool-{n}"


def _pick(state: JobState) -> tuple[PoolWorktree, bool]:
    """The pool worktree for the next agent, and whether it must be rebuilt."""
    idle = sorted((s for s in state.pool.values() if s.user is None),
                  key=lambda s: int(s.name.removeprefix("pool-") or 0))
    fresh = [s for s in idle if not _idle_too_long(state, s)]
    if fresh:
        return fresh[0], False
    if idle:
        return idle[0], True  # unused for too long: removed and made anew
    name = _free_name(state)
    return PoolWorktree(name=name, path=f"{state.config.agents_dir}/{name}"), False


def claim(state: JobState, agent: Agent, command_id: int) -> tuple[JobState, Agent,
                                                                   CreateWorktree]:
    """The worktree of an agent about to start, and the effect that prepares it."""
    cfg = settings(state)
    policy = cfg.cleanup_policy
    base = CreateWorktree(command_id=command_id, repo_root=_session_path(state), path="",
                          branch=agent.branch, base_commit="", mode="agent",
                          lock_path=state.config.repo_lock)
    match cfg.allocation_strategy:
        case "pooled":
            slot, rebuild = _pick(state)
            slot = attrs.evolve(slot, user=agent.index,
                                born=0.0 if rebuild else slot.born)
            state = attrs.evolve(state, pool=state.pool.set(slot.name, slot))
            agent = attrs.evolve(agent, path=slot.path, worktree=slot.name, slot=slot.name)
            return state, agent, attrs.evolve(base, path=slot.path, mode="pool",
                                              fresh=rebuild,
                                              clean_ignored=policy.clean_ignored)
        case "reuse":
            return state, agent, attrs.evolve(
                base, path=state.config.pool_dir, mode="shared_pool",
                clean_ignored=policy.clean_ignored, idle_timeout_secs=policy.idle_timeout_secs,
                max_age_secs=policy.max_age_secs, owner=state.config.job_id)
        case _:
            name = wi.agent_worktree_name(agent.agent_id)
            path = f"{state.config.agents_dir}/{name}"
            agent = attrs.evolve(agent, path=path, worktree=name)
            return state, agent, attrs.evolve(base, path=path)


def created(state: JobState, agent: Agent, event: WorktreeCreated
            ) -> tuple[JobState, Agent, list[Effect]]:
    """The agent has its worktree: count it, log it (spec 06 §9.3)."""
    if strategy(state) == "reuse":
        name = event.path.rstrip("/").rsplit("/", 1)[-1]
        agent = attrs.evolve(agent, path=event.path, worktree=name,
                             lock_file=event.lock_file or None)
    if agent.slot is not None and agent.slot in state.pool:
        slot = state.pool[agent.slot]
        if slot.born == 0.0:
            state = attrs.evolve(state, pool=state.pool.set(
                slot.name, attrs.evolve(slot, born=state.mono)))
    if event.created:
        state = attrs.evolve(state, worktrees_created=state.worktrees_created + 1)
        log = LogEvent(event_type="worktree_created", fields=(
            ("worktree_name", agent.worktree), ("branch", agent.branch),
            ("path", agent.path), ("agent_id", agent.agent_id)))
    else:
        state = attrs.evolve(state, worktrees_reused=state.worktrees_reused + 1)
        log = LogEvent(event_type="worktree_reused", fields=(
            ("worktree_name", agent.worktree), ("agent_id", agent.agent_id),
            ("branch", agent.branch), ("path", agent.path)))
    return state, agent, [log]


def lost(state: JobState, agent: Agent) -> JobState:
    """The agent's worktree could not be made: the pool forgets the name (whatever is on
    disk is rebuilt by the next agent that takes it, or swept at the end)."""
    if agent.slot is None:
        return state
    return attrs.evolve(state, pool=state.pool.discard(agent.slot))


# --- giving it back --------------------------------------------------------------------


def will_retry(state: JobState, attempt: int, failure: Failure) -> bool:
    """Whether a failed item runs again (``on_item_failure: retry``, spec 05 §10.3–10.4)."""
    policy = state.workflow.error_policy
    retry_cfg = policy.retry_config or ItemRetry()
    type_name = wi.error_type_name(wi.error_type(wi.ItemFailure(
        kind=failure.kind, message=failure.message, exit_code=failure.exit_code,
        conflicting_files=failure.conflicting_files)))
    return (policy.on_item_failure == "retry"
            and not wi.manual_review_required(type_name, failure.message)
            and not (failure.kind == "merge_conflict" and failure.branch)
            and attempt < retry_cfg.max_attempts)


def _too_old(state: JobState, slot: PoolWorktree) -> bool:
    limit = settings(state).cleanup_policy.max_age_secs
    return slot.born > 0 and state.mono > 0 and state.mono - slot.born > limit


def finish(state: JobState, agent: Agent, command_id: int) -> tuple[Agent, FinishAgent]:
    """What happens to the agent's worktree now that its steps are over (``FinishAgent``);
    the agent records whether a pool worktree goes back and which worktree is kept."""
    cfg = settings(state)
    policy = cfg.cleanup_policy
    failed = agent.failure is not None and not agent.cancelled
    keep_failed = failed and policy.keep_failed
    # a failed attempt that is retried is re-run from scratch: its partial work is dropped
    # like an interrupted agent's (spec 06 §10.2); the last attempt's branch is kept and
    # named in the DLQ entry
    superseded = failed and not keep_failed and agent.failure is not None and \
        will_retry(state, agent.attempt, agent.failure)
    effect = FinishAgent(command_id=command_id, repo_root=_session_path(state),
                         path=agent.path, branch=agent.branch, base=agent.base or "",
                         discard=agent.cancelled or superseded,
                         lock_path=state.config.repo_lock)
    back = False
    kept: str | None = None
    match cfg.allocation_strategy:
        case "on_demand":
            if keep_failed:
                kept = agent.path
                effect = attrs.evolve(effect, keep=True)
        case "dedicated":
            if not agent.cancelled:
                kept = agent.path if failed else None
                effect = attrs.evolve(effect, keep=True, detach=not failed)
        case "pooled":
            slot = state.pool.get(agent.slot or "")
            if keep_failed:
                kept = _kept_path(state, agent)
                effect = attrs.evolve(effect, keep=True, move_to=kept)
            elif slot is not None and (agent.cancelled or not _too_old(state, slot)):
                back = True
                effect = attrs.evolve(effect, keep=True, detach=True)
        case "reuse":
            effect = attrs.evolve(effect, lock_file=agent.lock_file or "")
            if keep_failed:
                kept = _kept_path(state, agent)
                effect = attrs.evolve(effect, keep=True, move_to=kept)
            else:
                effect = attrs.evolve(effect, keep=True, detach=True,
                                      max_age_secs=policy.max_age_secs,
                                      idle_timeout_secs=policy.idle_timeout_secs)
    return attrs.evolve(agent, slot_back=back, kept=kept), effect


def released(state: JobState, agent: Agent) -> JobState:
    """``AgentReleased``: a pool worktree is idle again, or has left the pool."""
    if agent.slot is None or agent.slot not in state.pool:
        return state
    slot = state.pool[agent.slot]
    if not agent.slot_back:
        return attrs.evolve(state, pool=state.pool.remove(slot.name))
    slot = attrs.evolve(slot, user=None, idle_since=state.mono,
                        born=slot.born or state.mono)
    return attrs.evolve(state, pool=state.pool.set(slot.name, slot))


def cleanup(state: JobState) -> tuple[JobState, list[Effect]]:
    """The job ends: its pool goes (``pooled`` with ``cleanup_on_complete``)."""
    cfg = settings(state)
    if cfg.allocation_strategy != "pooled" or not cfg.cleanup_policy.cleanup_on_complete \
            or not state.items_loaded:
        return state, []
    state = attrs.evolve(state, pool=pmap())
    return state, [RemovePool(repo_root=_session_path(state),
                              directory=state.config.agents_dir,
                              lock_path=state.config.repo_lock)]
