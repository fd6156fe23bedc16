"""The workflow environment end to end (spec 11): secrets never leak, dynamic and
conditional values are computed per step in the session worktree, cached values survive a
resume, and environment problems point at their field.  Real git repositories, real
`prodigy` processes, real `sh`."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.e2e.conftest import Project, prodigy_argv

pytestmark = pytest.mark.e2e

SECRET = "s3cr3t-Value-9f2e"


def assert_nowhere(project: Project, value: str,
                   *outputs: subprocess.CompletedProcess[str]) -> None:
    """``value`` is in no captured output and in no file under the storage root."""
    for out in outputs:
        assert value not in out.stdout, out.stdout
        assert value not in out.stderr, out.stderr
    files = project.storage_files()
    assert files
    for path in files:
        assert value not in path.read_text(errors="replace"), path
        assert value.encode() not in path.read_bytes(), path


def session_id(out: subprocess.CompletedProcess[str]) -> str:
    for line in (out.stdout + out.stderr).splitlines():
        if line.startswith("Starting session: "):
            return line.split(": ", 1)[1].strip()
    raise AssertionError(out.stdout + out.stderr)


# --- leak A: a failing dynamic command's stderr -------------------------------------------


def test_failing_dynamic_command_does_not_leak_a_secret(project: Project) -> None:
    project.write("wf.yml", """\
name: leak-a
secrets:
  TOKEN: SECRET_SRC
env:
  D:
    command: "echo dyn-$SECRET_SRC >&2; exit 1"
    cache: true
steps:
  - shell: "echo value=$D"
""")
    env = dict(project.env, SECRET_SRC=SECRET)
    out = project.run("run", "wf.yml", "-vv", env=env)
    assert out.returncode == 2, out.stdout + out.stderr  # stops at start (spec 11 §2.2)
    text = out.stdout + out.stderr
    assert "E2005" in text and "dyn-***REDACTED***" in text
    as_json = project.run("run", "wf.yml", "--json", env=env)
    assert as_json.returncode == 2
    summary = json.loads(as_json.stdout)
    assert summary["error_code"] == "E2005" and "***REDACTED***" in summary["error"]
    assert_nowhere(project, SECRET, out, as_json)


def test_failing_dynamic_command_of_a_mapreduce_job_does_not_leak(project: Project) -> None:
    project.write("mr.yml", """\
name: leak-a-mr
mode: mapreduce
secrets:
  TOKEN: SECRET_SRC
env:
  D:
    command: "echo dyn-$SECRET_SRC >&2; exit 1"
    cache: true
map:
  input: "echo '[1]'"
  agent_template:
    - shell: "echo $D"
""")
    env = dict(project.env, SECRET_SRC=SECRET)
    out = project.run("run", "mr.yml", env=env)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "error[E2005]" in out.stderr and "dyn-***REDACTED***" in out.stderr
    assert "mr.yml:7:5  at $.env.D" in out.stderr
    assert SECRET not in out.stdout + out.stderr
    for path in project.storage_files():
        assert SECRET not in path.read_text(errors="replace"), path


# --- leak B: a sensitive step env value built from a reference ----------------------------


def test_interpolated_sensitive_step_env_value_is_masked(project: Project) -> None:
    project.write("wf.yml", """\
name: leak-b
steps:
  - shell: "echo token=$MY_TOKEN"
    env:
      MY_TOKEN: "${env.RAW}"
    capture: seen
  - shell: "echo again=$MY_TOKEN; echo $MY_TOKEN >&2; exit 4"
    env:
      MY_TOKEN: "${env.RAW}"
""")
    env = dict(project.env, RAW=SECRET)
    out = project.run("run", "wf.yml", "-vv", env=env)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "token=***REDACTED***" in out.stdout
    assert "MY_TOKEN=***REDACTED***" in out.stdout
    sid = session_id(out)
    show = project.run("sessions", "show", sid, "--json", env=env)
    events = project.run("events", "ls", "--job-id", sid, "--json", "--limit", "0", env=env)
    assert show.returncode == 0 and events.returncode == 0
    checkpoints = list(project.home.rglob("*checkpoint*.json"))
    assert checkpoints and any("***REDACTED***" in p.read_text() for p in checkpoints)
    assert_nowhere(project, SECRET, out, show, events)


# --- dynamic and conditional values per step ------------------------------------------------


def test_dynamic_and_conditional_values_are_computed_per_step(project: Project,
                                                             tmp_path: Path) -> None:
    log = tmp_path / "log"
    log.mkdir()
    project.write("wf.yml", f"""\
name: per-step
env:
  KIND: dev
  MODE:
    condition: "${{KIND}} == 'prod'"
    when_true: strict
    when_false: lax
  WHERE:
    command: "pwd; echo run >> {log}/uncached"
  ONCE:
    command: "echo c >> {log}/cached; echo once"
    cache: true
steps:
  - shell: "echo \\"1 $MODE ${{MODE}} $WHERE $ONCE\\" >> {log}/out"
  - shell: "echo prod"
    capture: KIND
  - shell: "echo \\"3 $MODE ${{MODE}} $WHERE $ONCE\\" >> {log}/out"
""")
    out = project.run("run", "wf.yml")
    assert out.returncode == 0, out.stdout + out.stderr
    worktree = project.worktree(out)
    lines = (log / "out").read_text().splitlines()
    assert lines == [f"1 lax lax {worktree} once", f"3 strict strict {worktree} once"]
    assert (log / "uncached").read_text().split() == ["run"] * 3  # once per step
    assert (log / "cached").read_text().split() == ["c"]  # once per run
    assert str(project.root) not in "\n".join(lines)  # not the user's checkout


def test_resumed_run_reuses_the_cached_value(project: Project, tmp_path: Path) -> None:
    flag = tmp_path / "flag"
    count = tmp_path / "count"
    project.write("wf.yml", f"""\
name: cached
env:
  C:
    command: "echo c >> {count}; echo v-$$"
    cache: true
steps:
  - shell: "echo first=$C > {tmp_path}/first"
  - shell: "test -f {flag} && echo second=$C > {tmp_path}/second"
""")
    failed = project.run("run", "wf.yml")
    assert failed.returncode == 1, failed.stdout + failed.stderr
    flag.write_text("go")
    sid = session_id(failed)
    resumed = project.run("resume", sid)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    first = (tmp_path / "first").read_text().split("=")[1]
    assert (tmp_path / "second").read_text().split("=")[1] == first
    assert count.read_text().split() == ["c"]


# --- located problems ---------------------------------------------------------------------


def test_environment_problems_point_at_their_field(project: Project) -> None:
    project.write("wf.yml", """\
name: located
env_files:
  - .env
  - {path: .env.required, required: true}
secrets:
  TOKEN: NOT_SET_ANYWHERE
steps:
  - shell: "echo hi"
""")
    env = dict(project.env)
    env.pop("NOT_SET_ANYWHERE", None)
    out = project.run("run", "wf.yml", env=env)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "warning[W1005]: env file '.env' not found" in out.stderr
    assert "wf.yml:3:5  at $.env_files[0]" in out.stderr
    assert "error[E2004]: env file '.env.required' not found" in out.stderr
    assert "wf.yml:4:5  at $.env_files[1]" in out.stderr
    assert "error[E2003]: Secret 'TOKEN' not found" in out.stderr
    assert "wf.yml:6:10  at $.secrets.TOKEN" in out.stderr
    assert not project.worktrees_dir.exists()  # stopped before any worktree
    checked = project.run("validate", "wf.yml", "--json", env=env)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    doc = json.loads(checked.stdout)
    assert [(w["code"], w["path"], w["line"], w["column"]) for w in doc["warnings"]] == [
        ("W1005", "$.env_files[0]", 3, 5), ("W1005", "$.env_files[1]", 4, 5)]
    strict = project.run("validate", "wf.yml", "--strict", env=env)
    assert strict.returncode == 1
    # the file is found in the repository root, also from a subdirectory
    project.write(".env", "A=1\n")
    project.write(".env.required", "B=2\n")
    (project.root / "sub").mkdir()
    inside = subprocess.run([*prodigy_argv(), "validate", "../wf.yml", "--json"],
                            cwd=project.root / "sub", env=env, capture_output=True,
                            text=True, timeout=60)
    assert inside.returncode == 0, inside.stderr
    assert json.loads(inside.stdout)["warnings"] == []


def test_mapreduce_cached_value_runs_once_in_the_session_worktree(project: Project,
                                                                   tmp_path: Path) -> None:
    project.write("items.json", '["a", "b", "c"]\n')
    project.write("mr.yml", f"""\
name: mr-env
mode: mapreduce
env:
  WHERE:
    command: "echo ran >> {tmp_path}/count; pwd"
    cache: true
map:
  input: items.json
  json_path: "$[*]"
  agent_template:
    - shell: "echo $WHERE >> {tmp_path}/seen"
reduce:
  - shell: "echo reduce $WHERE >> {tmp_path}/seen"
""")
    project.commit()
    out = project.run("run", "mr.yml", "-y")
    assert out.returncode == 0, out.stdout + out.stderr
    assert (tmp_path / "count").read_text() == "ran\n"  # once for the whole job
    seen = (tmp_path / "seen").read_text().splitlines()
    assert len(seen) == 4
    where = {line.removeprefix("reduce ") for line in seen}
    assert len(where) == 1
    path = where.pop()
    assert path.startswith(str(project.worktrees_dir)) and path != str(project.root)
