"""Session worktrees and the final merge, end to end (spec 06 §3, §4, §7, §8; issue 4).

Real git repositories in temporary directories and the installed ``prodigy``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import Project


def git(cwd: Path, *args: str) -> str:
    result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                            check=True)
    return result.stdout.strip()


def commit_all(project: Project, message: str = "add files") -> None:
    git(project.root, "add", "-A")
    git(project.root, "commit", "-qm", message)


def worktree_of(output: str) -> Path:
    found = re.search(r"Created worktree at: (\S+)", output)
    assert found, output
    return Path(found.group(1))


def session_id_of(output: str) -> str:
    found = re.search(r"Starting session: (\S+)", output)
    assert found, output
    return found.group(1)


def snapshot(root: Path) -> str:
    """A digest of the user's checkout: every file (with .git's index and HEAD) and refs."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if rel.startswith(".git/") and rel not in (".git/index", ".git/HEAD"):
            continue
        if path.is_file():
            digest.update(rel.encode() + b"\0" + path.read_bytes() + b"\0")
    digest.update(git(root, "rev-parse", "HEAD").encode())
    digest.update(git(root, "status", "--porcelain").encode())
    return digest.hexdigest()


COMMITS_A_FILE = """\
name: adds-a-file
commands:
  - shell: "echo made by prodigy > made.txt && git add made.txt && git commit -qm 'add made.txt'"
"""


def test_run_on_a_feature_branch_merges_into_it_and_cleans_up(project: Project) -> None:
    git(project.root, "checkout", "-qb", "feature/x")
    project.write("wf.yml", COMMITS_A_FILE)
    commit_all(project)
    result = project.run("run", "wf.yml", "-y")
    assert result.returncode == 0, result.stderr
    wt = worktree_of(result.stdout)
    assert wt.is_relative_to(project.home / "worktrees" / "repo")
    assert "Worktree changes merged successfully!" in result.stdout
    # the file is on feature/x in a merge commit; the user's checkout has it
    assert (project.root / "made.txt").read_text() == "made by prodigy\n"
    assert git(project.root, "rev-parse", "--abbrev-ref", "HEAD") == "feature/x"
    subject = git(project.root, "log", "-1", "--format=%s")
    assert subject == f"Merge prodigy-{wt.name} into feature/x"
    assert len(git(project.root, "log", "-1", "--format=%P").split()) == 2
    # nothing leaks: no worktree, no branch, no lock
    assert not wt.exists()
    assert git(project.root, "branch", "--list", f"prodigy-{wt.name}") == ""
    assert str(wt) not in git(project.root, "worktree", "list")
    locks = project.home / "resume_locks"
    assert not any(p.name.startswith("workflow-") for p in locks.iterdir())
    meta = json.loads((project.home / "worktrees" / "repo" / ".metadata" /
                       f"{wt.name}.json").read_text())
    assert meta["merged"] is True and meta["status"] == "merged" and meta["merged_at"]
    summary = project.sessions()[0]
    assert summary["merge"] == {"target": "feature/x", "merged": True, "reason": None}


def test_the_users_checkout_is_untouched_while_the_run_works(project: Project,
                                                           tmp_path: Path) -> None:
    reached = tmp_path / "reached"
    release = tmp_path / "release"
    project.write("wf.yml", f"""\
name: slow
commands:
  - shell: "echo one > one.txt && git add one.txt && git commit -qm one && echo dirty > two.txt"
  - shell: "touch {reached} && while [ ! -e {release} ]; do sleep 0.05; done"
""")
    commit_all(project)
    project.write("local-edit.txt", "the user's own uncommitted file\n")
    before = snapshot(project.root)
    proc = project.popen("run", "wf.yml")
    try:
        deadline = time.monotonic() + 30
        while not reached.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert snapshot(project.root) == before
    finally:
        release.touch()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    # no -y and no terminal: not merged, the checkout is still exactly as it was
    assert "To merge later: prodigy worktree merge" in out
    assert snapshot(project.root) == before
    assert "warning[W4001]" in err and "local-edit.txt" in err
    assert "warning[W4004]" in err and "two.txt" in err


def test_no_terminal_keeps_the_worktree_and_worktree_merge_merges_it(project: Project
                                                                    ) -> None:
    project.write("wf.yml", COMMITS_A_FILE)
    commit_all(project)
    result = project.run("run", "wf.yml")
    assert result.returncode == 0, result.stderr
    wt = worktree_of(result.stdout)
    assert f"Worktree {wt.name} was not merged into master." in result.stdout or \
        f"Worktree {wt.name} was not merged into main." in result.stdout
    assert f"To merge later: prodigy worktree merge {wt.name}" in result.stdout
    assert wt.is_dir() and not (project.root / "made.txt").exists()
    listed = project.run("worktree", "ls", "--json")
    docs = json.loads(listed.stdout)
    assert [d["worktree_name"] for d in docs] == [wt.name]
    assert docs[0]["ahead"] == 1
    merged = project.run("worktree", "merge", wt.name)
    assert merged.returncode == 0, merged.stderr
    assert f"Successfully merged worktree '{wt.name}'" in merged.stdout
    assert (project.root / "made.txt").exists()
    assert not wt.exists()
    assert project.sessions()[0]["merge"]["merged"] is True


def test_answering_no_at_the_prompt_keeps_the_worktree(project: Project) -> None:
    """The prompt needs a terminal on both ends: run under a pseudo-terminal."""
    import pty

    project.write("wf.yml", COMMITS_A_FILE)
    commit_all(project)
    from tests.e2e.conftest import prodigy_argv

    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover - the child
        os.chdir(project.root)
        os.execvpe(prodigy_argv()[0], [*prodigy_argv(), "run", "wf.yml"], project.env)
    output = b""
    answered = False
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
        if not answered and b"[Y/n]: " in output:
            os.write(fd, b"maybe\n")  # not an answer: asked again
            answered = True
        elif answered and output.count(b"[Y/n]: ") == 2:
            os.write(fd, b"n\n")
            answered = False
            output += b"<answered n>"
    _, status = os.waitpid(pid, 0)
    text = output.decode("utf-8", "replace")
    assert os.waitstatus_to_exitcode(status) == 0, text
    assert text.count("[Y/n]: ") == 2
    assert "was not merged into" in text
    wt = worktree_of(text)
    assert wt.is_dir() and not (project.root / "made.txt").exists()


def test_no_new_commits_skips_the_merge_and_removes_the_worktree(project: Project) -> None:
    project.write("wf.yml", "- shell: 'echo nothing to commit'\n")
    commit_all(project)
    result = project.run("run", "wf.yml")
    assert result.returncode == 0, result.stderr
    wt = worktree_of(result.stdout)
    assert f"No new commits in worktree '{wt.name}', skipping merge" in result.stdout
    assert not wt.exists()
    assert git(project.root, "branch", "--list", f"prodigy-{wt.name}") == ""


def test_a_conflict_with_the_users_branch_loses_nothing(project: Project,
                                                       tmp_path: Path) -> None:
    reached = tmp_path / "reached"
    release = tmp_path / "release"
    project.write("shared.txt", "base\n")
    project.write("wf.yml", f"""\
name: edits-shared
commands:
  - shell: "echo from-prodigy > shared.txt && git commit -qam 'prodigy edit'"
  - shell: "touch {reached} && while [ ! -e {release} ]; do sleep 0.05; done"
""")
    commit_all(project)
    before_head = git(project.root, "rev-parse", "HEAD")
    proc = project.popen("run", "wf.yml", "-y", "--json")
    deadline = time.monotonic() + 30
    while not reached.exists():
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    # the user commits a conflicting change on the branch while the run goes on
    project.write("shared.txt", "from-the-user\n")
    git(project.root, "commit", "-qam", "user edit")
    user_head = git(project.root, "rev-parse", "HEAD")
    release.touch()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    summary = json.loads(out)
    assert summary["merge"] == {"target": summary["merge"]["target"], "merged": False,
                                "reason": "conflict"}
    assert summary["error_code"] == "E4004"
    assert "has conflicts in: shared.txt" in err
    assert "The merge was aborted" in err and "To merge by hand: git checkout" in err
    # the user's branch is unchanged and clean; prodigy's work is kept in its worktree
    assert git(project.root, "rev-parse", "HEAD") == user_head != before_head
    assert git(project.root, "status", "--porcelain") == ""
    assert (project.root / "shared.txt").read_text() == "from-the-user\n"
    wt = Path(summary["worktree"]["path"])
    assert (wt / "shared.txt").read_text() == "from-prodigy\n"
    assert git(wt, "log", "-1", "--format=%s") == "prodigy edit"


def test_a_local_edit_of_a_file_the_merge_changes_is_refused_and_kept(project: Project,
                                                                     tmp_path: Path) -> None:
    project.write("README.md", "demo\n")
    project.write("wf.yml", """\
name: edits-readme
commands:
  - shell: "echo changed > README.md && git commit -qam 'edit readme'"
""")
    commit_all(project)
    project.write("README.md", "my unsaved edit\n")
    result = project.run("run", "wf.yml", "-y")
    assert result.returncode == 1
    assert "error[E4005]" in result.stderr
    assert (project.root / "README.md").read_text() == "my unsaved edit\n"
    wt = worktree_of(result.stdout)
    assert wt.is_dir()


def test_an_unrelated_local_edit_survives_the_merge(project: Project) -> None:
    project.write("notes.txt", "v1\n")
    project.write("wf.yml", COMMITS_A_FILE)
    commit_all(project)
    project.write("notes.txt", "my local edit\n")
    result = project.run("run", "wf.yml", "-y")
    assert result.returncode == 0, result.stderr
    assert (project.root / "made.txt").exists()
    assert (project.root / "notes.txt").read_text() == "my local edit\n"
    assert git(project.root, "status", "--porcelain") == "M notes.txt"


def test_custom_merge_workflow_sees_the_merge_variables(project: Project) -> None:
    project.write("wf.yml", """\
name: custom-merge
commands:
  - shell: "echo a > a.txt && git add a.txt && git commit -qm 'first change'"
  - shell: "echo b > b.txt && git add b.txt && git commit -qm 'second change'"
merge:
  commands:
    - shell: >-
        echo "vars: ${merge.worktree} ${merge.source_branch} ${merge.target_branch}
        ${merge.commit_count} ${merge.file_count} [${merge.file_list}] ${merge.session_id}"
    - shell: "git -C ${merge.repo_path} merge --no-ff -q -m 'Ship ${merge.worktree}' ${merge.source_branch}"
  timeout: 120
""")
    commit_all(project)
    branch = git(project.root, "rev-parse", "--abbrev-ref", "HEAD")
    result = project.run("run", "wf.yml", "-y")
    assert result.returncode == 0, result.stdout + result.stderr
    wt = worktree_of(result.stdout)
    sid = session_id_of(result.stdout)
    assert f"Executing custom merge workflow for '{wt.name}' into '{branch}'..." in result.stdout
    assert (f"vars: {wt.name} prodigy-{wt.name} {branch} 2 2 [a.txt, b.txt] {sid}"
            in result.stdout)
    assert git(project.root, "log", "-1", "--format=%s") == f"Ship {wt.name}"
    assert (project.root / "b.txt").exists()
    assert not wt.exists()


def test_custom_merge_that_does_not_merge_is_e4005(project: Project) -> None:
    project.write("wf.yml", """\
name: custom-merge-noop
commands:
  - shell: "echo a > a.txt && git add a.txt && git commit -qm change"
merge:
  - shell: "echo ${merge.source_branch} ${merge.target_branch} ${merge.commit_count}"
""")
    commit_all(project)
    result = project.run("run", "wf.yml", "-y")
    assert result.returncode == 1
    wt = worktree_of(result.stdout)
    assert f"prodigy-{wt.name}" in result.stdout and " 1" in result.stdout
    assert "error[E4005]: custom merge workflow finished but" in result.stderr
    assert "is not merged into" in result.stderr
    assert wt.is_dir() and not (project.root / "a.txt").exists()


def test_four_runs_at_once_in_one_repository_all_merge(project: Project) -> None:
    for i in range(4):
        project.write(f"wf{i}.yml", f"""\
name: parallel-{i}
commands:
  - shell: "echo {i} > out-{i}.txt && git add out-{i}.txt && git commit -qm 'out {i}'"
""")
    commit_all(project)
    procs = [project.popen("run", f"wf{i}.yml", "-y") for i in range(4)]
    results = [p.communicate(timeout=120) for p in procs]
    for proc, (out, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, out + err
        assert "Worktree changes merged successfully!" in out
    for i in range(4):
        assert (project.root / f"out-{i}.txt").read_text() == f"{i}\n"
    assert git(project.root, "status", "--porcelain") == ""
    assert git(project.root, "worktree", "list").count("\n") == 0  # only the checkout
    assert git(project.root, "branch", "--list", "prodigy-*") == ""


def test_kill_9_then_resume_continues_in_the_worktree_and_merges_once(
        project: Project, tmp_path: Path) -> None:
    reached = tmp_path / "reached"
    project.write("wf.yml", f"""\
name: killed
commands:
  - shell: "echo 1 > step1.txt && git add step1.txt && git commit -qm step1"
  - shell: "echo $$$$ > {tmp_path}/step.pid; touch {reached}; sleep 30"
  - shell: "echo 3 > step3.txt && git add step3.txt && git commit -qm step3"
""")
    commit_all(project)
    proc = project.popen("run", "wf.yml", "-y")
    deadline = time.monotonic() + 30
    while not reached.exists():
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    out, _ = proc.communicate(timeout=30)
    with contextlib.suppress(ProcessLookupError):  # the orphaned step's `sleep 30`
        os.killpg(os.getpgid(int((tmp_path / "step.pid").read_text())), signal.SIGKILL)
    wt = worktree_of(out)
    sid = session_id_of(out)
    assert wt.is_dir()
    reached.unlink()
    project.write("wf.yml", project.root.joinpath("wf.yml").read_text().replace(
        "sleep 30", "true"))
    resumed = project.run("resume", sid, "-y", "--force")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "Created worktree at" not in resumed.stdout
    assert resumed.stdout.count("Worktree changes merged successfully!") == 1
    merges = git(project.root, "log", "--merges", "--format=%s").splitlines()
    assert merges == [f"Merge prodigy-{wt.name} into {merges[0].rsplit(' ', 1)[1]}"]
    assert git(project.root, "log", "--format=%s", "--", "step1.txt").splitlines() == \
        ["step1"]
    assert (project.root / "step3.txt").exists()
    assert not wt.exists()
    again = project.run("resume", sid, "-y")
    assert again.returncode == 2 and "E5006" in again.stderr


def test_deleted_original_branch_falls_back_to_the_default_branch(project: Project,
                                                                  tmp_path: Path) -> None:
    base = git(project.root, "rev-parse", "--abbrev-ref", "HEAD")
    if base != "main":
        git(project.root, "branch", "-m", base, "main")
    git(project.root, "checkout", "-qb", "feature/gone")
    reached = tmp_path / "reached"
    release = tmp_path / "release"
    project.write("wf.yml", f"""\
name: fallback
commands:
  - shell: "echo x > x.txt && git add x.txt && git commit -qm x"
  - shell: "touch {reached} && while [ ! -e {release} ]; do sleep 0.05; done"
""")
    commit_all(project)
    proc = project.popen("run", "wf.yml", "-y")
    deadline = time.monotonic() + 30
    while not reached.exists():
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    git(project.root, "checkout", "-q", "main")
    git(project.root, "branch", "-D", "feature/gone")
    release.touch()
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "warning[W4002]: original branch 'feature/gone' no longer exists; merging into " \
           "'main'" in err
    assert (project.root / "x.txt").exists()


def test_detached_head_merges_into_main(project: Project) -> None:
    base = git(project.root, "rev-parse", "--abbrev-ref", "HEAD")
    if base != "main":
        git(project.root, "branch", "-m", base, "main")
    project.write("wf.yml", COMMITS_A_FILE)
    commit_all(project)
    git(project.root, "checkout", "-q", "--detach")
    result = project.run("run", "wf.yml", "-y")
    assert result.returncode == 0, result.stderr
    assert git(project.root, "log", "-1", "--format=%s", "main").endswith("into main")
    # the merge ran in a temporary worktree: the detached checkout is untouched
    assert not (project.root / "made.txt").exists()
    assert not list((project.home / "worktrees" / "repo").glob(".merge-*"))


def test_named_worktree_is_reused_and_survives_merges(project: Project) -> None:
    project.write("wf.yml", """\
name: named
worktree: exp-a
commands:
  - shell: "date +%s%N >> log.txt && git add log.txt && git commit -qm 'log line'"
""")
    commit_all(project)
    first = project.run("run", "wf.yml", "-y")
    assert first.returncode == 0, first.stderr
    path = project.home / "worktrees" / "repo" / "exp-a"
    assert f"Created worktree at: {path}" in first.stdout
    assert "Worktree kept at" in first.stdout
    second = project.run("run", "wf.yml", "-y")
    assert second.returncode == 0, second.stderr
    assert f"Using worktree at: {path}" in second.stdout
    assert len((path / "log.txt").read_text().splitlines()) == 2
    assert len((project.root / "log.txt").read_text().splitlines()) == 2
    assert path.is_dir()
    assert git(project.root, "branch", "--list", "prodigy-exp-a") != ""


def test_dry_run_creates_no_worktree(project: Project) -> None:
    project.write("wf.yml", COMMITS_A_FILE)
    commit_all(project)
    before = git(project.root, "worktree", "list")
    result = project.run("run", "wf.yml", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "worktree: would create" in result.stdout
    assert "Merge: prodigy-workflow-" in result.stdout
    assert git(project.root, "worktree", "list") == before
    assert not (project.home / "worktrees").exists()


def test_not_a_repository_and_no_commits_are_refused(tmp_path: Path, project: Project
                                                     ) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "wf.yml").write_text("- shell: 'true'\n")
    env = project.env
    from tests.e2e.conftest import prodigy_argv

    result = subprocess.run([*prodigy_argv(), "run", "wf.yml"], cwd=plain, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert f"error[E4001]: not a git repository: {plain}" in result.stderr
    subprocess.run(["git", "init", "-q"], cwd=plain, check=True)
    result = subprocess.run([*prodigy_argv(), "run", "wf.yml"], cwd=plain, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "error[E4002]: repository has no commits" in result.stderr


@pytest.mark.parametrize("cleanup", ["false"])
def test_auto_cleanup_false_keeps_the_merged_worktree(project: Project, cleanup: str) -> None:
    project.write("wf.yml", COMMITS_A_FILE)
    commit_all(project)
    env = {**project.env, "PRODIGY_AUTO_CLEANUP": cleanup}
    result = project.run("run", "wf.yml", "-y", env=env)
    assert result.returncode == 0, result.stderr
    wt = worktree_of(result.stdout)
    assert wt.is_dir() and (project.root / "made.txt").exists()
    assert f"Remove it with: prodigy worktree clean {wt.name}" in result.stdout


CONFLICTING = """\
name: edits-shared
merge_conflicts:
  strategy: claude
  claude: "{prompt}"
{verify}
commands:
  - shell: "echo from-prodigy > shared.txt && git commit -qam 'prodigy edit'"
  - shell: "touch {reached} && while [ ! -e {release} ]; do sleep 0.05; done"
"""


def _conflicting_run(project: Project, tmp_path: Path, env: dict[str, str], prompt: str,
                     verify: str = "") -> tuple[subprocess.Popen[str], str, str, str]:
    reached, release = tmp_path / "reached", tmp_path / "release"
    project.write("shared.txt", "base\n")
    project.write("wf.yml", CONFLICTING.format(prompt=prompt, verify=verify, reached=reached,
                                               release=release))
    commit_all(project)
    from tests.e2e.conftest import prodigy_argv

    proc = subprocess.Popen([*prodigy_argv(), "run", "wf.yml", "-y"], cwd=project.root, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not reached.exists():
        assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    project.write("shared.txt", "from-the-user\n")
    git(project.root, "commit", "-qam", "user edit")
    user_head = git(project.root, "rev-parse", "HEAD")
    release.touch()
    out, err = proc.communicate(timeout=180)
    return proc, out, err, user_head


@pytest.fixture
def claude_env_(project: Project, fake_anthropic: object, tmp_path: Path) -> dict[str, str]:
    from tests.fakeapi.cli import claude_env, find_claude

    environment = claude_env(project.env, fake_anthropic.url,  # type: ignore[attr-defined]
                             home=tmp_path / "claude-home")
    environment["PRODIGY_HOME"] = str(project.home)
    environment["PRODIGY_CLAUDE_PATH"] = find_claude()
    return environment


@pytest.mark.e2e
def test_claude_resolves_a_final_merge_conflict_when_configured(
        project: Project, tmp_path: Path, claude_env_: dict[str, str]) -> None:
    prompt = ("FAKE: bash printf 'both sides\\\\n' > shared.txt && git add shared.txt && "
              "git commit -q --no-edit")
    proc, out, err, user_head = _conflicting_run(project, tmp_path, claude_env_, prompt,
                                                 verify='  verify: "grep -q both shared.txt"')
    assert proc.returncode == 0, out + err
    assert "Worktree changes merged successfully!" in out
    head = git(project.root, "rev-parse", "HEAD")
    assert git(project.root, "rev-parse", "HEAD^1") == user_head != head
    assert (project.root / "shared.txt").read_text() == "both sides\n"
    assert git(project.root, "status", "--porcelain") == ""


@pytest.mark.e2e
def test_a_resolution_that_leaves_markers_is_rejected_and_rolled_back(
        project: Project, tmp_path: Path, claude_env_: dict[str, str]) -> None:
    # staged as resolved, but the markers are still in the file
    proc, out, err, user_head = _conflicting_run(project, tmp_path, claude_env_,
                                                 "FAKE: bash git add shared.txt")
    assert proc.returncode == 1, out + err
    assert "conflict markers remain in shared.txt" in err
    assert "has conflicts in: shared.txt" in err
    assert git(project.root, "rev-parse", "HEAD") == user_head
    assert git(project.root, "status", "--porcelain") == ""
    assert (project.root / "shared.txt").read_text() == "from-the-user\n"


@pytest.mark.e2e
def test_a_resolver_that_gives_up_leaves_everything_as_it_was(
        project: Project, tmp_path: Path, claude_env_: dict[str, str]) -> None:
    proc, out, err, user_head = _conflicting_run(project, tmp_path, claude_env_,
                                                 "FAKE: say I could not resolve it")
    assert proc.returncode == 1, out + err
    assert "unmerged paths remain: shared.txt" in err
    assert git(project.root, "rev-parse", "HEAD") == user_head
    assert git(project.root, "status", "--porcelain") == ""


def test_exec_runs_one_command_in_a_worktree_and_merges(project: Project,
                                                        tmp_path: Path) -> None:
    flag = tmp_path / "ok"
    result = project.run("exec", "echo e > e.txt && git add e.txt && git commit -qm exec")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Executing command: echo e > e.txt")
    assert "Worktree changes merged successfully!" in result.stdout  # -y is implied
    assert (project.root / "e.txt").exists()
    failed = project.run("exec", f"test -e {flag} && echo f > f.txt && git add f.txt && "
                                 f"git commit -qm f", "--retry", "2")
    assert failed.returncode == 1
    sid = session_id_of(failed.stdout)
    assert failed.stdout.count("Executing step 1/1") == 1
    flag.touch()
    resumed = project.run("resume", sid)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert (project.root / "f.txt").exists()


def test_a_failed_run_keeps_its_worktree_listed_with_the_resume_command(
        project: Project, tmp_path: Path) -> None:
    flag = tmp_path / "fixed"
    project.write("wf.yml", f"""\
name: fails-once
commands:
  - shell: "echo 1 > one.txt && git add one.txt && git commit -qm one"
  - shell: "test -e {flag}"
""")
    commit_all(project)
    failed = project.run("run", "wf.yml", "-y")
    assert failed.returncode == 1
    wt, sid = worktree_of(failed.stdout), session_id_of(failed.stdout)
    assert wt.is_dir() and not (project.root / "one.txt").exists()
    listed = project.run("worktree", "ls")
    assert f"{wt.name}: failed, resume with: prodigy resume {sid}" in listed.stdout
    flag.touch()
    resumed = project.run("resume", sid, "-y")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert (project.root / "one.txt").exists() and not wt.exists()
    assert "No active Prodigy worktrees found." in project.run("worktree", "ls").stdout
