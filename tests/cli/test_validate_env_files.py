"""``prodigy validate`` and missing ``env_files`` (spec 01 §7 W1005, spec 11 §4.1)."""

from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path

from prodigy_cli.cmd_validate import cmd_validate

WORKFLOW = """\
name: files
env_files:
  - .env
  - path: .env.local
    required: true
secrets:
  TOKEN: SRC
steps:
  - shell: "echo hi"
"""


def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / "flows").mkdir(parents=True)
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    (root / "flows" / "wf.yml").write_text(WORKFLOW)
    return root


def validate(path: Path, cwd: Path, *, strict: bool = False, as_json: bool = True,
             environ: dict[str, str] | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = cmd_validate(str(path), strict=strict, as_json=as_json, profile=None,
                        environ=environ or {}, out=out, err=err, cwd=str(cwd))
    return code, out.getvalue(), err.getvalue()


def test_missing_env_files_are_w1005_at_their_entry(tmp_path: Path) -> None:
    root = repo(tmp_path)
    code, out, _ = validate(root / "flows" / "wf.yml", root / "flows")
    assert code == 0
    doc = json.loads(out)
    assert doc["valid"] is True
    assert [(w["code"], w["path"], w["line"], w["column"]) for w in doc["warnings"]] == [
        ("W1005", "$.env_files[0]", 3, 5), ("W1005", "$.env_files[1]", 4, 5)]
    code, _, err = validate(root / "flows" / "wf.yml", root, strict=True, as_json=False)
    assert code == 1 and "error[W1005]" in err


def test_env_files_are_looked_for_in_the_repository_root(tmp_path: Path) -> None:
    root = repo(tmp_path)
    (root / ".env").write_text("A=1\n")
    (root / ".env.local").write_text("B=2\n")
    code, out, _ = validate(root / "flows" / "wf.yml", root / "flows")
    assert code == 0 and json.loads(out)["warnings"] == []
    # next to the workflow file is not the repository root
    (root / ".env").unlink()
    (root / "flows" / ".env").write_text("A=1\n")
    _, out, _ = validate(root / "flows" / "wf.yml", root / "flows")
    assert [w["path"] for w in json.loads(out)["warnings"]] == ["$.env_files[0]"]


def test_validate_output_is_masked(tmp_path: Path) -> None:
    root = repo(tmp_path)
    secret = "validate-secret-77"
    (root / "flows" / "wf.yml").write_text(WORKFLOW.replace("name: files",
                                                            f"name: files-{secret}"))
    code, out, err = validate(root / "flows" / "wf.yml", root, as_json=False,
                              environ={"SRC": secret})
    assert code == 0
    assert secret not in out + err and "files-***REDACTED***" in out
