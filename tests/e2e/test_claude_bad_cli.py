"""A misbehaving `claude` executable (stubs set with PRODIGY_CLAUDE_PATH): clear errors,
transcripts kept.  The well-behaved paths are tested with the real CLI elsewhere."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.e2e.conftest import Project

pytestmark = pytest.mark.e2e


def stub(tmp_path: Path, body: str) -> str:
    path = tmp_path / "claude-stub"
    path.write_text("#!/bin/sh\nif [ \"$1\" = --version ]; then echo 9.9.9; exit 0; fi\n" + body)
    path.chmod(0o755)
    return str(path)


def run(project: Project, tmp_path: Path, body: str, workflow: str = "- claude: '/do it'\n"):
    project.write("wf.yml", workflow)
    env = dict(project.env, PRODIGY_CLAUDE_PATH=stub(tmp_path, body))
    return project.run("run", "wf.yml", env=env, timeout=60)


def test_cli_that_exits_at_once(project: Project, tmp_path: Path) -> None:
    out = run(project, tmp_path, "echo 'auth problem' >&2\nexit 3\n")
    assert out.returncode == 1
    assert "E7002" in out.stderr and "failed with exit code 3" in out.stderr
    assert "auth problem" in out.stderr
    transcript = out.stderr.split("Transcript: ", 1)[1].split()[0]
    assert Path(transcript).exists()


def test_garbage_on_stdout_and_no_result(project: Project, tmp_path: Path) -> None:
    out = run(project, tmp_path, "echo 'this is not json'\necho '{\"type\": 42}'\nexit 0\n")
    assert out.returncode == 1
    assert "E7004" in out.stderr and "no result message" in out.stderr
    transcript = Path(out.stderr.split("Transcript: ", 1)[1].split()[0])
    assert "this is not json" in transcript.read_text()


def test_result_with_is_error(project: Project, tmp_path: Path) -> None:
    line = json.dumps({"type": "result", "subtype": "error_max_turns", "is_error": True,
                       "result": "gave up"})
    out = run(project, tmp_path, f"echo '{line}'\nexit 0\n")
    assert out.returncode == 1
    assert "E7003" in out.stderr and "error_max_turns" in out.stderr


def test_argv_is_exact_and_root_safe(project: Project, tmp_path: Path) -> None:
    record = tmp_path / "argv.txt"
    result = json.dumps({"type": "result", "subtype": "success", "is_error": False,
                         "result": "ok"})
    body = f"for a in \"$@\"; do echo \"$a\" >> {record}; done\necho '{result}'\n"
    out = run(project, tmp_path, body, "- claude: '/lint src'\n  model: haiku\n")
    assert out.returncode == 0, out.stderr
    argv = record.read_text().splitlines()
    expected = ["-p", "/lint src", "--output-format", "stream-json", "--verbose",
                "--model", "haiku"]
    if os.geteuid() == 0:
        expected += ["--permission-mode", "acceptEdits", "--allowedTools",
                     "Bash,Edit,Write,Read,Glob,Grep,NotebookEdit"]
    else:
        expected += ["--dangerously-skip-permissions"]
    assert argv == expected


def test_the_version_check_is_remembered_until_the_cli_changes(project: Project,
                                                               tmp_path: Path) -> None:
    counter = tmp_path / "version-calls"
    result = json.dumps({"type": "result", "subtype": "success", "is_error": False,
                         "result": "ok"})
    path = tmp_path / "claude-stub"
    path.write_text(f"#!/bin/sh\nif [ \"$1\" = --version ]; then echo x >> {counter}; "
                    f"echo 1.0; exit 0; fi\necho '{result}'\n")
    path.chmod(0o755)
    project.write("wf.yml", "- claude: '/do it'\n")
    env = dict(project.env, PRODIGY_CLAUDE_PATH=str(path))
    for _ in range(2):
        assert project.run("run", "wf.yml", env=env).returncode == 0
    assert counter.read_text().count("x") == 1
    path.write_text(path.read_text() + "# changed\n")
    assert project.run("run", "wf.yml", env=env).returncode == 0
    assert counter.read_text().count("x") == 2
