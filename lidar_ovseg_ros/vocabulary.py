"""Vocabularies: the ordered classes a node labels with (names, prompts, colours, exemplar images).

A vocabulary is declared once, in YAML or as a list of names, validated here at the edge, and then
passed around as an immutable `Vocabulary`. Class ids are positions in the list (0..K-1); points
that get no class (outside the backbone's crop, below a score threshold, non-finite) carry
`NO_CLASS_ID`, the largest uint16, so it can never collide with a class id.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

NO_CLASS_ID = 65535
"""Label of points that get no class: outside the crop, below `min_score`, or non-finite."""

NO_CLASS_COLOR = (128, 128, 128)
"""Colour of `NO_CLASS_ID` points (grey)."""

MAX_CLASSES = 256
"""Upper bound on classes: one RViz CUBE_LIST and one prototype set per class must stay usable."""

MAX_NAME_LENGTH = 64

MAX_FILE_BYTES = 1 << 20
"""Largest vocabulary file read (1 MiB): 256 classes with many prompts fit in a few kB."""

_CLASS_KEYS = {"name", "prompts", "color", "exemplars"}
_TOP_KEYS = {"name", "description", "classes"}
_HEX_COLOR = re.compile(r"^#?([0-9a-fA-F]{6})$")

# Distinct colours for classes declared without one (tab20-like, then a golden-ratio hue walk).
_AUTO_PALETTE = (
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (188, 189, 34),
    (23, 190, 207),
    (174, 199, 232),
    (255, 187, 120),
    (152, 223, 138),
    (255, 152, 150),
    (197, 176, 213),
    (196, 156, 148),
    (247, 182, 210),
    (219, 219, 141),
    (158, 218, 229),
)


class VocabularyError(ValueError):
    """An invalid vocabulary; the message names the offending entry."""


@dataclass(frozen=True)
class VocabClass:
    """One class: its name, the text prompts that describe it, its display colour (RGB 0-255),
    and an optional folder of exemplar images used as prototypes instead of generated ones."""

    name: str
    prompts: tuple[str, ...]
    color: tuple[int, int, int]
    exemplar_dir: Path | None = None


@dataclass(frozen=True)
class Vocabulary:
    """An ordered, validated list of classes; the class id is the index in `classes`."""

    classes: tuple[VocabClass, ...]
    name: str = "custom"
    description: str = ""
    _lut: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _validate_classes(self.classes)
        lut = np.tile(np.asarray(NO_CLASS_COLOR, np.uint8), (NO_CLASS_ID + 1, 1))
        lut[: len(self.classes)] = np.asarray([c.color for c in self.classes], np.uint8)
        object.__setattr__(self, "_lut", lut)

    def __len__(self) -> int:
        return len(self.classes)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.classes]

    @property
    def colors(self) -> np.ndarray:
        """[K, 3] uint8 RGB colours in class order."""
        return self._lut[: len(self.classes)].copy()

    def colors_for(self, labels: np.ndarray) -> np.ndarray:
        """[N, 3] uint8 colours for uint16 labels; `NO_CLASS_ID` (and unknown ids) are grey."""
        return self._lut[np.asarray(labels, dtype=np.uint16)]

    def index(self, name: str) -> int:
        for i, c in enumerate(self.classes):
            if c.name == name:
                return i
        raise KeyError(f"class '{name}' is not in vocabulary '{self.name}' ({self.names})")

    def fingerprint(self) -> str:
        """Stable hash of everything that changes the labels (names, prompts, exemplar folders)."""
        payload = [[c.name, list(c.prompts), str(c.exemplar_dir or "")] for c in self.classes]
        return hashlib.sha256(json.dumps(payload).encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        """The YAML schema form; `Vocabulary.from_dict(v.to_dict()) == v`."""
        out: dict[str, Any] = {"name": self.name}
        if self.description:
            out["description"] = self.description
        out["classes"] = []
        for c in self.classes:
            entry: dict[str, Any] = {"name": c.name, "prompts": list(c.prompts)}
            entry["color"] = list(c.color)
            if c.exemplar_dir is not None:
                entry["exemplars"] = str(c.exemplar_dir)
            out["classes"].append(entry)
        return out

    @classmethod
    def from_names(cls, names: Sequence[str], name: str = "custom") -> Vocabulary:
        """A vocabulary from bare class names: one prompt per class, automatic colours."""
        if isinstance(names, str) or not isinstance(names, Sequence):
            raise VocabularyError("a vocabulary must be a list of class names")
        for i, n in enumerate(names):
            if not isinstance(n, str):
                raise VocabularyError(
                    f"class #{i}: {n!r} is a {type(n).__name__}; class names must be strings"
                )
        entries = [{"name": n} for n in names]
        return cls.from_dict({"name": name, "classes": entries})

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], base_dir: Path | None = None) -> Vocabulary:
        """Parse the YAML schema; relative exemplar folders resolve against `base_dir`."""
        if not isinstance(data, Mapping):
            raise VocabularyError("a vocabulary file must hold a mapping with a 'classes' list")
        unknown = set(data) - _TOP_KEYS
        if unknown:
            raise VocabularyError(
                f"unknown top-level keys {sorted(unknown)}; allowed: {sorted(_TOP_KEYS)}"
            )
        entries = data.get("classes")
        if not isinstance(entries, list):
            raise VocabularyError("'classes' must be a list of class entries")
        classes = tuple(
            _parse_class(entry, i, base_dir, default_color=_auto_color(i))
            for i, entry in enumerate(entries)
        )
        name = str(data.get("name") or "custom")
        return cls(classes=classes, name=name, description=str(data.get("description") or ""))

    @classmethod
    def from_yaml(cls, path: str | Path) -> Vocabulary:
        """Read a vocabulary file; every way a file can be bad raises VocabularyError with the
        reason (missing, a directory, unreadable, over MAX_FILE_BYTES, not UTF-8, not YAML,
        nested too deep, not the schema)."""
        text, path = read_vocabulary_text(path)
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise VocabularyError(f"{path}: not valid YAML: {exc}") from exc
        except RecursionError as exc:
            raise VocabularyError(f"{path}: YAML nested too deep to parse") from exc
        try:
            return cls.from_dict(data, base_dir=path.parent)
        except VocabularyError as exc:
            raise VocabularyError(f"{path}: {exc}") from exc
        except RecursionError as exc:
            raise VocabularyError(f"{path}: nested too deep") from exc


def read_vocabulary_text(spec: str | Path) -> tuple[str, Path]:
    """The text of a vocabulary file, or VocabularyError naming why it cannot be used."""
    try:
        path = Path(spec).expanduser()
        if path.is_dir():
            raise VocabularyError(f"vocabulary file is a directory, not a file: {path}")
        if not path.exists():
            raise VocabularyError(f"vocabulary file not found: {path}")
        if not path.is_file():
            raise VocabularyError(f"vocabulary file is not a regular file: {path}")
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise VocabularyError(
                f"vocabulary file {path} is {size} bytes; the limit is {MAX_FILE_BYTES}"
            )
        with path.open("rb") as fh:
            raw = fh.read(MAX_FILE_BYTES + 1)  # the file may have grown since stat()
    except VocabularyError:
        raise
    except PermissionError as exc:
        raise VocabularyError(f"vocabulary file {spec}: permission denied") from exc
    except (OSError, ValueError) as exc:  # I/O errors; ValueError: an embedded NUL in the path
        raise VocabularyError(f"vocabulary file {spec!r} cannot be read: {exc}") from exc
    if len(raw) > MAX_FILE_BYTES:
        raise VocabularyError(f"vocabulary file {path} is over the {MAX_FILE_BYTES}-byte limit")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise VocabularyError(
            f"{path}: not UTF-8 text (byte {exc.start}: {raw[exc.start : exc.start + 1]!r}); "
            "save the file as UTF-8"
        ) from exc
    return text, path


def _auto_color(i: int) -> tuple[int, int, int]:
    if i < len(_AUTO_PALETTE):
        return _AUTO_PALETTE[i]
    hue = (i * 0.618033988749895) % 1.0
    import colorsys

    r, g, b = colorsys.hsv_to_rgb(hue, 0.75, 0.95)
    return (int(r * 255), int(g * 255), int(b * 255))


def parse_color(value: Any, where: str) -> tuple[int, int, int]:
    """[r, g, b] with integers 0-255, or '#rrggbb'."""
    if isinstance(value, str):
        m = _HEX_COLOR.match(value.strip())
        if not m:
            raise VocabularyError(f"{where}: colour '{value}' is not '#rrggbb' or [r, g, b]")
        h = m.group(1)
        return (int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16))
    if (
        isinstance(value, Sequence)
        and len(value) == 3
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        and all(0 <= v <= 255 for v in value)
    ):
        return (int(value[0]), int(value[1]), int(value[2]))
    raise VocabularyError(f"{where}: colour {value!r} must be [r, g, b] with integers 0-255")


def _parse_class(
    entry: Any, i: int, base_dir: Path | None, default_color: tuple[int, int, int]
) -> VocabClass:
    if isinstance(entry, str):
        entry = {"name": entry}
    if not isinstance(entry, Mapping):
        raise VocabularyError(f"class #{i}: expected a mapping or a name, got {entry!r}")
    where = f"class #{i} ('{entry.get('name', '')}')"
    unknown = set(entry) - _CLASS_KEYS
    if unknown:
        raise VocabularyError(
            f"{where}: unknown keys {sorted(unknown)}; allowed: {sorted(_CLASS_KEYS)}"
        )
    name = entry.get("name")
    if name is not None and not isinstance(name, str):
        raise VocabularyError(
            f"class #{i}: the name {name!r} is a {type(name).__name__}; names must be strings"
        )
    if not isinstance(name, str) or not name.strip():
        raise VocabularyError(f"class #{i}: the name is empty or missing")
    name = name.strip()
    prompts = entry.get("prompts")
    if prompts is None:
        prompts = [name.replace("_", " ")]
    if isinstance(prompts, str):
        prompts = [prompts]
    if not isinstance(prompts, list) or not prompts:
        raise VocabularyError(f"{where}: 'prompts' must be a non-empty list of strings")
    if not all(isinstance(p, str) and p.strip() for p in prompts):
        raise VocabularyError(f"{where}: every prompt must be a non-empty string")
    color = parse_color(entry["color"], where) if "color" in entry else default_color
    exemplars = entry.get("exemplars")
    exemplar_dir = None
    if exemplars is not None:
        if not isinstance(exemplars, str) or not exemplars.strip():
            raise VocabularyError(f"{where}: 'exemplars' must be a folder path")
        exemplar_dir = Path(exemplars).expanduser()
        if not exemplar_dir.is_absolute() and base_dir is not None:
            exemplar_dir = (base_dir / exemplar_dir).resolve()
    return VocabClass(
        name=name,
        prompts=tuple(p.strip() for p in prompts),
        color=color,
        exemplar_dir=exemplar_dir,
    )


def _validate_classes(classes: Iterable[VocabClass]) -> None:
    classes = list(classes)
    if not classes:
        raise VocabularyError("the vocabulary is empty: give at least one class")
    if len(classes) > MAX_CLASSES:
        raise VocabularyError(f"{len(classes)} classes is too many (at most {MAX_CLASSES})")
    seen: dict[str, int] = {}
    for i, c in enumerate(classes):
        if not c.name or not c.name.strip():
            raise VocabularyError(f"class #{i}: the name is empty")
        if len(c.name) > MAX_NAME_LENGTH:
            raise VocabularyError(
                f"class #{i} ('{c.name[:20]}...'): name longer than {MAX_NAME_LENGTH} characters"
            )
        if any(ch in c.name for ch in "\n\r\t"):
            raise VocabularyError(f"class #{i} ('{c.name!r}'): name has control characters")
        key = c.name.casefold()
        if key in seen:
            first = seen[key]
            raise VocabularyError(
                f"class #{i} ('{c.name}'): duplicate of class #{first} ('{classes[first].name}')"
            )
        seen[key] = i
        if c.exemplar_dir is not None and not Path(c.exemplar_dir).is_dir():
            raise VocabularyError(
                f"class #{i} ('{c.name}'): exemplar folder not found: {c.exemplar_dir}"
            )


def presets_dir() -> Path:
    """Folder of the bundled vocabulary presets, wherever the package is installed."""
    from lidar_ovseg_ros.resources import share_path

    try:
        return share_path("config/vocabularies")
    except FileNotFoundError as exc:
        raise VocabularyError(str(exc)) from exc


def preset_names() -> list[str]:
    return sorted(p.stem for p in presets_dir().glob("*.yaml"))


def load_preset(name: str, official_images: bool = True) -> Vocabulary:
    """A bundled preset by name, e.g. 'nuscenes' or 'semantickitti'.

    With `official_images` (default) and the IGLOSS images fetched
    (`lidar-ovseg weights fetch igloss-prototype-images`), the nuscenes and semantickitti
    classes take the paper's prototype images as exemplars (no image generator needed).
    """
    path = presets_dir() / f"{name}.yaml"
    if not path.is_file():
        raise VocabularyError(f"no vocabulary preset '{name}'; available: {preset_names()}")
    vocabulary = Vocabulary.from_yaml(path)
    if official_images:
        from lidar_ovseg_ros.weights.prototype_images import with_official_images

        vocabulary = with_official_images(vocabulary, name)
    return vocabulary


def load_vocabulary(spec: str | Path) -> Vocabulary:
    """A preset name, or a path to a vocabulary YAML file."""
    if not isinstance(spec, str | Path):
        raise VocabularyError(f"a vocabulary file must be a path or preset name, got {spec!r}")
    text = str(spec)
    if not text.strip():
        raise VocabularyError("the vocabulary file name is empty")
    try:
        if text.endswith((".yaml", ".yml")) or "/" in text:
            return Vocabulary.from_yaml(text)
        return load_preset(text)
    except VocabularyError:
        raise
    except (OSError, ValueError, RecursionError, MemoryError) as exc:
        # e.g. a name too long for the file system; never let a bad name escape unexplained
        raise VocabularyError(f"vocabulary {text[:200]!r}: {type(exc).__name__}: {exc}") from exc
