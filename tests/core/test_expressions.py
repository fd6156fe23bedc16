"""Tests for `when`, `filter`, `sort_by` and `distinct` (spec 04 §1–§7, §9)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from prodigy_core.expressions import (
    MISSING,
    And,
    Compare,
    Const,
    Expr,
    ExprError,
    Field,
    In,
    Matches,
    Missing,
    Not,
    Or,
    Ref,
    SortKey,
    distinct_items,
    equal,
    eval_filter,
    eval_when,
    item_field,
    parse_filter,
    parse_sort_by,
    parse_when,
    sort_items,
    truthy,
    when_references,
)
from prodigy_core.json_values import JSON


def when(text: str, **variables: JSON) -> bool | ExprError:
    expr = parse_when(text)
    assert not isinstance(expr, ExprError), expr

    def resolve(path: str) -> JSON | Missing:
        return variables.get(path, MISSING)

    return eval_when(expr, resolve)


def when_vars(text: str, variables: Mapping[str, JSON]) -> bool | ExprError:
    expr = parse_when(text)
    assert not isinstance(expr, ExprError), expr
    return eval_when(expr, lambda p: variables.get(p, MISSING))


def keep(
    text: str, items: Sequence[JSON], variables: Mapping[str, JSON] | None = None
) -> list[JSON]:
    expr = parse_filter(text)
    assert not isinstance(expr, ExprError), expr
    env = variables or {}
    return [i for i in items if eval_filter(expr, i, lambda p: env.get(p, MISSING)) is True]


def syntax_error(result: Expr | ExprError) -> ExprError:
    assert isinstance(result, ExprError), result
    assert result.code == "E1009"
    return result


# --------------------------------------------------------------------------- acceptance (§9)


def test_example_1_number_capture() -> None:
    assert when("${n} > 5", n=7) is True


def test_example_2_numeric_string() -> None:
    assert when("${n} > 5", n="7") is True
    assert when("${n} > 5", n="3") is False


def test_example_3_boolean_false() -> None:
    assert when("${flag}", flag=False) is False


def test_example_4_missing_is_false() -> None:
    assert when("${missing}") is False


def test_example_5_exists() -> None:
    assert when("${missing.exists} == false") is True
    assert when("${present.exists}", present=None) is True
    assert when("${present.exists} && ${present}", present=0) is False


def test_example_6_bare_word() -> None:
    error = syntax_error(parse_when("coverage > 80"))
    assert error.message == "bare word 'coverage' in when expression; write ${coverage}"
    assert error.column == 1


def test_example_7_cannot_compare() -> None:
    result = when("${name} > true", name="x")
    assert result == ExprError(
        code="E3004",
        message="failed to evaluate when condition: cannot compare string with boolean",
        column=0,
    )


def test_example_8_filter() -> None:
    items: list[JSON] = [{"p": 1}, {"p": 9}, {"p": 5}]
    assert keep("p >= 5", items) == [{"p": 9}, {"p": 5}]


def test_example_9_item_prefix() -> None:
    items: list[JSON] = [{"p": 1}, {"p": 9}, {"p": 5}]
    assert keep("item.p >= 5", items) == [{"p": 9}, {"p": 5}]


def test_example_10_matches() -> None:
    items: list[JSON] = [{"path": "a.rs"}, {"path": "b.py"}]
    assert keep("path matches '\\.rs$'", items) == [{"path": "a.rs"}]


def test_example_11_ends_with() -> None:
    items: list[JSON] = [{"path": "a.rs"}, {"path": "b.py"}]
    assert keep("ends_with(path, '.py')", items) == [{"path": "b.py"}]


def test_example_12_bare_word_string() -> None:
    items: list[JSON] = [{"s": "open"}, {"s": "closed"}]
    assert keep("s == open", items) == [{"s": "open"}]


ITEMS_13: list[JSON] = [{"a": None, "i": 0}, {"a": 2}, {"a": 1}, {"i": 3}]


def test_example_13_sort_desc_nulls_last() -> None:
    keys = parse_sort_by("a DESC")
    assert not isinstance(keys, ExprError)
    assert sort_items(ITEMS_13, keys) == ({"a": 2}, {"a": 1}, {"a": None, "i": 0}, {"i": 3})


def test_example_14_sort_nulls_first() -> None:
    keys = parse_sort_by("a ASC NULLS FIRST")
    assert not isinstance(keys, ExprError)
    assert sort_items(ITEMS_13, keys) == ({"a": None, "i": 0}, {"i": 3}, {"a": 1}, {"a": 2})


def test_example_15_distinct() -> None:
    items: list[JSON] = [{"kind": "x", "n": 0}, {"kind": "y"}, {"kind": "x", "n": 2}]
    assert distinct_items(items, "kind") == ({"kind": "x", "n": 0}, {"kind": "y"})


def test_example_16_pipeline_offset_max_items() -> None:
    items: list[JSON] = [{"n": n} for n in range(10)]
    kept = keep("n >= 0", items)
    keys = parse_sort_by("n")
    assert not isinstance(keys, ExprError)
    ordered = distinct_items(sort_items(kept, keys), "n")
    final = ordered[2:][:3]
    assert [(index, item) for index, item in enumerate(final)] == [
        (0, {"n": 2}),
        (1, {"n": 3}),
        (2, {"n": 4}),
    ]


def test_example_22_filter_variable() -> None:
    items: list[JSON] = [{"score": 1}, {"score": 3}, {"score": 7}]
    assert keep("score >= ${MIN}", items, {"MIN": 3}) == [{"score": 3}, {"score": 7}]
    expr = parse_filter("score >= ${MIN}")
    assert not isinstance(expr, ExprError)
    result = eval_filter(expr, {"score": 1}, lambda p: MISSING)
    assert isinstance(result, ExprError) and result.code == "E2001"
    assert when_references(expr) == ("MIN",)


# --------------------------------------------------------------------------- parsing


def test_precedence_not_binds_tightest() -> None:
    assert parse_when("!${a} == true") == Compare(
        op="==", left=Not(operand=Ref(path="a")), right=Const(value=True)
    )
    assert when("!${a} == true", a=False) is True
    assert when("!${a} == true", a=True) is False


def test_precedence_and_over_or() -> None:
    assert parse_when("${a} || ${b} && ${c}") == Or(
        left=Ref(path="a"), right=And(left=Ref(path="b"), right=Ref(path="c"))
    )
    assert when("${a} || ${b} && ${c}", a=True, b=False, c=False) is True
    assert when("(${a} || ${b}) && ${c}", a=True, b=False, c=False) is False


def test_word_operators() -> None:
    assert when("${a} AND NOT ${b} OR ${c}", a=True, b=True, c=False) is False
    assert when("${a} AND NOT ${b}", a=True, b=False) is True
    syntax_error(parse_when("${a} and ${b}"))
    syntax_error(parse_when("${a} Or ${b}"))


def test_literals() -> None:
    assert parse_when("${x} == 'it\\'s'") == Compare(
        op="==", left=Ref(path="x"), right=Const(value="it's")
    )
    assert when('${x} == "a\\"b\\\\c"', x='a"b\\c') is True
    assert when("${x} == -3", x=-3) is True
    assert when("${x} == 2.5", x=2.5) is True
    assert when("${x} == 1e3", x=1000) is True
    assert when("${x} == null") is True
    assert when("${x} == true", x=True) is True
    assert when("${x} = 'a'", x="a") is True
    # other backslashes are kept (regexes)
    assert parse_filter("p matches '\\d+'") == Matches(
        operand=Field(path="p"), pattern=Const(value="\\d+")
    )


def test_list_literal_only_after_in() -> None:
    assert when("${e} in ['staging', 'prod']", e="prod") is True
    assert when("${e} in ['staging', 'prod']", e="dev") is False
    assert when("${n} in [1, 2, '3']", n=3) is True
    assert when("${n} in []", n=3) is False
    syntax_error(parse_when("${e} == ['a']"))
    syntax_error(parse_when("${e} in 'a'"))
    syntax_error(parse_when("${e} in ['a' 'b']"))


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("$name > 1", "${name}"),
        ("${x} > ", "end of expression"),
        ("${x} == 1 == 2", "'=='"),
        ("${x", "unterminated"),
        ("'abc", "unterminated string"),
        ("${x} # 1", "unexpected character"),
        ("frobnicate(${x})", "unknown function 'frobnicate'"),
        ("${x} matches '('", "invalid regular expression"),
        ("matches(${x}, '[')", "invalid regular expression"),
        ("length(${x}, 1, 2)", "takes 1 or 2"),
        ("contains(${x})", "takes 2"),
        ("(${x}", "expected ')'"),
        ("", "end of expression"),
        ("${a b}", "invalid variable reference"),
        ("${x} == AND", "'AND'"),
        ("contains > 1", "bare word 'contains'"),
    ],
)
def test_when_syntax_errors(text: str, fragment: str) -> None:
    error = syntax_error(parse_when(text))
    assert fragment in error.message
    assert error.column >= 1


def test_error_columns() -> None:
    assert syntax_error(parse_when("${a} && coverage > 1")).column == 9
    assert syntax_error(parse_when("${x} matches '('")).column == 14


def test_when_references() -> None:
    expr = parse_when("${a.b} && ${c.exists} || contains(${d}, 'x') && ${a.b} in [${e}]")
    assert not isinstance(expr, ExprError)
    assert when_references(expr) == ("a.b", "c", "d", "e")


# --------------------------------------------------------------------------- values (§3)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (False, False),
        (0, False),
        (0.0, False),
        ("", False),
        ("false", False),
        ("FALSE", False),
        ("0", False),
        (None, False),
        ([], False),
        ({}, False),
        (MISSING, False),
        (True, True),
        (1, True),
        (-0.5, True),
        ("no", True),
        ("0.0", True),
        (" ", True),
        ([0], True),
        ({"a": None}, True),
    ],
)
def test_truthiness(value: JSON | Missing, expected: bool) -> None:
    assert truthy(value) is expected


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        (1, 1.0, True),
        (1, 2, False),
        (7, "7", True),
        (7, " 7.0 ", True),
        (7, "7x", False),
        ("1e3", 1000, True),
        (True, "TRUE", True),
        (False, "false", True),
        (True, "false", False),
        (True, "1", False),
        (True, 1, False),
        (None, None, True),
        (None, "", False),
        (None, 0, False),
        (None, False, False),
        ("a", "a", True),
        ("a", "A", False),
        ("1", "1.0", False),
        ([1, {"a": "x"}], [1.0, {"a": "x"}], True),
        ([1], [True], False),
        ({"a": 1, "b": 2}, {"b": 2, "a": 1}, True),
        ([1], "[1]", False),
        ({"a": 1}, {"a": 1, "b": 2}, False),
    ],
)
def test_equality(a: JSON, b: JSON, expected: bool) -> None:
    assert equal(a, b) is expected
    assert equal(b, a) is expected


@pytest.mark.parametrize(
    ("text", "variables", "expected"),
    [
        ("${a} < ${b}", {"a": 2, "b": 10}, True),
        ("${a} < ${b}", {"a": "2", "b": 10}, True),
        ("${a} < ${b}", {"a": "2", "b": "10"}, False),  # lexicographic
        ("${a} <= ${b}", {"a": "b", "b": "b"}, True),
        ("${a} >= ${b}", {"a": 2.5, "b": 2}, True),
        ("${a} > ${b}", {"a": "é", "b": "z"}, True),  # code point
        ("${a} != ${b}", {"a": 1, "b": "1"}, False),
        ("${a} != ${b}", {"a": 1, "b": "2"}, True),
    ],
)
def test_ordering_and_inequality(text: str, variables: dict[str, JSON], expected: bool) -> None:
    assert when_vars(text, variables) is expected


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"a": "x", "b": 1}, "cannot compare string with number"),
        ({"a": None, "b": 1}, "cannot compare null with number"),
        ({"a": True, "b": False}, "cannot compare boolean with boolean"),
        ({"a": [1], "b": [2]}, "cannot compare array with array"),
        ({"b": 1}, "cannot compare null with number"),
    ],
)
def test_ordering_type_errors(variables: dict[str, JSON], message: str) -> None:
    result = when_vars("${a} < ${b}", variables)
    assert isinstance(result, ExprError)
    assert result.code == "E3004"
    assert result.message == f"failed to evaluate when condition: {message}"


def test_short_circuit_avoids_errors() -> None:
    assert when("${f} && ${s} > true", f=False, s="x") is False
    assert when("${t} || ${s} > true", t=True, s="x") is True
    assert isinstance(when("${t} && ${s} > true", t=True, s="x"), ExprError)


@pytest.mark.parametrize(
    ("text", "variables", "expected"),
    [
        ("contains(${x}, '.rs')", {"x": "src/a.rs"}, True),
        ("contains(${x}, 'b')", {"x": ["a", "b"]}, True),
        ("contains(${x}, 2)", {"x": [1, "2"]}, True),
        ("contains(${x}, 'k')", {"x": {"k": 1}}, True),
        ("contains(${x}, 'v')", {"x": {"k": "v"}}, False),
        ("contains(${x}, 'a')", {"x": 5}, False),
        ("starts_with(${x}, 'src/')", {"x": "src/a"}, True),
        ("starts_with(${x}, 'src/')", {"x": ["src/a"]}, False),
        ("ends_with(${x}, '.py')", {"x": "a.py"}, True),
        ("matches(${x}, '^a')", {"x": "abc"}, True),
        ("${x} matches 'b'", {"x": "abc"}, True),
        ("${x} matches '^b'", {"x": "abc"}, False),
        ("${x} matches '^1\\.5$'", {"x": 1.5}, True),
        ("${x} matches 'true'", {"x": True}, True),
        ("${x} matches '.*'", {"x": None}, False),
        ("${x} matches '.*'", {}, False),
        ("${x} matches ${p}", {"x": "abc", "p": "c$"}, True),
        ("is_null(${x})", {}, True),
        ("is_null(${x})", {"x": None}, True),
        ("is_not_null(${x})", {"x": 0}, True),
        ("is_number(${x})", {"x": 1.5}, True),
        ("is_number(${x})", {"x": True}, False),
        ("is_number(${x})", {"x": "1"}, False),
        ("is_string(${x})", {"x": "1"}, True),
        ("is_bool(${x})", {"x": False}, True),
        ("is_array(${x})", {"x": []}, True),
        ("is_object(${x})", {"x": {}}, True),
        ("length(${x}) == 3", {"x": "abc"}, True),
        ("length(${x}) == 2", {"x": [1, 2]}, True),
        ("length(${x}) == 1", {"x": {"a": 1}}, True),
        ("length(${x}) == 0", {}, True),
        ("length(${x}, 2)", {"x": "ab"}, True),
        ("length(${x}, 3)", {"x": "ab"}, False),
        ("!is_null(${x}) && length(${x}) > 1", {"x": "ab"}, True),
    ],
)
def test_functions(text: str, variables: dict[str, JSON], expected: bool) -> None:
    assert when_vars(text, variables) is expected


def test_length_of_number_is_an_error() -> None:
    result = when("length(${x}) > 1", x=5)
    assert isinstance(result, ExprError)
    assert result.code == "E3004" and "length" in result.message


def test_regex_from_variable_that_does_not_compile() -> None:
    result = when("${x} matches ${p}", x="a", p="(")
    assert isinstance(result, ExprError) and result.code == "E3004"


def test_design_example_when() -> None:
    text = "${tests.success} && ${coverage} >= 80 && ${DEPLOY_ENV} in ['staging', 'prod']"
    ok: dict[str, JSON] = {"tests.success": True, "coverage": "85", "DEPLOY_ENV": "prod"}
    assert when_vars(text, ok) is True
    assert when_vars(text, {**ok, "coverage": 79}) is False


# --------------------------------------------------------------------------- filter (§5)


def test_filter_design_example() -> None:
    text = (
        "severity in ['high', 'critical'] && !is_null(location.file) "
        "&& location.file matches '\\.py$'"
    )
    items: list[JSON] = [
        {"severity": "high", "location": {"file": "a.py"}},
        {"severity": "low", "location": {"file": "b.py"}},
        {"severity": "critical", "location": {"file": None}},
        {"severity": "critical", "location": {"file": "c.rs"}},
        {"severity": "critical"},
        {"severity": "critical", "location": {"file": "d.py"}},
    ]
    assert keep(text, items) == [items[0], items[5]]


def test_filter_field_alone_is_truthiness() -> None:
    items: list[JSON] = [{"has_issues": True}, {"has_issues": False}, {}, {"has_issues": "0"}]
    assert keep("has_issues", items) == [{"has_issues": True}]
    assert keep("!has_issues", items) == items[1:]


def test_filter_right_side_bare_words_and_paths() -> None:
    items: list[JSON] = [{"s": "high-prio", "t": ["x"]}, {"s": "a.b"}, {"s": "true"}]
    assert keep("s == high-prio", items) == [items[0]]
    assert keep("s == a.b", items) == [items[1]]
    assert keep("s in [a.b, high-prio]", items) == items[:2]
    assert keep("s == true", items) == [items[2]]
    assert keep("t[0] == x", items) == [items[0]]
    assert keep("contains(t, x)", items) == [items[0]]


def test_filter_item_field_named_item() -> None:
    items: list[JSON] = [{"item": {"p": 9}, "p": 1}]
    assert keep("item.p >= 5", items) == items
    assert keep("p >= 5", items) == []


def test_filter_non_object_items() -> None:
    items: list[JSON] = ["a.rs", "b.py", 3, None]
    assert keep("item matches '\\.rs$'", items) == ["a.rs"]
    assert keep("item == 3", items) == [3]
    assert keep("is_null(item.x)", ["s"]) == ["s"]
    assert keep("name == s", ["s"]) == []


def test_filter_type_error_is_w6002() -> None:
    expr = parse_filter("p > 5")
    assert not isinstance(expr, ExprError)
    result = eval_filter(expr, {"p": "high"}, lambda p: MISSING)
    assert isinstance(result, ExprError) and result.code == "W6002"
    assert "cannot compare string with number" in result.message
    assert eval_filter(expr, {"p": 7}, lambda p: MISSING) is True


def test_filter_parse_shapes() -> None:
    assert parse_filter("a.b[0] in [x, 1]") == In(
        operand=Field(path="a.b[0]"), options=(Const(value="x"), Const(value=1))
    )
    syntax_error(parse_filter("unknown_fn(a)"))
    syntax_error(parse_filter("$x > 1"))
    syntax_error(parse_filter("a matches '('"))


def test_item_field() -> None:
    assert item_field({"a": {"b": [1, 2]}}, "item.a.b[-1]") == 2
    assert item_field({"a": 1}, "item") == {"a": 1}
    assert item_field({"a": 1}, "b") is MISSING
    assert item_field("s", "item") == "s"
    assert item_field("s", "item.x") is MISSING


# --------------------------------------------------------------------------- sort_by, distinct


def test_parse_sort_by() -> None:
    assert parse_sort_by("priority DESC, scores.final desc nulls last, path Ascending") == (
        SortKey(path="priority", descending=True),
        SortKey(path="scores.final", descending=True, nulls_first=False),
        SortKey(path="path", descending=False),
    )
    assert parse_sort_by("a nulls first") == (SortKey(path="a", nulls_first=True),)
    assert parse_sort_by("item.a DESCENDING NULLS FIRST") == (
        SortKey(path="item.a", descending=True, nulls_first=True),
    )


@pytest.mark.parametrize("text", ["", "a,", "a UP", "a DESC ASC", "a NULLS", "a b c", "a%b"])
def test_parse_sort_by_errors(text: str) -> None:
    result = parse_sort_by(text)
    assert isinstance(result, ExprError) and result.code == "E1009"


def test_sort_type_rank_and_stability() -> None:
    items: list[JSON] = [
        {"v": {"o": 1}, "i": 0},
        {"v": "b", "i": 1},
        {"v": [1], "i": 2},
        {"v": 2, "i": 3},
        {"v": True, "i": 4},
        {"v": "a", "i": 5},
        {"v": 2.0, "i": 6},
        {"v": False, "i": 7},
        {"v": 10, "i": 8},
    ]
    keys = parse_sort_by("v")
    assert not isinstance(keys, ExprError)
    order = [item["i"] for item in sort_items(items, keys) if isinstance(item, dict)]
    assert order == [7, 4, 3, 6, 8, 5, 1, 2, 0]
    keys_desc = parse_sort_by("v DESC")
    assert not isinstance(keys_desc, ExprError)
    order_desc = [item["i"] for item in sort_items(items, keys_desc) if isinstance(item, dict)]
    assert order_desc == [0, 2, 1, 5, 8, 3, 6, 4, 7]  # 2 and 2.0 keep their order


def test_sort_multiple_keys() -> None:
    items: list[JSON] = [
        {"p": 1, "s": {"f": 5}, "path": "b"},
        {"p": 2, "s": {"f": 1}, "path": "c"},
        {"p": 1, "s": {"f": 7}, "path": "a"},
        {"p": 1, "path": "d"},
        {"p": 1, "s": {"f": 7}, "path": "0"},
    ]
    keys = parse_sort_by("priority DESC, p DESC, s.f DESC NULLS LAST, path ASC")
    assert not isinstance(keys, ExprError)
    paths = [item["path"] for item in sort_items(items, keys) if isinstance(item, dict)]
    assert paths == ["c", "0", "a", "b", "d"]


def test_sort_non_object_items() -> None:
    keys = parse_sort_by("item DESC")
    assert not isinstance(keys, ExprError)
    assert sort_items([3, None, 10, 1], keys) == (10, 3, 1, None)


def test_distinct_uses_expression_equality() -> None:
    items: list[JSON] = [
        {"k": 1, "i": 0},
        {"k": "1", "i": 1},
        {"k": 1.0, "i": 2},
        {"k": "1.0", "i": 3},
        {"i": 4},
        {"k": None, "i": 5},
        {"k": True, "i": 6},
        {"k": "TRUE", "i": 7},
        {"k": [1, {"a": 2}], "i": 8},
        {"k": [1.0, {"a": 2}], "i": 9},
        {"k": [True], "i": 10},
        {"k": "x", "i": 11},
    ]
    kept = [item["i"] for item in distinct_items(items, "k") if isinstance(item, dict)]
    # "1.0" is not equal to the kept "1"? it equals the kept number 1, so it is dropped.
    assert kept == [0, 4, 6, 8, 10, 11]


def test_distinct_non_transitive_equality_checks_every_kept_value() -> None:
    items: list[JSON] = [{"k": "1"}, {"k": "1.0"}, {"k": 1}]
    # "1.0" != "1" (string/string), so it is kept; 1 equals the kept "1", so it is dropped.
    assert distinct_items(items, "k") == ({"k": "1"}, {"k": "1.0"})


# --------------------------------------------------------------------------- properties


@given(st.text(max_size=80))
def test_parse_never_raises(text: str) -> None:
    for result in (parse_when(text), parse_filter(text)):
        assert isinstance(result, ExprError) or not isinstance(result, str)
        if isinstance(result, ExprError):
            assert result.code == "E1009"
    sort = parse_sort_by(text)
    assert isinstance(sort, ExprError | tuple)


_TOKENS = st.sampled_from(
    [
        "${a}",
        "${b.c}",
        "x",
        "'s'",
        "1",
        "-2.5",
        "true",
        "null",
        "==",
        "!=",
        "<",
        ">=",
        "&&",
        "||",
        "!",
        "NOT",
        "AND",
        "in",
        "[",
        "]",
        ",",
        "(",
        ")",
        "matches",
        "'^a'",
        "length(",
        "contains(",
        "is_null(",
    ]
)


@given(st.lists(_TOKENS, max_size=12))
def test_parse_and_eval_token_soup_never_raises(tokens: list[str]) -> None:
    text = " ".join(tokens)
    variables: dict[str, JSON] = {"a": 1, "b.c": "s"}
    for expr in (parse_when(text), parse_filter(text)):
        if isinstance(expr, ExprError):
            assert expr.code == "E1009"
            continue
        result = eval_when(expr, lambda p: variables.get(p, MISSING))
        assert isinstance(result, bool | ExprError)
        filtered = eval_filter(expr, {"x": 3}, lambda p: variables.get(p, MISSING))
        assert isinstance(filtered, bool | ExprError)
