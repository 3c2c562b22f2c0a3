"""Unpacking downloaded archives (tar, tar.gz, zip) without trusting them.

Every member is checked before anything is written: a name that is absolute, holds `..`, a
drive letter or a backslash, a symbolic or hard link, a device file or a FIFO makes the whole
archive refused (`UnsafeArchiveError`). Files are then written one by one under the target
folder with plain permissions (0644, or 0755 when executable in the archive; no set-uid bits, no
owners, no timestamps from the archive).
"""

from __future__ import annotations

import shutil
import stat
import tarfile
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path, PurePosixPath
from typing import IO


class UnsafeArchiveError(ValueError):
    """The archive holds a member that could write outside its folder (or is not a plain file);
    nothing is installed."""


class ArchiveFormatError(ValueError):
    """The file is not a readable tar or zip archive."""


def _clean_name(name: str, archive: Path) -> PurePosixPath:
    if not name or "\\" in name or "\0" in name:
        raise UnsafeArchiveError(f"{archive.name}: member {name!r} has an unsafe name")
    path = PurePosixPath(name)
    if path.is_absolute() or (path.parts and path.parts[0].endswith(":")):
        raise UnsafeArchiveError(f"{archive.name}: member {name!r} is an absolute path")
    if ".." in path.parts:
        raise UnsafeArchiveError(f"{archive.name}: member {name!r} leaves the target folder")
    parts = [p for p in path.parts if p not in ("", ".")]
    return PurePosixPath(*parts) if parts else PurePosixPath(".")


def _select(rel: PurePosixPath, strip_top: bool, members: Sequence[str]) -> PurePosixPath | None:
    """The path a member is written to, or None when it is not kept."""
    if strip_top:
        if len(rel.parts) <= 1:
            return None  # the top-level folder itself
        rel = PurePosixPath(*rel.parts[1:])
    if members:
        keep = any(rel == PurePosixPath(m) or PurePosixPath(m) in rel.parents for m in members)
        if not keep:
            return None
    return rel


def _write(dest: Path, source: IO[bytes], mode: int) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest, "wb") as out:
        shutil.copyfileobj(source, out, 1 << 20)
    # Plain permissions; only the executable bit is kept (git records it: a pinned tree id
    # depends on it). Never set-uid/set-gid/sticky, never group/other write.
    dest.chmod(0o755 if mode & 0o111 else 0o644)


def _tar_plan(
    tar: tarfile.TarFile, archive: Path
) -> Iterator[tuple[tarfile.TarInfo, PurePosixPath]]:
    for info in tar.getmembers():
        rel = _clean_name(info.name, archive)
        if info.issym() or info.islnk():
            raise UnsafeArchiveError(
                f"{archive.name}: member {info.name!r} is a link (to {info.linkname!r}); "
                "links are refused"
            )
        if not (info.isfile() or info.isdir()):
            raise UnsafeArchiveError(
                f"{archive.name}: member {info.name!r} is not a regular file or folder "
                "(device, FIFO or other special file)"
            )
        yield info, rel


def _zip_plan(
    zf: zipfile.ZipFile, archive: Path
) -> Iterator[tuple[zipfile.ZipInfo, PurePosixPath]]:
    for info in zf.infolist():
        rel = _clean_name(info.filename, archive)
        mode = info.external_attr >> 16  # unix mode when the zip was made on unix
        kind = stat.S_IFMT(mode)
        if kind and stat.S_ISLNK(mode):
            raise UnsafeArchiveError(
                f"{archive.name}: member {info.filename!r} is a link; links are refused"
            )
        if kind and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            raise UnsafeArchiveError(
                f"{archive.name}: member {info.filename!r} is not a regular file or folder"
            )
        yield info, rel


def _check_space(target: Path, needed: int, archive: Path) -> None:
    free = shutil.disk_usage(target).free
    if needed > free:
        raise OSError(
            f"{archive.name}: unpacking needs {needed / 1e9:.2f} GB, {target} has "
            f"{free / 1e9:.2f} GB free"
        )


def safe_extract(
    archive: str | Path,
    target: str | Path,
    members: Sequence[str] = (),
    strip_top: bool = False,
) -> list[PurePosixPath]:
    """Unpack `archive` into the existing folder `target`; return the files written (relative).

    `strip_top` drops the archive's single top-level folder; `members` keeps only those folders
    (paths after stripping). Every member of the archive is checked, kept or not.
    """
    archive = Path(archive)
    target = Path(target)
    written: list[PurePosixPath] = []
    # Decide by the name first: a plain .tar holding a torch checkpoint (itself a zip) also
    # passes `zipfile.is_zipfile`.
    as_zip = archive.name.lower().endswith(".zip") or (
        not tarfile.is_tarfile(archive) and zipfile.is_zipfile(archive)
    )
    if as_zip:
        with zipfile.ZipFile(archive) as zf:
            plan = list(_zip_plan(zf, archive))
            kept = [(i, _select(r, strip_top, members)) for i, r in plan]
            _check_space(target, sum(i.file_size for i, out in kept if out is not None), archive)
            for info, out in kept:
                if out is None or str(out) == "." or info.is_dir():
                    continue
                with zf.open(info) as src:
                    _write(target / out, src, info.external_attr >> 16)
                written.append(out)
        return written
    try:
        tar = tarfile.open(archive, "r:*")  # noqa: SIM115 - closed by the `with` below
    except tarfile.TarError as exc:
        raise ArchiveFormatError(f"{archive.name}: not a tar or zip archive ({exc})") from exc
    with tar:
        try:
            plan = list(_tar_plan(tar, archive))
        except tarfile.TarError as exc:
            raise ArchiveFormatError(f"{archive.name}: unreadable archive ({exc})") from exc
        kept = [(i, _select(r, strip_top, members)) for i, r in plan]
        _check_space(target, sum(i.size for i, out in kept if out is not None), archive)
        for info, out in kept:
            if out is None or str(out) == "." or info.isdir():
                continue
            src = tar.extractfile(info)
            if src is None:  # pragma: no cover - isfile() members always have data
                continue
            with src:
                _write(target / out, src, info.mode)
            written.append(out)
    return written
