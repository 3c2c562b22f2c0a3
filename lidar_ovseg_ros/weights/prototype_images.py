"""The IGLOSS paper's own prototype images as exemplars of the nuscenes / semantickitti presets.

The official repository keeps them as `<folder>/<index>_<class>/*.png`, `<index>` and `<class>`
from its `CLASS_NAMES_NUSCENES` / `CLASS_NAMES_SEMANTIC_KITTI` lists
(valeoai/IGLOSS open_voc_segmentation/igloss_utils.py, read by extract_image_features.py as
`f"{ind}_{cat}"`). The presets list the same classes in the same order under the same names, so
class i of a preset takes folder `<i>_<name>`; a folder that is not there is an error, never a
silent mismatch. Once `lidar-ovseg weights fetch igloss-prototype-images` has run, the presets
reproduce the paper's prototypes and need no image generator.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType

from ..vocabulary import Vocabulary, VocabularyError
from .catalog import DEFAULTS
from .fetch import status

ENTRY = DEFAULTS["prototype_images"]

PRESET_FOLDERS: Mapping[str, str] = MappingProxyType(
    {"nuscenes": "nuscenes_gpt_templates", "semantickitti": "semantic_kitti_gpt_templates"}
)
"""Preset name -> folder of its images in the official repository."""


def preset_image_folders(
    preset: str, class_names: Sequence[str], cache_dir: str | Path | None = None
) -> list[Path] | None:
    """Per class, the folder of the official images; None when the preset has none or they are
    not fetched."""
    folder_name = PRESET_FOLDERS.get(preset)
    if folder_name is None:
        return None
    st = status(ENTRY, cache_dir)
    if not st.cached or st.path is None:
        return None
    root = st.path / folder_name
    folders = []
    for i, name in enumerate(class_names):
        folder = root / f"{i}_{name}"
        if not folder.is_dir():
            raise VocabularyError(
                f"preset '{preset}': class #{i} ('{name}') has no official image folder "
                f"{folder}; the preset and the IGLOSS folders disagree"
            )
        folders.append(folder)
    return folders


def with_official_images(
    vocabulary: Vocabulary, preset: str, cache_dir: str | Path | None = None
) -> Vocabulary:
    """`vocabulary` with the official image folder as exemplars of every class that has none;
    unchanged when the images are not fetched or the preset has none."""
    folders = preset_image_folders(preset, vocabulary.names, cache_dir)
    if folders is None:
        return vocabulary
    classes = tuple(
        c if c.exemplar_dir is not None else replace(c, exemplar_dir=folder)
        for c, folder in zip(vocabulary.classes, folders)
    )
    return Vocabulary(classes=classes, name=vocabulary.name, description=vocabulary.description)
