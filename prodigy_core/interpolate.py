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
a small shell-quote scanner (single quotes literal; backslash escapes outside quotes and
inside double quotes; ``#`` comments; here-documents), and every reference counts as
opaque word text.  Values that need escaping are inserted so that the shell receives
exactly the value.

Here-documents: after ``<<WORD`` / ``<< WORD`` / ``<<-WORD`` on a command line (not in
quotes, comments or arithmetic; ``<<<`` is a here-string) the bodies start at the next
line, in operator order, each ending at the line equal to its delimiter (for ``<<-``
after removing leading tabs).  In a body whose delimiter is unquoted a value gets ``\\``,
``$`` and backquote backslash-escaped (quotes stay literal); in a body whose delimiter has
any quoted part (``'EOF'``, ``"EOF"``, ``E"OF"``, ``\\EOF``) it is inserted as is.
Inside ``$(…)`` or backquotes in an unquoted body the text is command text again, tracked
by a nested scanner.  Known limitations, left to the author: a value line equal to the
delimiter ends the body early and the value's following lines then run as commands (an
injection the engine does not prevent, so pick a delimiter the data cannot contain), and
in a ``<<-`` body the shell removes tabs at the start of the value's lines.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from fnmatch import fnmatchcase
from typing import Final, Literal, TypeAlias

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

QuoteState: TypeAlias = Literal["none", "single", "double", "heredoc", "heredoc_literal"]


@attrs.frozen(kw_only=True)
class Var:
    """A variable's value and where it came from.

    ``trusted`` values are author-controlled (env, params, ids, counters) and go into shell
    text as written; untrusted values are data (captures, item, outputs, git lists) and are
    escaped in shell text (spec 03 §4.3).  ``git_list`` arrays render space-joined (§7.4).
    """

    value: JSON
    trusted: bool = True
    git_list: bool = False


@attrs.frozen(kw_only=True)
class Reference:
    """One syntactically valid ``${...}``, ``$NAME`` or ``$N`` occurrence in a template."""

    text: str
    path: str
    braced: bool
    modifiers: tuple[str, ...]
    default: str | None
    start: int
    end: int


@attrs.frozen(kw_only=True)
class TemplateProblem:
    """A load-time problem in a template: ``E1012`` (malformed) or ``W1003`` (filter syntax)."""

    code: str
    message: str
    offset: int


@attrs.frozen(kw_only=True)
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


@attrs.frozen(kw_only=True)
class _Literal:
    text: str  # what the output receives
    source: str  # what the template had (differs only for "$$")


@attrs.frozen(kw_only=True)
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

_SAFE_RE: Final = re.compile(r"[\w@%+=:,./-]*")
_WORD_BREAK: Final = frozenset(" \t\n;&|()<>")
_HEREDOC_SPECIAL_RE: Final = re.compile(r"([\\$`])")

_CommandQuote: TypeAlias = Literal["none", "single", "double"]


@attrs.frozen(kw_only=True)
class _Heredoc:
    """A here-document whose operator was read: its delimiter and how its body is read."""

    delimiter: str
    quoted: bool  # any part of the delimiter word was quoted: the body is literal
    strip_tabs: bool  # ``<<-``: leading tabs are removed from body lines


@attrs.define
class _DelimiterWord:
    """The delimiter word after ``<<`` / ``<<-`` while it is being read."""

    strip_tabs: bool
    text: str = ""
    quoted: bool = False
    started: bool = False


@attrs.define
class _QuoteScanner:
    """Tracks the shell quoting state while the author's literal text is fed in.

    Command text: single quotes, double quotes, backslashes, ``#`` comments, arithmetic
    ``$((…))`` / ``((…))`` (where ``<<`` is a shift) and here-document operators
    (``<<WORD``, ``<< WORD``, ``<<-WORD``; ``<<<`` is a here-string).  After the unquoted
    newline that ends the command line, the bodies of the pending here-documents are read
    in order, each up to the line equal to its delimiter (for ``<<-`` after removing
    leading tabs).  In a body whose delimiter is unquoted, backslash-newline joins lines
    and ``$(…)`` / backquoted command substitutions are tracked with a nested scanner, so
    a value inserted inside one is escaped for the command text there.
    """

    state: _CommandQuote = "none"
    escape: bool = False
    comment: bool = False
    word_start: bool = True
    # here-document operator and delimiter word
    lt_run: int = 0  # consecutive unquoted '<' just seen
    delimiter: _DelimiterWord | None = None
    pending: list[_Heredoc] = attrs.field(factory=list)
    # parentheses (command substitution end) and arithmetic (no here-documents inside)
    parens: int = 0
    arith_floor: int | None = None
    history: str = ""  # last two command characters
    history_word_start: bool = True  # word_start before the last command character
    # here-document body
    body: _Heredoc | None = None
    line: str = ""  # current logical body line (continuations joined)
    body_escape: bool = False  # unquoted body: a backslash is pending
    dollar: bool = False  # unquoted body: the last character was an unescaped '$'
    sub: _QuoteScanner | None = None  # command substitution inside an unquoted body
    sub_backtick: bool = False

    # ------------------------------------------------------------------ feeding

    def feed(self, text: str) -> None:
        for ch in text:
            self._char(ch)

    def opaque(self, inserted: str | None = None) -> None:
        """A reference was inserted as ``inserted``.

        In command text it is opaque word text and consumes a pending escape.  In a
        here-document delimiter it is part of the word, and in a body it counts towards
        the current line (a line equal to the delimiter ends the body).
        """
        if self.body is not None:
            if inserted:
                self._opaque_body(inserted)
            return
        if inserted and (self.delimiter is not None or self.lt_run == 2):
            self.feed(inserted)
            return
        self.escape = False
        self.word_start = False
        self.lt_run = 0
        self.history = "x"

    def _opaque_body(self, inserted: str) -> None:
        sub = self.sub
        for k, ch in enumerate(inserted):
            if self.body is None:
                self.feed(inserted[k:])
                return
            self._body_char(ch, forward=False)
        if sub is not None and self.sub is sub:
            sub.opaque(inserted)

    def quote_state(self) -> QuoteState:
        if self.body is not None:
            if self.sub is not None:
                return self.sub.quote_state()
            return "heredoc_literal" if self.body.quoted else "heredoc"
        return "none" if self.comment else self.state

    @property
    def plain(self) -> bool:
        """Outside quotes on a command line, with nothing pending."""
        return (
            self.body is None
            and self.delimiter is None
            and self.lt_run != 2
            and self.state == "none"
            and not self.comment
            and not self.escape
        )

    # ------------------------------------------------------------------ command text

    def _char(self, ch: str) -> bool:
        """Feed one character; ``True`` if it is a ``)`` that closes no ``(`` of ours."""
        if self.body is not None:
            self._body_char(ch)
            return False
        if self.lt_run == 2 and not self.comment:
            self.lt_run = 0
            self.delimiter = _DelimiterWord(strip_tabs=ch == "-")
            if ch == "-":
                return False
        if self.delimiter is not None and self._delimiter_char(ch):
            return False
        if self.comment:
            if ch == "\n":
                self.comment = False
                self.word_start = True
                self._start_body()
        elif self.escape:
            self.escape = False
            self.word_start = False
            self.lt_run = 0
        elif self.state == "single":
            if ch == "'":
                self.state = "none"
        elif self.state == "double":
            if ch == "\\":
                self.escape = True
            elif ch == '"':
                self.state = "none"
        elif ch == "\\":
            self.escape = True
            self.word_start = False
            self.lt_run = 0
        elif ch in "'\"":
            self.state = "single" if ch == "'" else "double"
            self.word_start = False
            self.lt_run = 0
        elif ch == "#" and self.word_start:
            self.comment = True
        else:
            return self._command_char(ch)
        return False

    def _command_char(self, ch: str) -> bool:
        closing = False
        in_arith = self.arith_floor is not None
        if ch == "<" and not in_arith:
            self.lt_run += 1
        else:
            self.lt_run = 0
        if ch == "(":
            if (
                not in_arith
                and self.history.endswith("(")
                and (self.history == "$(" or self.history_word_start)
            ):
                self.arith_floor = self.parens - 1
            self.parens += 1
        elif ch == ")":
            if self.parens == 0:
                closing = True
            else:
                self.parens -= 1
            if self.arith_floor is not None and self.parens <= self.arith_floor:
                self.arith_floor = None
        self.history_word_start = self.word_start
        self.history = (self.history + ch)[-2:]
        self.word_start = ch in _WORD_BREAK
        if ch == "\n":
            self._start_body()
        return closing

    def _delimiter_char(self, ch: str) -> bool:
        """Feed one character of a delimiter word; ``False`` once the word has ended."""
        word = self.delimiter
        assert word is not None
        if self.state == "single":
            if ch == "'":
                self.state = "none"
            else:
                word.text += ch
        elif self.state == "double":
            if self.escape:
                self.escape = False
                if ch != "\n":
                    word.text += ch if ch in '\\$`"' else "\\" + ch
            elif ch == "\\":
                self.escape = True
            elif ch == '"':
                self.state = "none"
            else:
                word.text += ch
        elif self.escape:
            self.escape = False
            if ch != "\n":
                word.text += ch
                word.quoted = word.started = True
        elif ch == "\\":
            self.escape = True
        elif ch in "'\"":
            self.state = "single" if ch == "'" else "double"
            word.quoted = word.started = True
        elif ch in " \t" and not word.started:
            pass
        elif ch in _WORD_BREAK:
            if word.started:
                self.pending.append(
                    _Heredoc(delimiter=word.text, quoted=word.quoted, strip_tabs=word.strip_tabs)
                )
            self.delimiter = None
            return False
        else:
            word.text += ch
            word.started = True
        self.word_start = False
        return True

    def _start_body(self) -> None:
        if self.pending:
            self.body = self.pending.pop(0)
            self.line = ""
            self.body_escape = False
            self.dollar = False
            self.sub = None

    # ------------------------------------------------------------------ here-document bodies

    def _body_char(self, ch: str, *, forward: bool = True) -> None:
        body = self.body
        assert body is not None
        if body.quoted:
            if ch == "\n":
                self._end_line()
            else:
                self.line += ch
            return
        if self.body_escape:
            self.body_escape = False
            if ch == "\n":  # line continuation: removed before anything else happens
                self.line = self.line[:-1]
                return
            self.line += ch
            if forward:
                self._forward(ch, escaped=True)
            return
        if ch == "\\":
            self.body_escape = True
            self.line += ch
            return
        if ch == "\n":
            if self._end_line():
                return
        else:
            self.line += ch
        if forward:
            self._forward(ch, escaped=False)

    def _end_line(self) -> bool:
        """A body line ended; ``True`` if it was the delimiter line."""
        body = self.body
        assert body is not None
        line, self.line = self.line, ""
        if (line.lstrip("\t") if body.strip_tabs else line) != body.delimiter:
            return False
        self.body = None
        self.sub = None
        self.body_escape = False
        self.dollar = False
        self.word_start = True
        self.history = ""
        self._start_body()
        return True

    def _forward(self, ch: str, *, escaped: bool) -> None:
        """Pass a body character to the command substitution, or look for one starting."""
        sub = self.sub
        if sub is None:
            if not escaped and ch == "(" and self.dollar:
                self.sub, self.sub_backtick = _QuoteScanner(history="$("), False
            elif not escaped and ch == "`":
                self.sub, self.sub_backtick = _QuoteScanner(), True
            self.dollar = not escaped and ch == "$"
            return
        if self.sub_backtick:
            if not escaped and ch == "`":
                self.sub = None
                return
            text = "\\" + ch if escaped and ch not in "\\$`" else ch
        else:
            text = "\\" + ch if escaped else ch
        for c in text:
            if sub._char(c) and not self.sub_backtick:
                self.sub = None
                return


def _single_quote_body(value: str) -> str:
    return value.replace("'", "'\\''")


def _escape_outside(value: str) -> str:
    if _SAFE_RE.fullmatch(value):
        return value
    return "'" + _single_quote_body(value) + "'"


def _escape_double(value: str) -> str:
    return re.sub(r'([\\$`"])', r"\\\1", value)


def _escape_heredoc(value: str) -> str:
    # Also the encoding for text inside backquotes: \\ \$ \` are the only escapes there.
    return _HEREDOC_SPECIAL_RE.sub(r"\\\1", value)


def _defuse_delimiter(value: str, body: _Heredoc) -> str:
    """Keep a data value from ending the here-document it is inserted into.

    A line of the value equal to the delimiter would end the body early and the rest of
    the value would run as commands.  Such a line gets a leading space (the only
    change ever made to a value's bytes): the shell then keeps it as body text.
    """
    lines = value.split("\n")
    changed = False
    for i, line in enumerate(lines):
        probe = line.lstrip("\t") if body.strip_tabs else line
        if probe == body.delimiter:
            lines[i] = " " + line
            changed = True
    return "\n".join(lines) if changed else value


def _shell_escape(value: str, scanner: _QuoteScanner) -> str:
    """Escape ``value`` so the shell receives exactly it at the scanner's position.

    In a here-document body with an unquoted delimiter ``\\``, ``$`` and backquote are
    backslash-escaped (quotes are literal there); in a body with a quoted delimiter the
    value is inserted as is.  Limitations (see the module docstring): a line of the value
    equal to the delimiter ends the body early, and in a ``<<-`` body tabs at the start
    of a line of the value are removed by the shell.
    """
    if scanner.body is not None:
        value = _defuse_delimiter(value, scanner.body)
        if scanner.body.quoted:
            return value
        sub = scanner.sub
        if sub is not None:
            prefix = ""
            if scanner.body_escape:
                # The author's pending backslash reaches the substitution as a backslash;
                # inside backquotes it needs a partner to mean one.
                sub.feed("\\")
                prefix = "\\" if scanner.sub_backtick else ""
            inner = _shell_escape(value, sub)
            return prefix + (_escape_heredoc(inner) if scanner.sub_backtick else inner)
        if scanner.body_escape and value and value[0] in "\\$`":
            return value[0] + _escape_heredoc(value[1:])
        return _escape_heredoc(value)
    if scanner.comment:
        return value.replace("\n", " ")
    if scanner.state == "single":
        return _single_quote_body(value)
    if scanner.state == "double":
        if scanner.escape and value and value[0] in '\\$`"':
            # The author's pending backslash escapes the first character for us.
            return value[0] + _escape_double(value[1:])
        return _escape_double(value)
    if scanner.escape and value:
        # The author's pending backslash makes the first character literal.
        return value[0] + _escape_outside(value[1:])
    return _escape_outside(value)


def _shell_insert(var: Var, modifiers: Sequence[str], scanner: _QuoteScanner) -> str:
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
        return " ".join(_escape_outside(render_value(e)) for e in value)
    return _shell_escape(render_var(var, modifiers), scanner)


def shell_quote_state(text: str, offset: int) -> QuoteState:
    """Quoting state of shell text ``text`` at ``offset`` (references count as opaque words).

    ``"none"``, ``"single"`` or ``"double"`` on a command line (inside a ``#`` comment the
    state is ``"none"``); ``"heredoc"`` / ``"heredoc_literal"`` in a here-document body
    whose delimiter is unquoted / quoted (inside a command substitution in a body, the
    state of the command text there).  An offset inside a reference gives the state at
    the reference's start.
    """
    scanner = _QuoteScanner()
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
    scanner = _QuoteScanner()
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
