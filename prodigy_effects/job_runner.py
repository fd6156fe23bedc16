"""Starting and resuming MapReduce jobs: the production wiring around the job machine.

``new_job`` chooses the ids and paths of a new job (spec 05 §2); ``execute_job`` drives
the job machine with the production environment while holding the session and job locks
and the job's event log (``events/<repo>/<job_id>/``).
"""

from __future__ import annotations

import socket
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import trio

from prodigy_core import job_machine
from prodigy_core.context import RunContext
from prodigy_core.job_state import JobConfig
from prodigy_effects.interpreter import RunResult, interpret
from prodigy_effects.jobs import RealJobs, job_dir
from prodigy_effects.journal import JournalWriter
from prodigy_effects.locks import acquire_lock
from prodigy_effects.storage import Storage


def new_session_id() -> str:
    return f"session-{uuid.uuid4()}"


def new_job_id(storage: Storage, repo: str, now: datetime | None = None) -> str:
    """``mapreduce-<YYYYMMDD_HHMMSS>`` (UTC), with ``-2``, ``-3``… when taken (spec 05 §2)."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%d_%H%M%S")
    base = f"mapreduce-{stamp}"
    jobs = storage.root / "state" / repo / "mapreduce" / "jobs"
    candidate, n = base, 1
    while (jobs / candidate).exists() or storage.lock_file(candidate).exists():
        n += 1
        candidate = f"{base}-{n}"
    return candidate


def job_config(storage: Storage, repo: str, job_id: str, session_id: str) -> JobConfig:
    return JobConfig(job_id=job_id, job_dir=str(job_dir(storage.root, repo, job_id)),
                     agents_dir=str(storage.root / "worktrees" / session_id),
                     repo_lock=str(storage.repo_lock_file(repo)),
                     pool_dir=str(storage.root / "worktrees" / repo / ".pool"))


class DLQWriter:
    """Adapts ``RecordDLQ``/``ForgetDLQ`` to ``prodigy_effects.dlq_store``."""

    def __init__(self, storage: Storage, repo: str, job_id: str, repo_path: str = "") -> None:
        self.storage, self.repo, self.job_id = storage, repo, job_id
        self.repo_path = repo_path

    def record(self, effect: Any) -> None:
        from prodigy_effects import dlq_store

        failure = dict(effect.failure)
        artifacts = effect.worktree_artifacts if isinstance(effect.worktree_artifacts,
                                                            dict) else None
        step_index = failure.get("step_index")
        exit_code = failure.get("exit_code")
        duration = failure.get("duration_ms")
        files = failure.get("conflicting_files") or []
        dlq_store.add_failure(
            self.storage, self.repo, self.job_id, item_id=effect.item_id,
            item_data=effect.item_data, error_type=failure.get("error_type"),
            error_message=str(failure.get("error_message") or ""),
            timestamp=str(failure.get("timestamp") or "") or None,
            agent_id=str(failure.get("agent_id") or "") or None,
            step_failed=str(failure.get("step_failed") or "") or None,
            step_index=step_index if isinstance(step_index, int) else None,
            exit_code=exit_code if isinstance(exit_code, int) else None,
            duration_ms=duration if isinstance(duration, int) else None,
            json_log_location=failure.get("json_log_location") or None,
            conflicting_files=[str(f) for f in files],
            worktree_artifacts=artifacts,
            error_signature=effect.error_signature or None,
            manual_review_required=effect.manual_review_required,
            attempt_number=failure.get("attempt_number")
            if isinstance(failure.get("attempt_number"), int) else None,
            repo_path=self.repo_path or None, mask=self.storage.mask)

    def forget(self, item_id: str) -> None:
        """The item succeeded when run again: its entry and any branch it kept go."""
        from prodigy_effects import dlq_cleanup, dlq_store

        entry = dlq_store.read_entry(self.storage, self.repo, self.job_id, item_id)
        if entry is None:
            return
        if self.repo_path and entry.artifacts:
            dlq_cleanup.remove_artifacts(self.storage, self.repo, self.repo_path,
                                         entry.artifacts)
        dlq_store.remove(self.storage, self.repo, self.job_id, item_id,
                         mask=self.storage.mask)


def execute_job(transition: Any, ctx: RunContext, config: JobConfig, storage: Storage, *,
                verbosity: int, quiet: bool, json_mode: bool, out: TextIO, err: TextIO,
                start_seq: int = 1, dlq_job: str | None = None) -> RunResult:
    """Drive a job; its DLQ is ``dlq_job``'s (a reprocess job updates the original's)."""
    from prodigy_effects import runner
    from prodigy_effects.production import now_iso

    lock = acquire_lock(storage, config.job_id)
    try:
        session_lock = acquire_lock(storage, ctx.session_id)
    except BaseException:
        lock.release()
        raise
    try:
        for holder in (lock, session_lock):
            for warning in getattr(holder, "warnings", []) or []:
                text = str(warning)
                err.write((text if text.startswith("warning") else
                           f"warning[W5002]: {text.removeprefix('W5002: ')}") + "\n")
        masker = runner.masker_for(ctx)
        journal = JournalWriter.open(storage.events_dir(ctx.repo_name, config.job_id),
                                     start_seq, datetime.now(UTC), mask=masker,
                                     host=socket.gethostname())
        try:
            env = runner.production_env(ctx, storage, journal, verbosity, quiet, json_mode,
                                        out, err, correlation_id=config.job_id,
                                        masker=masker)
            import attrs

            env = attrs.evolve(env, jobs=RealJobs(
                directory=Path(config.job_dir), mask=masker,
                dlq=DLQWriter(storage.with_mask(masker), ctx.repo_name,
                              dlq_job or config.reprocess_of or config.job_id,
                              ctx.repo_root),
                clock=now_iso))
            result: RunResult = trio.run(_interpret, transition, env)
            return attrs.evolve(result,
                                outcome=runner.masked_outcome(result.outcome, masker))
        finally:
            journal.close()
            # spec 06 §5.1: the agents' directory goes when the session ends and it is empty
            import contextlib
            import os

            with contextlib.suppress(OSError):
                os.rmdir(config.agents_dir)
    finally:
        session_lock.release()
        lock.release()


async def _interpret(transition: Any, env: Any) -> RunResult:
    return await interpret(transition, job_machine.step, env, handle_signals=True)
