"""The shell quote scanner: the quoting context of a point in shell text (spec 03 §4.3).

Theory of operation
-------------------
``QuoteScanner`` is fed the author's shell text one character at a time (inserted
values are fed with ``opaque``) and tracks where the next character would land.  On a
command line the state is ``none``, ``single`` or ``double`` quotes, plus a pending
backslash (``escape``), a ``#`` comment, and the nesting of parentheses and arithmetic
``$((…))`` / ``((…))`` (where ``<<`` is a shift, not a here-document).

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

``shell_escape`` turns a value into the text that makes the shell receive exactly that
value at the scanner's position: single-quoted outside quotes (unless it is a safe word),
with each ``'`` written as ``'\\''`` inside single quotes, backslash-escaped inside
double quotes and in a body whose delimiter is unquoted, and as is in a body whose
delimiter is quoted; in a ``#`` comment its newlines become spaces.
"""

from __future__ import annotations

import re
from typing import Final, Literal, TypeAlias

import attrs

from prodigy_core.reprs import shows_fields, value_class

__all__ = ["QuoteScanner", "QuoteState", "escape_outside", "shell_escape"]

QuoteState: TypeAlias = Literal["none", "single", "double", "heredoc", "heredoc_literal"]


_SAFE_RE: Final = re.compile(r"[\w@%+=:,./-]*")
_WORD_BREAK: Final = frozenset(" \t\n;&|()<>")
_HEREDOC_SPECIAL_RE: Final = re.compile(r"([\\$`])")

_CommandQuote: TypeAlias = Literal["none", "single", "double"]


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class _Heredoc:
    """A here-document whose operator was read: its delimiter and how its body is read."""

    delimiter: str
    quoted: bool  # any part of the delimiter word was quoted: the body is literal
    strip_tabs: bool  # ``<<-``: leading tabs are removed from body lines


@shows_fields
@attrs.define(repr=False)
class _DelimiterWord:
    """The delimiter word after ``<<`` / ``<<-`` while it is being read."""

    strip_tabs: bool
    text: str = ""
    quoted: bool = False
    started: bool = False


@shows_fields
@attrs.define(repr=False)
class QuoteScanner:
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
    sub: QuoteScanner | None = None  # command substitution inside an unquoted body
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
                self.sub, self.sub_backtick = QuoteScanner(history="$("), False
            elif not escaped and ch == "`":
                self.sub, self.sub_backtick = QuoteScanner(), True
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


def escape_outside(value: str) -> str:
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


def shell_escape(value: str, scanner: QuoteScanner) -> str:
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
            inner = shell_escape(value, sub)
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
        return value[0] + escape_outside(value[1:])
    return escape_outside(value)
