"""Reading git's loose objects and refs directly, for the questions asked of every agent.

A MapReduce job asks git the same small questions around every agent: which commits did
the agent make on its branch, and which files do they change.  The answers are in the
objects the agent has just written, which git keeps as loose files
(``objects/xx/yyyy…``, zlib-compressed ``<type> <size>\\0<body>``) until the next
``gc``.  Reading those costs a fraction of a millisecond; a ``git log`` process costs a
few.  Everything here answers only when the files make the answer certain and returns
``None`` otherwise — a packed object or ref, an alternate object store, a merge commit,
a rename that git would detect, more work than a few hundred objects — and the caller
then asks git as before.  Nothing here writes.
"""

from __future__ import annotations

import os
import re
import zlib

_SHA = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")
TREE_MODE = b"40000"
GITLINK_MODE = b"160000"
MAX_COMMITS = 100  # a longer branch is git's to walk
MAX_OBJECTS = 400  # a bigger tree difference too

Entry = tuple[bytes, str]  # (mode, object id)


class _Budget:
    """Objects still allowed to be read for one answer."""

    def __init__(self, count: int) -> None:
        self.left = count

    def spend(self) -> bool:
        self.left -= 1
        return self.left >= 0


def read_object(objects_dir: str, sha: str) -> tuple[bytes, bytes] | None:
    """The type and body of a loose object (None: not loose, or not readable)."""
    if not _SHA.match(sha):
        return None
    try:
        with open(os.path.join(objects_dir, sha[:2], sha[2:]), "rb") as handle:
            raw = zlib.decompress(handle.read())
    except (OSError, zlib.error):
        return None
    header, sep, body = raw.partition(b"\0")
    kind, _, size = header.partition(b" ")
    if not sep or not size.isdigit() or int(size) != len(body):
        return None
    return kind, body


def commit_fields(objects_dir: str, sha: str) -> tuple[str, tuple[str, ...]] | None:
    """The tree and the parents of a loose commit."""
    found = read_object(objects_dir, sha)
    if found is None or found[0] != b"commit":
        return None
    tree = ""
    parents: list[str] = []
    for line in found[1].split(b"\n"):
        if not line:
            break  # the end of the headers
        if line.startswith(b"tree "):
            tree = line[5:].decode("ascii", "replace")
        elif line.startswith(b"parent "):
            parents.append(line[7:].decode("ascii", "replace"))
    return (tree, tuple(parents)) if _SHA.match(tree) else None


def tree_entries(objects_dir: str, sha: str) -> dict[bytes, Entry] | None:
    """The entries of a loose tree: name → (mode, object id)."""
    found = read_object(objects_dir, sha)
    if found is None or found[0] != b"tree":
        return None
    body, width = found[1], len(sha) // 2
    entries: dict[bytes, Entry] = {}
    at = 0
    try:
        while at < len(body):
            space = body.index(b" ", at)
            nul = body.index(b"\0", space)
            end = nul + 1 + width
            if end > len(body):
                return None
            entries[body[space + 1:nul]] = (body[at:space], body[nul + 1:end].hex())
            at = end
    except ValueError:
        return None
    return entries


def _all_files(objects_dir: str, sha: str, prefix: bytes, out: list[bytes],
               budget: _Budget) -> bool:
    """Every path below a tree (for a directory added or removed as a whole)."""
    if not budget.spend():
        return False
    entries = tree_entries(objects_dir, sha)
    if entries is None:
        return False
    for name, (mode, child) in entries.items():
        if mode == TREE_MODE:
            if not _all_files(objects_dir, child, prefix + name + b"/", out, budget):
                return False
        else:
            out.append(prefix + name)
    return True


def _diff(objects_dir: str, old: str, new: str, prefix: bytes,
          changes: dict[str, list[bytes]], budget: _Budget) -> bool:
    if not budget.spend():
        return False
    before, after = tree_entries(objects_dir, old), tree_entries(objects_dir, new)
    if before is None or after is None:
        return False
    for name in before.keys() | after.keys():
        was, now = before.get(name), after.get(name)
        if was == now:
            continue
        path = prefix + name
        if was is None or now is None:
            entry = now if now is not None else was
            assert entry is not None  # the name is in one of the two trees
            mode, sha = entry
            if mode == GITLINK_MODE:
                return False  # a submodule: git may ignore it (diff.ignoreSubmodules)
            into = changes["added" if was is None else "deleted"]
            if mode == TREE_MODE:
                if not _all_files(objects_dir, sha, path + b"/", into, budget):
                    return False
            else:
                into.append(path)
        elif (was[0] == TREE_MODE) != (now[0] == TREE_MODE):
            return False  # a file became a directory or back: git's rename rules apply
        elif was[0] == TREE_MODE:
            if not _diff(objects_dir, was[1], now[1], path + b"/", changes, budget):
                return False
        elif GITLINK_MODE in (was[0], now[0]):
            return False  # a submodule: git may ignore it (diff.ignoreSubmodules)
        else:
            changes["modified"].append(path)
    return True


def changed_paths(objects_dir: str, old_tree: str, new_tree: str) -> tuple[str, ...] | None:
    """The paths ``git diff --name-only`` lists between two loose trees, sorted.

    None when a file was deleted and another added: git may pair them as a rename and
    list only the new name, which is git's to decide."""
    changes: dict[str, list[bytes]] = {"added": [], "deleted": [], "modified": []}
    if old_tree != new_tree and not _diff(objects_dir, old_tree, new_tree, b"", changes,
                                          _Budget(MAX_OBJECTS)):
        return None
    if changes["added"] and changes["deleted"]:
        return None
    paths = changes["added"] + changes["deleted"] + changes["modified"]
    return tuple(sorted(p.decode("utf-8", "surrogateescape") for p in paths))


def reaches(objects_dir: str, start: str, wanted: str, limit: int = 50) -> bool:
    """Is commit ``wanted`` ``start`` or one of its ancestors among the first ``limit``
    loose commits of ``start``'s history (False: not found there — ask git)?"""
    todo, seen = [start], set()
    while todo and len(seen) < limit:
        sha = todo.pop()
        if sha == wanted:
            return True
        if sha in seen:
            continue
        seen.add(sha)
        fields = commit_fields(objects_dir, sha)
        if fields is not None:
            todo.extend(fields[1])
    return False


def loose_ref(common_dir: str, ref: str) -> str | None:
    """The commit a loose ref file names (a packed ref, a symbolic one: None)."""
    try:
        with open(os.path.join(common_dir, *ref.split("/")), encoding="utf-8") as handle:
            sha = handle.readline().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return sha if _SHA.match(sha) else None


def branch_work(common_dir: str, base: str, branch: str
                ) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
    """The commits of ``branch`` since ``base`` (oldest first) and the files they change,
    as ``git log base..branch`` and ``git diff --name-only base branch`` tell — when the
    branch is a straight line of loose commits on ``base``."""
    objects_dir = os.path.join(common_dir, "objects")
    tip = loose_ref(common_dir, f"refs/heads/{branch}")
    if tip is None or not _SHA.match(base) or len(tip) != len(base):
        return None
    chain: list[str] = []
    at = tip
    tip_tree = ""
    while at != base:
        if len(chain) >= MAX_COMMITS:
            return None
        fields = commit_fields(objects_dir, at)
        if fields is None or len(fields[1]) != 1:
            return None  # not loose, a merge, or a root commit: git's to walk
        if not chain:
            tip_tree = fields[0]
        chain.append(at)
        at = fields[1][0]
    if not chain:
        return (), ()
    base_fields = commit_fields(objects_dir, base)
    if base_fields is None:
        return None
    files = changed_paths(objects_dir, base_fields[0], tip_tree)
    if files is None:
        return None
    return tuple(reversed(chain)), files
