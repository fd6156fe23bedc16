"""The immutable model of a workflow definition.

Theory of operation
-------------------
A workflow file is read at the edge (``prodigy_effects.loader``) into plain data plus a
table of source positions; ``prodigy_core.parse`` validates that data and builds the
classes below, or returns every problem it found.  Everything here is inert data:
frozen, keyword-only attrs classes holding tuples, strings, numbers and other model
objects.  Nothing in this module performs I/O or holds callables.

Durations are stored as float seconds.  Ordered mappings (``env``, ``on_exit_code``…)
are tuples of pairs so that the author's order is kept and the value stays hashable.
"""

from __future__ import annotations

from typing import Literal

import attrs

from prodigy_core.reprs import value_class

StepKind = Literal["shell", "claude", "write_file", "foreach", "goal_seek", "workflow"]
CaptureFormat = Literal["string", "json", "lines", "number", "boolean"]
WriteFormat = Literal["text", "json", "yaml"]
BackoffKind = Literal["fixed", "linear", "exponential", "fibonacci", "custom"]
Strategy = Literal["recovery", "fallback", "cleanup", "custom"]
Mode = Literal["standard", "mapreduce"]


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class CaptureStreams:
    """Which companion values ``capture`` stores (spec 02 §11.2)."""

    stdout: bool = True
    stderr: bool = False
    exit_code: bool = True
    success: bool = True
    duration: bool = True


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class WriteFileSpec:
    """A ``write_file:`` command (spec 02 §5). ``path`` and ``content`` are interpolated."""

    path: str
    content: str
    format: WriteFormat = "text"
    mode: str = "0644"
    create_dirs: bool = False


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class Backoff:
    """Delay growth between retries (spec 10 §2.2). Unset delays default to ``initial_delay``."""

    kind: BackoffKind = "exponential"
    initial: float | None = None
    increment: float | None = None
    base: float = 2.0
    delays: tuple[float, ...] = ()


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class RetryMatcher:
    """One ``retry_on`` entry (spec 10 §2.4).

    ``kind`` is a class name (``network``, ``timeout``, ``server_error``, ``rate_limit``,
    ``command_failed``, ``commit_required``, ``validation_failed``, ``claude_error``,
    ``circuit_open``), ``pattern`` (with ``pattern`` set) or ``exit_code`` (with
    ``exit_codes`` set).
    """

    kind: str
    pattern: str | None = None
    exit_codes: tuple[int, ...] = ()


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class CircuitBreakerSpec:
    name: str | None = None
    failure_threshold: int = 5
    recovery_timeout: float = 30.0
    success_threshold: int = 1
    half_open_requests: int = 1


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class RetrySpec:
    """A step's ``retry:`` (spec 10 §2)."""

    attempts: int = 3
    backoff: Backoff = Backoff()
    initial_delay: float = 1.0
    max_delay: float = 30.0
    jitter: bool = False
    jitter_factor: float = 0.3
    retry_on: tuple[RetryMatcher, ...] = ()
    retry_budget: float | None = None
    exhausted: Literal["stop", "continue", "fallback"] = "stop"
    fallback_command: str | None = None
    circuit_breaker: CircuitBreakerSpec | None = None


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class OnFailure:
    """A normalised ``on_failure`` (spec 10 §4).

    ``allow`` is the ``on_failure: true`` form (no handler, failure allowed).
    ``max_attempts`` is already resolved from ``max_retries`` / ``retry_original``;
    a value of 2 or more turns on the fix loop.
    """

    commands: tuple[Step, ...] = ()
    strategy: Strategy = "recovery"
    strategy_given: bool = False
    max_attempts: int | None = None
    fail_workflow: bool | None = None
    handler_failure_fatal: bool = False
    timeout: float | None = None
    capture: str | None = None
    commit_required: bool = False
    allow: bool = False


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class CommitConfig:
    message_template: str | None = None
    message_pattern: str | None = None
    author: str | None = None
    sign: bool = False
    include_files: tuple[str, ...] = ()
    exclude_files: tuple[str, ...] = ()
    squash: bool = False


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class StepValidate:
    commands: tuple[str, ...]
    timeout: float | None = None


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class OnIncomplete:
    """``validate.on_incomplete`` (spec 12 §2.4)."""

    commands: tuple[Step, ...] = ()
    max_attempts: int = 2
    fail_workflow: bool = True
    prompt: str | None = None
    commit_required: bool = False


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class ValidateSpec:
    """A step's completeness ``validate:`` (spec 12 §2). ``expected_schema`` is frozen JSON."""

    commands: tuple[Step, ...] = ()
    result_file: str | None = None
    threshold: float = 100.0
    timeout: float | None = None
    expected_schema: object = None
    on_incomplete: OnIncomplete | None = None


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class GoalSeekSpec:
    """A ``goal_seek:`` step's loop (spec 12 §1).  ``command`` is the nested step run
    each attempt (``shell`` or ``claude``)."""

    goal: str
    command: Step
    validate: str
    validator: Literal["score", "exit_code", "json"] = "score"
    threshold: float = 100.0
    max_attempts: int = 1
    timeout_seconds: float | None = None
    fail_on_incomplete: bool = False


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class ForeachSpec:
    """A ``foreach:`` step (spec 12 §3).

    Exactly one of ``items_json`` (a YAML list, kept as canonical JSON text so the model
    stays hashable) and ``source`` (a reference or a shell command) is set.
    ``parallel`` is already resolved (``false`` → 1, ``true`` → 10).
    """

    do: tuple[Step, ...]
    items_json: str | None = None
    source: str | None = None
    parallel: int = 1
    max_items: int | None = None
    continue_on_error: bool = False


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class GitUse:
    """Which git context variables (spec 03 §7) a step needs; set by ``prodigy_core.gitvars``.

    ``step`` / ``workflow``: the step's own interpolated texts read ``step.*`` /
    ``workflow.*``.  The other fields are set on the top-level steps of a scope only:
    ``record_start`` (some step or handler of the scope reads ``step.*``: record ``HEAD``
    before each executed step), ``record_end`` (some top-level step reads ``step.*``:
    list each executed step's changes when it finishes), ``scope_workflow`` (some step
    or handler reads ``workflow.*``: the scope's start commit is needed).
    """

    step: bool = False
    workflow: bool = False
    record_start: bool = False
    record_end: bool = False
    scope_workflow: bool = False


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class Step:
    """One step, in any scope (spec 02). ``source`` is its ``$.path`` in the file.

    ``git`` is None unless the step's scope uses git context variables (see ``GitUse``).
    """

    kind: StepKind
    command: str = ""
    write_file: WriteFileSpec | None = None
    name: str | None = None
    id: str | None = None
    when: str | bool | None = None
    timeout: float | None = None
    retry: RetrySpec | None = None
    on_success: Step | None = None
    on_failure: OnFailure | None = None
    on_exit_code: tuple[tuple[int, Step], ...] = ()
    allow_failure: bool = False
    capture: str | None = None
    capture_format: CaptureFormat = "string"
    capture_streams: CaptureStreams = CaptureStreams()
    capture_output: bool = True
    output_file: str | None = None
    env: tuple[tuple[str, str], ...] = ()
    clear_env: bool = False
    working_dir: str | None = None
    commit_required: bool = False
    auto_commit: bool = False
    commit_config: CommitConfig | None = None
    outputs: tuple[tuple[str, str], ...] = ()
    step_validate: StepValidate | None = None
    skip_validation: bool = False
    ignore_validation_failure: bool = False
    validation_timeout: float | None = None
    model: str | None = None
    validate: ValidateSpec | None = None
    goal_seek: GoalSeekSpec | None = None
    foreach: ForeachSpec | None = None
    legacy_test: bool = False
    git: GitUse | None = None
    source: str = "$"


# --- environment values (spec 11 §2) -------------------------------------------------


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class EnvStatic:
    """A literal value (interpolated once at start). ``None`` unsets the name."""

    value: str | None
    secret: bool = False


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class EnvDynamic:
    command: str
    cache: bool = False


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class EnvConditional:
    condition: str
    when_true: str
    when_false: str


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class EnvPerProfile:
    values: tuple[tuple[str, str | None], ...]
    default: str | None = None
    has_default: bool = False


EnvValue = EnvStatic | EnvDynamic | EnvConditional | EnvPerProfile


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class SecretSource:
    provider: Literal["env", "file"]
    key: str


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class EnvFile:
    path: str
    required: bool = False


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class Profile:
    name: str
    description: str | None = None
    values: tuple[tuple[str, EnvValue], ...] = ()


# --- phases -----------------------------------------------------------------------------


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class CaptureOutputSpec:
    """One ``setup.capture_outputs`` entry (spec 05 §4.3)."""

    command_index: int
    source: Literal["stdout", "stderr", "both"] = "stdout"
    pattern: str | None = None
    json_path: str | None = None
    max_size: int = 1048576
    multiline: Literal["preserve", "join", "first_line", "last_line", "array"] = "preserve"
    default: object = None
    has_default: bool = False


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class StepList:
    """A phase's steps with its optional phase timeout (``setup``, ``reduce``, ``merge``)."""

    steps: tuple[Step, ...] = ()
    timeout: float | None = None
    capture_outputs: tuple[tuple[str, CaptureOutputSpec], ...] = ()


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class TimeoutConfig:
    """``map.timeout_config`` (spec 05 §11)."""

    agent_timeout_secs: float | None = None
    command_timeouts: tuple[tuple[str, float], ...] = ()
    timeout_policy: Literal["hybrid", "per_agent", "per_command"] = "hybrid"
    cleanup_grace_period_secs: float = 30.0
    timeout_action: Literal["dlq", "skip", "fail", "graceful_terminate"] = "dlq"
    enable_monitoring: bool = True


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class ItemRetry:
    """``error_policy.retry_config``: item-level retry (spec 05 §10.4)."""

    max_attempts: int = 3
    backoff: Backoff = Backoff()
    initial_delay: float = 1.0
    max_delay: float = 30.0
    jitter: bool = False


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class JobBreaker:
    """``error_policy.circuit_breaker`` (spec 05 §10.5)."""

    failure_threshold: int = 5
    success_threshold: int = 3
    timeout: float = 30.0
    half_open_requests: int = 3


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class ErrorPolicy:
    """The MapReduce item failure policy (spec 05 §1.4, §10), shorthands already merged."""

    on_item_failure: Literal["dlq", "retry", "skip", "stop"] = "dlq"
    continue_on_failure: bool = True
    max_failures: int | None = None
    failure_threshold: float | None = None
    error_collection: str = "aggregate"
    retry_config: ItemRetry | None = None
    circuit_breaker: JobBreaker | None = None


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class MapSpec:
    """The ``map:`` block of a MapReduce workflow (spec 05 §1). Run by a later issue."""

    input: str
    json_path: str | None = None
    filter: str | None = None
    sort_by: str | None = None
    distinct: str | None = None
    offset: int | None = None
    max_items: int | None = None
    max_parallel: int = 10
    agent_timeout_secs: float | None = None
    agent_template: tuple[Step, ...] = ()
    timeout_config: TimeoutConfig | None = None


PoolStrategy = Literal["on_demand", "pooled", "reuse", "dedicated"]


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class PoolCleanup:
    """``worktree_config.cleanup_policy`` (spec 06 §9.1); durations in seconds."""

    idle_timeout_secs: float = 300.0
    max_age_secs: float = 3600.0
    cleanup_on_complete: bool = True
    keep_failed: bool = False
    clean_ignored: bool = False


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class ResourceLimits:
    """``worktree_config.resource_limits`` (spec 06 §9.4)."""

    max_disk_mb: int | None = None
    max_memory_mb: int | None = None


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class WorktreeConfig:
    """``worktree_config``: how MapReduce agents get their worktrees (spec 06 §9).

    ``parallel_worktrees`` None is unlimited; ``resource_limits`` None when absent.
    """

    parallel_worktrees: int | None = None
    allocation_strategy: PoolStrategy = "on_demand"
    cleanup_policy: PoolCleanup = PoolCleanup()
    resource_limits: ResourceLimits | None = None


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class Workflow:
    """A validated workflow. ``steps`` is the standard step list (empty for MapReduce)."""

    name: str
    mode: Mode = "standard"
    description: str | None = None
    version: str | None = None
    env: tuple[tuple[str, EnvValue], ...] = ()
    secrets: tuple[tuple[str, SecretSource], ...] = ()
    env_files: tuple[EnvFile, ...] = ()
    profiles: tuple[Profile, ...] = ()
    inherit_env: bool = True
    strict_variables: bool = False
    retry_defaults: RetrySpec | None = None
    steps: tuple[Step, ...] = ()
    merge: StepList | None = None
    setup: StepList | None = None
    map: MapSpec | None = None
    reduce: StepList | None = None
    error_policy: ErrorPolicy = ErrorPolicy()
    worktree_config: WorktreeConfig | None = None
    extra: tuple[tuple[str, object], ...] = ()
