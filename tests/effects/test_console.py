"""The terminal console: levels, a live status line on terminals only, masking."""

from __future__ import annotations

import io

from prodigy_core.effects import Print
from prodigy_effects.production import TerminalConsole


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def show(console: TerminalConsole, *prints: Print) -> None:
    for p in prints:
        console.show(p)


def test_status_line_is_rewritten_in_place_on_a_terminal() -> None:
    out = Tty()
    console = TerminalConsole(out=out, err=out)
    show(console, Print(text="claude: 1 turns", level="status"),
         Print(text="claude: 2 turns", level="status"), Print(text="done"))
    assert out.getvalue() == ("\r\x1b[Kclaude: 1 turns\r\x1b[Kclaude: 2 turns\r\x1b[Kdone\n")


def test_no_control_characters_without_a_terminal() -> None:
    out = io.StringIO()
    console = TerminalConsole(out=out, err=out)
    show(console, Print(text="claude: 1 turns", level="status"), Print(text="done"))
    assert out.getvalue() == "done\n"


def test_levels_follow_verbosity() -> None:
    prints = (Print(text="tail", level="verbose"), Print(text="tool", level="detail"),
              Print(text="raw", level="debug"), Print(text="info"),
              Print(text="result", level="result"))
    seen = {}
    for verbosity, quiet in ((0, False), (1, False), (2, False), (0, True)):
        out = io.StringIO()
        show(TerminalConsole(out=out, err=out, verbosity=verbosity, quiet=quiet), *prints)
        seen[(verbosity, quiet)] = out.getvalue().split()
    assert seen[(0, False)] == ["tail", "info", "result"]
    assert seen[(1, False)] == ["tool", "info", "result"]
    assert seen[(2, False)] == ["tool", "raw", "info", "result"]
    assert seen[(0, True)] == ["result"]


def test_secrets_are_masked() -> None:
    out = io.StringIO()
    console = TerminalConsole(out=out, err=out, mask=lambda t: t.replace("hunter22", "***"))
    console.show(Print(text="password hunter22"))
    assert out.getvalue() == "password ***\n"
