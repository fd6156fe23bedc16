"""Tests for MapReduce work items (spec 05 §2, §5, §6, §9, §13; spec 04 §5–§8; spec 03 §5.4–§5.5)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prodigy_core.interpolate import Var, interpolate
from prodigy_core.json_values import JSON
from prodigy_core.model import MapSpec
from prodigy_core.work_items import (
    FailureKind,
    ItemFailure,
    ItemsError,
    Selection,
    agent_branch,
    agent_id,
    agent_result,
    agent_worktree_name,
    check_json_path,
    duration_json,
    error_signature,
    error_type,
    error_type_name,
    item_id,
    item_variables,
    job_id_for,
    manual_review_required,
    map_variables,
    merge_conflict_failure,
    parse_command_output,
    parse_input_document,
    reprocess_job_id,
    select,
    select_items,
    success_rate,
)


def spec(**kwargs: Any) -> MapSpec:
    return MapSpec(input="work-items.json", **kwargs)


def items_of(document: JSON, **kwargs: Any) -> tuple[JSON, ...]:
    result = select_items(document, spec(**kwargs))
    assert not isinstance(result, ItemsError), result
    return result


def error_of(document: JSON, **kwargs: Any) -> ItemsError:
    result = select_items(document, spec(**kwargs))
    assert isinstance(result, ItemsError), result
    return result


def render(template: str, variables: Mapping[str, Var], *, shell: bool = False) -> str:
    return interpolate(template, variables, shell=shell).text


def variables_for(item: JSON, index: int = 0, total: int = 1) -> dict[str, Var]:
    job = "mapreduce-20250314_091502"
    return item_variables(
        item,
        index=index,
        total=total,
        item_id=item_id(index),
        item_file=f"/store/jobs/{job}/items/{item_id(index)}.json",
        agent_id=agent_id(job, index),
        job_id=job,
    )


# --------------------------------------------------------------------------- §5.2 input file


@pytest.mark.parametrize(
    ("text", "name", "expected"),
    [
        ('{"items": [1, 2]}', "work-items.json", {"items": [1, 2]}),
        ("[1, 2, 3]", "x.json", [1, 2, 3]),
        ('"just a string"', "x.json", "just a string"),
        ("\ufeff[true]", "x.json", [True]),
        ('{"a": 1}\n{"a": 2}\n', "items.jsonl", [{"a": 1}, {"a": 2}]),
        ('{"a": 1}\n\n   \n[2]\r\n"s"\n', "items.ndjson", [{"a": 1}, [2], "s"]),
        ('{"a": 1}\n{"a": 2}', "ITEMS.JSONL", [{"a": 1}, {"a": 2}]),
        # A .jsonl file that is one JSON document is that document.
        ("[1, 2]", "items.jsonl", [1, 2]),
        ("", "items.jsonl", []),
    ],
)
def test_parse_input_document(text: str, name: str, expected: JSON) -> None:
    assert parse_input_document(text, name) == expected


@pytest.mark.parametrize(
    ("text", "name", "line", "column"),
    [
        ('{\n  "a": 1,\n  "b": }\n', "work-items.json", 3, 8),
        ('{"a": 1}\n{"a": 2}\n', "work-items.json", 2, 1),  # not .jsonl: one document only
        ("", "work-items.json", 1, 1),
        ('{"a": 1}\n{"a": \n', "items.jsonl", 2, 7),  # line of the failing record
        ("[1, NaN]", "x.json", 1, 5),
        ("[1,\n -Infinity]", "x.json", 2, 2),
    ],
)
def test_parse_input_document_errors_have_line_and_column(
    text: str, name: str, line: int, column: int
) -> None:
    result = parse_input_document(text, name)
    assert isinstance(result, ItemsError)
    assert (result.code, result.line, result.column) == ("E6002", line, column)
    assert result.message.startswith(f"map input not parseable: {name}: ")
    assert f"(line {line}, column {column})" in result.message


def test_parse_input_document_deep_nesting_is_an_error_not_a_crash() -> None:
    result = parse_input_document("[" * 100_000 + "]" * 100_000, "deep.json")
    assert isinstance(result, ItemsError)
    assert result.code == "E6002"


# --------------------------------------------------------------------------- §5.3 command output


@pytest.mark.parametrize(
    ("stdout", "expected"),
    [
        ("[1, 2, 3]\n", ([1, 2, 3], True)),  # §20 #3
        ('{"items": [{"id": 1}]}', ({"items": [{"id": 1}]}, True)),
        ('"one string"\n', ("one string", True)),
        ("a.py\nb.py\n", (["a.py", "b.py"], False)),  # §20 #2
        ("1\n2\n", (["1", "2"], False)),  # not one document; lines are strings
        ('{"a": 1}\n{"a": 2}\n', ([{"a": 1}, {"a": 2}], False)),
        (
            "  x.py \r\n\n\t\n{broken\n[1, 2]\nplain [x]\n",
            (["x.py", "{broken", [1, 2], "plain [x]"], False),
        ),
        ("", ([], False)),
        ("\n  \n", ([], False)),
    ],
)
def test_parse_command_output(stdout: str, expected: tuple[JSON, bool]) -> None:
    assert parse_command_output(stdout) == expected


# --------------------------------------------------------------------------- §20 acceptance


def test_acceptance_1_json_path_items() -> None:
    document = parse_input_document(
        json.dumps({"items": [{"id": i, "file": f"f{i}.py"} for i in range(3)]}), "work-items.json"
    )
    assert not isinstance(document, ItemsError)
    items = select_items(document, spec(json_path="$.items[*]"))
    assert not isinstance(items, ItemsError)
    echoed = [render("echo ${item.id}", variables_for(item, i, 3)) for i, item in enumerate(items)]
    assert items == (
        {"id": 0, "file": "f0.py"},
        {"id": 1, "file": "f1.py"},
        {"id": 2, "file": "f2.py"},
    )
    assert echoed == ["echo 0", "echo 1", "echo 2"]
    results = [
        agent_result(item_id=item_id(i), item_index=i, status="success", duration_secs=1.0)
        for i in range(3)
    ]
    reduce_vars = map_variables(results, "/jobs/j/map-results.json")
    assert render("echo ${map.total} ${map.successful} ${map.failed}", reduce_vars) == "echo 3 3 0"


def test_acceptance_2_command_lines_are_string_items() -> None:
    document, apply_path = parse_command_output("a.py\nb.py\n")
    items = select_items(document, spec(), apply_json_path=apply_path)
    assert items == ("a.py", "b.py")
    assert [render("echo ${item}", variables_for(i)) for i in items] == ["echo a.py", "echo b.py"]


def test_acceptance_3_number_items_render_plainly() -> None:
    document, apply_path = parse_command_output("[1, 2, 3]")
    items = select_items(document, spec(), apply_json_path=apply_path)
    assert items == (1, 2, 3)
    assert [render("${item}", variables_for(i)) for i in items] == ["1", "2", "3"]


def test_acceptance_17_zero_items_after_filter() -> None:
    result = select([{"p": 1}, {"p": 2}], spec(filter="p > 5"))
    assert result == Selection(items=(), warnings=())


# --------------------------------------------------------------------------- spec 04 §8 json_path

DOC: dict[str, Any] = {
    "items": [
        {
            "id": 1,
            "p": 5,
            "kind": "bug",
            "open": True,
            "path": "a.py",
            "location": {"file": "a.py"},
        },
        {
            "id": 2,
            "p": 3,
            "kind": "bug",
            "open": False,
            "path": "b.rs",
            "location": {"file": "b.py"},
        },
        {"id": 3, "p": 9, "kind": "feature", "open": True, "path": "c.py"},
    ],
    "data": {"items": [10, 20]},
    "groups": {"x": "gx", "y": "gy"},
}


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("$", [DOC]),
        ("$.data", [{"items": [10, 20]}]),
        ("$['data']", [{"items": [10, 20]}]),
        ('$["data"]', [{"items": [10, 20]}]),
        ("$.data.items", [[10, 20]]),
        ("$.items[0].id", [1]),
        ("$.items[-1].id", [3]),
        ("$.items[*].id", [1, 2, 3]),
        ("$.groups.*", ["gx", "gy"]),
        ("$.groups[*]", ["gx", "gy"]),
        ("$.items[1:].id", [2, 3]),
        ("$.items[0:10].id", [1, 2, 3]),
        ("$.items[0,2].id", [1, 3]),
        ("$..file", ["a.py", "b.py"]),
        ("$..items[*]", [*DOC["items"], 10, 20]),
        ("$.items[?(@.p > 4)].id", [1, 3]),
        ('$.items[?(@.location.file == "a.py")].id', [1]),
        ("$.items[?(@.p > 4 && @.kind == 'bug')].id", [1]),
        ("$.items[?(@.p < 4 || @.kind == 'feature')].id", [2, 3]),
        ("$.items[?((@.p > 8 || @.p < 4) && @.open == true)].id", [3]),
        ("$.items[?(@.p > 4 & @.open == true)].id", [1, 3]),
        ("$.items[?(@.open == true)].id", [1, 3]),
        ("$.items[?(@.path =~ '\\.py$')].id", [1, 3]),
        ("$.items[?(@.location)].id", [1, 2]),
        ("items[*].id", [1, 2, 3]),
        ("$.missing", []),
        ("$.items[7]", []),
        ("$.items[-7]", []),
    ],
)
def test_json_path_guaranteed_subset(path: str, expected: list[JSON]) -> None:
    assert list(items_of(DOC, json_path=path)) == expected


@pytest.mark.parametrize(
    ("document", "path", "expected"),
    [
        # spec 04 §9 #17, #18, #20
        ({"items": [1, 2, 3]}, "$.items", [[1, 2, 3]]),
        ({"items": [1, 2, 3]}, "$.items[*]", [1, 2, 3]),
        (
            {"items": [{"p": 5, "id": 2}, {"p": 5, "id": 1}, {"p": 3, "id": 2}]},
            "$.items[?(@.p > 4 && @.id == 2)]",
            [{"p": 5, "id": 2}],
        ),
        # filters compare with spec 04 §3 rules and never crash on odd values
        (
            {"a": [{"p": 4.5}, {"p": 4}, {"p": "7"}, {"p": None}, {"p": {}}, {"p": [5]}, 3]},
            "$.a[?(@.p > 4)]",
            [{"p": 4.5}, {"p": "7"}],
        ),
        ({"a": [{"p": None}, {"p": 0}, {}]}, "$.a[?(@.p == null)]", [{"p": None}]),
        ({"a": [{"p": "null"}, {"p": None}]}, "$.a[?(@.p == 'null')]", [{"p": "null"}]),
        ({"a": [{"s": 1}, {"s": "x1"}]}, "$.a[?(@.s =~ '1')]", [{"s": "x1"}]),
        # indexes apply to arrays only (no characters of strings)
        ({"s": "abc"}, "$.s[0]", []),
        ({"o": {"0": 1}}, "$.o[0]", []),
        # a wildcard on a scalar selects nothing
        ({"s": "abc"}, "$.s[*]", []),
        ([1, [2, 3]], "$[*]", [1, [2, 3]]),
        ("text", "$", ["text"]),
        (None, "$.a", []),
        ({"x": {"a": 1, "b": 2}}, "$.x[?(@ > 1)]", [2]),
    ],
)
def test_json_path_semantics(document: JSON, path: str, expected: list[JSON]) -> None:
    assert list(items_of(document, json_path=path)) == expected


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ([{"p": 5}, {"p": 9}], [{"p": 5}, {"p": 9}]),  # spec 04 §9 #19
        ({"a": 1}, [{"a": 1}]),
        ("s", ["s"]),
        (None, [None]),
        ([], []),
    ],
)
def test_without_json_path_an_array_yields_its_elements_anything_else_one_item(
    document: JSON, expected: list[JSON]
) -> None:
    assert list(items_of(document)) == expected
    assert list(items_of(document, json_path="   ")) == expected


@pytest.mark.parametrize(
    ("path", "fragment"),
    [
        ("$.items[?", "$.items[?"),  # spec 04 §9 #21
        ("$.items[?(@.p > 4 &&)]", "expected a comparison before ')'"),
        ("$.items[?(@.p > 4 || || @.q)]", "expected a comparison before '||'"),
        ("$.items[?@.p > 4 ||]", "unexpected end of filter"),
        ("$.items[?(@.p > 4) (@.q)]", "unexpected '(' in filter"),
        ("$.items[?(!(@.p > 4))]", "invalid filter term '!'"),
        ("$.items[?((@.p > 4)]", "missing ')'"),
        ("$.items[?(@.s =~ '(')]", "invalid regular expression"),
        ("$.items[", "$.items["),
        ("$..[[", "$..[["),
    ],
)
def test_bad_json_path_is_e1010(path: str, fragment: str) -> None:
    error = error_of(DOC, json_path=path)
    assert error.code == "E1010"
    assert error.message.startswith(f"invalid json_path '{path}'")
    assert fragment in error.message
    assert check_json_path(path) == error


def test_check_json_path_accepts_the_subset_and_blank() -> None:
    for path in ("", "  ", "$.items[?(@.p > 4 && @.kind == 'bug')]", "$..file", "$[*]"):
        assert check_json_path(path) is None


def test_json_path_warnings() -> None:
    nothing = select({"a": 1}, spec(json_path="$.items[*]"))
    assert isinstance(nothing, Selection)
    assert [(w.code, w.message) for w in nothing.warnings] == [
        ("W6003", "json_path '$.items[*]' matched nothing")
    ]
    document, apply_path = parse_command_output("a\nb\n")
    lines = select(document, spec(json_path="$.items[*]"), apply_json_path=apply_path)
    assert isinstance(lines, Selection)
    assert lines.items == ("a", "b")
    assert [w.code for w in lines.warnings] == ["W6001"]


# --------------------------------------------------------------------------- spec 04 §5–§7 pipeline


@pytest.mark.parametrize(
    ("document", "kwargs", "expected"),
    [
        # spec 04 §9 #8–#16
        ([{"p": 1}, {"p": 9}, {"p": 5}], {"filter": "p >= 5"}, [{"p": 9}, {"p": 5}]),
        ([{"p": 1}, {"p": 9}, {"p": 5}], {"filter": "item.p >= 5"}, [{"p": 9}, {"p": 5}]),
        (
            [{"path": "a.rs"}, {"path": "b.py"}],
            {"filter": "path matches '\\.rs$'"},
            [{"path": "a.rs"}],
        ),
        (
            [{"path": "a.rs"}, {"path": "b.py"}],
            {"filter": "ends_with(path, '.py')"},
            [{"path": "b.py"}],
        ),
        ([{"s": "open"}, {"s": "closed"}], {"filter": "s == open"}, [{"s": "open"}]),
        (
            [{"a": None}, {"a": 2}, {"a": 1}, {}],
            {"sort_by": "a DESC"},
            [{"a": 2}, {"a": 1}, {"a": None}, {}],
        ),
        (
            [{"a": None}, {"a": 2}, {"a": 1}, {}],
            {"sort_by": "a ASC NULLS FIRST"},
            [{"a": None}, {}, {"a": 1}, {"a": 2}],
        ),
        (
            [{"kind": "x", "n": 1}, {"kind": "y", "n": 2}, {"kind": "x", "n": 3}],
            {"distinct": "kind"},
            [{"kind": "x", "n": 1}, {"kind": "y", "n": 2}],
        ),
        (list(range(10)), {"offset": 2, "max_items": 3}, [2, 3, 4]),
        # strings items: the only field is `item`
        (["a.rs", "b.py", "c.rs"], {"filter": "item matches '\\.rs$'"}, ["a.rs", "c.rs"]),
        (["b", "a", "c"], {"sort_by": "item DESC"}, ["c", "b", "a"]),
        (["a", "b", "a"], {"distinct": "item"}, ["a", "b"]),
        # fields on non-objects are missing (null), never a crash
        ([1, "s", None, [1], {"p": 7}], {"filter": "p > 5"}, [{"p": 7}]),
        ([3, {"p": 1}, "x"], {"sort_by": "p"}, [{"p": 1}, 3, "x"]),
        # the whole pipeline, in order: json_path → filter → sort → distinct → offset → max
        (
            {
                "items": [
                    {"k": "a", "v": 1},
                    {"k": "b", "v": 5},
                    {"k": "a", "v": 7},
                    {"k": "c", "v": 6},
                    {"k": "d", "v": 9},
                ]
            },
            {
                "json_path": "$.items[*]",
                "filter": "v > 1",
                "sort_by": "v DESC",
                "distinct": "k",
                "offset": 1,
                "max_items": 2,
            },
            [{"k": "a", "v": 7}, {"k": "c", "v": 6}],
        ),
        # blank expressions are absent; max_items beyond the list keeps everything
        ([2, 1], {"filter": " ", "sort_by": "", "distinct": "  ", "max_items": 10}, [2, 1]),
        ([1, 2], {"offset": 5}, []),
    ],
)
def test_pipeline(document: JSON, kwargs: dict[str, Any], expected: list[JSON]) -> None:
    assert list(items_of(document, **kwargs)) == expected


def test_filter_variables_are_resolved_from_setup() -> None:  # spec 04 §9 #22
    document: JSON = [{"score": 1}, {"score": 3}, {"score": 5}]
    result = select_items(
        document, spec(filter="score >= ${MIN}"), variables={"MIN": Var(value=3, trusted=False)}
    )
    assert result == ({"score": 3}, {"score": 5})


def test_filter_unresolved_variable_is_e2001() -> None:
    error = error_of([{"score": 1}], filter="score >= ${MIN}")
    assert error.code == "E2001"
    assert "MIN" in error.message


def test_filter_type_error_is_false_with_one_warning() -> None:
    result = select([{"p": "x"}, {"p": 4}, {"p": True}], spec(filter="p > 3"))
    assert isinstance(result, Selection)
    assert result.items == ({"p": 4},)
    assert [w.code for w in result.warnings] == ["W6002"]
    assert "2 item(s)" in result.warnings[0].message
    assert "position 0" in result.warnings[0].message


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"filter": "p >"}, "invalid filter expression 'p >'"),
        ({"filter": "coverage ~ 3"}, "invalid filter expression"),
        ({"filter": "unknown_fn(p)"}, "invalid filter expression"),
        ({"sort_by": "p SIDEWAYS"}, "invalid sort_by expression"),
        ({"sort_by": "p,"}, "invalid sort_by expression"),
        ({"distinct": "a b"}, "invalid distinct field path 'a b'"),
    ],
)
def test_bad_expressions_are_e1009(kwargs: dict[str, Any], fragment: str) -> None:
    error = error_of([{"p": 1}], **kwargs)
    assert error.code == "E1009"
    assert fragment in error.message


def test_filter_syntax_error_reports_the_column() -> None:
    error = error_of([{"p": 1}], filter="p >")
    assert error.column is not None and error.column > 0
    assert f"column {error.column}" in error.message


def test_select_does_not_mutate_the_document() -> None:
    document: JSON = {"items": [{"p": 2}, {"p": 1}, {"p": 2}]}
    before = json.dumps(document)
    items_of(document, json_path="$.items[?(@.p > 0)]", sort_by="p", distinct="p")
    assert json.dumps(document) == before


# --------------------------------------------------------------------------- property

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["items", "p", "a", "item", "k", "x"]) | st.text(max_size=3),
            children,
            max_size=4,
        )
    ),
    max_leaves=25,
)
specs = st.builds(
    MapSpec,
    input=st.just("in.json"),
    json_path=st.sampled_from(
        [
            None,
            "",
            "$",
            "$.items[*]",
            "$..p",
            "$[*]",
            "$.*",
            "$.items[0]",
            "$.items[-1]",
            "$..items[?(@.p > 1 || @.a == 'x')]",
            "$[?(@.p)]",
            "$..a[1:]",
            "$.items[0,2].p",
        ]
    ),
    filter=st.sampled_from(
        [None, "p > 1", "item matches 'a'", "length(a) == 2", "p == x && !a", "contains(item, 'k')"]
    ),
    sort_by=st.sampled_from([None, "p DESC", "a ASC NULLS FIRST, p", "item"]),
    distinct=st.sampled_from([None, "p", "item", "a.k"]),
    offset=st.none() | st.integers(min_value=0, max_value=5),
    max_items=st.none() | st.integers(min_value=1, max_value=5),
)


@settings(max_examples=300, deadline=None)
@given(document=json_values, map_spec=specs, apply_path=st.booleans())
def test_select_never_raises_and_respects_offset_and_max_items(
    document: JSON, map_spec: MapSpec, apply_path: bool
) -> None:
    result = select(document, map_spec, apply_json_path=apply_path)
    assert isinstance(result, Selection), result
    unbounded = select(
        document,
        MapSpec(
            input="in.json",
            json_path=map_spec.json_path,
            filter=map_spec.filter,
            sort_by=map_spec.sort_by,
            distinct=map_spec.distinct,
        ),
        apply_json_path=apply_path,
    )
    assert isinstance(unbounded, Selection)
    start = map_spec.offset or 0
    stop = None if map_spec.max_items is None else start + map_spec.max_items
    assert result.items == unbounded.items[start:stop]
    if map_spec.max_items is not None:
        assert len(result.items) <= map_spec.max_items


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=40), name=st.sampled_from(["a.json", "a.jsonl", "a.ndjson"]))
def test_parsers_never_raise(text: str, name: str) -> None:
    parse_input_document(text, name)
    document, _ = parse_command_output(text)
    assert document is not None or text.strip() == "null"


# --------------------------------------------------------------------------- §6 item variables


def test_item_variables_object_item() -> None:
    item: JSON = {"path": "src/a.py", "a": {"b": 7}, "tags": ["x", "y"], "scores": {"final": 1.5}}
    variables = variables_for(item, index=3, total=10)
    cases = {
        "${item.path}": "src/a.py",
        "${item.a.b}": "7",
        "${item.tags[0]}": "x",
        "${item.scores.final}": "1.5",
        "${item}": json.dumps(item, separators=(",", ":")),
        "${item_json}": json.dumps(item, separators=(",", ":")),
        "${item_id}": "item_3",
        "${item_index}": "3",
        "${item_total}": "10",
        "${item_file}": "/store/jobs/mapreduce-20250314_091502/items/item_3.json",
        "${agent_id}": "mapreduce-20250314_091502_agent_3",
        "${job.id}": "mapreduce-20250314_091502",
        "${item.missing:-none}": "none",
    }
    for template, expected in cases.items():
        assert render(template, variables) == expected, template


@pytest.mark.parametrize(
    ("item", "rendered", "as_json"),
    [
        ("a b.py", "a b.py", '"a b.py"'),
        (42, "42", "42"),
        (2.5, "2.5", "2.5"),
        (True, "true", "true"),
        (None, "", "null"),
        ([1, 2], "[1,2]", "[1,2]"),
        (["a", "b"], '["a","b"]', '["a","b"]'),  # not the ", "-joined rendering of §4.1
        ([], "[]", "[]"),
        ({"é": "ü"}, '{"é":"ü"}', '{"é":"ü"}'),
    ],
)
def test_item_renders_as_is_or_compact_json(item: JSON, rendered: str, as_json: str) -> None:
    variables = variables_for(item)
    assert render("${item}", variables) == rendered
    assert render("${item_json}", variables) == as_json


def test_string_array_item_elements_resolve() -> None:
    variables = variables_for(["a", "b", "c"])
    assert render("${item[0]} ${item[2]} ${item[-1]} ${item[3]:-none}", variables) == "a c c none"


def test_item_data_is_untrusted_and_escaped_in_shell_text() -> None:
    variables = variables_for({"path": "x; rm -rf /"})
    assert not variables["item"].trusted and not variables["item_json"].trusted
    assert variables["item_id"].trusted and variables["agent_id"].trusted
    assert render("cat ${item.path}", variables, shell=True) == "cat 'x; rm -rf /'"
    assert render("echo ${item_index}", variables, shell=True) == "echo 0"


# --------------------------------------------------------------------------- §2 identifiers


@pytest.mark.parametrize(
    ("actual", "expected"),
    [
        (item_id(0), "item_0"),
        (item_id(7), "item_7"),
        (agent_id("mapreduce-20250314_091502", 7), "mapreduce-20250314_091502_agent_7"),
        (agent_id("mapreduce-20250314_091502", 7, 1), "mapreduce-20250314_091502_agent_7"),
        (
            agent_id("mapreduce-20250314_091502", 7, 2),
            "mapreduce-20250314_091502_agent_7_attempt_2",
        ),
        (agent_branch("mapreduce-1_agent_3"), "prodigy-mapreduce-agent-mapreduce-1_agent_3"),
        (agent_worktree_name("mapreduce-1_agent_3"), "mapreduce-agent-mapreduce-1_agent_3"),
        (reprocess_job_id("mapreduce-1", 1710407702), "mapreduce-1-reprocess-1710407702"),
    ],
)
def test_identifiers(actual: str, expected: str) -> None:
    assert actual == expected


@pytest.mark.parametrize(
    ("existing", "expected"),
    [
        (set(), "mapreduce-20250314_091502"),
        ({"mapreduce-20250314_091500"}, "mapreduce-20250314_091502"),
        ({"mapreduce-20250314_091502"}, "mapreduce-20250314_091502-2"),
        (
            {"mapreduce-20250314_091502", "mapreduce-20250314_091502-2"},
            "mapreduce-20250314_091502-3",
        ),
        (
            {"mapreduce-20250314_091502", "mapreduce-20250314_091502-3"},
            "mapreduce-20250314_091502-2",
        ),
    ],
)
def test_job_id_for(existing: set[str], expected: str) -> None:
    assert job_id_for("20250314_091502", existing) == expected


@pytest.mark.parametrize("stamp", ["2025-03-14T09:15:02", "20250314091502", "", "20250314_0915"])
def test_job_id_for_rejects_a_malformed_stamp(stamp: str) -> None:
    with pytest.raises(ValueError, match="YYYYMMDD_HHMMSS"):
        job_id_for(stamp, ())


def test_agent_id_rejects_attempt_zero() -> None:
    with pytest.raises(ValueError):
        agent_id("j", 0, 0)


# --------------------------------------------------------------------------- §13 DLQ


@pytest.mark.parametrize(
    ("cause", "expected"),
    [
        (ItemFailure(kind="timeout", message="Agent timed out after 2 seconds"), "Timeout"),
        (ItemFailure(kind="command_failed", exit_code=1), {"CommandFailed": {"exit_code": 1}}),
        (ItemFailure(kind="command_failed", exit_code=127), {"CommandFailed": {"exit_code": 127}}),
        (ItemFailure(kind="command_failed"), {"CommandFailed": {"exit_code": -1}}),
        (ItemFailure(kind="commit_required"), "CommitValidationFailed"),
        (merge_conflict_failure(["a.py"]), "MergeConflict"),
        (ItemFailure(kind="worktree"), "WorktreeError"),
        (ItemFailure(kind="validation"), "ValidationFailed"),
        (ItemFailure(kind="resource"), "ResourceExhausted"),
        (ItemFailure(kind="unknown"), "Unknown"),
    ],
)
def test_error_type(cause: ItemFailure, expected: JSON) -> None:
    assert error_type(cause) == expected
    name = expected if isinstance(expected, str) else "CommandFailed"
    assert error_type_name(error_type(cause)) == name


def test_every_failure_kind_has_an_error_type() -> None:
    kinds: tuple[FailureKind, ...] = (
        "timeout",
        "command_failed",
        "commit_required",
        "merge_conflict",
        "worktree",
        "validation",
        "resource",
        "unknown",
    )
    names = {error_type_name(error_type(ItemFailure(kind=k))) for k in kinds}
    assert len(names) == len(kinds)


def test_merge_conflict_failure_message_and_files() -> None:
    failure = merge_conflict_failure(["src/a.py", "b.txt"])
    assert failure.message == "merge conflict in: src/a.py, b.txt"
    assert failure.conflicting_files == ("src/a.py", "b.txt")


def _signature(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@pytest.mark.parametrize(
    ("type_name", "message", "normalised"),
    [
        (
            "Timeout",
            "Agent timed out after 300 seconds",
            "Timeout: agent timed out after # seconds",
        ),
        ("CommandFailed", "Exit   code 2\nstderr: long details", "CommandFailed: exit code #"),
        (
            "MergeConflict",
            "merge conflict in: src/A.py",
            "MergeConflict: merge conflict in: src/a.py",
        ),
        (
            "WorktreeError",
            "cannot checkout 4f1c2e0d9a7b into /tmp/wt-12",
            "WorktreeError: cannot checkout # into /tmp/wt-#",
        ),
        ("Unknown", "  Step   Succeeded\tbut  failed  ", "Unknown: step succeeded but failed"),
        ("Unknown", "abc123 is short, deadbeefcafe is long", "Unknown: abc# is short, # is long"),
        ("Unknown", "", "Unknown: "),
    ],
)
def test_error_signature_normalisation(type_name: str, message: str, normalised: str) -> None:
    signature = error_signature(type_name, message)
    assert signature == _signature(normalised)
    assert len(signature) == 16 and all(c in "0123456789abcdef" for c in signature)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("Agent timed out after 300 seconds", "Agent timed out after 5 seconds"),
        ("merge failed at 4f1c2e0d9a7b6c5d", "merge failed at 0123456789abcdef0"),
        ("exit 1\nfirst detail", "EXIT 7\nother detail"),
        ("item_3 failed", "item_12   failed"),
    ],
)
def test_same_reason_shares_a_signature(a: str, b: str) -> None:
    assert error_signature("CommandFailed", a) == error_signature("CommandFailed", b)


def test_different_type_or_reason_differs() -> None:
    assert error_signature("Timeout", "x") != error_signature("Unknown", "x")
    assert error_signature("Unknown", "disk full") != error_signature("Unknown", "disk empty")


@pytest.mark.parametrize(
    ("type_name", "message", "expected"),
    [
        ("ValidationFailed", "coverage 80% < 90%", True),
        ("CommandFailed", "Permission denied (publickey)", True),
        ("CommandFailed", "ACCESS DENIED to bucket", True),
        ("WorktreeError", "index file corrupted", True),
        ("CommandFailed", "exit code 1", False),
        ("Timeout", "Agent timed out after 2 seconds", False),
        ("MergeConflict", "merge conflict in: a.py", False),
    ],
)
def test_manual_review_required(type_name: str, message: str, expected: bool) -> None:
    assert manual_review_required(type_name, message) is expected


# --------------------------------------------------------------------------- §9 agent results


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (84.25, {"secs": 84, "nanos": 250_000_000}),
        (0.0, {"secs": 0, "nanos": 0}),
        (1.000000001, {"secs": 1, "nanos": 1}),
        (2.9999999999, {"secs": 3, "nanos": 0}),
        (-1.0, {"secs": 0, "nanos": 0}),
    ],
)
def test_duration_json(seconds: float, expected: dict[str, int]) -> None:
    assert duration_json(seconds) == expected


def test_agent_result_full_success_matches_the_spec_example() -> None:
    result = agent_result(
        item_id="item_3",
        item_index=3,
        status="success",
        output="Added type hints to billing/invoice.py",
        commits=["4f1c2e0d9a"],
        files_modified=["billing/invoice.py"],
        duration_secs=84.25,
        worktree_path="/w/mapreduce-agent-j_agent_3",
        branch_name="prodigy-mapreduce-agent-j_agent_3",
        worktree_session_id="session-5b0e",
        json_log_location="/logs/x.jsonl",
        cost_usd=0.2314,
        attempts=1,
    )
    assert result == {
        "item_id": "item_3",
        "item_index": 3,
        "status": "Success",
        "output": "Added type hints to billing/invoice.py",
        "commits": ["4f1c2e0d9a"],
        "files_modified": ["billing/invoice.py"],
        "duration": {"secs": 84, "nanos": 250000000},
        "worktree_path": "/w/mapreduce-agent-j_agent_3",
        "branch_name": "prodigy-mapreduce-agent-j_agent_3",
        "worktree_session_id": "session-5b0e",
        "json_log_location": "/logs/x.jsonl",
        "cost_usd": 0.2314,
        "attempts": 1,
    }
    assert json.loads(json.dumps(result)) == result


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        (
            {"status": "success", "error": "ignored"},
            {
                "item_id": "item_0",
                "item_index": 0,
                "status": "Success",
                "duration": {"secs": 1, "nanos": 500000000},
                "attempts": 1,
            },
        ),
        (
            {"status": "failed", "error": "exit code 1", "attempts": 2},
            {
                "item_id": "item_0",
                "item_index": 0,
                "status": {"Failed": "exit code 1"},
                "duration": {"secs": 1, "nanos": 500000000},
                "error": "exit code 1",
                "attempts": 2,
            },
        ),
        (
            {"status": "timeout", "error": "Agent timed out after 2 seconds"},
            {
                "item_id": "item_0",
                "item_index": 0,
                "status": "Timeout",
                "duration": {"secs": 1, "nanos": 500000000},
                "error": "Agent timed out after 2 seconds",
                "attempts": 1,
            },
        ),
        (
            {"status": "success", "uncommitted_files": ["new.txt"], "cost_usd": 0.0},
            {
                "item_id": "item_0",
                "item_index": 0,
                "status": "Success",
                "duration": {"secs": 1, "nanos": 500000000},
                "cost_usd": 0.0,
                "attempts": 1,
                "uncommitted_files": ["new.txt"],
            },
        ),
    ],
)
def test_agent_result_status_forms_and_omitted_fields(
    kwargs: dict[str, Any], expected: dict[str, JSON]
) -> None:
    result = agent_result(item_id="item_0", item_index=0, duration_secs=1.5, **kwargs)
    assert result == expected


# --------------------------------------------------------------------------- spec 03 §5.5


@pytest.mark.parametrize(
    ("successful", "total", "expected"),
    [(3, 3, 100), (2, 3, 66.67), (1, 3, 33.33), (0, 3, 0), (0, 0, 0), (1, 8, 12.5)],
)
def test_success_rate(successful: int, total: int, expected: float) -> None:
    rate = success_rate(successful, total)
    assert rate == expected
    assert isinstance(rate, int) == (expected == int(expected))


def test_map_variables() -> None:
    results = [
        agent_result(item_id="item_2", item_index=2, status="timeout", duration_secs=2, error="t"),
        agent_result(
            item_id="item_0", item_index=0, status="success", duration_secs=1, cost_usd=0.25
        ),
        agent_result(
            item_id="item_1",
            item_index=1,
            status="failed",
            duration_secs=1,
            error="x",
            cost_usd=0.5,
        ),
    ]
    variables = map_variables(results, "/jobs/j/map-results.json", duration_secs=12.5, job_id="j")
    assert {
        k: v.value for k, v in variables.items() if k != "map.results" and k != "map.results_json"
    } == {
        "map.total": 3,
        "map.successful": 1,
        "map.failed": 2,
        "map.success_rate": 33.33,
        "map.results_file": "/jobs/j/map-results.json",
        "map.cost_usd": 0.75,
        "map.duration": 12.5,
        "job.id": "j",
    }
    text = variables["map.results"].value
    assert isinstance(text, str)
    assert [r["item_id"] for r in json.loads(text)] == ["item_0", "item_1", "item_2"]
    assert [r["status"] for r in json.loads(text)] == ["Success", {"Failed": "x"}, "Timeout"]
    assert variables["map.results_json"] == variables["map.results"]
    assert not variables["map.results"].trusted
    assert render("${map.success_rate}% of ${map.total}", variables) == "33.33% of 3"


def test_map_variables_without_results() -> None:
    variables = map_variables([], "/r.json")
    assert variables["map.total"].value == 0
    assert variables["map.success_rate"].value == 0
    assert variables["map.results"].value == "[]"
    assert "map.duration" not in variables and "job.id" not in variables
    assert map_variables([], "/r.json", total=4)["map.total"].value == 4


@settings(max_examples=150, deadline=None)
@given(
    path=st.text(alphabet="$.[]*?()@&|=<>!~'\" ,:-0123456789abpx", min_size=1, max_size=24),
    document=json_values,
)
def test_any_json_path_text_compiles_or_is_e1010_and_never_raises(
    path: str, document: JSON
) -> None:
    problem = check_json_path(path)
    assert problem is None or problem.code == "E1010"
    result = select(document, spec(json_path=path))
    if problem is not None:
        assert result == problem
    else:
        assert isinstance(result, Selection) or result.code == "E6002"


def test_validation_accepts_the_json_path_filters_the_run_accepts() -> None:
    """`prodigy validate` and the run compile json_path with the same code (spec 04 §8.2)."""
    from prodigy_core.parse.shape import parse_workflow

    def problems(json_path: str) -> list[str]:
        data = {"name": "jp", "mode": "mapreduce",
                "map": {"input": "items.json", "json_path": json_path,
                        "agent_template": [{"shell": "true"}]}}
        result = parse_workflow(data, file="jp.yml", positions={}, key_positions={},
                                stem="jp", environ={})
        return [p.code for p in result.problems]

    assert problems("$.items[?(@.a == 1 && @.b > 2)]") == []
    assert problems("$.items[?(@.a == 1 || @.b > 2)]") == []
    assert problems("$.items[?(@.a ==]") == ["E1010"]
