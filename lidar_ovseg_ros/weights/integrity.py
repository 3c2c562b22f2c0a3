"""Content digests: sha256 of files, and git tree ids of folders (to check pinned repository
content without trusting how GitHub compressed its archive)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

_BLOCK = 1 << 20


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_BLOCK), b""):
            h.update(block)
    return h.hexdigest()


def git_blob_sha1(path: str | Path) -> str:
    """The id git gives a file's content: sha1 of `blob <size>\\0<bytes>`."""
    size = os.path.getsize(path)
    h = hashlib.sha1(f"blob {size}\0".encode())
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_BLOCK), b""):
            h.update(block)
    return h.hexdigest()


def git_tree_sha1(folder: str | Path) -> str:
    """The git tree id of a folder of regular files and folders (mode 100644 / 40000), as
    `git ls-tree` shows it: equal ids mean equal names and bytes, everywhere below."""
    folder = Path(folder)
    entries = []
    for child in folder.iterdir():
        if child.is_symlink():
            raise ValueError(f"{child}: links have no place in a pinned tree")
        if child.is_dir():
            entries.append(
                (child.name + "/", b"40000 " + child.name.encode(), git_tree_sha1(child))
            )
        elif child.is_file():
            mode = b"100755 " if os.access(child, os.X_OK) else b"100644 "
            entries.append((child.name, mode + child.name.encode(), git_blob_sha1(child)))
    # git orders tree entries by name, a folder's name compared as if it ended with "/".
    entries.sort(key=lambda e: e[0].encode())
    body = b"".join(head + b"\0" + bytes.fromhex(sha) for _, head, sha in entries)
    return hashlib.sha1(b"tree %d\0" % len(body) + body).hexdigest()
