"""Every package directory ends up in the distribution (a non-editable install)."""

from __future__ import annotations

import tomllib
from pathlib import Path

from setuptools import find_packages

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_directory_is_installed() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    include = config["tool"]["setuptools"]["packages"]["find"]["include"]
    shipped = set(find_packages(where=str(ROOT), include=include))
    on_disk = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for top in ("prodigy_core", "prodigy_effects", "prodigy_cli")
        for init in (ROOT / top).rglob("__init__.py")
    }
    assert on_disk, "no packages found"
    assert on_disk <= shipped, f"not packaged: {sorted(on_disk - shipped)}"


def test_command_templates_are_package_data() -> None:
    """`prodigy init` reads `prodigy_cli/templates/commands/*.md` with importlib.resources."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["prodigy_cli"]
    package = ROOT / "prodigy_cli"
    templates = sorted((package / "templates" / "commands").glob("*.md"))
    assert templates, "no bundled command templates"
    matched = {p for pattern in patterns for p in package.glob(pattern)}
    missing = [str(t.relative_to(ROOT)) for t in templates if t not in matched]
    assert not missing, f"not in [tool.setuptools.package-data] prodigy_cli: {missing}"


def test_the_version_in_the_code_is_the_distribution_version() -> None:
    """Event metadata and `prodigy --version` use ``prodigy_core.__version__`` (no
    metadata look-up at start-up); it must be what pyproject.toml installs."""
    import prodigy_cli
    import prodigy_core

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert prodigy_core.__version__ == config["project"]["version"]
    assert prodigy_core.__version__ == prodigy_cli.VERSION
