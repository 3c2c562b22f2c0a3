"""Tags of successive captioning rounds -> a stable proposed `Vocabulary` (with provenance).

- Hysteresis: a tag enters the vocabulary once it was seen in at least `enter_rounds` of the last
  `window` rounds, and leaves only when it was seen in none of them, so a class does not flicker
  when one caption misses it.
- Cap: at most `max_auto_classes` tags; ranked by the rounds they were seen in (of the window),
  tags already in the vocabulary first on ties, then the earliest seen (in caption order).
- Base vocabulary: its classes are always present, first, with their prompts and colours; a tag
  equal to a base class name (case-insensitive) or to one of its aliases is folded into it.
- Output: a normal `Vocabulary` (named `auto`), each tag class with one prompt (its name) and a
  colour derived from the name (stable across proposals), and the provenance of every class.
  The caller swaps it in through `VocabularySwitcher` when `changed` is true (no mixed frames).
"""

from __future__ import annotations

import colorsys
import hashlib
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from lidar_ovseg_ros.vocabulary import MAX_CLASSES, Vocabulary

from .tagging import Tag


@dataclass(frozen=True)
class ProposalConfig:
    """`window` (M): rounds a tag is remembered; `enter_rounds`: rounds of the window it must
    be seen in to enter; `max_auto_classes`: cap on the tags (base classes come on top)."""

    window: int = 5
    enter_rounds: int = 1
    max_auto_classes: int = 24
    name: str = "auto"

    def __post_init__(self) -> None:
        if self.window < 1:
            raise ValueError(f"window must be >= 1, got {self.window}")
        if not 1 <= self.enter_rounds <= self.window:
            raise ValueError(f"enter_rounds must be in [1, window={self.window}]")
        if not 0 <= self.max_auto_classes <= MAX_CLASSES:
            raise ValueError(f"max_auto_classes must be in [0, {MAX_CLASSES}]")


def tag_color(name: str) -> tuple[int, int, int]:
    """A colour that depends only on the name (stable when other classes come and go)."""
    h = int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "big")
    hue = (h % 360) / 360.0
    sat = 0.55 + 0.4 * ((h >> 9) % 100) / 100.0
    val = 0.75 + 0.2 * ((h >> 17) % 100) / 100.0
    r, g, b = colorsys.hsv_to_rgb(hue, sat, val)
    return (int(r * 255), int(g * 255), int(b * 255))


@dataclass
class Proposal:
    """One round's result: the vocabulary, whether it differs from the previous round's, what
    came and went, and where each class comes from."""

    vocabulary: Vocabulary | None
    changed: bool
    added: list[str]
    removed: list[str]
    provenance: dict[str, dict[str, Any]] = field(default_factory=dict)
    round: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "round": self.round,
            "vocabulary": self.vocabulary.names if self.vocabulary is not None else [],
            "fingerprint": self.vocabulary.fingerprint() if self.vocabulary is not None else "",
            "changed": self.changed,
            "added": list(self.added),
            "removed": list(self.removed),
            "classes": self.provenance,
        }


@dataclass
class _Seen:
    first_round: int
    order: int
    sources: list[str] = field(default_factory=list)
    captions: list[str] = field(default_factory=list)
    aliases: set[str] = field(default_factory=set)


class VocabularyProposer:
    """Feed it each round's tags (`update`); it keeps the window and proposes vocabularies."""

    def __init__(self, config: ProposalConfig | None = None, base: Vocabulary | None = None):
        self.config = config or ProposalConfig()
        self.base = base
        self._base_keys = {n.casefold(): n for n in (base.names if base else [])}
        self._window: deque[set[str]] = deque(maxlen=self.config.window)
        self._seen: dict[str, _Seen] = {}
        self._active: list[str] = []
        self._rounds = 0
        self._order = 0
        self._last: Vocabulary | None = None

    @property
    def active_tags(self) -> list[str]:
        return list(self._active)

    def _resolve(self, tag: Tag) -> str:
        """The class a tag belongs to: a base class it names, or itself."""
        for name in [tag.name, *tag.aliases]:
            base = self._base_keys.get(name.casefold())
            if base is not None:
                return base
        return tag.name

    def update(self, tags: list[Tag]) -> Proposal:
        self._rounds += 1
        present: set[str] = set()
        for tag in tags:
            key = self._resolve(tag)
            present.add(key)
            seen = self._seen.get(key)
            if seen is None:
                self._order += 1
                seen = self._seen[key] = _Seen(first_round=self._rounds, order=self._order)
            seen.sources = (seen.sources + list(tag.sources))[-16:]
            seen.captions = (seen.captions + list(tag.captions))[-16:]
            seen.aliases.update(a for a in [tag.name, *tag.aliases] if a != key)
        self._window.append(present)
        counts: dict[str, int] = {}
        for round_tags in self._window:
            for name in round_tags:
                counts[name] = counts.get(name, 0) + 1
        for name in list(self._seen):
            if name not in counts:
                del self._seen[name]  # forgotten: not seen for a whole window
        active = set(self._active)
        candidates = [
            n
            for n, c in counts.items()
            if n not in self._base_keys.values() and (n in active or c >= self.config.enter_rounds)
        ]
        candidates.sort(key=lambda n: (-counts[n], n not in active, self._seen[n].order))
        chosen = set(candidates[: self.config.max_auto_classes])
        # keep the previous order for classes that stay (ids do not jump), new ones appended
        new_active = [n for n in self._active if n in chosen]
        new_active += [n for n in candidates if n in chosen and n not in new_active]
        added = [n for n in new_active if n not in active]
        removed = [n for n in self._active if n not in chosen]
        self._active = new_active
        vocabulary = self._build()
        changed = vocabulary is not None and (
            self._last is None or vocabulary.fingerprint() != self._last.fingerprint()
        )
        if changed:
            self._last = vocabulary
        provenance = self._provenance(counts)
        return Proposal(vocabulary, changed, added, removed, provenance, self._rounds)

    def _build(self) -> Vocabulary | None:
        entries: list[dict[str, Any]] = []
        if self.base is not None:
            for c in self.base.classes:
                entry: dict[str, Any] = {"name": c.name, "prompts": list(c.prompts)}
                entry["color"] = list(c.color)
                if c.exemplar_dir is not None:
                    entry["exemplars"] = str(c.exemplar_dir)
                entries.append(entry)
        room = MAX_CLASSES - len(entries)
        for name in self._active[:room]:
            entries.append({"name": name, "color": list(tag_color(name))})
        if not entries:
            return None
        desc = f"proposed from captions, round {self._rounds}"
        return Vocabulary.from_dict(
            {"name": self.config.name, "description": desc, "classes": entries}
        )

    def _provenance(self, counts: dict[str, int]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for name in self._base_keys.values():
            seen = self._seen.get(name)
            out[name] = {
                "origin": "base",
                "rounds_seen": counts.get(name, 0),
                "sources": list(seen.sources) if seen else [],
                "captions": list(seen.captions) if seen else [],
                "aliases": sorted(seen.aliases) if seen else [],
            }
        for name in self._active:
            seen = self._seen[name]
            out[name] = {
                "origin": "caption",
                "rounds_seen": counts.get(name, 0),
                "first_round": seen.first_round,
                "sources": list(seen.sources),
                "captions": list(seen.captions),
                "aliases": sorted(seen.aliases),
            }
        return out
