"""`prodigy batch` patterns (spec 08 §2.3): `prodigy_core.globs.file_matches`."""

from __future__ import annotations

import pytest

from prodigy_core.globs import file_matches


@pytest.mark.parametrize(("pattern", "path", "expected"), [
    ("*.py", "a.py", True),
    ("*.py", "sub/deep/b.py", True),          # no `/`: the file name in any directory
    ("*.py", "a.pyc", False),
    ("*.py", "py.d/readme", False),
    ("b?.md", "docs/b1.md", True),
    ("[ab].txt", "x/b.txt", True),
    ("[!ab].txt", "x/b.txt", False),
    ("src/*.ts", "src/x.ts", True),
    ("src/*.ts", "src/deep/x.ts", False),     # `*` does not cross `/`
    ("src/**/*.ts", "src/x.ts", True),        # `**/` also matches no directory
    ("src/**/*.ts", "src/a/b/c/x.ts", True),
    ("src/**/*.ts", "lib/src/x.ts", False),   # with `/`: the whole relative path
    ("src/*", "src/lib/x.ts", False),         # no directory rule
    ("src", "src/x.ts", False),
    ("./src/*.ts", "src/x.ts", True),
    ("**/*.ts", "x.ts", True),
    ("", "x", False),
])
def test_file_matches(pattern: str, path: str, expected: bool) -> None:
    assert file_matches(pattern, path) is expected
