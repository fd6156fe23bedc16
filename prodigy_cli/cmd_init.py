"""``prodigy init``: install the bundled Claude command files (spec 08 §2.8).

The command files are package data (``prodigy_cli/templates/commands/*.md``), read with
``importlib.resources`` so a non-editable install works the same as a checkout.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, NamedTuple, TextIO

TEMPLATE_PACKAGE = "prodigy_cli"
TEMPLATE_DIR = ("templates", "commands")
COMMANDS_DIR = Path(".claude") / "commands"


class CommandTemplate(NamedTuple):
    name: str  # without ".md", as typed after the slash
    content: str

    @property
    def filename(self) -> str:
        return f"{self.name}.md"


def bundled_templates() -> list[CommandTemplate]:
    """Every bundled command file, sorted by name."""
    from importlib import resources

    folder = resources.files(TEMPLATE_PACKAGE).joinpath(*TEMPLATE_DIR)
    found = [CommandTemplate(entry.name.removesuffix(".md"), entry.read_text(encoding="utf-8"))
             for entry in folder.iterdir()
             if entry.is_file() and entry.name.endswith(".md")]
    return sorted(found, key=lambda t: t.name)


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """Register ``prodigy init`` on the subcommand parsers ``sub``."""
    p = sub.add_parser("init", parents=[common], help="install Prodigy's Claude command files",
                       description="Install Prodigy's Claude command files into "
                       ".claude/commands/ of a project (running `git init` if needed).")
    p.add_argument("-f", "--force", action="store_true", help="overwrite existing command files")
    p.add_argument("-c", "--commands", metavar="NAME,NAME",
                   help="install only these commands (default: all)")
    p.add_argument("-p", "--path", metavar="DIR",
                   help="project directory (default: current directory)")


def _select(templates: list[CommandTemplate], wanted: str | None,
            err: TextIO) -> list[CommandTemplate] | None:
    """The templates named in ``--commands`` (all when None); None after a usage error."""
    if wanted is None:
        return templates
    by_name = {t.name: t for t in templates}
    names = [n.strip().removeprefix("/").removesuffix(".md") for n in wanted.split(",")]
    names = [n for n in names if n]
    unknown = [n for n in names if n not in by_name]
    if not names or unknown:
        what = (f"unknown command(s): {', '.join(unknown)}" if unknown
                else "--commands needs at least one command name")
        err.write(f"error[E8001]: {what}\n"
                  f"  Available commands: {', '.join(by_name)}\n")
        return None
    return [by_name[n] for n in dict.fromkeys(names)]


def _is_git_repo(directory: Path) -> bool:
    import subprocess

    try:
        result = subprocess.run(["git", "rev-parse", "--is-inside-work-tree"], cwd=directory,
                                capture_output=True, text=True, check=False)
    except OSError:
        return False
    return result.returncode == 0 and result.stdout.strip() == "true"


def _git_init(directory: Path, out: TextIO, err: TextIO) -> bool:
    import subprocess

    try:
        result = subprocess.run(["git", "init"], cwd=directory, capture_output=True, text=True,
                                check=False)
    except OSError as exc:
        err.write(f"error[E8001]: cannot run git: {exc}\n")
        return False
    if result.returncode != 0:
        err.write(f"error[E8001]: git init failed in {directory}: "
                  f"{(result.stderr or result.stdout).strip()}\n")
        return False
    out.write(f"Initialized a git repository in {directory}\n")
    return True


def cmd_init(args: argparse.Namespace, *, out: TextIO, err: TextIO, cwd: str) -> int:
    templates = _select(bundled_templates(), args.commands, err)
    if templates is None:
        return 2
    directory = Path(cwd) / args.path if args.path else Path(cwd)
    directory = directory.resolve()
    if not directory.is_dir():
        err.write(f"error[E8001]: directory {directory} does not exist\n")
        return 2
    out.write(f"Initializing Prodigy commands in: {directory}\n")
    if not _is_git_repo(directory) and not _git_init(directory, out, err):
        return 1
    target = directory / COMMANDS_DIR
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        err.write(f"error[E8001]: cannot create {target}: {exc}\n")
        return 1
    installed = skipped = 0
    for template in templates:
        path = target / template.filename
        if path.exists() and not args.force:
            out.write(f"Command '{template.name}' already exists. Use --force to overwrite.\n")
            skipped += 1
            continue
        try:
            path.write_text(template.content, encoding="utf-8")
        except OSError as exc:
            err.write(f"error[E8001]: cannot write {path}: {exc}\n")
            return 1
        out.write(f"Installed command: {template.name}\n")
        installed += 1
    summary = f"Installed {installed} command(s)"
    if skipped:
        summary += f", kept {skipped} existing"
    out.write(f"{summary} in {target}\n")
    git = "git" if directory == Path(cwd).resolve() else f"git -C {directory}"
    out.write("Commit .claude/commands/ so that Prodigy worktrees (which contain only committed "
              "files) see the commands:\n"
              f"  {git} add .claude/commands && {git} commit -m 'Add Prodigy commands'\n")
    return 0
