"""Detection queries from captions: a rule-based noun-phrase chunker, with no model to download.

No parser model ships as a Python package here (spaCy/NLTK models are downloads), so phrases are found with
word lists instead of a tagger. A *chunk* is a maximal run of content words between function words, verbs and
punctuation ("a small red cube left of a blue sphere" → "small red cube", "blue sphere"). A chunk must end in
a word that can be a noun (not an adjective), keeps its last ``max_words`` words (English puts the head noun
last) and loses words that describe the picture rather than its content ("photo", "close-up").

It misses what a tagger would catch (unlisted verbs in -s or -ed, noun–noun compounds split by a verb-like
word), which costs a missed query, not a wrong label: OWLv2 still has to find the phrase in the image.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

from mtv.errors import MTVError

_FUNCTION = """
a an the this that these those some any each every all both either neither no another other such
i me my mine you your yours he him his she her hers it its we us our ours they them their theirs one ones
what which who whom whose where when why how there here
of in on at to from by with without within into onto over under above below between among through across
along around about against beside besides behind near off out up down upon toward towards inside outside
beneath underneath beyond via per like unlike than as for during before after while until since
and or but nor so yet if then because although though whether also too very really quite just only even
not no yes almost nearly rather somewhat
is are was were be been being am do does did done has have had having will would shall should can could
may might must
left right front back top bottom middle center centre side sides edge next close far away together
two three four five six seven eight nine ten several many few lots lot couple pair group bunch
"""

# Common caption verbs, minus forms that are also common nouns (park, stand, drink, watch, set);
# -ing forms are handled by rule (see _is_verb).
_VERBS = """
sit sits sat stands stood lie lies lay lays laid lying hold holds held ride rides rode ridden
walk walks walked run runs ran play plays played eat eats ate eaten look looks looked wear wears wore worn
carry carries carried fly flies flew flown go goes went gone going come comes came get gets got
make makes made take takes took taken shows showed shown see sees saw seen watched use uses used using
parked fill fills filled covers covered placed put puts pull pulls pulled push pushes pushed throws threw
thrown catches caught hits jump jumps jumped stare stares stared wait waits waited rests rested lean leans
leaned sleep sleeps slept swim swims swam drank cooked serve serves served displayed contain contains
contained seem seems appear appears appeared featured hang hangs hung stacked topped doing located shaped
colored coloured lined surrounded
"""

# Words that describe the picture itself rather than something in it.
_META = """
photo photos photograph photographs picture pictures image images pic pics view views shot shots
closeup close-up scene stock illustration illustrations vector drawing rendering render screenshot
background foreground wallpaper free download royalty hd jpg png thumbnail
"""

# Adjectives that often end a run ("the sky is blue"); a chunk must not end in one.
_ADJECTIVES = """
small large big little tall short long wide narrow tiny huge giant old new young red green blue yellow
orange purple pink brown black white grey gray gold golden silver dark light bright pale round square
empty full open closed wooden metal plastic glass shiny matte beautiful cute pretty nice good great
"""

# -ing words that are nouns, not verbs.
_ING_NOUNS = """
building buildings painting paintings clothing ceiling ceilings morning evening pudding frosting icing
topping toppings railing railings awning bedding wedding stuffing dumpling dumplings sibling siblings
earring earrings clearing landing lightning seating wiring string strings spring springs swing swings
"""

_TOKEN = re.compile(r"[a-z][a-z'\-]*[a-z]|[a-z]|\S")
_WORDS = {name: frozenset(text.split()) for name, text in
          {"function": _FUNCTION, "verbs": _VERBS, "meta": _META, "adj": _ADJECTIVES, "ing": _ING_NOUNS}.items()}


def _verb_like(word: str) -> bool:
    """-ing words are verbs unless listed as nouns or too short to have a verb stem (ring, king, thing)."""
    return word.endswith("ing") and len(word) > 5 and word not in _WORDS["ing"]


def _is_verb(word: str, run_start: bool) -> bool:
    # "man riding a horse": an -ing word after a content word is a verb; at a run's start it may be an
    # adjective ("running water") and is kept.
    return word in _WORDS["verbs"] or (not run_start and _verb_like(word))


def noun_phrases(caption: str, max_words: int = 4) -> list[str]:
    """Noun phrases of ``caption`` in order of appearance (lower case, possibly repeated)."""
    runs: list[list[str]] = [[]]
    for token in _TOKEN.findall(caption.lower()):
        possessive = token.endswith("'s")
        word = token[:-2] if possessive else token.strip("'-")
        # Multi-letter tokens start with a letter (see _TOKEN); digits and punctuation end a run.
        content = len(word) > 1 and word not in _WORDS["function"] and not _is_verb(word, not runs[-1])
        if content and word not in _WORDS["meta"]:
            runs[-1].append(word)
        elif runs[-1]:
            runs.append([])
        if possessive and runs[-1]:  # "man's hat" → "man", "hat"
            runs.append([])
    # The head (last word) must be able to be a noun: not an adjective, not a verb ("looking at the sea").
    return [" ".join(run[-max_words:]) for run in runs
            if run and run[-1] not in _WORDS["adj"] and not _verb_like(run[-1])]


@dataclass(frozen=True)
class PhraseConfig:
    """How queries are made: caption phrases (deduplicated, at most ``max_phrases``), then every phrase of an
    optional vocabulary (not capped: a detector's cost grows little with queries once the image is encoded)."""

    max_phrases: int = 8
    max_words: int = 4
    vocabulary: tuple[str, ...] = ()
    vocabulary_source: str | None = None
    _vocab_digest: str = field(default="", repr=False)

    def __post_init__(self):
        if self.max_phrases < 0 or self.max_words < 1:
            raise MTVError(f"phrases: --max-phrases must be >= 0 and --max-words >= 1 "
                           f"(got {self.max_phrases}, {self.max_words})")

    @classmethod
    def with_vocabulary_file(cls, path: str | Path, **kwargs) -> "PhraseConfig":
        """One phrase per line; blank lines and ``#`` comments are ignored."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise MTVError(f"{path}: cannot read the vocabulary file ({e.__class__.__name__}); give a UTF-8 text "
                           "file with one phrase per line") from None
        lines = [line.split("#", 1)[0].strip().lower() for line in text.splitlines()]
        vocab = tuple(dict.fromkeys(line for line in lines if line))
        if not vocab:
            raise MTVError(f"{path}: the vocabulary file has no phrases (one per line)")
        digest = hashlib.sha256("\n".join(vocab).encode()).hexdigest()[:16]
        return cls(vocabulary=vocab, vocabulary_source=str(path), _vocab_digest=digest, **kwargs)

    def queries(self, caption: str) -> list[str]:
        phrases = list(dict.fromkeys(noun_phrases(caption, self.max_words)))[: self.max_phrases]
        return list(dict.fromkeys(phrases + list(self.vocabulary)))

    def provenance(self) -> dict:
        return {"method": "rule-based chunker (mtv.experts.phrases)", "max_phrases": self.max_phrases,
                "max_words": self.max_words,
                "vocabulary": ({"file": self.vocabulary_source, "phrases": len(self.vocabulary),
                                "sha256_16": self._vocab_digest} if self.vocabulary else None)}
