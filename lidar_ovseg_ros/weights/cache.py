"""Where models live: one cache folder, one sub-folder and manifest per model.

Root: the `cache_dir` argument, else `$LIDAR_OVSEG_CACHE`, else `$XDG_CACHE_HOME/lidar_ovseg_ros`,
else `~/.cache/lidar_ovseg_ros`. Layout:

    <root>/models/<name>/...                 the installed file(s)
    <root>/models/<name>/.manifest.json      url, sha256 of the download and of every file
    <root>/downloads/<name>/<file>.part      an interrupted download, resumed by the next fetch
    <root>/tmp/                              unpacking in progress (renamed into models/ when done)

A model counts as cached only when its manifest exists; the manifest is written inside the
folder before the folder is renamed into place, so a model is either wholly there or absent.
Hugging Face entries live in the Hugging Face cache instead (see `hub`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .catalog import ModelEntry

ENV_CACHE = "LIDAR_OVSEG_CACHE"
MANIFEST = ".manifest.json"


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """The cache folder (see the module docstring for the order of precedence)."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    env = os.environ.get(ENV_CACHE, "").strip()
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "lidar_ovseg_ros"


@dataclass(frozen=True)
class CacheLayout:
    root: Path

    @classmethod
    def at(cls, cache_dir: str | Path | None = None) -> CacheLayout:
        return cls(cache_root(cache_dir))

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def downloads(self) -> Path:
        return self.root / "downloads"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    def install_dir(self, name: str) -> Path:
        return self.models / name

    def download_path(self, entry: ModelEntry) -> Path:
        return self.downloads / entry.name / str(entry.filename)

    def manifest(self, name: str) -> dict[str, Any] | None:
        try:
            data = json.loads((self.install_dir(name) / MANIFEST).read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None


def find_target(entry: ModelEntry, folder: Path) -> Path:
    """The one path of an installed model the package uses (its checkpoint or image folder)."""
    if entry.target is None:
        path = folder / str(entry.filename)
        if not path.exists():
            raise FileNotFoundError(f"model '{entry.name}': {path} is missing")
        return path
    if any(ch in entry.target for ch in "*?["):
        found = sorted(p for p in folder.glob(entry.target) if p.name != MANIFEST)
    else:
        found = [folder / entry.target] if (folder / entry.target).exists() else []
    if len(found) != 1:
        if found:
            what = ", ".join(str(p.relative_to(folder)) for p in found)
        else:
            files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
            what = "nothing; it holds " + (", ".join(files[:8]) or "no files")
            what += " ..." if len(files) > 8 else ""
        raise FileNotFoundError(
            f"model '{entry.name}': expected exactly one '{entry.target}' in {folder}, found {what}"
        )
    return found[0]
