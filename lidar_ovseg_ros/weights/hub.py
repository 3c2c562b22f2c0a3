"""Hugging Face entries: fetched with `snapshot_download` into the Hugging Face cache (it honours
`HF_HOME`, `HF_HUB_CACHE` and `HF_HUB_OFFLINE`), only the safetensors weights and configs."""

from __future__ import annotations

import os
import re
from pathlib import Path

from .catalog import ModelEntry
from .integrity import sha256_file

_SHA256_NAME = re.compile(r"^[0-9a-f]{64}$")


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _hub_cache() -> str | None:
    """`HF_HUB_CACHE` as set now (huggingface_hub reads it once, at import); None: its default."""
    return os.environ.get("HF_HUB_CACHE") or None


def _complete(entry: ModelEntry, folder: Path) -> bool:
    return all((folder / f).is_file() for f in entry.hf_required)


def cached_snapshot(entry: ModelEntry) -> Path | None:
    """The local snapshot folder when every required file is in the Hugging Face cache."""
    from huggingface_hub import snapshot_download

    try:
        folder = Path(
            snapshot_download(
                entry.hf_repo,
                allow_patterns=list(entry.allow_patterns),
                local_files_only=True,
                cache_dir=_hub_cache(),
            )
        )
    except Exception:
        return None
    return folder if _complete(entry, folder) else None


def fetch_snapshot(entry: ModelEntry, progress: bool = True) -> Path:
    """Download (or find) the snapshot; raises with a one-line reason when it cannot."""
    from huggingface_hub import snapshot_download

    found = cached_snapshot(entry)
    if found is not None:
        return found
    if hub_offline():
        raise OSError(
            f"{entry.hf_repo} is not in the Hugging Face cache and HF_HUB_OFFLINE=1 forbids "
            "downloading it; unset HF_HUB_OFFLINE (or copy a Hugging Face cache holding it to "
            "$HF_HOME)"
        )
    kwargs = {"cache_dir": _hub_cache()}
    if not progress:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    try:
        folder = Path(
            snapshot_download(entry.hf_repo, allow_patterns=list(entry.allow_patterns), **kwargs)
        )
    except Exception as exc:
        text = " ".join(str(exc).split()) or type(exc).__name__
        raise OSError(f"https://huggingface.co/{entry.hf_repo}: {text[:300]}") from exc
    if not _complete(entry, folder):
        missing = [f for f in entry.hf_required if not (folder / f).is_file()]
        raise OSError(f"{entry.hf_repo}: the snapshot lacks {missing}")
    return folder


def verify_snapshot(folder: Path) -> list[str]:
    """Re-hash the large files of a snapshot against their blob names (the Hugging Face cache
    names LFS blobs by their sha256); returns the problems found (empty: all good)."""
    problems = []
    for path in sorted(folder.rglob("*")):
        if not path.is_file():
            continue
        blob = path.resolve()
        if not _SHA256_NAME.match(blob.name):
            continue  # small git files are named by their sha1; nothing to compare cheaply
        digest = sha256_file(blob)
        if digest != blob.name:
            problems.append(f"{path.relative_to(folder)}: sha256 {digest} != {blob.name}")
    return problems
