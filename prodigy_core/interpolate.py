"""The single interpolation engine: ``${path}``, ``$NAME``, ``$$`` (spec 03 §1–§4, §7.4).

Theory of operation
-------------------
A template is scanned once, left to right, into *segments* (``_scan``):

* literal text, copied as-is (``$$`` becomes a literal ``$``; a ``$`` followed by anything
  that cannot start a reference is literal; an unterminated ``${`` is literal);
* a ``Reference`` (``${path:mods:-default}``, ``$NAME`` or ``$N``);
* a malformed ``${...}`` (bad path, unknown modifier, filter syntax ``${x|f}``), which is
  copied unchanged at run time and reported by ``check_template``.

``interpolate`` then walks the segments.  A reference is resolved with ``lookup`` (exact
name first, then the longest variable prefix and a JSON walk), rendered with its modifiers
(``render_value`` plus §4.2), and, in shell text, escaped for the quoting context of the
insertion point (§4.3).  Substituted text is never rescanned, so a value can never inject
a reference.  An unresolved reference without a default is copied byte for byte.

The quoting context is computed on the *author's* template: literal segments are fed to
the shell-quote scanner of ``prodigy_core.shellquote`` (single quotes literal; backslash
escapes outside quotes and inside double quotes; ``#`` comments; here-documents), and
every reference counts as opaque word text.  Values that need escaping are inserted so
that the shell receives exactly the value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from fnmatch import fnmatchcase
from typing import Final, TypeAlias

import attrs

from prodigy_core.json_values import (
    JSON,
    MISSING,
    PATH_RE,
    dumps_compact,
    parse_path,
    render_value,
    walk,
)
from prodigy_core.reprs import value_class
from prodigy_core.shellquote import QuoteScanner, QuoteState, escape_outside, shell_escape

__all__ = [
    "JSON",
    "Interpolated",
    "QuoteState",
    "Reference",
    "TemplateProblem",
    "Var",
    "check_template",
    "interpolate",
    "lookup",
    "references",
    "render_value",
    "render_var",
    "shell_quote_state",
]

@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class Var:
    """A variable's value and where it came from.

    ``trusted`` values are author-controlled (env, params, ids, counters) and go into shell
    text as written; untrusted values are data (captures, item, outputs, git lists) and are
    escaped in shell text (spec 03 §4.3).  ``git_list`` arrays render space-joined (§7.4).
    """

    value: JSON
    trusted: bool = True
    git_list: bool = False


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class Reference:
    """One syntactically valid ``${...}``, ``$NAME`` or ``$N`` occurrence in a template."""

    text: str
    path: str
    braced: bool
    modifiers: tuple[str, ...]
    default: str | None
    start: int
    end: int


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class TemplateProblem:
    """A load-time problem in a template: ``E1012`` (malformed) or ``W1003`` (filter syntax)."""

    code: str
    message: str
    offset: int


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class Interpolated:
    """Result of ``interpolate``: the text and the braced references left unresolved."""

    text: str
    unresolved: tuple[str, ...]


_FORMATS: Final[Mapping[str, str]] = {
    "json": "json",
    "lines": "lines",
    "newline": "lines",
    "csv": "csv",
    "comma": "csv",
    "space": "space",
}
_JOINERS: Final[Mapping[str, str]] = {"lines": "\n", "csv": ",", "space": " "}
_ESCAPES: Final = frozenset({"raw", "sh"})
_NAME_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DIGITS_RE: Final = re.compile(r"[0-9]+")
_POSITIONAL_RE: Final = re.compile(r"[0-9]+\Z")


def _is_glob(modifier: str) -> bool:
    return any(c in modifier for c in "*?[")


# --------------------------------------------------------------------------- scanning


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class _Literal:
    text: str  # what the output receives
    source: str  # what the template had (differs only for "$$")


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class _Malformed:
    text: str
    problem: TemplateProblem


_Segment: TypeAlias = _Literal | Reference | _Malformed


def _check_modifiers(mods: tuple[str, ...], text: str, start: int) -> TemplateProblem | None:
    globs = [m for m in mods if m not in _FORMATS and m not in _ESCAPES and _is_glob(m)]
    for m in mods:
        if m not in _FORMATS and m not in _ESCAPES and not _is_glob(m):
            return TemplateProblem(
                code="E1012", message=f"unknown modifier '{m}' in '{text}'", offset=start
            )
    if len(globs) > 1:
        return TemplateProblem(
            code="E1012", message=f"more than one glob modifier in '{text}'", offset=start
        )
    if sum(1 for m in mods if m in _FORMATS) > 1:
        return TemplateProblem(
            code="E1012", message=f"more than one format modifier in '{text}'", offset=start
        )
    if "raw" in mods and "sh" in mods:
        return TemplateProblem(
            code="E1012", message=f"modifiers 'raw' and 'sh' conflict in '{text}'", offset=start
        )
    return None


def _braced(text: str, start: int, close: int) -> Reference | _Malformed:
    """Parse ``text[start:close + 1]``, which is ``${`` … ``}``."""
    source = text[start : close + 1]
    content = text[start + 2 : close]
    if "|" in content.split(":-", 1)[0]:
        return _Malformed(
            text=source,
            problem=TemplateProblem(
                code="W1003",
                message=(
                    f"filters are not supported; this reference is left unchanged; "
                    f"use `${{x:-y}}` ('{source}')"
                ),
                offset=start,
            ),
        )
    m = PATH_RE.match(content)
    rest = content[m.end() :] if m else content
    default: str | None = None
    if ":-" in rest:
        rest, default = rest.split(":-", 1)
    if m is None or (rest and not rest.startswith(":")):
        return _Malformed(
            text=source,
            problem=TemplateProblem(
                code="E1012", message=f"malformed variable reference '{source}'", offset=start
            ),
        )
    mods = tuple(rest[1:].split(":")) if rest else ()
    problem = _check_modifiers(mods, source, start)
    if problem is not None:
        return _Malformed(text=source, problem=problem)
    return Reference(
        text=source,
        path=m.group(),
        braced=True,
        modifiers=mods,
        default=default,
        start=start,
        end=close + 1,
    )


def _scan(text: str) -> tuple[tuple[_Segment, ...], tuple[TemplateProblem, ...]]:
    segments: list[_Segment] = []
    problems: list[TemplateProblem] = []
    literal_start = 0
    i = 0

    def flush(upto: int) -> None:
        if upto > literal_start:
            chunk = text[literal_start:upto]
            segments.append(_Literal(text=chunk, source=chunk))

    while True:
        i = text.find("$", i)
        if i < 0 or i + 1 >= len(text):
            break
        nxt = text[i + 1]
        seg: _Segment | None = None
        if nxt == "$":
            flush(i)
            segments.append(_Literal(text="$", source="$$"))
            i += 2
            literal_start = i
            continue
        if nxt == "{":
            close = text.find("}", i + 2)
            if close < 0:
                problems.append(
                    TemplateProblem(code="E1012", message="unterminated '${'", offset=i)
                )
                i += 2
                continue
            seg = _braced(text, i, close)
            if isinstance(seg, _Malformed):
                problems.append(seg.problem)
        else:
            m = _NAME_RE.match(text, i + 1) or _DIGITS_RE.match(text, i + 1)
            if m is None:
                i += 1
                continue
            seg = Reference(
                text=text[i : m.end()],
                path=m.group(),
                braced=False,
                modifiers=(),
                default=None,
                start=i,
                end=m.end(),
            )
        flush(i)
        segments.append(seg)
        i = len(seg.text) + i
        literal_start = i
    flush(len(text))
    return tuple(segments), tuple(problems)


def check_template(text: str) -> tuple[TemplateProblem, ...]:
    """Every load-time problem of a template (E1012, W1003), in order of offset."""
    return _scan(text)[1]


def references(text: str) -> tuple[Reference, ...]:
    """Every well-formed reference in ``text``, in order (for phase checks such as W1004)."""
    return tuple(s for s in _scan(text)[0] if isinstance(s, Reference))


# --------------------------------------------------------------------------- resolution


def lookup(
    path: str, variables: Mapping[str, Var], environ: Mapping[str, str] | None = None
) -> Var | None:
    """Resolve ``path`` (spec 03 §2.1); ``None`` if it does not resolve.

    ``env.NAME`` resolves only from ``environ`` (never from ``variables``, so it cannot be
    shadowed); with ``environ=None`` it does not resolve.
    """
    if path.startswith("env."):
        name = path[4:]
        if environ is None or name not in environ:
            return None
        return Var(value=environ[name], trusted=True)
    exact = variables.get(path)
    if exact is not None:
        return exact
    parts = parse_path(path)
    if parts is None:
        return None
    for k in range(len(parts) - 1, 0, -1):
        base = variables.get(path[: parts[k - 1][0]])
        if base is None:
            continue
        value = walk(base.value, tuple(seg for _, seg in parts[k:]))
        if value is MISSING:
            return None
        return Var(value=value, trusted=base.trusted)
    return None


def _format_of(modifiers: Sequence[str]) -> str | None:
    return next((_FORMATS[m] for m in modifiers if m in _FORMATS), None)


def _apply_glob(value: JSON, modifiers: Sequence[str]) -> JSON:
    glob = next(
        (m for m in modifiers if m not in _FORMATS and m not in _ESCAPES and _is_glob(m)), None
    )
    if glob is not None and isinstance(value, list):
        return [e for e in value if isinstance(e, str) and fnmatchcase(e, glob)]
    return value


def render_var(var: Var, modifiers: Sequence[str] = ()) -> str:
    """Render a resolved variable with the modifiers of spec 03 §4.2 (no shell escaping).

    A glob on a value that is not an array leaves the value unchanged.
    """
    value = _apply_glob(var.value, modifiers)
    fmt = _format_of(modifiers)
    if fmt == "json":
        return dumps_compact(value)
    if fmt is not None and isinstance(value, list):
        return _JOINERS[fmt].join(render_value(e) for e in value)
    return render_value(value, git_list=var.git_list)


# --------------------------------------------------------------------------- shell quoting


def _shell_insert(var: Var, modifiers: Sequence[str], scanner: QuoteScanner) -> str:
    """Render and escape an untrusted value for the scanner's position.

    A git-context list rendered space-joined outside quotes becomes one quoted word per
    element, so ``ls ${step.files_added}`` still receives one argument per file.
    """
    value = _apply_glob(var.value, modifiers)
    if (
        scanner.plain
        and var.git_list
        and isinstance(value, list)
        and _format_of(modifiers) in {None, "space"}
    ):
        return " ".join(escape_outside(render_value(e)) for e in value)
    return shell_escape(render_var(var, modifiers), scanner)


def shell_quote_state(text: str, offset: int) -> QuoteState:
    """Quoting state of shell text ``text`` at ``offset`` (references count as opaque words).

    ``"none"``, ``"single"`` or ``"double"`` on a command line (inside a ``#`` comment the
    state is ``"none"``); ``"heredoc"`` / ``"heredoc_literal"`` in a here-document body
    whose delimiter is unquoted / quoted (inside a command substitution in a body, the
    state of the command text there).  An offset inside a reference gives the state at
    the reference's start.
    """
    scanner = QuoteScanner()
    pos = 0
    for seg in _scan(text)[0]:
        source = seg.source if isinstance(seg, _Literal) else seg.text
        if pos + len(source) > offset:
            if not isinstance(seg, Reference):
                scanner.feed(source[: max(0, offset - pos)])
            break
        if isinstance(seg, Reference):
            scanner.opaque(seg.text)
        else:
            scanner.feed(seg.text)
        pos += len(source)
    return scanner.quote_state()


# --------------------------------------------------------------------------- interpolation


def _resolve(
    ref: Reference,
    variables: Mapping[str, Var],
    environ: Mapping[str, str] | None,
    positional: Sequence[str],
) -> Var | None:
    if _POSITIONAL_RE.match(ref.path):
        index = int(ref.path)
        if 1 <= index <= len(positional):
            return Var(value=positional[index - 1], trusted=True)
        return None
    if not ref.braced:
        # $NAME has no dots; env.NAME is not reachable this way.
        return variables.get(ref.path)
    return lookup(ref.path, variables, environ)


def interpolate(
    text: str,
    variables: Mapping[str, Var],
    *,
    shell: bool = False,
    environ: Mapping[str, str] | None = None,
    positional: Sequence[str] = (),
) -> Interpolated:
    """Interpolate ``text`` in one left-to-right pass (spec 03 §1–§4).

    With ``shell=True`` untrusted values (and ``:sh`` values) are escaped for the quoting
    context of the insertion point, unless ``:raw`` is given (§4.3).  ``positional`` values
    are only passed while evaluating workflow-level env (§8.3).
    """
    out: list[str] = []
    unresolved: list[str] = []
    scanner = QuoteScanner()
    for seg in _scan(text)[0]:
        if isinstance(seg, _Literal):
            out.append(seg.text)
            scanner.feed(seg.text)
            continue
        if isinstance(seg, _Malformed):
            out.append(seg.text)
            scanner.feed(seg.text)
            continue
        var = _resolve(seg, variables, environ, positional)
        if var is None:
            if seg.default is not None:
                out.append(seg.default)
            else:
                out.append(seg.text)
                if seg.braced and seg.path not in unresolved:
                    unresolved.append(seg.path)
        else:
            escape = (not var.trusted or "sh" in seg.modifiers) and "raw" not in seg.modifiers
            if shell and escape:
                out.append(_shell_insert(var, seg.modifiers, scanner))
            else:
                out.append(render_var(var, seg.modifiers))
        scanner.opaque(out[-1])
    return Interpolated(text="".join(out), unresolved=tuple(unresolved))
