"""The import rules of DESIGN.md: the core is pure, imports only point right."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Modules that do I/O or read the world.  Checked against the top-level name.
FORBIDDEN_IN_CORE = {
    "trio", "subprocess", "os", "pathlib", "time", "datetime", "uuid", "random", "logging",
    "yaml", "cattrs", "socket", "tempfile", "shutil", "glob", "io", "signal", "threading",
    "asyncio", "multiprocessing", "sys", "secrets", "requests", "urllib", "http",
    "prodigy_effects", "prodigy_cli",
}


def _imports(path: Path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, node.lineno))
    return found


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("path", _modules("prodigy_core"), ids=lambda p: p.name)
def test_core_module_is_pure(path: Path) -> None:
    bad = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for name, line in _imports(path)
        if name.split(".")[0] in FORBIDDEN_IN_CORE
    ]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("path", _modules("prodigy_effects"), ids=lambda p: p.name)
def test_effects_does_not_import_cli(path: Path) -> None:
    bad = [name for name, _ in _imports(path) if name.split(".")[0] == "prodigy_cli"]
    assert not bad, f"{path.name} imports {bad}"


def test_the_walker_catches_a_forbidden_import(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("import os\nfrom datetime import datetime\nimport json\n")
    names = {name for name, _ in _imports(sample)}
    assert names & FORBIDDEN_IN_CORE == {"os", "datetime"}


def test_core_datetime_now_is_never_called() -> None:
    for path in _modules("prodigy_core"):
        assert "datetime.now" not in path.read_text(encoding="utf-8"), path.name


def test_version_imports_nothing_heavy() -> None:
    """`prodigy --version` stays fast: it must not import the core, trio or yaml (the
    bare ``prodigy_core`` package, which holds only ``__version__``, is allowed)."""
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "prodigy_cli",
                             "--version"], capture_output=True, text=True, check=True,
                            cwd=ROOT)
    assert result.stdout.startswith("prodigy ")
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines()
                if line.startswith("import time:")}
    heavy = {name for name in imported - {"prodigy_core"}
             if name.split(".")[0] in ("prodigy_core", "prodigy_effects", "trio", "yaml",
                                        "attrs", "cattrs")}
    assert len((ROOT / "prodigy_core" / "__init__.py").read_text().splitlines()) < 10
    assert not heavy, sorted(heavy)


def test_the_console_script_runs_exit_handlers_and_keeps_the_exit_code() -> None:
    """`entry` leaves with os._exit (no interpreter teardown): exit handlers still run,
    buffered output is written, the exit code is the command's."""
    import subprocess
    import sys

    script = ("import atexit, sys\n"
              "atexit.register(lambda: print('exit handler ran'))\n"
              "from prodigy_cli.main import entry\n"
              "sys.argv = ['prodigy'] + sys.argv[1:]\n"
              "print('buffered', end='')\n"
              "entry()\n")
    ok = subprocess.run([sys.executable, "-c", script, "--version"], capture_output=True,
                        text=True, cwd=ROOT)
    assert ok.returncode == 0
    assert ok.stdout.startswith("bufferedprodigy ") and "exit handler ran" in ok.stdout
    bad = subprocess.run([sys.executable, "-c", script, "run", "no-such-file.yml"],
                         capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 2 and "E1001" in bad.stderr and "exit handler ran" in bad.stdout
