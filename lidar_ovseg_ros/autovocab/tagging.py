"""Caption2Tag without an LLM: captions -> lemmatised noun phrases -> merged tags with provenance.

The official 3D-AVS step is an unreleased LLM prompt (file names suggest Llama-3-70B). This one is
deterministic and needs no model download:

1. Chunking. A caption is lower-cased and split into words; a noun phrase is a maximal run of
   words between "breaking" words: determiners and numbers, prepositions, conjunctions, pronouns,
   auxiliaries and common caption verbs, and verb forms ("-ing"/"-ed") that follow a noun (in
   "a man riding a bike", "riding" ends "a man"). An "-ing"/"-ed" word right after a determiner or
   an adjective is a modifier inside the phrase ("a parking lot", "a parked car").
2. Head. Leading adjectives (colours, sizes, materials, "-ed"/"-ing" participles except the
   noun-like `NOUN_ING` words such as "parking", "crossing") are dropped; the tag is the last two
   words at most (compound nouns: "traffic light", "stop sign", "parking lot").
3. Lemma. The head noun is singularised by rules (`singularize`: irregular table, then suffix
   rules such as -ies -> -y, -ches -> -ch, -s -> ''), no dictionary or model.
4. Stop list. Tags whose head is a generic or scene word (`GENERIC_WORDS`: "scene", "view",
   "picture", "image", "background", "side", "front", "lot", "group", ...) are dropped, as are
   captioner artefacts (BLIP's "arafed"); a compound led by a noun-like "-ing" word keeps its
   generic head ("parking lot"). A possessive ends a phrase ("a woman's umbrella": woman,
   umbrella). Degenerate decoder output gives no tag: words longer than `MAX_WORD_LENGTH` or
   with a letter three times in a row; a repeated word ("car car car") counts once.
5. Merging. Equal lemmas merge; then near-synonyms merge when the cosine of their CLIP text
   embeddings reaches `merge_threshold` (the more frequent tag, then the earlier one, names the
   group). Every tag keeps the captions and the sources (camera name, LiDAR sector) it came from.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


DETERMINERS = _words(
    """a an the some this that these those its their his her our my your another each every
    any many several few both all no one two three four five six seven eight nine ten eleven
    twelve dozen multiple numerous"""
)
PREPOSITIONS = _words(
    """of on in at by with near next to from into onto over under behind beside besides between
    along across through down up around against toward towards for about above below beneath
    inside outside past off out during as like than underneath via alongside among atop within
    without upon beyond after before while amid"""
)
FUNCTION_WORDS = _words(
    """and or but nor so yet then there here it they them he she we you i who which whom whose
    what where when why how is are was were be been being am has have had do does did can could
    will would should may might must shall not very just also too only even still really quite
    almost appears appear seems seem looks look shows show sits sit stands stand drives drive
    walks walk rides ride waits wait crosses cross goes go holds hold contains contain features
    feature passes pass travels travel turns turn leads lead runs run moves move lies lie lined
    filled covered surrounded parked stopped painted made taken seen"""
)
ADJECTIVES = _words(
    """white black red blue green yellow orange gray grey brown silver pink purple gold golden
    dark bright colorful colourful large small big little tall long short wide narrow huge tiny
    giant old new empty busy open closed wet dry sunny cloudy clear foggy rainy snowy modern
    high low other different various same young multiple double single close far nearby main
    public quiet paved wooden concrete brick metal glass stone urban residential rural
    commercial industrial several lone lush leafy bare shiny dirty clean full crowded heavy
    fancy nice beautiful pretty parked blurry blurred distant overhead"""
)
NOUN_ING = _words(
    """parking building crossing ceiling railing awning clothing shopping loading charging
    dining living swimming sibling evening morning wedding ring king wing thing string spring
    swing sling bowling"""
)
GENERIC_WORDS = _words(
    """scene view picture image photo photograph shot snapshot background foreground area side
    front top middle bottom back left right distance day night daytime nighttime time camera
    angle close closeup perspective lot lots bunch group couple number pair row line pile set
    variety kind sort type piece amount plenty way place spot part thing things something
    stuff object objects other each arafed araffe arafe araffes blur view point"""
)
_IRREGULAR = {
    "people": "person",
    "men": "man",
    "women": "woman",
    "children": "child",
    "feet": "foot",
    "teeth": "tooth",
    "mice": "mouse",
    "geese": "goose",
    "leaves": "leaf",
    "knives": "knife",
    "wives": "wife",
    "lives": "life",
    "shelves": "shelf",
    "wolves": "wolf",
    "halves": "half",
    "calves": "calf",
    "buses": "bus",
    "gases": "gas",
    "lenses": "lens",
    "movies": "movie",
    "cookies": "cookie",
    "pies": "pie",
    "ties": "tie",
    "shoes": "shoe",
    "potatoes": "potato",
    "tomatoes": "tomato",
    "heroes": "hero",
    "cacti": "cactus",
    "taxis": "taxi",
    "skis": "ski",
}
_INVARIANT = _words(
    """bus gas lens news series species pants jeans glasses scissors trousers shorts canvas
    grass glass dress class cross chassis bus"""
)
MAX_WORD_LENGTH = 20
"""Longer words are no English nouns of a caption (degenerate decoder output): no tag."""
_TRIPLE = re.compile(r"(.)\1\1")  # no English word has a letter three times in a row
_WORD = re.compile(r"[a-z]+(?:-[a-z]+)*")


def singularize(word: str) -> str:
    """Rule-based English singular of a noun (plurals only; other words come back unchanged)."""
    w = word.lower()
    if w in _IRREGULAR:
        return _IRREGULAR[w]
    if w in _INVARIANT or len(w) <= 3:
        return w
    if w.endswith("ies") and len(w) > 4:
        return w[:-3] + "y"
    if w.endswith(("sses", "shes", "ches", "xes", "zzes")):
        return w[:-2]
    if w.endswith(("ss", "us", "is", "ous")):
        return w
    if w.endswith("s"):
        return w[:-1]
    return w


def _is_participle(word: str) -> bool:
    if word in NOUN_ING:
        return False
    if word.endswith("ing") and len(word) > 5:
        return True
    return word.endswith("ed") and not word.endswith("eed") and len(word) > 4


def _breaks(word: str) -> bool:
    return word in DETERMINERS or word in PREPOSITIONS or word in FUNCTION_WORDS


def noun_phrases(caption: str) -> list[str]:
    """The tags of one caption, in order of appearance (duplicates kept)."""
    # a possessive ends a phrase: "a woman's umbrella" -> woman, umbrella
    words = _WORD.findall(re.sub(r"['’]s\b", " of ", caption.lower()))
    phrases: list[list[str]] = []
    run: list[str] = []
    prev = ""
    for word in words:
        if _breaks(word):
            if run:
                phrases.append(run)
            run = []
        elif _is_participle(word) and run and not all(w in ADJECTIVES for w in run):
            # a verb form after a noun ends the phrase ("a man riding ...")
            phrases.append(run)
            run = []
        elif _is_participle(word) and not run and prev and not _modifier_slot(prev):
            pass  # a verb form starting a clause ("... cars parked ...")
        else:
            run.append(word)
        prev = word
    if run:
        phrases.append(run)
    tags = []
    for phrase in phrases:
        tag = _head(phrase)
        if tag:
            tags.append(tag)
    return tags


def _modifier_slot(prev: str) -> bool:
    """Whether a word after `prev` can be a pre-noun modifier (after a determiner)."""
    return prev in DETERMINERS


def _head(phrase: Sequence[str]) -> str:
    words = list(phrase)
    while words and (words[0] in ADJECTIVES or _is_participle(words[0])):
        words.pop(0)
    # adjectives never head a phrase ("a red and white sign" -> "red" alone is no tag)
    while words and (words[-1] in ADJECTIVES or _is_participle(words[-1])):
        words.pop()
    if not words:
        return ""
    words = words[-2:]
    if len(words) == 2 and words[0] == words[1]:  # "car car": a decoder repeating itself
        words = words[1:]
    head = singularize(words[-1])
    words[-1] = head
    if len(words) == 2 and (words[0] in GENERIC_WORDS or words[0] in ADJECTIVES):
        words = words[1:]
    if len(head) < 2 or any(len(w) > MAX_WORD_LENGTH or _TRIPLE.search(w) for w in words):
        return ""
    # a generic head survives only in a compound led by a noun-like "-ing" word ("parking lot")
    if head in GENERIC_WORDS and not (len(words) == 2 and words[0] in NOUN_ING):
        return ""
    return " ".join(words)


@dataclass
class Tag:
    """A proposed class name with where it came from."""

    name: str
    sources: list[str] = field(default_factory=list)
    captions: list[str] = field(default_factory=list)
    aliases: list[str] = field(default_factory=list)

    @property
    def count(self) -> int:
        """How many captions mention it (after merging)."""
        return len(self.captions)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "count": self.count,
            "sources": list(self.sources),
            "captions": list(self.captions),
            "aliases": list(self.aliases),
        }


TextEmbedder = Callable[[Sequence[str]], np.ndarray]
"""texts -> [T, D] embeddings (normalised here), e.g. the CLIP text encoder."""


def merge_similar(tags: Sequence[Tag], embeddings: np.ndarray, threshold: float) -> list[Tag]:
    """Merge tags whose embedding cosine is >= threshold into the most frequent (then earliest)
    tag of the group; the merged names become aliases. Order: by first appearance of the kept."""
    if len(tags) != len(embeddings):
        raise ValueError(f"{len(tags)} tags but {len(embeddings)} embeddings")
    if not tags:
        return []
    emb = np.asarray(embeddings, dtype=np.float64)
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    emb = emb / np.where(norms > 0, norms, 1.0)
    sim = emb @ emb.T
    order = sorted(range(len(tags)), key=lambda i: (-tags[i].count, i))
    owner: dict[int, int] = {}
    kept: list[int] = []
    for i in order:
        match = next((k for k in kept if sim[i, k] >= threshold), None)
        if match is None:
            kept.append(i)
            owner[i] = i
        else:
            owner[i] = match
    merged = {
        k: Tag(tags[k].name, list(tags[k].sources), list(tags[k].captions), list(tags[k].aliases))
        for k in kept
    }
    for i in order:
        k = owner[i]
        if k == i:
            continue
        target = merged[k]
        target.aliases.append(tags[i].name)
        target.aliases.extend(tags[i].aliases)
        for s, c in zip(tags[i].sources, tags[i].captions):
            target.sources.append(s)
            target.captions.append(c)
    return [merged[k] for k in sorted(kept)]


@dataclass(frozen=True)
class TaggerConfig:
    """`merge_threshold`: CLIP-text cosine at or above which two tags are one (needs an
    embedder); `max_words`: longest tag kept (compound nouns)."""

    merge_threshold: float = 0.9
    extra_stop_words: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not -1.0 <= self.merge_threshold <= 1.0:
            raise ValueError(f"merge_threshold must be in [-1, 1], got {self.merge_threshold}")


class CaptionTagger:
    """Caption2Tag: `tags({source: caption})` -> merged `Tag`s with provenance."""

    def __init__(self, config: TaggerConfig | None = None, embedder: TextEmbedder | None = None):
        self.config = config or TaggerConfig()
        self.embedder = embedder
        self._stop = frozenset(w.lower() for w in self.config.extra_stop_words)

    def tags(self, captions: Mapping[str, str] | Iterable[tuple[str, str]]) -> list[Tag]:
        items = captions.items() if isinstance(captions, Mapping) else captions
        by_name: dict[str, Tag] = {}
        for source, caption in items:
            if not caption:
                continue
            seen_here: set[str] = set()
            for name in noun_phrases(caption):
                if name in self._stop or name.split()[-1] in self._stop or name in seen_here:
                    continue
                seen_here.add(name)
                tag = by_name.setdefault(name, Tag(name))
                tag.sources.append(source)
                tag.captions.append(caption)
        tags = list(by_name.values())
        if self.embedder is not None and len(tags) > 1:
            emb = np.asarray(self.embedder([t.name for t in tags]))
            tags = merge_similar(tags, emb, self.config.merge_threshold)
        return tags
