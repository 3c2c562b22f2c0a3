"""Fetch, install, inspect and verify the models of the catalog (the `lidar-ovseg weights` core).

`fetch` downloads (resuming), checks the sha256 when it is known, unpacks archives safely into a
staging folder under the cache, checks pinned git tree ids, records every file's sha256 in a
manifest and only then renames the folder into place. Any failure leaves the cache as it was
(a partial download stays under `downloads/` to be resumed).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .archives import safe_extract
from .cache import MANIFEST, CacheLayout, find_target
from .catalog import ModelEntry, get_entry
from .download import (
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT,
    ChecksumMismatchError,
    DownloadError,
    download,
)
from .hub import cached_snapshot, fetch_snapshot, verify_snapshot
from .integrity import git_tree_sha1, sha256_file

_LOG = logging.getLogger(__name__)


class FetchError(OSError):
    """A model could not be fetched; the message names the URL and how to place it by hand."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class ModelNotAvailableError(FileNotFoundError):
    """A model that is neither cached nor given as a path; the message names the command that
    fetches it."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def _entry(model: str | ModelEntry) -> ModelEntry:
    return model if isinstance(model, ModelEntry) else get_entry(model)


@dataclass(frozen=True)
class ModelStatus:
    entry: ModelEntry
    cached: bool
    path: Path | None
    """The file or folder the package uses, when cached."""
    detail: str = ""


def status(model: str | ModelEntry, cache_dir: str | Path | None = None) -> ModelStatus:
    entry = _entry(model)
    if entry.kind == "hf":
        folder = cached_snapshot(entry)
        return ModelStatus(entry, folder is not None, folder)
    layout = CacheLayout.at(cache_dir)
    manifest = layout.manifest(entry.name)
    if manifest is None:
        part = layout.download_path(entry).with_name(str(entry.filename) + ".part")
        detail = f"partial download {part.stat().st_size} bytes" if part.exists() else ""
        return ModelStatus(entry, False, None, detail)
    try:
        path = find_target(entry, layout.install_dir(entry.name))
    except FileNotFoundError as exc:
        return ModelStatus(entry, False, None, str(exc))
    return ModelStatus(entry, True, path)


def model_path(model: str | ModelEntry, cache_dir: str | Path | None = None) -> Path:
    """Where a cached model is; `ModelNotAvailableError` (naming the fetch command) if it is not."""
    entry = _entry(model)
    st = status(entry, cache_dir)
    if st.cached and st.path is not None:
        return st.path
    where = (
        "the Hugging Face cache" if entry.kind == "hf" else str(CacheLayout.at(cache_dir).models)
    )
    command = entry.fetch_command
    if entry.kind == "manual":  # a file-sharing page: a person downloads it, fetch installs it
        command = f"{command} --file /path/to/{entry.filename}` (download it from {entry.manual})"
        raise ModelNotAvailableError(
            f"model '{entry.name}' ({entry.purpose.split(':')[0]}) is not in {where}: "
            f"run `{command}"
        )
    raise ModelNotAvailableError(
        f"model '{entry.name}' ({entry.purpose.split(':')[0]}) is not in {where}: run `{command}`"
    )


def _manual_hint(entry: ModelEntry, url: str | None) -> str:
    where = url or entry.manual
    return (
        f"To place it by hand: download {where} (browser or another machine), then run "
        f"`lidar-ovseg weights fetch {entry.name} --file /path/to/{entry.filename}`"
    )


def fetch(
    model: str | ModelEntry,
    cache_dir: str | Path | None = None,
    *,
    file: str | Path | None = None,
    force: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
    retries: int = DEFAULT_RETRIES,
    progress: bool = True,
) -> Path:
    """Make a model available; return the path the package uses (see `ModelStatus.path`).

    `file`: a file downloaded by hand (the release file itself), installed exactly like a
    download. Already cached models are left alone unless `force`.
    """
    entry = _entry(model)
    if entry.notice:
        _LOG.warning("%s: %s", entry.name, entry.notice)
    if entry.kind == "hf":
        if file is not None:
            raise FetchError(
                f"model '{entry.name}' lives on the Hugging Face hub; --file is for release files"
            )
        try:
            return fetch_snapshot(entry, progress=progress)
        except OSError as exc:
            raise FetchError(f"cannot fetch '{entry.name}': {exc}") from exc
    layout = CacheLayout.at(cache_dir)
    if not force and file is None:
        st = status(entry, cache_dir)
        if st.cached and st.path is not None:
            return st.path
    with _exclusive(layout, entry):
        return _fetch_file(entry, layout, file, force, timeout, retries, progress)


@contextlib.contextmanager
def _exclusive(layout: CacheLayout, entry: ModelEntry) -> Iterator[None]:
    """One fetch of a model at a time (two would write the same partial file): a second one
    fails at once with a clear error instead of waiting."""
    import fcntl

    lock_path = layout.downloads / entry.name / ".lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise FetchError(
                f"another process is fetching '{entry.name}' into {layout.root} (lock "
                f"{lock_path}); wait for it to finish"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _fetch_file(
    entry: ModelEntry,
    layout: CacheLayout,
    file: str | Path | None,
    force: bool,
    timeout: float,
    retries: int,
    progress: bool,
) -> Path:
    if file is not None:
        source = Path(file).expanduser()
        if not source.is_file():
            raise FileNotFoundError(f"--file: no such file: {source}")
        digest = sha256_file(source)
        if entry.sha256 and digest != entry.sha256:
            raise ChecksumMismatchError(
                f"{source}: sha256 {digest} does not match the expected {entry.sha256} of "
                f"'{entry.name}'; nothing was installed"
            )
        return _install(entry, layout, source, digest, origin=str(source), consume=False)
    if entry.kind == "manual":
        raise FetchError(
            f"model '{entry.name}' is released on a file-sharing page a script cannot download. "
            + _manual_hint(entry, None)
        )
    assert entry.url is not None
    dest = layout.download_path(entry)
    if force and dest.is_file():
        dest.unlink()
    if dest.is_file():  # complete (only whole files get this name) but not installed last time
        digest = sha256_file(dest)
        if not entry.sha256 or digest == entry.sha256:
            return _install(entry, layout, dest, digest, origin=entry.url, consume=True)
        dest.unlink()
    try:
        digest = download(
            entry.url,
            dest,
            timeout=timeout,
            retries=retries,
            expected_sha256=entry.sha256,
            progress=progress,
        )
    except DownloadError as exc:
        raise FetchError(
            f"cannot download '{entry.name}' from {exc.url}: {exc.reason}. "
            + _manual_hint(entry, entry.url)
        ) from exc
    return _install(entry, layout, dest, digest, origin=entry.url, consume=True)


def _install(
    entry: ModelEntry,
    layout: CacheLayout,
    downloaded: Path,
    digest: str,
    origin: str,
    consume: bool,
) -> Path:
    layout.tmp.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{entry.name}.", dir=layout.tmp))
    try:
        if entry.is_archive:
            written = safe_extract(downloaded, staging, entry.members, entry.strip_top)
            if not written:
                raise FetchError(
                    f"{downloaded.name}: the archive holds none of "
                    f"{list(entry.members) or 'its files'}; nothing was installed"
                )
        else:
            dest = staging / str(entry.filename)
            if consume:
                os.replace(downloaded, dest)
            else:
                shutil.copyfile(downloaded, dest)
        for rel, want in entry.tree_sha1.items():
            folder = staging / rel
            got = git_tree_sha1(folder) if folder.is_dir() else "missing"
            if got != want:
                raise ChecksumMismatchError(
                    f"model '{entry.name}': {rel} has git tree {got}, expected {want} (the "
                    "pinned commit); nothing was installed"
                )
        target = find_target(entry, staging)
        files = {
            str(p.relative_to(staging)): sha256_file(p)
            for p in sorted(staging.rglob("*"))
            if p.is_file()
        }
        manifest: dict[str, Any] = {
            "name": entry.name,
            "origin": origin,
            "source": entry.source,
            "licence": entry.licence,
            "download_sha256": digest,
            "fetched_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "target": str(target.relative_to(staging)),
            "files": files,
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=1))
        final = layout.install_dir(entry.name)
        final.parent.mkdir(parents=True, exist_ok=True)
        old = None
        if final.exists():
            old = Path(tempfile.mkdtemp(prefix=f"{entry.name}.old.", dir=layout.tmp))
            os.replace(final, old / "model")
        os.replace(staging, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if consume and entry.is_archive:
        with contextlib.suppress(FileNotFoundError):
            downloaded.unlink()  # the unpacked files are what is kept
    return final / manifest["target"]


def verify(model: str | ModelEntry, cache_dir: str | Path | None = None) -> list[str]:
    """Re-hash a cached model; returns the problems (empty: intact). Not cached -> error."""
    entry = _entry(model)
    if entry.kind == "hf":
        folder = model_path(entry)
        return verify_snapshot(folder)
    layout = CacheLayout.at(cache_dir)
    manifest = layout.manifest(entry.name)
    if manifest is None:
        model_path(entry, cache_dir)  # raises ModelNotAvailableError
        return []
    folder = layout.install_dir(entry.name)
    problems = []
    for rel, want in sorted(manifest.get("files", {}).items()):
        path = folder / rel
        if not path.is_file():
            problems.append(f"{rel}: missing")
        elif sha256_file(path) != want:
            problems.append(f"{rel}: sha256 differs from the one recorded at fetch time")
    for rel, want in entry.tree_sha1.items():
        got = git_tree_sha1(folder / rel) if (folder / rel).is_dir() else "missing"
        if got != want:
            problems.append(f"{rel}: git tree {got}, expected {want}")
    return problems
