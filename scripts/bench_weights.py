"""Benchmark of the weights manager on this machine (no internet: a server on 127.0.0.1).

Prints median / p95 over repeats of: a download (full, and resumed from half), sha256 of the
file, unpacking an archive shaped like the IGLOSS image set (165 files, ~200 MB) with the pinned
tree check, and loading a preset with the official images cached.

    .venv/bin/python scripts/bench_weights.py [--mb 128] [--repeats 3]
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import tarfile
import tempfile
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np


class _RangeHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        path = Path(self.translate_path(self.path))
        data = path.read_bytes()
        start = 0
        rng = self.headers.get("Range", "")
        if rng.startswith("bytes="):
            start = int(rng[6:].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        self.wfile.write(data[start:])


def _stats(name: str, seconds: list[float], unit_bytes: int | None = None) -> None:
    med = statistics.median(seconds)
    p95 = float(np.percentile(seconds, 95))
    rate = f", {unit_bytes / med / 1e6:.0f} MB/s" if unit_bytes else ""
    print(f"{name:<46} median {med * 1000:8.1f} ms  p95 {p95 * 1000:8.1f} ms{rate}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    from lidar_ovseg_ros.weights import CATALOG
    from lidar_ovseg_ros.weights.archives import safe_extract
    from lidar_ovseg_ros.weights.download import download
    from lidar_ovseg_ros.weights.integrity import git_tree_sha1, sha256_file

    work = Path(tempfile.mkdtemp(prefix="bench_weights_"))
    served = work / "served"
    served.mkdir()
    rng = np.random.default_rng(0)
    blob = rng.integers(0, 256, args.mb << 20, dtype=np.uint8).tobytes()
    (served / "ckpt.pth").write_bytes(blob)
    handler = lambda *a, **k: _RangeHandler(*a, directory=str(served), **k)  # noqa: E731
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/ckpt.pth"
    print(f"{os.cpu_count()} CPUs; file {args.mb} MiB; {args.repeats} repeats; server 127.0.0.1")

    full, resumed, hashing = [], [], []
    for i in range(args.repeats):
        dest = work / f"dl{i}" / "ckpt.pth"
        t0 = time.perf_counter()
        download(url, dest, progress=False)
        full.append(time.perf_counter() - t0)
        part = work / f"rs{i}" / "ckpt.pth.part"
        part.parent.mkdir()
        part.write_bytes(blob[: len(blob) // 2])
        t0 = time.perf_counter()
        download(url, part.parent / "ckpt.pth", progress=False)
        resumed.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        sha256_file(dest)
        hashing.append(time.perf_counter() - t0)
    _stats("download (incl. sha256)", full, len(blob))
    _stats("download resumed from half (incl. sha256)", resumed, len(blob))
    _stats("sha256 of the file", hashing, len(blob))

    # An archive shaped like the IGLOSS images: 165 files of ~1.24 MB (PNGs barely compress).
    entry = CATALOG["igloss-prototype-images"]
    buf = io.BytesIO()
    sizes = 0
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=1) as tar:
        for k in range(165):
            data = rng.integers(0, 256, 1_240_000, dtype=np.uint8).tobytes()
            sizes += len(data)
            folder = "nuscenes_gpt_templates" if k < 95 else "semantic_kitti_gpt_templates"
            info = tarfile.TarInfo(f"top/{entry.target}/{folder}/{k % 16}_c/{k:05d}.png")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    archive = work / "images.tar.gz"
    archive.write_bytes(buf.getvalue())
    unpack, trees = [], []
    for i in range(args.repeats):
        out = work / f"x{i}"
        out.mkdir()
        t0 = time.perf_counter()
        safe_extract(archive, out, entry.members, strip_top=True)
        unpack.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        for rel in entry.tree_sha1:
            git_tree_sha1(out / rel)
        trees.append(time.perf_counter() - t0)
    _stats("safe unpack, 165 files (tar.gz)", unpack, sizes)
    _stats("git tree ids of the two image folders", trees, sizes)
    server.shutdown()


if __name__ == "__main__":
    main()
