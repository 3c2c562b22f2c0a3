"""HTTP(S) download of one file: resumable, bounded in time, never leaving a half file in place.

Bytes go to `<dest>.part` (with `<dest>.part.json` naming the URL and the server's ETag); a
later call resumes it with an HTTP `Range` request (`If-Range` guards against a changed file;
a server that ignores ranges restarts it). Every socket operation has a timeout, so a stalled
server raises instead of hanging; a cut connection is retried (resuming) `retries` times. Only a
complete file (length as announced, sha256 as expected when known) is renamed to `dest`.
Standard library only (urllib).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from http.client import HTTPException
from pathlib import Path

from .integrity import sha256_file

ENV_OFFLINE = "LIDAR_OVSEG_OFFLINE"
DEFAULT_TIMEOUT = 30.0
DEFAULT_RETRIES = 3
USER_AGENT = "lidar_ovseg_ros-weights/1 (+urllib)"
_CHUNK = 1 << 16
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")
_UNSATISFIED_RANGE = re.compile(r"bytes\s+\*/(\d+)")


class DownloadError(OSError):
    """The file could not be downloaded; `url` and `reason` say where and why."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"{url}: {reason}")
        self.url = url
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.url}: {self.reason}"


class ChecksumMismatchError(ValueError):
    """The downloaded bytes do not have the expected sha256; nothing was kept."""


def offline() -> bool:
    return os.environ.get(ENV_OFFLINE, "").strip().lower() in ("1", "true", "yes", "on")


def _meta_path(part: Path) -> Path:
    return part.with_name(part.name + ".json")


def _read_meta(part: Path) -> dict:
    try:
        return json.loads(_meta_path(part).read_text())
    except (OSError, ValueError):
        return {}


def _discard(part: Path) -> None:
    for p in (part, _meta_path(part)):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


def _progress_bar(name: str, total: int | None, initial: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(
        total=total,
        initial=initial,
        desc=name,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        file=sys.stderr,
        disable=not enabled,
        leave=True,
    )


def download(
    url: str,
    dest: str | Path,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    retries: int = DEFAULT_RETRIES,
    expected_sha256: str | None = None,
    progress: bool = True,
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """Download `url` to `dest` (resuming `<dest>.part`); return the file's sha256.

    Raises `DownloadError` (unreachable, HTTP error, timeout, still incomplete after `retries`
    resumptions, or offline mode `LIDAR_OVSEG_OFFLINE=1`) with the partial file kept for the next
    call, or `ChecksumMismatchError` with the partial file deleted.
    """
    dest = Path(dest)
    if offline():
        raise DownloadError(url, f"offline mode ({ENV_OFFLINE}=1): no download attempted")
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    meta = _read_meta(part)
    if part.exists() and meta.get("url") != url:
        _discard(part)  # a partial file of another URL
        meta = {}
    last_error = "no attempt made"
    for attempt in range(retries + 1):
        if attempt:
            sleep(min(0.5 * attempt, 2.0))
        try:
            if _attempt(url, part, meta, timeout, progress, dest.name):
                break
            last_error = "the connection closed before the whole file arrived"
        except _Fatal as exc:
            raise DownloadError(url, str(exc)) from None
        except (TimeoutError, urllib.error.URLError, HTTPException, OSError) as exc:
            last_error = _describe(exc, timeout)
    else:
        size = part.stat().st_size if part.exists() else 0
        raise DownloadError(
            url, f"{last_error} (after {retries + 1} attempts; {size} bytes kept for resuming)"
        )
    digest = sha256_file(part)
    if expected_sha256 is not None and digest != expected_sha256.lower():
        _discard(part)
        raise ChecksumMismatchError(
            f"{url}: sha256 {digest} does not match the expected {expected_sha256}; "
            "the download was deleted and nothing was installed"
        )
    os.replace(part, dest)
    with contextlib.suppress(FileNotFoundError):
        _meta_path(part).unlink()
    return digest


class _Fatal(Exception):
    """An error retrying cannot fix (HTTP 4xx)."""


def _describe(exc: BaseException, timeout: float) -> str:
    if isinstance(exc, TimeoutError) or "timed out" in str(exc):
        return f"no data for {timeout:g} s (timed out)"
    if isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError):
        return f"unreachable ({exc.reason})"
    return f"{type(exc).__name__}: {exc}".strip()


def _attempt(url: str, part: Path, meta: dict, timeout: float, progress: bool, name: str) -> bool:
    """One request; True when `part` holds the whole file."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
        if meta.get("etag"):
            headers["If-Range"] = meta["etag"]
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:
            m = _UNSATISFIED_RANGE.search(exc.headers.get("Content-Range", "") or "")
            if m and int(m.group(1)) == offset:
                return True  # the partial file was already complete
            _discard(part)
            return False
        if 400 <= exc.code < 500:
            raise _Fatal(f"HTTP {exc.code} {exc.reason}") from None
        raise
    with response:
        status = getattr(response, "status", 200)
        length = response.headers.get("Content-Length")
        length = int(length) if length and length.isdigit() else None
        if status == 206:
            m = _CONTENT_RANGE.search(response.headers.get("Content-Range", "") or "")
            if not m or int(m.group(1)) != offset:
                _discard(part)  # not the range asked for: start again
                return False
            total = int(m.group(3)) if m.group(3) != "*" else None
            mode = "ab"
        else:  # 200: the whole file (the server ignored the range, or the file changed)
            offset = 0
            total = length
            mode = "wb"
        meta.clear()
        meta.update({"url": url, "etag": response.headers.get("ETag"), "total": total})
        part.parent.mkdir(parents=True, exist_ok=True)
        _meta_path(part).write_text(json.dumps(meta))
        with open(part, mode) as out, _progress_bar(name, total, offset, progress) as bar:
            while True:
                chunk = response.read(_CHUNK)
                if not chunk:
                    break
                out.write(chunk)
                bar.update(len(chunk))
    size = part.stat().st_size
    if total is not None:
        return size == total
    return True  # no announced length: the server closed the stream at the end
