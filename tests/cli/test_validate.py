"""``prodigy validate``: spec 01 §8-§9, spec 08 §2.14 and the compat table of spec/README.md."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from prodigy_cli.cmd_validate import cmd_validate

EXAMPLES = Path(__file__).resolve().parents[2] / ".." / "shared" / "compat" / "original-examples"


def run(path: Path | str, *, strict: bool = False, as_json: bool = False, profile: str | None = None,
        environ: dict[str, str] | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = cmd_validate(str(path), strict=strict, as_json=as_json, profile=profile,
                        environ=environ or {}, out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def write(tmp_path: Path, text: str, name: str = "wf.yml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# --- the compat table -----------------------------------------------------------------

@pytest.mark.parametrize(
    "name",
    [
        "standard-workflow.yml",
        "test-resume.yml",
        "test-sensitive-masking.yml",
        "capture-json-processing.yml",
        "capture-output-custom-vars.yml",
        "mapreduce-command-input.yml",
    ],
)
def test_compat_examples_are_valid(name: str) -> None:
    code, out, err = run(EXAMPLES / name)
    assert code == 0, err
    assert "✓ Workflow is valid" in out
    assert "error[" not in err


def test_capture_conditional_flow_warns_per_filter() -> None:
    code, out, err = run(EXAMPLES / "capture-conditional-flow.yml")
    assert code == 0
    assert err.count("warning[W1003]") == 3
    assert ":62:" in err and ":63:" in err and ":72:" in err
    assert "✓ Workflow is valid" in out


def test_capture_json_processing_warns_for_length_filter() -> None:
    _, _, err = run(EXAMPLES / "capture-json-processing.yml")
    assert err.count("warning[W1003]") == 1


def test_capture_parallel_analysis_is_a_yaml_error() -> None:
    code, out, err = run(EXAMPLES / "capture-parallel-analysis.yml")
    assert code == 1
    assert "error[E1001]" in err
    assert "capture-parallel-analysis.yml:104:5" in err
    assert "line 103" in err
    assert "✗ 1 error(s), 0 warning(s)" in out


def test_mapreduce_json_input_is_e1001_at_line_30() -> None:
    code, _, err = run(EXAMPLES / "mapreduce-json-input.yml")
    assert code == 1
    assert "error[E1001]" in err
    assert "mapreduce-json-input.yml:30:" in err


def test_mapreduce_json_input_quoted_is_valid(tmp_path: Path) -> None:
    text = (EXAMPLES / "mapreduce-json-input.yml").read_text(encoding="utf-8")
    fixed = text.replace(
        'echo "Processing item ${item.id}: ${item.task} for ${item.file}"',
        '\'echo "Processing item ${item.id}: ${item.task} for ${item.file}"\'',
    )
    # Line 48 has the same defect (`Successful: ...` in a plain scalar), reported once line 30
    # is fixed: YAML allows one syntax error per parse.
    code, _, err = run(write(tmp_path, fixed))
    assert code == 1 and ":48:" in err
    fixed = fixed.replace(
        'echo "Successful: ${map.successful}, Failed: ${map.failed}"',
        '\'echo "Successful: ${map.successful}, Failed: ${map.failed}"\'',
    )
    code, out, err = run(write(tmp_path, fixed))
    assert code == 0, err
    assert "mode: mapreduce" in out


def test_every_example_has_an_expected_outcome() -> None:
    names = {p.name for p in EXAMPLES.glob("*.yml")}
    assert len(names) == 9


# --- output format and exit codes -------------------------------------------------------

def test_valid_file_prints_summary_name_mode_and_description(tmp_path: Path) -> None:
    path = write(tmp_path, "name: demo\ndescription: does things\nsteps: [{shell: x}]\n")
    code, out, err = run(path)
    assert (code, err) == (0, "")
    assert out.splitlines()[0] == f"✓ Workflow is valid: {path}"
    assert "mode: standard" in out and "description: does things" in out


def test_problems_in_order_then_summary(tmp_path: Path) -> None:  # 01 §9 #8
    text = "steps:\n  - shell: a\n    timeout: nope\n" + "  - shell: b\n" * 4 + "    capture_format: xml\n" \
        + "  - shell: f\n" * 11 + "  - {}\n"
    code, out, err = run(write(tmp_path, text))
    assert code == 1
    lines = [line for line in err.splitlines() if line.startswith("error[")]
    assert [line.split("]")[0] for line in lines] == ["error[E1011", "error[E1005", "error[E1007"]
    assert out.strip() == "✗ 3 error(s), 0 warning(s)"
    assert "wf.yml:3:" in err and "wf.yml:8:" in err and "wf.yml:20:" in err


def test_unknown_key_render_and_strict(tmp_path: Path) -> None:  # 01 §9 #6, #7
    path = write(tmp_path, 'steps:\n  - shell: "x"\n    retry_config: {attempts: 2}\n')
    code, out, err = run(path)
    assert code == 0
    assert "warning[W1001]: unknown key 'retry_config' (did you mean 'retry'?)" in err
    assert f"--> {path}:3:5  at $.steps[0].retry_config" in err
    code, out, err = run(path, strict=True)
    assert code == 1
    assert "error[E1006]" in err
    assert "✗ 1 error(s), 0 warning(s)" in out


def test_json_output(tmp_path: Path) -> None:  # 01 §9 #16
    path = write(tmp_path, '- {shell: "echo hi", claude: "/x"}\n- {shell: y, retry_config: {}}\n')
    code, out, _err = run(path, as_json=True)
    assert code == 1
    document = json.loads(out)
    assert out.count("\n") == 1
    assert document["valid"] is False
    assert document["file"] == str(path)
    assert [e["code"] for e in document["errors"]] == ["E1008"]
    assert document["errors"][0]["path"] == "$[0]"
    assert [w["code"] for w in document["warnings"]] == ["W1001"]
    assert document["warnings"][0]["suggestion"] == "retry"
    assert set(document["errors"][0]) == {"code", "message", "file", "line", "column", "path", "suggestion"}


def test_json_output_valid(tmp_path: Path) -> None:
    code, out, _ = run(write(tmp_path, "- shell: x\n"), as_json=True)
    assert code == 0
    document = json.loads(out)
    assert document["valid"] is True and document["mode"] == "standard"


@pytest.mark.parametrize("kind", ["missing", "directory", "binary"])
def test_unreadable_file_exits_2(tmp_path: Path, kind: str) -> None:
    if kind == "missing":
        path = tmp_path / "nope.yml"
    elif kind == "directory":
        path = tmp_path
    else:
        path = tmp_path / "bin.yml"
        path.write_bytes(b"name: \xff\xfe\n")
    code, out, err = run(path)
    assert code == 2
    assert "error[E1001]" in err
    assert "help:" in err
    assert "✗ 1 error(s)" in out


def test_unknown_profile(tmp_path: Path) -> None:
    path = write(tmp_path, "profiles: {prod: {A: b}}\nsteps: [{shell: x}]\n")
    code, _, err = run(path, profile="nope")
    assert code == 1
    assert "error[E1013]" in err and "prod" in err
    assert run(path, profile="prod")[0] == 0
    assert run(path, environ={"PRODIGY_PROFILE": "nope"})[0] == 1


def test_valid_but_not_runnable_yet_is_noted(tmp_path: Path) -> None:
    path = write(tmp_path, "steps: [{shell: x}]\nworktree_config:\n"
                           "  parallel_worktrees: 2\n")
    code, _, err = run(path)
    assert code == 0  # the file is valid
    assert "note: `prodigy run` refuses this (E1016)" in err
    assert "wf.yml:3:3  at $.worktree_config" in err


def test_profile_descriptions_are_shown(tmp_path: Path) -> None:  # 11 §5.1
    path = write(tmp_path, "profiles:\n  prod: {description: production settings, A: b}\n"
                           "  dev: {A: c}\nsteps: [{shell: x}]\n")
    code, out, _ = run(path)
    assert code == 0
    assert "  profile prod — production settings\n  profile dev\n" in out


def test_unresolved_numeric_reference(tmp_path: Path) -> None:  # 01 §9 #12
    text = "name: m\nmode: mapreduce\nmap:\n  input: x.json\n  max_parallel: \"${NOPE}\"\n  agent_template: [{shell: x}]\n"
    code, _, err = run(write(tmp_path, text))
    assert code == 1
    assert "error[E2002]" in err and "NOPE" in err
    assert run(write(tmp_path, text), environ={"NOPE": "2"})[0] == 0


def test_json_workflow_file(tmp_path: Path) -> None:
    text = json.dumps({"name": "j", "mode": "mapreduce", "map": {"input": "x.json", "agent_template": [{"shell": "echo ${item}"}]}}, indent=2)
    code, _out, err = run(write(tmp_path, text, "wf.json"))
    assert code == 0, err
    text = '{\n  "steps": [\n    {"shell": "x", "retyr": {}}\n  ]\n}\n'
    code, _, err = run(write(tmp_path, text, "wf2.json"))
    assert code == 0
    assert "wf2.json:3:20" in err and "did you mean 'retry'" in err
