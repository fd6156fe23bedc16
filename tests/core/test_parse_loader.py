"""The loader: YAML 1.2 core schema, positions, E1001/E1002 (spec 01 §1)."""

from __future__ import annotations

import math

import pytest

from prodigy_core.problems import Problem
from prodigy_effects.loader import LoadedDocument, load_document


def ok(text: str, filename: str = "wf.yml") -> LoadedDocument:
    result = load_document(text, filename)
    assert isinstance(result, LoadedDocument), result
    return result


def bad(text: str, filename: str = "wf.yml") -> list[Problem]:
    result = load_document(text, filename)
    assert isinstance(result, list), result
    return result


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("yes", "yes"),
        ("no", "no"),
        ("on", "on"),
        ("off", "off"),
        ("y", "y"),
        ("n", "n"),
        ("true", True),
        ("True", True),
        ("FALSE", False),
        ("tRuE", True),
        ("017", 17),
        ("0o17", 15),
        ("0x1F", 31),
        ("-5", -5),
        ("1.5", 1.5),
        ("1e3", 1000.0),
        ("null", None),
        ("~", None),
        ("", None),
        ("'true'", "true"),
        ('"017"', "017"),
        ("1_000", "1_000"),
        ("!!str 12", "12"),
        ("!!int '12'", 12),
    ],
)
def test_yaml_12_core_schema(source: str, expected: object) -> None:
    doc = ok(f"v: {source}\n")
    assert isinstance(doc.data, dict)
    value = doc.data["v"]
    assert value == expected
    assert type(value) is type(expected)


def test_special_floats() -> None:
    doc = ok("a: .inf\nb: -.Inf\nc: .nan\n")
    assert isinstance(doc.data, dict)
    assert doc.data["a"] == math.inf and doc.data["b"] == -math.inf
    assert math.isnan(doc.data["c"])  # type: ignore[arg-type]


def test_bom_is_ignored() -> None:
    assert ok("\ufeffname: x\n").data == {"name": "x"}


def test_positions_of_values_and_keys() -> None:
    doc = ok("name: x\nsteps:\n  - shell: echo\n    retry_config: {attempts: 2}\n")
    assert doc.positions["$.steps[0].shell"] == (3, 12)
    assert doc.key_positions["$.steps[0].shell"] == (3, 5)
    assert doc.key_positions["$.steps[0].retry_config"] == (4, 5)
    assert doc.positions["$.steps[0].retry_config.attempts"] == (4, 30)


def test_plain_list_paths() -> None:
    doc = ok("- shell: a\n- shell: b\n- shell: c\n")
    assert doc.positions["$[2].shell"] == (3, 10)


def test_duplicate_keys_name_both_positions() -> None:
    (problem,) = bad("name: a\nsteps: []\nname: b\n")
    assert problem.code == "E1001"
    assert (problem.line, problem.column) == (3, 1)
    assert "line 1, column 1" in problem.message
    assert problem.path == "$.name"


def test_multi_document_is_e1001() -> None:
    (problem,) = bad("- shell: a\n---\n- shell: b\n")
    assert problem.code == "E1001"
    assert problem.line == 3


@pytest.mark.parametrize("text", ["", "   \n", "# only a comment\n", "~\n", "---\n"])
def test_empty_is_e1002(text: str) -> None:
    (problem,) = bad(text)
    assert problem.code == "E1002"
    assert problem.message == "workflow file is empty"


def test_syntax_error_has_line_and_column() -> None:
    (problem,) = bad("steps:\n  - shell: echo a: b\n")
    assert problem.code == "E1001"
    assert (problem.line, problem.column) == (2, 18)


def test_anchors_aliases_and_merge_keys() -> None:
    text = (
        "x-slow: &slow\n  timeout: 900\n  retry: {attempts: 2}\n"
        "x-env: &e {A: 1}\n"
        "steps:\n  - shell: make\n    <<: *slow\n  - shell: b\n    <<: [*e, {timeout: 3}]\n    timeout: 4\n"
    )
    doc = ok(text)
    assert isinstance(doc.data, dict)
    steps = doc.data["steps"]
    assert steps[0] == {"timeout": 900, "retry": {"attempts": 2}, "shell": "make"}
    assert steps[1] == {"A": 1, "timeout": 4, "shell": "b"}
    assert doc.positions["$.steps[0].timeout"] == (2, 12)


def test_recursive_alias_is_an_error() -> None:
    (problem,) = bad("a: &a [*a]\n")
    assert problem.code == "E1001"


def test_unknown_tag_is_an_error() -> None:
    (problem,) = bad("a: !include other.yml\n")
    assert problem.code == "E1001"
    assert "tag" in problem.message


def test_complex_key_is_an_error() -> None:
    (problem,) = bad("? [a, b]\n: c\n")
    assert problem.code == "E1001"


def test_json_files() -> None:
    doc = ok('{\n\t"steps": [{"shell": "echo hi"}]\n}\n', "wf.json")
    assert doc.data == {"steps": [{"shell": "echo hi"}]}
    assert doc.key_positions["$.steps"] == (2, 2)


def test_json_syntax_error() -> None:
    (problem,) = bad('{"steps": [}', "wf.json")
    assert problem.code == "E1001"
    assert problem.line == 1


def test_json_duplicate_key() -> None:
    (problem,) = bad('{"a": 1,\n "a": 2}', "wf.json")
    assert problem.code == "E1001"
    assert problem.line == 2
