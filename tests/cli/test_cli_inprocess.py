"""CLI tests in-process: `main(argv, out=…, err=…, environ=…, cwd=…)`."""

from __future__ import annotations

import io
import json
import os
import subprocess
from pathlib import Path

import pytest

from prodigy_cli.main import main


class Cli:
    def __init__(self, root: Path, home: Path) -> None:
        self.root = root
        self.home = home
        self.environ = dict(os.environ, PRODIGY_HOME=str(home))
        self.environ.pop("PRODIGY_PROFILE", None)

    def __call__(self, *argv: str, environ: dict[str, str] | None = None) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        code = main(list(argv), out=out, err=err, environ=environ or self.environ,
                    cwd=str(self.root))
        return code, out.getvalue(), err.getvalue()

    def write(self, name: str, text: str) -> Path:
        path = self.root / name
        path.write_text(text, encoding="utf-8")
        return path

    def commit(self, *names: str) -> None:
        """Commit files of the checkout, so that the session worktree of the next run has them."""
        git(self.root, "add", "--", *names)
        git(self.root, "commit", "-qm", f"add {' '.join(names)}")

    def worktree(self, sid: str) -> Path:
        """Where the session worktree of `sid` is (spec 06 §3.1): the steps run there."""
        return self.home / "worktrees" / self.root.name / sid


def git(cwd: Path, *args: str) -> str:
    result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True)
    return result.stdout


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "user.email", "t@example.com")
    git(root, "config", "user.name", "Test")
    (root / "README.md").write_text("demo\n", encoding="utf-8")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "init")  # every run needs a commit to start from (E4002)
    return Cli(root, tmp_path / "home")


def test_no_subcommand_prints_help(cli: Cli) -> None:
    code, out, _ = cli()
    assert code == 0 and "usage: prodigy" in out


def test_version(cli: Cli) -> None:
    code, out, _ = cli("--version")
    assert code == 0 and out.startswith("prodigy ")


def test_run_without_a_file_is_a_usage_error(cli: Cli) -> None:
    code, _, _ = cli("run")
    assert code == 2


def test_unknown_option_is_a_usage_error(cli: Cli) -> None:
    code, _, _ = cli("run", "x.yml", "--no-such-option")
    assert code == 2


def test_goal_seek_needs_its_command_and_validation(cli: Cli) -> None:
    code, out, err = cli("goal-seek", "anything")
    assert code == 2
    assert "-c/--command" in err and "--validate" in err
    assert out == ""


def test_run_in_process_and_global_options_after_the_subcommand(cli: Cli) -> None:
    cli.write("wf.yml", "- shell: 'echo from-step'\n")
    code, out, err = cli("run", "wf.yml", "-q")
    assert code == 0, err
    assert "from-step" not in out  # -q hides step output
    assert "Workflow completed successfully" in out
    code, out, err = cli("run", "wf.yml", "-v")
    assert code == 0 and "from-step" in out


def test_missing_workflow_file(cli: Cli) -> None:
    code, _, err = cli("run", "nope.yml")
    assert code == 2
    assert "nope.yml" in err
    assert "Traceback" not in err


def test_malformed_yaml_is_reported_with_line_and_column(cli: Cli) -> None:
    cli.write("bad.yml", "steps:\n  - shell: 'echo hi\n  - shell: x\n")
    code, _, err = cli("run", "bad.yml")
    assert code == 2
    assert "E1001" in err and "bad.yml:" in err
    assert not cli.home.exists()  # validation happens before any storage write


def test_wrong_types_and_unknown_kinds_are_all_reported(cli: Cli) -> None:
    cli.write("bad.yml", "steps:\n  - shell: 'a'\n    timeout: soon\n  - frobnicate: x\n"
                         "  - shell: 'b'\n    allow_failure: [1]\n")
    code, _, err = cli("validate", "bad.yml")
    assert code == 1
    for needle in ("E1011", "E1007", "E1004", "bad.yml:3:", "bad.yml:4:", "bad.yml:6:"):
        assert needle in err, needle


def test_strict_turns_warnings_into_a_refusal(cli: Cli) -> None:
    cli.write("wf.yml", "- shell: 'echo x'\n  retry_config: {attempts: 2}\n")
    code, _, err = cli("run", "wf.yml", "--strict")
    assert code == 2
    assert "retry_config" in err


def test_unwritable_storage_root(cli: Cli, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    cli.write("wf.yml", "- shell: 'echo x'\n")
    env = dict(cli.environ, PRODIGY_HOME=str(blocker / "home"))
    code, _, err = cli("run", "wf.yml", environ=env)
    assert code == 2
    assert "E5001" in err and "Traceback" not in err


def _fail_once(cli: Cli) -> str:
    cli.write("wf.yml", "- shell: 'echo one'\n- shell: 'test -f ok'\n")
    code, _, err = cli("run", "wf.yml")
    assert code == 1, err
    sessions = json.loads(cli("sessions", "ls", "--json")[1])
    return str(sessions[0]["id"])


def test_corrupt_checkpoint_gives_a_clear_error_and_is_left_alone(cli: Cli) -> None:
    sid = _fail_once(cli)
    path = cli.home / "state" / sid / "checkpoints" / f"{sid}.checkpoint.json"
    for prev in path.parent.glob("*.prev"):
        prev.write_text("{ also broken")
    path.write_text("{ not json")
    before = path.read_bytes()
    code, _, err = cli("resume", sid)
    assert code == 2
    assert "E5002" in err and str(path.name) in err
    assert path.read_bytes() == before


def test_newer_checkpoint_version_is_refused_without_damage(cli: Cli) -> None:
    sid = _fail_once(cli)
    path = cli.home / "state" / sid / "checkpoints" / f"{sid}.checkpoint.json"
    doc = json.loads(path.read_text())
    doc["format_version"] = 999
    path.write_text(json.dumps(doc))
    before = path.read_bytes()
    code, _, err = cli("resume", sid)
    assert code == 2
    assert "newer" in err
    assert path.read_bytes() == before


def test_resume_unknown_and_nothing_to_resume(cli: Cli) -> None:
    code, _, err = cli("resume", "workflow-123")
    assert code == 2 and "E5005" in err
    code, _, err = cli("resume")
    assert code == 2 and "No resumable sessions found" in err


def test_sessions_show_and_checkpoints_and_events(cli: Cli) -> None:
    sid = _fail_once(cli)
    code, out, _ = cli("sessions", "show", sid)
    assert code == 0 and "Failed" in out and f"prodigy resume {sid}" in out
    code, out, _ = cli("sessions", "show", sid, "--json")
    doc = json.loads(out)
    assert doc["id"] == sid
    assert doc["worktree"]["path"] == str(cli.worktree(sid)) and cli.worktree(sid).is_dir()
    assert doc["worktree"]["branch"] == f"prodigy-{sid}" and doc["merge"]["merged"] is False
    code, out, _ = cli("checkpoints", "ls", "--json")
    rows = json.loads(out)
    assert rows[0]["id"] == sid and rows[0]["status"] == "Failed"
    code, out, _ = cli("checkpoints", "ls")
    assert sid in out
    code, out, _ = cli("events", "ls", "--job-id", sid, "--event-type", "step_failed", "--json")
    lines = [json.loads(x) for x in out.splitlines()]
    assert len(lines) == 1 and lines[0]["event"]["step_index"] == 1
    code, out, _ = cli("events", "ls", "--job-id", sid)
    assert "workflow_failed" in out


def test_features_not_runnable_yet_are_refused_up_front(cli: Cli) -> None:
    cli.write("pool.yml", "worktree_config: {parallel_worktrees: 2}\n"
                          "steps:\n  - shell: 'touch ran'\n")
    cli.write("mr.yml", "name: m\nmode: mapreduce\nmap:\n  input: items.json\n"
                        "  agent_template: [{shell: 'touch ran'}]\n"
                        "reduce:\n  - shell: 'touch ran'\n"
                        "merge:\n  - workflow: sub\n")
    cli.write("composed.yml", "imports: [other.yml]\nsteps:\n  - shell: 'touch ran'\n")
    cli.write("wf.yml", "- shell: 'touch ran'\n")
    cli.commit("pool.yml", "mr.yml", "composed.yml", "wf.yml")
    refusals = {
        ("run", "pool.yml"): ("$.worktree_config", "E1016"),  # agent pools: MapReduce only
        ("run", "mr.yml"): ("$.merge[0]", "E1016"),  # sub-workflow steps, also in MapReduce
        ("run", "composed.yml"): ("$.imports", "E1016"),
        ("run", "wf.yml", "--param", "a=b"): ("--param", "E1016"),
    }
    for argv, needles in refusals.items():
        code, _, err = cli(*argv)
        assert code == 2, argv
        assert all(n in err for n in needles), (argv, err)
    # refused before a session worktree or branch exists, so nothing ran anywhere
    assert not (cli.root / "ran").exists() and not (cli.home / "worktrees").exists()
    assert git(cli.root, "branch", "--format=%(refname:short)").split() == ["main"]
    for name in ("pool.yml",):
        code, _, _ = cli("validate", name)
        assert code == 0, name  # the file is valid; only running it is not possible yet
    assert cli("validate", "composed.yml")[0] == 1


def test_merge_workflows_and_worktree_keys_are_no_longer_refused(cli: Cli) -> None:
    cli.write("wf.yml", "worktree: exp-a\nmerge_conflicts: {strategy: abort}\nmerge:\n"
                        "  - shell: 'git -C ${merge.repo_path} merge --no-ff -q -m \"Ship "
                        "${merge.worktree}\" ${merge.source_branch}'\n"
                        "steps:\n  - shell: 'echo x > ran && git add ran && git commit -qm ran'\n")
    code, out, err = cli("run", "wf.yml", "-y")
    assert code == 0, err
    assert "E1016" not in err
    assert "Executing custom merge workflow for 'exp-a' into 'main'" in out
    assert (cli.root / "ran").read_text() == "x\n"  # merged into the checkout by the merge step
    assert git(cli.root, "log", "-1", "--format=%s") == "Ship exp-a\n"
    assert (cli.home / "worktrees" / cli.root.name / "exp-a").is_dir()  # named: kept


def test_missing_claude_cli_stops_the_run_before_anything_happens(cli: Cli) -> None:
    cli.write("wf.yml", "- shell: 'touch ran'\n- claude: /hello\n")
    env = dict(cli.environ, PRODIGY_CLAUDE_PATH=str(cli.root / "no-such-claude"))
    code, _, err = cli("run", "wf.yml", environ=env)
    assert code == 2
    assert "E7001" in err and "no-such-claude" in err and "PRODIGY_CLAUDE_PATH" in err
    assert not (cli.root / "ran").exists() and not cli.home.exists()  # no worktree either
    assert git(cli.root, "branch", "--format=%(refname:short)").split() == ["main"]
    code, out, err = cli("run", "wf.yml", "--dry-run", environ=env)
    assert code == 0 and "warning" in err
    assert "--output-format" in out  # the plan shows the exact Claude argv


def test_write_file_path_from_data_cannot_escape(cli: Cli, tmp_path: Path) -> None:
    target = tmp_path / "escaped"
    cli.write("wf.yml", f"- shell: 'echo {target}'\n  capture: p\n"
                        "- write_file: {path: '${p}.txt', content: x}\n")
    code, _, err = cli("run", "wf.yml")
    assert code == 1 and "E3005" in err
    assert not Path(f"{target}.txt").exists()
    cli.write("wf2.yml", "- shell: 'echo ../up'\n  capture: p\n"
                         "- write_file: {path: '${p}.txt', content: x}\n")
    code, _, err = cli("run", "wf2.yml")
    assert code == 1 and "E3005" in err
    sid = json.loads(cli("sessions", "ls", "--json")[1])[0]["id"]
    assert cli.worktree(sid).is_dir()  # the steps ran here; '..' would leave it
    assert not (cli.worktree(sid).parent / "up.txt").exists()
    assert not (cli.root.parent / "up.txt").exists()


def test_a_run_with_nothing_to_do_completes_cleanly(cli: Cli) -> None:
    cli.write("empty.yml", "steps: []\n")
    cli.write("skip.yml", "- shell: 'touch x'\n  when: 'false'\n")
    for name in ("empty.yml", "skip.yml"):
        code, out, err = cli("run", name)
        assert code == 0 and "E9001" not in err, err
        assert "Workflow completed successfully" in out
        assert "No new commits in worktree" in out  # nothing to merge; worktree removed
    worktrees = cli.home / "worktrees" / cli.root.name
    assert [p.name for p in worktrees.iterdir() if not p.name.startswith(".")] == []
    assert git(cli.root, "branch", "--format=%(refname:short)").split() == ["main"]


def test_bad_iterations_and_map_patterns_are_usage_errors(cli: Cli) -> None:
    cli.write("wf.yml", "- shell: 'true'\n")
    code, _, err = cli("run", "wf.yml", "-n", "0")
    assert code == 2 and "at least 1" in err
    code, _, err = cli("run", "wf.yml", "--map", "/elsewhere/*.md")
    assert code == 2 and "E8001" in err and "E9001" not in err


def test_resume_keeps_fail_fast(cli: Cli) -> None:
    cli.write("wf.yml", "- shell: 'test ${ARG} != bad'\n- shell: 'echo ${ARG} >> done.txt'\n")
    code, _, _ = cli("run", "wf.yml", "--args", "bad", "--args", "good", "--fail-fast")
    assert code == 1
    sid = json.loads(cli("sessions", "ls", "--json")[1])[0]["id"]
    code, _, _ = cli("resume", sid)
    assert code == 1
    assert cli.worktree(sid).is_dir()  # a failed run keeps its worktree; the steps ran there
    assert not (cli.worktree(sid) / "done.txt").exists()  # the second input never ran


def test_dry_run_masks_sensitive_env_and_credentials(cli: Cli) -> None:
    cli.write("wf.yml", "env:\n  GH_TOKEN: ghp_abcdefghijklmnop1234\n  PASSWORD: hunter2hunter\n"
                        "  PLAIN: visible\nsteps:\n  - shell: 'echo ${GH_TOKEN} ${PASSWORD} "
                        "${PLAIN}'\n")
    code, out, _ = cli("run", "wf.yml", "--dry-run")
    assert code == 0
    assert "ghp_abcdefghijklmnop1234" not in out and "hunter2hunter" not in out
    assert "visible" in out


def test_dry_run_shows_the_active_profile_description(cli: Cli) -> None:
    cli.write("wf.yml", "profiles:\n  prod: {description: production settings, A: b}\n"
                        "steps:\n  - shell: 'echo $A'\n")
    code, out, _ = cli("run", "wf.yml", "--dry-run", "--profile", "prod")
    assert code == 0
    assert "  profile: prod (production settings)\n" in out


def test_resume_from_a_masked_snapshot_is_refused(cli: Cli) -> None:
    cli.write("wf.yml", "env:\n  PW: {value: realpw12345, secret: true}\n"
                        "steps:\n  - shell: 'test -f go'\n  - shell: 'echo $PW'\n")
    code, _, _ = cli("run", "wf.yml")
    assert code == 1
    sid = json.loads(cli("sessions", "ls", "--json")[1])[0]["id"]
    (cli.root / "wf.yml").unlink()
    code, _, err = cli("resume", sid)
    assert code == 2 and "masked" in err and "restore" in err


def test_resume_runs_failed_inputs_again_from_their_failed_step(cli: Cli) -> None:
    for arg in ("one", "three"):
        (cli.root / f"ok-{arg}").touch()
    cli.commit("ok-one", "ok-three")  # the run starts from HEAD, so the files must be committed
    cli.write("wf.yml", "- shell: 'echo ${ARG} >> log.txt'\n- shell: 'test -f ok-${ARG}'\n"
                        "- shell: 'echo done-${ARG} >> log.txt'\n")
    code, _, err = cli("run", "wf.yml", "--args", "one", "--args", "bad", "--args", "three")
    assert code == 1 and "1 input(s) failed: 2" in err
    sid = json.loads(cli("sessions", "ls", "--json")[1])[0]["id"]
    (cli.worktree(sid) / "ok-bad").touch()  # resume continues in the kept worktree
    code, _, err = cli("resume", sid)
    assert code == 0, err
    assert (cli.worktree(sid) / "log.txt").read_text().split() == [
        "one", "done-one", "bad", "three", "done-three", "done-bad"]
    assert not (cli.root / "log.txt").exists()  # the user's checkout is never written to
    code, _, err = cli("resume", sid)
    assert code == 2 and "E5006" in err


def test_a_resumed_session_keeps_its_start_time(cli: Cli) -> None:
    cli.write("wf.yml", "- shell: 'test -f go'\n")
    assert cli("run", "wf.yml")[0] == 1
    before = json.loads(cli("sessions", "ls", "--json")[1])[0]
    (cli.worktree(before["id"]) / "go").touch()  # resume continues in the kept worktree
    assert cli("resume", before["id"])[0] == 0
    after = json.loads(cli("sessions", "show", before["id"], "--json")[1])
    assert after["started_at"] == before["started_at"]
    assert after["status"] == "Completed"


def test_json_mode_prints_one_document_even_when_the_run_cannot_start(cli: Cli) -> None:
    cli.write("bad.yml", "steps:\n  - shel: x\n")
    for argv in (("run", "bad.yml", "--json"), ("run", "missing.yml", "--json"),
                 ("resume", "workflow-123", "--json")):
        code, out, _ = cli(*argv)
        assert code == 2
        doc = json.loads(out)
        assert doc["status"] == "failed" and doc["exit_code"] == 2
        assert doc["error"]["message"]
