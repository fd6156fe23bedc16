"""The work items of ``prodigy batch`` (spec 08 §2.3): files tracked at a commit that match a
pattern, as repository-relative paths.

``matching_files`` is what the CLI calls before it builds the batch workflow.  The module is
also the map ``input`` command of a batch whose item list is too long to be written into
the command itself (``python -P -m prodigy_effects.batch_items <commit> <pattern>``, run
in the session worktree): it prints the same list again, as one JSON array, from the same
commit, so both agree exactly.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from prodigy_core.globs import file_matches


def tracked_files(cwd: Path | str, rev: str = "HEAD") -> list[str] | None:
    """Files tracked at ``rev`` in the repository of ``cwd``: repository-relative paths,
    sorted (None: git failed)."""
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
    listed = subprocess.run(["git", "ls-tree", "-r", "-z", "--name-only", "--full-tree", rev],
                            cwd=cwd, capture_output=True, check=False, env=env)
    if listed.returncode != 0:
        return None
    names = listed.stdout.decode("utf-8", "surrogateescape").split("\0")
    return sorted(n for n in names if n)


def matching_files(cwd: Path | str, pattern: str, rev: str = "HEAD") -> list[str] | None:
    """The batch items: ``tracked_files`` that match ``pattern``, sorted."""
    files = tracked_files(cwd, rev)
    if files is None:
        return None
    return [f for f in files if file_matches(pattern, f)]


def main(argv: Sequence[str] | None = None) -> int:
    """``python -P -m prodigy_effects.batch_items COMMIT PATTERN``: print the items as JSON."""
    words = list(sys.argv[1:] if argv is None else argv)
    if len(words) != 2:
        sys.stderr.write("usage: python -P -m prodigy_effects.batch_items COMMIT PATTERN\n")
        return 2
    found = matching_files(Path.cwd(), words[1], words[0])
    if found is None:
        sys.stderr.write(f"cannot list the files of commit {words[0]}\n")
        return 1
    sys.stdout.write(json.dumps(found) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
