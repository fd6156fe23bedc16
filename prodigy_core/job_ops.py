"""Effects and events of MapReduce jobs (spec 05, spec 09 §4.3–§4.5).

Members of the ``Effect`` union (``prodigy_core.effects``) and the ``Event`` union
(``prodigy_core.events``).  Emitted by the job machine (``prodigy_core.job_machine``).
``LoadWorkItems``, ``FinishAgent`` and ``MeasureWorktree`` are performed *spawned* by
the environment's ``Jobs`` / ``Worktrees``; ``SaveJobState``, ``SaveJobFile``, ``RecordDLQ`` and ``ForgetDLQ`` inline, in
order, by the job store.  Agent worktrees are created with ``CreateWorktree`` (mode
``agent``) and merged with ``MergeBranch`` (``into_worktree``) of
``prodigy_core.worktree_ops``.
"""

from __future__ import annotations

import attrs

from prodigy_core.json_values import JSON
from prodigy_core.reprs import value_class

# ---------------------------------------------------------------------------- effects


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class LoadWorkItems:
    """Read the map input (spec 05 §5.1–§5.3).

    ``input`` (already interpolated) is resolved relative to ``cwd`` (the session
    worktree): an existing file is read as text; a name that looks like a file
    (``.json``, ``.jsonl``, ``.ndjson``, no whitespace) but does not exist is E6001,
    unless setup generated exactly one ``*work-items.json`` file in ``cwd`` since
    ``setup_base`` (spec 05 §4.4); anything else runs as ``sh -c`` in ``cwd`` with
    ``env``, a 300 s timeout and empty standard input (E6003 on failure).  Completes with
    ``WorkItemsLoaded`` or ``WorkItemsFailed``.
    """

    command_id: int
    cwd: str
    input: str
    env: tuple[tuple[str, str], ...] = ()
    setup_base: str | None = None


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class FinishAgent:
    """An agent's steps are over: describe and release its worktree (spec 05 §7.4–§7.6).

    Lists the commits of ``branch`` since ``base`` (oldest first), the files they change,
    and the uncommitted paths left in ``path``; then removes the worktree
    (``git worktree remove --force``, agent worktrees only) unless ``keep``, and deletes
    ``branch`` when it has no new commits — or, with ``discard`` (an interrupted agent
    whose partial work is dropped, spec 05 §15.1), in any case.

    A kept worktree (spec 06 §9): with ``detach`` its ``HEAD`` is detached
    (``git checkout --detach``) so that ``branch`` is free to be merged and deleted (pool
    and ``dedicated`` worktrees; a branch without new commits is deleted as for a removed
    worktree); with ``move_to`` it is moved there (``git worktree move``: a failed
    agent's pool worktree kept with ``keep_failed`` leaves the pool).  ``lock_file`` is
    the lock of a repository pool worktree (``reuse``), removed last; before that, a
    worktree older than ``max_age_secs`` (0: no limit) that would go back to the pool is
    removed instead, and unlocked pool worktrees idle longer than ``idle_timeout_secs``
    are removed.  Completes with ``AgentReleased``.
    """

    command_id: int
    repo_root: str
    path: str
    branch: str
    base: str
    keep: bool = False
    discard: bool = False
    lock_path: str = ""
    detach: bool = False
    move_to: str = ""
    lock_file: str = ""
    max_age_secs: float = 0.0
    idle_timeout_secs: float = 0.0


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class MeasureWorktree:
    """Measure the size of an agent worktree (``resource_limits.max_disk_mb``, spec 06 §9.4).

    Sums the sizes of the regular files under ``path``, not following symbolic links and
    leaving out git's own data (the ``.git`` entry at the top of the worktree).  Completes
    with ``WorktreeMeasured``.
    """

    command_id: int
    path: str


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class SaveJobState:
    """Write a new version of the job state checkpoint (spec 09 §4.3), atomically.

    The store adds ``checkpoint_version``, ``updated_at`` and ``last_event_seq`` (after
    syncing the journal), and keeps the newest three versions.
    """

    doc: dict[str, JSON]


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class SaveJobFile:
    """Write ``<job dir>/<name>`` (``items/<item_id>.json``, ``map-results.json``).

    ``durable`` false: the file is a copy of what the job state holds and is never read
    back by Prodigy (the item files), so it is written atomically but not synced to disk
    — 2,000 items were 2,000 fsyncs before the first agent could start."""

    name: str
    content: JSON
    durable: bool = True


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class RecordDLQ:
    """Add a failed item to the job's DLQ, or count one more failure of it (spec 05 §13)."""

    item_id: str
    item_data: JSON
    failure: dict[str, JSON]
    worktree_artifacts: JSON = None
    error_signature: str = ""
    manual_review_required: bool = False


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class ForgetDLQ:
    """Remove an item's DLQ entry (it succeeded when run again)."""

    item_id: str


# ----------------------------------------------------------------------------- events


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class WorkItemsLoaded:
    """Answer to ``LoadWorkItems``: the input's text and how it was obtained.

    ``kind`` is ``file`` (``name`` the path read) or ``command`` (``text`` its stdout);
    ``generated`` when setup's generated file was used instead of ``map.input``.
    """

    command_id: int
    kind: str
    text: str
    name: str = ""
    generated: bool = False


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class WorkItemsFailed:
    """The map input could not be read (``code`` E6001/E6003)."""

    command_id: int
    code: str
    message: str


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class WorktreeMeasured:
    """Answer to ``MeasureWorktree``: ``size_bytes``, or ``message`` when it could not be
    measured (the worktree is gone, say)."""

    command_id: int
    size_bytes: int = 0
    message: str = ""


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class AgentReleased:
    """Answer to ``FinishAgent``."""

    command_id: int
    commits: tuple[str, ...] = ()
    files: tuple[str, ...] = ()
    uncommitted: tuple[str, ...] = ()
    warning: str | None = None
    monotonic: float = 0.0  # the environment clock when it was released
