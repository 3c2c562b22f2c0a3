"""The prototype bank: image features of every class of a vocabulary, cached on disk per image.

Each class gets prototype images from its exemplar folder (all .png/.jpg/.jpeg files, sorted) or,
without one, from the text-to-image generator; each image gets one IGLOSS feature vector. Both are
cached one file per image, under keys that name everything the bytes depend on:

- `features/<key>.npy`: key = feature extractor (model id or weights digest, resize and
  normalisation settings) + image key;
- `images/<key>.png` (generated images): key = generator (model id or weights digest, dtype) +
  prompt, template, seed, index, resolution, steps, guidance.
  Exemplar images are keyed by the sha256 of the file's bytes.

So rebuilding a vocabulary costs only file reads, adding a class builds only that class, and
changing the feature model reuses the generated images. Files are written atomically (temporary
file in the same folder, fsync, `os.replace`), so an interrupted build leaves only complete
entries; an unreadable entry is rebuilt with a warning. Only `.npy` (loaded with
`allow_pickle=False`) and `.png` are ever read: no pickle.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps
from tqdm import tqdm

from ..vocabulary import VocabClass, Vocabulary
from .generation import GenerationConfig, ImageRequest, TextToImageGenerator, plan_images
from .image_features import DinoV2FeatureExtractor, to_rgb_array

logger = logging.getLogger(__name__)

EXEMPLAR_SUFFIXES = (".png", ".jpg", ".jpeg")
SOURCE_GENERATED = "generated"
SOURCE_EXEMPLAR = "exemplar"

ProgressCallback = Callable[[int, int, str], None]


class PrototypeBankError(ValueError):
    """A vocabulary the bank cannot build prototypes for; the message names the class."""


class BuildCancelled(Exception):
    """`PrototypeBank.build` stopped because its `cancel` event was set; finished entries stay
    in the cache, so the next build resumes from there."""


@dataclass
class PrototypeSet:
    """Prototype features of a vocabulary, in vocabulary order (class 0's images first).

    `features` are NOT L2-normalised: each is the mean of unit vectors (norm <= 1), exactly what
    IGLOSS stores; its classifier normalises them before fitting.
    """

    features: np.ndarray
    """[P, D] float32, one row per prototype image."""
    labels: np.ndarray
    """[P] int64 class ids (positions in `class_names`)."""
    class_names: list[str]
    sources: list[str]
    """[P] "generated" or "exemplar"."""

    def __post_init__(self) -> None:
        self.features = np.ascontiguousarray(self.features, dtype=np.float32)
        self.labels = np.ascontiguousarray(self.labels, dtype=np.int64)
        if self.features.ndim != 2:
            raise ValueError(f"features must be [P, D], got shape {self.features.shape}")
        p = len(self.features)
        if self.labels.shape != (p,) or len(self.sources) != p:
            raise ValueError(
                f"{p} features but {self.labels.shape[0]} labels and {len(self.sources)} sources"
            )
        if p and (self.labels.min() < 0 or self.labels.max() >= len(self.class_names)):
            raise ValueError(f"labels must lie in [0, {len(self.class_names)})")

    def __len__(self) -> int:
        return len(self.features)

    @property
    def dim(self) -> int:
        return int(self.features.shape[1])

    def counts(self) -> np.ndarray:
        """[K] number of prototypes per class."""
        return np.bincount(self.labels, minlength=len(self.class_names))

    def fingerprint(self) -> str:
        """Hash of features, labels and names: identifies a fitted classifier's inputs."""
        h = hashlib.sha256(self.features.tobytes())
        h.update(self.labels.tobytes())
        h.update(json.dumps([self.class_names, self.sources]).encode())
        return h.hexdigest()[:16]


@dataclass
class BuildStats:
    """What the last `build` did (also logged)."""

    total: int = 0
    cached: int = 0
    generated: int = 0
    extracted: int = 0
    rebuilt: int = 0
    """Entries found unreadable or invalid in the cache and rebuilt."""
    seconds: float = 0.0


@dataclass
class _Entry:
    class_id: int
    class_name: str
    source: str
    image_key: str
    feature_key: str
    exemplar: Path | None = None
    request: ImageRequest | None = None
    feature: np.ndarray | None = field(default=None, repr=False)


def atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Write `path` so that readers see the old file or the complete new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename durable where directories can be synced
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def exemplar_files(folder: Path) -> list[Path]:
    """The images of an exemplar folder: .png/.jpg/.jpeg (any case), sorted by name."""
    return sorted(
        p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in EXEMPLAR_SUFFIXES
    )


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class PrototypeBank:
    """Builds `PrototypeSet`s for vocabularies, caching every image's feature under `cache_dir`.

    `generator` is needed only for classes without an exemplar folder, and only for images not
    yet cached. `generation_config` (default: the generator's) sets how many images per class,
    the prompt templates, seeds and rendering. One build runs at a time per bank (a lock).
    """

    def __init__(
        self,
        cache_dir: str | Path,
        feature_extractor: DinoV2FeatureExtractor,
        generator: TextToImageGenerator | None = None,
        generation_config: GenerationConfig | None = None,
        keep_images: bool = True,
        show_progress: bool = True,
    ) -> None:
        self.cache_dir = Path(cache_dir).expanduser()
        self.extractor = feature_extractor
        self.generator = generator
        if generation_config is None:
            generation_config = generator.config if generator is not None else GenerationConfig()
        self.generation_config = generation_config
        self.keep_images = keep_images
        """Also cache generated images (so a new feature model does not regenerate them)."""
        self.show_progress = show_progress
        self.last_stats = BuildStats()
        self._lock = threading.Lock()

    @property
    def features_dir(self) -> Path:
        return self.cache_dir / "features"

    @property
    def images_dir(self) -> Path:
        return self.cache_dir / "images"

    # --- planning --------------------------------------------------------------------------------

    def _feature_key(self, image_key: str) -> str:
        payload = json.dumps({"features": self.extractor.key, "image": image_key}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:32]

    def _plan_class(self, class_id: int, c: VocabClass) -> list[_Entry]:
        entries = []
        if c.exemplar_dir is not None:
            folder = Path(c.exemplar_dir)
            if not folder.is_dir():
                raise PrototypeBankError(f"class '{c.name}': exemplar folder not found: {folder}")
            files = exemplar_files(folder)
            if not files:
                raise PrototypeBankError(
                    f"class '{c.name}': exemplar folder {folder} has no "
                    f"{'/'.join(EXEMPLAR_SUFFIXES)} images"
                )
            for path in files:
                image_key = f"exemplar:{_file_digest(path)}"
                entries.append(
                    _Entry(
                        class_id,
                        c.name,
                        SOURCE_EXEMPLAR,
                        image_key,
                        self._feature_key(image_key),
                        exemplar=path,
                    )
                )
            return entries
        if self.generator is None:
            raise PrototypeBankError(
                f"class '{c.name}' has no exemplar folder and the bank has no image generator"
            )
        for req in plan_images(c, self.generation_config):
            image_key = self.generator.image_key(req, self.generation_config)
            entries.append(
                _Entry(
                    class_id,
                    c.name,
                    SOURCE_GENERATED,
                    image_key,
                    self._feature_key(image_key),
                    request=req,
                )
            )
        return entries

    # --- cache -----------------------------------------------------------------------------------

    def _feature_path(self, entry: _Entry) -> Path:
        return self.features_dir / f"{entry.feature_key}.npy"

    def _image_path(self, entry: _Entry) -> Path:
        return self.images_dir / f"{entry.image_key}.png"

    def _load_feature(self, entry: _Entry, dim: int | None) -> np.ndarray | None:
        """The cached feature, or None if absent; an invalid file is reported and ignored."""
        path = self._feature_path(entry)
        if not path.is_file():
            return None
        try:
            arr = np.load(path, allow_pickle=False)
            ok = (
                isinstance(arr, np.ndarray)
                and arr.dtype == np.float32
                and arr.ndim == 1
                and arr.size > 0
                and (dim is None or arr.size == dim)
                and bool(np.isfinite(arr).all())
            )
            if not ok:
                raise ValueError(f"unexpected content {getattr(arr, 'dtype', '?')} {arr.shape}")
        except Exception as exc:
            logger.warning("prototype cache entry %s is unreadable (%s); rebuilding it", path, exc)
            self.last_stats.rebuilt += 1
            return None
        return arr

    def _load_cached_image(self, entry: _Entry) -> np.ndarray | None:
        path = self._image_path(entry)
        if not path.is_file():
            return None
        try:
            with Image.open(path) as img:
                img.load()
                return to_rgb_array(img)
        except Exception as exc:
            logger.warning("cached prototype image %s is unreadable (%s); regenerating", path, exc)
            self.last_stats.rebuilt += 1
            return None

    def _save_image(self, entry: _Entry, image: Image.Image) -> None:
        atomic_write(self._image_path(entry), lambda f: image.save(f, format="PNG"))

    def _save_feature(self, entry: _Entry, feature: np.ndarray) -> None:
        arr = np.ascontiguousarray(feature, dtype=np.float32)
        atomic_write(self._feature_path(entry), lambda f: np.save(f, arr, allow_pickle=False))

    # --- building --------------------------------------------------------------------------------

    def _images_for(self, entries: Sequence[_Entry]) -> list[np.ndarray]:
        images: list[np.ndarray | None] = [None] * len(entries)
        to_generate = []
        for i, e in enumerate(entries):
            if e.exemplar is not None:
                try:
                    with Image.open(e.exemplar) as img:
                        # Phone photos store their rotation in EXIF; show them upright.
                        images[i] = to_rgb_array(ImageOps.exif_transpose(img))
                except Exception as exc:
                    raise PrototypeBankError(
                        f"class '{e.class_name}': cannot read exemplar image {e.exemplar}: {exc}"
                    ) from exc
            else:
                cached = self._load_cached_image(e) if self.keep_images else None
                if cached is None:
                    to_generate.append(i)
                images[i] = cached
        if to_generate:
            assert self.generator is not None
            reqs = [entries[i].request for i in to_generate]
            generated = self.generator.generate(reqs, self.generation_config)
            self.last_stats.generated += len(generated)
            for i, img in zip(to_generate, generated):
                if self.keep_images:
                    self._save_image(entries[i], img)
                images[i] = to_rgb_array(img)
        return images  # type: ignore[return-value]

    def build(
        self,
        vocabulary: Vocabulary,
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> PrototypeSet:
        """Prototype features of every class of `vocabulary`, from the cache where possible.

        `progress(done, total, class_name)` is called after each image (cached ones included);
        setting `cancel` stops the build with `BuildCancelled` before the next image, or the next
        batch of images to generate (`generation_config.batch_size`). Exceptions leave the cache
        valid: every finished image is kept, nothing partial is written.
        """
        with self._lock:
            return self._build(vocabulary, progress, cancel)

    def _build(
        self,
        vocabulary: Vocabulary,
        progress: ProgressCallback | None,
        cancel: threading.Event | None,
    ) -> PrototypeSet:
        t0 = time.perf_counter()
        self.last_stats = stats = BuildStats()
        entries: list[_Entry] = []
        for class_id, c in enumerate(vocabulary.classes):
            entries.extend(self._plan_class(class_id, c))
        stats.total = len(entries)
        done = 0

        def step(entry: _Entry, bar: tqdm) -> None:
            nonlocal done
            done += 1
            bar.update(1)
            if progress is not None:
                progress(done, stats.total, entry.class_name)

        def check_cancel() -> None:
            if cancel is not None and cancel.is_set():
                raise BuildCancelled(f"prototype build cancelled after {done}/{stats.total} images")

        dim = self.extractor.dim
        bar = tqdm(
            total=stats.total,
            desc="prototypes",
            unit="img",
            leave=False,
            disable=not self.show_progress,
        )
        try:
            missing: list[_Entry] = []
            for e in entries:
                check_cancel()
                e.feature = self._load_feature(e, dim)
                if e.feature is None:
                    missing.append(e)
                else:
                    stats.cached += 1
                    step(e, bar)
            batch = max(1, min(self.generation_config.batch_size, self.extractor.config.batch_size))
            for lo in range(0, len(missing), batch):
                check_cancel()
                chunk = missing[lo : lo + batch]
                feats = self.extractor.extract(self._images_for(chunk))
                stats.extracted += len(chunk)
                for e, f in zip(chunk, feats):
                    self._save_feature(e, f)
                    e.feature = f
                    step(e, bar)
        finally:
            bar.close()
            stats.seconds = time.perf_counter() - t0
        logger.info(
            "prototypes for '%s': %d images (%d cached, %d generated, %d extracted) in %.2f s",
            vocabulary.name,
            stats.total,
            stats.cached,
            stats.generated,
            stats.extracted,
            stats.seconds,
        )
        return PrototypeSet(
            features=np.stack([e.feature for e in entries]).astype(np.float32),
            labels=np.asarray([e.class_id for e in entries], np.int64),
            class_names=vocabulary.names,
            sources=[e.source for e in entries],
        )
