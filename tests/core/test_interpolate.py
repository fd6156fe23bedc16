"""Tests for the interpolation engine (spec 03 §1–§4, §7.4, §10)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prodigy_core.interpolate import (
    JSON,
    Interpolated,
    Reference,
    TemplateProblem,
    Var,
    check_template,
    interpolate,
    lookup,
    references,
    render_value,
    render_var,
    shell_quote_state,
)


def data(value: JSON) -> Var:
    return Var(value=value, trusted=False)


def author(value: JSON) -> Var:
    return Var(value=value, trusted=True)


def text_of(template: str, variables: Mapping[str, Var], **kwargs: object) -> str:
    return interpolate(template, variables, **kwargs).text  # type: ignore[arg-type]


def run_sh(script: str, cwd: Path, env: Mapping[str, str] | None = None) -> bytes:
    proc = subprocess.run(
        ["sh", "-c", script],
        cwd=cwd,
        env=dict(env) if env is not None else {"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        capture_output=True,
        check=True,
    )
    return proc.stdout


# --------------------------------------------------------------------------- syntax (§1)


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("echo $$HOME", "echo $HOME"),
        ("$$$$", "$$"),
        ("$$$", "$$"),
        ("cost: 5$", "cost: 5$"),
        ("a $ b", "a $ b"),
        ("$-x $. $/", "$-x $. $/"),
        ("${X}", "val"),
        ("$X", "val"),
        ("$X.id", "val.id"),
        ("$XY", "$XY"),
        ("$X_Y", "xy"),
        ("$X-Y", "val-Y"),
        ("pre${X}post", "prevalpost"),
        ("\\${X}", "\\val"),
        ("\\$X", "\\val"),
    ],
)
def test_basic_syntax(template: str, expected: str) -> None:
    variables = {"X": author("val"), "X_Y": author("xy")}
    assert text_of(template, variables) == expected


def test_longest_name_match_for_unbraced() -> None:
    variables = {"item": author("I"), "item_id": author("ID")}
    assert text_of("$item_id $item $item.id", variables) == "ID I I.id"


def test_default_forms() -> None:
    variables = {"x": author("X"), "L": data(["a", "b"])}
    assert text_of("${nope:-fallback}", variables) == "fallback"
    assert text_of("[${nope:-}]", variables) == "[]"
    assert text_of("${x:-fallback}", variables) == "X"
    # the default is never interpolated
    assert text_of("${nope:-$x ${x}}", variables) == "$x ${x}"
    assert text_of("${nope:-$x}", variables) == "$x"
    # modifiers apply to the value, never to the default
    assert text_of("${L:json:-[]}", variables) == '["a","b"]'
    assert text_of("${nope:json:-a b}", variables) == "a b"
    # a default ends at the first }
    assert text_of("${nope:-a}b}", variables) == "ab}"


def test_default_does_not_contain_closing_brace() -> None:
    assert text_of("${nope:-{x}", {}) == "{x"


def test_unresolved_left_byte_for_byte_and_reported() -> None:
    result = interpolate("${x} ${a[0]} ${x:json} $NAME $1 ${x} ${b.c}", {})
    assert result.text == "${x} ${a[0]} ${x:json} $NAME $1 ${x} ${b.c}"
    assert result.unresolved == ("x", "a[0]", "b.c")


def test_default_is_not_unresolved() -> None:
    assert interpolate("${x:-d}", {}) == Interpolated(text="d", unresolved=())


def test_single_pass_never_rescans_values() -> None:
    # acceptance example 12
    variables = {"cap": data("${secret} and $secret and $$"), "secret": author("S")}
    assert text_of("echo ${cap}", variables) == "echo ${secret} and $secret and $$"


def test_unterminated_brace_is_left_as_text() -> None:
    variables = {"X": author("v")}
    assert interpolate("a ${X b $X", variables) == Interpolated(text="a ${X b v", unresolved=())
    assert text_of("${", variables) == "${"
    assert text_of("$", variables) == "$"


def test_filter_syntax_left_unchanged_and_not_unresolved() -> None:
    variables = {"x": author("v")}
    result = interpolate("${x|default:none} ${x|length:100} ${x}", variables)
    assert result == Interpolated(text="${x|default:none} ${x|length:100} v", unresolved=())


def test_malformed_references_left_unchanged() -> None:
    variables = {"x": author("v")}
    for template in ["${x:bogus}", "${#x}", "${x%%.*}", "${}", "${a b}", "${x:json:csv}"]:
        assert interpolate(template, variables) == Interpolated(text=template, unresolved=())


def test_positional_only_from_positional_argument() -> None:
    variables = {"1": author("nope")}
    assert text_of("$1 ${1} ${2}", variables) == "$1 ${1} ${2}"
    assert text_of("$1 ${1} ${2:-d} $3", variables, positional=("payments",)) == (
        "payments payments d $3"
    )
    assert interpolate("${2}", {}, positional=("a",)).unresolved == ("2",)
    assert text_of("out/${1}", {}, positional=("m",)) == "out/m"


def test_identity_examples() -> None:
    # acceptance example 2 reaches awk unchanged
    template = "printf 'a b\\n' | awk '{print $2}'"
    assert text_of(template, {"X": author("1")}, shell=True) == template


# --------------------------------------------------------------------------- lookup (§2)


def test_lookup_exact_name_wins_over_walk() -> None:
    variables = {"map.total": author(10), "map": author({"total": 99})}
    found = lookup("map.total", variables)
    assert found is not None and found.value == 10


def test_lookup_longest_prefix_then_walk() -> None:
    variables = {
        "a": author({"b": {"c": "short"}}),
        "a.b": author({"c": [10, 20, 30]}),
    }
    found = lookup("a.b.c[1]", variables)
    assert found is not None and found.value == 20


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("item", {"loc": {"file": "x.rs", "line": 3}, "tags": ["t0", "t1"], "n": None}),
        ("item.loc.file", "x.rs"),
        ("item.loc.line", 3),
        ("item.tags[0]", "t0"),
        ("item.tags[-1]", "t1"),
        ("item.tags.1", "t1"),
        ("item.n", None),
    ],
)
def test_lookup_walks(path: str, expected: JSON) -> None:
    item: JSON = {"loc": {"file": "x.rs", "line": 3}, "tags": ["t0", "t1"], "n": None}
    found = lookup(path, {"item": data(item)})
    assert found is not None
    assert found.value == expected
    assert found.trusted is False


@pytest.mark.parametrize(
    "path",
    [
        "item.nope",
        "item.tags[2]",
        "item.tags[-3]",
        "item.loc.file.x",
        "item.loc[0]",
        "item.n.x",
        "item.tags.x",
        "s.a",
        "s[0]",
        "other",
        "item..x",
        "item.loc.line.0",
    ],
)
def test_lookup_unresolved(path: str) -> None:
    item: JSON = {"loc": {"file": "x.rs", "line": 3}, "tags": ["t0", "t1"], "n": None}
    variables = {"item": data(item), "s": data('{"a": 1}')}
    assert lookup(path, variables) is None


def test_strings_are_never_parsed_as_json() -> None:
    assert text_of("${s.a}", {"s": data('{"a": 1}')}) == "${s.a}"


def test_env_namespace_cannot_be_shadowed() -> None:
    variables = {"env": author({"HOME": "shadow"}), "env.HOME": author("shadow2")}
    found = lookup("env.HOME", variables, {"HOME": "/home/u"})
    assert found is not None and found.value == "/home/u"
    assert lookup("env.NOPE", variables, {"HOME": "/home/u"}) is None
    assert lookup("env.HOME", variables, None) is None
    assert text_of("${env.HOME}", variables, environ={"HOME": "/h"}) == "/h"
    assert text_of("$env", {"env": author("e")}) == "e"


def test_item_number_object_rendering() -> None:
    assert text_of("${item}", {"item": data(3)}) == "3"
    assert text_of("${item}", {"item": data(None)}) == ""
    assert text_of("${item}", {"item": data([1, "a"])}) == '[1,"a"]'


# --------------------------------------------------------------------------- rendering (§4.1)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("text", "text"),
        (10, "10"),
        (0, "0"),
        (-4, "-4"),
        (2.5, "2.5"),
        (0.1, "0.1"),
        (8.0, "8.0"),
        (1e-07, "1e-07"),
        (66.67, "66.67"),
        (True, "true"),
        (False, "false"),
        (None, ""),
        (["a", "b"], "a, b"),
        ([], ""),
        ([1, 2], "[1,2]"),
        (["a", 1], '["a",1]'),
        ({"a": 1, "b": [True, None]}, '{"a":1,"b":[true,null]}'),
        ({"z": 1, "a": 2}, '{"z":1,"a":2}'),
        ({"é": "ü"}, '{"é":"ü"}'),
    ],
)
def test_render_value(value: JSON, expected: str) -> None:
    assert render_value(value) == expected


def test_render_git_list_space_joined() -> None:
    assert render_value(["a", "b"], git_list=True) == "a b"
    assert render_value([1, 2], git_list=True) == "[1,2]"


# --------------------------------------------------------------------------- modifiers (§4.2)


def test_format_modifiers() -> None:
    variables = {
        "L": data(["a", "b"]),
        "N": data([1, 2.5, None]),
        "s": data('a "b"'),
        "o": data({"k": "v"}),
        "n": data(3),
    }
    assert text_of("${L:json}", variables) == '["a","b"]'
    assert text_of("${s:json}", variables) == '"a \\"b\\""'
    assert text_of("${n:json}", variables) == "3"
    assert text_of("${L:lines}|${L:newline}", variables) == "a\nb|a\nb"
    assert text_of("${N:lines}", variables) == "1\n2.5\n"
    assert text_of("${L:csv} ${L:comma}", variables) == "a,b a,b"
    assert text_of("${L:space}", variables) == "a b"
    assert text_of("${s:lines}", variables) == 'a "b"'
    assert text_of("${o:csv}", variables) == '{"k":"v"}'
    assert text_of("${o:json}", variables) == '{"k":"v"}'


def test_glob_modifier() -> None:
    files = Var(
        value=["docs/a.md", "src/b.py", "src/deep/c.py", "README.md"], trusted=False, git_list=True
    )
    mixed = data(["a.md", 1, "b.txt", "c.md"])
    variables = {"step.files_added": files, "mixed": mixed, "one": data("x.md")}
    assert text_of("${step.files_added:*.md}", variables) == "docs/a.md README.md"
    assert text_of("${step.files_added:src/*}", variables) == "src/b.py src/deep/c.py"
    assert text_of("${step.files_added:src/*:json}", variables) == '["src/b.py","src/deep/c.py"]'
    assert text_of("${step.files_added:json:src/*}", variables) == '["src/b.py","src/deep/c.py"]'
    assert text_of("${step.files_added:src/*:csv}", variables) == "src/b.py,src/deep/c.py"
    assert text_of("${step.files_added:?????????}", variables) == "docs/a.md README.md"
    assert text_of("${step.files_added:[ds]*}", variables) == "docs/a.md src/b.py src/deep/c.py"
    assert text_of("${step.files_added:*.rs}", variables) == ""
    assert text_of("${mixed:*.md}", variables) == "a.md, c.md"
    assert text_of("${step.files_added:lines}", variables) == (
        "docs/a.md\nsrc/b.py\nsrc/deep/c.py\nREADME.md"
    )
    assert text_of("${step.files_added}", variables) == "docs/a.md src/b.py src/deep/c.py README.md"
    # a glob on a scalar leaves it unchanged
    assert text_of("${one:*.rs}", variables) == "x.md"


def test_render_var_direct() -> None:
    assert render_var(data(["a", "b"]), ("json",)) == '["a","b"]'
    assert render_var(data(["a", "b"])) == "a, b"


# --------------------------------------------------------------------------- validation


def test_check_template_problems() -> None:
    text = "${x|default:y} ${a b} ${x:foo} ${x:*:?} ${x:json:csv} ${ok:json:*.md:-d} ${"
    problems = check_template(text)
    assert [(p.code, p.offset) for p in problems] == [
        ("W1003", 0),
        ("E1012", text.index("${a b}")),
        ("E1012", text.index("${x:foo}")),
        ("E1012", text.index("${x:*:?}")),
        ("E1012", text.index("${x:json:csv}")),
        ("E1012", len(text) - 2),
    ]
    assert "foo" in problems[2].message
    assert "unterminated" in problems[5].message
    assert "filters are not supported" in problems[0].message


@pytest.mark.parametrize(
    "template",
    [
        "plain",
        "echo $$HOME $1 ${x:-a b} ${x:json:sh:*.md} ${x:raw} ${item.a[0]:newline}",
        "${x:comma:-} ${a-b.c[-1]} cost 5$",
        "${x:[abc]*}",
    ],
)
def test_check_template_clean(template: str) -> None:
    assert check_template(template) == ()


def test_check_template_raw_sh_conflict_and_empty_modifier() -> None:
    assert [p.code for p in check_template("${x:raw:sh} ${x:}")] == ["E1012", "E1012"]


def test_references() -> None:
    refs = references("$A ${b.c[0]:json:-x} $$B $1 ${x|f} ${bad path} ${")
    assert refs == (
        Reference(text="$A", path="A", braced=False, modifiers=(), default=None, start=0, end=2),
        Reference(
            text="${b.c[0]:json:-x}",
            path="b.c[0]",
            braced=True,
            modifiers=("json",),
            default="x",
            start=3,
            end=20,
        ),
        Reference(text="$1", path="1", braced=False, modifiers=(), default=None, start=25, end=27),
    )


def test_template_problem_is_data() -> None:
    problem = TemplateProblem(code="E1012", message="m", offset=3)
    assert problem.offset == 3


# --------------------------------------------------------------------------- shell (§4.3)


def test_shell_escaping_table() -> None:
    variables = {"v": data("it's $(x)")}
    assert text_of("echo ${v}", variables, shell=True) == "echo 'it'\\''s $(x)'"
    assert text_of("echo '${v}'", variables, shell=True) == "echo 'it'\\''s $(x)'"
    assert text_of('echo "${v}"', variables, shell=True) == 'echo "it\'s \\$(x)"'
    assert text_of('echo "a\\"${v}"', variables, shell=True) == 'echo "a\\"it\'s \\$(x)"'


def test_shell_escaping_only_when_shell_text() -> None:
    variables = {"v": data("it's $(x)")}
    assert text_of("echo ${v}", variables) == "echo it's $(x)"


def test_trusted_values_inserted_as_written() -> None:
    variables = {"TEST_COMMAND": author("printf '%s-' a b")}
    assert text_of("${TEST_COMMAND}", variables, shell=True) == "printf '%s-' a b"
    assert text_of("$TEST_COMMAND", variables, shell=True) == "printf '%s-' a b"
    assert text_of("${TEST_COMMAND:sh}", variables, shell=True) == "'printf '\\''%s-'\\'' a b'"


def test_raw_modifier_disables_escaping() -> None:
    variables = {"cmd": data("echo hi")}
    assert text_of("${cmd:raw}", variables, shell=True) == "echo hi"
    assert text_of("${cmd}", variables, shell=True) == "'echo hi'"


@pytest.mark.parametrize(
    "value", ["src/a.py", "item_0", "a-b.c:d,e@f%g+h=i", "10", "2.5", "café", ""]
)
def test_plain_values_unchanged_in_shell(value: str) -> None:
    variables = {"v": data(value)}
    for template in ["echo ${v}", "echo '${v}'", 'echo "${v}"']:
        assert text_of(template, variables, shell=True) == template.replace("${v}", value)


def test_git_list_outside_quotes_is_one_word_per_element() -> None:
    files = Var(value=["a b.md", "c.md"], trusted=False, git_list=True)
    variables = {"f": files}
    assert text_of("ls ${f}", variables, shell=True) == "ls 'a b.md' c.md"
    assert text_of("ls ${f:json}", variables, shell=True) == 'ls \'["a b.md","c.md"]\''
    assert text_of("ls '${f}'", variables, shell=True) == "ls 'a b.md c.md'"


@pytest.mark.parametrize(
    ("template", "offset", "expected"),
    [
        ("a '${x}' \"b", 3, "single"),
        ("a '${x}' \"b", 0, "none"),
        ("a '${x}' \"b", 10, "double"),
        ("a '${x}' \"b", 5, "single"),  # inside the reference: state at its start
        ("a \\'b ", 5, "none"),
        ('a "\\"" x', 7, "none"),
        ("a \"it's", 7, "double"),
        ("a 'x\\' b", 8, "none"),
        ("# it's\nx", 8, "none"),
        ("echo a#'b", 9, "single"),
        ("echo ${x:-'} '", 14, "single"),
        ("echo $$'", 8, "single"),
    ],
)
def test_shell_quote_state(template: str, offset: int, expected: str) -> None:
    assert shell_quote_state(template, offset) == expected


# --------------------------------------------------------------------------- acceptance (§10)


def test_example_1_double_dollar(tmp_path: Path) -> None:
    script = text_of("echo $$HOME", {}, shell=True)
    assert script == "echo $HOME"
    assert run_sh(script, tmp_path, {"HOME": "/home/x", "PATH": os.environ["PATH"]}) == (
        b"/home/x\n"
    )


def test_example_2_awk_dollar(tmp_path: Path) -> None:
    script = text_of("printf 'a b\\n' | awk '{print $2}'", {"ARG": author("z")}, shell=True)
    assert run_sh(script, tmp_path) == b"b\n"


def test_example_3_unresolved_reaches_shell(tmp_path: Path) -> None:
    result = interpolate("echo ${nope}", {}, shell=True)
    assert result.text == "echo ${nope}"
    assert result.unresolved == ("nope",)
    assert run_sh(result.text, tmp_path) == b"\n"


def test_example_5_default(tmp_path: Path) -> None:
    result = interpolate("echo ${nope:-fallback}", {}, shell=True)
    assert result.unresolved == ()
    assert run_sh(result.text, tmp_path) == b"fallback\n"


def test_examples_7_8_9_items(tmp_path: Path) -> None:
    assert run_sh(text_of("echo ${item}", {"item": data("src/a.py")}, shell=True), tmp_path) == (
        b"src/a.py\n"
    )
    item = data({"loc": {"file": "x.rs", "line": 3}})
    script = text_of("echo ${item.loc.file}:${item.loc.line}", {"item": item}, shell=True)
    assert run_sh(script, tmp_path) == b"x.rs:3\n"
    script = text_of("echo '${item}'", {"item": data({"a": 1})}, shell=True)
    assert run_sh(script, tmp_path) == b'{"a":1}\n'


def test_example_10_reduce_counts(tmp_path: Path) -> None:
    variables = {
        "map.successful": author(2),
        "map.total": author(3),
        "map.success_rate": author(66.67),
    }
    script = text_of(
        "echo ${map.successful}/${map.total} ${map.success_rate}", variables, shell=True
    )
    assert run_sh(script, tmp_path) == b"2/3 66.67\n"


def test_example_11_lines_capture(tmp_path: Path) -> None:
    script = text_of("echo '${L}' '${L:json}' '${L:csv}'", {"L": data(["a", "b"])}, shell=True)
    assert run_sh(script, tmp_path) == b'a, b ["a","b"] a,b\n'


def test_example_12_no_reexpansion(tmp_path: Path) -> None:
    variables = {"cap": data("${secret}"), "secret": author("S3CRET")}
    script = text_of("echo ${cap}", variables, shell=True)
    assert run_sh(script, tmp_path) == b"${secret}\n"


def test_example_17_no_injection(tmp_path: Path) -> None:
    script = text_of("echo ${item}", {"item": data("a b; touch pwned")}, shell=True)
    assert run_sh(script, tmp_path) == b"a b; touch pwned\n"
    assert list(tmp_path.iterdir()) == []


def test_example_18_three_quoting_contexts(tmp_path: Path) -> None:
    title = 'it\'s "$(id)"; touch pwned'
    item = data({"t": title})
    script = text_of("echo '${item.t}' \"${item.t}\" ${item.t}", {"item": item}, shell=True)
    assert run_sh(script, tmp_path) == f"{title} {title} {title}\n".encode()
    assert list(tmp_path.iterdir()) == []


def test_example_20_raw(tmp_path: Path) -> None:
    variables = {"cmd": data("echo hi")}
    assert run_sh(text_of("${cmd:raw}", variables, shell=True), tmp_path) == b"hi\n"
    proc = subprocess.run(
        ["sh", "-c", text_of("${cmd}", variables, shell=True)],
        cwd=tmp_path,
        capture_output=True,
        check=False,
    )
    assert proc.returncode == 127
    assert b"echo hi" in proc.stderr


def test_backslash_before_reference_stays_safe(tmp_path: Path) -> None:
    variables = {"v": data("$(touch pwned) 'q'")}
    script = text_of("printf '%s|' \\${v} \"\\${v}\"", variables, shell=True)
    run_sh(script, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_newline_value_inside_comment_stays_in_comment(tmp_path: Path) -> None:
    script = text_of("echo ok # note ${v}", {"v": data("x\ntouch pwned")}, shell=True)
    assert run_sh(script, tmp_path) == b"ok\n"
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- properties


@given(st.text().filter(lambda t: "$" not in t))
def test_text_without_dollar_is_identity(text: str) -> None:
    variables = {"x": data("v"), "y": author("w")}
    assert interpolate(text, variables) == Interpolated(text=text, unresolved=())
    assert interpolate(text, variables, shell=True) == Interpolated(text=text, unresolved=())


_SHELL_TEXT = st.text(
    alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"),
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(_SHELL_TEXT)
def test_untrusted_values_reach_the_shell_exactly(value: str) -> None:
    templates = {
        "printf '%s' ${v}": value,
        "printf '%s' '${v}'": value,
        "printf '%s' \"${v}\"": value,
        "printf '%s' x${v}y": "x" + value + "y",
        "printf '%s' \"a'${v}'b\"": "a'" + value + "'b",
        "printf '%s' 'a\"'${v}'\"b'": 'a"' + value + '"b',
    }
    for template, expected in templates.items():
        script = text_of(template, {"v": data(value)}, shell=True)
        proc = subprocess.run(["sh", "-c", script], capture_output=True, check=True)
        assert proc.stdout == expected.encode(), (template, script)


@given(st.text(max_size=60))
def test_interpolate_never_raises(text: str) -> None:
    variables = {"x": data({"a": [1, "b"]}), "y": author("w")}
    result = interpolate(text, variables, shell=True, positional=("p",))
    assert isinstance(result.text, str)
    check_template(text)
    references(text)
    for offset in (0, len(text) // 2, len(text)):
        assert shell_quote_state(text, offset) in ("none", "single", "double")
