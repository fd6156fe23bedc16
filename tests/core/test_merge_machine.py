"""Layer 1: the final merge machine (spec 06 §6.2–§7.8), driven by hand, without I/O.

Every test builds a ``MergeMachine`` for a session worktree, calls ``begin`` and feeds
the answers of its effects (``MergeInspected``, ``UserAnswered``, ``BranchMerged``…)
through ``MergeDriver``; the assertions are on the effects returned and on the
``MergeOutcome``.  Workflows with ``merge:`` or ``merge_conflicts:`` are parsed from YAML
text by the project's loader, so the settings have exactly the shape the parser gives.
"""

from __future__ import annotations

import json
from typing import Any

import attrs
import pytest

from prodigy_core import merge_machine as mm
from prodigy_core.context import RunContext, WorktreeSpec
from prodigy_core.effects import (
    SPAWNED,
    CancelCommands,
    Effect,
    Finish,
    LogEvent,
    Print,
    RunClaude,
    RunCommand,
)
from prodigy_core.events import (
    CancelRequested,
    ClaudeFinished,
    ClaudeLine,
    CommandFinished,
    Event,
)
from prodigy_core.model import Workflow
from prodigy_core.problems import InvalidTransition
from prodigy_core.worktree_ops import (
    AskUser,
    BranchMerged,
    ConcludeMerge,
    InspectMerge,
    MergeBranch,
    MergeConcluded,
    MergeConflicted,
    MergeFailed,
    MergeInspected,
    MergeVerified,
    RemoveWorktree,
    SaveWorktreeMeta,
    UserAnswered,
    VerifyMerged,
    WorktreeRemoved,
)
from tests.core._machine_driver import make_ctx, shell
from tests.core._parse_helpers import load

NAME = "session-1"
PATH = f"/store/worktrees/repo/{NAME}"
BRANCH = f"prodigy-{NAME}"
LOCK = "/store/locks/repo.lock"
USER_DIR = "/home/u/repo"
PRE = "b" * 40
MERGE_SHA = "d" * 40

WT = WorktreeSpec(name=NAME, path=PATH, branch=BRANCH, base_commit="a" * 40,
                  original_branch="feature", repo_lock=LOCK, user_dir=USER_DIR)

PLAIN = Workflow(name="t", steps=(shell("echo hi"),))

RESULT_LINE = json.dumps({"type": "result", "subtype": "success", "is_error": False,
                          "result": "resolved", "total_cost_usd": 0.25, "num_turns": 3,
                          "session_id": "claude-1"})


def ctx(**wt: Any) -> RunContext:
    return make_ctx(session_id=NAME, worktree=attrs.evolve(WT, **wt), project_dir=PATH,
                    repo_root="/repo")


def parsed(text: str) -> Workflow:
    outcome = load(text)
    assert outcome.workflow is not None, outcome.problems
    assert not [p for p in outcome.problems if p.severity == "error"], outcome.problems
    return outcome.workflow


CLAUDE = parsed("""
name: t
commands:
  - shell: "echo hi"
merge_conflicts:
  strategy: claude
  timeout: 10m
  claude: "/resolve ${merge.source_branch} into ${merge.target_branch} in ${merge.worktree}: ${merge.conflicting_files}"
""")

CLAUDE_DEFAULT = parsed("""
name: t
commands:
  - shell: "echo hi"
merge_conflicts:
  strategy: claude
""")

CLAUDE_VERIFY = parsed("""
name: t
commands:
  - shell: "echo hi"
merge_conflicts:
  strategy: claude
  verify: "make test"
""")

ABORT = parsed("""
name: t
commands:
  - shell: "echo hi"
merge_conflicts:
  strategy: abort
""")

CUSTOM = parsed("""
name: t
commands:
  - shell: "echo hi"
merge:
  commands:
    - shell: "make check"
    - shell: "git -C ${merge.repo_path} merge --no-ff -m 'Ship ${merge.worktree}' ${merge.source_branch}"
    - shell: "echo ${merge.commit_count} ${merge.file_count} ${merge.session_id} ${merge.worktree_path}"
  timeout: 900
""")


# --- the driver ------------------------------------------------------------------------


class MergeDriver:
    """Holds the machine, every effect it returned and the one outstanding effect."""

    def __init__(self, workflow: Workflow = PLAIN, *, ask: bool = True, **wt: Any) -> None:
        self.machine = mm.MergeMachine(ctx=ctx(**wt), workflow=workflow, ask=ask)
        self.effects: list[Effect] = []
        self.outstanding: dict[int, Effect] = {}
        self._take(mm.begin(self.machine))

    def _take(self, moved: mm.Moved) -> tuple[Effect, ...]:
        self.machine = moved.machine
        self.effects.extend(moved.effects)
        for effect in moved.effects:
            if isinstance(effect, SPAWNED):
                assert effect.command_id not in self.outstanding, effect
                self.outstanding[effect.command_id] = effect
        return moved.effects

    def pending(self, kind: type | tuple[type, ...] = SPAWNED) -> Any:
        assert len(self.outstanding) == 1, self.outstanding
        (effect,) = self.outstanding.values()
        assert isinstance(effect, kind), effect
        return effect

    def send(self, event: Event) -> tuple[Effect, ...]:
        if not isinstance(event, ClaudeLine):
            self.outstanding.pop(getattr(event, "command_id", -1), None)
        return self._take(mm.on_event(self.machine, event))

    # --- answers -------------------------------------------------------------------

    def inspected(self, target: str | None = "feature", ahead: int = 2,
                  **fields: Any) -> tuple[Effect, ...]:
        effect = self.pending(InspectMerge)
        return self.send(MergeInspected(command_id=effect.command_id, target=target,
                                        ahead=ahead, **fields))

    def answer(self, text: str | None, *, terminal: bool = True) -> tuple[Effect, ...]:
        effect = self.pending(AskUser)
        return self.send(UserAnswered(command_id=effect.command_id, answer=text,
                                      terminal=terminal))

    def merged(self, merge_dir: str = USER_DIR) -> tuple[Effect, ...]:
        effect = self.pending(MergeBranch)
        return self.send(BranchMerged(command_id=effect.command_id, sha=MERGE_SHA,
                                      merge_dir=merge_dir))

    def conflicted(self, *paths: str, aborted: bool = True) -> tuple[Effect, ...]:
        effect = self.pending(MergeBranch)
        return self.send(MergeConflicted(command_id=effect.command_id, paths=paths,
                                         merge_dir=USER_DIR, pre=PRE, aborted=aborted))

    def refused(self, message: str = "local changes would be overwritten") -> tuple[Effect, ...]:
        effect = self.pending(MergeBranch)
        return self.send(MergeFailed(command_id=effect.command_id, code="E4005",
                                     message=message))

    def claude(self, *, ok: bool = True) -> tuple[Effect, ...]:
        effect = self.pending(RunClaude)
        out: list[Effect] = []
        if ok:
            out += self.send(ClaudeLine(command_id=effect.command_id, line=RESULT_LINE))
        out += self.send(ClaudeFinished(command_id=effect.command_id, exit_code=0 if ok else 1,
                                        transcript="/logs/t.jsonl"))
        return tuple(out)

    def command(self, exit_code: int = 0) -> tuple[Effect, ...]:
        effect = self.pending(RunCommand)
        return self.send(CommandFinished(command_id=effect.command_id, exit_code=exit_code))

    def concluded(self, accepted: bool = True) -> tuple[Effect, ...]:
        effect = self.pending(ConcludeMerge)
        return self.send(MergeConcluded(command_id=effect.command_id, accepted=accepted,
                                        sha=MERGE_SHA if accepted else None,
                                        reason="" if accepted else "conflict markers remain"))

    def verified(self, merged: bool = True) -> tuple[Effect, ...]:
        effect = self.pending(VerifyMerged)
        return self.send(MergeVerified(command_id=effect.command_id, merged=merged))

    def removed(self, warning: str | None = None) -> tuple[Effect, ...]:
        effect = self.pending(RemoveWorktree)
        return self.send(WorktreeRemoved(command_id=effect.command_id, warning=warning))

    # --- views ---------------------------------------------------------------------

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.effects if isinstance(e, kind)]

    @property
    def printed(self) -> str:
        return "\n".join(e.text for e in self.of(Print))

    def logs(self, event_type: str) -> list[dict[str, Any]]:
        return [e.as_dict() for e in self.of(LogEvent) if e.event_type == event_type]

    @property
    def outcome(self) -> mm.MergeOutcome:
        assert self.machine.outcome is not None, "the merge is not done"
        assert not self.outstanding, self.outstanding
        return self.machine.outcome

    @property
    def metas(self) -> list[dict[str, Any]]:
        return [e.doc for e in self.of(SaveWorktreeMeta)]


def kinds(effects: tuple[Effect, ...] | list[Effect]) -> list[str]:
    """Effect kinds without the journal records (asserted on separately)."""
    return [type(e).__name__ for e in effects if not isinstance(e, LogEvent)]


def journal(effects: tuple[Effect, ...] | list[Effect]) -> list[str]:
    return [e.event_type for e in effects if isinstance(e, LogEvent)]


# --- begin --------------------------------------------------------------------------------


@pytest.mark.parametrize(("workflow", "details"), [(PLAIN, False), (ABORT, False),
                                                   (CLAUDE, True), (CUSTOM, True)])
def test_begin_inspects_the_session_branch(workflow: Workflow, details: bool) -> None:
    d = MergeDriver(workflow)
    assert d.effects == [InspectMerge(command_id=1, repo_root="/repo", worktree_path=PATH,
                                      branch=BRANCH, original_branch="feature",
                                      details=details)]
    assert d.machine.phase == "inspect" and not d.machine.done


def test_the_merge_needs_a_worktree() -> None:
    with pytest.raises(InvalidTransition):
        mm.begin(mm.MergeMachine(ctx=make_ctx(), workflow=PLAIN))


# --- the prompt (spec 06 §7.4) -----------------------------------------------------------


@attrs.frozen(kw_only=True)
class Answer:
    id: str
    answer: str | None
    terminal: bool = True
    merges: bool = False
    reason: str | None = None
    response: str | None = None
    shown: bool = True
    prompted: str = "no"  # merge_prompted.answer (spec 09)


ANSWERS = [
    Answer(id="empty", answer="", merges=True, response="y", prompted="yes"),
    Answer(id="y", answer="y", merges=True, response="y", prompted="yes"),
    Answer(id="YES", answer="YES", merges=True, response="yes", prompted="yes"),
    Answer(id="Yes with blanks", answer="  Yes \n", merges=True, response="yes",
           prompted="yes"),
    Answer(id="n", answer="n", reason="declined", response="n"),
    Answer(id="no", answer="no", reason="declined", response="no"),
    Answer(id="NO", answer="NO", reason="declined", response="no"),
    Answer(id="eof", answer=None, reason="declined", response="eof"),
    Answer(id="no terminal", answer=None, terminal=False, reason="no_tty", shown=False,
           prompted="no_tty"),
]


@pytest.mark.parametrize("case", ANSWERS, ids=lambda c: c.id)
def test_prompt_answers(case: Answer) -> None:
    d = MergeDriver()
    asked = d.inspected()
    assert asked == (AskUser(command_id=2, question=f"Merge {NAME} to feature [Y/n]: "),)
    after = d.answer(case.answer, terminal=case.terminal)
    assert [e["answer"] for e in d.logs("merge_prompted")] == [case.prompted]
    if case.merges:
        assert kinds(after) == ["MergeBranch"]
        assert not d.machine.done
        d.merged()
        d.removed()
        assert d.outcome.merged
    else:
        assert not d.of(MergeBranch) and not d.of(RemoveWorktree)
        assert d.outcome == mm.MergeOutcome(merged=False, target="feature", reason=case.reason)
        assert not d.outcome.failed
        assert f"Worktree {NAME} was not merged into feature.\n" \
               f"To merge later: prodigy worktree merge {NAME}" in d.printed
        assert d.metas[-1]["status"] == "completed" and d.metas[-1]["merged"] is False
    meta = d.metas[-1]
    assert meta["merge_prompt_shown"] is case.shown
    assert meta["merge_prompt_response"] == case.response


def test_anything_else_asks_again() -> None:
    d = MergeDriver()
    d.inspected()
    again = d.answer("maybe")
    assert kinds(again) == ["AskUser"]
    first, second = d.of(AskUser)
    assert second.command_id != first.command_id and second.question == first.question
    d.answer("y")
    assert kinds([d.pending()]) == ["MergeBranch"]


def test_with_yes_nothing_is_asked() -> None:
    d = MergeDriver(ask=False)
    after = d.inspected()
    assert kinds(after) == ["MergeBranch"]
    assert not d.of(AskUser)
    assert [e["answer"] for e in d.logs("merge_prompted")] == ["auto"]
    d.merged()
    d.removed()
    assert d.outcome.merged
    assert d.metas[-1]["merge_prompt_shown"] is False


# --- what inspection finds (spec 06 §4.3, §7.2, §7.3) ----------------------------------


def test_no_target_is_e4007_and_the_worktree_is_kept() -> None:
    d = MergeDriver()
    d.inspected(target=None)
    assert d.outcome.error_code == "E4007"
    assert d.outcome.failed and not d.outcome.merged
    assert "error[E4007]: no branch to merge into: the original branch 'feature' no longer " \
           "exists" in d.printed
    assert f"The worktree is kept at {PATH}." in d.printed
    assert not d.of(AskUser) and not d.of(RemoveWorktree) and not d.of(MergeBranch)
    assert d.metas[-1]["error"] is not None


def test_a_missing_original_branch_warns_w4002_and_continues() -> None:
    d = MergeDriver()
    after = d.inspected(target="main",
                        target_warning="original branch 'feature' is gone; merging into 'main'")
    assert kinds(after) == ["Print", "AskUser"]
    warning = after[0]
    assert isinstance(warning, Print) and warning.stream == "err"
    assert warning.text == "warning[W4002]: original branch 'feature' is gone; merging " \
                           "into 'main'"
    assert d.pending(AskUser).question == f"Merge {NAME} to main [Y/n]: "


def test_an_inspection_failure_is_the_merge_failure() -> None:
    d = MergeDriver()
    d.send(MergeFailed(command_id=d.pending(InspectMerge).command_id, code="E4005",
                       message="git broke", reason="failed"))
    assert d.outcome.error_code == "E4005" and d.outcome.error == "git broke"


NOTHING = "No new commits in worktree 'session-1', skipping merge (already in sync with " \
          "'feature')"
KEPT = f"Worktree kept at {PATH}. Remove it with: prodigy worktree clean {NAME}"


def test_nothing_to_merge_removes_the_worktree() -> None:
    d = MergeDriver()
    after = d.inspected(ahead=0)
    assert kinds(after) == ["Print", "SaveWorktreeMeta", "RemoveWorktree"]
    assert NOTHING in d.printed
    assert d.pending(RemoveWorktree) == RemoveWorktree(
        command_id=2, repo_root="/repo", path=PATH, branch=BRANCH, target="feature",
        lock_path=LOCK)
    assert not d.of(AskUser) and not d.of(MergeBranch)
    d.removed()
    assert d.outcome == mm.MergeOutcome(merged=False, target="feature", reason="no_commits",
                                        removed=True)


@pytest.mark.parametrize(("wt", "fields", "why"), [
    ({"named": True}, {}, "named"),
    ({"auto_cleanup": False}, {}, "PRODIGY_AUTO_CLEANUP=false"),
    ({}, {"uncommitted": ("notes.txt",)}, "uncommitted changes"),
], ids=lambda v: v if isinstance(v, str) else "")
def test_nothing_to_merge_but_kept(wt: dict[str, Any], fields: dict[str, Any],
                                   why: str) -> None:
    d = MergeDriver(**wt)
    d.inspected(ahead=0, **fields)
    assert NOTHING in d.printed and KEPT in d.printed
    assert not d.of(RemoveWorktree)
    assert d.outcome == mm.MergeOutcome(merged=False, target="feature", reason="no_commits")


def test_uncommitted_changes_warn_w4004_and_keep_the_worktree_after_a_merge() -> None:
    d = MergeDriver(ask=False)
    d.inspected(uncommitted=("a.txt", "b.txt"))
    assert "warning[W4004]: uncommitted changes in the worktree 'session-1' are not " \
           "committed and will not be merged: a.txt, b.txt" in d.printed
    d.merged()
    assert d.outcome.merged and not d.outcome.removed
    assert KEPT in d.printed and not d.of(RemoveWorktree)


def test_many_uncommitted_paths_are_capped_at_twenty() -> None:
    d = MergeDriver(ask=False)
    d.inspected(uncommitted=tuple(f"f{i}" for i in range(25)))
    assert "f19 (and 5 more)" in d.printed and "f20" not in d.printed


def test_failed_details_warn_w4006() -> None:
    d = MergeDriver(CUSTOM, ask=False)
    d.inspected(details_failed="git log failed")
    assert "warning[W4006]: cannot list the commits or files to merge: git log failed" \
        in d.printed


# --- the default merge (spec 06 §7.5, §7.8) ----------------------------------------------


def test_merge_branch_is_plain_git_merge_no_ff() -> None:
    d = MergeDriver(ask=False)
    d.inspected()
    assert d.pending(MergeBranch) == MergeBranch(
        command_id=2, repo_root="/repo", source=BRANCH, target="feature",
        message=f"Merge {BRANCH} into feature",
        temp_path=f"/store/worktrees/repo/.merge-{NAME}", keep_conflict=False,
        lock_path=LOCK)


def test_a_merge_logs_prints_records_and_removes() -> None:
    d = MergeDriver(ask=False)
    d.inspected()
    after = d.merged()
    assert kinds(after) == ["Print", "SaveWorktreeMeta", "RemoveWorktree"]
    (logged,) = d.logs("worktree_merged")
    assert logged | {"source_branch": BRANCH, "target_branch": "feature",
                     "merge_commit": MERGE_SHA, "session_id": NAME} == logged
    assert [e["method"] for e in d.logs("merge_completed")] == ["git"]
    assert "Worktree changes merged successfully!" in d.printed
    meta = d.metas[-1]
    assert (meta["status"], meta["merged"], meta["resumable"]) == ("merged", True, False)
    remove = d.pending(RemoveWorktree)
    assert (remove.path, remove.branch, remove.target) == (PATH, BRANCH, "feature")
    assert not d.machine.done
    d.removed()
    assert d.outcome == mm.MergeOutcome(merged=True, target="feature", removed=True)
    assert d.outcome.to_json() == {"target": "feature", "merged": True, "reason": None}
    assert [e["worktree_name"] for e in d.logs("worktree_cleaned")] == [NAME]


def test_a_cleanup_failure_is_a_warning() -> None:
    d = MergeDriver(ask=False)
    d.inspected()
    d.merged()
    after = d.removed(warning="branch prodigy-session-1: not fully merged")
    assert after == (Print(text="warning[W4005]: branch prodigy-session-1: not fully merged",
                           stream="err"),)
    assert d.outcome.merged and not d.outcome.removed and not d.outcome.failed


@pytest.mark.parametrize("wt", [{"named": True}, {"auto_cleanup": False}],
                         ids=["named", "no auto cleanup"])
def test_a_merged_worktree_is_kept(wt: dict[str, Any]) -> None:
    d = MergeDriver(ask=False, **wt)
    d.inspected()
    d.merged()
    assert d.outcome.merged and KEPT in d.printed and not d.of(RemoveWorktree)
    if wt.get("named"):
        assert d.metas[-1]["kind"] == "named"


def test_a_refused_merge_is_e4005_and_kept() -> None:
    d = MergeDriver(ask=False)
    d.inspected()
    d.refused("git refused: local changes would be overwritten")
    assert d.outcome.error_code == "E4005" and d.outcome.reason == "refused"
    assert "error[E4005]: git refused: local changes would be overwritten" in d.printed
    assert f"The worktree is kept at {PATH}." in d.printed
    assert not d.of(RemoveWorktree) and not d.logs("worktree_merged")


@pytest.mark.parametrize("workflow", [PLAIN, ABORT], ids=["default", "abort"])
def test_a_conflict_aborts_with_the_three_line_message(workflow: Workflow) -> None:
    d = MergeDriver(workflow, ask=False)
    d.inspected()
    assert d.pending(MergeBranch).keep_conflict is False
    d.conflicted("src/a.py", "b.txt", aborted=True)
    assert d.outcome == mm.MergeOutcome(
        merged=False, target="feature", reason="conflict",
        error="merge conflict in src/a.py, b.txt", error_code="E4004")
    message = [e for e in d.of(Print) if e.text.startswith("Merge of ")]
    assert [m.text for m in message] == [
        f"Merge of {BRANCH} into feature has conflicts in: src/a.py, b.txt\n"
        f"The merge was aborted; feature is unchanged. The worktree is kept at {PATH}.\n"
        f"To merge by hand: git checkout feature && git merge --no-ff {BRANCH}"]
    assert message[0].stream == "err"
    (logged,) = d.logs("merge_conflict")
    assert logged | {"source_branch": BRANCH, "target_branch": "feature",
                     "conflicting_files": ["src/a.py", "b.txt"], "strategy": "abort",
                     "session_id": NAME} == logged
    assert [e["method"] for e in d.logs("merge_failed")] == ["git"]
    assert not d.of(RunClaude) and not d.of(RemoveWorktree) and not d.of(ConcludeMerge)


# --- Claude conflict resolution (spec 06 §6.2, §6.3) --------------------------------------


def claude_conflict(workflow: Workflow = CLAUDE) -> MergeDriver:
    d = MergeDriver(workflow, ask=False)
    d.inspected()
    assert d.pending(MergeBranch).keep_conflict is True
    d.conflicted("src/a.py", "b.txt", aborted=False)
    return d


def test_claude_resolves_in_the_merge_dir_with_merge_variables() -> None:
    d = claude_conflict()
    call = d.pending(RunClaude)
    assert call.cwd == USER_DIR
    assert call.argv[1:3] == ("-p", f"/resolve {BRANCH} into feature in {NAME}: src/a.py b.txt")
    assert call.timeout == 600.0
    assert d.logs("merge_conflict")
    d.claude()
    conclude = d.pending(ConcludeMerge)
    assert conclude == ConcludeMerge(
        command_id=conclude.command_id, merge_dir=USER_DIR, repo_root="/repo", source=BRANCH,
        pre=PRE, conflicting=("src/a.py", "b.txt"), action="accept",
        temp_path=f"/store/worktrees/repo/.merge-{NAME}", lock_path=LOCK)
    d.concluded(accepted=True)
    order = [t for t in journal(d.effects) if t in (
        "merge_conflict", "merge_conflict_resolved", "worktree_merged")]
    assert order == ["merge_conflict", "merge_conflict_resolved", "worktree_merged"]
    assert d.logs("merge_conflict")[0]["strategy"] == "claude"
    (resolved,) = d.logs("merge_conflict_resolved")
    assert (resolved["source_branch"], resolved["target_branch"], resolved["resolver"],
            resolved["json_log_location"]) == (BRANCH, "feature", "claude", "/logs/t.jsonl")
    assert d.logs("worktree_merged")[0]["merge_commit"] == MERGE_SHA
    assert "Worktree changes merged successfully!" in d.printed
    d.removed()
    assert d.outcome == mm.MergeOutcome(merged=True, target="feature", removed=True)
    assert d.machine.stepper.usage.claude_calls == 1


def test_the_built_in_resolution_prompt() -> None:
    d = claude_conflict(CLAUDE_DEFAULT)
    call = d.pending(RunClaude)
    prompt = call.argv[2]
    assert prompt.startswith(f"The git merge of branch {BRANCH} into feature stopped with "
                             f"conflicts in: src/a.py b.txt.")
    assert "git commit --no-edit" in prompt and "Do not abort the merge" in prompt
    assert call.timeout == 900.0


def test_a_rejected_resolution_is_a_conflict() -> None:
    d = claude_conflict()
    d.claude()
    d.concluded(accepted=False)
    assert "The conflict resolution was not accepted: conflict markers remain" in d.printed
    assert d.outcome.error_code == "E4004" and d.outcome.reason == "conflict"
    assert not d.logs("worktree_merged") and not d.logs("merge_conflict_resolved")


def test_a_failed_claude_call_rolls_back() -> None:
    d = claude_conflict()
    d.claude(ok=False)
    rollback = d.pending(ConcludeMerge)
    assert rollback.action == "rollback" and rollback.pre == PRE
    assert "The conflict resolution failed" in d.printed
    d.concluded(accepted=False)
    assert d.outcome.error_code == "E4004"
    assert f"The merge was aborted; feature is unchanged. The worktree is kept at {PATH}." \
        in d.printed


def test_verify_runs_after_acceptance_in_the_merge_dir() -> None:
    d = claude_conflict(CLAUDE_VERIFY)
    d.claude()
    assert d.pending(ConcludeMerge).action == "accept"
    d.concluded(accepted=True)
    verify = d.pending(RunCommand)
    assert verify.argv == ("sh", "-c", "make test") and verify.cwd == USER_DIR
    d.command(0)
    assert d.logs("merge_conflict_resolved") and d.logs("worktree_merged")
    assert [e["step_path"] for e in d.logs("step_completed")] == [
        "merge_conflicts.claude", "merge_conflicts.verify"]
    d.removed()
    assert d.outcome.merged


def test_a_failing_verify_rolls_back() -> None:
    d = claude_conflict(CLAUDE_VERIFY)
    d.claude()
    d.concluded(accepted=True)
    d.command(1)
    rollback = d.pending(ConcludeMerge)
    assert rollback.action == "rollback" and rollback.merge_dir == USER_DIR
    assert "rejected: merge_conflicts.verify failed" in d.printed
    d.concluded(accepted=False)
    assert d.outcome.error_code == "E4004"
    assert not d.logs("worktree_merged") and not d.of(RemoveWorktree)


# --- a custom merge workflow (spec 06 §7.6, §7.7) ------------------------------------------

COMMITS = ({"id": "1" * 40, "short_id": "1111111", "message": "one"},
           {"id": "2" * 40, "short_id": "2222222", "message": "two"})
FILES = ({"path": "a.py", "modification_type": "modified", "insertions": 1, "deletions": 0},
         {"path": "docs/b.md", "modification_type": "added", "insertions": 3, "deletions": 0})


def custom() -> MergeDriver:
    d = MergeDriver(CUSTOM, ask=False)
    d.inspected(commits=COMMITS, commit_count=2, modified_files=FILES, file_count=2)
    return d


def test_custom_steps_run_in_order_with_merge_variables() -> None:
    d = custom()
    assert "Executing custom merge workflow for 'session-1' into 'feature'..." in d.printed
    assert not d.of(MergeBranch)
    first = d.pending(RunCommand)
    assert first.argv[-1] == "make check" and first.cwd == PATH and first.timeout == 900.0
    d.command(0)
    second = d.pending(RunCommand)
    assert second.argv[-1] == f"git -C /repo merge --no-ff -m 'Ship {NAME}' {BRANCH}"
    d.command(0)
    third = d.pending(RunCommand)
    assert third.argv[-1] == f"echo 2 2 {NAME} {PATH}"
    d.command(0)
    assert "Executing merge step 3/3" in d.printed
    assert [(e["scope"], e["step_path"]) for e in d.logs("step_completed")] == [
        ("merge", "merge[0]"), ("merge", "merge[1]"), ("merge", "merge[2]")]
    assert d.logs("step_completed")[0]["display"] == "shell: make check"
    assert d.pending(VerifyMerged) == VerifyMerged(
        command_id=d.pending().command_id, repo_root="/repo", source=BRANCH, target="feature")
    d.verified(True)
    assert d.logs("worktree_merged") and "Worktree changes merged successfully!" in d.printed
    d.removed()
    assert d.outcome.merged


def test_a_failing_custom_step_is_e4005() -> None:
    d = custom()
    d.command(2)
    assert d.outcome.error_code == "E4005" and d.outcome.reason == "custom_failed"
    assert "custom merge workflow failed at step 1" in (d.outcome.error or "")
    assert len(d.of(RunCommand)) == 1 and not d.of(VerifyMerged)
    assert not d.of(RemoveWorktree)


def test_custom_merge_that_did_not_merge_is_e4005() -> None:
    d = custom()
    for _ in range(3):
        d.command(0)
    d.verified(False)
    assert d.outcome.error_code == "E4005"
    assert d.outcome.error == f"custom merge workflow finished but {BRANCH} is not merged " \
                              f"into feature"
    assert not d.logs("worktree_merged") and not d.of(RemoveWorktree)


def test_merge_variables() -> None:
    d = custom()
    variables = {k: v.value for k, v in mm.merge_variables(d.machine).items()}
    assert variables == {
        "merge.worktree": NAME, "merge.worktree_path": PATH, "merge.repo_path": "/repo",
        "merge.source_branch": BRANCH, "merge.target_branch": "feature",
        "merge.session_id": NAME, "merge.commits": json.dumps(list(COMMITS),
                                                              separators=(",", ":")),
        "merge.commit_count": 2, "merge.commit_ids": "1111111, 2222222",
        "merge.modified_files": json.dumps(list(FILES), separators=(",", ":")),
        "merge.file_count": 2, "merge.file_list": "a.py, docs/b.md",
    }
    with_conflicts = mm.merge_variables(d.machine, ("x.py",))
    assert with_conflicts["merge.conflicting_files"].value == ["x.py"]


# --- bugs are exceptions ------------------------------------------------------------------


def test_an_answer_with_the_wrong_command_id_is_a_bug() -> None:
    d = MergeDriver()
    with pytest.raises(InvalidTransition, match="waits for 1"):
        d.send(MergeInspected(command_id=99, target="feature", ahead=1))


def test_an_answer_of_the_wrong_kind_is_a_bug() -> None:
    d = MergeDriver()
    with pytest.raises(InvalidTransition, match="cannot receive BranchMerged"):
        d.send(BranchMerged(command_id=1, sha=MERGE_SHA, merge_dir=USER_DIR))


def test_an_event_after_the_end_is_a_bug() -> None:
    d = MergeDriver()
    d.inspected(target=None)
    with pytest.raises(InvalidTransition, match="done"):
        mm.on_event(d.machine, MergeInspected(command_id=1, target="feature"))


ANSWER_KINDS: list[Any] = [
    lambda cid: MergeInspected(command_id=cid, target="feature", ahead=1),
    lambda cid: MergeFailed(command_id=cid, code="E4005", message="x"),
    lambda cid: UserAnswered(command_id=cid, answer="y"),
    lambda cid: BranchMerged(command_id=cid, sha=MERGE_SHA, merge_dir=USER_DIR),
    lambda cid: MergeConflicted(command_id=cid, paths=("a",), merge_dir=USER_DIR, pre=PRE),
    lambda cid: MergeConcluded(command_id=cid, accepted=True, sha=MERGE_SHA),
    lambda cid: MergeVerified(command_id=cid, merged=True),
    lambda cid: WorktreeRemoved(command_id=cid),
    lambda cid: CommandFinished(command_id=cid, exit_code=0),
]


def _machines() -> list[MergeDriver]:
    """A machine waiting in each phase that answers git or the console."""
    inspect = MergeDriver()
    ask = MergeDriver()
    ask.inspected()
    merge = MergeDriver(ask=False)
    merge.inspected()
    conclude = claude_conflict()
    conclude.claude()
    verify = custom()
    for _ in range(3):
        verify.command(0)
    cleanup = MergeDriver(ask=False)
    cleanup.inspected()
    cleanup.merged()
    return [inspect, ask, merge, conclude, verify, cleanup]


@pytest.mark.parametrize("make", ANSWER_KINDS)
def test_every_phase_handles_an_answer_or_raises_the_bug_error(make: Any) -> None:
    for d in _machines():
        machine = d.machine
        cid = machine.pending
        assert cid is not None
        try:
            moved = mm.on_event(machine, make(cid))
        except InvalidTransition:
            continue
        assert isinstance(moved, mm.Moved)
        assert machine == d.machine  # the input was not mutated


# --- meta_doc ------------------------------------------------------------------------------


def test_meta_doc() -> None:
    doc = mm.meta_doc(ctx(named=True), "failed", error="boom", interruption=None,
                      iterations=2, head="c" * 40)
    assert doc["status"] == "failed" and doc["resumable"] is True
    assert doc["kind"] == "named" and doc["error"] == "boom"
    assert doc["iterations"] == {"completed": 2, "max": 1}
    assert doc["stats"]["last_commit_sha"] == "c" * 40  # type: ignore[index,call-overload]
    assert (doc["worktree_name"], doc["branch"], doc["path"], doc["repo_path"]) == \
        (NAME, BRANCH, PATH, "/repo")
    assert mm.meta_doc(ctx(), "merged", merged=True)["resumable"] is False
    with pytest.raises(InvalidTransition):
        mm.meta_doc(make_ctx(), "completed")


# --- the merge alone (``prodigy worktree merge``) ---------------------------------------


def test_start_alone_never_asks_and_finishes_with_exit_0() -> None:
    t = mm.start_alone(mm.MergeMachine(ctx=ctx(), workflow=PLAIN))
    (inspect,) = t.effects
    assert isinstance(inspect, InspectMerge)
    t = mm.step_alone(t.state, MergeInspected(command_id=inspect.command_id,
                                              target="feature", ahead=1))
    (merge,) = [e for e in t.effects if not isinstance(e, LogEvent)]
    assert isinstance(merge, MergeBranch)
    t = mm.step_alone(t.state, BranchMerged(command_id=merge.command_id, sha=MERGE_SHA,
                                            merge_dir=USER_DIR))
    remove = t.effects[-1]
    assert isinstance(remove, RemoveWorktree)
    t = mm.step_alone(t.state, WorktreeRemoved(command_id=remove.command_id))
    finish = t.effects[-1]
    assert isinstance(finish, Finish) and finish.exit_code == 0
    assert finish.outcome == {"target": "feature", "merged": True, "reason": None,
                              "error": None, "error_code": None, "removed": True}


def test_start_alone_failure_exits_1_and_cancel_cancels() -> None:
    t = mm.start_alone(mm.MergeMachine(ctx=ctx(), workflow=PLAIN))
    cancel = mm.step_alone(t.state, CancelRequested(signal="SIGINT", at="t"))
    assert cancel.effects == (CancelCommands(),) and cancel.state == t.state
    cid = t.effects[0].command_id  # type: ignore[union-attr]
    t = mm.step_alone(t.state, MergeInspected(command_id=cid, target=None))
    finish = t.effects[-1]
    assert isinstance(finish, Finish) and finish.exit_code == 1
    assert finish.outcome["error_code"] == "E4007"  # type: ignore[index,call-overload]
