"""The weights manager against a real HTTP server on 127.0.0.1 (no internet): full and resumed
downloads, checksums, hostile archives, a stalling server, offline mode, the resolver, the
CLI, and the IGLOSS prototype images as exemplars of the presets."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import re
import socket
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lidar_ovseg_ros.cli import main as cli_main
from lidar_ovseg_ros.weights import (
    CATALOG,
    ChecksumMismatchError,
    FetchError,
    ModelEntry,
    ModelNotAvailableError,
    cache_root,
    entries_for,
    fetch,
    model_path,
    resolve_model_file,
    status,
    verify,
)
from lidar_ovseg_ros.weights.archives import UnsafeArchiveError, safe_extract
from lidar_ovseg_ros.weights.catalog import IGLOSS_TEMPLATES
from lidar_ovseg_ros.weights.integrity import git_tree_sha1

# --- a local HTTP server with Range support and scripted misbehaviour -------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.cut_first: dict[str, int] = {}  # path -> bytes sent before the first response dies
        self.stall = threading.Event()  # set: responses hang after the headers
        self.release = threading.Event()
        self.ranges = True

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        srv = self.server
        rng = self.headers.get("Range")
        srv.requests.append((self.path, rng))
        body = srv.files.get(self.path)
        if body is None:
            self.send_error(404, "not here")
            return
        etag = '"' + hashlib.sha1(body).hexdigest() + '"'
        start = 0
        m = re.fullmatch(r"bytes=(\d+)-", rng or "")
        if m and srv.ranges and self.headers.get("If-Range", etag) == etag:
            start = int(m.group(1))
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.send_header("ETag", etag)
        self.end_headers()
        if srv.stall.is_set():
            srv.release.wait(10)
            return
        cut = srv.cut_first.pop(self.path, None)
        if cut is not None:
            self.wfile.write(body[start : start + cut])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        self.wfile.write(body[start:])


@pytest.fixture
def server() -> Iterator[_Server]:
    srv = _Server()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.release.set()
    srv.shutdown()
    srv.server_close()
    thread.join(5)


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("LIDAR_OVSEG_CACHE", str(root))
    monkeypatch.delenv("LIDAR_OVSEG_OFFLINE", raising=False)
    return root


def _checkpoint_bytes(seed: int = 0) -> bytes:
    gen = torch.Generator().manual_seed(seed)
    state = {"model_point": {"module.w": torch.randn(64, 64, generator=gen)}}
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def _tar_bytes(members: list[tuple[tarfile.TarInfo, bytes | None]], mode: str = "w:gz") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return buf.getvalue()


def _file(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def _entry(server: _Server, path: str, body: bytes, **kw) -> ModelEntry:
    server.files[path] = body
    fields = {
        "name": "test-model",
        "purpose": "a test checkpoint",
        "methods": ("igloss",),
        "kind": "file",
        "source": "this test",
        "licence": "test",
        "url": server.url(path),
        "filename": Path(path).name,
    }
    fields.update(kw)
    return ModelEntry(**fields)


# --- downloads ----------------------------------------------------------------------------------


def test_full_fetch_installs_file_and_records_sha256(server, cache):
    body = _checkpoint_bytes()
    entry = _entry(server, "/pop3d_weights.pth", body)
    assert not status(entry).cached
    path = fetch(entry, progress=False)
    assert path == cache / "models" / "test-model" / "pop3d_weights.pth"
    assert path.read_bytes() == body
    manifest = json.loads((path.parent / ".manifest.json").read_text())
    assert manifest["download_sha256"] == hashlib.sha256(body).hexdigest()
    assert manifest["files"] == {"pop3d_weights.pth": hashlib.sha256(body).hexdigest()}
    assert status(entry).cached and model_path(entry) == path
    loaded = torch.load(path, weights_only=True)  # a real checkpoint came through intact
    assert torch.equal(
        loaded["model_point"]["module.w"], torch.load(io.BytesIO(body))["model_point"]["module.w"]
    )
    assert verify(entry) == []
    n = len(server.requests)
    assert fetch(entry, progress=False) == path and len(server.requests) == n  # cached: no request
    assert not list((cache / "downloads").rglob("*.part"))


def test_cut_connection_is_resumed_with_a_range_request(server, cache):
    body = _checkpoint_bytes(1)
    entry = _entry(server, "/ckpt.pth", body)
    server.cut_first["/ckpt.pth"] = 5000
    path = fetch(entry, progress=False, retries=2)
    assert path.read_bytes() == body
    assert server.requests[0] == ("/ckpt.pth", None)
    assert server.requests[1] == ("/ckpt.pth", "bytes=5000-")


def test_interrupted_fetch_keeps_the_partial_file_and_the_next_fetch_resumes(server, cache):
    body = _checkpoint_bytes(2)
    entry = _entry(server, "/ckpt.pth", body)
    server.cut_first["/ckpt.pth"] = 3000
    with pytest.raises(FetchError) as err:
        fetch(entry, progress=False, retries=0)
    text = str(err.value)
    assert server.url("/ckpt.pth") in text and "--file" in text and "3000 bytes kept" in text
    assert not status(entry).cached
    assert "partial download 3000 bytes" in status(entry).detail
    assert fetch(entry, progress=False, retries=0).read_bytes() == body
    assert server.requests[-1] == ("/ckpt.pth", "bytes=3000-")


def test_server_ignoring_ranges_restarts_the_file(server, cache):
    body = _checkpoint_bytes(3)
    entry = _entry(server, "/ckpt.pth", body)
    server.cut_first["/ckpt.pth"] = 2000
    server.ranges = False
    assert fetch(entry, progress=False, retries=1).read_bytes() == body


def test_checksum_mismatch_is_refused_and_the_cache_is_unchanged(server, cache):
    body = _checkpoint_bytes(4)
    good = _entry(server, "/ckpt.pth", body, sha256=hashlib.sha256(body).hexdigest())
    installed = fetch(good, progress=False)
    before = {p: p.read_bytes() for p in cache.rglob("*") if p.is_file()}
    server.files["/ckpt.pth"] = body[:-1] + b"X"  # the release file changed under the same URL
    with pytest.raises(ChecksumMismatchError, match="does not match"):
        fetch(good, progress=False, force=True)
    after = {p: p.read_bytes() for p in cache.rglob("*") if p.is_file()}
    assert after == before and installed.read_bytes() == body
    fresh = dataclasses.replace(good, name="other-model")
    with pytest.raises(ChecksumMismatchError):
        fetch(fresh, progress=False)
    assert not (cache / "models" / "other-model").exists()
    assert not list(cache.rglob("*.part"))


def test_stalling_server_times_out_with_a_clear_error(server, cache):
    entry = _entry(server, "/ckpt.pth", _checkpoint_bytes(5))
    server.stall.set()
    with pytest.raises(FetchError) as err:
        fetch(entry, progress=False, timeout=0.5, retries=0)
    assert "timed out" in str(err.value) and server.url("/ckpt.pth") in str(err.value)
    assert not status(entry).cached


def test_unreachable_and_offline_name_the_url_and_the_manual_step(server, cache, monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    entry = _entry(server, "/x.pth", b"x", url=f"http://127.0.0.1:{port}/x.pth")
    with pytest.raises(FetchError, match="unreachable") as err:
        fetch(entry, progress=False, timeout=2, retries=0)
    assert f"http://127.0.0.1:{port}/x.pth" in str(err.value)
    assert "lidar-ovseg weights fetch test-model --file /path/to/x.pth" in str(err.value)
    monkeypatch.setenv("LIDAR_OVSEG_OFFLINE", "1")
    served = _entry(server, "/y.pth", b"y")
    with pytest.raises(FetchError, match="offline mode"):
        fetch(served, progress=False)
    assert server.requests == []
    manual = tmp = cache.parent / "y.pth"
    tmp.write_bytes(b"downloaded by hand")
    assert fetch(served, file=manual).read_bytes() == b"downloaded by hand"


def test_http_404_is_not_retried(server, cache):
    entry = _entry(server, "/there.pth", b"z", url=server.url("/gone.pth"))
    with pytest.raises(FetchError, match="HTTP 404"):
        fetch(entry, progress=False, retries=3)
    assert len(server.requests) == 1


def test_hugging_face_entry_offline_and_not_cached(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    entry = CATALOG["dinov2-large"]
    assert not status(entry).cached
    with pytest.raises(FetchError, match="HF_HUB_OFFLINE=1"):
        fetch(entry)
    with pytest.raises(ModelNotAvailableError, match="lidar-ovseg weights fetch dinov2-large"):
        model_path(entry)


# --- archives -----------------------------------------------------------------------------------


def _archive_entry(server: _Server, body: bytes, name: str = "/model.tar.gz") -> ModelEntry:
    return _entry(
        server, name, body, name="test-archive", kind="archive", target="**/ckpt_last.pth"
    )


def test_archive_is_unpacked_and_the_checkpoint_found(server, cache):
    ckpt = _checkpoint_bytes(6)
    body = _tar_bytes(
        [_file("logs/WI_768/ckpt_last.pth", ckpt), _file("logs/WI_768/cfg.yaml", b"a")]
    )
    path = fetch(_archive_entry(server, body), progress=False)
    assert path == cache / "models" / "test-archive" / "logs" / "WI_768" / "ckpt_last.pth"
    assert path.read_bytes() == ckpt
    assert not (cache / "downloads" / "test-archive" / "model.tar.gz").exists()
    zbuf = io.BytesIO()
    with zipfile.ZipFile(zbuf, "w") as zf:
        zf.writestr("pretrained/ckpt_last.pth", ckpt)
    zentry = dataclasses.replace(
        _archive_entry(server, zbuf.getvalue(), "/m.zip"), filename="m.zip"
    )
    assert fetch(zentry, progress=False, force=True).read_bytes() == ckpt


def _link(name: str, target: str, hard: bool = False) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = tarfile.LNKTYPE if hard else tarfile.SYMTYPE
    info.linkname = target
    return info, None


def _device(name: str) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = tarfile.CHRTYPE
    info.devmajor, info.devminor = 1, 3
    return info, None


@pytest.mark.parametrize(
    "hostile",
    [
        [_file("../escape.txt", b"x")],
        [_file("ok/../../escape.txt", b"x")],
        [_file("/tmp/absolute.txt", b"x")],
        [_link("ckpt_link", "/etc/passwd")],
        [_link("up", "../../outside")],
        [_link("hard", "/etc/passwd", hard=True)],
        [_device("dev/null2")],
    ],
    ids=["dotdot", "nested-dotdot", "absolute", "symlink-abs", "symlink-up", "hardlink", "device"],
)
def test_hostile_archives_are_refused_and_nothing_is_written(server, cache, tmp_path, hostile):
    body = _tar_bytes([_file("good/ckpt_last.pth", b"fine"), *hostile], mode="w")
    with pytest.raises(UnsafeArchiveError):
        fetch(_archive_entry(server, body, "/evil.tar"), progress=False)
    assert not (cache / "models" / "test-archive").exists()
    assert not [p for p in (cache / "tmp").rglob("*") if p.is_file()]
    assert not (tmp_path / "escape.txt").exists() and not (cache / "escape.txt").exists()


def test_hostile_zip_members_are_refused(tmp_path):
    for bad in ("../evil.txt", "/abs.txt", "C:/win.txt"):
        z = tmp_path / "bad.zip"
        with zipfile.ZipFile(z, "w") as zf:
            zf.writestr("fine.txt", b"ok")
            zf.writestr(zipfile.ZipInfo(bad), b"x")
        out = tmp_path / f"out{len(bad)}"
        out.mkdir()
        with pytest.raises(UnsafeArchiveError):
            safe_extract(z, out)
        assert list(out.iterdir()) == []
    link = tmp_path / "link.zip"
    with zipfile.ZipFile(link, "w") as zf:
        info = zipfile.ZipInfo("l")
        info.external_attr = 0o120777 << 16
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(UnsafeArchiveError, match="link"):
        safe_extract(link, tmp_path / "out_link")


# --- the resolver -------------------------------------------------------------------------------


def test_resolver_cached_given_and_missing(tmp_path, cache):
    given = tmp_path / "mine.pth"
    given.write_bytes(b"w")
    assert resolve_model_file(str(given), "pop3d") == given
    with pytest.raises(ModelNotAvailableError) as err:
        resolve_model_file("", "pop3d")
    line = str(err.value)
    assert "\n" not in line and "'pop3d'" in line and "`lidar-ovseg weights fetch pop3d`" in line
    with pytest.raises(ModelNotAvailableError, match="fetch igloss-scalr-plus"):
        resolve_model_file("igloss-scalr-plus", "pop3d")  # a catalog name, not cached
    installed = fetch("pop3d", file=given)  # the manual route installs it like a download
    assert resolve_model_file(None, "pop3d") == installed
    assert resolve_model_file("pop3d", "igloss-scalr-plus") == installed
    assert installed.read_bytes() == b"w" and given.exists()


def test_full_profile_without_paths_stops_with_one_line(cache):
    from lidar_ovseg_ros.models.checkpoints import CheckpointNotFoundError
    from lidar_ovseg_ros.occupancy.runtime import build_predictor
    from lidar_ovseg_ros.segmentation.segmenter import LidarSegmenter, SegmenterConfig

    with pytest.raises(CheckpointNotFoundError) as err:
        LidarSegmenter.from_config(SegmenterConfig(profile="full", device="cpu"))
    assert "\n" not in str(err.value)
    assert "`lidar-ovseg weights fetch igloss-scalr-plus`" in str(err.value)
    with pytest.raises(CheckpointNotFoundError, match="`lidar-ovseg weights fetch pop3d`"):
        build_predictor("full", device="cpu")


def test_full_profile_resolves_the_cached_checkpoint_by_name(tmp_path, cache):
    """The ScaLR-layout checkpoint installed in the cache is what profile 'full' loads when no
    path is given (tiny WaffleIron preset, so it runs here); DINOv2 from the hub is then named."""
    from lidar_ovseg_ros.models.waffleiron import WaffleIron, WaffleIronConfig
    from lidar_ovseg_ros.segmentation.segmenter import SegmenterConfig, _full_extractor

    torch.manual_seed(3)
    source = WaffleIron(WaffleIronConfig.tiny())
    ckpt = tmp_path / "ckpt_last.pth"
    torch.save({"model_point": {f"module.{k}": v for k, v in source.state_dict().items()}}, ckpt)
    tar = tmp_path / CATALOG["igloss-scalr-plus"].filename
    with tarfile.open(tar, "w") as t:
        t.add(ckpt, arcname="checkpoints/WI_768/ckpt_last.pth")
    fetch("igloss-scalr-plus", file=tar)
    cfg = SegmenterConfig(profile="full", backbone="tiny", device="cpu")
    extractor = _full_extractor(cfg, torch.device("cpu"), None)
    loaded = extractor.model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in source.state_dict().items())


# --- the paper's prototype images ---------------------------------------------------------------

NUSCENES_FOLDERS = [
    "barrier", "bicycle", "bus", "car", "construction_vehicle", "motorcycle", "pedestrian",
    "traffic_cone", "trailer", "truck", "driveable_surface", "other_flat", "sidewalk", "terrain",
    "manmade", "vegetation",
]  # fmt: skip
KITTI_FOLDERS = [
    "car", "bicycle", "motorcycle", "truck", "other-vehicle", "person", "bicyclist",
    "motorcyclist", "road", "parking", "sidewalk", "other-ground", "building", "fence",
    "vegetation", "trunk", "terrain", "pole", "traffic-sign",
]  # fmt: skip


def _png(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _official_layout_archive(top: str) -> bytes:
    """A GitHub-style archive laid out like valeoai/IGLOSS at the pinned commit."""
    members = [_file(f"{top}/README.md", b"IGLOSS"), _file(f"{top}/distill.py", b"pass")]
    seed = 0
    for folder, names in (
        ("nuscenes_gpt_templates", NUSCENES_FOLDERS),
        ("semantic_kitti_gpt_templates", KITTI_FOLDERS),
    ):
        for i, cls in enumerate(names):
            for j in range(1 + i % 2):
                seed += 1
                member = _file(
                    f"{top}/{IGLOSS_TEMPLATES}/{folder}/{i}_{cls}/{j:05d}.png", _png(seed)
                )
                member[0].mode = 0o775 if seed % 7 == 0 else 0o664  # as `git archive` writes
                members.append(member)
    return _tar_bytes(members)


def test_official_images_become_the_preset_exemplars_end_to_end(server, cache, tmp_path):
    from lidar_ovseg_ros.vocabulary import load_preset, load_vocabulary

    top = "IGLOSS-c27c0edc8f71857785f15c8d9ee34cdacb0717f6"
    body = _official_layout_archive(top)
    # Tree ids as git computes them, from an unpacked copy of the same archive.
    ref = tmp_path / "ref"
    ref.mkdir()
    with tarfile.open(fileobj=io.BytesIO(body)) as t:
        t.extractall(ref, filter="data")
    real = CATALOG["igloss-prototype-images"]
    trees = {rel: git_tree_sha1(ref / top / rel) for rel in real.tree_sha1}
    entry = dataclasses.replace(real, url=server.url("/tarball"), tree_sha1=trees)
    server.files["/tarball"] = body

    plain = load_preset("nuscenes")
    assert all(c.exemplar_dir is None for c in plain.classes)  # not fetched: generator needed

    images = fetch(entry, progress=False)
    assert images == cache / "models" / real.name / IGLOSS_TEMPLATES
    installed = sorted(p.relative_to(cache / "models" / real.name) for p in images.rglob("*.png"))
    assert len(installed) == sum(1 + i % 2 for i in range(16)) + sum(1 + i % 2 for i in range(19))
    assert not (cache / "models" / real.name / "distill.py").exists()  # only the image folders

    for preset, names in (("nuscenes", NUSCENES_FOLDERS), ("semantickitti", KITTI_FOLDERS)):
        vocab = load_vocabulary(preset)
        assert vocab.names == names  # the presets use the official class names and order
        for i, c in enumerate(vocab.classes):
            assert c.exemplar_dir is not None and c.exemplar_dir.name == f"{i}_{c.name}"
            assert len(list(c.exemplar_dir.glob("*.png"))) == 1 + i % 2
    assert load_preset("nuscenes", official_images=False).classes[0].exemplar_dir is None
    assert verify(entry) == []

    # A changed image is caught by verify, and a tampered archive is refused at fetch time.
    victim = next(images.rglob("*.png"))
    victim.write_bytes(_png(999))
    assert any("sha256" in p for p in verify(entry))
    tampered = dataclasses.replace(entry, tree_sha1={k: "0" * 40 for k in trees})
    with pytest.raises(ChecksumMismatchError, match="git tree"):
        fetch(tampered, progress=False, force=True)
    assert victim.read_bytes() == _png(999)  # the installed copy was left as it was


def test_tree_ids_are_the_ones_git_computes(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.txt").write_bytes(b"hello\n")
    (tmp_path / "b.txt").write_bytes(b"")
    # Ids printed by `git write-tree` / `git rev-parse <tree>:a` for this exact layout.
    assert git_tree_sha1(tmp_path / "a") == "9fa6a6d71d42445400aef1e5fda85a9cd64eb517"
    assert git_tree_sha1(tmp_path) == "d5a147d2383516f6d45b6149ed5b6e115e5afccf"


# --- catalog and CLI ----------------------------------------------------------------------------


def test_catalog_entries_cite_their_source_and_licence():
    for e in CATALOG.values():
        assert e.source and e.licence and e.purpose, e.name
        if e.kind in ("file", "archive"):
            assert e.url.startswith("https://"), e.name
        if e.kind == "manual":
            assert e.manual.startswith(("https://drive.google.com/", "https://pan.baidu.com/")), (
                e.name
            )
    assert {e.name for e in entries_for("igloss")} >= {
        "igloss-scalr-plus", "dinov2-large", "igloss-prototype-images", "sd-turbo"
    }  # fmt: skip
    assert "non-commercial" in CATALOG["sd-turbo"].notice.lower()
    assert CATALOG["vlscene"].kind == "manual" and "GPL-3.0" in CATALOG["vlscene"].licence


def test_cache_root_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv("LIDAR_OVSEG_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "lidar_ovseg_ros"
    monkeypatch.setenv("LIDAR_OVSEG_CACHE", str(tmp_path / "env"))
    assert cache_root() == tmp_path / "env"
    assert cache_root(tmp_path / "arg") == tmp_path / "arg"


def test_cli_list_fetch_path_verify(server, cache, tmp_path, capsys):
    given = tmp_path / "pop3d_weights.pth"
    given.write_bytes(_checkpoint_bytes(7))
    assert cli_main(["weights", "path", "pop3d"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "lidar-ovseg weights fetch pop3d" in err
    assert cli_main(["weights", "fetch", "pop3d", "--file", str(given)]) == 0
    assert cli_main(["weights", "path", "pop3d"]) == 0
    out = capsys.readouterr().out
    assert out.strip().endswith("models/pop3d/pop3d_weights.pth")
    assert cli_main(["weights", "list", "--method", "pop3d"]) == 0
    out = capsys.readouterr().out
    assert "pop3d  [cached]" in out and "Apache-2.0" in out and "data.ciirc.cvut.cz" in out
    assert cli_main(["weights", "verify", "pop3d"]) == 0
    assert "pop3d: ok" in capsys.readouterr().out
    (cache / "models" / "pop3d" / "pop3d_weights.pth").write_bytes(b"broken")
    assert cli_main(["weights", "verify"]) == 1
    assert "DAMAGED" in capsys.readouterr().out
    assert cli_main(["weights", "fetch", "3d-avs-smap"]) == 1
    assert "drive.google.com" in capsys.readouterr().err
    assert cli_main(["weights", "fetch", "nope"]) == 2
    assert cli_main(["weights", "path", "pop3d", "--cache-dir", str(tmp_path / "elsewhere")]) == 2


# --- Hugging Face cache, demo and node start-up --------------------------------------------------


def _fake_hub_model(hub: Path, repo_id: str, files: dict[str, bytes]) -> Path:
    """A repository in the Hugging Face cache layout (refs, snapshots -> blobs by sha256)."""
    folder = hub / ("models--" + repo_id.replace("/", "--"))
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(commit)
    snap = folder / "snapshots" / commit
    (folder / "blobs").mkdir()
    for name, data in files.items():
        blob = folder / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snap / name).parent.mkdir(parents=True, exist_ok=True)
        (snap / name).symlink_to(blob)
    return snap


@pytest.fixture
def hub(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "hf"
    root.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(root))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return root


def test_hub_model_in_the_hugging_face_cache_is_found_and_verified(hub):
    from lidar_ovseg_ros.weights import require_hub_model

    entry = CATALOG["dinov2-large"]
    with pytest.raises(ModelNotAvailableError, match="fetch dinov2-large"):
        require_hub_model("facebook/dinov2-large")
    snap = _fake_hub_model(hub, entry.hf_repo, {"config.json": b"{}"})
    assert not status(entry).cached  # no weights: not complete
    weights = b"\x00" * 4096
    (snap / "model.safetensors").symlink_to(
        _fake_hub_model(hub / "other", "x/y", {"w": weights}) / "w"
    )
    assert status(entry).cached and model_path(entry) == snap
    require_hub_model("facebook/dinov2-large")
    require_hub_model("someone/unknown-model")  # not in the catalog: left to from_pretrained
    assert fetch(entry) == snap  # cached: no download even though HF_HUB_OFFLINE=1
    assert verify(entry) == []
    (snap / "model.safetensors").resolve().write_bytes(b"\x01" * 4096)
    assert any("model.safetensors" in p for p in verify(entry))


def test_demo_uses_the_cached_models_and_says_how_to_get_them(server, cache, hub, tmp_path, capsys):
    from lidar_ovseg_ros.commands import demo
    from lidar_ovseg_ros.resources import share_path

    opts = demo.DemoOptions(out=tmp_path / "out", params_file=share_path("config/lidar_ovseg.yaml"))
    profile, why = demo.resolve_profile(opts)
    assert profile == "tiny" and "igloss-scalr-plus" in why
    ckpt = tmp_path / "ckpt_last.pth"
    ckpt.write_bytes(_checkpoint_bytes(9))
    tar = tmp_path / CATALOG["igloss-scalr-plus"].filename
    with tarfile.open(tar, "w") as t:
        t.add(ckpt, arcname="ckpt/ckpt_last.pth")
    fetch("igloss-scalr-plus", file=tar)
    profile, why = demo.resolve_profile(opts)
    assert profile == "tiny" and "facebook/dinov2-large" in why
    _fake_hub_model(hub, "facebook/dinov2-large", {"config.json": b"{}", "model.safetensors": b"w"})
    profile, why = demo.resolve_profile(opts)
    assert profile == "tiny" and "stabilityai/sd-turbo" in why  # no images, no generator
    top = "IGLOSS-x"
    server.files["/t"] = _official_layout_archive(top)
    ref = tmp_path / "ref"
    with tarfile.open(fileobj=io.BytesIO(server.files["/t"])) as t:
        t.extractall(ref, filter="data")
    real = CATALOG["igloss-prototype-images"]
    trees = {rel: git_tree_sha1(ref / top / rel) for rel in real.tree_sha1}
    fetch(dataclasses.replace(real, url=server.url("/t"), tree_sha1=trees), progress=False)
    assert demo.resolve_profile(opts) == ("full", "checkpoint and models available")
    assert demo._generator_optional("stabilityai/sd-turbo")  # the 2nd pass uses a preset

    summary = {
        "profile": "tiny",
        "profile_reason": "r",
        "labels_meaningful": False,
        "passes": [],
        "processing_time_ms": {},
        "recorded_bag": "b",
    }
    demo._print_summary(summary, tmp_path)
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.strip() == demo.real_demo_command()
    assert "lidar-ovseg weights fetch --all-for igloss --all-for pop3d" in last


@pytest.mark.parametrize(
    ("module", "command"),
    [
        ("lidar_ovseg_ros.nodes.lidar_ovseg_node", "lidar-ovseg weights fetch igloss-scalr-plus"),
        ("lidar_ovseg_ros.nodes.camera_occupancy_node", "lidar-ovseg weights fetch pop3d"),
    ],
)
def test_node_without_model_stops_with_one_line_naming_the_fetch_command(module, command, cache):
    import subprocess
    import sys

    res = subprocess.run(
        [sys.executable, "-m", module, "--ros-args", "-p", "profile:=full"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 1
    lines = [line for line in res.stderr.splitlines() if "start-up failed" in line]
    assert len(lines) == 1 and command in lines[0], res.stderr[-2000:]
    assert "Traceback" not in res.stderr


def test_cli_segment_full_without_checkpoint_names_the_fetch_command(cache, capsys):
    code = cli_main(["segment", "--frame", "nuscenes", "--profile", "full", "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert "`lidar-ovseg weights fetch igloss-scalr-plus`" in err


def test_cli_fetch_all_for_offline_reports_each_model_and_sends_nothing(
    server, cache, hub, monkeypatch, capsys
):
    monkeypatch.setenv("LIDAR_OVSEG_OFFLINE", "1")
    assert cli_main(["weights", "fetch", "--all-for", "igloss", "--all-for", "pop3d"]) == 1
    err = capsys.readouterr().err
    for name in ("igloss-scalr-plus", "igloss-prototype-images", "dinov2-large", "pop3d"):
        assert f"'{name}'" in err, name
    assert "sd-turbo" not in err  # optional: only with --optional
    assert "github.com/valeoai/IGLOSS/releases/download/v0.1.0/" in err
    assert not list(cache.rglob("*.part")) and not (cache / "models").exists()


def _install_official_images(server: _Server, tmp_path: Path) -> Path:
    """Fetch an archive laid out like valeoai/IGLOSS through the real catalog entry (its URL
    pointed at the local server, its tree ids those of the generated images)."""
    top = "IGLOSS-local"
    body = _official_layout_archive(top)
    ref = tmp_path / "ref_images"
    with tarfile.open(fileobj=io.BytesIO(body)) as t:
        t.extractall(ref, filter="data")
    real = CATALOG["igloss-prototype-images"]
    trees = {rel: git_tree_sha1(ref / top / rel) for rel in real.tree_sha1}
    server.files["/igloss.tar.gz"] = body
    entry = dataclasses.replace(real, url=server.url("/igloss.tar.gz"), tree_sha1=trees)
    return fetch(entry, progress=False)


@pytest.mark.usefixtures("one_torch_thread")
def test_full_profile_with_no_paths_labels_a_scan_from_the_cache(server, cache, tmp_path):
    """profile 'full', checkpoint unset: the cached checkpoint is loaded, the nuscenes preset
    takes the cached official images, and the text-to-image model is never loaded."""
    from lidar_ovseg_ros.frames import load_nuscenes_frame
    from lidar_ovseg_ros.models.waffleiron import WaffleIron, WaffleIronConfig
    from lidar_ovseg_ros.prototypes.tiny_models import build_tiny_dinov2
    from lidar_ovseg_ros.segmentation.segmenter import LidarSegmenter, SegmenterConfig
    from lidar_ovseg_ros.vocabulary import NO_CLASS_ID, load_vocabulary

    wi = WaffleIronConfig.tiny()
    torch.manual_seed(4)
    ckpt = tmp_path / "ckpt_last.pth"
    torch.save({"model_point": WaffleIron(wi).state_dict()}, ckpt)
    tar = tmp_path / CATALOG["igloss-scalr-plus"].filename
    with tarfile.open(tar, "w") as t:
        t.add(ckpt, arcname="checkpoints/ckpt_last.pth")
    fetch("igloss-scalr-plus", file=tar)
    _install_official_images(server, tmp_path)
    build_tiny_dinov2(seed=0, hidden=wi.out_channels).save_pretrained(tmp_path / "dino")

    cfg = SegmenterConfig(
        profile="full",
        backbone="tiny",
        feature_model=str(tmp_path / "dino"),  # a local folder (DINOv2-large is not here)
        cache_dir=str(tmp_path / "protos"),
        device="cpu",
    )
    seg = LidarSegmenter.from_config(cfg)
    vocab = load_vocabulary("nuscenes")
    seg.activate(seg.prepare_vocabulary(vocab))
    assert set(seg.active.prototypes.sources) == {"exemplar"}
    assert seg.prototype_bank.generator._pipe is None  # sd-turbo never loaded
    frame = load_nuscenes_frame()
    result = seg.segment(frame.points[:, :4])
    labelled = result.labels[result.labels != NO_CLASS_ID]
    assert len(labelled) > 0.9 * len(frame.points) and labelled.max() < len(vocab)


def test_3d_avs_files_from_the_file_sharing_page_resolve_once_installed(cache, tmp_path):
    from lidar_ovseg_ros.autovocab.pipeline import AutoVocabConfig

    with pytest.raises(ValueError, match="smap_checkpoint is required") as err:
        AutoVocabConfig(profile="full")
    assert "fetch 3d-avs-smap --file /path/to/smap_model_epoch_20.pth.tar" in str(err.value)
    assert "drive.google.com" in str(err.value) and "\n" not in str(err.value)
    # `.pth.tar` files are torch checkpoints, not archives (they used to be unpacked).
    files = (("3d-avs-smap", "smap.pth.tar"), ("clipcap-coco", "coco.pt"))
    files += (("openscene-nuscenes-openseg", "nuscenes_openseg.pth.tar"),)
    for name, filename in files:
        (tmp_path / filename).write_bytes(name.encode())
        fetch(name, file=tmp_path / filename)
    cfg = AutoVocabConfig(profile="full")
    assert Path(cfg.smap_checkpoint) == model_path("3d-avs-smap")
    assert Path(cfg.clipcap_weights).read_bytes() == b"clipcap-coco"
    assert resolve_model_file(None, "openscene-nuscenes-openseg").read_bytes() == (
        b"openscene-nuscenes-openseg"
    )


def test_generator_is_opt_in_and_names_both_ways_out(hub):
    from lidar_ovseg_ros.prototypes.generation import GenerationConfig, TextToImageGenerator

    gen = TextToImageGenerator.from_pretrained(GenerationConfig(model_id="stabilityai/sd-turbo"))
    with pytest.raises(ModelNotAvailableError) as err:
        gen.pipe  # noqa: B018 - loading is what is refused
    text = str(err.value)
    assert "`lidar-ovseg weights fetch sd-turbo`" in text
    assert "igloss-prototype-images" in text and "\n" not in text


def test_archive_without_the_checkpoint_is_refused_and_the_download_reused(server, cache):
    body = _tar_bytes([_file("logs/model.pth", b"not the expected name")])
    entry = _archive_entry(server, body)
    with pytest.raises(FileNotFoundError, match=r"ckpt_last\.pth.*holds logs/model\.pth"):
        fetch(entry, progress=False)
    assert not status(entry).cached
    server.files["/model.tar.gz"] = _tar_bytes([_file("logs/ckpt_last.pth", b"ok")])
    with pytest.raises(FileNotFoundError):  # the complete download is unpacked again, not fetched
        fetch(entry, progress=False)
    assert len(server.requests) == 1
    assert fetch(entry, progress=False, force=True).read_bytes() == b"ok"  # --force downloads
    assert len(server.requests) == 2


def test_a_second_concurrent_fetch_fails_at_once(server, cache):
    import fcntl

    entry = _entry(server, "/ckpt.pth", b"weights")
    lock = cache / "downloads" / entry.name / ".lock"
    lock.parent.mkdir(parents=True)
    with open(lock, "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(FetchError, match="another process is fetching 'test-model'"):
            fetch(entry, progress=False)
    assert server.requests == []
    assert fetch(entry, progress=False).read_bytes() == b"weights"
