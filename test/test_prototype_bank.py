"""The prototype bank: per-image disk cache, incremental builds, corruption and interruption
safety, exemplar folders, cancellation, and cache keys (tiny real models, no hub)."""

from __future__ import annotations

import logging
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lidar_ovseg_ros.frames import FRAMES_DIR
from lidar_ovseg_ros.prototypes.bank import (
    BuildCancelled,
    PrototypeBank,
    PrototypeBankError,
    PrototypeSet,
)
from lidar_ovseg_ros.prototypes.generation import (
    GenerationConfig,
    TextToImageGenerator,
    plan_images,
)
from lidar_ovseg_ros.prototypes.image_features import DinoV2FeatureExtractor
from lidar_ovseg_ros.prototypes.tiny_models import (
    build_tiny_dinov2,
    build_tiny_feature_extractor,
    build_tiny_text_to_image_pipeline,
)
from lidar_ovseg_ros.vocabulary import Vocabulary

GEN = GenerationConfig(
    model_id="tiny", images_per_class=2, height=32, width=32, batch_size=2, device="cpu"
)
CLASSES = [
    {"name": "car", "prompts": ["a car"]},
    {"name": "pedestrian", "prompts": ["a pedestrian walking", "a person standing"]},
]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def pipe():
    return build_tiny_text_to_image_pipeline(seed=0)


@pytest.fixture(scope="module")
def extractor():
    return build_tiny_feature_extractor(seed=0)


def _bank(cache: Path, extractor, pipe, config: GenerationConfig = GEN, **kw) -> PrototypeBank:
    gen = TextToImageGenerator.from_pipeline(pipe, config) if pipe is not None else None
    return PrototypeBank(
        cache, extractor, generator=gen, generation_config=config, show_progress=False, **kw
    )


def _vocab(classes=CLASSES) -> Vocabulary:
    return Vocabulary.from_dict({"name": "test", "classes": classes})


def _cache_files(cache: Path) -> list[Path]:
    return sorted(p for p in cache.rglob("*") if p.is_file())


def test_second_build_does_no_work_and_returns_the_same_set(tmp_path, extractor, pipe):
    bank = _bank(tmp_path, extractor, pipe)
    seen = []
    first = bank.build(_vocab(), progress=lambda d, t, c: seen.append((d, t, c)))

    assert isinstance(first, PrototypeSet)
    assert first.features.shape == (4, extractor.dim) and first.features.dtype == np.float32
    assert first.labels.dtype == np.int64 and first.labels.tolist() == [0, 0, 1, 1]
    assert first.class_names == ["car", "pedestrian"]
    assert first.sources == ["generated"] * 4
    assert first.counts().tolist() == [2, 2]
    norms = np.linalg.norm(first.features, axis=1)
    assert np.all((norms > 0.05) & (norms <= 1 + 1e-6))  # means of unit vectors, unnormalised
    assert seen == [(1, 4, "car"), (2, 4, "car"), (3, 4, "pedestrian"), (4, 4, "pedestrian")]
    s = bank.last_stats
    assert (s.total, s.cached, s.generated, s.extracted, s.rebuilt) == (4, 0, 4, 4, 0)
    assert len(list((tmp_path / "features").glob("*.npy"))) == 4
    assert len(list((tmp_path / "images").glob("*.png"))) == 4

    # The same vocabulary again, from a brand-new bank on the same folder: only file reads.
    calls, gen_calls = extractor.calls, 0
    bank2 = _bank(tmp_path, extractor, pipe)
    second = bank2.build(_vocab())
    assert extractor.calls == calls and bank2.generator.calls == gen_calls
    assert (bank2.last_stats.cached, bank2.last_stats.extracted) == (4, 0)
    np.testing.assert_array_equal(second.features, first.features)
    assert second.fingerprint() == first.fingerprint()
    # The cached features are exactly the features of the generated images.
    requests = [r for c in _vocab().classes for r in plan_images(c, GEN)]
    images = bank.generator.generate(requests)
    np.testing.assert_allclose(extractor.extract(images), first.features, rtol=0, atol=1e-6)


def test_adding_a_class_builds_only_that_class(tmp_path, extractor, pipe):
    bank = _bank(tmp_path, extractor, pipe)
    before = bank.build(_vocab())
    bigger = [
        CLASSES[0],
        {"name": "traffic_cone", "prompts": ["an orange traffic cone"]},
        CLASSES[1],
    ]
    after = bank.build(_vocab(bigger))
    s = bank.last_stats
    assert (s.total, s.cached, s.generated, s.extracted) == (6, 4, 2, 2)
    assert bank.generator.images_generated == 4 + 2
    assert after.labels.tolist() == [0, 0, 1, 1, 2, 2]  # class ids follow the new order
    np.testing.assert_array_equal(after.features[[0, 1, 4, 5]], before.features)
    # Removing a class costs nothing either.
    bank.build(_vocab([CLASSES[1]]))
    assert (bank.last_stats.cached, bank.last_stats.extracted) == (2, 0)


def test_corrupt_entries_are_rebuilt_with_a_warning(tmp_path, extractor, pipe, caplog):
    bank = _bank(tmp_path, extractor, pipe)
    good = bank.build(_vocab())
    feats = sorted((tmp_path / "features").glob("*.npy"))
    feats[0].write_bytes(b"\x93NUMPY garbage")  # unreadable
    np.save(feats[1], np.zeros(7, np.float32))  # readable, wrong size
    with caplog.at_level(logging.WARNING, logger="lidar_ovseg_ros.prototypes.bank"):
        rebuilt = bank.build(_vocab())
    s = bank.last_stats
    assert (s.rebuilt, s.cached, s.generated, s.extracted) == (2, 2, 0, 2)
    assert sum("unreadable" in r.getMessage() for r in caplog.records) == 2
    np.testing.assert_allclose(rebuilt.features, good.features, rtol=0, atol=1e-6)
    for p in feats:
        assert np.load(p, allow_pickle=False).shape == (extractor.dim,)

    # A truncated cached image is regenerated when its feature is needed.
    for p in feats:
        p.unlink()
    png = sorted((tmp_path / "images").glob("*.png"))[0]
    png.write_bytes(png.read_bytes()[:40])
    again = bank.build(_vocab())
    s = bank.last_stats
    assert (s.rebuilt, s.generated, s.extracted) == (1, 1, 4)
    # Regenerated alone rather than in a batch of 2: pixels may differ by rounding (1/255).
    np.testing.assert_allclose(again.features, good.features, rtol=0, atol=1e-3)
    with Image.open(png) as img:
        img.load()


def test_interrupted_build_leaves_a_valid_cache(tmp_path, extractor, pipe):
    bank = _bank(tmp_path, extractor, pipe, replace(GEN, batch_size=1))

    def crash_after_three(done, total, name):
        if done == 3:
            raise RuntimeError("power cut")

    with pytest.raises(RuntimeError, match="power cut"):
        bank.build(_vocab(), progress=crash_after_three)
    files = _cache_files(tmp_path)
    assert not [p for p in files if p.suffix == ".tmp"]  # no partial files left behind
    assert len(list((tmp_path / "features").glob("*.npy"))) == 3
    for p in (tmp_path / "features").glob("*.npy"):
        assert np.isfinite(np.load(p, allow_pickle=False)).all()
    # A leftover temporary file from a killed writer is ignored.
    (tmp_path / "features" / ".x.npy.abc.tmp").write_bytes(b"partial")

    resumed = bank.build(_vocab())
    assert (bank.last_stats.cached, bank.last_stats.extracted) == (3, 1)
    fresh = _bank(tmp_path / "fresh", extractor, pipe, replace(GEN, batch_size=1)).build(_vocab())
    np.testing.assert_allclose(resumed.features, fresh.features, rtol=0, atol=1e-6)


def test_cancel_stops_between_images(tmp_path, extractor, pipe):
    bank = _bank(tmp_path, extractor, pipe, replace(GEN, batch_size=1))
    cancel = threading.Event()

    def cancel_after_two(done, total, name):
        if done == 2:
            cancel.set()

    with pytest.raises(BuildCancelled):
        bank.build(_vocab(), progress=cancel_after_two, cancel=cancel)
    assert bank.last_stats.extracted == 2
    cancel.clear()
    bank.build(_vocab(), cancel=cancel)
    assert (bank.last_stats.cached, bank.last_stats.extracted) == (2, 2)
    cancel.set()
    with pytest.raises(BuildCancelled):
        bank.build(_vocab(), cancel=cancel)  # set before the start: nothing is done


def _write_exemplars(folder: Path) -> list[Path]:
    """Three crops of the real nuScenes front camera image, plus a non-image file."""
    folder.mkdir(parents=True)
    cam = Image.open(FRAMES_DIR / "nuscenes_frame" / "CAM_FRONT.jpg").convert("RGB")
    paths = []
    for i, box in enumerate([(600, 400, 760, 560), (900, 420, 1000, 520), (100, 500, 300, 700)]):
        path = folder / f"{['b', 'a', 'c'][i]}_{i}.{['png', 'jpg', 'PNG'][i]}"
        cam.crop(box).save(path, format="PNG" if path.suffix.lower() == ".png" else "JPEG")
        paths.append(path)
    (folder / "notes.txt").write_text("not an image")
    return sorted(paths)


def test_exemplar_folder_source(tmp_path, extractor):
    paths = _write_exemplars(tmp_path / "ex")
    vocab = _vocab([{"name": "thing", "exemplars": str(tmp_path / "ex")}])
    bank = _bank(tmp_path / "cache", extractor, None)  # no generator needed for exemplars
    protos = bank.build(vocab)
    assert protos.sources == ["exemplar"] * 3 and protos.labels.tolist() == [0, 0, 0]
    expect = extractor.extract([Image.open(p) for p in paths])  # sorted file order
    np.testing.assert_allclose(protos.features, expect, rtol=0, atol=1e-6)
    assert not (tmp_path / "cache" / "images").exists()  # exemplars are not copied

    # Replacing one file's content rebuilds that image only.
    Image.fromarray(np.full((50, 80, 3), 200, np.uint8)).save(paths[0], format="JPEG")
    again = bank.build(vocab)
    assert (bank.last_stats.cached, bank.last_stats.extracted) == (2, 1)
    np.testing.assert_array_equal(again.features[1:], protos.features[1:])

    # A class that would need generated images, in a bank without a generator, is named.
    with pytest.raises(PrototypeBankError, match="'car'"):
        bank.build(_vocab([{"name": "thing", "exemplars": str(tmp_path / "ex")}, CLASSES[0]]))


def test_empty_exemplar_folder_is_an_error(tmp_path, extractor):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.md").write_text("x")
    vocab = _vocab([{"name": "ghost", "exemplars": str(tmp_path / "empty")}])
    with pytest.raises(PrototypeBankError, match=r"'ghost'.*no"):
        _bank(tmp_path / "cache", extractor, None).build(vocab)


def test_keys_follow_model_seed_and_resolution(tmp_path, extractor, pipe):
    base = _bank(tmp_path, extractor, pipe)
    ref = base.build(_vocab())
    assert base.last_stats.generated == 4

    # Other generation seed or resolution: new images, new features.
    for cfg in (replace(GEN, seed=1), replace(GEN, height=40)):
        bank = _bank(tmp_path, extractor, pipe, cfg)
        out = bank.build(_vocab())
        assert (bank.last_stats.cached, bank.last_stats.generated) == (0, 4)
        assert np.abs(out.features - ref.features).max() > 1e-4

    # Another generator model (another weights digest): new images.
    other_pipe = build_tiny_text_to_image_pipeline(seed=1)
    bank = _bank(tmp_path, extractor, other_pipe)
    bank.build(_vocab())
    assert bank.last_stats.generated == 4

    # Another feature model or feature resolution: cached images reused, features recomputed.
    for ext in (
        build_tiny_feature_extractor(seed=1),
        DinoV2FeatureExtractor(build_tiny_dinov2(0), replace(extractor.config, image_size=42)),
    ):
        bank = _bank(tmp_path, ext, pipe)
        bank.build(_vocab())
        s = bank.last_stats
        assert (s.cached, s.generated, s.extracted) == (0, 0, 4)

    # Nothing that does not change the numbers changes a key.
    bank = _bank(tmp_path, extractor, pipe, replace(GEN, batch_size=3))
    np.testing.assert_array_equal(bank.build(_vocab()).features, ref.features)
    assert bank.last_stats.cached == 4


def test_without_kept_images_features_still_cache(tmp_path, extractor, pipe):
    bank = _bank(tmp_path, extractor, pipe, keep_images=False)
    bank.build(_vocab())
    assert not (tmp_path / "images").exists()
    bank.build(_vocab())
    assert bank.last_stats.cached == 4


def test_prototype_set_validation():
    with pytest.raises(ValueError, match="labels"):
        PrototypeSet(np.zeros((2, 4)), np.array([0, 3]), ["a", "b"], ["exemplar"] * 2)
    with pytest.raises(ValueError, match="2 features"):
        PrototypeSet(np.zeros((2, 4)), np.array([0]), ["a"], ["exemplar"])
