"""Developer sessions: `nox -s tests`, `nox -s lint`, `nox -s bench`."""

import nox

nox.options.sessions = ["lint", "tests"]


@nox.session
def tests(session: nox.Session) -> None:
    session.install("-e", ".[test]")
    session.run("python", "-m", "pytest", "-q", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    session.install("-e", ".[test]")
    session.run("ruff", "check", "prodigy_core", "prodigy_effects", "prodigy_cli", "tests",
                "benchmarks")
    session.run("mypy", "prodigy_core")


@nox.session
def bench(session: nox.Session) -> None:
    # .[test]: claude_overhead.py imports the fake Anthropic API of tests/fakeapi (uses pytest)
    session.install("-e", ".[test]")
    session.run("python", "benchmarks/step_overhead.py")
    session.run("python", "benchmarks/claude_overhead.py")
