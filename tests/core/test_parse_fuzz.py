"""Robustness: no input makes the loader, the parser or ``validate`` raise."""

from __future__ import annotations

import io
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prodigy_cli.cmd_validate import cmd_validate
from prodigy_core.parse import ParseResult, parse_workflow
from prodigy_effects.loader import LoadedDocument, load_document

EXAMPLES = Path(__file__).resolve().parents[2] / ".." / "shared" / "compat" / "original-examples"
EXAMPLE_TEXTS = [p.read_text(encoding="utf-8") for p in sorted(EXAMPLES.glob("*.yml"))]

KEYS = [
    "name", "mode", "steps", "commands", "map", "setup", "reduce", "shell", "claude", "input",
    "agent_template", "on_failure", "retry", "timeout", "env", "capture", "when", "write_file",
    "path", "content", "max_parallel", "commands", "max_attempts", "backoff", "profiles",
    "capture_outputs", "on_exit_code", "id", "outputs", "test", "validate", "merge", "x-a",
    "error_policy", "secrets", "env_files", "json_path", "filter", "sort_by", "strategy",
]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True),
    st.text(max_size=20),
    st.sampled_from(["mapreduce", "standard", "${x", "${item}", "5m", "0", "$WORKERS", "../x", "/a", "true"]),
)
keys = st.one_of(st.sampled_from(KEYS), st.text(max_size=8), st.integers(-3, 300), st.booleans())
data = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(keys, children, max_size=5),
    ),
    max_leaves=30,
)


def _parse(value: object) -> ParseResult:
    return parse_workflow(
        value, file="wf.yml", positions={}, key_positions={}, stem="wf", environ={"WORKERS": "4"},
        profile=None,
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data)
def test_parse_workflow_never_raises(value: object) -> None:
    result = _parse(value)
    assert (result.workflow is None) == any(p.is_error for p in result.problems)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(KEYS), data, max_size=6), st.sampled_from([None, "prod"]))
def test_parse_mapping_never_raises(value: dict[object, object], profile: str | None) -> None:
    parse_workflow(value, file="f", positions={}, key_positions={}, stem="s", environ={}, profile=profile)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200), st.sampled_from(["wf.yml", "wf.json"]))
def test_load_document_never_raises(text: str, filename: str) -> None:
    result = load_document(text, filename)
    assert isinstance(result, LoadedDocument | list)
    if isinstance(result, LoadedDocument):
        _parse(result.data)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(EXAMPLE_TEXTS),
    st.lists(st.tuples(st.integers(0, 5000), st.integers(0, 6), st.text(max_size=6)), max_size=4),
)
def test_mutated_examples_never_raise(text: str, edits: list[tuple[int, int, str]]) -> None:
    for position, cut, insert in edits:
        at = position % (len(text) + 1)
        text = text[:at] + insert + text[at + cut :]
    loaded = load_document(text, "wf.yml")
    if isinstance(loaded, LoadedDocument):
        parse_workflow(
            loaded.data, file="wf.yml", positions=loaded.positions, key_positions=loaded.key_positions,
            scalar_info=loaded.scalar_info, stem="wf", environ={},
        )


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=120), st.booleans(), st.booleans())
def test_cmd_validate_never_raises(tmp_path: Path, content: bytes, strict: bool, as_json: bool) -> None:
    path = tmp_path / "fuzz.yml"
    path.write_bytes(content)
    out, err = io.StringIO(), io.StringIO()
    code = cmd_validate(str(path), strict=strict, as_json=as_json, profile=None, environ={}, out=out, err=err)
    assert code in (0, 1, 2)


def test_deep_nesting_and_alias_bombs() -> None:
    deep = "a: " + "[" * 5000 + "]" * 5000
    assert isinstance(load_document(deep, "wf.yml"), list | LoadedDocument)
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
    for i in range(1, 9):
        bomb += f"{chr(97 + i)}: &{chr(97 + i)} [" + ", ".join([f"*{chr(96 + i)}"] * 10) + "]\n"
    result = load_document(bomb, "wf.yml")
    assert isinstance(result, list) and result[0].code == "E1001"
    nested: object = "x"
    for _ in range(3000):
        nested = [nested]
    _parse(nested)
