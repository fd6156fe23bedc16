"""Here-document awareness of the shell escaping (spec 03 §4.3)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prodigy_core.interpolate import JSON, Var, interpolate, shell_quote_state

NASTY = 'it\'s $(echo pwned) `echo pwned` "q" \\ \\n $HOME ${x}'


def data(value: JSON) -> Var:
    return Var(value=value, trusted=False)


def shell_text(template: str, **values: JSON) -> str:
    variables = {name: data(value) for name, value in values.items()}
    return interpolate(template, variables, shell=True).text


def run_sh(script: str) -> str:
    proc = subprocess.run(["sh", "-c", script], capture_output=True, check=True)
    return proc.stdout.decode()


# --------------------------------------------------------------------------- unquoted delimiter


def test_issue_example_prints_value_without_quotes() -> None:
    template = "cat << EOF\nPackage: ${package_summary}\nEOF"
    script = shell_text(template, package_summary="Package: test v1.0.0")
    assert script == "cat << EOF\nPackage: Package: test v1.0.0\nEOF"
    assert run_sh(script) == "Package: Package: test v1.0.0\n"


@pytest.mark.parametrize("operator", ["<<EOF", "<< EOF", "<<\tEOF"])
def test_unquoted_delimiter_escapes_backslash_dollar_backquote(operator: str) -> None:
    script = shell_text(f"cat {operator}\nvalue: ${{v}}\nEOF", v=NASTY)
    assert script == (
        f'cat {operator}\nvalue: it\'s \\$(echo pwned) \\`echo pwned\\` "q" \\\\ \\\\n '
        "\\$HOME \\${x}\nEOF"
    )
    assert run_sh(script) == f"value: {NASTY}\n"


def test_unquoted_body_state_and_quotes_are_literal() -> None:
    template = "cat <<EOF\n'${v}' \"${v}\"\nEOF"
    assert shell_quote_state(template, template.index("${v}")) == "heredoc"
    script = shell_text(template, v="a'b\"c")
    assert script == "cat <<EOF\n'a'b\"c' \"a'b\"c\"\nEOF"
    assert run_sh(script) == "'a'b\"c' \"a'b\"c\"\n"


def test_author_backslash_before_reference_in_unquoted_body() -> None:
    assert run_sh(shell_text("cat <<EOF\n\\${v}\nEOF", v="$x")) == "$x\n"
    assert run_sh(shell_text("cat <<EOF\n\\${v}\nEOF", v="ab")) == "\\ab\n"


def test_command_substitution_in_unquoted_body_uses_command_quoting() -> None:
    templates = [
        "cat <<EOF\n[$(printf '%s' ${v})]\nEOF",
        "cat <<EOF\n[$(printf '%s' \"${v}\")]\nEOF",
        "cat <<EOF\n[$(printf '%s' '${v}')]\nEOF",
        "cat <<EOF\n[`printf '%s' ${v}`]\nEOF",
        "cat <<EOF\n[`printf '%s' \"${v}\"`]\nEOF",
    ]
    for template in templates:
        assert run_sh(shell_text(template, v=NASTY)) == f"[{NASTY}]\n", template
    template = "cat <<EOF\n$(printf '%s' \"${v}\") ${v}\nEOF"
    assert shell_quote_state(template, template.index("${v}")) == "double"
    assert shell_quote_state(template, template.rindex("${v}")) == "heredoc"
    assert run_sh(shell_text(template, v=NASTY)) == f"{NASTY} {NASTY}\n"


def test_line_continuation_in_unquoted_body_does_not_end_it() -> None:
    template = "cat <<EOF\na\\\nEOF\n${v}\nEOF"
    script = shell_text(template, v="$z")
    assert run_sh(script) == "aEOF\n$z\n"


# --------------------------------------------------------------------------- quoted delimiter


@pytest.mark.parametrize("delimiter", ["'EOF'", '"EOF"', 'E"OF"', "\\EOF", "E'O'F"])
def test_quoted_delimiter_inserts_value_as_is(delimiter: str) -> None:
    template = f"cat <<{delimiter}\nvalue: ${{v}}\nEOF"
    assert shell_quote_state(template, template.index("${v}")) == "heredoc_literal"
    script = shell_text(template, v=NASTY)
    assert script == f"cat <<{delimiter}\nvalue: {NASTY}\nEOF"
    assert run_sh(script) == f"value: {NASTY}\n"


# --------------------------------------------------------------------------- <<- and several


def test_dash_operator_with_tab_indented_body() -> None:
    template = "if true; then\n\tcat <<-EOF\n\t\tvalue: ${v}\n\tEOF\n\tprintf '%s\\n' ${v}\nfi"
    assert shell_quote_state(template, template.index("${v}")) == "heredoc"
    assert shell_quote_state(template, template.rindex("${v}")) == "none"
    script = shell_text(template, v=NASTY)
    assert run_sh(script) == f"value: {NASTY}\n{NASTY}\n"


def test_dash_operator_with_quoted_delimiter() -> None:
    template = "cat <<-'END'\n\t${v}\n\t\tEND\nprintf '%s\\n' ${v}"
    assert run_sh(shell_text(template, v=NASTY)) == f"{NASTY}\n{NASTY}\n"


def test_two_heredocs_on_one_line_are_read_in_order() -> None:
    template = "cat <<A; cat <<'B'; printf '%s\\n' ${v}\n1 ${v}\nA\n2 ${v}\nB\nprintf '%s\\n' ${v}"
    offsets = [i for i in range(len(template)) if template.startswith("${v}", i)]
    states = [shell_quote_state(template, i) for i in offsets]
    assert states == ["none", "heredoc", "heredoc_literal", "none"]
    script = shell_text(template, v=NASTY)
    assert run_sh(script) == f"1 {NASTY}\n2 {NASTY}\n{NASTY}\n{NASTY}\n"


def test_two_heredocs_on_one_command_body_order() -> None:
    # Both bodies are read; only the last redirection feeds cat.
    template = "cat <<'A' <<B\n${v}\nA\n${v}\nB"
    script = shell_text(template, v="$q")
    assert script == "cat <<'A' <<B\n$q\nA\n\\$q\nB"
    assert run_sh(script) == "$q\n"


# --------------------------------------------------------------------------- after the body


def test_value_after_heredoc_gets_normal_escaping() -> None:
    template = "cat <<EOF\n${v}\nEOF\nprintf '%s|' ${v} \"${v}\" '${v}'"
    assert shell_quote_state(template, template.rindex("printf")) == "none"
    script = shell_text(template, v="a'b $c")
    assert script == (
        "cat <<EOF\na'b \\$c\nEOF\nprintf '%s|' 'a'\\''b $c' \"a'b \\$c\" 'a'\\''b $c'"
    )
    assert run_sh(shell_text(template, v=NASTY)) == f"{NASTY}\n" + f"{NASTY}|" * 3


def test_delimiter_must_match_the_whole_line() -> None:
    template = "cat <<EOF\nEOF \n EOF\nEOFX\n${v}\nEOF"
    assert shell_quote_state(template, template.index("${v}")) == "heredoc"
    assert run_sh(shell_text(template, v="$a")) == "EOF \n EOF\nEOFX\n$a\n"


# --------------------------------------------------------------------------- not heredocs


@pytest.mark.parametrize(
    "template",
    [
        "echo $((1 << 2))\necho ${v}",
        "echo $((1<<2)) ${v}",
        "(( x = 1 << 2 )); echo ${v}",
        "echo '<<EOF'\necho ${v}",
        'echo "<<EOF"\necho ${v}',
        "echo \\<<EOF\necho ${v}",
        "# cat <<EOF\necho ${v}",
        "cat <<<word\necho ${v}",
    ],
)
def test_not_a_heredoc(template: str) -> None:
    assert shell_quote_state(template, template.index("${v}")) == "none"
    assert shell_text(template, v="a b") == template.replace("${v}", "'a b'")


def test_heredoc_operator_inside_arithmetic_in_body() -> None:
    template = "cat <<EOF\n$((1<<2)) ${v}\nEOF"
    assert shell_quote_state(template, template.index("${v}")) == "heredoc"
    assert run_sh(shell_text(template, v="$x")) == "4 $x\n"


def test_state_on_the_operator_line_is_command_text() -> None:
    template = "cat <<EOF ${v} # x\nbody\nEOF"
    assert shell_quote_state(template, template.index("${v}")) == "none"
    assert run_sh(shell_text(template.replace("cat", "cat - "), v="/dev/null")) == "body\n"


# --------------------------------------------------------------------------- properties


def _dash_mangles(value: str, delimiter: str = "EOF") -> bool:
    """dash 0.5.12 drops the first non-ASCII byte after a line prefix equal to the
    start of the delimiter (``E\xe9`` in an ``EOF`` body); not an escaping problem."""
    return any(
        line[k : k + 1] > "\x7f"
        for line in value.split("\n")
        for k in range(1, len(delimiter) + 1)
        if line.startswith(delimiter[:k])
    )


_VALUES = st.text(
    alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"),
    max_size=40,
).filter(lambda v: "EOF" not in v.split("\n") and not _dash_mangles(v))


@settings(max_examples=60, deadline=None)
@given(_VALUES)
def test_heredoc_bodies_receive_the_value_exactly(value: str) -> None:
    for template in ("cat <<EOF\n${v}\nEOF", "cat <<'EOF'\n${v}\nEOF"):
        script = shell_text(template, v=value)
        proc = subprocess.run(["sh", "-c", script], capture_output=True, check=True)
        assert proc.stdout == (value + "\n").encode(), (template, script)


@pytest.mark.parametrize("opener", ["cat <<EOF", "cat <<'EOF'", "cat <<-EOF"])
def test_a_value_line_equal_to_the_delimiter_cannot_end_the_body(
    tmp_path: Path, opener: str
) -> None:
    marker = tmp_path / "pwned"
    value = f"x\nEOF\ntouch {marker}"
    text = interpolate(f"{opener}\n${{v}}\nEOF\n", {"v": Var(value=value, trusted=False)},
                       shell=True).text
    result = subprocess.run(["sh", "-c", text], capture_output=True, text=True, check=False)
    assert result.returncode == 0
    assert not marker.exists()
    assert f"touch {marker}" in result.stdout
