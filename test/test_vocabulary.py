"""Vocabulary schema, validation and presets."""

from pathlib import Path

import numpy as np
import pytest
import yaml

from lidar_ovseg_ros.vocabulary import (
    MAX_CLASSES,
    NO_CLASS_COLOR,
    NO_CLASS_ID,
    Vocabulary,
    VocabularyError,
    load_preset,
    load_vocabulary,
    preset_names,
)


def test_presets_have_official_classes_and_palettes():
    assert {"nuscenes", "semantickitti"} <= set(preset_names())
    nus = load_preset("nuscenes")
    assert len(nus) == 16
    assert nus.names[0] == "barrier" and nus.names[-1] == "vegetation"
    assert nus.classes[nus.index("car")].color == (255, 158, 0)
    assert nus.classes[nus.index("driveable_surface")].color == (0, 207, 191)
    kitti = load_preset("semantickitti")
    assert len(kitti) == 19
    assert kitti.names[:2] == ["car", "bicycle"] and kitti.names[-1] == "traffic-sign"
    # semantic-kitti.yaml stores BGR [245, 150, 100] for car; we keep RGB.
    assert kitti.classes[0].color == (100, 150, 245)
    for vocab in (nus, kitti):
        assert all(c.prompts for c in vocab.classes)


def test_from_names_gives_prompts_and_distinct_colors():
    v = Vocabulary.from_names(["car", "traffic_cone", "person"])
    assert v.names == ["car", "traffic_cone", "person"]
    assert v.classes[1].prompts == ("traffic cone",)
    assert len({c.color for c in v.classes}) == 3


def test_colors_for_maps_no_class_to_grey():
    v = Vocabulary.from_names(["a", "b"])
    labels = np.array([0, 1, NO_CLASS_ID, 7], dtype=np.uint16)
    colors = v.colors_for(labels)
    assert colors.shape == (4, 3) and colors.dtype == np.uint8
    assert tuple(colors[0]) == v.classes[0].color
    assert tuple(colors[2]) == NO_CLASS_COLOR and tuple(colors[3]) == NO_CLASS_COLOR


def test_yaml_round_trip(tmp_path: Path):
    v = load_preset("nuscenes")
    path = tmp_path / "v.yaml"
    path.write_text(yaml.safe_dump(v.to_dict()))
    assert Vocabulary.from_yaml(path) == v
    assert load_vocabulary(path) == v
    assert load_vocabulary("semantickitti").name == "semantickitti"


def test_hex_colors_and_exemplar_folder(tmp_path: Path):
    (tmp_path / "cones").mkdir()
    path = tmp_path / "v.yaml"
    path.write_text(
        "classes:\n"
        "  - {name: cone, color: '#ff8000', exemplars: cones}\n"
        "  - {name: car, prompts: a red car}\n"
    )
    v = Vocabulary.from_yaml(path)
    assert v.classes[0].color == (255, 128, 0)
    assert v.classes[0].exemplar_dir == (tmp_path / "cones").resolve()
    assert v.classes[1].prompts == ("a red car",)


@pytest.mark.parametrize(
    ("doc", "needle"),
    [
        ({"classes": []}, "empty"),
        ({"classes": [{"name": "car"}, {"name": "Car"}]}, "duplicate of class #0"),
        ({"classes": [{"name": "  "}]}, "class #0: the name is empty"),
        ({"classes": [{"name": "car", "color": [300, 0, 0]}]}, "class #0 ('car'): colour"),
        ({"classes": [{"name": "car", "color": "red"}]}, "'red' is not '#rrggbb'"),
        ({"classes": [{"name": "car", "prompts": []}]}, "'prompts' must be a non-empty"),
        ({"classes": [{"name": "car", "colour": [1, 2, 3]}]}, "unknown keys ['colour']"),
        ({"classes": [{"name": "car", "exemplars": "/nonexistent/x"}]}, "exemplar folder"),
        ({"classes": [{"name": f"c{i}"} for i in range(MAX_CLASSES + 1)]}, "too many"),
        ({"klasses": []}, "unknown top-level keys"),
        ([1, 2], "must hold a mapping"),
    ],
)
def test_invalid_vocabularies_name_the_entry(doc, needle):
    with pytest.raises(VocabularyError) as err:
        Vocabulary.from_dict(doc)
    assert needle in str(err.value)


def test_missing_and_broken_files(tmp_path: Path):
    with pytest.raises(VocabularyError, match=r"not found: .*nope\.yaml"):
        Vocabulary.from_yaml(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("classes: [\n")
    with pytest.raises(VocabularyError, match="not valid YAML"):
        Vocabulary.from_yaml(bad)
    with pytest.raises(VocabularyError, match="no vocabulary preset 'cityscapes'"):
        load_preset("cityscapes")


def test_fingerprint_tracks_what_changes_labels():
    a = Vocabulary.from_names(["car", "tree"])
    b = Vocabulary.from_names(["car", "tree"])
    c = Vocabulary.from_names(["tree", "car"])
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()


def test_every_file_error_is_a_vocabulary_error(tmp_path: Path):
    """Decode, YAML, recursion, I/O, directory, size and type errors all name their reason."""
    from lidar_ovseg_ros.vocabulary import MAX_FILE_BYTES

    cases = {
        "latin1.yaml": ("classes: [caf\xe9]\n".encode("latin-1"), "not UTF-8"),
        "deep.yaml": (b"classes: " + b"[" * 20_000 + b"]" * 20_000, "nested too deep"),
        "big.yaml": (b"#" * (MAX_FILE_BYTES + 1), "limit"),
        "bools.yaml": (b"classes: [true, false]\n", "got True"),
        "num.yaml": (b"classes:\n  - name: 3\n", "names must be strings"),
    }
    for name, (data, needle) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(VocabularyError, match=needle):
            load_vocabulary(tmp_path / name)
    (tmp_path / "dir.yaml").mkdir()
    with pytest.raises(VocabularyError, match="is a directory"):
        load_vocabulary(tmp_path / "dir.yaml")
    with pytest.raises(VocabularyError, match="Input/output error"):
        load_vocabulary("/proc/self/mem")
    with pytest.raises(VocabularyError):
        load_vocabulary("x" * 5000)  # a preset name too long for the file system
    with pytest.raises(VocabularyError, match="empty"):
        load_vocabulary("  ")
    with pytest.raises(VocabularyError, match="must be strings"):
        Vocabulary.from_names([True, False])  # type: ignore[list-item]
